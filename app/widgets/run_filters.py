"""The Runs page's tracker features: filters, sort and grouping kept in the address (``st.query_params``, so a
filtered view can be bookmarked and shared), tags / notes / sweep / CV-group / FLOPs columns, and the board of
repeat and fold groups (mean ± sd with a 95 % interval, ranked by the mean)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from mapsage import figures
from mapsage.errors import UserError

# widget key -> (query parameter, kind): kind "list" (comma-separated), "str", "bool"
URL_KEYS: dict[str, tuple[str, str]] = {
    "runs_search": ("q", "str"), "runs_status": ("status", "list"), "runs_stage": ("stage", "list"),
    "runs_kind": ("kind", "list"), "runs_dataset": ("dataset", "list"), "runs_backbone": ("backbone", "list"),
    "runs_tags": ("tags", "list"), "runs_sort": ("sort", "str"), "runs_desc": ("desc", "bool"),
    "runs_group": ("group", "str"), "runs_split": ("split", "str"), "runs_rank": ("rank", "str"),
}
SORT_OPTIONS = ["(default)", "mIoU", "Boundary IoU", "mAcc", "Run", "Status", "Stage", "Params (M)", "GFLOPs",
                "Tags", "Sweep", "CV group", "Started", "Duration (min)"]
GROUP_BY = ["none", "tag", "sweep", "repeat/fold group", "backbone", "loss", "dataset", "kind"]


def restore_from_url(options: dict[str, list] | None = None) -> None:
    """Before the widgets are drawn: seed their state from the address (first run of the page, or an address
    changed by hand). Values a multiselect does not offer are dropped; ``options`` maps widget key -> choices."""
    seen = st.session_state.get("_runs_url_seen")
    now = {k: st.query_params.get(q) for k, (q, _) in URL_KEYS.items()}
    if seen == now:
        return
    st.session_state["_runs_url_seen"] = now
    for key, (param, kind) in URL_KEYS.items():
        raw = st.query_params.get(param)
        if raw is None:
            continue
        if kind == "list":
            vals: Any = [v for v in str(raw).split(",") if v]
            if options and key in options:
                choices = options[key]
                conv = []
                for v in vals:
                    for c in choices:
                        if str(c) == v:
                            conv.append(c)
                vals = conv
        elif kind == "bool":
            vals = str(raw) in ("1", "true", "yes")
        else:
            vals = str(raw)
            if options and key in options and vals not in [str(c) for c in options[key]]:
                continue
        st.session_state[key] = vals


def store_to_url() -> None:
    """After the widgets: write their values into the address (defaults left out, so plain URLs stay plain)."""
    for key, (param, kind) in URL_KEYS.items():
        v = st.session_state.get(key)
        if kind == "list":
            text = ",".join(str(x) for x in (v or []))
        elif kind == "bool":
            text = "1" if v else ""
        else:
            text = "" if v in (None, "", "none", "(default)") else str(v)
        if text:
            if st.query_params.get(param) != text:
                st.query_params[param] = text
        elif param in st.query_params:
            del st.query_params[param]
    st.session_state["_runs_url_seen"] = {k: st.query_params.get(q) for k, (q, _) in URL_KEYS.items()}


def with_tracker_columns(table: pd.DataFrame, ann: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """The experiment table plus Tags, Note, GFLOPs, Sweep and CV group columns (by ``run_id``)."""
    if table is None or table.empty:
        return table
    out = table.copy()
    tags = dict(zip(ann["run_id"], ann["tags_text"])) if ann is not None and not ann.empty else {}
    notes = dict(zip(ann["run_id"], ann["note"])) if ann is not None and not ann.empty else {}
    out["Tags"] = [tags.get(r, "") for r in out["run_id"]]
    out["Note"] = [notes.get(r, "") for r in out["run_id"]]
    if links is not None and not links.empty:
        li = links.set_index("run_id")
        flops = li["flops"].to_dict()
        params = li["model_params"].to_dict()
        out["GFLOPs"] = [flops.get(r, math.nan) / 1e9 if flops.get(r) == flops.get(r) else math.nan
                         for r in out["run_id"]]
        if "Params (M)" in out.columns:   # the evaluation's count, else the one the run reported at its start
            out["Params (M)"] = [p if p == p and p is not None else (params.get(r) or math.nan) / 1e6
                                 for p, r in zip(out["Params (M)"], out["run_id"])]
        sweep = li["sweep_id"].to_dict()
        trial = li["sweep_trial"].to_dict()
        out["Sweep"] = [f"{sweep[r]} #{int(trial[r])}" if isinstance(sweep.get(r), str) and trial.get(r) == trial.get(r)
                        else "" for r in out["run_id"]]
        grp = li["cv_group"].to_dict()
        fold = li["cv_fold"].to_dict()
        rep = li["cv_repeat"].to_dict()
        out["CV group"] = [(f"{grp[r]}" + (f" · fold {int(fold[r])}" if fold.get(r) == fold.get(r) and
                                           fold.get(r) is not None else "")
                            + (f" · seed {int(rep[r])}" if rep.get(r) == rep.get(r) and rep.get(r) is not None
                               else "")) if isinstance(grp.get(r), str) else "" for r in out["run_id"]]
    return out


def filter_tags(table: pd.DataFrame, tags: list[str]) -> pd.DataFrame:
    """Runs carrying every one of ``tags``."""
    if not tags or table is None or table.empty:
        return table
    have = table["Tags"].fillna("").map(lambda s: set(t.strip() for t in s.split(",") if t.strip()))
    return table[have.map(lambda s: set(tags) <= s)]


def sort_column(choice: str, split: str) -> str | None:
    """The table column a Sort-by choice means (figures carry their split in the header)."""
    if not choice or choice == "(default)":
        return None
    from .tables import figure_label

    return figure_label(choice, split) if choice in ("mIoU", "Boundary IoU", "mAcc") else choice


def sort_table(table: pd.DataFrame, column: str | None, desc: bool) -> pd.DataFrame:
    if table is None or table.empty or not column or column not in table.columns:
        return table
    return table.sort_values(column, ascending=not desc, kind="stable", na_position="last")


def group_column(table: pd.DataFrame, runs: pd.DataFrame, how: str) -> pd.Series | None:
    """The value each run is grouped by (a run with several tags appears once per tag)."""
    if how == "none" or table is None or table.empty:
        return None
    if how == "tag":
        return table["Tags"].fillna("").map(lambda s: [t.strip() for t in s.split(",") if t.strip()] or
                                            ["(untagged)"])
    if how == "sweep":
        return table["Sweep"].fillna("").map(lambda s: s.rsplit(" #", 1)[0] if s else "(no sweep)")
    if how == "repeat/fold group":
        return table["CV group"].fillna("").map(lambda s: s.split(" · ")[0] if s else "(single run)")
    col = {"backbone": "backbone", "loss": "loss", "dataset": "dataset", "kind": "kind"}[how]
    by_run = dict(zip(runs["run_id"], runs[col].astype(str)))
    return table["run_id"].map(lambda r: by_run.get(r, "?"))


def grouped_summary(table: pd.DataFrame, groups: pd.Series, figure: str) -> pd.DataFrame:
    """Per group: runs, ranked runs, best / mean ± sd of ``figure`` (a table column, points)."""
    from store.groups import t_interval

    rows: dict[str, list] = {}
    for g, v in zip(groups, table[figure] if figure in table.columns else [math.nan] * len(table)):
        for key in (g if isinstance(g, list) else [g]):
            rows.setdefault(key, []).append(v)
    out = []
    for key, vals in rows.items():
        got = [x for x in vals if x == x and x is not None]
        mean, sd, lo, hi = t_interval(got)
        out.append({"Group": key, "Runs": len(vals), "With figure": len(got),
                    f"Best {figure}": max(got) if got else math.nan, f"Mean {figure}": mean, "sd": sd,
                    "95 % low": lo, "95 % high": hi})
    return pd.DataFrame(out).sort_values(f"Mean {figure}", ascending=False, na_position="last")


def group_board_view(split: str, metric: str, label: str) -> None:
    """Repeat / fold groups (``mapsage run --seeds N --folds K``): mean ± sd and the 95 % interval of the mean,
    ranked by the mean."""
    from store.groups import group_board

    try:
        board = group_board(split=split, metric=metric)
    except Exception as exc:  # noqa: BLE001 - the board is an addition; the page goes on without it
        st.caption(f"Repeat/fold groups unavailable: {exc}")
        return
    if board.empty:
        return
    st.subheader("Repeats and folds")
    show = pd.DataFrame({
        "Rank": board["rank"], "Group": board["name"], "Runs": board["runs"], "Seeds": board["seeds"],
        "Folds": board["folds"],
        f"{label} ({split}) mean ± sd": [f"{100 * m:.2f} ± {100 * s:.2f}" if s == s else f"{100 * m:.2f}"
                                         for m, s in zip(board["mean"], board["sd"])],
        "95 % interval": [f"[{100 * lo:.2f}, {100 * hi:.2f}]" if lo == lo else "–"
                          for lo, hi in zip(board["ci_low"], board["ci_high"])],
        "Min": board["min"] * 100, "Max": board["max"] * 100, "Pending": board["pending"], "Id": board["group"]})
    partner = {"top1": "macro_f1", "macro_f1": "top1"}.get(metric)   # classification: both headline figures
    if partner:
        from mapsage.metrics.names import metric_label

        other = group_board(split=split, metric=partner).set_index("group")
        show.insert(6, f"{metric_label(partner)} ({split}) mean ± sd", [
            (f"{100 * other.at[g, 'mean']:.2f} ± {100 * other.at[g, 'sd']:.2f}" if other.at[g, "sd"] == other.at[g, "sd"]
             else f"{100 * other.at[g, 'mean']:.2f}") if g in other.index else "–" for g in board["group"]])
    st.dataframe(show, hide_index=True, width="stretch", key="runs_groups", placeholder="–",
                 column_config={"Min": st.column_config.NumberColumn(format="%.2f"),
                                "Max": st.column_config.NumberColumn(format="%.2f")})
    st.caption("Each run's figure is its headline evaluation on this split (as in the table above); the interval "
               "is the Student-t 95 % interval of the mean over the group's runs (seeds × folds). Ranked by the "
               "mean.")
    if len(board) >= 2:
        _paired_view(board, split, metric, label)


def _paired_view(board: pd.DataFrame, split: str, metric: str, label: str) -> None:
    from store.groups import paired_groups

    names = dict(zip(board["group"], board["name"] + " · " + board["group"].str[-9:]))
    c1, c2 = st.columns(2)
    ga = c1.selectbox("Paired comparison: A", list(names), format_func=names.get, index=1, key="runs_pair_a")
    gb = c2.selectbox("B", list(names), format_func=names.get, index=0, key="runs_pair_b")
    if ga == gb:
        return
    try:
        out = paired_groups(ga, gb, split=split, metric=metric)
    except UserError as exc:
        st.caption(str(exc))
        return
    if not out["n"]:
        st.caption("The two groups share no (fold, seed) pair with figures on both sides.")
        return
    ci = (f", 95 % interval [{100 * out['ci_low']:+.2f}, {100 * out['ci_high']:+.2f}]"
          if out["ci_low"] == out["ci_low"] else "")
    verdict = ("B is better" if out["significant"] and out["mean_diff"] > 0 else
               "A is better" if out["significant"] else "no significant difference")
    st.markdown(f"**B − A, paired on {out['n']} (fold, seed) pair(s):** {100 * out['mean_diff']:+.2f} points of "
                f"{label}{ci}; B ahead in {out['b_wins']}/{out['n']} — {verdict}"
                + (f" ({out['unpaired']} run(s) without a partner left out)" if out["unpaired"] else ""))
    bs = out.get("bootstrap") or {}
    if bs:
        st.markdown(f"Paired bootstrap over the same {bs['n_units']} pairs: 95 % interval "
                    f"[{100 * bs['ci_low']:+.2f}, {100 * bs['ci_high']:+.2f}], p = {bs['p_value']:.3f} — "
                    + ("significant" if bs["significant"] else "not significant"))
        st.caption(f"Student t: the interval of the mean difference assuming normal differences. Bootstrap: "
                   f"{bs['n_boot']} resamples of the pairs with replacement (percentile interval), the same "
                   f"resampling as the tile bootstrap of Compare."
                   + (f" {bs['n_units']} pairs allow only {bs['distinct']} distinct resamples, so this interval "
                      f"is coarse." if bs["distinct"] < 100 else ""))
    p = out["pairs"].assign(a=lambda d: d["a"] * 100, b=lambda d: d["b"] * 100, diff=lambda d: d["diff"] * 100)
    st.dataframe(p, hide_index=True, width="stretch", key="runs_pairs", placeholder="–",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in ("a", "b", "diff")})


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v[:8]):
                out.update(_flat(x, f"{key}.{i}."))
        elif isinstance(v, list) and len(v) <= 4 and all(isinstance(x, (int, float, str)) for x in v):
            out[key] = "×".join(str(x) for x in v) if v else ""
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def varying_knobs(configs: dict[str, dict], limit: int = 8) -> pd.DataFrame:
    """One row per run, one column per config key whose value differs between the runs (meta, names and
    bookkeeping keys left out), at most ``limit`` columns (numeric keys first)."""
    import json

    flat = {rid: _flat(json.loads(c) if isinstance(c, str) else c) for rid, c in configs.items()}
    keys = sorted(set().union(*[set(f) for f in flat.values()])) if flat else []
    skip = ("meta.", "stage.name", "stage.title", "stage.description", "sweep.", "cv.", "dataset.root")
    rows = pd.DataFrame({k: [flat[r].get(k) for r in flat] for k in keys if not k.startswith(skip)},
                        index=list(flat))
    vary = [c for c in rows.columns if rows[c].astype(str).nunique() > 1]
    num = [c for c in vary if pd.to_numeric(rows[c], errors="coerce").notna().all()]
    cat = [c for c in vary if c not in num]
    return rows[(num + cat)[:limit]]


def parallel_coordinates(run_ids: list[str], table: pd.DataFrame, figure_col: str | None) -> None:
    """Parallel coordinates of the selected runs: the config keys in which they differ, and the figure."""
    import store

    configs = {}
    for rid in run_ids:
        r = store.run(rid) or {}
        if r.get("config_json"):
            configs[rid] = r["config_json"]
    if len(configs) < 2:
        st.caption("Parallel coordinates need two runs with a stored config.")
        return
    knobs = varying_knobs(configs)
    if knobs.empty:
        st.caption("The selected runs have the same config.")
        return
    value = None
    if figure_col and figure_col in table.columns:
        fig_by_run = dict(zip(table["run_id"], table[figure_col]))
        vals = [fig_by_run.get(r) for r in knobs.index]
        if all(v is not None and v == v for v in vals):
            value = vals
    fig = figures.parallel_coordinates(knobs, value, figure_col or "", log_ratio=50.0, height=360)
    st.plotly_chart(fig, width="stretch", key="runs_parcoords")

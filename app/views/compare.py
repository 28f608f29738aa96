"""Compare: two or more runs -- config diff, metric deltas, per-class delta bars, overlaid curves, and a paired
bootstrap over tiles giving a 95 % interval for each ΔmIoU, with differences inside the noise marked as such."""
from __future__ import annotations

import pandas as pd
import streamlit as st

import store
from app.widgets import compare, data
from app.widgets.common import PAGE_FILES, guard, isnum, query_list
from app.widgets.nav import ensure_routed
from app.widgets.report_button import report_button
from mapsage import figures

ensure_routed()
st.title(":material/compare_arrows: Compare runs")

runs = guard(data.runs, default=pd.DataFrame(), what="Reading the run list")
if runs is None or runs.empty:
    st.info("No runs yet. Launch some from the Plan board, then select two or more on the Runs page.",
            icon=":material/arrow_forward:")
    st.stop()

names = dict(zip(runs["run_id"], runs["name"]))
wanted = [r for r in query_list("runs") if r in names]
picked = st.multiselect("Runs (the first is the reference; run ids are name_date-time_suffix)", list(names),
                        default=wanted, key="compare_runs")
if picked != wanted:
    st.query_params["runs"] = ",".join(picked)
if len(picked) < 2:
    st.info("Pick two or more runs (or select rows on the Runs page and press *Compare selected*).")
    st.page_link(PAGE_FILES["runs"], label="Runs", icon=":material/table_chart:")
    st.stop()

# labels: the run name, made unique
labels: dict[str, str] = {}
for rid in picked:
    label = names[rid]
    if label in labels.values():
        label = f"{label} [{rid[-4:]}]"
    labels[rid] = label
reference = labels[picked[0]]
report_button(picked, key="compare", names=[labels[r] for r in picked])

rows = {rid: guard(data.run_row, rid) for rid in picked}
if all((rows[r] or {}).get("kind") == "classify" for r in picked):   # image classification runs
    from app.widgets.classify_compare import classification_compare

    guard(classification_compare, picked, labels, rows, what="Comparing classification runs")
    st.stop()
bundles = {rid: data.bundle(rid, (rows[rid] or {}).get("n_events")) for rid in picked}
all_metrics = pd.concat([b["metrics"] for b in bundles.values()], ignore_index=True)
splits = sorted(all_metrics["split"].dropna().unique(), key=lambda s: (s != "val", s)) if not all_metrics.empty \
    else ["val"]
c1, c3 = st.columns([1, 2])
split = c1.selectbox("Split", splits, key="compare_split")
n_boot = c3.select_slider("Bootstrap resamples", [500, 1000, 2000, 5000], value=2000, key="compare_nboot")
palette = data.palette_of(rows[picked[0]])

# evaluations, not runs: each run contributes the evaluations picked for it on this split (default: the one it is
# ranked by; for a run that decides between variants, every variant it measured besides its parent's re-score),
# so a baseline beside its TTA, post-processed, refined or ensembled versions pairs up whatever the variant names
run_evals = {r: guard(data.run_evaluations, r, (rows[r] or {}).get("n_events"), default=pd.DataFrame())
             for r in picked}
evals, eval_of = {}, {}
st.markdown("**Evaluations compared** (the first is the reference)")
pick_cols = st.columns(min(3, len(picked)))
for i, r in enumerate(picked):
    ev = run_evals[r]
    ev = ev[(ev["split"] == split) & (ev["domain"] == "all")] if ev is not None and not ev.empty else pd.DataFrame()
    if ev.empty:
        st.warning(f"No evaluation on `{split}` for {labels[r]}")
        continue
    seqs = list(ev["seq"].astype(int))
    ident = dict(zip(seqs, ev["variant"].astype(str) + " — " + ev["identity"]))
    best = (rows[r] or {}).get("best_seq")
    deciding = ev["role"].isin(["adopted", "rejected", "pending"]).any()
    if deciding:
        default = [q for q, role in zip(seqs, ev["role"]) if role != "lineage"]
    else:
        default = [int(best)] if isnum(best) and int(best) in seqs else [seqs[-1]]
    chosen = pick_cols[i % len(pick_cols)].multiselect(labels[r], seqs, default=default, key=f"compare_eval_{r}",
                                                       format_func=lambda q, ident=ident: ident[q])
    for q in chosen:
        row = ev[ev["seq"] == q].iloc[0]
        lab = labels[r] if len(chosen) == 1 else f"{labels[r]} · {row['variant']}"
        evals[lab], eval_of[lab] = row, (r, q)
if len(evals) < 2:
    st.info("Pick two or more evaluations on this split.")
    st.stop()
reference = next(iter(evals))
variant = evals[reference]["variant"]
tile_sets = {lab: (ev.get("tile_hash"), ev.get("tile_count")) for lab, ev in evals.items()}
if len({t for t in tile_sets.values()}) > 1:
    st.warning("These evaluations scored different tile sets: the figures below are not directly comparable; the "
               "bootstrap pairs only the tiles they share.", icon=":material/warning:")

# ---------------------------------------------------------------------------------------------------------- deltas
st.subheader(f"Metric deltas against the reference ({split})")
deltas = compare.metric_deltas(evals, reference)
fmt = {c: st.column_config.NumberColumn(f"{c} ({split})", format="%.2f" if not c.startswith("Δ") else "%+.2f")
       for c in deltas.columns if c not in ("run", "role", "epoch", "images")}
st.dataframe(deltas, hide_index=True, width="stretch", column_config=fmt, placeholder="–")
st.caption(f"Points (%) on `{split}`; the reference is **{reference}** ({evals[reference]['identity']}).")
st.dataframe(pd.DataFrame({"evaluation": list(evals), "identity": [e["identity"] for e in evals.values()]}),
             hide_index=True, width="stretch", placeholder="–")

# ---------------------------------------------------------------------------------------------------------- bootstrap
st.subheader("Is the difference real? Paired bootstrap over tiles")
tiles = {lab: guard(store.tiles_of, *eval_of[lab], default=pd.DataFrame()) for lab in evals}
_ref_cfg = (rows[picked[0]] or {}).get("config") or {}
boot, problems = compare.bootstrap_rows(tiles, reference, n=n_boot, group_regex=(
    ((_ref_cfg.get("dataset") or {}).get("split") or {}).get("group_regex")),
    block_by=(_ref_cfg.get("reliability") or {}).get("block_by", "auto"))
imported = {labels[r] for r in picked if (rows[r] or {}).get("kind") == "imported"}
for label, why in problems.items():
    st.warning(f"{label}: cannot bootstrap — " + ("an imported run: its source kept no per-tile areas"
                                                   if label in imported else why))
if not boot.empty:
    st.plotly_chart(figures.bootstrap_forest(boot, split), width="stretch", key="boot_forest")
    table = pd.DataFrame({
        "run": boot["run"],
        f"ΔmIoU ({split})": boot["delta"] * 100,
        "95 % CI low": boot["lo"] * 100,
        "95 % CI high": boot["hi"] * 100,
        "verdict": [compare.verdict(r) for _, r in boot.iterrows()],
        f"ΔBoundary IoU ({split})": boot["bdelta"] * 100,
        "bIoU CI": [f"[{lo * 100:+.2f}, {hi * 100:+.2f}]" for lo, hi in zip(boot["blo"], boot["bhi"])],
        "tiles": boot["n_tiles"],
        "spatial-block CI": [f"[{lo * 100:+.2f}, {hi * 100:+.2f}]" for lo, hi in zip(boot["block_lo"],
                                                                                 boot["block_hi"])],
        "blocks": boot["blocks"],
        "MDE (points)": boot["mde"] * 100,
        "detectable?": ["yes" if abs(d) >= m else f"no: {abs(d) * 100:.2f} < MDE {m * 100:.2f}"
                        for d, m in zip(boot["delta"], boot["mde"])],
    })
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%+.2f")
                                for c in table.columns if c.startswith(("Δ", "95"))}, placeholder="–")
    few = int(boot["n_tiles"].min())
    st.caption(f"{n_boot} resamples of the {few} paired tiles (the same draw for both runs; dataset-level mIoU "
               f"recomputed from the summed intersections and unions). A difference is *real* only when its 95 % "
               f"interval excludes 0. The spatial-block interval resamples whole scenes (or a grid of blocks per "
               f"scene) since neighbouring tiles are correlated; MDE: the smallest ΔmIoU these tiles detect at 95 % "
               f"with 80 % power (spatial blocks)."
               + (f" {boot['block_note'].iloc[0]}." if boot["block_note"].iloc[0] else "") + (f" **Only {few} tiles: the interval itself is unreliable; evaluate on "
                                          f"more tiles before trusting it.**" if few < 10 else ""))

# ---------------------------------------------------------------------------------------------------------- reliability
st.subheader("Reliability (side by side)")
from app.widgets.reliability import compare_section  # noqa: E402

compare_section([r for r in picked])

# ---------------------------------------------------------------------------------------------------------- classes
st.subheader("Per-class ΔIoU")
pcs = {}
for lab, ev in evals.items():
    pc = bundles[eval_of[lab][0]]["per_class"]
    pcs[lab] = pc[pc["seq"] == int(ev["seq"])] if not pc.empty else pd.DataFrame()
cd = compare.class_deltas(pcs, reference)
st.plotly_chart(figures.delta_bars(cd, palette, split), width="stretch", key="class_deltas")

# ---------------------------------------------------------------------------------------------------------- confusion
st.subheader("Confusion changes: from a cell to the tiles")
from app.widgets.compare_drilldown import compare_drilldown  # noqa: E402

compare_drilldown(evals, eval_of, rows, reference, split,
                  list(palette.names) or list((rows[picked[0]] or {}).get("class_names") or []), data.workspace_key())

# ---------------------------------------------------------------------------------------------------------- curves
st.subheader("Curves")
series, losses, lrs = [], [], []
for r in picked:
    m = bundles[r]["metrics"]
    m = m[(m["split"] == split) & (m["variant"] == variant) & (m["domain"].fillna("all") == "all")
          & m["epoch"].notna()] if not m.empty else m
    if not m.empty:
        series.append(m.groupby("epoch", as_index=False)["miou"].last().assign(run=labels[r]))
    s = bundles[r]["scalars"]
    if not s.empty:
        ep = s[(s["split"] == "train_epoch") & s["epoch"].notna()]
        for name, bucket in (("loss", losses), ("lr", lrs)):
            x = ep[ep["name"] == name]
            if not x.empty:
                bucket.append(x.groupby("epoch", as_index=False)["value"].last().assign(run=labels[r]))
left, right = st.columns(2)
miou_series = pd.concat(series) if series else pd.DataFrame(columns=["run", "epoch", "miou"])
loss_series = pd.concat(losses) if losses else pd.DataFrame(columns=["run", "epoch", "value"])
left.plotly_chart(figures.overlay_curves(miou_series, "miou", f"mIoU % ({split})",
                                        f"mIoU per epoch ({split}, {variant})", 100.0), width="stretch", key="ov_miou")
right.plotly_chart(figures.overlay_curves(loss_series, "value", "loss", "Training loss per epoch"), width="stretch",
                   key="ov_loss")
if lrs:
    st.plotly_chart(figures.overlay_curves(pd.concat(lrs), "value", "learning rate", "Learning rate", log_y=True),
                    width="stretch", key="ov_lr")

# ---------------------------------------------------------------------------------------------------------- config
st.subheader("Config diff")
used = pd.DataFrame([{"evaluation": lab, "checkpoint run": ev.get("ckpt_run") or eval_of[lab][0],
                      "file": ev.get("checkpoint") or "(the run's own weights in memory)",
                      "epoch": int(ev["ckpt_epoch"]) + 1 if isnum(ev.get("ckpt_epoch")) else None,
                      "weights": ev.get("weights"), "sha256": ev.get("ckpt_hash")} for lab, ev in evals.items()])
st.markdown("**Checkpoints really used** (resolved when each run started; a template's `latest:` is not what ran)")
st.dataframe(used, hide_index=True, width="stretch", placeholder="–")
diff = compare.config_diff({labels[r]: (rows[r] or {}).get("config") for r in picked})
if diff.empty:
    st.info("The resolved configs are identical (apart from provenance).")
else:
    st.dataframe(diff, hide_index=True, width="stretch", placeholder="–")

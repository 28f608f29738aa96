"""TTA A/B: the variants of each A/B run, their figures and the keep/drop decisions (from the store's ab rows).
Post-processing, refinement, ensemble and distillation A/B rows are one click away (same table, other kind)."""
from __future__ import annotations

import json
import re

import pandas as pd
import streamlit as st

from app.widgets import data, decisions
from app.widgets.common import PAGE_FILES, guard
from app.widgets.nav import ensure_routed
from app.widgets.report_button import report_button
from mapsage import figures

ensure_routed()
st.title(":material/science: TTA A/B")
st.caption("Each variant is compared with its baseline on the same checkpoint and tiles; the plan keeps TTA only "
           "where it gains at least the threshold (+0.8 mIoU points by default) — reported side by side with the "
           "cost in images/s.")

ab = guard(data.ab_rows, default=pd.DataFrame(), what="Reading the A/B rows")
runs = guard(data.runs, default=pd.DataFrame())
pending = decisions.pending_runs(runs, ab)
for _, p in (pending.iterrows() if not pending.empty else []):
    with st.container(border=True):
        st.markdown(f"**{p['name']}** · `{p['run_id']}` · `{p['kind']}` · {p['status']}")
        st.warning("**Decision pending**: it is made once every variant is evaluated on the same tiles. Figures "
                   "measured so far, for reading only:", icon=":material/hourglass_top:")
        so_far = guard(decisions.evaluated_so_far, p["run_id"], default=pd.DataFrame())
        if so_far is None or so_far.empty:
            st.caption("No variant evaluated yet.")
        else:
            st.dataframe(so_far.assign(miou=so_far["miou"] * 100, mbiou=so_far["mbiou"] * 100)[
                ["variant", "identity", "miou", "mbiou"]].rename(columns={"miou": "mIoU", "mbiou": "Boundary IoU",
                                                                          "identity": "evaluation"}),
                hide_index=True, width="stretch",
                column_config={c: st.column_config.NumberColumn(c, format="%.2f") for c in ("mIoU", "Boundary IoU")},
                placeholder="–")
if (ab is None or ab.empty) and not pending.empty:
    st.stop()
if ab is None or ab.empty:
    st.info("No A/B rows yet. Launch the TTA A/B template of stage 3 from the Plan board (it needs a trained "
            "checkpoint, e.g. the demo baseline's).", icon=":material/arrow_forward:")
    st.page_link(PAGE_FILES["plan"], label="Open the Plan board", icon=":material/map:")
    st.stop()

kinds = sorted(ab["ab_kind"].dropna().unique())
kind = st.segmented_control("A/B kind", kinds, default="tta" if "tta" in kinds else kinds[0], key="ab_kind") \
    or kinds[0]
rows = ab[ab["ab_kind"] == kind]
rows = rows[~rows["run_id"].isin(set(pending["run_id"]) if not pending.empty else set())]
names = dict(zip(runs["run_id"], runs["name"])) if runs is not None and not runs.empty else {}

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*?_(\d{8})-(\d{6})_([0-9a-f]{4})")


def short_label(label: str) -> str:
    """Variant labels that embed run ids (ensemble members) with each id cut to its time and hash, e.g.
    ``member=segformer_..._20261121-162813_db0b/best_ema`` -> ``member …162813_db0b/best_ema``; the full ids
    are in the figures behind each row."""
    return _RUN_ID.sub(lambda m: f"…{m.group(2)}_{m.group(3)}", str(label)).replace("member=", "member ")


for rid, g in rows.groupby("run_id", sort=False):
    g = g.sort_values("seq")
    split = g["split"].iloc[0]
    crit = g["criterion"].iloc[0] or "miou"
    with st.container(border=True):
        st.markdown(f"**{names.get(rid, rid)}** · `{rid}` · split `{split}` · criterion `{crit}`")
        kept = g[g["decision"] == "keep"]["variant"].tolist()
        if kept:
            st.success("Keep: " + ", ".join(f"**{v}**" for v in kept), icon=":material/check_circle:")
        else:
            st.info("No variant reached the threshold: keep the baseline.", icon=":material/remove:")
        speed = [decisions.throughput_cells(d) for d in g["details_json"]]
        ci = [guard(decisions.interval, rid, split, r["variant"], r["baseline"], crit, r["threshold"], default=None)
              if r["decision"] != "baseline" else None for _, r in g.iterrows()]
        table = pd.DataFrame({
            "variant": g["variant"].map(short_label),
            "baseline": g["baseline"].map(short_label),
            f"mIoU ({split})": g["miou"] * 100,
            f"Boundary IoU ({split})": g["mbiou"] * 100,
            f"baseline mIoU ({split})": g["baseline_miou"] * 100,
            f"gain ({crit}, points)": g["gain"],
            "threshold (points)": g["threshold"],
            "MDE (points)": [c["mde"] if c else None for c in ci],
            "decision": g["decision"],
            f"Δ{crit} 95 % CI (points)": [f"[{c['low']:+.2f}, {c['high']:+.2f}]" if c else "–" for c in ci],
            "tiles paired": [str(c["n_tiles"]) if c else "–" for c in ci],
            f"Δ{crit} CI, spatial blocks": [f"[{c['block_low']:+.2f}, {c['block_high']:+.2f}] ({c['blocks']})"
                                            if c else "–" for c in ci],
            "images/s": g["images_per_s"],
            "images/s median [IQR] (n)": [c["spread"] for c in speed],
            "speed vs baseline": [c["vs"] for c in speed],
            "wall (s)": g["wall_s"],
        })
        num = {c: st.column_config.NumberColumn(c, format="%.2f") for c in table.columns
               if c.endswith(f"({split})") or c in ("threshold (points)", "MDE (points)", "images/s", "wall (s)")}
        num[f"gain ({crit}, points)"] = st.column_config.NumberColumn(f"gain ({crit}, points)", format="%+.2f")
        for c in ("variant", "baseline"):     # long labels (ensemble members) must not push the figures off
            num[c] = st.column_config.TextColumn(c, width="medium")
        if g["baseline"].nunique() == 1:      # one baseline for every row: say it once, above the table
            st.caption(f"baseline: `{short_label(g['baseline'].iloc[0])}`")
            table = table.drop(columns=["baseline"])
        st.dataframe(table, hide_index=True, width="stretch", column_config=num, placeholder="–")
        small = [c for c in ci if c and not c["detectable"]]
        if small:
            c = max(small, key=lambda c: c["mde"])
            st.caption(f":material/info: +{abs(float(g['threshold'].iloc[0])):g} is below what these "
                       f"{c['n_tiles']} tiles can detect: the minimum detectable effect (95 %, 80 % power, "
                       f"resampling {c['blocks']}) is {c['mde']:.2f} points.")
        coarse = [c for c in ci if c and not c["resolves"]]
        if coarse:
            c = max(coarse, key=lambda c: c["half_width"])
            st.caption(f":material/info: The threshold ({g['threshold'].iloc[0]:g} points) is finer than these "
                       f"{c['n_tiles']} tiles can resolve: the 95 % interval of a gain is about ±{c['half_width']:.2f} "
                       f"points wide, so a decision this close is a coin toss — score more tiles.")
        spread = g["images_per_s"].dropna()
        if len(spread) > 1:
            devs = sorted({c["device"] for c in speed if c["device"]})
            st.caption("images/s: median and interquartile range of warm, repeated timings (one per tile after the "
                       "warm-up tiles) on " + (", ".join(devs) or "?") + "; a speed difference whose ranges overlap "
                       "the baseline's is marked *within noise*.")
        if kind == "export":                  # deployment builds: parity, size and speed against PyTorch
            from app.widgets.export_ab import show_export_figures
            show_export_figures(g)
        left, right = st.columns([3, 2])
        shown = g[g["decision"] != "baseline"] if (g["decision"] != "baseline").any() else g
        left.plotly_chart(figures.ab_bars(shown.assign(variant=shown["variant"].map(short_label)),
                                         title=f"{kind}: gain against the baseline ({split})"),
                          width="stretch", key=f"ab_{rid}")
        with right:
            for _, r in g.iterrows():
                details = r.get("details_json")
                if details:
                    with st.expander(f"Figures behind `{short_label(r['variant'])}` → {r['decision']}"):
                        st.caption(f"variant `{r['variant']}` against `{r['baseline']}`")
                        try:
                            st.json(json.loads(details))
                        except ValueError:
                            st.code(details)
        report_button([rid], key=f"ab_report_{rid}", names=[names.get(rid, rid)])
        if st.button("Open run detail", key=f"ab_open_{rid}"):
            st.switch_page(PAGE_FILES["detail"], query_params={"run": rid})

"""The Reliability section (Run detail tab, Compare side by side): corruption robustness, calibration, extent
invariance and spatial statistics of a run's checkpoint, read from its reliability runs' ``reliability`` events.
Its figures (and the validation-loss and metric curves of a training run) are :mod:`mapsage.figures`'."""
from __future__ import annotations

import json
from typing import Any, Optional

import pandas as pd
import streamlit as st

from app.widgets.common import guard

# the figures are mapsage.figures' (the report draws the same); loss_curves and metric_curves are read from here by
# app/widgets/run_detail_tabs.py
from mapsage.figures import corruption_heatmap, extent_figure, loss_curves, metric_curves, reliability_diagram  # noqa: F401
from runners.commands.reliability_cmd import launch_reliability

PCT = 100.0


# ------------------------------------------------------------------------------------------------- reading
def card_of(run_id: str, runs: Optional[pd.DataFrame] = None) -> tuple[Optional[str], dict[str, Any]]:
    """``(reliability run id, {section: payload})`` of ``run_id``: the run itself when it is a reliability run,
    else its newest succeeded reliability child (``parent_run``); ``(None, {})`` when there is none."""
    import store

    src = None
    row = store.run(run_id) or {}
    if row.get("kind") == "reliability":
        src = run_id
    else:
        if runs is None:
            runs = store.list_runs(kind="reliability")
        if runs is not None and not runs.empty:
            kids = runs[(runs["kind"] == "reliability") & (runs["parent_run"] == run_id)
                        & (runs["status"] == "succeeded")]
            if not kids.empty:
                src = str(kids.sort_values("created_at")["run_id"].iloc[-1])
    if src is None:
        return None, {}
    ev = store.events(src, types="reliability")
    card: dict[str, Any] = {}
    for payload in ev["payload"] if not ev.empty else []:
        p = json.loads(payload) if isinstance(payload, str) else dict(payload)
        card[p.get("section")] = p
    return src, card


# ------------------------------------------------------------------------------------------------- tables
def corruption_table(card: dict) -> pd.DataFrame:
    """One row per corruption, mIoU / Boundary IoU (%) per severity, the mean and the drop from clean."""
    cor = card.get("corruption") or {}
    rows = cor.get("rows") or []
    if not rows:
        return pd.DataFrame()
    clean = (cor.get("clean") or {}).get("miou")
    out = []
    for name in dict.fromkeys(r["corruption"] for r in rows):
        mine = {r["severity"]: r for r in rows if r["corruption"] == name}
        rec = {"corruption": mine[min(mine)].get("label", name)}
        for s in sorted(mine):
            rec[f"mIoU s{s}"] = None if mine[s]["miou"] is None else PCT * mine[s]["miou"]
        for s in sorted(mine):
            rec[f"BIoU s{s}"] = None if mine[s]["mbiou"] is None else PCT * mine[s]["mbiou"]
        per = ((cor.get("summary") or {}).get("per_corruption") or {}).get(name) or {}
        rec["mean mIoU"] = None if per.get("mean_miou") is None else PCT * per["mean_miou"]
        rec["relative"] = per.get("relative")
        if clean is not None and rec["mean mIoU"] is not None:
            rec["Δ mean (points)"] = rec["mean mIoU"] - PCT * clean
        occ = [mine[s] for s in sorted(mine) if "clear" in mine[s]]
        if occ:
            rec["clear-pixel mIoU (worst)"] = PCT * min((o["clear"]["miou"] or 0) for o in occ)
            rec["occluded mIoU (worst)"] = PCT * min((o["occluded"]["miou"] or 0) for o in occ)
        out.append(rec)
    return pd.DataFrame(out)


def has_val_loss(scalars: pd.DataFrame) -> bool:
    return scalars is not None and not scalars.empty and bool((scalars["name"] == "val_loss").any())


# ------------------------------------------------------------------------------------------------- text
def headline(card: dict) -> dict[str, str]:
    """The card's key figures as short strings (metric tiles and the Compare table)."""
    out: dict[str, str] = {}
    s = (card.get("corruption") or {}).get("summary") or {}
    f = lambda v, k=PCT: "–" if v is None else f"{k * v:.2f}"   # noqa: E731
    out["clean mIoU"] = f(s.get("clean_miou"))
    out["mean corrupted mIoU"] = f(s.get("mean_corrupted_miou"))
    out["relative robustness"] = f(s.get("relative_robustness"), 1)
    out["mean corrupted BIoU"] = f(s.get("mean_corrupted_mbiou"))
    cal = card.get("calibration") or {}
    out["ECE before → after T (%)"] = (f"{f(cal.get('ece_before'))} → {f(cal.get('ece_after'))}" if cal else "–")
    out["temperature"] = f(cal.get("temperature"), 1)
    ext = card.get("extent") or {}
    out["extent disagreement (%)"] = f(ext.get("rate"))
    boot = card.get("bootstrap") or {}
    out["MDE (points)"] = f(boot.get("mde_points"), 1)
    out["bootstrap blocks"] = boot.get("blocks") or "–"
    return out


def bootstrap_table(card: dict) -> pd.DataFrame:
    rows = []
    for c in (card.get("bootstrap") or {}).get("comparisons", []):
        b, t = c["block"], c["tile"]
        rows.append({"comparison": f"{c['b']} − {c['a']}", "Δ mIoU (points)": PCT * c["delta"],
                     "resampled": b["label"],
                     "block CI": f"[{PCT * b['ci_low']:+.2f}, {PCT * b['ci_high']:+.2f}]",
                     "block width": PCT * (b["ci_high"] - b["ci_low"]),
                     "tiles": t["n_tiles"],
                     "tile-wise CI": f"[{PCT * t['ci_low']:+.2f}, {PCT * t['ci_high']:+.2f}]",
                     "tile-wise width": PCT * (t["ci_high"] - t["ci_low"]),
                     "MDE block (points)": PCT * b["mde"], "MDE tile-wise": PCT * t["mde"],
                     "significant (blocks)": b["significant"], "source": c.get("what", "")})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- sections
def reliability_section(run_id: str, run: dict, key: str = "rel") -> None:
    """The Run detail tab."""

    src, card = guard(card_of, run_id, default=(None, {}), what="Reading the reliability card")
    if not card:
        st.info("No reliability card for this run yet. It measures corruption robustness, calibration (ECE, "
                "temperature scaling), extent invariance and block-bootstrap statistics of the run's checkpoint.",
                icon=":material/verified:")
        if run.get("kind") in ("train", "distill") and run.get("status") == "succeeded":
            if st.button("Compute the reliability card", key=f"{key}_launch", icon=":material/play_arrow:"):
                new = guard(launch_reliability, run_id, what="Launching the reliability run")
                if new:
                    st.success(f"Queued `{new}`; the card appears here when it ends.")
            st.caption(f"Command line: `mapsage reliability {run_id} --wait`")
        return
    if src != run_id:
        st.caption(f"From reliability run `{src}` · checkpoint "
                   f"`{((card.get('corruption') or {}).get('source') or {}).get('checkpoint', '?')}`")
    h = headline(card)
    cols = st.columns(5)
    for col, k in zip(cols, ["clean mIoU", "mean corrupted mIoU", "relative robustness", "ECE before → after T (%)",
                             "extent disagreement (%)"]):
        col.metric(k, h[k])
    st.markdown("#### Corruption robustness")
    cor = card.get("corruption") or {}
    st.caption(f"{cor.get('n_images')} tiles of `{cor.get('split')}`, single view (no TTA), corrupted "
               "deterministically per tile; cloud occlusion also scored on the clear and on the occluded pixels.")
    st.plotly_chart(corruption_heatmap(card), width="stretch", key=f"{key}_heat")
    tab = corruption_table(card)
    if not tab.empty:
        st.dataframe(tab, hide_index=True, width="stretch", placeholder="–",
                     column_config={c: st.column_config.NumberColumn(format="%.2f") for c in tab.columns
                                    if c != "corruption"})
    cal = card.get("calibration")
    if cal:
        st.markdown("#### Calibration")
        held = (cal.get("heldout") or {}).get("ece_after")
        st.caption(f"Pixel ECE over {cal['n_bins']} {'equal-width' if cal['bins'] == 'fixed' else 'equal-mass'} "
                   f"confidence bins, ignored pixels dropped; T fitted by NLL on {cal['n_sampled']:,} sampled "
                   f"validation pixels ({cal['n_tiles']} tiles). Before, over all {cal['n_pixels']:,} pixels: "
                   f"{PCT * (cal.get('ece_before_all') or 0):.2f} %."
                   + (f" Cross-fitted (T from the other half of the tiles): {PCT * held:.2f} %." if held is not None
                      else ""))
        c1, c2 = st.columns([3, 2])
        c1.plotly_chart(reliability_diagram(cal), width="stretch", key=f"{key}_diag")
        names = cal.get("classes") or [str(i) for i in range(len(cal.get("class_ece_before", [])))]
        c2.dataframe(pd.DataFrame({"class": names,
                                   "ECE before %": [PCT * v if v is not None else None
                                                    for v in cal["class_ece_before"]],
                                   "ECE after %": [PCT * v if v is not None else None
                                                   for v in cal["class_ece_after"]]}),
                     hide_index=True, width="stretch", placeholder="–",
                     column_config={c: st.column_config.NumberColumn(format="%.2f")
                                    for c in ("ECE before %", "ECE after %")})
    ext = card.get("extent")
    if ext and ext.get("rate") is not None:
        st.markdown("#### Extent invariance")
        st.caption(f"{ext['n_tiles']} tiles predicted with windows {ext['a']['tile']} (stride {ext['a']['stride']}) "
                   f"and {ext['b']['tile']} (stride {ext['b']['stride']}) shifted by {ext['b']['offset']}: "
                   f"**{PCT * ext['rate']:.2f} %** of pixels change class. Zones: within {ext['zone_px']} px of "
                   "the image border, of a window seam, or interior.")
        st.plotly_chart(extent_figure(ext), width="stretch", key=f"{key}_ext")
    boot = card.get("bootstrap")
    if boot:
        st.markdown("#### Statistics that respect space")
        notes = sorted({c.get("note") for c in boot.get("comparisons", []) if c.get("note")})
        st.caption("Paired bootstraps (B − A, points) resampling spatial blocks (*resampled*: scenes, or a K×K grid "
                   "of blocks per scene) beside the tile-wise one on the same tiles. MDE: the smallest ΔmIoU these "
                   "tiles detect at 95 % with 80 % power. " + " ".join(f"{n}." for n in notes))
        bt = bootstrap_table(card)
        if not bt.empty:
            st.dataframe(bt, hide_index=True, width="stretch", placeholder="–",
                         column_config={c: st.column_config.NumberColumn(format="%.2f") for c in bt.columns
                                        if bt[c].dtype.kind == "f"})


def compare_section(run_ids: list[str]) -> None:
    """Compare: the runs' cards side by side (headline table, heatmaps, reliability diagrams)."""

    cards = {rid: guard(card_of, rid, default=(None, {}), what=f"Reading the reliability card of {rid}")
             for rid in run_ids}
    have = {rid: c for rid, (src, c) in cards.items() if c}
    if not have:
        st.caption("No reliability card for these runs (`mapsage reliability RUN_ID`).")
        return
    table = pd.DataFrame({rid: headline(c) for rid, c in have.items()})
    st.dataframe(table, width="stretch", placeholder="–")
    cols = st.columns(len(have))
    for col, (rid, c) in zip(cols, have.items()):
        with col:
            st.caption(f"`{rid}`")
            st.plotly_chart(corruption_heatmap(c), width="stretch", key=f"cmp_heat_{rid}")
            if c.get("calibration"):
                st.plotly_chart(reliability_diagram(c["calibration"]), width="stretch", key=f"cmp_diag_{rid}")

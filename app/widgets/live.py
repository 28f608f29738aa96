"""Live jobs: the queued and running jobs with status, epoch, a progress bar and the latest metric.

Drawn by an ``st.fragment(run_every=...)``: only this fragment reruns on each tick, the page around it does not.
Progress comes straight from each run's event file (``runners.api.status``: fresh and cheap); the latest metric
from the store (ingested by the same tick's ``refresh``). When a job ends, the fragment asks for one full rerun so
that the board's best results and the Runs table include it."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from mapsage.errors import UserError
from runners import api

from . import data
from .common import (
    ACTIVE,
    PAGE_FILES,
    ago,
    duration,
    isnum,
    pct,
    progress_fraction,
    progress_text,
    refresh,
    status_text,
)
from .launch import cancel

LIVE_EVERY_S = 2.0


def _fresh_status(run_id: str) -> dict:
    try:
        return api.status(run_id)
    except UserError as exc:
        return {"run_id": run_id, "status": None, "message": str(exc), "progress": None}


def _job_row(row: pd.Series, live: dict) -> None:
    rid = row["run_id"]
    status = live.get("status") or row["status"]
    progress = live.get("progress") or {}
    frac = progress_fraction(progress, status)
    with st.container(border=True):
        top = st.columns([5, 2, 2, 1])
        top[0].markdown(f"**{row['name']}** · stage {row['plan_stage']} · `{row['kind']}`  \n"
                        f"<small>`{rid}`</small>", unsafe_allow_html=True)
        top[1].markdown(f"{status_text(status)}")
        if isnum(row.get("last_val_miou")):
            top[2].metric(f"last mIoU ({row['split']})", pct(row["last_val_miou"]))
        elif status == "queued":
            pos = live.get("queue_position")
            on_cluster = "SLURM" in (live.get("message") or "")      # submitted to or requeued by SLURM
            top[2].caption("waiting in the SLURM queue" if on_cluster
                           else f"waiting for a slot{f' (position {pos})' if pos else ''}")
        if status in ACTIVE:
            if top[3].button("Cancel", key=f"live_cancel_{rid}", help="SIGTERM to the job's process group; "
                                                                     "SIGKILL after the grace period"):
                got = cancel(rid)
                if got:
                    st.toast(f"{rid}: {got}")
        text = progress_text(progress, status) or (live.get("message") or "")
        if status == "running":
            st.progress(frac if frac is not None else 0.0, text=text or "starting…")
            hb = live.get("last_heartbeat")
            started = row.get("started_at")
            since = (f" · running for {duration(time.time() - started.timestamp())}"
                     if isinstance(started, pd.Timestamp) else "")
            st.caption(f"heartbeat {ago(hb)}{since}")
        elif text:
            st.caption(text)


@st.fragment(run_every=LIVE_EVERY_S)
def live_jobs(plan_stage: int | None = None) -> None:
    """The live jobs panel (optionally only one plan stage's)."""
    refresh()
    data.clear()
    runs = data.runs()
    active = runs[runs["status"].isin(ACTIVE)] if not runs.empty else runs
    if plan_stage is not None and not active.empty:
        active = active[active["plan_stage"] == plan_stage]
    ids = list(active["run_id"]) if not active.empty else []
    before = st.session_state.get("live_active_ids")
    st.session_state["live_active_ids"] = ids
    if before is not None and set(before) - set(ids):
        ended = sorted(set(before) - set(ids))
        st.session_state["live_ended"] = list(dict.fromkeys(ended + st.session_state.get("live_ended", [])))[:10]
        st.rerun(scope="app")           # a job ended: redraw the board's best results and links once

    st.markdown(f"**Live jobs** · {len(ids)} active · refreshed every {LIVE_EVERY_S:g} s "
                f"<small>(last {time.strftime('%H:%M:%S')})</small>", unsafe_allow_html=True)
    if not ids:
        st.caption("No job is queued or running.")
    for _, row in active.iterrows():
        _job_row(row, _fresh_status(row["run_id"]))

    ended = [r for r in st.session_state.get("live_ended", []) if not runs.empty and r in set(runs["run_id"])]
    if ended:
        done = runs.set_index("run_id").loc[ended]
        st.markdown("**Recently ended**")
        for rid, row in done.iterrows():
            c1, c2, c3 = st.columns([5, 2, 2])
            c1.markdown(f"`{row['name']}` <small>`{rid}`</small>", unsafe_allow_html=True)
            c2.markdown(status_text(row["status"]) + (f" · mIoU ({row['split']}) {pct(row['best_val_miou'])}"
                                                      if isnum(row.get("best_val_miou")) else ""))
            if c3.button("Open detail", key=f"live_open_{rid}"):
                st.switch_page(PAGE_FILES["detail"], query_params={"run": rid})

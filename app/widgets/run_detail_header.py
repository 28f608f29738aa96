"""Run detail's top of the page (``app/views/run_detail.py`` lays it out): the run picker bound to ``?run=``, the
run's headline (one evaluation's figures, or a health run's check counts), its facts, tags and note, and what can be
done with it (report, delivery, cancel, resume, export, warm start), with the live progress of an active run."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

import store
from app.widgets import data, interop
from app.widgets.classify_view import classification_detail
from app.widgets.common import (
    ACTIVE,
    ago,
    duration,
    guard,
    isnum,
    pct,
    progress_fraction,
    progress_text,
    query_list,
    refresh,
    status_text,
)
from app.widgets.deliver import deliver_section
from app.widgets.export_ab import export_action
from app.widgets.launch import cancel, resume
from app.widgets.report_button import report_button
from app.widgets.run_notes import tags_and_note
from app.widgets.warm_start import warm_start_action
from runners import api

ROLES = {"result": "the run's own result", "adopted": "the variant this run adopted",
         "lineage": "the parent's checkpoint re-scored (lineage, not this run's result)",
         "rejected": "a variant this run did not adopt", "pending": "the decision is still pending"}


def pick_run(runs: pd.DataFrame) -> str:
    """The run selector: ``?run=`` picks it, and the pick is written back to the address."""
    wanted = (query_list("run") or [None])[0]
    if wanted and wanted not in set(runs["run_id"]):      # asked for by id: maybe newer than the cached list
        runs = guard(data.runs, True, default=runs, what="Reading the run list")
    ids = list(runs["run_id"])
    names = dict(zip(runs["run_id"], runs["name"] + "  ·  " + runs["status"].fillna("?")))
    if wanted and wanted not in names:
        st.warning(f"Run `{wanted}` is not in the store (yet?). Pick another one.")
        wanted = None
    rid = st.selectbox("Run (newest first)", ids, index=ids.index(wanted) if wanted else 0, key="detail_run")
    if rid != wanted:
        st.query_params["run"] = rid
    return rid


def header(rid: str, run: dict) -> None:
    """Name, status line, the headline figures (a classification run draws its own page and stops here) and the
    duration."""
    st.subheader(run.get("name") or rid)
    st.markdown(f"{status_text(run.get('status'))} &nbsp; `{rid}` · stage {run.get('plan_stage')} · "
                f"`{run.get('kind')}` · dataset `{run.get('dataset')}` · figures on split `{run.get('split')}`")
    if run.get("kind") == "classify":          # image classification: its own figures (app/widgets/classify_view.py)

        guard(classification_detail, run, what=f"Drawing classification run {rid}")
        st.stop()
    c = _health_counts(rid) if run.get("kind") == "health" else None
    if c is None:
        _headline_evaluation(rid, run)
    started, ended = run.get("started_at"), run.get("ended_at")
    dur = (((ended or pd.Timestamp.now(tz="UTC")) - started).total_seconds() if isinstance(started, pd.Timestamp)
           else None)
    if c is not None:
        c[3].metric("Duration", duration(dur))
    else:
        st.caption(f"Duration {duration(dur)}")


def _health_counts(rid: str) -> list:
    """A health run's pass / warn / fail counts in the first three of five columns (returned: the fourth takes
    the duration)."""
    c = st.columns(5)
    checks = guard(store.health, rid, default=pd.DataFrame())
    n = checks["status"].value_counts() if checks is not None and not checks.empty else {}
    for col, status in zip(c[:3], ("pass", "warn", "fail")):
        col.metric(f"Checks: {status}", int(n.get(status, 0)) if len(n) else "–")
    return c


def _headline_evaluation(rid: str, run: dict) -> None:
    """ONE evaluation's figures together (the run's headline by the ranking rule, or the one picked)."""
    evs = guard(data.run_evaluations, rid, run.get("n_events"), default=pd.DataFrame())
    evs = evs[evs["domain"] == "all"].reset_index(drop=True) if evs is not None and not evs.empty else pd.DataFrame()
    if evs.empty:
        st.caption("No evaluation yet.")
        return
    best_seq = run.get("best_seq")
    seqs = list(evs["seq"].astype(int))
    default_i = seqs.index(int(best_seq)) if isnum(best_seq) and int(best_seq) in seqs else len(seqs) - 1
    ident = dict(zip(seqs, evs["identity"]))
    head_seq = st.selectbox(
        "Headline evaluation", seqs, index=default_i, key="detail_headline",
        format_func=lambda q: ("★ " if isnum(best_seq) and q == int(best_seq) else "") + ident[q],
        help="every figure below comes from this one evaluation; ★ is the one the run is ranked by (its own "
             "best result, or the variant it adopted)")
    h = evs[evs["seq"] == head_seq].iloc[0]
    hc = st.columns(5)
    hc[0].metric("mIoU", pct(h["miou"]))
    hc[1].metric("Boundary IoU", pct(h["mbiou"]))
    hc[2].metric("mAcc", pct(h["macc"]))
    hc[3].metric("mF1", pct(h["mf1"]))
    hc[4].metric("Images/s", f"{h['images_per_s']:.2f}" if isnum(h.get("images_per_s")) else "–",
                 help=f"on {h['device']}" if isinstance(h.get("device"), str) else None)
    st.caption(f"**{h['identity']}** — {ROLES.get(h['role'], h['role'])}"
               + (f" · checkpoint `{h['checkpoint']}` (sha256 {h['ckpt_hash']})"
                  if isinstance(h.get("checkpoint"), str) else "")
               + (f" · {h['params'] / 1e6:.2f} M parameters" if isnum(h.get("params")) else ""))


def facts_and_actions(rid: str, run: dict) -> None:
    """Host, hashes and lineage; tags and note; report and delivery; the failure; cancel / resume / export / warm
    start; the live progress of an active run."""
    facts = [f"host `{run.get('host') or '–'}` pid `{run.get('pid') or '–'}` GPUs `{run.get('gpus') or 'none'}`",
             f"config hash `{run.get('config_hash')}` · code `{run.get('code_commit')}`"]
    if run.get("parent_run"):
        facts.append(f"{run.get('parent_relation') or 'child'} of `{run['parent_run']}`")
    st.caption(" · ".join(facts))
    tags_and_note(rid)
    interop.imported_note(run)
    report_button([rid], key="detail", names=[run.get("name") or rid])
    deliver_section(run)
    if run.get("status") in ("failed", "died") and (run.get("status_message") or run.get("traceback")):
        st.error(f"{run['status']}: {run.get('status_message') or ''}")
        if run.get("traceback"):
            with st.expander("Traceback"):
                st.code(run["traceback"], language="text")
    _actions(rid, run)
    if run.get("status") in ACTIVE:
        _live(rid)


def _actions(rid: str, run: dict) -> None:
    if run.get("status") in ACTIVE:
        if st.button("Cancel run", key="detail_cancel", icon=":material/stop_circle:"):
            got = cancel(rid)
            if got:
                st.toast(f"{rid}: {got}")
    elif run.get("kind") in ("train", "distill") and run.get("status") in ("failed", "cancelled", "died"):
        if st.button("Resume", key="detail_resume", icon=":material/play_circle:",
                     help="a new run continuing from this run's last checkpoint"):
            new = resume(rid)
            if new:
                st.success(f"Resumed as `{new}`.")
    elif run.get("kind") in ("train", "distill") and run.get("status") == "succeeded":
        export_action(rid)              # ONNX / TorchScript builds with parity and speed
        warm_start_action(rid)          # fine-tune at a new crop size from this run's weights


@st.fragment(run_every=2.0)
def _live(run_id: str) -> None:
    refresh()
    try:
        live = api.status(run_id)
    except Exception as exc:  # noqa: BLE001 - shown
        st.caption(f"status unavailable: {exc}")
        return
    if live.get("final"):
        st.rerun(scope="app")
    frac = progress_fraction(live.get("progress"), live.get("status"))
    st.progress(frac or 0.0, text=progress_text(live.get("progress"), live.get("status"))
                or status_text(live.get("status")))
    st.caption(f"heartbeat {ago(live.get('last_heartbeat'))} · refreshed {time.strftime('%H:%M:%S')}")

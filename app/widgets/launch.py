"""Launching, cancelling and resuming jobs from the app -- always through ``runners.api``, never in-process.

``runners.api.launch`` resolves the config, snapshots it into a new run folder, queues the job and starts a
detached process when a slot is free; it returns at once with the run id. Config errors (a bad override, a missing
weights file named in the config) come back as ``ConfigError``/``UserError`` and are shown with ``st.error``."""
from __future__ import annotations

from typing import Optional

import streamlit as st

from mapsage.config import ConfigError
from mapsage.errors import UserError
from runners import api
from runners.health_gate import gate_for

from . import data
from .common import show_error
from .templates import Template


def _ingest_now(run_id: str) -> None:
    """Ingest the new run folder at once (one small file; skipped when another process is ingesting), so the
    pages drawn right after a launch already list the run."""
    import store

    try:
        store.ingest_run(run_id, wait=False)
    except UserError:
        pass                      # the next refresh picks it up
    data.clear()


def health_gate(template: Template, overrides: list[str]):
    """The health gate of a training launch (``runners.health_gate``); None when it does not apply or passes."""
    try:
        gate = gate_for(template.path, overrides)
    except (ConfigError, UserError):
        return None                       # the launch itself reports the config error
    return None if gate is None or gate.ok else gate


PENDING = "health_gate_pending"


def confirm_pending(template: Template) -> Optional[str]:
    """Draw the confirm step of a gated launch of ``template`` (if one is pending); returns the run id when the
    user launched anyway. Called where the template's launch form is drawn, on every run of the page."""
    pending = st.session_state.get(PENDING, {}).get(template.rel)
    if not pending:
        return None
    gate = pending["gate"]
    with st.container(border=True):
        (st.error if gate["blocks"] else st.warning)(gate["message"])
        st.caption("The plan: all stage-0 health checks pass before training is trusted. Launch anyway only "
                   "when you know why.")
        c1, c2, _ = st.columns([1, 1, 3])
        go = c1.button("Launch anyway", type="primary", key=f"health_gate_go:{template.rel}")
        stop = c2.button("Cancel", key=f"health_gate_cancel:{template.rel}")
    if not (go or stop):
        return None
    st.session_state[PENDING].pop(template.rel, None)
    if stop:
        st.rerun()
    rid = launch(template, pending["overrides"], pending["gpus"], confirmed=True)
    if rid and pending.get("flash") is not None:   # the page's own "Launched" note, after a full rerun
        st.session_state["plan_flash"] = {"rid": rid, **pending["flash"],
                                          "summary": f"{pending['flash'].get('summary', '')}; health gate overridden"}
        st.rerun()
    if rid:
        st.success(f"Launched `{rid}` (health gate overridden).")
    return rid


def launch(template: Template, overrides: list[str], gpus: Optional[int] = None,
           confirmed: bool = False, flash: Optional[dict] = None) -> Optional[str]:
    """Launch through ``runners.api``. A training stage on a dataset whose health checks failed or never ran
    asks first: the launch is kept pending and :func:`confirm_pending` (drawn with the template's form) asks."""

    if not confirmed:
        try:   # what would fail the launch is said now, before the health gate asks anything
            api.check_launch(template.path, overrides, gpus=gpus)
        except (ConfigError, UserError) as exc:
            show_error(exc, f"Cannot launch {template.rel}")
            return None
        gate = health_gate(template, overrides)
        if gate is not None:                  # ask first: confirm_pending draws the question on the next run
            st.session_state.setdefault(PENDING, {})[template.rel] = {
                "overrides": list(overrides), "gpus": gpus, "flash": flash,
                "gate": {"message": gate.message(), "blocks": gate.blocks, "failing": gate.failing}}
            st.rerun()
    try:
        rid = api.launch(template.path, overrides, gpus=gpus)
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot launch {template.rel}")
        return None
    _ingest_now(rid)
    st.session_state.setdefault("launched", []).append(rid)
    return rid


def launch_many(templates: list[Template]) -> list[str]:
    """Launch a plan in order (the demo plan queues its own health checks first, so it is not gated)."""
    out = []
    for t in templates:
        rid = launch(t, [], confirmed=True)
        if rid:
            out.append(rid)
    return out


def predict(run_id: str, on: Optional[str], options: list[str]) -> Optional[str]:
    """Queue a ``predict`` job with ``run_id``'s model (``runners.api.predict``)."""

    try:
        rid = api.predict(run_id, on or None, options)
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot predict with {run_id}")
        return None
    _ingest_now(rid)
    st.session_state.setdefault("launched", []).append(rid)
    return rid


def cancel(run_id: str) -> Optional[str]:
    try:
        status = api.cancel(run_id, wait=False)
    except UserError as exc:
        show_error(exc, f"Cannot cancel {run_id}")
        return None
    _ingest_now(run_id)
    return status


def resume(run_id: str, overrides: Optional[list[str]] = None) -> Optional[str]:
    try:
        rid = api.resume(run_id, overrides or [])
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot resume {run_id}")
        return None
    _ingest_now(rid)
    st.session_state.setdefault("launched", []).append(rid)
    return rid

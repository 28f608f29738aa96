"""Launching, cancelling and resuming jobs from the app -- always through ``runners.api``, never in-process.

``runners.api.launch`` resolves the config, snapshots it into a new run folder, queues the job and starts a
detached process when a slot is free; it returns at once with the run id. Config errors (a bad override, a missing
weights file named in the config) come back as ``ConfigError``/``UserError`` and are shown with ``st.error``."""
from __future__ import annotations

from typing import Optional

import streamlit as st

from mapsage.config import ConfigError
from mapsage.errors import UserError

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


def launch(template: Template, overrides: list[str], gpus: Optional[int] = None) -> Optional[str]:
    from runners import api

    try:
        rid = api.launch(template.path, overrides, gpus=gpus)
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot launch {template.rel}")
        return None
    _ingest_now(rid)
    st.session_state.setdefault("launched", []).append(rid)
    return rid


def launch_many(templates: list[Template]) -> list[str]:
    out = []
    for t in templates:
        rid = launch(t, [])
        if rid:
            out.append(rid)
    return out


def predict(run_id: str, on: Optional[str], options: list[str]) -> Optional[str]:
    """Queue a ``predict`` job with ``run_id``'s model (``runners.api.predict``)."""
    from runners import api

    try:
        rid = api.predict(run_id, on or None, options)
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot predict with {run_id}")
        return None
    _ingest_now(rid)
    st.session_state.setdefault("launched", []).append(rid)
    return rid


def cancel(run_id: str) -> Optional[str]:
    from runners import api

    try:
        status = api.cancel(run_id, wait=False)
    except UserError as exc:
        show_error(exc, f"Cannot cancel {run_id}")
        return None
    _ingest_now(run_id)
    return status


def resume(run_id: str, overrides: Optional[list[str]] = None) -> Optional[str]:
    from runners import api

    try:
        rid = api.resume(run_id, overrides or [])
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot resume {run_id}")
        return None
    _ingest_now(rid)
    st.session_state.setdefault("launched", []).append(rid)
    return rid

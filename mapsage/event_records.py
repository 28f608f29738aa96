"""Typed event records and the one fold of a run's live state.

The event file (:mod:`mapsage.events`) stays plain JSON lines; this module only reads it. :func:`parse` turns a
record into a :class:`Status`, :class:`Heartbeat` or :class:`RunInfo` (the types that make up a run's live state)
or a generic :class:`Event` (every other type, known or not). Parsing is tolerant: a missing or malformed field is
``None``, never an error.

:class:`RunState` is the fold of those records -- status, message, traceback, start and end, last heartbeat,
pid / host, progress and the ``run_info`` facts -- applied record by record (``state.apply(record)``), so it can
follow a file incrementally. ``runners.jobs.live_status``, the scheduler's ``last_status`` and last-beat reader and
the store's ingest (``store.ingest``: a run's status / heartbeat / run_info columns) all use it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Union

from .events import FINAL_STATUSES, read_events

# ---------------------------------------------------------------------------------------------------------------
# tolerant scalar coercion (shared with store.ingest)


def to_float(x: Any) -> float | None:
    """A finite float, or None (None, NaN/inf, non-numbers)."""
    if x.__class__ is float:              # the common case: a finite JSON number (NaN/inf fail x - x == 0)
        return x if x - x == 0 else None
    if x is None or isinstance(x, bool):
        return None if x is None else float(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def to_int(x: Any) -> int | None:
    if x is None:
        return None
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def to_str(x: Any) -> str | None:
    if x is None:
        return None
    return x if isinstance(x, str) else str(x)


def json_dict(text: Any) -> dict:
    """A JSON object stored as text (an evaluation's ``extra_json``, an artifact's ``meta_json``) as a dict;
    anything else gives ``{}``."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return {}
    try:
        out = json.loads(text)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


# ---------------------------------------------------------------------------------------------------------------
# typed records

_ENVELOPE = ("seq", "ts", "type")


def _payload(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in _ENVELOPE}


@dataclass(frozen=True)
class Status:
    TYPE: ClassVar[str] = "status"
    seq: int | None = None
    ts: float | None = None
    status: str | None = None
    message: str | None = None
    traceback: str | None = None

    @classmethod
    def parse(cls, r: dict) -> Status:
        return cls(to_int(r.get("seq")), to_float(r.get("ts")), to_str(r.get("status")), to_str(r.get("message")),
                   to_str(r.get("traceback")))

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"
    seq: int | None = None
    ts: float | None = None
    pid: int | None = None
    host: str | None = None
    progress: dict | None = None      # a non-empty mapping, else None

    @classmethod
    def parse(cls, r: dict) -> Heartbeat:
        prog = r.get("progress")
        return cls(to_int(r.get("seq")), to_float(r.get("ts")), to_int(r.get("pid")), to_str(r.get("host")),
                   prog if isinstance(prog, dict) and prog else None)


@dataclass
class RunFacts:
    """What ``run_info`` records say about a run: the facts a run's row in the store and its live state carry."""
    name: str | None = None
    kind: str | None = None
    title: str | None = None
    config_hash: str | None = None
    code_commit: str | None = None
    dataset: str | None = None
    split: str | None = None
    parent_run: str | None = None
    parent_relation: str | None = None
    resume_from: str | None = None
    created_at: float | None = None
    epochs: int | None = None
    pid: int | None = None            # pid / host: a heartbeat gives them too (the later one wins)
    pgid: int | None = None
    host: str | None = None
    plan_stage: int | None = None     # ``plan_stage``, else a numeric ``stage``
    gpus: Any = None                  # as written (a list of ids, or a string)


_COERCE = {"str | None": to_str, "float | None": to_float, "int | None": to_int}
# the plain facts with their coercion, read off RunFacts (``plan_stage`` and ``gpus`` are parsed on their own)
RUN_INFO_FIELDS: dict[str, Callable[[Any], Any]] = {
    f.name: _COERCE[f.type] for f in dataclasses.fields(RunFacts) if f.name not in ("plan_stage", "gpus")}
_FACT_NAMES = tuple(f.name for f in dataclasses.fields(RunFacts))


@dataclass
class RunInfo(RunFacts):
    TYPE: ClassVar[str] = "run_info"
    seq: int | None = None
    ts: float | None = None
    payload: dict = field(default_factory=dict)   # every field but seq / ts / type (free-form facts included)

    @classmethod
    def parse(cls, r: dict) -> RunInfo:
        facts = {k: conv(r[k]) for k, conv in RUN_INFO_FIELDS.items() if r.get(k) is not None}
        stage = r.get("plan_stage", r.get("stage"))
        if isinstance(stage, (int, float)) and not isinstance(stage, bool) and math.isfinite(stage):
            facts["plan_stage"] = int(stage)
        return cls(seq=to_int(r.get("seq")), ts=to_float(r.get("ts")), gpus=r.get("gpus"), payload=_payload(r),
                   **facts)


@dataclass(frozen=True)
class Event:
    """Any other record (scalars, metrics, tiles, ..., or a type this version does not know)."""
    type: str | None = None
    seq: int | None = None
    ts: float | None = None
    payload: dict = field(default_factory=dict)


Record = Union[Status, Heartbeat, RunInfo, Event]
_TYPED: dict[str, type] = {c.TYPE: c for c in (Status, Heartbeat, RunInfo)}


def parse(record: Any) -> Record:
    """The typed form of one event record; never raises (a non-mapping line becomes an empty :class:`Event`)."""
    if not isinstance(record, dict):
        return Event()
    typ = record.get("type")
    cls = _TYPED.get(typ) if isinstance(typ, str) else None
    if cls is not None:
        return cls.parse(record)
    return Event(to_str(typ), to_int(record.get("seq")), to_float(record.get("ts")), _payload(record))


def progress_frac(progress: dict | None) -> float | None:
    """Fraction done of a heartbeat's progress: ``frac``, else ``step / steps``, else ``epoch / epochs``."""
    if not progress:
        return None
    frac = to_float(progress.get("frac"))
    if frac is None and to_float(progress.get("step")) is not None and to_float(progress.get("steps")):
        frac = to_float(progress["step"]) / to_float(progress["steps"])
    elif frac is None and to_float(progress.get("epoch")) is not None and to_float(progress.get("epochs")):
        frac = to_float(progress["epoch"]) / to_float(progress["epochs"])
    return frac


# ---------------------------------------------------------------------------------------------------------------
# the fold


@dataclass
class RunState(RunFacts):
    """A run's live state, folded from its records in file order. ``apply`` one record at a time (incremental);
    ``copy`` before applying more to a state someone else holds."""
    n_events: int = 0                 # records applied (every type)
    has_status: bool = False          # a status record was applied
    status: str | None = None         # the last status record's
    message: str | None = None
    traceback: str | None = None
    status_ts: float | None = None
    status_record: dict | None = None  # the last status record, as read
    started_at: float | None = None   # ts of the first ``running`` status
    ended_at: float | None = None     # ts of the last status when it is final, else None
    last_heartbeat: float | None = None  # ts of the last heartbeat
    last_beat: float | None = None    # ts of the last heartbeat or status (the scheduler's liveness clock)
    progress: dict | None = None      # the last non-empty heartbeat progress
    info: dict = field(default_factory=dict)   # the run_info payloads merged (later keys win)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def progress_frac(self) -> float | None:
        return progress_frac(self.progress)

    def copy(self) -> RunState:
        return dataclasses.replace(self, info=dict(self.info))

    def apply(self, record: Any) -> Status | Heartbeat | RunInfo | None:
        """Fold one record in; returns its typed form when it is one the state follows, else None."""
        self.n_events += 1
        if not isinstance(record, dict):
            return None
        typ = record.get("type")
        fold = _FOLDS.get(typ) if typ.__class__ is str else None
        if fold is None:
            return None
        rec = fold[0].parse(record)
        fold[1](self, rec)
        if rec.__class__ is Status:
            self.status_record = record
        return rec

    def _status(self, s: Status) -> None:
        self.has_status = True
        self.status, self.message, self.traceback, self.status_ts = s.status, s.message, s.traceback, s.ts
        self.ended_at = s.ts if s.final else None
        if s.status == "running" and self.started_at is None:
            self.started_at = s.ts
        self.last_beat = s.ts

    def _heartbeat(self, h: Heartbeat) -> None:
        self.last_heartbeat = self.last_beat = h.ts
        if h.pid is not None:
            self.pid = h.pid
        if h.host is not None:
            self.host = h.host
        if h.progress:
            self.progress = h.progress

    def _run_info(self, i: RunInfo) -> None:
        for key in _FACT_NAMES:
            value = getattr(i, key)
            if value is not None:
                setattr(self, key, value)
        self.info.update(i.payload)


_FOLDS: dict[str, tuple[type, Callable[[RunState, Any], None]]] = {
    "status": (Status, RunState._status), "heartbeat": (Heartbeat, RunState._heartbeat),
    "run_info": (RunInfo, RunState._run_info)}


def fold_events(path: str | Path, start_offset: int = 0,
                state: RunState | None = None) -> tuple[RunState, int]:
    """Apply the complete records of an event file from ``start_offset`` to ``state`` (a new one when None;
    changed in place). Returns (state, offset after the last complete line) -- pass both back to continue."""
    state = RunState() if state is None else state
    records, offset = read_events(path, start_offset)
    for r in records:
        state.apply(r)
    return state, offset

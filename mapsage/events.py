"""The run event file: ``workspace/runs/<run_id>/events.jsonl``, append-only, one JSON object per line.

It is the source of truth of a run: every record is flushed (and fsync'ed) when written, it survives a crash, and
readers tolerate a half-written last line. The store ingests it (``store.ingest``); nothing else writes a run's
numbers anywhere else. Readers that want a run's live state (status, heartbeat, progress, run_info facts) fold
it with :class:`mapsage.event_records.RunState` rather than walking the records themselves.

Every record has ``seq`` (0, 1, 2, ... per file; with ``run_id`` it is the record's identity, so ingest is
idempotent), ``ts`` (UNIX seconds) and ``type``. Record types and their payloads:

==============  ==================================================================================================
type            payload
==============  ==================================================================================================
``status``      ``status``: queued | running | succeeded | failed | cancelled | died; ``message``; ``traceback``
``heartbeat``   ``pid``, ``host``; optional ``progress``: {``epoch``, ``epochs``, ``step``, ``steps``, ``frac``,
                ``phase``, ``message``}
``scalars``     ``epoch`` (int or null), ``step`` (global step or null), ``split`` (train | val | ...),
                ``values``: {name: float}  (loss, lr, grad_norm, acc_seg, time, data_time, epoch_time,
                peak_mem_mb, gpu_util, ...)
``metrics``     one evaluation: ``split``, ``domain`` ("all", "Urban", ...), ``variant`` ("raw", "ema",
                "tta=on", "refine=crf", ...), ``epoch`` (or null for a final evaluation), ``summary``:
                {miou, macc, aacc, mf1 (Dice, mmseg mDice), mbiou, per_image_miou, mfscore (mmseg mFscore),
                mfscore_fg (foreground mean F-score)}, ``classes``: [{id, name, iou, acc, precision, f1, fscore,
                biou, boundary_pixels (the class's boundary pixels in the label)}], ``excluded_classes``: [names],
                ``confusion``: C×C int list (rows = label), ``n_images``, ``boundary_px``, ``boundary_strip_px``,
                ``boundary_warnings``: [lines] (classes with almost no boundary pixels in the label),
                ``identity``: {run, checkpoint, ckpt_run, ckpt_epoch, ckpt_hash, weights, dataset, tile_count,
                tile_hash, split_size, device} (see :mod:`mapsage.evalid`)
``tiles``       per-tile areas for paired bootstrap: ``split``, ``variant``, ``rows``: [{tile, domain,
                intersect: [C], union: [C], label_area: [C], pred_area: [C], b_intersect: [C], b_union: [C],
                b_label: [C]}]
``ab``          an A/B decision row: ``ab_kind`` (tta | post | refine | ensemble | distill | export), ``variant``,
                ``baseline`` (variant name), ``split``, ``summary`` (as metrics), ``baseline_summary``,
                ``gain`` (points, of ``criterion``), ``criterion`` (miou | mbiou), ``threshold``, ``decision``
                (keep | drop | baseline), ``images_per_s``, ``wall_s``, ``details``
``artifact``    ``kind`` (checkpoint | pred | pred_color | prob | refined | overlay | figure | report ...),
                ``path`` (relative to the run folder, or absolute), ``tile``, ``variant``, ``meta``
``health``      ``check``, ``status`` (pass | warn | fail), ``verdict`` (one line), ``evidence`` (mapping),
                ``picture`` (artifact path or null)
``reliability`` one section of a reliability card (stage kind ``reliability``): ``section`` (corruption |
                calibration | extent | bootstrap) and its figures (see :mod:`mapsage.reliability.stage`); kept in
                the store's event ledger (``store.events(run, types="reliability")``)
``log``         ``level``, ``message``
``run_info``    ``name``, ``stage``, ``kind``, ``config_hash``, ``code_commit``, ``dataset``, ``split``, ... (any
                facts a run wants on its row)
==============  ==================================================================================================
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .evalid import merged

EVENTS_FILE = "events.jsonl"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "died", "pruned")
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "died", "pruned")


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars and arrays become Python values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy / torch
        return _clean(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return _clean(item())
    return value


def read_events(path: str | Path, start_offset: int = 0) -> tuple[list[dict], int]:
    """Read complete records from ``start_offset``. Returns (records, offset after the last complete line).

    A torn last line (no trailing newline yet, or invalid JSON at the very end) is left for the next read."""
    path = Path(path)
    if not path.exists():
        return [], start_offset
    with open(path, "rb") as fh:
        fh.seek(start_offset)
        data = fh.read()
    records: list[dict] = []
    offset = start_offset
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn tail: wait for the writer to finish it
        offset += len(line)
        text = line.strip()
        if not text:
            continue
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a corrupt line in the middle (e.g. a crash mid-write then a new writer): skipped
    return records, offset


class EventWriter:
    """Append records to a run's event file. Safe across threads and processes: the sequence number is assigned
    and the line appended under an exclusive ``flock`` on the file, after catching up with whatever another
    writer (the job's supervisor, the scheduler, a second process) appended since this writer's last record, so
    two writers of one file never produce the same ``seq``."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, fsync: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE
        self.enabled = enabled
        self.fsync = fsync
        self._lock = threading.Lock()
        self._seq = 0
        self._known = 0          # file size after the last record this writer saw (read or wrote)
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def _catch_up(self, fh) -> None:
        """Under the file lock: read what others appended since ``_known``; drop a torn tail (a writer that
        crashed mid-line) so the next record starts on its own line."""
        size = os.fstat(fh.fileno()).st_size
        if size == self._known:
            return
        start = self._known if size > self._known else 0
        if start == 0:
            self._seq = 0
        records, offset = read_events(self.path, start)
        if records:
            self._seq = max(self._seq, max(int(r.get("seq", -1)) for r in records) + 1)
        if offset != size:
            fh.truncate(offset)
        self._known = offset

    def emit(self, type: str, **payload: Any) -> dict | None:
        if not self.enabled:
            return None
        if type == "metrics":   # every evaluation carries its identity (mapsage.evalid)
            payload = {**payload, "identity": merged(self, payload)}
        with self._lock:
            body = _clean(payload)
            with open(self.path, "ab") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    self._catch_up(fh)
                    record = {"seq": self._seq, "ts": time.time(), "type": type, **body}
                    line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
                    try:
                        fh.write(line)
                        fh.flush()
                        if self.fsync:
                            os.fsync(fh.fileno())
                    except OSError:
                        # a partial line (full disk) must not stay in front of the next writer's record
                        try:
                            fh.truncate(self._known)
                        except OSError:
                            pass
                        raise
                    self._known += len(line)
                    self._seq += 1
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return record

    # conveniences -------------------------------------------------------------------------------------------
    def status(self, status: str, message: str = "", traceback: str | None = None):
        assert status in STATUSES, status
        return self.emit("status", status=status, message=message, traceback=traceback)

    def heartbeat(self, **progress: Any):
        return self.emit("heartbeat", pid=os.getpid(), host=socket.gethostname(), progress=progress or None)

    def scalars(self, values: dict, epoch: int | None = None, step: int | None = None, split: str = "train"):
        return self.emit("scalars", epoch=epoch, step=step, split=split, values=values)

    def log(self, message: str, level: str = "info"):
        return self.emit("log", level=level, message=message)

    def artifact(self, kind: str, path: str | Path, tile: str | None = None, variant: str | None = None,
                 **meta: Any):
        p = Path(path)
        try:
            p = p.resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            pass
        return self.emit("artifact", kind=kind, path=str(p), tile=tile, variant=variant, meta=meta or None)


class NullEvents(EventWriter):
    """An event writer that writes nothing (non-zero DDP ranks, library use without a run)."""

    def __init__(self):  # noqa: D401 - no file
        super().__init__(run_dir=".", enabled=False)

"""Ingest run event files (``workspace/runs/<run_id>/events.jsonl``) into the store.

One code path, safe to call from any process at any time:

* Serialised across processes (and threads) by an exclusive ``fcntl`` lock on ``.locks/ingest.lock``;
  ``wait=False`` returns at once when another process is ingesting.
* Incremental and idempotent: ``ingest_state`` keeps, per run, the byte offset after the last complete line and the
  next expected ``seq``. Only complete lines are consumed (a torn last line waits for the next call), a record whose
  ``seq`` is below the next expected one is skipped, and the rows of a batch are committed in the same transaction
  as the new offsets -- so ingesting a file twice, or crashing half-way, never duplicates or loses an event.
  ``(run_id, seq)`` is each row's identity.
* A file that was replaced or truncated below the stored offset (different inode, smaller size) is re-read from
  the start after the run's rows are removed.
* Files are parsed outside the database lock; the write transactions are batched (``CHUNK_EVENTS`` events) and
  short, so readers wait at most one batch.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import yaml

from mapsage.event_records import RunState
from mapsage.event_records import to_float as _f
from mapsage.event_records import to_int as _i
from mapsage.event_records import to_str as _s
from mapsage.events import EVENTS_FILE, read_events
from mapsage.runids import RunIdError, run_path
from mapsage.workspace import db_path, runs_dir

from .db import LockTimeout, StoreBusy, StoreError, _timeout, file_lock, lock_path, read_connection, write_connection
from .derive import experiment_columns
from .ranked import best_sql, tile_set_sql
from .schema import EVENT_TABLES, RUN_COLUMNS, ensure_schema

CHUNK_EVENTS = 20000

_PA = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64(),
       "BOOLEAN": pa.bool_(), "VARCHAR[]": pa.list_(pa.string()), "BIGINT[]": pa.list_(pa.int64()),
       "BIGINT[][]": pa.list_(pa.list_(pa.int64())), "DOUBLE[]": pa.list_(pa.float64())}
# types whose payload lives in a table of its own; the ledger keeps only their identity
_TABLED = {"status", "scalars", "metrics", "tiles", "ab", "artifact", "health", "log"}

try:  # libyaml's loader is ~10x faster on big resolved configs
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader


@dataclass
class IngestReport:
    runs_seen: int = 0
    runs_changed: int = 0
    events: int = 0
    skipped_records: int = 0
    resets: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    busy: bool = False          # wait=False and another process was ingesting: nothing done

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------------------------
# value coercion


def _j(x: Any) -> str | None:
    if x is None:
        return None
    return json.dumps(x, separators=(",", ":"), default=str)


def _ints(xs: Any) -> list[int] | None:
    if xs is None:
        return None
    try:
        return [int(v) for v in xs]
    except (TypeError, ValueError):
        return None


def _matrix(m: Any) -> list[list[int]] | None:
    if not m:
        return None
    try:
        return [[int(v) for v in row] for row in m]
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# a batch of rows for one write transaction


_FACT_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR"), ("has_status", "BOOLEAN"), ("status", "VARCHAR"), ("status_message", "VARCHAR"),
    ("traceback", "VARCHAR"), ("started_at", "DOUBLE"), ("ended_at", "DOUBLE"), ("last_heartbeat", "DOUBLE"),
    ("updated_at", "DOUBLE"), ("n_new", "BIGINT"), ("pid", "INTEGER"), ("pgid", "INTEGER"), ("host", "VARCHAR"),
    ("gpus", "VARCHAR"), ("progress_json", "VARCHAR"), ("progress_frac", "DOUBLE"), ("progress_epoch", "INTEGER"),
    ("progress_epochs", "INTEGER"), ("progress_phase", "VARCHAR"), ("progress_message", "VARCHAR"),
    ("name", "VARCHAR"), ("kind", "VARCHAR"), ("plan_stage", "INTEGER"), ("title", "VARCHAR"),
    ("config_hash", "VARCHAR"), ("code_commit", "VARCHAR"), ("dataset", "VARCHAR"), ("split", "VARCHAR"),
    ("parent_run", "VARCHAR"), ("parent_relation", "VARCHAR"), ("resume_from", "VARCHAR"),
    ("created_at", "DOUBLE"), ("epochs", "INTEGER"), ("info_patch", "VARCHAR"),
]
# run facts taken as they are from the fold of the batch's records (mapsage.event_records.RunState)
_STATE_FACTS = ["started_at", "ended_at", "last_heartbeat", "pid", "pgid", "host", "name", "kind", "plan_stage",
                "title", "config_hash", "code_commit", "dataset", "split", "parent_run", "parent_relation",
                "resume_from", "created_at", "epochs"]
_STATIC_RUN_COLUMNS = ["run_id", "name", "kind", "plan_stage", "title", "config_json", "config_hash",
                       "code_commit", "dataset", "split", "num_classes", "class_names", "epochs", "arch", "backbone",
                       "pretrain", "loss", "aug", "lr_schedule", "size", "tta", "post", "created_at", "n_events"]


class _Batch:
    def __init__(self):
        self.rows: dict[str, list[tuple]] = {t: [] for t in EVENT_TABLES}
        self.facts: dict[str, dict] = {}
        self.folds: dict[str, RunState] = {}     # per run: the fold of this batch's records
        self.new_runs: list[dict] = []
        self.config_updates: list[dict] = []
        self.states: list[tuple] = []
        self.resets: list[str] = []
        self.n_events = 0
        self.fps_scalars = False

    def __bool__(self):
        return bool(self.states or self.config_updates)

    # -- one run's new records ----------------------------------------------------------------------------------
    def add_records(self, run_id: str, records: list[dict]) -> None:
        f = self.facts.setdefault(run_id, {"run_id": run_id, "n_new": 0})
        state = self.folds.setdefault(run_id, RunState())
        for r in records:
            self._add(run_id, r, f, state)
        f.update(_state_facts(state))

    def _add(self, run_id: str, r: dict, f: dict, state: RunState) -> None:
        seq, ts, typ = int(r["seq"]), _f(r.get("ts")), str(r.get("type"))
        if typ in _TABLED:
            self.rows["events"].append((run_id, seq, ts, typ, None))
        else:
            payload = {k: v for k, v in r.items() if k not in ("seq", "ts", "type")}
            self.rows["events"].append((run_id, seq, ts, typ, _j(payload)))
        self.n_events += 1
        f["n_new"] += 1
        if ts is not None:
            f["updated_at"] = max(ts, f.get("updated_at") or ts)
        state.apply(r)          # status / heartbeat / run_info: the run's facts (see _state_facts)
        handler = _HANDLERS.get(typ)
        if handler is not None:
            handler(self, run_id, seq, ts, r)
        # any other type: kept in the ledger (``events``) only

    # -- rows of the event tables, one handler per record type (_HANDLERS) ---------------------------------------
    def _status(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        self.rows["statuses"].append((run_id, seq, ts, _s(r.get("status")), _s(r.get("message")),
                                      _s(r.get("traceback"))))

    def _scalars(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        epoch, step, split = _i(r.get("epoch")), _i(r.get("step")), _s(r.get("split")) or "train"
        values = r.get("values") or {}
        if isinstance(values, dict):
            for name, value in values.items():
                self.rows["scalars"].append((run_id, seq, ts, epoch, step, split, str(name), _f(value)))
                if name in ("fps", "images_per_s"):
                    self.fps_scalars = True

    def _tiles(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        split, variant = _s(r.get("split")), _s(r.get("variant"))
        for t in r.get("rows") or []:
            if not isinstance(t, dict):
                continue
            self.rows["tiles"].append((run_id, seq, split, variant, _s(t.get("tile")), _s(t.get("domain")),
                                       _ints(t.get("intersect")), _ints(t.get("union")), _ints(t.get("label_area")),
                                       _ints(t.get("pred_area")), _ints(t.get("b_intersect")),
                                       _ints(t.get("b_union"))))
            for cell in t.get("confusion") or []:
                if isinstance(cell, (list, tuple)) and len(cell) == 3:
                    self.rows["tile_confusion"].append((run_id, seq, split, variant, _i(r.get("epoch")),
                                                        _s(t.get("tile")), _s(t.get("domain")), _i(cell[0]),
                                                        _i(cell[1]), _i(cell[2])))

    def _ab(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        s = r.get("summary") if isinstance(r.get("summary"), dict) else {}
        b = r.get("baseline_summary") if isinstance(r.get("baseline_summary"), dict) else {}
        self.rows["ab_rows"].append((run_id, seq, ts, _s(r.get("ab_kind")), _s(r.get("variant")),
                                     _s(r.get("baseline")), _s(r.get("split")), _f(r.get("gain")),
                                     _s(r.get("criterion")), _f(r.get("threshold")), _s(r.get("decision")),
                                     _f(r.get("images_per_s")), _f(r.get("wall_s")), _f(s.get("miou")),
                                     _f(s.get("mbiou")), _f(b.get("miou")), _f(b.get("mbiou")), _j(s or None),
                                     _j(b or None), _j(r.get("details"))))

    def _artifact(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        self.rows["artifacts"].append((run_id, seq, ts, _s(r.get("kind")), _s(r.get("path")), _s(r.get("tile")),
                                       _s(r.get("variant")), _j(r.get("meta"))))

    def _health(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        self.rows["health"].append((run_id, seq, ts, _s(r.get("check")), _s(r.get("status")), _s(r.get("verdict")),
                                    _j(r.get("evidence")), _s(r.get("picture"))))

    def _log(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        self.rows["logs"].append((run_id, seq, ts, _s(r.get("level")) or "info", _s(r.get("message"))))

    def _metrics(self, run_id: str, seq: int, ts: float | None, r: dict) -> None:
        split, domain = _s(r.get("split")) or "val", _s(r.get("domain")) or "all"
        variant, epoch = _s(r.get("variant")) or "raw", _i(r.get("epoch"))
        summary = r.get("summary") if isinstance(r.get("summary"), dict) else {}
        classes = [c for c in (r.get("classes") or []) if isinstance(c, dict)]
        excluded = [str(x) for x in (r.get("excluded_classes") or [])]
        known = {"miou", "macc", "aacc", "mf1", "mbiou", "per_image_miou", "images_per_s"}
        extra = {k: v for k, v in summary.items() if k not in known}
        extra.update({k: v for k, v in r.items() if k not in {
            "seq", "ts", "type", "split", "domain", "variant", "epoch", "summary", "classes", "excluded_classes",
            "confusion", "n_images", "boundary_px", "images_per_s", "identity"}})
        ident = r.get("identity") if isinstance(r.get("identity"), dict) else {}
        key = f"{split}/{domain}/{variant}/" + (f"e{epoch}" if epoch is not None else "final")
        ips = _f(summary.get("images_per_s", r.get("images_per_s")))
        self.rows["evaluations"].append((
            run_id, seq, ts, key, split, domain, variant, epoch, _f(summary.get("miou")), _f(summary.get("macc")),
            _f(summary.get("aacc")), _f(summary.get("mf1")), _f(summary.get("mbiou")),
            _f(summary.get("per_image_miou")), ips, _i(r.get("n_images")), _i(r.get("boundary_px")),
            len(classes) or None, excluded, [_s(c.get("name")) for c in classes] or None,
            [_f(c.get("iou")) for c in classes] or None, [_f(c.get("biou")) for c in classes] or None,
            _j(extra or None), _s(ident.get("dataset")), _i(ident.get("tile_count")), _s(ident.get("tile_hash")),
            _i(ident.get("split_size")), _s(ident.get("checkpoint")), _s(ident.get("ckpt_run")),
            _i(ident.get("ckpt_epoch")), _s(ident.get("ckpt_hash")),
            _s(ident.get("weights")) or (variant if variant in ("raw", "ema") else None),
            _s(ident.get("device") or r.get("device")), _i(ident.get("params"))))
        for i, c in enumerate(classes):
            name = _s(c.get("name"))
            cid = _i(c.get("id"))
            self.rows["class_metrics"].append((
                run_id, seq, split, domain, variant, epoch, i if cid is None else cid, name, _f(c.get("iou")),
                _f(c.get("acc")), _f(c.get("precision")), _f(c.get("f1")), _f(c.get("biou")), name in excluded))
        matrix = _matrix(r.get("confusion"))
        if matrix is not None:
            names = [_s(c.get("name")) for c in classes] or None
            self.rows["confusion"].append((run_id, seq, split, domain, variant, epoch, len(matrix), names, matrix))


_HANDLERS = {"status": _Batch._status, "scalars": _Batch._scalars, "metrics": _Batch._metrics,
             "tiles": _Batch._tiles, "ab": _Batch._ab, "artifact": _Batch._artifact, "health": _Batch._health,
             "log": _Batch._log}   # heartbeat, run_info: facts only (the fold); other types: the ledger only


def _state_facts(state: RunState) -> dict:
    """The run's fact columns from the fold of one batch's records; ``_FACTS_SQL`` merges them into its row (a
    fact the batch did not bring is None, and keeps the row's value)."""
    f = {k: getattr(state, k) for k in _STATE_FACTS}
    f.update(has_status=state.has_status, status=state.status, status_message=state.message,
             traceback=state.traceback, info_patch=_j(state.info) if state.info else None)
    g = state.gpus
    f["gpus"] = None if g is None else ",".join(str(x) for x in g) if isinstance(g, (list, tuple)) else str(g)
    prog = state.progress
    if prog:
        f.update(progress_json=_j(prog), progress_frac=state.progress_frac, progress_epoch=_i(prog.get("epoch")),
                 progress_epochs=_i(prog.get("epochs")), progress_phase=_s(prog.get("phase")),
                 progress_message=_s(prog.get("message")))
    return f


# ---------------------------------------------------------------------------------------------------------------
# reading the folders


def _load_config(run_path: Path) -> dict | None:
    path = run_path / "config.yaml"
    if not path.exists():
        return None
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _static_row(run_id: str, cfg: dict | None, first_ts: float | None) -> dict:
    cols = experiment_columns(cfg)
    meta = (cfg or {}).get("meta") or {}
    row = {c: None for c in _STATIC_RUN_COLUMNS}
    row.update({k: v for k, v in cols.items() if k in row})
    row.update(run_id=run_id, name=meta.get("run_name"), config_json=_j(cfg) if cfg else None,
               config_hash=meta.get("config_hash"), code_commit=meta.get("code_commit"), created_at=first_ts,
               n_events=0)
    return row


def _table(columns: list[tuple[str, str]], rows: list) -> pa.Table:
    names = [c for c, _ in columns]
    if rows and isinstance(rows[0], dict):
        data = {c: [r.get(c) for r in rows] for c in names}
    elif rows:
        data = dict(zip(names, (list(col) for col in zip(*rows))))
    else:
        data = {c: [] for c in names}
    return pa.table({c: pa.array(data[c], type=_PA[t.split()[0]]) for c, t in columns})


def _flush(batch: _Batch) -> None:
    if not batch:
        return
    run_types = dict(RUN_COLUMNS)
    static_cols = [(c, run_types[c]) for c in _STATIC_RUN_COLUMNS]
    touched = sorted({s[0] for s in batch.states} | {u["run_id"] for u in batch.config_updates})
    with write_connection() as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.register("touched_runs", pa.table({"run_id": pa.array(touched, pa.string())}))
            if batch.resets:
                con.register("reset_runs", pa.table({"run_id": pa.array(batch.resets, pa.string())}))
                for t in [*EVENT_TABLES, "runs"]:
                    con.execute(f"DELETE FROM {t} WHERE run_id IN (SELECT run_id FROM reset_runs)")
            if batch.new_runs:
                con.register("new_runs", _table(static_cols, batch.new_runs))
                cols = ", ".join(f'"{c}"' for c in _STATIC_RUN_COLUMNS)
                con.execute(f"INSERT INTO runs ({cols}) SELECT {cols} FROM new_runs")
            if batch.config_updates:
                con.register("cfg_updates", _table(static_cols, batch.config_updates))
                sets = ", ".join(f'"{c}" = coalesce(u."{c}", runs."{c}")' for c in _STATIC_RUN_COLUMNS
                                 if c not in ("run_id", "created_at", "n_events"))
                con.execute(f"UPDATE runs SET {sets} FROM cfg_updates u WHERE runs.run_id = u.run_id")
            for t, cols in EVENT_TABLES.items():
                rows = batch.rows[t]
                if rows:
                    con.register(f"new_{t}", _table(cols, rows))
                    names = ", ".join(f'"{c}"' for c, _ in cols)
                    con.execute(f"INSERT INTO {t} ({names}) SELECT {names} FROM new_{t}")
            if batch.facts:
                con.register("facts", _table(_FACT_COLUMNS, list(batch.facts.values())))
                con.execute(_FACTS_SQL)
            # aggregates only where the batch brought something they depend on
            if batch.rows["evaluations"] or batch.rows["ab_rows"] or batch.resets or batch.config_updates:
                con.execute(_AGGREGATE_SQL[0])
                con.execute(_AGGREGATE_SQL[1])
            if batch.rows["ab_rows"] or batch.fps_scalars or batch.rows["evaluations"]:
                for stmt in _AGGREGATE_SQL[2:]:
                    con.execute(stmt)
            con.register("states", _table(
                [("run_id", "VARCHAR"), ("path", "VARCHAR"), ("byte_offset", "BIGINT"), ("next_seq", "BIGINT"),
                 ("inode", "BIGINT"), ("file_size", "BIGINT"), ("n_events", "BIGINT"), ("updated_at", "DOUBLE")],
                batch.states))
            con.execute("INSERT OR REPLACE INTO ingest_state SELECT * FROM states")
            con.execute("COMMIT")
        except Exception as exc:
            try:
                con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a failed COMMIT already ended the transaction
                pass
            raise _ingest_failure(exc, batch) from exc


def _ingest_failure(exc: Exception, batch) -> Exception:
    """Say what failed: which store file could not be written (a full disk named with its free space), for which
    runs; nothing of the batch was stored, the next ingest retries it."""
    from mapsage.diskspace import free_mb, is_disk_full


    runs = sorted({s[0] for s in batch.states})
    what = (f"{len(runs)} run(s) ({', '.join(runs[:3])}{'...' if len(runs) > 3 else ''})" if runs else "no run")
    path = db_path()
    if is_disk_full(exc):
        return StoreError(f"ingest failed: disk full in {path.parent}: {free_mb(path.parent):.1f} MB free; could not "
                          f"write {path.name} for {what}. Nothing of them was stored; free space, then run "
                          f"`mapsage runs ingest` again (the event files keep every record)")
    return StoreError(f"ingest failed for {what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}. "
                      f"Nothing of them was stored; the next ingest retries")


_COALESCED = ["pid", "pgid", "host", "gpus", "name", "kind", "plan_stage", "title", "config_hash", "code_commit",
              "dataset", "split", "parent_run", "parent_relation", "resume_from", "epochs"]
_FACTS_SQL = f"""
UPDATE runs SET
  status = CASE WHEN f.has_status THEN f.status ELSE runs.status END,
  status_message = CASE WHEN f.has_status THEN f.status_message ELSE runs.status_message END,
  traceback = CASE WHEN f.has_status THEN f.traceback ELSE runs.traceback END,
  ended_at = CASE WHEN f.has_status THEN f.ended_at ELSE runs.ended_at END,
  started_at = coalesce(runs.started_at, f.started_at),
  created_at = coalesce(f.created_at, runs.created_at, f.updated_at),
  last_heartbeat = coalesce(f.last_heartbeat, runs.last_heartbeat),
  updated_at = greatest(coalesce(f.updated_at, 0), coalesce(runs.updated_at, 0)),
  n_events = coalesce(runs.n_events, 0) + f.n_new,
  progress_json = coalesce(f.progress_json, runs.progress_json),
  progress_frac = CASE WHEN f.has_status AND f.status = 'succeeded' THEN 1.0
                       WHEN f.progress_json IS NULL THEN runs.progress_frac ELSE f.progress_frac END,
  progress_epoch = CASE WHEN f.progress_json IS NULL THEN runs.progress_epoch ELSE f.progress_epoch END,
  progress_epochs = CASE WHEN f.progress_json IS NULL THEN runs.progress_epochs ELSE f.progress_epochs END,
  progress_phase = CASE WHEN f.progress_json IS NULL THEN runs.progress_phase ELSE f.progress_phase END,
  progress_message = CASE WHEN f.progress_json IS NULL THEN runs.progress_message ELSE f.progress_message END,
  info_json = CASE WHEN f.info_patch IS NULL THEN runs.info_json
                   ELSE json_merge_patch(coalesce(runs.info_json, '{{}}'), f.info_patch) END,
  {", ".join(f'"{c}" = coalesce(f."{c}", runs."{c}")' for c in _COALESCED)}
FROM facts f WHERE runs.run_id = f.run_id
"""

_AGGREGATE_SQL = [
    # best / last figures on the run's own split, all domains pooled, from ONE evaluation: the run's headline by
    # the ranking rule (store.ranking: adopted variants, never a parent's re-score; subsets marked)
    tile_set_sql("touched_runs"),
    best_sql("touched_runs"),
    # throughput: an A/B row (a kept variant first), then an 'fps' / 'images_per_s' scalar, then an evaluation's
    # own figure -- later statements win
    """UPDATE runs SET fps = a.v FROM (
         SELECT run_id, arg_max(images_per_s, (CASE WHEN decision = 'keep' THEN 1 ELSE 0 END) * 1e15 + seq) AS v
         FROM ab_rows WHERE images_per_s IS NOT NULL AND run_id IN (SELECT run_id FROM touched_runs)
         GROUP BY run_id) a WHERE runs.run_id = a.run_id""",
    """UPDATE runs SET fps = a.v FROM (
         SELECT run_id, arg_max(value, seq) AS v FROM scalars
         WHERE name IN ('fps', 'images_per_s') AND value IS NOT NULL
           AND run_id IN (SELECT run_id FROM touched_runs)
         GROUP BY run_id) a WHERE runs.run_id = a.run_id""",
    """UPDATE runs SET fps = a.v FROM (
         SELECT run_id, arg_max(images_per_s, seq) AS v FROM evaluations
         WHERE images_per_s IS NOT NULL AND run_id IN (SELECT run_id FROM touched_runs)
         GROUP BY run_id) a WHERE runs.run_id = a.run_id""",
]


def _read_state(run_ids: Iterable[str] | None) -> tuple[dict, dict]:
    """(ingest_state per run, {run_id: has_config} for runs with a row)."""
    with read_connection() as con:
        state = {r[0]: r[1:] for r in con.execute(
            "SELECT run_id, byte_offset, next_seq, inode, file_size, n_events FROM ingest_state").fetchall()}
        runs = {r[0]: bool(r[1]) for r in con.execute(
            "SELECT run_id, config_json IS NOT NULL FROM runs").fetchall()}
    if run_ids is not None:
        wanted = set(run_ids)
        state = {k: v for k, v in state.items() if k in wanted}
        runs = {k: v for k, v in runs.items() if k in wanted}
    return state, runs


def _ingest_locked(run_ids: list[str] | None, report: IngestReport) -> None:
    root = runs_dir()
    if run_ids is None:
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    else:
        names = list(run_ids)
    folders = []
    for name in names:   # a run id names one folder inside runs/: no '..', no symlink out of the workspace
        try:
            folder = run_path(root, name)
        except RunIdError:
            continue
        if folder.is_dir():
            folders.append(folder)
    state, known_runs = _read_state(None if run_ids is None else [f.name for f in folders])
    batch = _Batch()
    for folder in folders:
        run_id = folder.name
        path = folder / EVENTS_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        report.runs_seen += 1
        old = state.get(run_id)
        reset = False
        offset, next_seq, n_before = 0, 0, 0
        if old is not None:
            offset, next_seq, inode, _size, n_before = old
            if inode != st.st_ino or st.st_size < offset:
                reset, offset, next_seq, n_before = True, 0, 0, 0
        missing_config = run_id in known_runs and not known_runs[run_id] and (folder / "config.yaml").exists()
        if not reset and old is not None and st.st_size == offset and not missing_config:
            continue
        try:
            records, new_offset = read_events(path, offset)
        except OSError as exc:
            report.errors[run_id] = f"{path}: {exc}"
            continue
        fresh = []
        for r in records:
            seq = r.get("seq") if isinstance(r, dict) else None
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < next_seq:
                report.skipped_records += 1
                continue
            fresh.append(r)
            next_seq = seq + 1
        if reset:
            batch.resets.append(run_id)
            report.resets.append(run_id)
        if reset or run_id not in known_runs:
            first_ts = _f(fresh[0].get("ts")) if fresh else None
            batch.new_runs.append(_static_row(run_id, _load_config(folder), first_ts))
        elif missing_config:
            batch.config_updates.append(_static_row(run_id, _load_config(folder), None))
        if fresh:
            batch.add_records(run_id, fresh)
        batch.states.append((run_id, str(path), new_offset, next_seq, st.st_ino, new_offset,
                             n_before + len(fresh), time.time()))
        report.runs_changed += 1
        report.events += len(fresh)
        if batch.n_events >= CHUNK_EVENTS:
            _flush(batch)
            batch = _Batch()
    _flush(batch)


def ingest_all(wait: bool = True, timeout: float | None = None,
               run_ids: list[str] | None = None) -> IngestReport:
    """Load new events of every run folder (or of ``run_ids``) into the store.

    ``wait=False`` returns at once (``report.busy``) when another process is ingesting; otherwise waits up to
    ``timeout`` seconds for it (``StoreBusy`` after that)."""
    ensure_schema()
    report = IngestReport()
    start = time.perf_counter()
    timeout = (_timeout("write") if timeout is None else timeout) if wait else 0.0
    try:
        with file_lock(lock_path("ingest"), exclusive=True, timeout=timeout):
            _ingest_locked(run_ids, report)
    except LockTimeout as exc:
        if not wait:
            report.busy = True
            return report
        raise StoreBusy(f"{lock_path('ingest')}: another process kept ingesting for {timeout:.0f} s") from exc
    report.seconds = time.perf_counter() - start
    return report


def ingest_run(run_id: str, wait: bool = True, timeout: float | None = None) -> IngestReport:
    """Ingest one run folder's new events."""
    return ingest_all(wait=wait, timeout=timeout, run_ids=[run_id])


def rebuild(timeout: float | None = None) -> IngestReport:
    """Forget every ingested event and offset (verdicts are kept), then ingest all run folders again."""
    ensure_schema()
    timeout = _timeout("write") if timeout is None else timeout
    with file_lock(lock_path("ingest"), exclusive=True, timeout=timeout):
        with write_connection() as con:
            con.execute("BEGIN TRANSACTION")
            for t in [*EVENT_TABLES, "runs", "ingest_state"]:
                con.execute(f"DELETE FROM {t}")
            con.execute("COMMIT")
        report = IngestReport()
        start = time.perf_counter()
        _ingest_locked(None, report)
        report.seconds = time.perf_counter() - start
    return report

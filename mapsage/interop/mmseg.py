"""Readers of mmsegmentation training logs and TensorBoard event folders -> :class:`ForeignRun`.

mmsegmentation 1.x (mmengine) work directory::

    work_dirs/<config name>/
        <config name>.py                      the dumped config
        <YYYYMMDD_HHMMSS>/                    one folder per launch
            <YYYYMMDD_HHMMSS>.log             the text log (per-class tables after each validation)
            vis_data/
                scalars.json                  one JSON object per line (LocalVisBackend)
                <YYYYMMDD_HHMMSS>.json        the same lines
                config.py                     the config
                events.out.tfevents.*         when TensorboardVisBackend is on
        iter_*.pth / epoch_*.pth, last_checkpoint

A ``scalars.json`` training line holds ``lr``, ``data_time``, ``loss``, ``decode.loss_ce``, ``decode.acc_seg``
(percent), ``time``, ``iter``, ``memory``, ``step`` (and ``epoch`` when training by epoch); a validation line holds
``aAcc``, ``mIoU``, ``mAcc`` (percent), ``data_time``, ``time`` and ``step`` -- the iteration
(``log_metric_by_epoch=False``, mmseg's iteration schedules) or the epoch. With iteration schedules a validation is
placed after the training lines before it in the file.

mmsegmentation 0.x (mmcv) ``<YYYYMMDD_HHMMSS>.log.json``: a first line with ``env_info`` / ``config`` (the config as
text), then ``{"mode": "train", "epoch", "iter", "lr", "memory", "data_time", "decode.loss_ce",
"decode.acc_seg", "loss", "time"}`` and ``{"mode": "val", "epoch", "iter", "lr", "aAcc", "mIoU", "mAcc",
"IoU.<class>", "Acc.<class>"}`` lines, validation figures as fractions.

Configs are Python files: they are read with :func:`safe_config` (the syntax tree's literal values), never run.
"""
from __future__ import annotations

import ast
import bisect
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..errors import DataError, UserError
from .names import MMSEG_TO_CLASS, MMSEG_TO_SUMMARY, STRUCTURE_KEYS, is_metric_key, scalar_from_mmseg
from .tensorboard_io import event_folders, read_scalars

TIMESTAMP = re.compile(r"(\d{8}_\d{6})")


@dataclass
class ForeignRun:
    """One training run read from another tool, in the workbench's names and units (fractions).

    ``train``: (global step, period, {name: value}) in step order; ``evals``: dicts with ``step``, ``period``
    (None: a final / stand-alone evaluation), ``summary`` {miou, macc, aacc, ...} and ``classes`` [{name, iou,
    acc}] (may be empty). A period is an epoch, or for iteration schedules the iterations between two
    validations."""
    source: str                                  # mmseg-1.x | mmseg-0.x | tensorboard
    path: Path
    name: str
    timestamp: Optional[str] = None
    config: dict = field(default_factory=dict)
    config_text: Optional[str] = None
    config_file: Optional[Path] = None
    train: list[tuple[int, int, dict]] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    class_names: Optional[list[str]] = None
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    by_epoch: bool = False
    notes: list[str] = field(default_factory=list)
    extra_files: list[Path] = field(default_factory=list)

    @property
    def periods(self) -> int:
        ps = [p for _, p, _ in self.train] + [e["period"] for e in self.evals if e.get("period") is not None]
        return (max(ps) + 1) if ps else 0


# ---------------------------------------------------------------------------------------------------------------
# configs as data


class _Unsafe(Exception):
    pass


def _literal(node: ast.AST, env: dict) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e, env) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {str(_literal(k, env)) if k is not None else "**": _literal(v, env)
                for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg or "**": _literal(kw.value, env) for kw in node.keywords}
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _Unsafe(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand, env)
        if isinstance(v, (int, float)):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)):
        a, b = _literal(node.left, env), _literal(node.right, env)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if b != 0:
                return a / b if isinstance(node.op, ast.Div) else a // b
    raise _Unsafe(type(node).__name__)


def _value(node: ast.AST, env: dict) -> Any:
    try:
        return _literal(node, env)
    except (_Unsafe, RecursionError):
        return f"<{ast.unparse(node)[:200]}>"      # kept as text: never evaluated


def safe_config(text: str, where: str = "config") -> dict:
    """The top-level assignments of an mmseg/mmengine Python config as plain data, read from its syntax tree (no
    code runs: calls other than ``dict(...)``, imports and names not assigned before are kept as ``<text>``)."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise DataError(f"{where}: not a readable Python config ({exc.msg}, line {exc.lineno})") from exc
    env: dict[str, Any] = {}
    for stmt in tree.body:
        targets = []
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        for t in targets:
            if isinstance(t, ast.Name):
                env[t.id] = _value(value, env)
    return env


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, str) and v.strip().lower() == "nan":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _stamp_time(text: Optional[str]) -> Optional[float]:
    m = TIMESTAMP.search(text or "")
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _json_lines(path: Path) -> list[dict]:
    out = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(text.splitlines()):
                continue                      # a torn last line of a run still writing
            raise DataError(f"{path}, line {i}: not a JSON object; is this an mmsegmentation log?") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out


def split_values(rec: dict, percent: bool) -> tuple[dict, dict, dict]:
    """(training scalars in workbench names, summary fractions, per-class {class: {iou, acc}}) of one record."""
    train, summary, classes = {}, {}, {}
    scale = 0.01 if percent else 1.0
    for k, v in rec.items():
        if k in STRUCTURE_KEYS:
            continue
        x = _num(v)
        if is_metric_key(k):
            if k in MMSEG_TO_SUMMARY:
                summary[MMSEG_TO_SUMMARY[k]] = None if x is None else x * scale
            elif "." in k:
                head, cname = k.split(".", 1)
                if head in MMSEG_TO_CLASS:
                    classes.setdefault(cname, {})[MMSEG_TO_CLASS[head]] = None if x is None else x * scale
            continue
        if x is None:
            continue
        name, factor = scalar_from_mmseg(k)
        train[name] = x * factor
    return train, summary, classes


def _class_rows(classes: dict, names: Optional[list[str]]) -> list[dict]:
    order = names or list(classes)
    rows = []
    for i, n in enumerate(order):
        if n in classes:
            rows.append({"id": i, "name": n, **classes[n]})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# mmseg 1.x


def _per_class_tables(log: Path) -> list[dict[str, dict]]:
    """The 'per class results' tables of an mmengine text log, in order: [{class: {iou, acc, ...} fractions}]."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    tables, i = [], 0
    while i < len(lines):
        if lines[i].rstrip().endswith("per class results:"):
            j = i + 1
            rows: list[list[str]] = []
            while j < len(lines) and not lines[j].lstrip().startswith("+"):
                j += 1
            while j < len(lines) and lines[j].lstrip()[:1] in ("+", "|"):
                if lines[j].lstrip().startswith("|"):
                    rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
                j += 1
            if len(rows) >= 2 and rows[0] and rows[0][0] == "Class":
                header = rows[0]
                table = {}
                for r in rows[1:]:
                    if len(r) != len(header):
                        continue
                    vals = {}
                    for h, cell in zip(header[1:], r[1:]):
                        key = MMSEG_TO_CLASS.get(h)
                        if key:
                            x = _num(cell)
                            vals[key] = None if x is None else x / 100.0
                    table[r[0]] = vals
                tables.append(table)
            i = j
        else:
            i += 1
    return tables


def read_mmseg1(scalars_json: Path) -> ForeignRun:
    """One mmseg 1.x launch from its ``vis_data/scalars.json`` (with the config and text log around it)."""
    vis = scalars_json.parent
    launch = vis.parent
    work = launch.parent
    stamp = launch.name if TIMESTAMP.fullmatch(launch.name) else None
    cfg_file = vis / "config.py" if (vis / "config.py").exists() else None
    if cfg_file is None:
        cands = sorted(work.glob("*.py"))
        cfg_file = cands[0] if cands else None
    name = cfg_file.stem if (cfg_file is not None and cfg_file.name != "config.py") else work.name
    run = ForeignRun(source="mmseg-1.x", path=launch, name=name, timestamp=stamp, started_at=_stamp_time(stamp))
    if cfg_file is not None:
        run.config_file = cfg_file
        run.config_text = cfg_file.read_text(encoding="utf-8", errors="replace")
        run.config = safe_config(run.config_text, str(cfg_file))
    records = _json_lines(scalars_json)
    if not records:
        raise DataError(f"{scalars_json}: no records; is training still starting?")
    train_recs = [r for r in records if not any(is_metric_key(k) for k in r)]
    val_recs = [r for r in records if any(is_metric_key(k) for k in r)]
    run.by_epoch = any("epoch" in r for r in train_recs)
    names = _class_names(run.config)
    # where each validation happened, in global steps
    if run.by_epoch:
        ends: dict[int, int] = {}
        for r in train_recs:
            e, s = _num(r.get("epoch")), _num(r.get("step", r.get("iter")))
            if e is not None and s is not None:
                ends[int(e)] = max(ends.get(int(e), 0), int(s))
        val_at = [(ends.get(int(_num(r.get("step")) or 0), 0), int(_num(r.get("step")) or 0) - 1) for r in val_recs]
    else:
        # file order: a validation follows the training iterations it evaluated (its own ``step`` is the iteration
        # only with log_metric_by_epoch=False; an iteration loop's epoch, 0, otherwise)
        val_at, last, n = [], 0, 0
        for r in records:
            if any(is_metric_key(k) for k in r):
                val_at.append((last, n if train_recs else -1))
                n += 1
            else:
                s = _num(r.get("step", r.get("iter")))
                last = int(s) if s is not None else last
    val_steps = sorted({s for s, p in val_at if p >= 0})
    for r in train_recs:
        s = _num(r.get("step", r.get("iter")))
        if s is None:
            continue
        vals, _, _ = split_values(r, percent=True)
        if not vals:
            continue
        if run.by_epoch and _num(r.get("epoch")) is not None:
            period = int(_num(r["epoch"])) - 1
        else:
            period = bisect.bisect_left(val_steps, int(s))
        run.train.append((int(s), period, vals))
    tables = _per_class_tables(launch / f"{launch.name}.log") if stamp else []
    if not tables:
        logs = sorted(launch.glob("*.log"))
        tables = _per_class_tables(logs[-1]) if logs else []
    if tables and len(tables) != len(val_recs):
        run.notes.append(f"{len(tables)} per-class tables in the text log for {len(val_recs)} validations: "
                         f"per-class IoU not imported")
        tables = []
    for i, (r, (s, p)) in enumerate(zip(val_recs, val_at)):
        _, summary, classes = split_values(r, percent=True)
        if tables:
            classes = tables[i]
        if names is None and classes:
            names = list(classes)
        run.evals.append({"step": s, "period": p if p >= 0 else None, "summary": summary,
                          "classes": _class_rows(classes, names)})
    run.class_names = names
    run.extra_files = [f for f in [cfg_file, launch / f"{launch.name}.log"] if f is not None and f.exists()]
    # the last record's time: the file's modification time, when it is plausibly the source's (after the launch)
    mtime = scalars_json.stat().st_mtime
    if run.started_at is not None and run.started_at <= mtime <= run.started_at + 90 * 86400:
        run.ended_at = mtime
    return run


# ---------------------------------------------------------------------------------------------------------------
# mmseg 0.x


def read_mmseg0(log_json: Path) -> ForeignRun:
    """One mmseg 0.x run from its ``*.log.json``."""
    records = _json_lines(log_json)
    stamp = TIMESTAMP.search(log_json.name)
    run = ForeignRun(source="mmseg-0.x", path=log_json, name=log_json.parent.name,
                     timestamp=stamp.group(1) if stamp else None,
                     started_at=_stamp_time(log_json.name))
    head = records[0] if records and "mode" not in records[0] else None
    if head is not None:
        if isinstance(head.get("config"), str):
            run.config_text = head["config"]
            run.config = safe_config(head["config"], f"{log_json} (config)")
        if head.get("exp_name"):
            run.name = Path(str(head["exp_name"])).stem
    cfgs = sorted(log_json.parent.glob("*.py"))
    if not run.config and cfgs:
        run.config_file = cfgs[0]
        run.config_text = cfgs[0].read_text(encoding="utf-8", errors="replace")
        run.config = safe_config(run.config_text, str(cfgs[0]))
        run.name = cfgs[0].stem
    train_recs = [r for r in records if r.get("mode") == "train"]
    run.by_epoch = len({r.get("epoch") for r in train_recs}) > 1
    names = _class_names(run.config)
    offset, max_inner, cur_epoch, last_step, period = 0, 0, None, 0, 0
    for r in records:
        mode = r.get("mode")
        if mode == "train":
            it = int(_num(r.get("iter")) or 0)
            if run.by_epoch:
                e = int(_num(r.get("epoch")) or 1)
                if cur_epoch is not None and e != cur_epoch:
                    offset += max_inner
                    max_inner = 0
                cur_epoch = e
                max_inner = max(max_inner, it)
                step, period = offset + it, e - 1
            else:
                step = it
            vals, _, _ = split_values(r, percent=False)
            if vals:
                run.train.append((step, period, vals))
            last_step = step
        elif mode == "val":
            _, summary, classes = split_values(r, percent=False)
            if not summary:
                continue
            if names is None and classes:
                names = list(classes)
            p = (int(_num(r.get("epoch")) or 1) - 1) if run.by_epoch else len(run.evals)
            run.evals.append({"step": last_step, "period": p, "summary": summary,
                              "classes": _class_rows(classes, names)})
            if not run.by_epoch:
                period = len(run.evals)
    run.class_names = names
    run.extra_files = [log_json] + ([run.config_file] if run.config_file else [])
    return run


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard


def read_tensorboard(folder: Path) -> ForeignRun:
    """One TensorBoard event folder (mmseg's ``vis_data``, a workbench export, any scalar logs)."""

    series = read_scalars(folder)
    if not series:
        raise DataError(f"{folder}: the event files hold no scalars")
    run = ForeignRun(source="tensorboard", path=folder, name=folder.name if folder.name != "vis_data"
                     else folder.parent.name)
    walls = [w for rows in series.values() for _, _, w in rows]
    run.started_at, run.ended_at = (min(walls), max(walls)) if walls else (None, None)
    train: dict[int, dict] = {}
    evals: dict[tuple[str, int], dict] = {}
    for tag, rows in series.items():
        parts = tag.split("/")
        key = parts[-1]
        prefix = [p for p in parts[:-1] if p not in ("train", "val", "test")]
        if key in STRUCTURE_KEYS:
            continue
        if is_metric_key(key):
            domain = next((p[len("domain-"):] for p in prefix if p.startswith("domain-")), "all")
            variant = "/".join(p for p in prefix if not p.startswith("domain-")) or "raw"
            for step, value, _ in rows:
                ev = evals.setdefault((variant, domain, step), {"variant": variant, "domain": domain,
                                                                "step": step, "raw": {}})
                ev["raw"][key] = value
        elif not prefix or prefix == ["epoch"]:
            name, factor = scalar_from_mmseg(key)
            if prefix == ["epoch"]:
                name = f"epoch/{name}"
            for step, value, _ in rows:
                train.setdefault(step, {})[name] = value * factor
    raw_vals = [v for ev in evals.values() for k, v in ev["raw"].items() if k in MMSEG_TO_SUMMARY]
    percent = any(v > 1.0 for v in raw_vals)
    val_steps = sorted({s for (v, _, s) in evals if not v.startswith("final")})
    for (variant, domain, step), ev in sorted(evals.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        _, summary, classes = split_values(ev["raw"], percent=percent)
        is_final = variant.startswith("final")
        v = variant[len("final"):].lstrip("/") if is_final else variant
        period = None if is_final else (val_steps.index(step) if step in val_steps
                                        else bisect.bisect_left(val_steps, step))
        run.evals.append({"step": step, "period": period, "variant": v or "raw", "domain": domain,
                          "summary": summary, "classes": _class_rows(classes, None)})
    for step in sorted(train):
        run.train.append((step, bisect.bisect_left(val_steps, step), train[step]))
    names = None
    for ev in run.evals:
        if ev["classes"]:
            names = [c["name"] for c in ev["classes"]]
            break
    run.class_names = names
    return run


# ---------------------------------------------------------------------------------------------------------------
# what a path holds


def _class_names(cfg: dict) -> Optional[list[str]]:
    for path in (("metainfo", "classes"), ("train_dataloader", "dataset", "metainfo", "classes"),
                 ("val_dataloader", "dataset", "metainfo", "classes"), ("data", "train", "classes")):
        v = _get(cfg, *path)
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            return list(v)
    return None


def find_runs(path: str | Path) -> list[ForeignRun]:
    """Every run under ``path``: mmseg 1.x launches (``vis_data/scalars.json``), mmseg 0.x ``*.log.json`` files,
    and TensorBoard event folders that are not an mmseg 1.x launch's ``vis_data`` (its scalars.json is read
    instead)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; give an mmsegmentation work directory, a *.log.json "
                        f"file or a TensorBoard log folder")

    runs: list[ForeignRun] = []
    if path.is_file():
        if path.name == "scalars.json":
            return [read_mmseg1(path)]
        if path.name.endswith(".log.json"):
            return [read_mmseg0(path)]
        if "tfevents" in path.name:
            return [read_tensorboard(path.parent)]
        raise UserError(f"{path}: not a scalars.json, *.log.json or TensorBoard event file")
    seen_vis = set()
    for sj in sorted(path.rglob("vis_data/scalars.json")):
        runs.append(read_mmseg1(sj))
        seen_vis.add(sj.parent.resolve())
    for lj in sorted(path.rglob("*.log.json")):
        runs.append(read_mmseg0(lj))
    for folder in event_folders(path):
        if folder.resolve() not in seen_vis:
            runs.append(read_tensorboard(folder))
    if not runs:
        raise UserError(f"{path}: found no vis_data/scalars.json (mmseg 1.x), *.log.json (mmseg 0.x) or TensorBoard "
                        f"event files under it")
    return runs

"""TensorBoard event files through the tensorboard package's own writer and reader (no TensorFlow needed).

:func:`write_points` writes scalar summaries (``simple_value``, as mmengine's ``TensorboardVisBackend`` and torch's
``SummaryWriter.add_scalar`` do) with tensorboard's ``EventFileWriter``; :func:`read_scalars` reads any event
folder with tensorboard's ``EventAccumulator``: ``simple_value`` scalars and the scalar tensors TF2-style writers
produce. TensorBoard stores scalars as 32-bit floats: a value read back equals the written one to float32
precision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import UserError
from .bundle import Point

EVENT_GLOB = "*tfevents*"


def _require():
    try:
        from tensorboard.compat.proto.event_pb2 import Event  # noqa: F401
    except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
        raise UserError("TensorBoard export/import needs the tensorboard package: pip install tensorboard") from exc


def write_points(logdir: str | Path, points: Iterable[Point], filename_suffix: str = ".mapsage") -> Path:
    """Write ``points`` as scalar summaries into a new event file under ``logdir``; returns the file."""
    _require()
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    before = set(logdir.glob(EVENT_GLOB))
    writer = EventFileWriter(str(logdir), filename_suffix=filename_suffix)
    try:
        for p in sorted(points, key=lambda p: (p.step, p.tag)):
            writer.add_event(Event(wall_time=float(p.wall_time), step=int(p.step),
                                   summary=Summary(value=[Summary.Value(tag=p.tag, simple_value=float(p.value))])))
    finally:
        writer.close()
    new = sorted(set(logdir.glob(EVENT_GLOB)) - before)
    return new[-1] if new else logdir


def event_folders(path: str | Path) -> list[Path]:
    """Folders under ``path`` (itself included) that hold TensorBoard event files."""
    path = Path(path)
    if path.is_file():
        return [path.parent] if "tfevents" in path.name else []
    return sorted({f.parent for f in path.rglob(EVENT_GLOB) if f.is_file()})


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar series of one event folder: tag -> [(step, value, wall_time)] in file order."""
    _require()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of TensorBoard event files")
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    try:
        acc.Reload()
    except Exception as exc:  # noqa: BLE001 - a corrupt file from somewhere else
        raise UserError(f"{folder}: TensorBoard could not read these event files ({exc}); point import-runs at an "
                        f"intact run folder") from exc
    tags = acc.Tags()
    out: dict[str, list[tuple[int, float, float]]] = {}
    for tag in tags.get("scalars", []):
        out[tag] = [(int(e.step), float(e.value), float(e.wall_time)) for e in acc.Scalars(tag)]
    for tag in tags.get("tensors", []):
        rows = []
        for e in acc.Tensors(tag):
            try:
                arr = tensor_util.make_ndarray(e.tensor_proto)
            except Exception:  # noqa: BLE001 - not a numeric tensor (text, images)
                rows = []
                break
            if arr.size != 1 or arr.dtype.kind not in "fiu":
                rows = []
                break
            rows.append((int(e.step), float(arr.reshape(-1)[0]), float(e.wall_time)))
        if rows:
            out.setdefault(tag, rows)
    return out

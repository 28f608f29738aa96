"""Run lineage read from the workspace's event files: the succeeded child runs of a run (its A/B, reliability and
refinement stages name it as ``parent_run``) and what they left for it, such as a fitted temperature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .events import read_events
from .workspace import runs_dir


def child_runs(run_id: str) -> list[tuple[str, Path, dict]]:
    """(run id, folder, run_info) of succeeded runs whose parent is ``run_id``, oldest first."""
    out = []
    root = runs_dir()
    if not root.exists():
        return out
    for folder in root.iterdir():
        ev = folder / "events.jsonl"
        if not folder.is_dir() or not ev.exists():
            continue
        records, _ = read_events(ev)
        info: dict = {}
        status = None
        for r in records:
            if r.get("type") == "run_info":
                info.update({k: v for k, v in r.items() if v is not None})
            elif r.get("type") == "status":
                status = r.get("status")
        if info.get("parent_run") == run_id and status == "succeeded":
            out.append((folder.name, folder, {"records": records, **info}))
    out.sort(key=lambda t: float(t[2].get("created_at") or 0.0))
    return out


def stored_temperature(run_id: str) -> Optional[float]:
    """The temperature fitted by ``run_id``'s newest succeeded reliability run (its ``calibration.json``), or None."""
    found = None
    for _rid, folder, info in child_runs(run_id):
        if (info.get("kind") or info.get("stage_kind")) == "reliability" and (folder / "calibration.json").is_file():
            t = json.loads((folder / "calibration.json").read_text()).get("temperature")
            found = float(t) if t else found
    return found

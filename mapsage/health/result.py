"""What one health check returns, and how a set of results is shown as a table.

This module imports nothing heavy (no torch): the command line and the app read health rows through it."""
from __future__ import annotations

import shutil
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO

from ..errors import UserError
from ..events import EVENTS_FILE, read_events

STATUSES = ("pass", "warn", "fail")


class HealthChecksFailed(UserError):
    """At least one health check failed; the job ends as failed (a warning passes)."""


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` pass | warn | fail, a one-line ``verdict``, the ``evidence`` behind it
    (numbers, sample ids, ...), and the path of a picture (relative to the run folder) where one tells more."""

    check: str
    status: str
    verdict: str
    evidence: dict[str, Any] = field(default_factory=dict)
    picture: Optional[str] = None
    seconds: Optional[float] = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"health check {self.check!r}: status must be one of {STATUSES}, got {self.status!r}")
        self.verdict = " ".join(str(self.verdict).split())   # one line

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def to_event(self) -> dict[str, Any]:
        """The payload of a ``health`` event (see :mod:`mapsage.events`)."""
        evidence = dict(self.evidence)
        if self.seconds is not None:
            evidence.setdefault("seconds", round(self.seconds, 3))
        return {"check": self.check, "status": self.status, "verdict": self.verdict, "evidence": evidence,
                "picture": self.picture}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst_status(statuses: Iterable[str]) -> str:
    order = {"pass": 0, "warn": 1, "fail": 2}
    worst = "pass"
    for s in statuses:
        if order.get(s, 2) > order[worst]:
            worst = s
    return worst


def _rows(results: Iterable[CheckResult | dict]) -> list[tuple[str, str, str]]:
    rows = []
    for r in results:
        if isinstance(r, CheckResult):
            rows.append((r.check, r.status, r.verdict))
        else:
            rows.append((str(r.get("check", "?")), str(r.get("status", "?")), str(r.get("verdict", ""))))
    return rows


def format_table(results: Iterable[CheckResult | dict], width: Optional[int] = None, title: str | None = None) -> str:
    """A plain-text table of check, status and verdict (verdicts wrapped to ``width`` columns), with a last line
    that says whether the health stage passes. ``results`` may be CheckResults or ``health`` event records."""
    rows = _rows(results)
    if width is None:
        width = max(100, min(160, shutil.get_terminal_size((120, 20)).columns))
    cw = max([len("check")] + [len(r[0]) for r in rows])
    sw = len("status")
    vw = max(30, width - cw - sw - 4)
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'check'.ljust(cw)}  {'status'.ljust(sw)}  verdict")
    lines.append(f"{'-' * cw}  {'-' * sw}  {'-' * min(vw, 60)}")
    for check, status, verdict in rows:
        wrapped = textwrap.wrap(verdict, vw) or [""]
        lines.append(f"{check.ljust(cw)}  {status.upper().ljust(sw)}  {wrapped[0]}")
        for more in wrapped[1:]:
            lines.append(f"{''.ljust(cw)}  {''.ljust(sw)}  {more}")
    counts = {s: sum(1 for r in rows if r[1] == s) for s in STATUSES}
    overall = "FAILED" if counts["fail"] else "PASSED"
    lines.append(f"health {overall}: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    return "\n".join(lines)


def health_records(run_dir: str | Path) -> list[dict]:
    """The ``health`` records of a run's event file (the latest per check, in the order they were written)."""

    records, _ = read_events(Path(run_dir) / EVENTS_FILE)
    latest: dict[str, dict] = {}
    for rec in records:
        if rec.get("type") == "health":
            latest.pop(rec.get("check"), None)   # keep write order of the latest one
            latest[rec.get("check")] = rec
    return list(latest.values())


def print_run_health(run_dir: str | Path, file: TextIO | None = None) -> bool:
    """Print the check table of a finished health run (for ``mapsage run --wait`` and ``mapsage runs show``).

    Returns False (printing nothing) when the run has no health records."""
    rows = health_records(run_dir)
    if not rows:
        return False
    print(format_table(rows, title=f"health checks of {Path(run_dir).name}:"), file=file or sys.stdout)
    return True

"""The local executor: this machine's GPU and CPU slots. The scheduler (:mod:`runners.scheduler`) starts, checks
and cancels local jobs itself (a detached process group per job); this class is what the executor layer hands
out for them."""
from __future__ import annotations


class LocalExecutor:
    name = "local"
    uses_local_slots = True

    def check(self, cfg) -> None:
        """Nothing to reach: the scheduler validates GPU counts against its pool when the job starts."""

    def describe(self, job: dict) -> dict:
        return {"executor": "local", "host": job.get("host"), "pid": job.get("pid")}

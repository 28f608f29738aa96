"""The SLURM executor: a job runs on a SLURM cluster, submitted through submitit.

The request (partition, account, time limit, nodes, tasks per node, GPUs per node, CPUs per task, memory per
node) comes from the template's ``runtime.slurm.*``, else the workspace settings ``slurm_*``
(:mod:`runners.settings`). :func:`check` validates it against ``scontrol show partition`` / ``show node`` at launch,
so an unknown partition or a request no node can hold fails with one clear line instead of pending forever.

What runs on the cluster (:class:`SlurmTask`, pickled by submitit into ``RUN_DIR/slurm/``): each SLURM task starts
the same worker the local scheduler starts (``python -m runners.worker RUN_DIR``, stdout appended to
``RUN_DIR/stdout.log``); with more than one task or GPU, under ``torchrun`` with a static rendezvous at the first
node (``--nnodes`` = tasks, ``--node_rank`` = the task's rank, ``--nproc_per_node`` = GPUs per task). Heartbeats,
events and checkpoints go to the run folder, so the workspace must be shared between the submitting machine and
the nodes.

Lifecycle. The scheduler polls ``squeue`` (then ``scontrol show job`` once the job left the queue) and maps
SLURM's states onto the run's: PENDING -> queued, RUNNING -> running (the worker writes it), and a job that left
SLURM without a final status in its event file -> cancelled (CANCELLED) or died (TIMEOUT, NODE_FAIL,
OUT_OF_MEMORY, FAILED, ...; the message says which). Cancel is ``scancel``. The job is submitted with
``--requeue`` and ``--signal=USR2@signal_s``: before the time limit (or on preemption) submitit calls
:meth:`SlurmTask.checkpoint`, which stops the worker (it saves ``last.pth`` at the next step) and requeues the job;
``scontrol requeue`` does the same from outside. A requeued job starts again in the same run folder and resumes
from its own last checkpoint; its event file shows ``queued`` (requeued) then ``running`` again.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mapsage.config import PROJECT_ROOT, config_from_dict
from mapsage.errors import UserError
from mapsage.event_records import fold_events
from mapsage.events import EVENTS_FILE, FINAL_STATUSES, EventWriter, read_events
from mapsage.workspace import run_dir, workspace_root

from ..jobs import _whoami, find_checkpoint
from ..scheduler import read_job, write_job
from ..settings import load_settings

SLURM_FOLDER = "slurm"
_TIMEOUT = 30.0

# SLURM job states -> the run's status while the job is in SLURM (None: leave the worker's own records)
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                 "SUSPENDED", "STOPPED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
# ... and once it left: the status written when the worker wrote none
ENDED = {
    "COMPLETED": ("died", "the SLURM job completed but the worker wrote no final status"),
    "CANCELLED": ("cancelled", "cancelled in SLURM (scancel)"),
    "FAILED": ("died", "the SLURM job failed (non-zero exit of its batch script)"),
    "TIMEOUT": ("died", "the SLURM job hit its time limit; raise runtime.slurm.time_min or resume it"),
    "PREEMPTED": ("died", "the SLURM job was preempted and not requeued"),
    "NODE_FAIL": ("died", "the SLURM node running the job failed"),
    "BOOT_FAIL": ("died", "the SLURM node for the job failed to boot"),
    "OUT_OF_MEMORY": ("died", "the SLURM job ran out of memory; raise runtime.slurm.mem_gb"),
    "DEADLINE": ("died", "the SLURM job reached its deadline"),
    "GONE": ("died", "the SLURM job is no longer known to SLURM"),
}


class SlurmError(UserError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# talking to SLURM


def _run(cmd: list[str], what: str, timeout: float = _TIMEOUT) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise SlurmError(f"SLURM is not reachable: `{cmd[0]}` is not on PATH of {os.uname().nodename}; install "
                         f"the SLURM client (slurm-client) and point SLURM_CONF at the cluster's slurm.conf, or "
                         f"set executor back to local")
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"SLURM is not reachable: `{' '.join(cmd)}` ({what}) gave no answer in {timeout:.0f} s")\
            from exc
    if out.returncode != 0:
        msg = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise SlurmError(f"SLURM is not reachable: `{' '.join(cmd)}` ({what}) failed: "
                         f"{msg[-1] if msg else f'exit code {out.returncode}'}")
    return out.stdout


def _records(text: str) -> list[dict]:
    """``scontrol show ... -o`` lines as dicts (``Key=Value`` pairs; values may not contain spaces)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        rec = {}
        for m in re.finditer(r"(\S+?)=(\S*)", line):
            rec.setdefault(m.group(1), m.group(2))
        out.append(rec)
    return out


def partitions() -> dict[str, dict]:
    return {r["PartitionName"]: r for r in _records(_run(["scontrol", "show", "partition", "-o"],
                                                         "listing partitions")) if "PartitionName" in r}


def nodes_of(partition: dict) -> list[dict]:
    names = partition.get("Nodes", "")
    if not names or names == "(null)":
        return []
    return _records(_run(["scontrol", "show", "node", "-o", names], f"nodes of {partition['PartitionName']}"))


def parse_minutes(text: str | None) -> float | None:
    """SLURM time (``UNLIMITED``, ``mm``, ``mm:ss``, ``hh:mm:ss``, ``d-hh[:mm[:ss]]``) in minutes; None =
    unlimited."""
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        h, m, s = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts[:3]
    return days * 1440 + h * 60 + m + s / 60


def _node_gpus(node: dict) -> int:
    total = 0
    for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", node.get("Gres", "")):
        total += int(m.group(1))
    return total


# ---------------------------------------------------------------------------------------------------------------
# the request


@dataclass
class Request:
    partition: str | None = None
    account: str | None = None
    time_min: int | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    signal_s: int = 90

    @property
    def ntasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def procs_per_task(self) -> int:
        return max(1, self.gpus_per_node // max(1, self.tasks_per_node))

    def describe(self) -> str:
        parts = [f"partition {self.partition or '<default>'}", f"{self.nodes} node(s) x {self.tasks_per_node} "
                 f"task(s)"]
        if self.gpus_per_node:
            parts.append(f"{self.gpus_per_node} GPU(s)/node")
        if self.cpus_per_task:
            parts.append(f"{self.cpus_per_task} CPU(s)/task")
        if self.mem_gb:
            parts.append(f"{self.mem_gb:g} GB/node")
        if self.time_min:
            parts.append(f"{self.time_min} min")
        if self.account:
            parts.append(f"account {self.account}")
        return ", ".join(parts)


def request_for(cfg, settings=None) -> Request:
    """The SLURM request of a config: ``runtime.slurm.*``, else the ``slurm_*`` settings, else defaults (one node,
    one task, the config's ``runtime.gpus`` GPUs unless ``runtime.device`` is cpu)."""
    if settings is None:
        settings = load_settings()
    s = cfg.runtime.slurm

    def pick(key):
        v = getattr(s, key)
        return v if v is not None else getattr(settings, f"slurm_{key}", None)

    gpus = pick("gpus_per_node")
    if gpus is None:
        gpus = 0 if cfg.runtime.device == "cpu" else int(cfg.runtime.gpus)
    req = Request(partition=pick("partition"), account=pick("account"), time_min=pick("time_min"),
                  nodes=int(pick("nodes") or 1), tasks_per_node=int(s.tasks_per_node or 1), gpus_per_node=int(gpus),
                  cpus_per_task=pick("cpus_per_task"), mem_gb=pick("mem_gb"), signal_s=int(settings.slurm_signal_s))
    for key in ("nodes", "tasks_per_node"):
        if getattr(req, key) < 1:
            raise UserError(f"runtime.slurm.{key} must be 1 or more, got {getattr(req, key)}")
    if req.gpus_per_node < 0:
        raise UserError(f"runtime.slurm.gpus_per_node must be 0 or more, got {req.gpus_per_node}")
    if req.gpus_per_node and req.gpus_per_node % req.tasks_per_node:
        raise UserError(f"runtime.slurm.gpus_per_node={req.gpus_per_node} does not split over "
                        f"tasks_per_node={req.tasks_per_node}; use a multiple of it")
    return req


def validate(req: Request) -> Request:
    """Check the request against the cluster; fills in the default partition and time limit. Raises SlurmError
    with the fix."""
    parts = partitions()
    if not parts:
        raise SlurmError("SLURM is reachable but has no partitions (scontrol show partition lists none)")
    if req.partition is None:
        default = [n for n, p in parts.items() if p.get("Default") == "YES"]
        if not default:
            raise SlurmError(f"no default SLURM partition; set runtime.slurm.partition (or the slurm_partition "
                             f"setting) to one of {', '.join(sorted(parts))}")
        req.partition = default[0]
    part = parts.get(req.partition)
    if part is None:
        raise SlurmError(f"runtime.slurm.partition: unknown SLURM partition {req.partition!r}; the cluster has "
                         f"{', '.join(sorted(parts))}")
    if part.get("State", "UP") not in ("UP",):
        raise SlurmError(f"SLURM partition {req.partition!r} is {part.get('State')}; it accepts no jobs now")
    where = f"partition {req.partition!r}"
    total_nodes = int(part.get("TotalNodes", "0") or 0)
    if req.nodes > total_nodes:
        raise SlurmError(f"runtime.slurm.nodes={req.nodes} but {where} has {total_nodes} node(s)")
    max_nodes = part.get("MaxNodes", "UNLIMITED")
    if max_nodes.isdigit() and req.nodes > int(max_nodes):
        raise SlurmError(f"runtime.slurm.nodes={req.nodes} but {where} allows at most {max_nodes} per job")
    nodes = nodes_of(part)
    if nodes:
        cpus = max(int(n.get("CPUTot", "0") or 0) for n in nodes)
        want = req.tasks_per_node * (req.cpus_per_task or 1)
        if want > cpus:
            raise SlurmError(f"the request needs {want} CPUs per node (tasks_per_node x cpus_per_task) but the "
                             f"largest node of {where} has {cpus}; lower runtime.slurm.cpus_per_task")
        mem = max(int(n.get("RealMemory", "0") or 0) for n in nodes)
        if req.mem_gb and req.mem_gb * 1024 > mem:
            raise SlurmError(f"runtime.slurm.mem_gb={req.mem_gb:g} but the largest node of {where} has "
                             f"{mem / 1024:.1f} GB; lower it")
        gpus = max(_node_gpus(n) for n in nodes)
        if req.gpus_per_node > gpus:
            raise SlurmError(f"the request needs {req.gpus_per_node} GPU(s) per node but the nodes of {where} have "
                             f"{gpus}; set runtime.slurm.gpus_per_node (0 for a CPU job, with runtime.device=cpu)")
        if sum(1 for n in nodes if _node_gpus(n) >= req.gpus_per_node
               and int(n.get("CPUTot", "0") or 0) >= want) < req.nodes:
            raise SlurmError(f"{where} has fewer than {req.nodes} node(s) with {req.gpus_per_node} GPU(s) and "
                             f"{want} CPU(s) each")
    max_time = parse_minutes(part.get("MaxTime"))
    if req.time_min is None:
        req.time_min = int(min(max_time, 24 * 60)) if max_time else 24 * 60
    elif max_time is not None and req.time_min > max_time:
        raise SlurmError(f"runtime.slurm.time_min={req.time_min} exceeds the time limit of {where} "
                         f"({part.get('MaxTime')}); lower it (the job checkpoints and requeues at the limit)")
    if req.time_min < 1:
        raise SlurmError(f"runtime.slurm.time_min must be at least 1 minute, got {req.time_min}")
    return req


# ---------------------------------------------------------------------------------------------------------------
# job states


_snapshot: tuple[float, dict[str, dict]] = (0.0, {})


def queue_snapshot(max_age: float = 1.0) -> dict[str, dict]:
    """Every job in ``squeue``: id -> {state, reason, nodes, partition, name} (cached ``max_age`` seconds)."""
    global _snapshot
    if time.monotonic() - _snapshot[0] < max_age:
        return _snapshot[1]
    out = _run(["squeue", "-h", "-o", "%i|%T|%r|%N|%P|%j"], "reading the queue")
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 6:
            jobs[parts[0]] = {"state": parts[1], "reason": parts[2], "nodes": parts[3], "partition": parts[4],
                              "name": parts[5]}
    _snapshot = (time.monotonic(), jobs)
    return jobs


def job_state(job_id: str, fresh: bool = False) -> dict:
    """{state, reason, nodes, partition, restarts?} of one SLURM job; state ``GONE`` once SLURM forgot it."""
    snap = queue_snapshot(0.0 if fresh else 1.0)
    if str(job_id) in snap:
        return dict(snap[str(job_id)])
    return scontrol_job(job_id)


def scontrol_job(job_id: str) -> dict:
    """``scontrol show job``'s view of one job (it also knows jobs that ended in the last MinJobAge seconds)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             timeout=_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return {"state": "UNKNOWN"}
    recs = _records(out.stdout) if out.returncode == 0 else []
    if not recs:
        return {"state": "GONE"}
    r = recs[0]
    return {"state": r.get("JobState", "UNKNOWN"), "reason": r.get("Reason"), "nodes": r.get("NodeList"),
            "partition": r.get("Partition"), "restarts": r.get("Restarts"), "exit_code": r.get("ExitCode")}


def _submitit_log_tail(rid: str, job_id: str, lines: int = 15) -> str:
    folder = run_dir(rid) / SLURM_FOLDER
    texts = []
    for p in sorted(folder.glob(f"{job_id}_*_log.*")):
        with contextlib.suppress(OSError):
            tail = p.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                texts.append(f"{p.name}:\n" + "\n".join(tail))
    return "\n".join(texts)


def _last_status(rid: str) -> str | None:
    return fold_events(run_dir(rid) / EVENTS_FILE)[0].status


# ---------------------------------------------------------------------------------------------------------------
# the executor (submitting side)


class SlurmExecutor:
    name = "slurm"
    uses_local_slots = False

    def check(self, cfg) -> Request:
        try:
            import submitit  # noqa: F401
        except ImportError as exc:
            raise SlurmError("runtime.executor=slurm needs the submitit package (pip install submitit)") from exc
        return validate(request_for(cfg))

    def start(self, rid: str, settings) -> dict:
        """Submit the queued run to SLURM. Returns its active-table entry."""
        import submitit
        import yaml



        rdir = run_dir(rid)
        data = yaml.safe_load((rdir / "config.yaml").read_text(encoding="utf-8"))
        cfg = config_from_dict(data, {k: str(rdir / "config.yaml") for k in data})
        req = validate(request_for(cfg, settings))
        folder = rdir / SLURM_FOLDER
        folder.mkdir(exist_ok=True)
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=1000)
        params = dict(job_name=f"mapsage-{rid}"[:120], partition=req.partition, time=int(req.time_min),
                      nodes=req.nodes, ntasks_per_node=req.tasks_per_node, signal_delay_s=req.signal_s,
                      stderr_to_stdout=True, additional_parameters={"requeue": True},
                      setup=[f"export MAPSAGE_WORKSPACE={shlex.quote(str(workspace_root()))}",
                             f"export MAPSAGE_RUN_ID={shlex.quote(rid)}", "export PYTHONUNBUFFERED=1",
                             f"export PYTHONPATH={shlex.quote(str(PROJECT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"])
        if req.account:
            params["account"] = req.account
        if req.gpus_per_node:
            params["gpus_per_node"] = req.gpus_per_node
        if req.cpus_per_task:
            params["cpus_per_task"] = int(req.cpus_per_task)
        if req.mem_gb:
            params["mem"] = f"{int(req.mem_gb * 1024)}M"
        ex.update_parameters(**params)
        try:
            job = ex.submit(SlurmTask(str(rdir), req.procs_per_task))
        except Exception as exc:  # noqa: BLE001 - sbatch's own message is the useful part
            raise SlurmError(f"sbatch refused run {rid} ({req.describe()}): {str(exc).strip().splitlines()[-1]}")\
                from exc
        now = time.time()
        entry = {"executor": "slurm", "slurm_job_id": str(job.job_id), "host": None, "gpus": [],
                 "started_at": now, "request": asdict(req)}
        write_job(rid, executor="slurm", slurm_job_id=str(job.job_id), slurm_request=asdict(req),
                  slurm_folder=str(folder), submitted_at=now)
        ev = EventWriter(rdir)
        ev.status("queued", message=f"submitted to SLURM as job {job.job_id} ({req.describe()})")
        ev.emit("run_info", executor="slurm", slurm_job_id=str(job.job_id), slurm_partition=req.partition)
        return entry

    def poll(self, rid: str, entry: dict, settings=None) -> bool:
        """Bring the run's status in line with SLURM's state of its job. False once the job has left SLURM."""

        job_id = entry["slurm_job_id"]
        try:
            st = job_state(job_id)
        except SlurmError:
            return True         # the controller is unreachable for now: the job's fate is unknown, keep it
        state = (st.get("state") or "UNKNOWN").split("+")[0]
        if state == "UNKNOWN":
            return True
        job = read_job(rid)
        if (job.get("slurm_state"), job.get("slurm_nodes")) != (state, st.get("nodes") or job.get("slurm_nodes")):
            write_job(rid, slurm_state=state, slurm_reason=st.get("reason"),
                      slurm_nodes=st.get("nodes") or job.get("slurm_nodes"))
        status = _last_status(rid)
        if state in QUEUED_STATES:
            if status == "running":   # requeued behind the worker's back (SIGKILL before it could say so)
                EventWriter(run_dir(rid)).status(
                    "queued", message=f"requeued by SLURM (job {job_id}, {st.get('reason') or 'pending'}); it "
                                      f"resumes from its last checkpoint")
            return True
        if state in RUNNING_STATES:
            return True
        if status in FINAL_STATUSES:
            return False
        final, why = ENDED.get(state, ("died", f"the SLURM job ended as {state}"))
        if final == "cancelled" and job.get("cancel_requested"):
            why = f"cancelled by {job['cancel_requested'].get('by', 'request')} (scancel {job_id})"
        tail = _submitit_log_tail(rid, job_id)
        if final == "died":
            why += f" (SLURM job {job_id}, exit code {st.get('exit_code') or '?'}); resume it with " \
                   f"`mapsage runs resume {rid}`"
        EventWriter(run_dir(rid)).status(final, message=why, traceback=("SLURM job log:\n" + tail) if tail else None)
        return False

    def cancel(self, rid: str, entry: dict, grace_s: float | None = None, wait_for_end: bool = True) -> str:
        """``scancel`` the run's SLURM job (SLURM sends SIGTERM, then SIGKILL after its KillWait); with
        ``wait_for_end`` until the job left SLURM and the run's status is final."""
        from .. import scheduler

        job_id = entry["slurm_job_id"]
        scheduler.write_job(rid, cancel_requested={"at": time.time(), "by": _whoami()})
        _run(["scancel", str(job_id)], f"cancelling SLURM job {job_id}")
        if not wait_for_end:
            return "cancelling"
        limit = 60.0 if grace_s is None else float(grace_s) + 30.0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            scheduler.schedule()
            status = _last_status(rid)
            if status in FINAL_STATUSES and job_state(job_id, fresh=True)["state"] not in \
                    QUEUED_STATES | RUNNING_STATES:
                return status
            time.sleep(0.3)
        return _last_status(rid) or "cancelling"


# ---------------------------------------------------------------------------------------------------------------
# the job (cluster side)


def _ignore_usr_signal() -> None:
    """In the worker: SLURM's time-limit signal (sent to every process of the step) is submitit's to handle."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _is_done(proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        return True
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class SlurmTask:
    """The callable submitit runs in every SLURM task of the job (checkpointable: see :meth:`checkpoint`)."""

    def __init__(self, rdir: str, procs_per_task: int = 1):
        self.rdir = rdir
        self.procs_per_task = int(procs_per_task)
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        return {"rdir": self.rdir, "procs_per_task": self.procs_per_task}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._proc = None

    def _prepare_attempt(self, rdir: Path, job_id: str, restarts: int) -> None:
        """Rank 0 before the worker starts: a requeued attempt resumes from the run's own last checkpoint."""
        from .. import scheduler

        rid = rdir.name
        records, _ = read_events(rdir / EVENTS_FILE)
        ran_before = any(r.get("type") == "status" and r.get("status") == "running" for r in records)
        updates = {"slurm_restarts": restarts, "slurm_attempt_started_at": time.time(), "requeue_requested": None,
                   "host": os.uname().nodename}
        if ran_before:
            ckpt = find_checkpoint(rid)
            if ckpt is not None:
                updates["resume_from"] = str(ckpt)
            EventWriter(rdir).log(f"SLURM job {job_id} attempt {restarts + 1} on {os.uname().nodename}: "
                                  + (f"resuming from {ckpt}" if ckpt else "no checkpoint yet, starting over"))
        scheduler.write_job(rid, **updates)

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        rdir = Path(self.rdir)
        rank, ntasks = env.global_rank, env.num_tasks
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if rank == 0:
            self._prepare_attempt(rdir, str(env.job_id), restarts)
        worker = ["-m", "runners.worker", str(rdir)]
        if ntasks > 1 or self.procs_per_task > 1:
            port = 20000 + int(str(env.job_id).split("_")[0]) % 20000
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={ntasks}", f"--node_rank={rank}",
                   f"--nproc_per_node={self.procs_per_task}", f"--master_addr={env.hostnames[0]}",
                   f"--master_port={port}", *worker]
        else:
            cmd = [sys.executable, *worker]
        child_env = dict(os.environ, MAPSAGE_RUN_ID=rdir.name, PYTHONUNBUFFERED="1", MAPSAGE_ON_CLUSTER="1")
        visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
        per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1)
        if per_node > 1 and len(visible) == per_node * self.procs_per_task:
            # every task of a node sees all the node's GPUs: each torchrun takes its own share
            local = int(os.environ.get("SLURM_LOCALID", "0") or 0)
            child_env["CUDA_VISIBLE_DEVICES"] = ",".join(
                visible[local * self.procs_per_task:(local + 1) * self.procs_per_task])
        if not visible:
            cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "1") or 1)
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                child_env.setdefault(var, str(max(1, cpus // self.procs_per_task)))
        with open(rdir / "stdout.log", "ab") as log:
            log.write(f"[slurm] {time.strftime('%Y-%m-%d %H:%M:%S')} job {env.job_id} task {rank}/{ntasks} on "
                      f"{env.hostname} (restart {restarts}): {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(cmd, cwd=str(PROJECT_ROOT), env=child_env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, preexec_fn=_ignore_usr_signal)
        while not _is_done(self._proc):
            time.sleep(0.5)
        code = self._proc.wait()
        if rank == 0 and code not in (0, 1, 3):
            print(f"[slurm] worker exited with {code}", flush=True)
        return code

    def checkpoint(self):
        """submitit calls this on rank 0 when the time-limit (or preemption) signal arrives: stop the worker (the
        stage saves ``last.pth`` at its next step) and let submitit requeue the job, which resumes from it."""
        import submitit

        from .. import scheduler

        rid = Path(self.rdir).name
        scheduler.write_job(rid, requeue_requested=time.time())
        proc = self._proc
        if proc is not None and not _is_done(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while not _is_done(proc) and time.monotonic() < deadline:
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(SlurmTask(self.rdir, self.procs_per_task))


def stop_outcome(run_id: str, status: str, message: str) -> tuple[str, str]:
    """In the worker of a SLURM job that was asked to stop: a requeue (submitit's checkpoint, ``scontrol requeue``,
    preemption) makes the run ``queued`` again; a cancel stays ``cancelled``."""

    job = read_job(run_id)
    if job.get("executor") != "slurm" or job.get("cancel_requested"):
        return status, message
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if job.get("requeue_requested"):
        return "queued", (f"checkpointed before SLURM's time limit or a preemption; SLURM job {job_id} is requeued "
                          f"and resumes from its last checkpoint")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    with contextlib.suppress(Exception):
        st = scontrol_job(job_id)
        if st.get("restarts") is not None and int(st["restarts"]) > restarts:
            return "queued", (f"requeued by SLURM (job {job_id}: scontrol requeue or preemption); it resumes from "
                              f"its last checkpoint")
    return status, f"cancelled in SLURM (scancel {job_id}); " + message

"""Where jobs run: the launch form's executor fields (local slots or a SLURM request) and the Plan board's
cluster queue (each SLURM job of this workspace with its job id, state, nodes and pending reason)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from mapsage.errors import UserError
from runners import api, scheduler
from runners.executors import placement

# launch-form field -> (config key, label, help)
SLURM_FIELDS = [
    ("partition", "Partition", "runtime.slurm.partition (empty: the setting, else the cluster's default)"),
    ("account", "Account", "runtime.slurm.account"),
    ("time_min", "Time limit (min)", "runtime.slurm.time_min: the job checkpoints and requeues before it"),
    ("nodes", "Nodes", "runtime.slurm.nodes: more than 1 runs DDP over nodes (srun + torchrun)"),
    ("gpus_per_node", "GPUs per node", "runtime.slurm.gpus_per_node (empty: runtime.gpus)"),
    ("cpus_per_task", "CPUs per task", "runtime.slurm.cpus_per_task"),
    ("mem_gb", "Memory per node (GB)", "runtime.slurm.mem_gb"),
]


def _settings():
    try:
        return api.settings()
    except UserError:
        return None


def executor_fields(key: str, cfg) -> list[str]:
    """Inside the launch form: where the job runs. Returns ``key=value`` override lines (only values that differ
    from the template)."""
    s = _settings()
    default = cfg.runtime.executor or (s.executor if s else "local")
    with st.expander("Where it runs: this machine or a SLURM cluster", expanded=default == "slurm"):
        c = st.columns(4)
        name = c[0].selectbox("Executor", ["local", "slurm"], index=["local", "slurm"].index(default),
                              key=f"{key}:executor", help="runtime.executor: local slots, or sbatch through submitit "
                                                          "(a shared workspace is needed)")
        values = {}
        for i, (field, label, help_) in enumerate(SLURM_FIELDS, start=1):
            base = getattr(cfg.runtime.slurm, field)
            setting = getattr(s, f"slurm_{field}", None) if s else None
            col = c[i % 4]
            values[field] = col.text_input(label, "" if base is None else str(base), key=f"{key}:slurm_{field}",
                                           placeholder="" if setting is None else f"setting: {setting}", help=help_)
    out = []
    if name != default or (cfg.runtime.executor is None and name == "slurm"):
        out.append(f"runtime.executor={name}")
    if name == "slurm":
        for field, _, _ in SLURM_FIELDS:
            base = getattr(cfg.runtime.slurm, field)
            text = values[field].strip()
            if text != ("" if base is None else str(base)):
                out.append(f"runtime.slurm.{field}={text if text else 'null'}")
    return out


def executor_line() -> str:
    s = _settings()
    if s is None or s.executor == "local":
        return ""
    return (f" Default executor: SLURM (partition {s.slurm_partition or 'the cluster default'}); jobs are submitted "
            f"with sbatch and run on the cluster's nodes.")


def _slurm_rows() -> list[dict]:
    rows = []
    for rid, entry in scheduler.load_state()["active"].items():
        if entry.get("executor") != "slurm":
            continue
        p = placement(rid)
        rows.append({"run": rid, "SLURM job": p.get("slurm_job_id"), "state": p.get("slurm_state"),
                     "partition": p.get("slurm_partition"), "nodes": p.get("slurm_nodes") or "",
                     "waiting for": p.get("slurm_reason") or "", "requeues": p.get("slurm_restarts") or 0})
    return rows


def cluster_queue() -> None:
    """The workspace's jobs on the SLURM cluster (nothing when none is there)."""
    try:
        rows = _slurm_rows()
    except UserError as exc:
        st.warning(f"Cluster queue unreadable: {exc}")
        return
    if not rows:
        return
    st.subheader("Cluster queue")
    st.caption("Jobs of this workspace in SLURM (squeue): cancel one from Live jobs (scancel); a job requeued by "
               "SLURM resumes from its last checkpoint.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", placeholder="–")

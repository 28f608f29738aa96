"""A real single-node SLURM for the tests: munge, slurmctld and slurmd from Debian's packages (installed by
``scripts/install.sh --test`` as root), each run in the foreground from a short folder under /tmp and stopped by
its PID at the end of the session.

``slurm_cluster`` (session scope) starts it once, points ``SLURM_CONF`` at it for this process and its children,
and at the end cancels every job, waits for the queue to empty and stops the daemons. Where SLURM cannot start
(not root, the packages missing) the tests skip with the reason -- except in CI (``CI=true``), where they fail.

For a manual session: ``python tests/support/slurm.py`` starts one and prints the ``SLURM_CONF`` to export;
Ctrl-C stops it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
PARTITION = "debug"
NODE_CPUS = 4          # declared CPUs (more than the test machine's 2 cores, so a couple of tiny jobs overlap)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cannot_start() -> str | None:
    """Why a local SLURM cannot start here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting a local SLURM (munged, slurmctld, slurmd) needs root"
    missing = [d for d in DAEMONS if not shutil.which(d) and not Path("/usr/sbin", d).exists()]
    if missing:
        return (f"SLURM/munge programs missing ({', '.join(missing)}): run `scripts/install.sh --test` as root "
                f"(apt-get install slurmctld slurmd slurm-client munge)")
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    """One single-node SLURM cluster in a fresh folder (job ids start at 1)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="msl", dir="/tmp"))    # a socket path must stay < 108 bytes
        self.procs: dict[str, subprocess.Popen] = {}
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"

    # ---------------------------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for d in ("munge-run", "munge-key", "state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge-run", 0o755)
        os.chmod(r / "munge-key", 0o700)
        key = r / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        mem_mb = max(1024, int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.5))
        sock = r / "munge-run" / "munge.socket.2"
        lines = [
            "ClusterName=mapsagetest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={sock},cred_expire=10",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1",
            "MpiDefault=none", "ReturnToService=2", "KillWait=5", "MinJobAge=600",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SlurmdParameters=config_overrides", "SlurmctldDebug=info", "SlurmdDebug=info",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.sock = sock

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def _logs(self) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")):
            text = p.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {p.name}\n" + "\n".join(text))
        return "\n".join(out)

    def start(self, timeout: float = 30.0) -> "LocalSlurm":
        self._write_config()
        r = self.root
        self._spawn("munged", [_exe("munged"), "-F", "--force", f"--socket={self.sock}",
                               f"--key-file={r / 'munge-key' / 'munge.key'}", f"--pid-file={r / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munged.seed'}"])
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            if time.monotonic() > deadline or self.procs["munged"].poll() is not None:
                raise RuntimeError(f"munged did not start:\n{self._logs()}")
            time.sleep(0.05)
        self._spawn("slurmctld", [_exe("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_exe("slurmd"), "-D", "-f", str(self.conf)])
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                break
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode} while starting:\n{self._logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local SLURM node did not become idle in {timeout:.0f} s "
                                   f"(sinfo: {out.stdout.strip() or out.stderr.strip()}):\n{self._logs()}")
            time.sleep(0.2)
        return self

    def squeue_ids(self) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True)
        return out.stdout.split() if out.returncode == 0 else []

    def stop(self) -> None:
        """scancel everything, wait for the queue to empty, then stop the daemons by PID."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True)
            deadline = time.monotonic() + 20
            while self.squeue_ids() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":   # a manual cluster for trying things out
    c = LocalSlurm().start()
    print(f"export SLURM_CONF={c.conf}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()

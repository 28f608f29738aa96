"""The app as `streamlit run app/main.py` starts it from the project folder (so `.streamlit/config.toml` applies):
reachable on the loopback address, not reachable on this machine's other addresses, and error details kept from
the browser."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _non_loopback_ipv4() -> str | None:
    """An address of this machine on a real interface (from the kernel's routing of a UDP socket: no packet is
    sent), or None."""
    candidates = []
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
        candidates += [a for a in out if "." in a]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        candidates += [i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    for a in candidates:
        if not a.startswith("127."):
            return a
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_config_keeps_error_details_from_browsers():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["client"]["showErrorDetails"] == "none"
    assert cfg["server"].get("enableXsrfProtection", True) is True


def test_default_server_is_not_reachable_on_a_non_loopback_address(tmp_path):
    other = _non_loopback_ipv4()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    port = _free_port()
    env = dict(os.environ, MAPSAGE_WORKSPACE=str(tmp_path / "ws"))
    for k in [k for k in env if k.startswith("STREAMLIT_SERVER_")]:
        env.pop(k)                                   # the defaults under test, not a caller's overrides
    log = open(tmp_path / "streamlit.log", "wb")
    # exactly what the README says to run, plus a free port; no --server.address
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        ok = False
        while time.monotonic() < deadline and not ok:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    ok = r.status == 200
            except OSError:
                time.sleep(0.3)
        assert ok, (tmp_path / "streamlit.log").read_text()[-2000:]
        assert _connects("127.0.0.1", port)
        assert not _connects(other, port), f"the app answers on {other}:{port}"
        # the same check holds for a server that does listen everywhere: the probe itself can fail
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            s.listen(1)
            assert _connects(other, s.getsockname()[1])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

"""Loading checkpoint and weights files without running code from them.

Every load of a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` / ``.safetensors`` file in the workbench goes through
:func:`load_file`: safetensors files are read by ``safetensors`` (tensors only, nothing to execute), every other
file by ``torch.load(weights_only=True)``, whose unpickler builds tensors, containers and plain scalars only. A
file that needs full unpickling (arbitrary classes, a ``__reduce__`` that would call a function) is refused with a
:class:`~mapsage.errors.CheckpointError` naming the file and the opt-in; there is no silent fallback.

The opt-in names the file: the config key ``runtime.trust_pickle`` (a list of files) or ``mapsage run
--trust-pickle FILE``. Only a file on that list (compared by resolved path) is loaded with ``weights_only=False``,
and only where a user put it there because they know where it came from.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Iterable

from .config import resolve_path
from .errors import CheckpointError

TRUST_KEY = "runtime.trust_pickle"
TRUST_ENV = "MAPSAGE_TRUST_PICKLE"       # os.pathsep-separated files, set by the worker from the run's config

_trusted: set[str] = set()


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def trust(paths: Iterable[str | Path] | None) -> None:
    """Add files the user trusts to be unpickled (``runtime.trust_pickle``)."""
    for p in paths or ():
        if p:
            _trusted.add(_key(resolve_path(str(p))))


def trusted(path: str | Path) -> bool:
    env = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    return _key(path) in _trusted or _key(path) in {_key(p) for p in env}


def _is_unsafe_pickle(exc: BaseException) -> bool:
    """True when ``torch.load(weights_only=True)`` refused the file for a class or function its pickle asks to
    build (as opposed to a truncated, corrupt or non-torch file)."""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) and (
        "GLOBAL" in text or "unsupported global" in text.lower() or "Unsupported class" in text)


def refusal(path: str | Path, exc: BaseException | None = None, key: str | None = None) -> CheckpointError:
    detail = ""
    if exc is not None:
        for line in str(exc).splitlines():
            if "GLOBAL" in line or "Unsupported global" in line or "Unsupported class" in line:
                detail = f" ({line.strip().rstrip('.')})"
                break
    where = f"{key}: " if key else ""
    return CheckpointError(
        f"{where}{path}: refused to load: the file needs full unpickling, which can run any code it carries"
        f"{detail}. Convert it to safetensors or a plain state dict, or, if you trust where it came from, name it "
        f"in {TRUST_KEY} (--set {TRUST_KEY}=[{path}] or `mapsage run ... --trust-pickle {path}`)")


def load_file(path: str | Path, *, what: str = "checkpoint", key: str | None = None) -> Any:
    """Load a torch or safetensors file safely (see module doc). ``what``/``key`` word the error messages.

    Raises :class:`CheckpointError` naming the file: not found, unreadable/truncated, or needing unpickling."""
    path = Path(path)
    where = f"{key}: " if key else ""
    if not path.is_file():
        raise CheckpointError(f"{where}{path}: {what} file not found")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{where}{path}: {what} file is not readable (permissions); fix them with chmod")
    import torch

    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file as st_load
            return dict(st_load(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise CheckpointError(f"{where}{path}: cannot read the safetensors {what} ({type(exc).__name__}: "
                                  f"{exc}); the file may be truncated") from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        if not _is_unsafe_pickle(exc):
            raise CheckpointError(f"{where}{path}: cannot read the {what} ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}); the file may be truncated or "
                                  f"not a torch file") from exc
        if not trusted(path):
            raise refusal(path, exc, key) from None
    try:   # named in runtime.trust_pickle: the user vouched for this very file
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{where}{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from exc


def check_file(path: str | Path, *, what: str = "checkpoint", key: str | None = None) -> None:
    """Validate at launch that ``path`` exists, is readable and loads safely (raises CheckpointError)."""
    load_file(path, what=what, key=key)


__all__ = ["load_file", "check_file", "trust", "trusted", "refusal", "TRUST_KEY", "TRUST_ENV"]

"""Loading checkpoint and weights files without running code from them.

Every load of a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` / ``.safetensors`` file in the workbench goes through
:func:`load_file`: safetensors files are read by ``safetensors`` (tensors only, nothing to execute), every other
file by ``torch.load(weights_only=True)``, whose unpickler builds tensors, containers and plain scalars only.

Checkpoints written by other tools often carry objects besides their weights (mmengine's ``HistoryBuffer`` in
``meta``, Lightning's hyper-parameter ``Namespace``, numpy scalars), which ``weights_only`` refuses. Such a file is
read again by the same ``weights_only`` unpickler with every class or function it names replaced by an
:class:`Inert` placeholder (``torch.serialization.safe_globals`` with ``(placeholder, name)`` pairs): nothing the
file names is imported or called, the tensors come through, and a warning lists what was not loaded. A file that
names a function whose only use in a pickle is to run code (``os.system``, ``subprocess.*``, ``builtins.eval``,
...) is refused outright with a :class:`~mapsage.errors.CheckpointError` naming the file and the call; so is a
file whose objects cannot be read statically (a pre-1.6 torch file) or that holds no tensors at all. There is no
way to unpickle a file in full: files from strangers are data, never code.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

from .errors import CheckpointError

# modules (and builtins) a checkpoint has no reason to name: naming one is an attempt to run code
_HOSTILE_MODULES = {"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pty",
                    "ctypes", "code", "codeop", "pickle", "marshal", "types", "webbrowser", "multiprocessing",
                    "signal", "urllib", "http", "requests", "commands"}
_HOSTILE_BUILTINS = {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
                     "locals", "vars", "input", "breakpoint", "exit", "quit"}


class Inert:
    """Stands for a class or function a checkpoint names that is neither tensors nor plain data: never imported,
    never called. What the file asked for stays readable as data: ``name``, ``args`` / ``kwargs`` (the call it
    wanted) and ``state`` (what it would have set)."""
    name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<not loaded: {self.name}>"


def _hostile(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    top = module.split(".")[0]
    return top in _HOSTILE_MODULES or (top == "builtins" and attr in _HOSTILE_BUILTINS)


def _numpy_data(name: str) -> Any:
    """numpy's array and scalar rebuilders and dtypes (what ``np.ndarray.__reduce__`` names): plain data, so a
    checkpoint's numpy arrays load as arrays; None for any other name."""
    import numpy as np

    module, _, attr = name.rpartition(".")
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and attr in ("_reconstruct", "scalar"):
        return getattr(np._core.multiarray, attr)
    if name == "numpy.ndarray":
        return np.ndarray
    if name == "numpy.dtype":
        return np.dtype
    if module == "numpy.dtypes":
        dt = getattr(np.dtypes, attr, None)
        return dt if isinstance(dt, type) and issubclass(dt, np.dtype) else None
    return None


def _numpy_dtypes() -> list[tuple[type, str]]:
    """Every numpy dtype class (``np.dtype("f8")`` is a ``Float64DType``), which the unpickler's BUILD must know."""
    import numpy as np

    return [(c, f"numpy.dtypes.{n}") for n in dir(np.dtypes)
            if isinstance(c := getattr(np.dtypes, n), type) and issubclass(c, np.dtype)]


def _has_tensor(obj: Any, depth: int = 0) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return True
    if depth > 6:
        return False
    if isinstance(obj, dict):
        return any(_has_tensor(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_tensor(v, depth + 1) for v in obj)
    return False


def _unsafe_detail(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "Unsupported global" in line or "Unsupported class" in line:
            return f" ({line.strip().rstrip('.')})"
    return ""


def _is_unsafe_pickle(exc: BaseException) -> bool:
    """True when ``torch.load(weights_only=True)`` refused the file for a class or function its pickle asks to
    build (as opposed to a truncated, corrupt or non-torch file)."""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) and (
        "GLOBAL" in text or "unsupported global" in text.lower() or "Unsupported class" in text)


def _refused(where: str, path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{where}{path}: refused to load: {why}; convert it to safetensors or a plain state dict "
                           f"of tensors where it came from")


def _load_with_placeholders(path: Path, where: str, what: str, exc: BaseException) -> Any:
    """The ``weights_only`` load again, every non-allowlisted global an :class:`Inert` placeholder (see module doc)."""
    import torch

    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: its globals cannot be listed without running it
        raise _refused(where, path, f"the {what} needs full unpickling, which can run any code it carries"
                       f"{_unsafe_detail(exc)}") from None
    hostile = [n for n in names if _hostile(n)]
    if hostile:
        raise _refused(where, path, f"the {what} asks to call {', '.join(hostile)}, which a checkpoint never needs "
                       f"(it would run code)")
    if not names:     # refused for a global built at load time, which a static listing cannot see
        raise _refused(where, path, f"the {what} needs full unpickling, which can run any code it carries"
                       f"{_unsafe_detail(exc)}")
    subs = [(_numpy_data(n) or type(n.rpartition(".")[2] or "Inert", (Inert,), {"name": n}), n) for n in names]
    if len(names) > len(kept := [n for n in names if _numpy_data(n) is None]):   # numpy data: its dtypes built too
        subs += _numpy_dtypes()
    names = kept
    try:
        with torch.serialization.safe_globals(subs):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc2:  # noqa: BLE001
        raise _refused(where, path, f"its objects ({', '.join(names)}) cannot be read as data "
                       f"({type(exc2).__name__}: {str(exc2).splitlines()[0] if str(exc2) else ''})") from None
    if not _has_tensor(obj):
        raise _refused(where, path, f"the {what} holds no tensors, only objects of {', '.join(names) or 'numpy'}")
    if names:
        warnings.warn(f"{where}{path}: kept {', '.join(names)} as inert placeholders (not imported, not run); the "
                      f"tensors were read", stacklevel=3)
    return obj


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
        unsafe = exc
    return _load_with_placeholders(path, where, what, unsafe)


def check_file(path: str | Path, *, what: str = "checkpoint", key: str | None = None) -> None:
    """Validate at launch that ``path`` exists, is readable and loads safely (raises CheckpointError)."""
    load_file(path, what=what, key=key)


__all__ = ["load_file", "check_file", "Inert"]

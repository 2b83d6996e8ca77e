"""Outputs: paths checked before any work starts (a bad ``--out`` fails at once, not after a fit); JSON-ready values.

Every writer in specsim writes a temporary sibling and renames it (traces, posteriors, reports);
these checks make sure that rename will be possible: the folder exists or can be created, is a
folder, and is writable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from specsim.errors import InputError

__all__ = ["check_output_dir", "check_output_file", "json_ready"]


def json_ready(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, NumPy scalars plain numbers.

    Examples
    --------
    >>> import numpy as np
    >>> json_ready({"a": np.float64("nan"), "b": [np.int64(2), float("inf")]})
    {'a': None, 'b': [2, None]}
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _writable_folder(folder: Path, option: str) -> None:
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{existing} is a file, not a folder", path=folder, field=option)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError("folder is not writable", path=existing, field=option)


def check_output_dir(folder: str | Path, option: str = "--out") -> Path:
    """Check that ``folder`` is (or can become) a writable folder; nothing is created (bad input leaves no trace)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("exists and is not a folder", path=folder, field=option)
    _writable_folder(folder, option)
    return folder


def _inside_trace_folder(path: Path) -> Path | None:
    """The trace folder whose contract tree (``manifest.json``, ``runs/``, ``sequences/``, ...) holds ``path``."""
    resolved = path.resolve()
    for folder in (resolved.parent, resolved.parent.parent):
        if (folder / "sequences").is_dir() and ((folder / "manifest.json").is_file() or (folder / "steps").is_dir()):
            return folder
    return None


def check_output_file(path: str | Path, suffix: str, option: str = "--out",
                      inputs: Iterable[str | Path | None] = ()) -> Path:
    """Check that ``path`` ends in ``suffix`` and can be written (its folder exists or can be created).

    Also refused: an output that is one of the command's ``inputs`` (it would be overwritten
    before or while it is read), and one inside a trace folder (it would replace part of the
    collected data).
    """
    path = Path(path)
    if path.suffix != suffix:
        raise InputError(f"must end in {suffix}", path=path, field=option)
    if path.is_dir():
        raise InputError("is a folder; give a file name", path=path, field=option)
    for source in inputs:
        if source is not None and Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise InputError("is also an input of this command: it would be overwritten; write elsewhere", path=path,
                             field=option)
    folder = _inside_trace_folder(path)
    if folder is not None:
        raise InputError(f"is inside the trace folder {folder}: it would replace collected data; write outside it",
                         path=path, field=option)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError("exists and is not writable", path=path, field=option)
    check_output_dir(path.parent, option)
    return path

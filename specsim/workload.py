"""Reading a workload's lengths from a file (the I/O edge of :mod:`specsim.lengths`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from specsim.errors import InputError

__all__ = ["LENGTH_FILE_SUFFIXES", "is_lengths_file", "read_lengths_file"]

LENGTH_FILE_SUFFIXES = (".csv", ".parquet", ".jsonl")


def is_lengths_file(source: str | Path) -> bool:
    """Whether ``source`` names a lengths file (by its suffix) rather than a task."""
    return Path(source).suffix in LENGTH_FILE_SUFFIXES


def read_lengths_file(path: str | Path) -> pd.DataFrame:
    """Read and validate a lengths file with ``prompt_len`` and ``output_len`` columns.

    Raises
    ------
    specsim.errors.InputError
        Missing or unreadable file, missing column, no rows, or lengths out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such lengths file", path=path)
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
               ".jsonl": lambda p: pd.read_json(p, lines=True)}
    if path.suffix not in readers:
        raise InputError(f"lengths files end in {', '.join(LENGTH_FILE_SUFFIXES)}", path=path)
    try:
        frame = readers[path.suffix](path)
    except (ValueError, OSError) as error:
        raise InputError(f"cannot read lengths ({str(error).splitlines()[0]})", path=path) from None
    for column in ("prompt_len", "output_len"):
        if column not in frame.columns:
            raise InputError("missing column", path=path, field=column)
    if frame.empty or (frame["output_len"] < 1).any() or (frame["prompt_len"] < 0).any():
        raise InputError("need rows with output_len >= 1 and prompt_len >= 0", path=path, field="output_len")
    return frame

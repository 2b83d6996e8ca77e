"""Reading JSON Lines files: one object per line, one clear error for anything else."""

from __future__ import annotations

import json
from pathlib import Path

from specsim.errors import InputError

__all__ = ["read_jsonl_objects"]


def read_jsonl_objects(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a UTF-8 JSON Lines file.

    Raises
    ------
    specsim.errors.InputError
        Not UTF-8, a line that is not JSON, or a line that is not a JSON object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text (byte {error.start}: {error.reason})", path=path) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise InputError(f"line {number}: JSON nested too deeply", path=path) from None
        except json.JSONDecodeError as error:
            raise InputError(f"line {number}: not valid JSON ({error.msg})", path=path) from None
        if not isinstance(row, dict):
            raise InputError(f"line {number}: expected a JSON object", path=path)
        rows.append((number, row))
    return rows

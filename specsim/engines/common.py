"""What every importer shares: the result object, the counts rows, and reading records from JSON files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.traces.counts import MAX_GAMMA, index_counts

__all__ = ["MAX_GAMMA", "ImportResult", "count_keys", "chain_rows", "pooled_rows", "read_records", "whole_number",
           "lengths_frame"]


@dataclass
class ImportResult:
    """One imported source: its counts table, per-request lengths where it has them, and what was assumed.

    Attributes
    ----------
    counts : pandas.DataFrame
        Rows of :data:`specsim.traces.counts.COUNTS_SCHEMA`.
    lengths : pandas.DataFrame or None
        ``prompt_len`` and ``output_len`` per request, where the source reports them.
    notes : list of str
        Each convention assumed and each thing left out, one sentence each; printed with the import.
    """

    counts: pd.DataFrame
    lengths: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def count_keys(task: str, drafter: str, drafter_kind: str, trained_on: str | None, temperature: float | None,
               gamma: int, source: str) -> dict[str, Any]:
    """The identifying columns of every row of one imported group."""
    if drafter_kind not in ("generic", "finetuned", "untrained"):
        raise InputError("must be generic, finetuned or untrained", field="--drafter-kind")
    if gamma < 1:
        raise InputError(f"must be >= 1, got {gamma}", field="--gamma")
    if gamma > MAX_GAMMA:
        raise InputError(f"a draft length of {gamma} (more than {MAX_GAMMA}) is not one an engine drafts: the source's "
                         "counts are wrong, or give --gamma", field="gamma")
    return {"source": source, "task": task, "drafter": drafter, "drafter_kind": drafter_kind,
            "drafter_trained_on": trained_on, "temperature": temperature, "gamma": int(gamma)}


def chain_rows(keys: dict[str, Any], accepted: np.ndarray, drafted: np.ndarray | None = None,
               extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Resolved rows (one per draft index) from each verify step's accepted and drafted tokens.

    Prefix acceptance: a step that accepted ``k`` drafts evaluated indices ``0 .. k`` (those it
    drafted) and accepted ``0 .. k - 1``. ``drafted`` None means every step drafted gamma tokens;
    otherwise ``offered``/``asked`` are filled (steps asked for gamma tokens).
    """
    gamma = int(keys["gamma"])
    accepted = np.asarray(accepted, dtype=np.int64)
    full = drafted is None
    drafts = np.full(len(accepted), gamma) if drafted is None else np.asarray(drafted, dtype=np.int64)
    if np.any(accepted < 0) or np.any(accepted > drafts):
        raise InputError(f"a step accepted more drafts than it drafted (gamma {gamma}) or fewer than 0",
                         field="--gamma")
    if np.any(drafts > gamma):
        raise InputError(f"a step drafted more than gamma = {gamma} tokens", field="--gamma")
    counts = index_counts(np.full(len(accepted), gamma), drafts, accepted, gamma)
    rows = []
    for i in range(gamma):
        row = {**keys, "draft_index": i, "steps": len(accepted),
               **{name: int(counts[name][i]) for name in ("drafted", "evaluated", "accepted")}, **(extra or {})}
        if not full:
            row.update(offered=int(counts["offered"][i]), asked=int(counts["asked"][i]))
        rows.append(row)
    return rows


def pooled_rows(keys: dict[str, Any], steps: int, drafted: int, accepted: int,
                extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row with draft positions not resolved (``draft_index`` -1): only the group's totals."""
    if accepted > drafted:
        raise InputError(f"{accepted} accepted of {drafted} drafted tokens: more accepted than drafted",
                         field="accepted")
    if drafted > steps * int(keys["gamma"]):
        raise InputError(f"{drafted} drafted tokens in {steps} steps is more than gamma = {keys['gamma']} a step",
                         field="--gamma")
    return [{**keys, "draft_index": -1, "steps": int(steps), "drafted": int(drafted), "accepted": int(accepted),
             **(extra or {})}]


def whole_number(value: Any, where: str, name: str, path: Path) -> int:
    """``value`` as an int when it is a whole number >= 0 (an integral float too), else one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0 \
            or value != int(value):
        raise InputError(f"{where}: must be a whole number >= 0, got {value!r}", path=path, field=name)
    return int(value)


def read_records(path: Path) -> list[tuple[int, Any]]:
    """``(line, record)`` of a JSON document, a JSON Lines file, or a captured event stream.

    A whole-file JSON object or list gives one record (line 1) or one per list item; otherwise
    every non-blank line is a record, where the server-sent-events framing of a captured stream
    (``data: {...}``, ``data: [DONE]``, ``event:``/``id:``/``retry:`` and ``:`` comment lines) is
    taken off first.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text (byte {error.start}: {error.reason})", path=path) from None
    stripped = text.strip()
    if not stripped:
        raise InputError("empty file", path=path)
    if stripped[0] in "[{":
        try:
            whole = json.loads(stripped)
        except json.JSONDecodeError:
            whole = None
        except RecursionError:
            raise InputError("JSON nested too deeply to be an engine's output", path=path) from None
        else:
            if isinstance(whole, list):
                return [(1, item) for item in whole]
            return [(1, whole)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(":") or line.split(":", 1)[0] in ("event", "id", "retry"):
            continue
        if line.startswith("data:"):
            line = line[len("data:"):].strip()
            if line == "[DONE]":
                continue
        try:
            records.append((number, json.loads(line)))
        except RecursionError:
            raise InputError(f"line {number}: JSON nested too deeply to be an engine's output", path=path) from None
        except json.JSONDecodeError as error:
            raise InputError(f"line {number}: not valid JSON ({error.msg}); expected one JSON object per line, "
                             "or a captured stream of 'data: {...}' lines", path=path) from None
    if not records:
        raise InputError("no records (every line blank or a stream's end marker)", path=path)
    return records


def lengths_frame(pairs: list[tuple[Any, Any]]) -> pd.DataFrame | None:
    """Per-request lengths from (prompt tokens, completion tokens) pairs; requests without both left out."""
    rows = [(int(p), int(o)) for p, o in pairs
            if isinstance(p, int) and isinstance(o, int) and not isinstance(p, bool) and p >= 0 and o >= 1]
    return pd.DataFrame(rows, columns=["prompt_len", "output_len"]) if rows else None

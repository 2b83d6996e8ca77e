"""Workloads: the prompt and output lengths a prediction is made for (the I/O edge of
:mod:`specsim.lengths`).

A workload is named by a source string: a lengths file, a task of a trace directory's sequences
table, a text workload (JSONL of prompts and responses or chats, or an ``hf:`` dataset,
counted with the target's tokenizer), or a directory of plain-decoding runs (``specsim collect
--baseline`` without a drafter: the target's own output lengths for the user's prompts; the
directory or its ``baseline/`` folder). Lengths files: ``.csv``, ``.parquet`` or ``.jsonl`` with ``prompt_len`` and
``output_len`` columns, or ``output_len`` alone; or ``.txt`` with one output length per line.
Without prompt lengths the prompts are taken as empty (0 tokens), and every output built on such a
workload says so (:attr:`Workload.assumption`): prefill and context costs are then understated.
:func:`resolve_workload` is the one place that turns such a string into lengths, for the CLI,
the workflow verbs and the reports alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.lengths import length_table
from specsim.traces.schema import BASELINE_FOLDER
from specsim.traces.select import select

__all__ = ["LENGTH_FILE_SUFFIXES", "MAX_OUTPUT_LEN", "MAX_PROMPT_LEN", "MAX_WORKLOAD_SEQUENCES", "NO_PROMPT_ASSUMPTION",
           "Workload", "is_lengths_file", "read_lengths_file", "resolve_workload"]

LENGTH_FILE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".txt")
#: What is assumed when a workload gives output lengths only.
NO_PROMPT_ASSUMPTION = "prompt lengths not given: taken as 0 tokens (prefill and context costs understated)"
#: Longest output a workload may ask about (tokens): the exact simulator's memory and time grow
#: linearly with it (a posterior prediction runs it once per draw).
MAX_OUTPUT_LEN = 131_072
#: Longest prompt (tokens); prompts only enter the arithmetic of costs.
MAX_PROMPT_LEN = 10_000_000
#: Most sequences a workload may hold: the what-if's Monte Carlo keeps per-sequence arrays; a
#: larger workload is better given as a sample of its lengths.
MAX_WORKLOAD_SEQUENCES = 10_000_000


@dataclass(frozen=True)
class Workload:
    """Lengths of the sequences of a workload.

    Attributes
    ----------
    prompt_lengths, output_lengths : numpy.ndarray, shape (n_sequences,)
        Integer token counts (prompt >= 0, output >= 1).
    name : str
        What the user gave (a file path or a task name).
    kind : {"file", "task", "plain-decoding runs", "text"}
        Where the lengths came from.
    """

    prompt_lengths: np.ndarray
    output_lengths: np.ndarray
    name: str
    kind: str
    assumption: str | None = None

    @property
    def total_lengths(self) -> np.ndarray:
        """Prompt plus output length of each sequence."""
        return self.prompt_lengths + self.output_lengths

    def describe(self) -> dict:
        """Size and length quantiles, for JSON output."""
        return {"workload": self.name, "workload_kind": self.kind, "n_sequences": int(len(self.output_lengths)),
                "prompt_len_median": float(np.median(self.prompt_lengths)),
                "output_len_median": float(np.median(self.output_lengths)),
                "total_len_max": int(self.total_lengths.max()),
                **({"workload_assumption": self.assumption} if self.assumption else {})}


def _baseline_folder(source: str | Path) -> Path | None:
    """The ``baseline/`` folder that ``source`` names (the folder or the directory holding it), if any."""
    path = Path(source)
    for folder in (path / BASELINE_FOLDER, path):
        if folder.is_dir() and folder.name == BASELINE_FOLDER and any(folder.glob("*.parquet")):
            return folder
    return None


def is_lengths_file(source: str | Path) -> bool:
    """Whether ``source`` names lengths (a lengths file by its suffix, or plain-decoding runs) rather than a task."""
    return (Path(source).suffix in LENGTH_FILE_SUFFIXES or str(source).startswith("hf:")
            or _baseline_folder(source) is not None)


def read_baseline_lengths(source: str | Path, temperature: float | None = None) -> pd.DataFrame:
    """Lengths of plain-decoding runs (``collect --baseline`` without a drafter), one temperature."""
    folder = _baseline_folder(source)
    if folder is None:
        raise InputError(f"no {BASELINE_FOLDER}/ folder of plain-decoding runs", path=source)
    try:
        frame = pd.concat([pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))], ignore_index=True)
    except (ValueError, OSError) as error:
        raise InputError(f"cannot read plain-decoding runs ({str(error).splitlines()[0]})", path=folder) from None
    if "temperature" not in frame.columns:
        raise InputError("missing column", path=folder, field="temperature")
    if temperature is not None:
        frame = select(frame, temperature=temperature)
        if frame.empty:
            raise InputError(f"no plain-decoding runs at temperature {temperature}", path=folder,
                             field="temperature")
    elif frame["temperature"].nunique() > 1:
        raise InputError(f"runs at temperatures {sorted(frame['temperature'].unique())}: output lengths differ "
                         "by temperature; choose one (--temperature where the command has it, else a lengths file "
                         "of one temperature)", path=folder, field="temperature")
    return _validated_lengths(frame.reset_index(drop=True), folder)


def _validated_lengths(frame: pd.DataFrame, path: Path | str) -> pd.DataFrame:
    if "output_len" in frame.columns and "prompt_len" not in frame.columns:
        frame = frame.assign(prompt_len=0)
        frame.attrs["assumption"] = NO_PROMPT_ASSUMPTION
    if "output_len" not in frame.columns:
        raise InputError(f"no output_len column (columns: {', '.join(map(str, frame.columns)) or 'none'}); a lengths "
                         "file has output_len and, optionally, prompt_len", path=path, field="output_len")
    if len(frame) > MAX_WORKLOAD_SEQUENCES:
        raise InputError(f"{len(frame):,} sequences; at most {MAX_WORKLOAD_SEQUENCES:,} are supported (give a sample "
                         "of the lengths)", path=path, field="output_len")
    for column in ("prompt_len", "output_len"):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"row {row + 1}: {frame[column].iloc[row]} is not a whole number of tokens", path=path,
                             field=column)
        frame[column] = values.astype(np.int64)
    if frame.empty:
        raise InputError("no rows", path=path, field="output_len")
    if (frame["output_len"] < 1).any() or (frame["prompt_len"] < 0).any():
        raise InputError("need output_len >= 1 and prompt_len >= 0 in every row", path=path, field="output_len")
    if frame["output_len"].max() > MAX_OUTPUT_LEN:
        raise InputError(f"output lengths above {MAX_OUTPUT_LEN} tokens are not supported", path=path,
                         field="output_len")
    if frame["prompt_len"].max() > MAX_PROMPT_LEN:
        raise InputError(f"prompt lengths above {MAX_PROMPT_LEN} tokens are not supported", path=path,
                         field="prompt_len")
    return frame


def _read_length_list(path: Path) -> pd.DataFrame:
    """One output length per line (blank lines skipped)."""
    values = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            if not line.strip().isdigit():
                raise InputError(f"line {number}: {line.strip()!r} is not a whole number of tokens", path=path,
                                 field="output_len")
            values.append(int(line))
    return pd.DataFrame({"output_len": values})


def read_lengths_file(path: str | Path) -> pd.DataFrame:
    """Read and validate a lengths file with ``prompt_len`` and ``output_len`` columns.

    A probe table (``specsim probe``) is read as its prompts' and the target's output lengths.

    Raises
    ------
    specsim.errors.InputError
        Missing or unreadable file, missing column, no rows, non-integer, non-finite or
        out-of-range lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such lengths file", path=path)
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
               ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".txt": _read_length_list}
    if path.suffix not in readers:
        raise InputError(f"lengths files end in {', '.join(LENGTH_FILE_SUFFIXES)}", path=path)
    try:
        frame = readers[path.suffix](path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read lengths ({str(error).splitlines()[0]})", path=path) from None
    from specsim.collect.probe import is_probe_table, probe_lengths

    if is_probe_table(frame) and len(frame):
        frame = probe_lengths(frame)  # a probe: its prompts and the target's outputs
    return _validated_lengths(frame, path)


def resolve_workload(source: str, sequences: pd.DataFrame | None = None, *, temperature: float | None = None,
                     option: str = "--workload", tokenizer: Callable[[], Any] | None = None) -> Workload:
    """The workload named by ``source``: a lengths file, or a task of ``sequences``.

    Parameters
    ----------
    source : str
        A lengths file path (by suffix) or a task name.
    sequences : pandas.DataFrame, optional
        Sequences table whose tasks may be named.
    temperature : float, optional
        Only sequences at this temperature (a task's lengths differ under sampling).
    option : str
        The command-line option that gave ``source`` (named in errors).
    tokenizer : callable, optional
        Returns the target's tokenizer, for text workloads (JSONL of prompts and responses,
        ``hf:`` datasets; :mod:`specsim.collect.text_workload`); without it they are refused.
    """
    from specsim.collect.text_workload import is_text_workload, text_workload_lengths

    if is_text_workload(source):
        if tokenizer is None:
            raise InputError("a text workload is counted in the target's tokens: give --tokenizer MODEL (the "
                             "target's alias, GGUF file, folder or hub id)", path=source, field="--tokenizer")
        frame = _validated_lengths(text_workload_lengths(source, tokenizer), source)
        return Workload(frame["prompt_len"].to_numpy(), frame["output_len"].to_numpy(), str(source), "text")
    if _baseline_folder(source) is not None:
        frame = read_baseline_lengths(source, temperature)
        return Workload(frame["prompt_len"].to_numpy(), frame["output_len"].to_numpy(), str(source),
                        "plain-decoding runs")
    if is_lengths_file(source):
        frame = read_lengths_file(source)
        return Workload(frame["prompt_len"].to_numpy(), frame["output_len"].to_numpy(), str(source), "file",
                        frame.attrs.get("assumption"))
    if sequences is None:
        raise InputError(f"{source!r} is not a lengths file (.csv, .parquet, .jsonl)", field=option)
    rows = select(sequences, task=source, temperature=temperature)
    if rows.empty and temperature is not None and source in set(sequences["task"]):
        held = sorted(sequences.loc[sequences["task"] == source, "temperature"].astype(float).unique())
        raise InputError(f"task {source!r} has no sequences at temperature {temperature:g} (its temperatures: "
                         f"{', '.join(f'{t:g}' for t in held)})", field=option)
    if rows.empty:
        tasks = sorted(sequences["task"].unique())
        raise InputError(f"no task {source!r} in the traces (tasks: {', '.join(tasks)}) and not a lengths file "
                         "(.csv, .parquet, .jsonl)", field=option)
    table = length_table(rows)
    return Workload(table["prompt_len"].to_numpy(), table["output_len"].to_numpy(), source, "task")

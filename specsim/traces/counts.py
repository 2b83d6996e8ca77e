"""Aggregate acceptance counts: the second level of acceptance data, all that serving engines expose.

A counts file is one Parquet table (schema :data:`COUNTS_SCHEMA`, version in its metadata) with
one row per source x task x drafter x temperature x gamma x draft index:

- ``draft_index >= 0``: a resolved position inside the draft; ``drafted`` steps drafted it,
  ``evaluated`` of them reached it (every earlier token accepted) and ``accepted`` accepted it.
  The conditional rate is ``accepted / evaluated``; vLLM's per-position rate is
  ``accepted / drafted``.
- ``draft_index = -1``: positions not resolved (the source only has totals): ``drafted`` and
  ``accepted`` tokens over ``steps`` verify steps. The per-index rate is then recovered under
  i.i.d. acceptance from tokens per step (Leviathan et al.'s closed form); every output built on
  such a row says so.

Per-token traces aggregate to the same table (:func:`counts_from_traces`), so the simulator reads
both levels through :func:`read_counts` and
:func:`specsim.simulate.acceptance.profile_from_counts_table`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from specsim.errors import InputError

__all__ = ["COUNTS_SCHEMA", "COUNTS_VERSION", "COUNTS_GROUP", "write_counts", "read_counts", "counts_from_traces",
           "summarize_counts"]

COUNTS_VERSION = "1"
#: Columns that identify one group of counts (one acceptance profile).
COUNTS_GROUP = ["source", "task", "drafter", "drafter_kind", "temperature", "gamma"]
COUNTS_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("drafter", pa.string(), nullable=False),
    pa.field("drafter_kind", pa.string(), nullable=False),
    pa.field("drafter_trained_on", pa.string(), nullable=True),
    pa.field("temperature", pa.float64(), nullable=True),
    pa.field("gamma", pa.int32(), nullable=False),
    pa.field("draft_index", pa.int32(), nullable=False),
    pa.field("steps", pa.int64(), nullable=False),
    pa.field("drafted", pa.int64(), nullable=False),
    pa.field("evaluated", pa.int64(), nullable=True),
    pa.field("accepted", pa.int64(), nullable=False),
    pa.field("output_tokens", pa.int64(), nullable=True),
    pa.field("sequences", pa.int64(), nullable=True),
], metadata={b"specsim.schema_version": COUNTS_VERSION.encode(), b"specsim.table": b"counts"})


def _validated(frame: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    def require(bad: np.ndarray, field: str, problem: str) -> None:
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"row {row + 1}: {problem}", path=path, field=field)

    if frame.empty:
        raise InputError("no rows of counts", path=path)
    resolved = frame["draft_index"].to_numpy() >= 0
    require(frame["gamma"].to_numpy() < 1, "gamma", "must be >= 1")
    require((frame["draft_index"].to_numpy() < -1) | (frame["draft_index"] >= frame["gamma"]).to_numpy(),
            "draft_index", "must be -1 (not resolved) or in [0, gamma)")
    for column in ("steps", "drafted", "accepted"):
        require(frame[column].to_numpy() < 0, column, "must be >= 0")
    evaluated = frame["evaluated"].to_numpy(dtype=float)
    require(resolved & ~(evaluated >= 0), "evaluated", "required (>= 0) where draft_index >= 0")
    require(resolved & (frame["accepted"].to_numpy() > evaluated), "accepted", "exceeds evaluated")
    require(resolved & (evaluated > frame["drafted"].to_numpy()), "evaluated", "exceeds drafted")
    require(~resolved & (frame["accepted"].to_numpy() > frame["drafted"].to_numpy()), "accepted", "exceeds drafted")
    require(~resolved & (frame["drafted"].to_numpy() > frame["steps"].to_numpy() * frame["gamma"].to_numpy()),
            "drafted", "exceeds steps x gamma")
    kinds = frame["drafter_kind"].isin(("generic", "finetuned", "untrained")).to_numpy()
    require(~kinds, "drafter_kind", "must be generic, finetuned or untrained")
    if frame.duplicated([*COUNTS_GROUP, "draft_index"]).any():
        require(frame.duplicated([*COUNTS_GROUP, "draft_index"]).to_numpy(), "draft_index", "duplicate row")
    return frame


def write_counts(frame: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a counts table atomically (temporary sibling, then rename)."""
    from specsim.traces.store import atomic_write_table

    path = Path(path)
    frame = _validated(frame.reset_index(drop=True), path)
    columns = {f.name: frame[f.name] if f.name in frame else None for f in COUNTS_SCHEMA}
    table = pa.table({name: pa.array(values, type=COUNTS_SCHEMA.field(name).type, from_pandas=True)
                      if values is not None else pa.nulls(len(frame), COUNTS_SCHEMA.field(name).type)
                      for name, values in columns.items()}, schema=COUNTS_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_table(table, path)
    return path


def read_counts(path: str | Path) -> pd.DataFrame:
    """Read and validate a counts file (schema, version, invariants); one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such counts file", path=path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"not a readable Parquet file ({error})", path=path) from None
    metadata = table.schema.metadata or {}
    if metadata.get(b"specsim.table") != b"counts":
        raise InputError("not a specsim counts file (no specsim.table = counts in its metadata)", path=path)
    if metadata.get(b"specsim.schema_version") != COUNTS_VERSION.encode():
        raise InputError(f"counts schema version {metadata.get(b'specsim.schema_version')!r}, expected "
                         f"{COUNTS_VERSION}", path=path)
    missing = [f.name for f in COUNTS_SCHEMA if f.name not in table.column_names]
    if missing:
        raise InputError("missing column", path=path, field=missing[0])
    return _validated(table.to_pandas(), path)


def counts_from_traces(tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
                       source: str = "specsim traces") -> pd.DataFrame:
    """Aggregate per-token traces into a counts table (resolved draft indices)."""
    group = ["task", "drafter", "drafter_kind", "temperature", "gamma"]
    by_index = tokens.groupby([*group, "draft_index"], observed=True).agg(
        drafted=("accepted", "size"), evaluated=("evaluated", "sum"), accepted=("accepted", "sum")).reset_index()
    per_group = steps.groupby(group, observed=True).agg(steps=("step", "size")).reset_index()
    lengths = sequences.groupby(group, observed=True).agg(
        output_tokens=("output_len", "sum"), sequences=("prompt_id", "size"),
        drafter_trained_on=("drafter_trained_on", "first")).reset_index()
    frame = by_index.merge(per_group, on=group).merge(lengths, on=group)
    frame.insert(0, "source", source)
    return frame


def summarize_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Per group: acceptance rate (accepted / drafted) and tokens per step with the bonus token."""
    rows = []
    for key, group in counts.groupby(COUNTS_GROUP, dropna=False, observed=True):
        steps = int(group["steps"].iloc[0])
        accepted, drafted = int(group["accepted"].sum()), int(group["drafted"].sum())
        rows.append({**dict(zip(COUNTS_GROUP, key, strict=True)), "steps": steps, "drafted": drafted,
                     "accepted": accepted, "acceptance_rate": accepted / drafted if drafted else float("nan"),
                     "tokens_per_step": (accepted + steps) / steps if steps else float("nan"),
                     "positions_resolved": bool((group["draft_index"] >= 0).all())})
    return pd.DataFrame(rows)

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
- ``position_start`` / ``position_stop`` (optional, version 2): the range ``[start, stop)`` of
  generated-token positions of the verify steps the row counts (the position of a step's first
  drafted token); empty when the source pools every position. ``steps`` repeats the group's
  number of verify steps on every row.

Optional length summaries travel in the file's metadata (``specsim.lengths``: per task, the
prompt and output length of every sequence), written where the source has them (specsim's own
traces; SGLang's ``prompt_tokens``/``completion_tokens``). The model needs them for its
length-divergence covariate (:func:`specsim.model.aggregate_counts_table`).

Per-token traces aggregate to the same table (:func:`counts_from_traces`), so the simulator and
the model read both levels through :func:`read_counts` and
:func:`specsim.simulate.acceptance.profile_from_counts_table`. Version 1 files (no position
range) are read as pooling every position.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from specsim.errors import InputError

__all__ = ["COUNTS_SCHEMA", "COUNTS_VERSION", "COUNTS_GROUP", "write_counts", "read_counts", "read_counts_lengths",
           "counts_from_traces", "summarize_counts", "counts_by_index", "with_optional_columns"]

COUNTS_VERSION = "2"
#: Versions :func:`read_counts` accepts (version 1 had no position range).
READABLE_VERSIONS = (b"1", b"2")
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
    pa.field("position_start", pa.int64(), nullable=True),
    pa.field("position_stop", pa.int64(), nullable=True),
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
    start, stop = frame["position_start"].to_numpy(dtype=float), frame["position_stop"].to_numpy(dtype=float)
    require(np.isnan(start) != np.isnan(stop), "position_stop", "position_start and position_stop go together")
    require(start < 0, "position_start", "must be >= 0")
    require(stop <= start, "position_stop", "must exceed position_start")
    key = [*COUNTS_GROUP, "draft_index", "position_start"]
    if frame.duplicated(key, keep=False).any():
        require(frame.duplicated(key).to_numpy(), "draft_index", "duplicate row (same group, draft index and "
                "position range)")
    return frame


def with_optional_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every optional column of :data:`COUNTS_SCHEMA` (empty where absent), categories as values."""
    for name in ("position_start", "position_stop", "evaluated", "drafter_trained_on", "temperature",
                 "output_tokens", "sequences"):
        if name not in frame.columns:
            frame = frame.assign(**{name: np.nan if name.startswith("position") else None})
    categorical = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return frame.astype({c: object for c in categorical}) if categorical else frame


def write_counts(frame: pd.DataFrame, path: str | Path, lengths: pd.DataFrame | None = None) -> Path:
    """Validate and write a counts table atomically (temporary sibling, then rename).

    Parameters
    ----------
    frame : pandas.DataFrame
        The counts (see the module docstring).
    path : path-like
    lengths : pandas.DataFrame, optional
        One row per sequence with ``task``, ``prompt_len``, ``output_len``: stored in the file's
        metadata as the tasks' length summaries.
    """
    from specsim.traces.store import atomic_write_table

    path = Path(path)
    frame = _validated(with_optional_columns(frame.reset_index(drop=True)), path)
    def column(field: pa.Field) -> pa.Array:
        values = frame[field.name]
        if pa.types.is_integer(field.type) and values.dtype.kind in "fO":
            values = pd.array(pd.to_numeric(values), dtype="Int64")  # whole numbers with gaps
        return pa.array(values, type=field.type, from_pandas=True)

    table = pa.table({f.name: column(f) for f in COUNTS_SCHEMA}, schema=COUNTS_SCHEMA)
    if lengths is not None:
        summary = {str(task): {"prompt_len": group["prompt_len"].astype(int).tolist(),
                               "output_len": group["output_len"].astype(int).tolist()}
                   for task, group in lengths.groupby("task")}
        table = table.replace_schema_metadata({**COUNTS_SCHEMA.metadata, b"specsim.lengths": json.dumps(summary)})
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
    version = metadata.get(b"specsim.schema_version")
    if version not in READABLE_VERSIONS:
        raise InputError(f"counts schema version {version!r}, expected one of "
                         f"{', '.join(v.decode() for v in READABLE_VERSIONS)}", path=path)
    optional = ("position_start", "position_stop") if version == b"1" else ()
    missing = [f.name for f in COUNTS_SCHEMA if f.name not in table.column_names and f.name not in optional]
    if missing:
        raise InputError("missing column", path=path, field=missing[0])
    return _validated(with_optional_columns(table.to_pandas()), path)


def read_counts_lengths(path: str | Path) -> pd.DataFrame | None:
    """The length summaries stored with a counts file (``task``, ``prompt_len``, ``output_len``), or None."""
    path = Path(path)
    try:
        metadata = pq.read_schema(path).metadata or {}
        stored = json.loads(metadata[b"specsim.lengths"]) if b"specsim.lengths" in metadata else None
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InputError(f"unreadable length summaries ({error})", path=path, field="specsim.lengths") from None
    if stored is None:
        return None
    try:
        frames = [pd.DataFrame({"task": task, "prompt_len": np.asarray(v["prompt_len"], dtype=np.int64),
                                "output_len": np.asarray(v["output_len"], dtype=np.int64)})
                  for task, v in stored.items()]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"malformed length summaries ({error})", path=path, field="specsim.lengths") from None
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["task", "prompt_len",
                                                                                      "output_len"])
    if ((frame["prompt_len"] < 0) | (frame["output_len"] < 1)).any():
        raise InputError("lengths must be prompt_len >= 0 and output_len >= 1", path=path, field="specsim.lengths")
    return frame


def counts_from_traces(tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
                       source: str = "specsim traces", position_edges: np.ndarray | None = None) -> pd.DataFrame:
    """Aggregate per-token traces into a counts table (resolved draft indices and position ranges).

    Parameters
    ----------
    tokens, steps, sequences : pandas.DataFrame
        Trace tables.
    source : str
    position_edges : numpy.ndarray, optional
        Interior edges of the position ranges (a step's first drafted position); default
        :data:`specsim.simulate.acceptance.DEFAULT_POSITION_EDGES`, the model's bins.
    """
    from specsim.simulate.acceptance import DEFAULT_POSITION_EDGES

    edges = np.asarray(DEFAULT_POSITION_EDGES if position_edges is None else position_edges, dtype=np.int64)
    group = ["task", "drafter", "drafter_kind", "temperature", "gamma"]
    step_position = (tokens["position"] - tokens["draft_index"]).to_numpy()
    bounds = np.concatenate([[0], edges, [np.iinfo(np.int64).max]])
    which = np.searchsorted(edges, step_position, side="right")
    tokens = tokens.assign(position_start=bounds[which], position_stop=bounds[which + 1])
    by_index = tokens.groupby([*group, "draft_index", "position_start", "position_stop"], observed=True).agg(
        drafted=("accepted", "size"), evaluated=("evaluated", "sum"), accepted=("accepted", "sum")).reset_index()
    # Ranges end where the group's data end: no step starts at or past its longest output.
    longest = sequences.groupby(group, observed=True)["output_len"].max().rename("longest").reset_index()
    by_index = by_index.merge(longest, on=group, how="left")
    end = by_index["longest"].fillna(np.iinfo(np.int64).max).astype(np.int64)
    by_index["position_stop"] = np.maximum(by_index["position_start"] + 1,
                                           np.minimum(by_index["position_stop"], end))
    by_index = by_index.drop(columns="longest")
    per_group = steps.groupby(group, observed=True).agg(steps=("step", "size")).reset_index()
    lengths = sequences.groupby(group, observed=True).agg(
        output_tokens=("output_len", "sum"), sequences=("prompt_id", "size"),
        drafter_trained_on=("drafter_trained_on", "first")).reset_index()
    frame = by_index.merge(per_group, on=group).merge(lengths, on=group)
    frame.insert(0, "source", source)
    return frame


def counts_by_index(group: pd.DataFrame) -> pd.DataFrame:
    """One group's resolved rows summed over position ranges: ``draft_index``, ``evaluated``, ``accepted``."""
    resolved = with_optional_columns(group[group["draft_index"] >= 0])
    return resolved.groupby("draft_index", as_index=False)[["drafted", "evaluated", "accepted"]].sum()


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

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
- ``offered`` / ``asked`` (optional, version 3; drafts of any length): steps asked for the
  index with every earlier index accepted, and steps asked for it with index ``d - 1``
  drafted. A lookup drafter proposes fewer tokens than asked, or none: ``evaluated /
  offered`` is the chance it drafts the index at all where that matters, ``drafted / asked``
  the law of the drafted count (the step's cost). Empty: the drafter drafts all it is asked.
  A row may then count steps that drafted nothing (``drafted`` 0).
- ``position_start`` / ``position_stop`` (optional, version 2): the range ``[start, stop)`` of
  generated-token positions of the verify steps the row counts (the position of a step's first
  drafted token); empty when the source pools every position. ``steps`` repeats the group's
  number of verify steps on every row.
- ``drafter_type`` (optional, version 4): ``model``, ``feature-head`` or ``lookup``
  (:data:`specsim.traces.schema.DRAFTER_TYPES`); empty where the source does not say.
- ``context_len_mean`` (optional, version 4): the mean context length (prompt plus generated
  tokens when the step started) over the row's evaluated tokens; the model places a row against
  its drafter's training window with it. ``prompts`` (optional, version 4): the sequences whose
  steps contributed an evaluated token to the row (the model's over-dispersion scales with it);
  ``sequences`` is the group's number of sequences, repeated on every row.

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
from specsim.traces.schema import DEFAULT_POSITION_EDGES, DRAFTER_TYPES

__all__ = ["COUNTS_SCHEMA", "COUNTS_VERSION", "COUNTS_GROUP", "write_counts", "read_counts", "read_counts_lengths",
           "counts_from_traces", "summarize_counts", "counts_by_index", "with_optional_columns", "index_counts",
           "check_counts", "MAX_GAMMA", "measured_tokens", "refuse_unmeasured"]

COUNTS_VERSION = "4"
#: The longest draft a counts table may hold (what ``--gamma`` allows everywhere).
MAX_GAMMA = 64
#: Versions :func:`read_counts` accepts (version 1 had no position range, 2 no offered/asked, 3 no
#: drafter type, context or prompts per row).
READABLE_VERSIONS = (b"1", b"2", b"3", b"4")
#: Columns each earlier version lacks (read as empty).
_ABSENT_IN = {b"1": ("position_start", "position_stop", "offered", "asked"), b"2": ("offered", "asked"), b"3": ()}
_VERSION_4_COLUMNS = ("drafter_type", "context_len_mean", "prompts")
#: Columns that identify one group of counts (one acceptance profile).
COUNTS_GROUP = ["source", "task", "drafter", "drafter_kind", "temperature", "gamma"]
COUNTS_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("drafter", pa.string(), nullable=False),
    pa.field("drafter_kind", pa.string(), nullable=False),
    pa.field("drafter_type", pa.string(), nullable=True),
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
    pa.field("offered", pa.int64(), nullable=True),
    pa.field("asked", pa.int64(), nullable=True),
    pa.field("output_tokens", pa.int64(), nullable=True),
    pa.field("sequences", pa.int64(), nullable=True),
    pa.field("context_len_mean", pa.float64(), nullable=True),
    pa.field("prompts", pa.int64(), nullable=True),
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
    require(frame["gamma"].to_numpy() > MAX_GAMMA, "gamma", f"must be <= {MAX_GAMMA} (no engine drafts more)")
    require((frame["draft_index"].to_numpy() < -1) | (frame["draft_index"] >= frame["gamma"]).to_numpy(),
            "draft_index", "must be -1 (not resolved) or in [0, gamma)")
    for column in ("steps", "drafted", "accepted"):
        require(frame[column].to_numpy() < 0, column, "must be >= 0")
    evaluated = frame["evaluated"].to_numpy(dtype=float)
    require(resolved & ~(evaluated >= 0), "evaluated", "required (>= 0) where draft_index >= 0")
    require(resolved & (frame["accepted"].to_numpy() > evaluated), "accepted", "exceeds evaluated")
    require(resolved & (evaluated > frame["drafted"].to_numpy()), "evaluated", "exceeds drafted")
    require(~resolved & (frame["accepted"].to_numpy() > frame["drafted"].to_numpy()), "accepted", "exceeds drafted")
    offered, asked = frame["offered"].to_numpy(dtype=float), frame["asked"].to_numpy(dtype=float)
    require(np.isnan(offered) != np.isnan(asked), "asked", "offered and asked go together")
    require(~resolved & ~np.isnan(offered), "offered", "needs a resolved draft index (>= 0)")
    require(offered < evaluated, "offered", "less than evaluated")
    require(asked < frame["drafted"].to_numpy(), "asked", "less than drafted")
    require(~resolved & (frame["drafted"].to_numpy() > frame["steps"].to_numpy() * frame["gamma"].to_numpy()),
            "drafted", "exceeds steps x gamma")
    kinds = frame["drafter_kind"].isin(("generic", "finetuned", "untrained")).to_numpy()
    require(~kinds, "drafter_kind", "must be generic, finetuned or untrained")
    types = frame["drafter_type"]
    require((types.notna() & ~types.isin(DRAFTER_TYPES)).to_numpy(), "drafter_type",
            f"must be one of {', '.join(DRAFTER_TYPES)} (or empty)")
    context = frame["context_len_mean"].to_numpy(dtype=float)
    require(~np.isnan(context) & ~(np.isfinite(context) & (context >= 1)), "context_len_mean",
            "must be a finite length >= 1 (or empty)")
    prompts = frame["prompts"].to_numpy(dtype=float)
    require(~np.isnan(prompts) & ~(prompts >= 0), "prompts", "must be >= 0 (or empty)")
    start, stop = frame["position_start"].to_numpy(dtype=float), frame["position_stop"].to_numpy(dtype=float)
    require(np.isnan(start) != np.isnan(stop), "position_stop", "position_start and position_stop go together")
    require(start < 0, "position_start", "must be >= 0")
    require(stop <= start, "position_stop", "must exceed position_start")
    key = [*COUNTS_GROUP, "draft_index", "position_start"]
    if frame.duplicated(key, keep=False).any():
        require(frame.duplicated(key).to_numpy(), "draft_index", "duplicate row (same group, draft index and "
                "position range)")
    return frame


def check_counts(frame: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """``frame`` with every optional column, checked against the counts contract; errors name ``path``."""
    return _validated(with_optional_columns(frame.reset_index(drop=True)), path)


def with_optional_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every optional column of :data:`COUNTS_SCHEMA` (empty where absent), categories as values."""
    for name in ("position_start", "position_stop", "evaluated", "drafter_trained_on", "temperature",
                 "output_tokens", "sequences", "offered", "asked", "drafter_type", "context_len_mean", "prompts"):
        if name not in frame.columns:
            numeric = name.startswith("position") or name in ("offered", "asked", "context_len_mean", "prompts")
            frame = frame.assign(**{name: np.nan if numeric else None})
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
    optional = (*_ABSENT_IN.get(version, ()), *(_VERSION_4_COLUMNS if version != b"4" else ()))
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


def token_step_positions(tokens: pd.DataFrame) -> np.ndarray:
    """Generated-token position at which each drafted token's step starts: ``position - draft_index``.

    The same position as :func:`step_positions` gives a step from the steps table; the position
    bins of counts, profiles and the model's cells are bins of it.
    """
    return (tokens["position"] - tokens["draft_index"]).to_numpy()


def step_positions(steps: pd.DataFrame) -> np.ndarray:
    """Generated-token position at which each step of a steps table starts (its first drafted token)."""
    from specsim.traces.schema import SEQUENCE_KEY

    frame = steps[[*SEQUENCE_KEY, "step", "n_emitted"]].reset_index(drop=True)
    order = np.argsort(frame["step"].to_numpy(), kind="stable")
    ordered = frame.iloc[order]
    cumulative = ordered.groupby(SEQUENCE_KEY, observed=True, sort=False, dropna=False)["n_emitted"].cumsum()
    positions = np.empty(len(frame), dtype=np.int64)
    positions[order] = cumulative.to_numpy(np.int64) - ordered["n_emitted"].to_numpy(np.int64)
    return positions


def step_index_counts(steps: pd.DataFrame, n_index: int, position_edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per draft index and position bin: the five counts of a profile, from the steps table alone.

    With ``A`` asked, ``D`` drafted and ``K`` accepted tokens of a step: ``drafted`` counts
    ``D > d``, ``evaluated`` ``D > d and K >= d``, ``accepted`` ``K > d``, ``offered``
    ``A > d and K >= d``, ``asked`` ``A > d and D >= d``. Indices past ``n_index - 1`` fold
    into the last, as :func:`specsim.simulate.acceptance.profile_from_tokens` folds tokens.
    Two more arrays describe the evaluated tokens: ``context_len_sum`` (their steps' context
    lengths summed; divide by ``evaluated`` for the mean) and ``prompts`` (distinct sequences
    among them).

    Returns
    -------
    dict of str to numpy.ndarray, each shape (n_index, len(position_edges) + 1)
    """
    from specsim.traces.schema import SEQUENCE_KEY

    edges = np.asarray(position_edges, dtype=float)
    shape = (n_index, len(edges) + 1)
    size = int(np.prod(shape))
    asked = steps["n_asked"].to_numpy(np.int64)[:, None]
    drafted = steps["n_drafted"].to_numpy(np.int64)[:, None]
    accepted = steps["n_accepted"].to_numpy(np.int64)[:, None]
    width = int(max(asked.max(initial=0), 1))
    index = np.arange(width)[None, :]
    bins = np.broadcast_to(np.searchsorted(edges, step_positions(steps), side="right")[:, None],
                           (len(steps), width))
    cell = np.ravel_multi_index((np.broadcast_to(np.minimum(index, n_index - 1), bins.shape), bins), shape)
    flat = cell.ravel()
    masks = _step_conditions(asked, drafted, accepted, index)
    counts = {name: np.bincount(flat, weights=mask.ravel().astype(float), minlength=size).reshape(shape)
              .astype(np.int64) for name, mask in masks.items()}
    evaluated = masks["evaluated"]
    context = np.broadcast_to(steps["context_len"].to_numpy(float)[:, None], evaluated.shape)
    counts["context_len_sum"] = np.bincount(cell[evaluated], weights=context[evaluated], minlength=size).reshape(shape)
    sequence = np.broadcast_to(pd.factorize(pd.MultiIndex.from_frame(steps[SEQUENCE_KEY].astype(str)))[0][:, None],
                               evaluated.shape)
    pairs = np.unique(np.column_stack([cell[evaluated], sequence[evaluated]]), axis=0)
    counts["prompts"] = np.bincount(pairs[:, 0], minlength=size).reshape(shape).astype(np.int64)
    return counts


def _step_conditions(asked: np.ndarray, drafted: np.ndarray, accepted: np.ndarray,
                     index: np.ndarray) -> dict[str, np.ndarray]:
    """Whether each step counts toward each draft index, for the five counts (broadcast arrays)."""
    return {
        "drafted": drafted > index, "evaluated": (drafted > index) & (accepted >= index),
        "accepted": accepted > index, "offered": (asked > index) & (accepted >= index),
        "asked": (asked > index) & (drafted >= index),
    }


def index_counts(asked: np.ndarray, drafted: np.ndarray, accepted: np.ndarray, n_index: int) -> dict[str, np.ndarray]:
    """The five counts of each draft index ``0 .. n_index - 1`` from per-step asked, drafted and accepted tokens.

    The same rule as :func:`step_index_counts` without position ranges: what an engine's
    per-step or per-request data give.

    Returns
    -------
    dict of str to numpy.ndarray of int64, each shape (n_index,)
    """
    index = np.arange(n_index)[None, :]
    a, d, k = (np.asarray(values, dtype=np.int64)[:, None] for values in (asked, drafted, accepted))
    return {name: mask.sum(axis=0).astype(np.int64) for name, mask in _step_conditions(a, d, k, index).items()}


def counts_from_traces(tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
                       source: str = "specsim traces", position_edges: np.ndarray | None = None) -> pd.DataFrame:
    """Aggregate traces into a counts table (resolved draft indices, position ranges, offered/asked).

    Every count comes from the steps table (a step's asked, drafted and accepted tokens
    determine its tokens' ``evaluated`` and ``accepted``); ``tokens`` is accepted for symmetry
    with the other readers and not needed.

    Parameters
    ----------
    tokens, steps, sequences : pandas.DataFrame
        Trace tables.
    source : str
    position_edges : numpy.ndarray, optional
        Interior edges of the position ranges (a step's first drafted position); default
        :data:`specsim.traces.schema.DEFAULT_POSITION_EDGES`, the model's bins.
    """
    edges = np.asarray(DEFAULT_POSITION_EDGES if position_edges is None else position_edges, dtype=np.int64)
    group = ["task", "drafter", "drafter_kind", "temperature", "gamma"]
    bounds = np.concatenate([[0], edges, [np.iinfo(np.int64).max]])
    longest = sequences.groupby(group, observed=True)["output_len"].max()
    lengths = sequences.groupby(group, observed=True).agg(
        output_tokens=("output_len", "sum"), sequences=("prompt_id", "size"),
        drafter_trained_on=("drafter_trained_on", "first"))
    types = steps.groupby(group, observed=True)["drafter_type"].first() if "drafter_type" in steps else None
    rows = []
    for key, cell in steps.groupby(group, observed=True):
        gamma = int(key[-1])
        counts = step_index_counts(cell, gamma, edges)
        context_sum, prompts = counts.pop("context_len_sum"), counts.pop("prompts")
        # Ranges end where the group's data end: no step starts at or past its longest output.
        end = int(longest.get(key, np.iinfo(np.int64).max))
        for d, b in zip(*np.nonzero(counts["asked"]), strict=True):
            start = int(bounds[b])
            evaluated = int(counts["evaluated"][d, b])
            rows.append({**dict(zip(group, key, strict=True)), "draft_index": int(d), "position_start": start,
                         "position_stop": max(start + 1, min(int(bounds[b + 1]), end)), "steps": len(cell),
                         **{name: int(values[d, b]) for name, values in counts.items()},
                         **lengths.loc[key].to_dict(),
                         "drafter_type": None if types is None else str(types.loc[key]),
                         "context_len_mean": float(context_sum[d, b]) / evaluated if evaluated else None,
                         "prompts": int(prompts[d, b])})
    frame = pd.DataFrame(rows)
    frame.insert(0, "source", source)
    return frame


def measured_tokens(rows: pd.DataFrame) -> int:
    """Drafted tokens the target judged in ``rows``: evaluated ones by draft index, drafted ones of pooled rows."""
    index = rows["draft_index"].to_numpy()
    evaluated = pd.to_numeric(rows["evaluated"], errors="coerce").fillna(0).to_numpy()
    drafted = pd.to_numeric(rows["drafted"], errors="coerce").fillna(0).to_numpy()
    return int(evaluated[index >= 0].sum() + drafted[index < 0].sum())


def refuse_unmeasured(counts: pd.DataFrame, by: tuple[str, ...] = tuple(COUNTS_GROUP), what: str = "counts") -> None:
    """:class:`InputError` naming the first group of ``counts`` in which no drafted token was judged.

    Such a group holds no acceptance at all: an answer from it would be the prior's alone.
    """
    for key, rows in counts.groupby(list(by), observed=True, dropna=False, sort=True):
        if measured_tokens(rows) == 0:
            named = ", ".join(f"{name} {value}" for name, value in zip(by, key if isinstance(key, tuple) else (key,),
                                                                        strict=True))
            raise InputError(f"{named}: 0 drafted tokens were evaluated, so nothing was measured (drop the group, or "
                             "import a window in which requests were served)", field=what)


def counts_by_index(group: pd.DataFrame) -> pd.DataFrame:
    """One group's resolved rows summed over position ranges: ``draft_index``, ``drafted``, ``evaluated``,
    ``accepted``, and ``offered``/``asked`` (null where the source has none).
    """
    resolved = with_optional_columns(group[group["draft_index"] >= 0])
    summed = resolved.groupby("draft_index", as_index=False)[["drafted", "evaluated", "accepted"]].sum()
    hazards = resolved.groupby("draft_index")[["offered", "asked"]].sum(min_count=1)
    return summed.join(hazards, on="draft_index")


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

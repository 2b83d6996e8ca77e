"""Invariants of the trace contract, checked vectorised over whole tables.

Each check raises :class:`specsim.errors.InputError` naming the shard file of the first row
that breaks it, the field and the problem, plus how many rows break it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.traces.schema import (
    DRAFTER_KINDS,
    DRAFTER_TYPES,
    FINISH_REASONS,
    SCHEDULES,
    SEQUENCE_KEY,
    STEP_KEY,
    TABLES,
)

if TYPE_CHECKING:
    from specsim.traces.store import Traces

__all__ = ["validate_traces", "MAX_TOKENS"]

#: Largest prompt, output or context length the contract accepts (tokens): longer than any model's
#: context today, small enough that no count overflows or makes a simulator allocate without bound.
MAX_TOKENS = 10_000_000

_PROBABILITY_COLUMNS = ("p_target", "q_draft", "accept_prob", "overlap", "overlap_t1")
# Rounding of float32 softmax outputs may leave probabilities a hair outside [0, 1].
_PROBABILITY_SLACK = 1e-6


def _file_of_row(root: Path, table_name: str, source: pd.DataFrame, row: int) -> Path:
    shard_rows = source.attrs.get("shard_rows")
    if not shard_rows:
        return root / table_name
    bounds = np.cumsum([count for _, count in shard_rows])
    shard = shard_rows[int(np.searchsorted(bounds, row, side="right"))][0]
    return root / table_name / f"{shard}.parquet"


def _require(
    root: Path,
    table_name: str,
    frame: pd.DataFrame,
    bad: pd.Series | np.ndarray,
    field: str,
    problem: str,
    source: pd.DataFrame | None = None,
) -> None:
    """Raise for the first row where ``bad`` holds; ``source`` is the table as read (its
    ``attrs`` map row numbers to shard files) when ``frame`` is derived from it.
    """
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    row_label = frame.index[first]
    row = int(row_label) if isinstance(row_label, (int, np.integer)) else first
    where = frame.iloc[first]
    ids = ", ".join(
        f"{key}={where[key]}" for key in ("prompt_id", "drafter", "gamma", "step") if key in where
    )
    raise InputError(
        f"{problem} ({int(bad.sum())} row(s); first: {ids})",
        path=_file_of_row(root, table_name, frame if source is None else source, row),
        field=field,
    )


def _check_keys(root: Path, name: str, frame: pd.DataFrame) -> None:
    _require(root, name, frame, ~frame["drafter_kind"].isin(DRAFTER_KINDS), "drafter_kind",
             f"must be one of {', '.join(DRAFTER_KINDS)}")
    _require(root, name, frame, ~frame["drafter_type"].isin(DRAFTER_TYPES), "drafter_type",
             f"must be one of {', '.join(DRAFTER_TYPES)}")
    temperature = frame["temperature"].to_numpy(float)
    _require(root, name, frame, ~(np.isfinite(temperature) & (temperature >= 0)), "temperature",
             "must be a finite number >= 0")
    _require(root, name, frame, frame["gamma"] < 1, "gamma", "must be >= 1")
    _require(root, name, frame, ~frame["schedule"].isin(SCHEDULES), "schedule",
             f"must be one of {', '.join(SCHEDULES)}")


def _check_tokens(root: Path, tokens: pd.DataFrame) -> None:
    _check_keys(root, "tokens", tokens)
    for column in _PROBABILITY_COLUMNS:
        values = tokens[column]
        present = values.notna() if column == "overlap_t1" else pd.Series(True, index=values.index)
        outside = present & ~values.between(-_PROBABILITY_SLACK, 1 + _PROBABILITY_SLACK)
        _require(root, "tokens", tokens, outside, column, "probability outside [0, 1]")
    _require(root, "tokens", tokens, tokens["accepted"] & ~tokens["evaluated"], "accepted",
             "accepted but not evaluated")
    _require(root, "tokens", tokens, (tokens["draft_index"] < 0) | (tokens["draft_index"] >= tokens["gamma"]),
             "draft_index", "must be in [0, gamma)")
    _require(root, "tokens", tokens, tokens["position"] < 0, "position", "must be >= 0")
    _require(root, "tokens", tokens, (tokens["context_len"] < 0) | (tokens["context_len"] > MAX_TOKENS),
             "context_len", f"must be in [0, {MAX_TOKENS}]")
    _require(root, "tokens", tokens, tokens["context_len"] < tokens["position"], "context_len",
             "must be at least the token's position among generated tokens")
    _require(root, "tokens", tokens, tokens.duplicated([*STEP_KEY, "draft_index"]).to_numpy(),
             "draft_index", "duplicate token row for the same step and draft index")


def _check_steps(root: Path, steps: pd.DataFrame) -> None:
    _check_keys(root, "steps", steps)
    _require(root, "steps", steps, steps["n_drafted"] < 0, "n_drafted", "must be >= 0")
    _require(root, "steps", steps, steps["n_drafted"] > steps["gamma"], "n_drafted", "exceeds gamma")
    _require(root, "steps", steps, (steps["n_asked"] < steps["n_drafted"]) | (steps["n_asked"] < 1)
             | (steps["n_asked"] > steps["gamma"]), "n_asked", "must be in [max(1, n_drafted), gamma]")
    _require(root, "steps", steps, (steps["n_accepted"] < 0) | (steps["n_accepted"] > steps["n_drafted"]),
             "n_accepted", "must be in [0, n_drafted]")
    _require(root, "steps", steps, (steps["n_emitted"] < 0) | (steps["n_emitted"] > steps["n_accepted"] + 1),
             "n_emitted", "must be in [0, n_accepted + 1]")
    for column in ("draft_s", "verify_s"):
        _require(root, "steps", steps, ~np.isfinite(steps[column].to_numpy(float)) | ~(steps[column] >= 0), column,
                 "must be finite and >= 0 seconds")
    _require(root, "steps", steps, (steps["context_len"] < 1) | (steps["context_len"] > MAX_TOKENS), "context_len",
             f"must be in [1, {MAX_TOKENS}]")
    _require(root, "steps", steps, steps.duplicated(STEP_KEY).to_numpy(), "step", "duplicate step")


def _check_sequences(root: Path, sequences: pd.DataFrame) -> None:
    _check_keys(root, "sequences", sequences)
    _require(root, "sequences", sequences, ~sequences["finish_reason"].isin(FINISH_REASONS),
             "finish_reason", f"must be one of {', '.join(FINISH_REASONS)}")
    for column, low in (("prompt_len", 1), ("output_len", 0)):
        values = sequences[column]
        _require(root, "sequences", sequences, (values < low) | (values > MAX_TOKENS), column,
                 f"must be in [{low}, {MAX_TOKENS}]")
    spec = sequences["spec_wall_s"].to_numpy(float)
    _require(root, "sequences", sequences, ~np.isfinite(spec) | ~(spec > 0), "spec_wall_s",
             "must be a finite number of seconds > 0")
    baseline = sequences["baseline_wall_s"]
    timed = baseline.notna().to_numpy()
    _require(root, "sequences", sequences, timed & ~(np.isfinite(baseline.to_numpy(float)) & (baseline > 0)),
             "baseline_wall_s", "must be a finite number of seconds > 0 (or null: no baseline)")
    baseline_tokens = sequences["baseline_tokens"]
    _require(root, "sequences", sequences, timed & ~(baseline_tokens.fillna(sequences["output_len"]) >= 1),
             "baseline_tokens", "must be >= 1 where a baseline was timed")
    n_ids = sequences["output_token_ids"].map(len).to_numpy()
    _require(root, "sequences", sequences, n_ids != sequences["output_len"].to_numpy(), "output_token_ids",
             "length differs from output_len")
    _require(root, "sequences", sequences, sequences.duplicated(SEQUENCE_KEY).to_numpy(), "prompt_id",
             "duplicate sequence (same run, prompt, drafter, gamma and temperature)")


def _check_tokens_against_steps(root: Path, tokens: pd.DataFrame, steps: pd.DataFrame) -> None:
    per_step = tokens.groupby(STEP_KEY, sort=False, observed=True).agg(
        token_rows=("accepted", "size"),
        accepted_rows=("accepted", "sum"),
        evaluated_rows=("evaluated", "sum"),
    )
    joined = steps.join(per_step, on=STEP_KEY, how="left")
    for column in ("token_rows", "accepted_rows", "evaluated_rows"):
        joined[column] = joined[column].fillna(0).astype(np.int64)
    _require(root, "steps", joined, joined["token_rows"] != joined["n_drafted"], "n_drafted",
             "differs from the number of token rows of the step", steps)
    _require(root, "steps", joined, joined["accepted_rows"] != joined["n_accepted"], "n_accepted",
             "differs from the accepted token rows of the step", steps)
    expected_evaluated = np.minimum(joined["n_accepted"] + 1, joined["n_drafted"])
    _require(root, "steps", joined, joined["evaluated_rows"] != expected_evaluated, "evaluated",
             "evaluated token rows must be the accepted ones plus the first rejection", steps)
    step_of_token = tokens.join(steps.set_index(STEP_KEY)["n_accepted"], on=STEP_KEY, how="left")
    _require(root, "tokens", step_of_token, step_of_token["n_accepted"].isna(), "step",
             "token row without a matching step row", tokens)
    _require(root, "tokens", step_of_token,
             step_of_token["accepted"] & (step_of_token["draft_index"] >= step_of_token["n_accepted"]),
             "accepted", "accepted tokens must be the first n_accepted of the draft", tokens)


def _check_steps_against_sequences(root: Path, steps: pd.DataFrame, sequences: pd.DataFrame) -> None:
    per_sequence = steps.groupby(SEQUENCE_KEY, sort=False, observed=True).agg(
        step_rows=("step", "size"), emitted=("n_emitted", "sum")
    )
    joined = sequences.join(per_sequence, on=SEQUENCE_KEY, how="left")
    joined[["step_rows", "emitted"]] = joined[["step_rows", "emitted"]].fillna(0).astype(np.int64)
    _require(root, "sequences", joined, joined["step_rows"] != joined["n_steps"], "n_steps",
             "differs from the number of step rows", sequences)
    _require(root, "sequences", joined, joined["emitted"] != joined["output_len"], "output_len",
             "differs from the sum of n_emitted over the steps", sequences)
    orphan = steps.join(sequences.set_index(SEQUENCE_KEY)["n_steps"], on=SEQUENCE_KEY, how="left")
    _require(root, "steps", orphan, orphan["n_steps"].isna(), "prompt_id", "step row without a sequence row", steps)


def validate_traces(traces: Traces, loaded: Iterable[str] = TABLES) -> None:
    """Check every invariant of the trace contract; raise on the first violation.

    Parameters
    ----------
    traces : Traces
        Tables as read by :func:`specsim.traces.store.read_traces`.
    loaded : iterable of str
        The tables that were loaded; invariants between tables are checked only when both
        are loaded.

    Raises
    ------
    specsim.errors.InputError
        With the shard file, the field and the problem of the first violation.

    Notes
    -----
    Checked: key columns (drafter kind, temperature >= 0, gamma >= 1), finite positive timings,
    lengths in ``[0, MAX_TOKENS]``, probabilities in
    [0, 1], ``accepted`` only where ``evaluated``, ``0 <= n_accepted <= n_drafted <= n_asked <= gamma``,
    ``n_emitted <= n_accepted + 1``, token rows per step equal ``n_drafted`` and their
    accepted/evaluated counts match the step, accepted tokens form a prefix of the draft,
    step rows per sequence equal ``n_steps`` and their emitted tokens sum to ``output_len``,
    no duplicate keys.
    """
    loaded = set(loaded)
    root = traces.root
    for name in loaded:
        frame = getattr(traces, name)
        missing = sorted(set(frame["run_id"].unique()) - set(traces.runs))
        if missing:
            raise InputError(f"run {missing[0]!r} has shards but no runs/{missing[0]}.json (run metadata)",
                             path=root / "runs", field="run_id")
    if "tokens" in loaded:
        _check_tokens(root, traces.tokens)
    if "steps" in loaded:
        _check_steps(root, traces.steps)
    if "sequences" in loaded:
        _check_sequences(root, traces.sequences)
    if {"tokens", "steps"} <= loaded:
        _check_tokens_against_steps(root, traces.tokens, traces.steps)
    if {"steps", "sequences"} <= loaded:
        _check_steps_against_sequences(root, traces.steps, traces.sequences)

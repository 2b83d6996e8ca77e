"""Validation of the simulator against measured speed-ups, cell by cell."""

from __future__ import annotations

import numpy as np
import pandas as pd

from specsim.analysis.metrics import measured_speedup
from specsim.errors import InputError
from specsim.simulate.acceptance import profile_from_tokens
from specsim.simulate.cost import CostKey, CostModel, fit_cost_models, normalise_run_timings
from specsim.simulate.exact import expected_workload
from specsim.traces.schema import DEFAULT_POSITION_EDGES, SEQUENCE_KEY

__all__ = ["validate_against_measured", "cost_transfer_errors", "cost_holdout_errors", "step_time_ratios",
           "VALIDATION_GROUP"]

#: Columns of one validation cell.
VALIDATION_GROUP = ["task", "drafter", "temperature", "gamma", "schedule"]


def validate_against_measured(
    tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
    position_edges: np.ndarray = DEFAULT_POSITION_EDGES, costs: dict | None = None,
) -> pd.DataFrame:
    """Predict each recorded cell's speed-up from its own acceptance, lengths and costs.

    One row per task x drafter x temperature x gamma x schedule with sequences that have a
    baseline: ``predicted_speedup`` (exact expectation; :func:`specsim.simulate.cost.fit_cost_models`),
    ``measured_speedup`` (:func:`specsim.analysis.metrics.measured_speedup`) and ``error_pct``
    (signed, relative to measured).
    Lengths are each sequence's own prompt and output length. ``costs`` (by drafter and
    temperature) replaces the costs fitted on these traces; cells without one are skipped.
    """
    rows = []
    costs = fit_cost_models(steps, sequences) if costs is None else costs
    group = VALIDATION_GROUP
    for key, cell in sequences[sequences["baseline_wall_s"].notna()].groupby(group, observed=True):
        conditions = dict(zip(group, key, strict=True))
        cell_tokens = tokens.merge(cell[SEQUENCE_KEY], on=SEQUENCE_KEY)
        cell_steps = steps.merge(cell[SEQUENCE_KEY], on=SEQUENCE_KEY)
        profile = profile_from_tokens(cell_tokens, gamma=int(conditions["gamma"]), position_edges=position_edges,
                                      steps=cell_steps)
        if (conditions["drafter"], conditions["temperature"]) not in costs:
            continue
        cost = costs[conditions["drafter"], conditions["temperature"]]
        predicted = expected_workload(profile, cost, int(conditions["gamma"]),
                                      cell["prompt_len"].to_numpy(), cell["output_len"].to_numpy())
        measured = measured_speedup(cell)
        rows.append({**conditions, "sequences": len(cell), "predicted_speedup": predicted.speedup,
                     "measured_speedup": measured,
                     "error_pct": 100 * (predicted.speedup - measured) / measured})
    if not rows:
        raise InputError("no sequences with baseline timings to validate against", field="baseline_wall_s")
    return pd.DataFrame(rows)


def cost_transfer_errors(tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
                         position_edges: np.ndarray = DEFAULT_POSITION_EDGES) -> pd.DataFrame:
    """How far costs fitted on other collection runs miss a run: leave one run out.

    A prediction's costs come from the runs that were traced, while the workload will run on
    another day, another load, another process: the costs move between runs. For each run, the
    cost models are fitted on the other runs and the run's cells (its own acceptance and lengths,
    drafters and draft lengths the other runs also timed) are simulated under them. Returns one row
    per run x drafter (each drafter has its own costs, and they drift apart): ``cells`` and
    ``log_error_mean``, the mean of log(predicted / measured speed-up) over its cells.
    """
    rows = []
    for run, run_sequences in sequences.groupby("run_id", observed=True):
        others = sequences["run_id"] != run
        other_steps = steps[steps["run_id"] != run]
        if not others.any() or other_steps.empty:
            continue
        costs = fit_cost_models(other_steps, sequences[others])
        # Steps carry their drafter, temperature and gamma: no join with the sequences is needed.
        covered = other_steps.groupby(["drafter", "temperature"], observed=True)["gamma"].unique()
        keep = run_sequences[[
            (d, t) in covered.index and g in set(covered.loc[(d, t)])
            for d, t, g in zip(run_sequences["drafter"], run_sequences["temperature"], run_sequences["gamma"],
                               strict=True)]]
        if keep.empty or keep["baseline_wall_s"].notna().sum() == 0:
            continue
        try:
            cells = validate_against_measured(tokens[tokens["run_id"] == run], steps[steps["run_id"] == run], keep,
                                              position_edges, costs=costs)
        except InputError:  # no timed cell left to compare
            continue
        cells = cells.assign(log_error=np.log(cells["predicted_speedup"] / cells["measured_speedup"]))
        for drafter, group in cells.groupby("drafter"):
            rows.append({"run_id": run, "drafter": drafter, "cells": len(group),
                         "log_error_mean": float(group["log_error"].mean())})
    return pd.DataFrame(rows, columns=["run_id", "drafter", "cells", "log_error_mean"])


def cost_holdout_errors(tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
                        position_edges: np.ndarray = DEFAULT_POSITION_EDGES) -> pd.DataFrame:
    """How far the costs of the other tasks alone miss a held-out task, with its own acceptance.

    A leave-one-task-out prediction carries two errors: the acceptance the model predicts for the
    held-out task, and the costs, fitted on the kept tasks' steps and extrapolated to the held-out
    lengths. This separates them: for each task, the cost models are fitted without it, and its
    cells are simulated from their own measured acceptance and lengths under those costs (the
    cost error alone; :func:`validate_against_measured` gives the same cells under their own costs).

    Returns
    -------
    pandas.DataFrame
        The rows of :func:`validate_against_measured` for every task's cells whose drafter and
        temperature the other tasks also timed, with ``held_out_task``.
    """
    frames = []
    for task in sorted(sequences["task"].dropna().unique()):
        kept = sequences["task"] != task
        kept_steps = steps[steps["task"] != task]
        if not kept.any() or kept_steps.empty:
            continue
        costs = fit_cost_models(kept_steps, sequences[kept])
        try:
            cells = validate_against_measured(tokens[tokens["task"] == task], steps[steps["task"] == task],
                                              sequences[~kept], position_edges, costs=costs)
        except InputError:  # none of the task's timed cells has a drafter the other tasks timed
            continue
        frames.append(cells.assign(held_out_task=task))
    if not frames:
        raise InputError("no task's cells can be simulated under the other tasks' costs", field="task")
    return pd.concat(frames, ignore_index=True)


def step_time_ratios(steps: pd.DataFrame, sequences: pd.DataFrame,
                     costs: dict[CostKey, CostModel] | None = None) -> pd.DataFrame:
    """Measured over fitted draft-verify seconds, per drafter, temperature and task: where the cost model misses.

    The cost model is linear in the context (:mod:`specsim.simulate.cost`). A per-drafter mean error
    hides a context range that one line misses: on the length experiment's CPU timings, while runs
    were scaled to one time per token, the separate-model drafters' steps at 2,048 tokens of context
    took 0.89-0.93 of the fitted time; scaled to the plain time's trend, every drafter and regime is
    within 0.93-1.04. The steps are first put on one time scale across runs, as the fit puts them
    (:func:`specsim.simulate.cost.normalise_run_timings`).

    Parameters
    ----------
    steps, sequences : pandas.DataFrame
        The traces' tables.
    costs : dict, optional
        Cost models by (drafter, temperature); default :func:`specsim.simulate.cost.fit_cost_models` of
        these traces. Groups without one are left out.

    Returns
    -------
    pandas.DataFrame
        One row per drafter x temperature x task: ``steps``, ``context_mean`` and ``measured_over_fitted``
        (the sum of measured ``draft_s + verify_s`` over the sum of the model's step seconds).
    """
    costs = fit_cost_models(steps, sequences) if costs is None else costs
    scaled, _ = normalise_run_timings(steps, sequences)
    rows = []
    for (drafter, temperature, task), group in scaled.groupby(["drafter", "temperature", "task"], observed=True):
        cost = costs.get((str(drafter), float(temperature)))
        if cost is None:
            continue
        fitted = cost.step_seconds(group["n_drafted"].to_numpy(float), group["context_len"].to_numpy(float))
        measured = (group["draft_s"] + group["verify_s"]).to_numpy(float)
        rows.append({"drafter": str(drafter), "temperature": float(temperature), "task": str(task),
                     "steps": int(len(group)), "context_mean": float(group["context_len"].mean()),
                     "measured_over_fitted": float(measured.sum() / fitted.sum())})
    return pd.DataFrame(rows, columns=["drafter", "temperature", "task", "steps", "context_mean",
                                       "measured_over_fitted"])

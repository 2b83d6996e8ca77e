"""Validation of the simulator against measured speed-ups, cell by cell."""

from __future__ import annotations

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.simulate.acceptance import DEFAULT_POSITION_EDGES, profile_from_tokens
from specsim.simulate.cost import fit_cost_models
from specsim.simulate.exact import expected_workload
from specsim.traces.metrics import measured_speedup
from specsim.traces.schema import SEQUENCE_KEY

__all__ = ["validate_against_measured", "VALIDATION_GROUP"]

#: Columns of one validation cell.
VALIDATION_GROUP = ["task", "drafter", "temperature", "gamma", "schedule"]


def validate_against_measured(
    tokens: pd.DataFrame, steps: pd.DataFrame, sequences: pd.DataFrame,
    position_edges: np.ndarray = DEFAULT_POSITION_EDGES,
) -> pd.DataFrame:
    """Predict each recorded cell's speed-up from its own acceptance, lengths and costs.

    One row per task x drafter x temperature x gamma x schedule with sequences that have a
    baseline: ``predicted_speedup`` (exact expectation; :func:`specsim.simulate.cost.fit_cost_models`),
    ``measured_speedup`` (:func:`specsim.traces.metrics.measured_speedup`) and ``error_pct``
    (signed, relative to measured).
    Lengths are each sequence's own prompt and output length.
    """
    rows = []
    costs = fit_cost_models(steps, sequences)
    group = VALIDATION_GROUP
    for key, cell in sequences[sequences["baseline_wall_s"].notna()].groupby(group, observed=True):
        conditions = dict(zip(group, key, strict=True))
        cell_tokens = tokens.merge(cell[SEQUENCE_KEY], on=SEQUENCE_KEY)
        profile = profile_from_tokens(cell_tokens, gamma=int(conditions["gamma"]), position_edges=position_edges)
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

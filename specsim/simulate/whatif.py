"""What-if: the acceptance behaviour of one task combined with the lengths of another.

A length shift is studied by keeping a drafter's measured acceptance (by draft index and
sequence position, from one task) and decoding a workload whose prompt and output lengths
come from another task or a file, with a cost model chosen by the caller.
Uncertainty comes from a bootstrap over recorded sequences: the acceptance task's
sequences (refitting the profile) and the workload's sequences (resampling lengths).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from specsim.glossary import INTERVAL_LEVEL, TOKENS_PER_STEP_CONVENTION, central_quantiles
from specsim.simulate.acceptance import (
    AcceptanceProfile,
    Extrapolation,
    extrapolation,
    profile_from_tokens,
)
from specsim.simulate.cost import CostModel
from specsim.simulate.exact import expected_workload
from specsim.simulate.montecarlo import simulate_workload
from specsim.traces.schema import DEFAULT_POSITION_EDGES

__all__ = ["WhatIfResult", "what_if"]


@dataclass(frozen=True)
class WhatIfResult:
    """Predicted speed-up of a workload, with intervals.

    Attributes
    ----------
    speedup : float
        Exact expected speed-up (ratio of totals) from the point estimates.
    speedup_low, speedup_high : float
        Bootstrap interval of the expected speed-up over recorded sequences. It does not
        widen for extrapolation: positions past the measured ones reuse the last position
        bin's acceptance, and ``extrapolation`` says how much of the workload lies there
        (``specsim predict`` widens its interval instead).
    tokens_per_step : float
        Expected tokens per step, bonus included.
    sequence_speedup_quantiles : dict
        5%, 50%, 95% quantiles of per-sequence speed-up (Monte Carlo).
    inputs : dict
        What was combined.
    """

    speedup: float
    speedup_low: float
    speedup_high: float
    tokens_per_step: float
    sequence_speedup_quantiles: dict
    level: float
    inputs: dict = field(default_factory=dict)
    extrapolation: Extrapolation | None = None

    def to_dict(self) -> dict:
        """Plain dictionary for JSON."""
        return {"speedup": self.speedup, "speedup_low": self.speedup_low, "speedup_high": self.speedup_high,
                "interval_level": self.level, "speedup_estimator": "ratio of totals",
                "tokens_per_step": self.tokens_per_step,
                "tokens_per_step_convention": TOKENS_PER_STEP_CONVENTION,
                "sequence_speedup_quantiles": self.sequence_speedup_quantiles, **self.inputs,
                **(self.extrapolation.to_dict() if self.extrapolation else {})}


def _profile_for(tokens: pd.DataFrame, gamma: int, edges: np.ndarray,
                 steps: pd.DataFrame | None = None) -> AcceptanceProfile:
    """The measured draft indices only: past the longest measured draft, the last index's rate is used
    (:meth:`AcceptanceProfile.rates_at`), never an empty row's prior.
    """
    measured = int(tokens["draft_index"].max()) + 1
    return profile_from_tokens(tokens, gamma=min(gamma, measured), position_edges=edges, steps=steps)


def what_if(
    tokens: pd.DataFrame,
    cost: CostModel,
    gamma: int,
    prompt_lengths: np.ndarray,
    output_lengths: np.ndarray,
    *,
    position_edges: np.ndarray = DEFAULT_POSITION_EDGES,
    level: float = INTERVAL_LEVEL,
    n_resamples: int = 200,
    rng: np.random.Generator | int | None = None,
    inputs: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    steps: pd.DataFrame | None = None,
) -> WhatIfResult:
    """Predict the speed-up of decoding a workload with the acceptance seen in ``tokens``.

    Parameters
    ----------
    tokens : pandas.DataFrame
        Tokens of the acceptance source (one task x drafter x temperature, any gamma).
    cost : CostModel
        Fitted costs of the drafter and target.
    gamma : int
        Draft length to predict for.
    prompt_lengths, output_lengths : numpy.ndarray, shape (n_sequences,)
        The workload.
    position_edges : numpy.ndarray
        Position bins of the acceptance profile.
    level : float
        Coverage of the bootstrap interval.
    n_resamples : int
        Bootstrap resamples (each refits the profile and resamples lengths).
    rng : numpy.random.Generator or int, optional
    inputs : dict, optional
        Echoed into the result (names of what was combined).
    progress : callable, optional
        Called as ``progress(done, n_resamples)`` after each resample.
    steps : pandas.DataFrame, optional
        The same sequences' steps: the profile then also learns how often the drafter drafts
        less than asked (a lookup drafter); bootstrap resamples take a sequence's steps with its tokens.
    """
    rng = np.random.default_rng(rng)
    prompt_lengths = np.asarray(prompt_lengths)
    output_lengths = np.asarray(output_lengths)
    profile = _profile_for(tokens, gamma, position_edges, steps)
    point = expected_workload(profile, cost, gamma, prompt_lengths, output_lengths)
    simulated = simulate_workload(profile, cost, gamma, np.repeat(prompt_lengths, 20), np.repeat(output_lengths, 20),
                                  rng=rng)
    by_sequence = ["run_id", "prompt_id"]
    token_groups = dict(list(tokens.groupby(by_sequence, observed=True, sort=False)))
    # With steps, a sequence whose steps all drafted nothing still counts (it has no tokens).
    step_groups = None if steps is None else dict(list(steps.groupby(by_sequence, observed=True, sort=False)))
    keys = list(token_groups if step_groups is None else step_groups)
    empty = tokens.iloc[:0]
    resampled = []
    for done in range(n_resamples):
        picks = rng.integers(0, len(keys), len(keys))
        # Each resampled copy is its own sequence (step positions are counted by sequence).
        boot_steps = None if step_groups is None else pd.concat(
            [step_groups[keys[i]].assign(run_id=str(j)) for j, i in enumerate(picks)])
        boot_tokens = pd.concat([token_groups.get(keys[i], empty) for i in picks])
        if boot_tokens.empty:
            boot_tokens = tokens
        boot_profile = _profile_for(boot_tokens, gamma, position_edges, boot_steps)
        rows = rng.integers(0, len(output_lengths), len(output_lengths))
        resampled.append(expected_workload(boot_profile, cost, gamma, prompt_lengths[rows],
                                           output_lengths[rows]).speedup)
        if progress is not None:
            progress(done + 1, n_resamples)
    low, high = np.quantile(resampled, central_quantiles(level))
    quantiles = np.quantile(simulated.sequence_speedups, [0.05, 0.5, 0.95])
    return WhatIfResult(
        speedup=point.speedup, speedup_low=float(low), speedup_high=float(high),
        tokens_per_step=point.tokens_per_step,
        sequence_speedup_quantiles={"q05": float(quantiles[0]), "q50": float(quantiles[1]),
                                    "q95": float(quantiles[2])},
        level=level, inputs={"gamma": int(gamma), **(inputs or {})},
        extrapolation=extrapolation(int(tokens["position"].max()), output_lengths),
    )

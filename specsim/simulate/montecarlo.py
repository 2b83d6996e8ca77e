"""Monte Carlo simulation of speculative decoding, vectorised over sequences.

Simulates the same process as :mod:`specsim.simulate.exact` step by step for many
sequences at once (drafts of any length by their effective rates, each step at its bin's
expected cost over the drafted count) (one array operation per step for all sequences still running), giving
the distribution of per-sequence speculative time, steps and speed-up, not only their
expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsim.simulate.acceptance import AcceptanceProfile
from specsim.simulate.cost import CostModel
from specsim.simulate.exact import _lengths, step_coefficients_by_bin

__all__ = ["MonteCarloResult", "simulate_workload"]


@dataclass(frozen=True)
class MonteCarloResult:
    """Per-sequence outcomes of one simulation.

    Attributes
    ----------
    spec_s, baseline_s, steps : numpy.ndarray, shape (n_sequences,)
        Simulated speculative time, plain time and number of steps.
    """

    spec_s: np.ndarray
    baseline_s: np.ndarray
    steps: np.ndarray

    @property
    def speedup(self) -> float:
        """Ratio of totals over the simulated sequences."""
        return float(self.baseline_s.sum() / self.spec_s.sum())

    @property
    def sequence_speedups(self) -> np.ndarray:
        """Per-sequence speed-up, shape (n_sequences,)."""
        return self.baseline_s / self.spec_s


def simulate_workload(
    profile: AcceptanceProfile,
    cost: CostModel,
    gamma: int,
    prompt_lengths: np.ndarray,
    output_lengths: np.ndarray,
    *,
    rng: np.random.Generator | int | None = None,
) -> MonteCarloResult:
    """Simulate every sequence of a workload once.

    Parameters
    ----------
    profile : AcceptanceProfile
    cost : CostModel
    gamma : int
        Draft length.
    prompt_lengths, output_lengths : numpy.ndarray, shape (n_sequences,)
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    MonteCarloResult
    """
    rng = np.random.default_rng(rng)
    prompt, output = _lengths(prompt_lengths, output_lengths)
    # Per bin, a step's expected cost over its drafted count (one value when drafts are full).
    bin_base, bin_per_context = step_coefficients_by_bin(profile, cost, gamma)
    n = len(output)
    position = np.zeros(n, dtype=np.int64)
    steps = np.zeros(n, dtype=np.int64)
    base_sum = np.zeros(n)  # sum over steps of the step's base cost
    rate_sum = np.zeros(n)  # sum over steps of the per-context cost
    context_sum = np.zeros(n)  # sum over steps of per-context cost x the generated position at the start
    active = np.arange(n)
    # Effective rates of each (position bin, draft index), looked up by bin for the running sequences.
    table = profile.effective_table(gamma).astype(np.float32)  # (n_bins, gamma)
    while active.size:
        start = position[active]
        which = profile.position_bin(start)
        rates = table[which]
        accepted = rng.random(rates.shape, dtype=np.float32) < rates
        n_accepted = np.cumprod(accepted, axis=1, dtype=np.int8).sum(axis=1, dtype=np.int64)
        base_sum[active] += bin_base[which]
        rate_sum[active] += bin_per_context[which]
        context_sum[active] += bin_per_context[which] * start
        steps[active] += 1
        position[active] = start + n_accepted + 1
        active = active[position[active] < output[active]]
    spec = cost.spec_overhead_seconds(prompt) + base_sum + prompt * rate_sum + context_sum
    return MonteCarloResult(spec_s=spec, baseline_s=cost.baseline_seconds(prompt, output), steps=steps)

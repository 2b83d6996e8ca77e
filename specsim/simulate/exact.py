"""Exact expected speed-up of a workload by dynamic programming over positions.

The process: a sequence of output length ``L`` is decoded in steps; a step starting at
generated position ``n`` drafts ``gamma`` tokens, accepts the first ``k`` with probability
``prod_{d<k} a_d(n) (1 - a_k(n))`` (all ``gamma`` with ``prod a_d(n)``) and moves to
``n + k + 1``. Because the process does not depend on ``L`` until it passes ``L``, one
forward pass gives the probability ``v[n]`` that some step starts at ``n``, and for every
``L`` at once

    E[steps(L)] = sum_{n<L} v[n]
    E[time(p, L)] = overhead(p) + sum_{n<L} v[n] * (A(n) + B(n) (p + n))

with the step cost ``A + B x`` at context ``x`` (:meth:`CostModel.step_coefficients`). A
drafter that may draft fewer tokens than asked accepts with the effective rates
``continuation * rates`` and costs, in position bin ``b``, the mean of ``A`` and ``B`` over
the law of its drafted count (:meth:`AcceptanceProfile.draft_length_probs`); a fixed-length
drafter has ``A`` and ``B`` of ``gamma`` tokens everywhere. No
sampling is involved. The workload speed-up is a ratio of totals: summed plain-decoding time
over summed expected speculative time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsim.errors import InputError
from specsim.glossary import TOKENS_PER_STEP_CONVENTION
from specsim.simulate.acceptance import AcceptanceProfile
from specsim.simulate.cost import CostModel

__all__ = ["step_start_probabilities", "step_coefficients_by_bin", "WorkloadPrediction", "expected_workload",
           "expected_grid"]


def accepted_count_probabilities(rates: np.ndarray) -> np.ndarray:
    """Probability of accepting exactly ``k`` of ``gamma`` drafted tokens.

    Parameters
    ----------
    rates : numpy.ndarray, shape (..., gamma)
        Conditional acceptance per draft index.

    Returns
    -------
    numpy.ndarray, shape (..., gamma + 1)
    """
    rates = np.asarray(rates, dtype=float)
    survive = np.concatenate([np.ones(rates.shape[:-1] + (1,)), np.cumprod(rates, axis=-1)], axis=-1)
    stop = np.concatenate([1 - rates, np.ones(rates.shape[:-1] + (1,))], axis=-1)
    return survive * stop


def step_coefficients_by_bin(profile: AcceptanceProfile, cost: CostModel, gamma: int
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Expected ``(base, per_context)`` of a step asked for ``gamma`` tokens, by position bin.

    The mean of :meth:`CostModel.step_coefficients` over the drafted count's law.

    Returns
    -------
    base, per_context : numpy.ndarray, shape (n_position_bins,)
    """
    coefficients = np.array([cost.step_coefficients(d) for d in range(gamma + 1)])  # (gamma + 1, 2)
    expected = profile.draft_length_probs(gamma) @ coefficients
    return expected[:, 0], expected[:, 1]


def step_start_probabilities(profile: AcceptanceProfile, gamma: int, max_length: int) -> np.ndarray:
    """Probability that a step starts at each generated position ``0 .. max_length - 1``.

    Parameters
    ----------
    profile : AcceptanceProfile
    gamma : int
        Draft length.
    max_length : int
        Longest output length of interest.

    Returns
    -------
    numpy.ndarray, shape (max_length,)
    """
    if gamma < 1:
        raise InputError("draft length must be >= 1", field="gamma")
    positions = np.arange(max_length)
    jump = accepted_count_probabilities(profile.effective_rates_at(positions, gamma))  # (L, gamma + 1)
    visits = np.zeros(max_length + gamma + 1)
    visits[0] = 1.0
    # Positions in one bin share their jump law, so within a run of equal rows the recursion
    # is a linear filter; a plain loop over positions is simple and fast enough (O(L gamma)).
    for n in range(max_length):
        visits[n + 1 : n + gamma + 2] += visits[n] * jump[n]
    return visits[:max_length]


@dataclass(frozen=True)
class WorkloadPrediction:
    """Expected speculative-decoding figures of a workload at one draft length.

    Attributes
    ----------
    gamma : int
    speedup : float
        Ratio of totals: summed plain time over summed expected speculative time.
    tokens_per_step : float
        Generated tokens over expected steps (bonus token included, as vLLM/Spec-Bench).
    spec_s, baseline_s : numpy.ndarray, shape (n_sequences,)
        Expected speculative and plain time of each sequence.
    steps : numpy.ndarray, shape (n_sequences,)
        Expected steps of each sequence.
    """

    gamma: int
    speedup: float
    tokens_per_step: float
    spec_s: np.ndarray
    baseline_s: np.ndarray
    steps: np.ndarray

    def to_dict(self) -> dict:
        """Headline figures as plain values."""
        return {"gamma": self.gamma, "speedup": self.speedup, "tokens_per_step": self.tokens_per_step,
                "tokens_per_step_convention": TOKENS_PER_STEP_CONVENTION,
                "n_sequences": int(len(self.spec_s)), "spec_s": float(self.spec_s.sum()),
                "baseline_s": float(self.baseline_s.sum())}


def _lengths(prompt_lengths: np.ndarray, output_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prompt = np.asarray(prompt_lengths, dtype=float).reshape(-1)
    output = np.asarray(output_lengths).reshape(-1)
    if prompt.shape != output.shape or not len(output):
        raise InputError("prompt and output lengths must be non-empty and of equal size", field="lengths")
    if np.any(output < 1) or np.any(prompt < 0):
        raise InputError("output lengths must be >= 1 and prompt lengths >= 0", field="lengths")
    return prompt, output.astype(int)


def expected_workload(
    profile: AcceptanceProfile,
    cost: CostModel,
    gamma: int,
    prompt_lengths: np.ndarray,
    output_lengths: np.ndarray,
    weights: np.ndarray | None = None,
) -> WorkloadPrediction:
    """Exact expected speed-up of a workload of sequences.

    Parameters
    ----------
    profile : AcceptanceProfile
        Conditional acceptance by draft index and position.
    cost : CostModel
        Step and plain-decoding costs.
    gamma : int
        Draft length.
    prompt_lengths, output_lengths : numpy.ndarray, shape (n_sequences,)
        The workload (repeat a sequence to weight it).
    weights : numpy.ndarray, shape (n_sequences,), optional
        How many sequences each row stands for (a workload collapsed to its distinct pairs);
        the speed-up and tokens per step are then those of the expanded workload.

    Returns
    -------
    WorkloadPrediction
    """
    prompt, output = _lengths(prompt_lengths, output_lengths)
    visits = step_start_probabilities(profile, gamma, int(output.max()))
    cumulative_visits = np.cumsum(visits)
    cumulative_positions = np.cumsum(visits * np.arange(len(visits)))
    steps = cumulative_visits[output - 1]
    if profile.full_drafts:
        base, per_context = cost.step_coefficients(gamma)
        spec = (cost.spec_overhead_seconds(prompt) + base * steps
                + per_context * (prompt * steps + cumulative_positions[output - 1]))
    else:
        bin_base, bin_per_context = step_coefficients_by_bin(profile, cost, gamma)
        which = profile.position_bin(np.arange(len(visits)))
        base_n, per_context_n = bin_base[which], bin_per_context[which]
        cumulative_base = np.cumsum(visits * base_n)
        cumulative_rate = np.cumsum(visits * per_context_n)
        cumulative_context = np.cumsum(visits * per_context_n * np.arange(len(visits)))
        spec = (cost.spec_overhead_seconds(prompt) + cumulative_base[output - 1]
                + prompt * cumulative_rate[output - 1] + cumulative_context[output - 1])
    baseline = cost.baseline_seconds(prompt, output)
    weight = np.ones(len(output)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if weight.shape != output.shape or not np.all(np.isfinite(weight) & (weight >= 0)) or weight.sum() <= 0:
        raise InputError("weights must be finite, >= 0, not all 0, one per sequence", field="weights")
    return WorkloadPrediction(
        gamma=int(gamma), speedup=float(np.dot(weight, baseline) / np.dot(weight, spec)),
        tokens_per_step=float(np.dot(weight, output) / np.dot(weight, steps)), spec_s=spec, baseline_s=baseline,
        steps=steps,
    )


def expected_grid(
    profile: AcceptanceProfile, cost: CostModel, gammas: np.ndarray, prompt_lengths: np.ndarray,
    output_lengths: np.ndarray,
) -> list[WorkloadPrediction]:
    """:func:`expected_workload` for each draft length in ``gammas``."""
    return [expected_workload(profile, cost, int(g), prompt_lengths, output_lengths) for g in gammas]

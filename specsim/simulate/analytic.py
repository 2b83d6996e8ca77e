"""Closed forms of speculative decoding's expected gain (Leviathan, Kalman, Matias 2023).

With i.i.d. acceptance ``alpha`` and draft length ``gamma``, the expected number of tokens
a draft-verify step produces is ``(1 - alpha^(gamma+1)) / (1 - alpha)`` and the expected
walltime improvement, with drafter/target cost ratio ``c``, is
``(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))`` (their Eq. 1 and Theorem 3.8).
The general forms take a conditional acceptance per draft index and a :class:`CostModel`
whose verify cost grows with gamma and context. All functions broadcast over arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsim.errors import InputError
from specsim.simulate.cost import CostModel

__all__ = [
    "expected_tokens_per_step",
    "walltime_improvement",
    "tokens_per_step_by_index",
    "speedup_by_index",
    "BestGamma",
    "best_gamma",
]


def _check_alpha_gamma(alpha: np.ndarray, gamma: np.ndarray) -> None:
    if np.any((alpha < 0) | (alpha > 1)) or np.any(~np.isfinite(alpha)):
        raise InputError("acceptance rate must be in [0, 1]", field="alpha")
    if np.any(gamma < 1) or np.any(gamma != np.floor(gamma)):
        raise InputError("draft length must be an integer >= 1", field="gamma")


def expected_tokens_per_step(alpha: np.ndarray | float, gamma: np.ndarray | int) -> np.ndarray:
    """Expected tokens per step, target's bonus token included (Leviathan et al. Eq. 1).

    Parameters
    ----------
    alpha : float or numpy.ndarray
        I.i.d. acceptance probability of each drafted token, in [0, 1].
    gamma : int or numpy.ndarray
        Draft length, >= 1.

    Returns
    -------
    numpy.ndarray
        Broadcast of the inputs; ``gamma + 1`` where ``alpha == 1``.

    Examples
    --------
    >>> float(expected_tokens_per_step(0.8, 4))
    3.3616
    """
    alpha = np.asarray(alpha, dtype=float)
    gamma = np.asarray(gamma, dtype=float)
    _check_alpha_gamma(alpha, gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return np.where(alpha == 1, gamma + 1, value)


def walltime_improvement(
    alpha: np.ndarray | float, gamma: np.ndarray | int, cost_ratio: np.ndarray | float
) -> np.ndarray:
    """Expected walltime improvement factor (Leviathan et al. Theorem 3.8).

    Parameters
    ----------
    alpha : float or numpy.ndarray
        I.i.d. acceptance probability.
    gamma : int or numpy.ndarray
        Draft length.
    cost_ratio : float or numpy.ndarray
        ``c``: time of one drafter step over one target step.

    Examples
    --------
    >>> round(float(walltime_improvement(0.8, 3, 0.05)), 4)
    2.567
    """
    cost_ratio = np.asarray(cost_ratio, dtype=float)
    if np.any(cost_ratio < 0):
        raise InputError("cost ratio must be >= 0", field="cost_ratio")
    return expected_tokens_per_step(alpha, gamma) / (np.asarray(gamma, dtype=float) * cost_ratio + 1)


def tokens_per_step_by_index(rates: np.ndarray) -> np.ndarray:
    """Expected tokens per step from conditional acceptance per draft index.

    Parameters
    ----------
    rates : numpy.ndarray, shape (..., gamma)
        ``rates[..., d]``: probability that draft index ``d`` is accepted given that all
        earlier ones were.

    Returns
    -------
    numpy.ndarray, shape (...)
        ``1 + sum_j prod_{d<j} rates[d]`` (bonus token included).
    """
    rates = np.asarray(rates, dtype=float)
    return 1.0 + np.cumprod(rates, axis=-1).sum(axis=-1)


def speedup_by_index(rates: np.ndarray, cost: CostModel, context: float = 0.0) -> np.ndarray:
    """Expected speed-up of one step at ``context`` with per-index acceptance and a cost model.

    Parameters
    ----------
    rates : numpy.ndarray, shape (..., gamma)
        Conditional acceptance per draft index.
    cost : CostModel
        Step and target-token costs.
    context : float
        Context length (prompt plus generated) at the step.

    Returns
    -------
    numpy.ndarray, shape (...)
        Tokens per step times target seconds per token, over the step's seconds.
    """
    rates = np.asarray(rates, dtype=float)
    gamma = rates.shape[-1]
    return tokens_per_step_by_index(rates) * cost.target_token_seconds(context) / cost.step_seconds(gamma, context)


@dataclass(frozen=True)
class BestGamma:
    """The draft length with the highest expected speed-up, and the whole curve."""

    gamma: int
    speedup: float
    gammas: np.ndarray
    speedups: np.ndarray


def best_gamma(rates: np.ndarray, cost: CostModel, context: float = 0.0, max_gamma: int | None = None) -> BestGamma:
    """Best draft length for per-index acceptance ``rates`` (the last rate repeats).

    Parameters
    ----------
    rates : numpy.ndarray, shape (n_index,)
        Conditional acceptance per draft index; indices past the end reuse the last rate.
    cost : CostModel
    context : float
    max_gamma : int, optional
        Largest draft length tried; default ``max(16, n_index)``.
    """
    rates = np.atleast_1d(np.asarray(rates, dtype=float))
    max_gamma = max_gamma or max(16, len(rates))
    gammas = np.arange(1, max_gamma + 1)
    padded = rates[np.minimum(np.arange(max_gamma), len(rates) - 1)]
    speedups = np.array([float(speedup_by_index(padded[:g], cost, context)) for g in gammas])
    best = int(np.argmax(speedups))
    return BestGamma(int(gammas[best]), float(speedups[best]), gammas, speedups)

"""Trace replay: the measured speed-up of recorded sequences, with a bootstrap interval.

Sequences are the unit of resampling (tokens of one sequence are not independent), and the
estimator is the ratio of totals: summed plain wall time over summed speculative wall time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsim.errors import InputError

__all__ = ["BootstrapInterval", "bootstrap_ratio", "replay_speedup"]


@dataclass(frozen=True)
class BootstrapInterval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int

    def to_dict(self) -> dict:
        """Plain dictionary."""
        return dict(self.__dict__)


def bootstrap_ratio(
    numerator: np.ndarray, denominator: np.ndarray, *, level: float = 0.95, n_resamples: int = 2000,
    rng: np.random.Generator | int | None = None,
) -> BootstrapInterval:
    """Ratio of totals ``sum(numerator) / sum(denominator)`` with a percentile interval.

    Parameters
    ----------
    numerator, denominator : numpy.ndarray, shape (n,)
        Paired per-unit values (resampled together).
    level : float
        Interval coverage.
    n_resamples : int
        Bootstrap resamples.
    rng : numpy.random.Generator or int, optional
    """
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    if numerator.shape != denominator.shape or numerator.size == 0:
        raise InputError("need paired, non-empty values to bootstrap", field="sequences")
    rng = np.random.default_rng(rng)
    weights = rng.multinomial(len(numerator), np.full(len(numerator), 1 / len(numerator)), size=n_resamples)
    ratios = (weights @ numerator) / (weights @ denominator)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return BootstrapInterval(float(numerator.sum() / denominator.sum()), float(low), float(high), level,
                             n_resamples)


def replay_speedup(sequences, *, level: float = 0.95, n_resamples: int = 2000,
                   rng: np.random.Generator | int | None = None) -> BootstrapInterval:
    """Measured speed-up of recorded sequences (rows with a baseline) with its interval.

    The estimator is :func:`specsim.traces.metrics.measured_speedup` (time per token, ratio of
    totals); the bootstrap resamples sequences.

    Parameters
    ----------
    sequences : pandas.DataFrame
        Rows of the sequences table of one task x drafter x gamma x temperature.
    """
    timed = sequences[sequences["baseline_wall_s"].notna()]
    if timed.empty:
        raise InputError("no sequences with a baseline timing to replay", field="baseline_wall_s")
    columns = np.column_stack([
        timed["baseline_wall_s"].to_numpy(float), timed["output_len"].to_numpy(float),
        timed["baseline_tokens"].fillna(timed["output_len"]).to_numpy(float), timed["spec_wall_s"].to_numpy(float),
    ])
    rng = np.random.default_rng(rng)
    n = len(columns)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=n_resamples)
    totals = weights @ columns
    ratios = totals[:, 0] * totals[:, 1] / (totals[:, 2] * totals[:, 3])
    whole = columns.sum(axis=0)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return BootstrapInterval(float(whole[0] * whole[1] / (whole[2] * whole[3])), float(low), float(high), level,
                             n_resamples)

"""Acceptance profiles: conditional acceptance by draft index and sequence-position bin.

A profile holds ``rates[d, b]``, the probability that the drafted token at draft index
``d`` is accepted given that it is evaluated (all earlier tokens of the step accepted),
when the step starts at a generated-token position in bin ``b``. Pure NumPy; fitted from
traces by :func:`profile_from_counts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from specsim.errors import InputError

__all__ = ["AcceptanceProfile", "profile_from_counts", "profile_from_tokens", "DEFAULT_POSITION_EDGES",
           "Extrapolation", "extrapolation", "iid_rate_from_tokens_per_step", "profile_from_counts_table"]

#: Interior edges of the default sequence-position bins (generated tokens so far).
DEFAULT_POSITION_EDGES = np.array([32, 64, 128, 256, 512, 1024])


@dataclass(frozen=True)
class AcceptanceProfile:
    """Conditional acceptance by draft index and position bin.

    Parameters
    ----------
    rates : numpy.ndarray, shape (n_draft_index, n_position_bins)
        ``rates[d, b]`` in [0, 1]. Draft indices beyond the last row use the last row.
    position_edges : numpy.ndarray, shape (n_position_bins - 1,)
        Increasing interior bin edges over the generated-token position at which a step
        starts; bin ``b`` holds positions ``edges[b-1] <= n < edges[b]``.

    Examples
    --------
    >>> profile = AcceptanceProfile.constant(0.8)
    >>> float(profile.rates_at(np.array([0, 500]), gamma=2)[1, 1])
    0.8
    """

    rates: np.ndarray
    position_edges: np.ndarray

    def __post_init__(self) -> None:
        rates = np.atleast_2d(np.asarray(self.rates, dtype=float))
        edges = np.asarray(self.position_edges, dtype=float).reshape(-1)
        if rates.shape[1] != len(edges) + 1:
            raise InputError(
                f"rates has {rates.shape[1]} position bins but {len(edges)} interior edges",
                field="position_edges",
            )
        if np.any(~np.isfinite(rates)) or np.any((rates < 0) | (rates > 1)):
            raise InputError("acceptance rates must be in [0, 1]", field="rates")
        if np.any(np.diff(edges) <= 0):
            raise InputError("position edges must increase", field="position_edges")
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "position_edges", edges)

    @classmethod
    def constant(cls, alpha: float) -> AcceptanceProfile:
        """Profile with i.i.d. acceptance ``alpha`` at every index and position."""
        return cls(np.array([[alpha]]), np.array([]))

    @property
    def n_position_bins(self) -> int:
        """Number of sequence-position bins."""
        return self.rates.shape[1]

    def position_bin(self, position: np.ndarray) -> np.ndarray:
        """Bin index of each generated-token position, shape like ``position``."""
        return np.searchsorted(self.position_edges, np.asarray(position), side="right")

    def rates_at(self, position: np.ndarray, gamma: int) -> np.ndarray:
        """Conditional acceptance of draft indices ``0..gamma-1`` for steps at ``position``.

        Parameters
        ----------
        position : numpy.ndarray, shape (n,)
            Generated-token position at which each step starts.
        gamma : int
            Draft length.

        Returns
        -------
        numpy.ndarray, shape (n, gamma)
        """
        rows = np.minimum(np.arange(gamma), self.rates.shape[0] - 1)
        return self.rates[rows][:, self.position_bin(position)].T


def profile_from_counts(
    accepted: np.ndarray, evaluated: np.ndarray, position_edges: np.ndarray, prior: float = 0.5
) -> AcceptanceProfile:
    """Fit a profile from conditional counts with a Beta(prior, prior) pseudo-count.

    Parameters
    ----------
    accepted, evaluated : numpy.ndarray, shape (n_draft_index, n_position_bins)
        Accepted and evaluated tokens per draft index and position bin.
    position_edges : numpy.ndarray
        Interior edges of the position bins.
    prior : float, default 0.5
        Jeffreys pseudo-count added to accepted and rejected, so empty cells stay defined;
        an empty cell borrows the draft index's pooled rate instead of 0.5.

    Returns
    -------
    AcceptanceProfile
    """
    accepted = np.asarray(accepted, dtype=float)
    evaluated = np.asarray(evaluated, dtype=float)
    pooled = (accepted.sum(axis=1, keepdims=True) + prior) / (evaluated.sum(axis=1, keepdims=True) + 2 * prior)
    rates = np.where(evaluated > 0, (accepted + prior) / (evaluated + 2 * prior), pooled)
    return AcceptanceProfile(rates, position_edges)


def profile_from_tokens(
    tokens: pd.DataFrame, gamma: int | None = None, position_edges: np.ndarray = DEFAULT_POSITION_EDGES
) -> AcceptanceProfile:
    """Fit a profile from a tokens table (one task x drafter x temperature, any gamma).

    The position of a step is that of its first drafted token (``position - draft_index``).

    Parameters
    ----------
    tokens : pandas.DataFrame
        Rows of the tokens table.
    gamma : int, optional
        Number of draft indices to fit; default the largest draft index seen plus one.
    position_edges : numpy.ndarray
        Interior edges of the position bins.
    """
    evaluated_rows = tokens[tokens["evaluated"]]
    if evaluated_rows.empty:
        raise InputError("no evaluated tokens to fit acceptance from", field="tokens")
    n_index = int(gamma or tokens["draft_index"].max() + 1)
    edges = np.asarray(position_edges, dtype=float)
    step_position = (evaluated_rows["position"] - evaluated_rows["draft_index"]).to_numpy()
    bins = np.searchsorted(edges, step_position, side="right")
    index = np.minimum(evaluated_rows["draft_index"].to_numpy(), n_index - 1)
    shape = (n_index, len(edges) + 1)
    flat = np.ravel_multi_index((index, bins), shape)
    evaluated = np.bincount(flat, minlength=np.prod(shape)).reshape(shape)
    accepted = np.bincount(flat, weights=evaluated_rows["accepted"].to_numpy(float), minlength=np.prod(shape))
    return profile_from_counts(accepted.reshape(shape), evaluated, edges)


@dataclass(frozen=True)
class Extrapolation:
    """How far a workload's generated positions go beyond the positions acceptance was measured at.

    Attributes
    ----------
    max_observed_position : int
        Largest generated-token position the measured traces decoded.
    workload_max_position : int
        Largest generated-token position the workload visits (longest output minus one).
    share_of_tokens_beyond : float
        Fraction of the workload's generated tokens at positions past ``max_observed_position``.
    """

    max_observed_position: int
    workload_max_position: int
    share_of_tokens_beyond: float

    @property
    def extrapolates(self) -> bool:
        """Whether any generated token lies beyond the observed positions."""
        return self.share_of_tokens_beyond > 0

    def to_dict(self) -> dict:
        """JSON fields (``extrapolates`` included)."""
        return {"extrapolates": self.extrapolates, "max_observed_position": self.max_observed_position,
                "workload_max_position": self.workload_max_position,
                "share_of_tokens_beyond_observed": self.share_of_tokens_beyond}

    def warning(self) -> str:
        """One line for stderr."""
        return (f"warning: extrapolating: {100 * self.share_of_tokens_beyond:.0f}% of the workload's generated tokens "
                f"lie at positions up to {self.workload_max_position}, beyond the last measured position "
                f"{self.max_observed_position}")


def extrapolation(max_observed_position: int, output_lengths: np.ndarray) -> Extrapolation:
    """Share of a workload's generated tokens beyond the last measured position.

    Examples
    --------
    >>> extrapolation(99, np.array([50, 200])).share_of_tokens_beyond
    0.4
    """
    output = np.asarray(output_lengths, dtype=float)
    beyond = np.clip(output - (max_observed_position + 1), 0, None).sum()
    return Extrapolation(int(max_observed_position), int(output.max()) - 1, float(beyond / output.sum()))


def iid_rate_from_tokens_per_step(tokens_per_step: float, gamma: int) -> float:
    """The i.i.d. acceptance ``a`` with ``(1 - a^(g+1)) / (1 - a)`` equal to ``tokens_per_step`` (bisection)."""
    if not 1 <= tokens_per_step <= gamma + 1:
        raise InputError(f"tokens per step {tokens_per_step:.3f} outside [1, gamma + 1 = {gamma + 1}]",
                         field="tokens_per_step")
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        value = gamma + 1 if middle == 1 else (1 - middle ** (gamma + 1)) / (1 - middle)
        low, high = (middle, high) if value < tokens_per_step else (low, middle)
    return (low + high) / 2


def profile_from_counts_table(group: pd.DataFrame, prior: float = 0.5) -> tuple[AcceptanceProfile, bool]:
    """Acceptance profile (draft index x one position bin) of one group of a counts table.

    See :mod:`specsim.traces.counts`; resolved draft indices give conditional rates with a
    Beta(prior, prior) pseudo-count, totals only give an i.i.d. rate.

    Returns
    -------
    profile : AcceptanceProfile
    resolved : bool
        False when the source had only totals and the rate is i.i.d. by assumption.
    """
    from specsim.traces.counts import counts_by_index

    gamma = int(group["gamma"].iloc[0])
    resolved = counts_by_index(group)
    if len(resolved):
        rates = ((resolved["accepted"] + prior) / (resolved["evaluated"] + 2 * prior)).to_numpy()
        return AcceptanceProfile(rates[:, None], np.array([])), True
    totals = group[group["draft_index"] < 0].sum(numeric_only=True)
    tokens_per_step = (totals["accepted"] + totals["steps"]) / totals["steps"]
    rate = iid_rate_from_tokens_per_step(float(tokens_per_step), gamma)
    return AcceptanceProfile(np.full((gamma, 1), rate), np.array([])), False

"""Acceptance profiles: conditional acceptance by draft index and sequence-position bin.

A profile holds ``rates[d, b]``, the probability that the drafted token at draft index
``d`` is accepted given that it is evaluated (all earlier tokens of the step accepted),
when the step starts at a generated-token position in bin ``b``. Pure NumPy; fitted from
traces by :func:`profile_from_counts`.

Drafts of any length (a lookup drafter proposes fewer tokens than asked, or none) add two
hazards per draft index and bin, both 1 for a drafter that always drafts what it is asked:

- ``continuation[d, b]``: the probability that index ``d`` is drafted given that every
  earlier index was drafted and accepted (``evaluated_d / offered_d``). The accepted count
  of a step then follows the same prefix law with effective rates ``continuation * rates``,
  exactly: tokens per step need nothing else.
- ``extension[d, b]``: the probability that index ``d`` is drafted given that index
  ``d - 1`` was, whatever was accepted (``drafted_d / asked_d``): the law of the drafted
  count ``D``, which sets a step's cost (:meth:`AcceptanceProfile.draft_length_probs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.simulate.analytic import expected_tokens_per_step
from specsim.traces.schema import DEFAULT_POSITION_EDGES

__all__ = ["AcceptanceProfile", "profile_from_counts", "profile_from_tokens",
           "Extrapolation", "extrapolation", "iid_rate_from_tokens_per_step", "profile_from_counts_table",
           "counts_by_range", "JEFFREYS_PRIOR", "jeffreys_rate_draws"]



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
    continuation: np.ndarray | None = None
    extension: np.ndarray | None = None

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
        for name in ("continuation", "extension"):
            value = getattr(self, name)
            hazard = np.ones((1, rates.shape[1])) if value is None else np.atleast_2d(np.asarray(value, dtype=float))
            if hazard.shape[1] != rates.shape[1]:
                raise InputError(f"{name} has {hazard.shape[1]} position bins, rates {rates.shape[1]}", field=name)
            if np.any(~np.isfinite(hazard)) or np.any((hazard < 0) | (hazard > 1)):
                raise InputError(f"{name} hazards must be in [0, 1]", field=name)
            object.__setattr__(self, name, hazard)

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
        return _by_index(self.rates, gamma)[:, self.position_bin(position)].T

    @property
    def full_drafts(self) -> bool:
        """Whether every step drafts all it is asked (both hazards 1): a fixed-length drafter."""
        assert self.continuation is not None and self.extension is not None
        return bool(np.all(self.continuation == 1) and np.all(self.extension == 1))

    def effective_table(self, gamma: int) -> np.ndarray:
        """``continuation * rates`` by bin and draft index, shape (n_position_bins, gamma).

        The probability that index ``d`` is drafted and accepted given that every earlier
        index was: the accepted count of a step follows the prefix law with these rates.
        """
        assert self.continuation is not None
        return (_by_index(self.rates, gamma) * _by_index(self.continuation, gamma)).T

    def effective_rates_at(self, position: np.ndarray, gamma: int) -> np.ndarray:
        """:meth:`effective_table` for steps at ``position``, shape (n, gamma)."""
        return self.effective_table(gamma)[self.position_bin(position)]

    def draft_length_probs(self, gamma: int) -> np.ndarray:
        """Law of the drafted count ``D`` (0..gamma) of a step asked for ``gamma``, by bin.

        Returns
        -------
        numpy.ndarray, shape (n_position_bins, gamma + 1)
            Rows sum to 1; a fixed-length drafter has all mass on ``gamma``.
        """
        assert self.extension is not None
        hazard = _by_index(self.extension, gamma).T  # (bins, gamma)
        survive = np.concatenate([np.ones((hazard.shape[0], 1)), np.cumprod(hazard, axis=1)], axis=1)
        probs = survive.copy()
        probs[:, :-1] -= survive[:, 1:]
        return probs


def _by_index(table: np.ndarray, gamma: int) -> np.ndarray:
    """Rows ``0..gamma-1`` of a (draft index, bin) table; indices past the last row reuse it."""
    return table[np.minimum(np.arange(gamma), table.shape[0] - 1)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Hazard ``numerator / denominator`` by (index, bin); an empty cell borrows its index's pooled
    hazard, an index never asked for 1 (nothing to learn: the fixed-length default).
    """
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    pooled_den = denominator.sum(axis=1, keepdims=True)
    pooled = np.divide(numerator.sum(axis=1, keepdims=True), pooled_den, out=np.ones_like(pooled_den),
                       where=pooled_den > 0)
    cell = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return np.clip(np.where(denominator > 0, cell, pooled), 0.0, 1.0)


#: Jeffreys pseudo-count: Beta(0.5, 0.5) prior of every acceptance rate.
JEFFREYS_PRIOR = 0.5


def jeffreys_rate_draws(accepted: np.ndarray | float, evaluated: np.ndarray | float, rng: np.random.Generator,
                        size: int | tuple[int, ...]) -> np.ndarray:
    """Draws of acceptance rates from their Jeffreys posteriors, Beta(accepted + 1/2, rejected + 1/2).

    Examples
    --------
    >>> draws = jeffreys_rate_draws(np.array([30.0]), np.array([100.0]), np.random.default_rng(0), (4000, 1))
    >>> round(float(draws.mean()), 2)
    0.3
    """
    accepted = np.asarray(accepted, dtype=float)
    evaluated = np.asarray(evaluated, dtype=float)
    return rng.beta(accepted + JEFFREYS_PRIOR, evaluated - accepted + JEFFREYS_PRIOR, size=size)


def profile_from_counts(
    accepted: np.ndarray, evaluated: np.ndarray, position_edges: np.ndarray, prior: float = JEFFREYS_PRIOR,
    drafted: np.ndarray | None = None, offered: np.ndarray | None = None, asked: np.ndarray | None = None,
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
    drafted, offered, asked : numpy.ndarray, optional, shape like ``accepted``
        Drafts of any length (see the module docstring): steps that drafted index ``d``,
        steps asked for it with every earlier index accepted, and steps asked for it with
        index ``d - 1`` drafted. Without them the drafter is taken to draft all it is asked.

    Returns
    -------
    AcceptanceProfile
    """
    accepted = np.asarray(accepted, dtype=float)
    evaluated = np.asarray(evaluated, dtype=float)
    pooled = (accepted.sum(axis=1, keepdims=True) + prior) / (evaluated.sum(axis=1, keepdims=True) + 2 * prior)
    rates = np.where(evaluated > 0, (accepted + prior) / (evaluated + 2 * prior), pooled)
    continuation = _ratio(evaluated, offered) if offered is not None else None
    extension = _ratio(drafted, asked) if drafted is not None and asked is not None else None
    return AcceptanceProfile(rates, position_edges, continuation, extension)


def profile_from_tokens(
    tokens: pd.DataFrame, gamma: int | None = None, position_edges: np.ndarray = DEFAULT_POSITION_EDGES,
    steps: pd.DataFrame | None = None,
) -> AcceptanceProfile:
    """Fit a profile from a tokens table (one task x drafter x temperature, any gamma).

    The position of a step is that of its first drafted token (``position - draft_index``).
    With the matching ``steps``, the profile also learns how often the drafter drafts less
    than it is asked (:func:`specsim.traces.counts.step_index_counts`); all counts then come
    from the steps, which hold the same acceptances as the tokens.

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
    if steps is not None:
        from specsim.traces.counts import step_index_counts

        counts = step_index_counts(steps, n_index, edges)
        return profile_from_counts(counts["accepted"], counts["evaluated"], edges, drafted=counts["drafted"],
                                   offered=counts["offered"], asked=counts["asked"])
    from specsim.traces.counts import token_step_positions

    step_position = token_step_positions(evaluated_rows)
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
    """The i.i.d. acceptance ``a`` whose Leviathan tokens per step equal ``tokens_per_step`` (bisection).

    Tokens per step of ``a`` are :func:`specsim.simulate.analytic.expected_tokens_per_step`.
    """
    if not 1 <= tokens_per_step <= gamma + 1:
        raise InputError(f"tokens per step {tokens_per_step:.3f} outside [1, gamma + 1 = {gamma + 1}]",
                         field="tokens_per_step")
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        value = float(expected_tokens_per_step(middle, gamma))
        low, high = (middle, high) if value < tokens_per_step else (low, middle)
    return (low + high) / 2


def counts_by_range(group: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, bool] | None:
    """One group's resolved counts as (draft index x position range) arrays, where its rows carry ranges.

    Returns
    -------
    tuple or None
        The five counts (each shape (gamma, n_ranges)), the ranges' interior edges, and whether
        ``offered``/``asked`` are known; None where the rows pool every position (one range, or
        none recorded).
    """
    from specsim.traces.counts import with_optional_columns

    gamma = int(group["gamma"].iloc[0])
    rows = with_optional_columns(group[group["draft_index"] >= 0])
    if not len(rows) or rows["position_start"].isna().any() or rows["position_start"].nunique() < 2:
        return None
    starts = np.sort(rows["position_start"].unique().astype(np.int64))
    where = (rows["draft_index"].to_numpy(np.int64), np.searchsorted(starts, rows["position_start"].to_numpy()))
    column = {}
    for name in ("accepted", "evaluated", "drafted", "offered", "asked"):
        values = np.zeros((gamma, len(starts)))
        np.add.at(values, where, rows[name].to_numpy(float))
        column[name] = values
    return column, starts[1:].astype(float), not rows["offered"].isna().any()


def profile_from_counts_table(group: pd.DataFrame, prior: float = 0.5) -> tuple[AcceptanceProfile, bool]:
    """Acceptance profile of one group of a counts table (draft index x position range).

    See :mod:`specsim.traces.counts`; resolved draft indices give conditional rates with a
    Beta(prior, prior) pseudo-count, per position range where the rows carry ranges (specsim's
    own traces: the same profile :func:`profile_from_tokens` gives over those ranges), pooled over
    positions where they do not; totals only give an i.i.d. rate.

    Returns
    -------
    profile : AcceptanceProfile
    resolved : bool
        False when the source had only totals and the rate is i.i.d. by assumption.
    """
    from specsim.traces.counts import counts_by_index

    gamma = int(group["gamma"].iloc[0])
    by_range = counts_by_range(group)
    if by_range is not None:
        column, edges, hazards = by_range
        lengths = {name: column[name] for name in ("drafted", "offered", "asked")} if hazards else {}
        return profile_from_counts(column["accepted"], column["evaluated"], edges, prior, **lengths), True
    resolved = counts_by_index(group)
    if len(resolved):
        column = {name: resolved[name].to_numpy(float)[:, None] for name in
                  ("accepted", "evaluated", "drafted", "offered", "asked")}
        lengths = {} if np.isnan(column["offered"]).any() else {
            "drafted": column["drafted"], "offered": column["offered"], "asked": column["asked"]}
        return profile_from_counts(column["accepted"], column["evaluated"], np.array([]), prior, **lengths), True
    totals = group[group["draft_index"] < 0].sum(numeric_only=True)
    tokens_per_step = (totals["accepted"] + totals["steps"]) / totals["steps"]
    rate = iid_rate_from_tokens_per_step(float(tokens_per_step), gamma)
    return AcceptanceProfile(np.full((gamma, 1), rate), np.array([])), False

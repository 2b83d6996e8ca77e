"""Acceptance metrics under each convention in use, derived from raw counts.

Traces store raw counts per step (``n_drafted``, ``n_accepted`` without the target's bonus
token, ``n_emitted``). Every published convention is one named function here, and each says
which peer it matches, because "mean accepted tokens" means different things in different
tools (see the project's PRACTICE notes):

========================================  ==========================================
function                                  matches
========================================  ==========================================
:func:`acceptance_rate`                   vLLM ``accepted / drafted``
:func:`acceptance_length_with_bonus`      vLLM, Spec-Bench, EAGLE, Medusa (plain decoding = 1)
:func:`accepted_per_step_without_bonus`   inference-lab ``E[accepted]`` (plain decoding = 0)
:func:`emitted_per_step`                  SGLang ``completion_tokens / verify_ct``
:func:`conditional_acceptance_by_index`   inference-lab per-depth ``a_d``
:func:`unconditional_acceptance_by_index` vLLM per-position rate
========================================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL, central_quantiles

__all__ = [
    "acceptance_rate",
    "acceptance_length_with_bonus",
    "accepted_per_step_without_bonus",
    "emitted_per_step",
    "conditional_acceptance_by_index",
    "unconditional_acceptance_by_index",
    "wilson_interval",
    "measured_speedup",
    "measured_speedup_interval",
    "acceptance_by_draft_index",
    "bootstrap_ratio",
    "BootstrapInterval",
    "summarize",
    "SUMMARY_GROUP",
]

#: Columns one summary row stands for.
SUMMARY_GROUP = ["task", "drafter", "drafter_kind", "temperature", "gamma", "schedule"]


def acceptance_rate(n_accepted: ArrayLike, n_drafted: ArrayLike) -> float:
    """Accepted over drafted tokens, summed over steps (vLLM's ``acceptance rate``).

    Parameters
    ----------
    n_accepted, n_drafted : array_like, shape (n_steps,)
        Raw per-step counts (accepted without the bonus token).

    Returns
    -------
    float
        NaN when nothing was drafted.

    Examples
    --------
    >>> acceptance_rate([2, 0], [4, 4])
    0.25
    """
    drafted = float(np.sum(n_drafted))
    return float(np.sum(n_accepted)) / drafted if drafted else float("nan")


def accepted_per_step_without_bonus(n_accepted: np.ndarray) -> float:
    """Mean accepted drafted tokens per verify step, bonus token not counted (inference-lab).

    Examples
    --------
    >>> accepted_per_step_without_bonus([3, 1])
    2.0
    """
    return float(np.mean(n_accepted)) if len(n_accepted) else float("nan")


def acceptance_length_with_bonus(n_accepted: np.ndarray) -> float:
    """Mean tokens per verify step counting the target's bonus token (vLLM, Spec-Bench, EAGLE).

    Plain autoregressive decoding scores 1.00 on this scale.

    Examples
    --------
    >>> acceptance_length_with_bonus([3, 1])
    3.0
    """
    return 1.0 + accepted_per_step_without_bonus(n_accepted)


def emitted_per_step(n_emitted: np.ndarray) -> float:
    """Tokens actually kept per verify step (SGLang's ``completion_tokens / verify_ct``).

    Differs from :func:`acceptance_length_with_bonus` only where a step was cut short by
    end-of-sequence or the token limit.
    """
    return float(np.mean(n_emitted)) if len(n_emitted) else float("nan")


def conditional_acceptance_by_index(tokens: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Acceptance at each draft index given that the index was evaluated (``a_d``).

    Parameters
    ----------
    tokens : pandas.DataFrame
        The tokens table.
    by : list of str, optional
        Extra grouping columns (e.g. ``["task", "drafter"]``).

    Returns
    -------
    pandas.DataFrame
        Columns ``by + ["draft_index", "evaluated", "accepted", "rate"]``.
    """
    keys = [*(by or []), "draft_index"]
    evaluated = tokens[tokens["evaluated"]]
    counts = evaluated.groupby(keys, observed=True).agg(
        evaluated=("accepted", "size"), accepted=("accepted", "sum")
    )
    counts["rate"] = counts["accepted"] / counts["evaluated"]
    return counts.reset_index()


def unconditional_acceptance_by_index(tokens: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Accepted at each draft index over steps that drafted that index (vLLM per position).

    Returns
    -------
    pandas.DataFrame
        Columns ``by + ["draft_index", "drafted", "accepted", "rate"]``.
    """
    keys = [*(by or []), "draft_index"]
    counts = tokens.groupby(keys, observed=True).agg(
        drafted=("accepted", "size"), accepted=("accepted", "sum")
    )
    counts["rate"] = counts["accepted"] / counts["drafted"]
    return counts.reset_index()


def wilson_interval(successes: float, trials: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Treats tokens as independent, so it is too narrow where acceptance clusters by sequence;
    use the bootstrap over sequences in :mod:`specsim.simulate` for honest intervals.

    Examples
    --------
    >>> low, high = wilson_interval(50, 100)
    >>> round(low, 3), round(high, 3)
    (0.404, 0.596)
    """
    from statsmodels.stats.proportion import proportion_confint

    if trials <= 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(successes, trials, alpha=1 - level, method="wilson")
    return float(low), float(high)


def _speedup_columns(sequences: pd.DataFrame) -> np.ndarray:
    """Per-sequence (baseline_wall_s, output_len, baseline_tokens, spec_wall_s) of rows with a baseline."""
    timed = sequences[sequences["baseline_wall_s"].notna()]
    return np.column_stack([
        timed["baseline_wall_s"].to_numpy(float), timed["output_len"].to_numpy(float),
        timed["baseline_tokens"].fillna(timed["output_len"]).to_numpy(float), timed["spec_wall_s"].to_numpy(float),
    ])


def _speedup_of_totals(totals: np.ndarray) -> np.ndarray:
    """Plain over speculative time per token from summed columns of :func:`_speedup_columns`."""
    return totals[..., 0] * totals[..., 1] / (totals[..., 2] * totals[..., 3])


def measured_speedup(sequences: pd.DataFrame) -> float:
    """Measured speed-up of sequences with a baseline: plain over speculative time per token.

    ``(sum baseline_wall_s / sum baseline_tokens) / (sum spec_wall_s / sum output_len)``, a ratio
    of totals. Under greedy decoding both runs produce the same tokens and this is summed
    baseline wall time over summed speculative wall time; under sampling the two runs draw
    different sequences, so time is compared per generated token. NaN without baselines.
    """
    columns = _speedup_columns(sequences)
    if not len(columns) or columns[:, 3].sum() <= 0:
        return float("nan")
    return float(_speedup_of_totals(columns.sum(axis=0)))


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


def bootstrap_weights(n: int, n_resamples: int, rng: np.random.Generator | int | None) -> np.ndarray:
    """Bootstrap resampling counts of ``n`` units, shape (n_resamples, n)."""
    return np.random.default_rng(rng).multinomial(n, np.full(n, 1 / n), size=n_resamples)


def _interval(estimate: float | np.ndarray, resampled: np.ndarray, level: float) -> BootstrapInterval:
    low, high = np.quantile(resampled, central_quantiles(level))
    return BootstrapInterval(float(estimate), float(low), float(high), level, len(resampled))


def bootstrap_ratio(
    numerator: np.ndarray, denominator: np.ndarray, *, level: float = INTERVAL_LEVEL, n_resamples: int = 2000,
    rng: np.random.Generator | int | None = None,
) -> BootstrapInterval:
    """Ratio of totals ``sum(numerator) / sum(denominator)`` with a percentile interval.

    Parameters
    ----------
    numerator, denominator : numpy.ndarray, shape (n,)
        Paired per-unit values (resampled together, e.g. per sequence).
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
    weights = bootstrap_weights(len(numerator), n_resamples, rng)
    return _interval(numerator.sum() / denominator.sum(), (weights @ numerator) / (weights @ denominator), level)


def measured_speedup_interval(
    sequences: pd.DataFrame, *, level: float = INTERVAL_LEVEL, n_resamples: int = 2000,
    rng: np.random.Generator | int | None = None,
) -> BootstrapInterval:
    """:func:`measured_speedup` with a bootstrap interval that resamples sequences.

    Parameters
    ----------
    sequences : pandas.DataFrame
        Rows of the sequences table of one task x drafter x gamma x temperature.
    """
    columns = _speedup_columns(sequences)
    if not len(columns):
        raise InputError("no sequences with a baseline timing", field="baseline_wall_s")
    weights = bootstrap_weights(len(columns), n_resamples, rng)
    return _interval(_speedup_of_totals(columns.sum(axis=0)), _speedup_of_totals(weights @ columns), level)


def summarize(steps: pd.DataFrame, sequences: pd.DataFrame, level: float = INTERVAL_LEVEL) -> pd.DataFrame:
    """One row per task x drafter x temperature x gamma with the headline figures.

    Parameters
    ----------
    steps, sequences : pandas.DataFrame
        Tables of a trace directory.

    Returns
    -------
    pandas.DataFrame
        Columns: the group (:data:`SUMMARY_GROUP`), ``sequences``, ``steps``, ``drafted``,
        ``accepted``, ``acceptance_rate`` (vLLM) with its Wilson 95% interval
        (``acceptance_rate_low``/``_high``), ``acceptance_length_with_bonus``,
        ``accepted_per_step_without_bonus``, ``output_tokens``, ``spec_wall_s``,
        ``baseline_wall_s``, ``measured_speedup`` (:func:`measured_speedup`) and its bootstrap
        interval over sequences (``measured_speedup_low``/``_high``,
        :func:`measured_speedup_interval`, seeded: the same traces give the same interval).
    """
    rows = []
    step_groups = dict(tuple(steps.groupby(SUMMARY_GROUP, observed=True, sort=True)))
    for key, group in sequences.groupby(SUMMARY_GROUP, observed=True, sort=True):
        group_steps = step_groups.get(key, steps.iloc[0:0])
        drafted = int(group_steps["n_drafted"].sum())
        accepted = int(group_steps["n_accepted"].sum())
        low, high = wilson_interval(accepted, drafted, level)
        with_baseline = group[group["baseline_wall_s"].notna()]
        baseline_total = float(with_baseline["baseline_wall_s"].sum()) if len(with_baseline) else float("nan")
        speedup = measured_speedup(group)
        speedup_low = speedup_high = float("nan")
        if len(with_baseline) and with_baseline["spec_wall_s"].sum() > 0:
            interval = measured_speedup_interval(with_baseline, level=level, rng=0)
            speedup_low, speedup_high = interval.low, interval.high
        rows.append(
            {
                **dict(zip(SUMMARY_GROUP, key, strict=True)),
                "sequences": len(group),
                "steps": len(group_steps),
                "drafted": drafted,
                "accepted": accepted,
                "acceptance_rate": acceptance_rate(accepted, drafted),
                "acceptance_rate_low": low,
                "acceptance_rate_high": high,
                "acceptance_length_with_bonus": acceptance_length_with_bonus(group_steps["n_accepted"]),
                "accepted_per_step_without_bonus": accepted_per_step_without_bonus(group_steps["n_accepted"]),
                "output_tokens": int(group["output_len"].sum()),
                "spec_wall_s": float(group["spec_wall_s"].sum()),
                "baseline_wall_s": baseline_total,
                "measured_speedup": speedup,
                "measured_speedup_low": speedup_low,
                "measured_speedup_high": speedup_high,
            }
        )
    return pd.DataFrame(rows)


def acceptance_by_draft_index(tokens: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Both per-position conventions side by side, one row per group and draft index.

    ``acceptance_rate_conditional`` is accepted over evaluated at that index (inference-lab's
    ``a_d``; SGLang's open per-position PR); ``acceptance_rate_unconditional`` is accepted over
    drafted at that index (vLLM's ``spec_decode_num_accepted_tokens_per_pos`` over drafts).
    """
    by = list(by or [])
    conditional = conditional_acceptance_by_index(tokens, by).rename(columns={"rate": "acceptance_rate_conditional"})
    unconditional = unconditional_acceptance_by_index(tokens, by).rename(
        columns={"rate": "acceptance_rate_unconditional"}).drop(columns="accepted")
    merged = unconditional.merge(conditional, on=[*by, "draft_index"], how="left")
    merged[["evaluated", "accepted"]] = merged[["evaluated", "accepted"]].fillna(0).astype(np.int64)
    return merged

"""Model-free readings of a length-controlled experiment: acceptance by context position, and the
length effect beside the content effect.

In a length-controlled experiment (``data/traces/lengths``) the content is fixed and only the
context length moves: the prompts of regime ``ctx-N`` (prompt ids ``ctx-N-...``) are cut from the
same documents at about ``N`` tokens. Then, for one drafter, the difference in acceptance between
the longest and the shortest regime is the *length effect alone*. In the first experiment
(``data/traces/reference``) the content moves: a fine-tuned drafter on its own task minus on the
other tasks is the *content effect* (with length shift mixed in). Both are ratios of totals
(accepted over evaluated drafted tokens) with a bootstrap over prompts; no model is involved.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from specsim.analysis.metrics import bootstrap_weights, wilson_interval
from specsim.glossary import INTERVAL_LEVEL, central_quantiles

__all__ = ["regime_of", "acceptance_by_context", "per_prompt_acceptance", "bootstrap_difference", "length_effects",
           "content_effects", "regime_order"]


def regime_of(prompt_ids: pd.Series) -> pd.Series:
    """The regime (``ctx-N``) of each prompt id ``ctx-N-...`` (NaN for other ids)."""
    return prompt_ids.astype(str).str.extract(r"^(ctx-\d+)-")[0]


def regime_order(regimes: pd.Series | list[str]) -> list[str]:
    """Regimes sorted by their context length."""
    return sorted({str(r) for r in regimes if isinstance(r, str)}, key=lambda r: int(r.split("-")[1]))


def acceptance_by_context(tokens: pd.DataFrame, *, first_edge: int = 32, min_evaluated: int = 30,
                          level: float = INTERVAL_LEVEL) -> pd.DataFrame:
    """Conditional acceptance by the drafted token's absolute context position, doubling bins.

    Parameters
    ----------
    tokens : pandas.DataFrame
        Tokens table (``drafter``, ``context_len``, ``evaluated``, ``accepted``).
    first_edge : int
        Upper end of the first bin; then one bin per doubling up to the longest context.
    min_evaluated : int
        Bins with fewer evaluated tokens are left out.
    level : float
        Wilson interval probability.

    Returns
    -------
    pandas.DataFrame
        ``drafter``, ``context_start``, ``context_end`` (inclusive), ``evaluated``, ``accepted``,
        ``acceptance``, ``acceptance_low``, ``acceptance_high``.
    """
    evaluated = tokens[tokens["evaluated"]]
    if evaluated.empty:
        return pd.DataFrame(columns=["drafter", "context_start", "context_end", "evaluated", "accepted", "acceptance",
                                     "acceptance_low", "acceptance_high"])
    longest = int(evaluated["context_len"].max())
    edges = first_edge * 2 ** np.arange(0, max(int(np.ceil(np.log2(max(longest, first_edge) / first_edge))), 0) + 1)
    which = np.searchsorted(edges, evaluated["context_len"].to_numpy(), side="right")
    grouped = evaluated.assign(bin=which).groupby(["drafter", "bin"], observed=True).agg(
        accepted=("accepted", "sum"), evaluated=("accepted", "size")).reset_index()
    grouped = grouped[grouped["evaluated"] >= min_evaluated]
    bounds = np.concatenate([[0], edges])
    rows = []
    for row in grouped.itertuples(index=False):
        low, high = wilson_interval(int(row.accepted), int(row.evaluated), level)
        end = int(bounds[row.bin + 1]) - 1 if row.bin + 1 < len(bounds) else longest
        rows.append({"drafter": row.drafter, "context_start": int(bounds[row.bin]), "context_end": min(end, longest),
                     "evaluated": int(row.evaluated), "accepted": int(row.accepted),
                     "acceptance": row.accepted / row.evaluated, "acceptance_low": low, "acceptance_high": high})
    return pd.DataFrame(rows)


def per_prompt_acceptance(tokens: pd.DataFrame, by: str) -> pd.DataFrame:
    """Accepted and evaluated drafted tokens per ``drafter`` x ``by`` x prompt."""
    evaluated = tokens[tokens["evaluated"]]
    return evaluated.groupby(["drafter", by, "prompt_id"], observed=True).agg(
        accepted=("accepted", "sum"), evaluated=("accepted", "size")).reset_index()


def bootstrap_difference(a: pd.DataFrame, b: pd.DataFrame, *, level: float = INTERVAL_LEVEL, resamples: int = 2000,
                         rng: np.random.Generator | int | None = 0) -> tuple[float, float, float]:
    """Acceptance of ``a`` minus ``b`` (ratios of totals), each resampled over its prompts.

    Returns
    -------
    estimate, low, high : float
    """
    rng = np.random.default_rng(rng)

    def resampled(frame: pd.DataFrame) -> np.ndarray:
        weights = bootstrap_weights(len(frame), resamples, rng)
        return (weights @ frame["accepted"].to_numpy()) / (weights @ frame["evaluated"].to_numpy())

    estimate = a["accepted"].sum() / a["evaluated"].sum() - b["accepted"].sum() / b["evaluated"].sum()
    low, high = np.quantile(resampled(a) - resampled(b), central_quantiles(level))
    return float(estimate), float(low), float(high)


def length_effects(tokens: pd.DataFrame, *, level: float = INTERVAL_LEVEL, rng: int = 0) -> pd.DataFrame:
    """Per drafter: acceptance in its longest measured regime minus its shortest (same content, same drafter).

    Returns
    -------
    pandas.DataFrame
        ``drafter``, ``comparison``, ``effect``, ``effect_low``, ``effect_high``, ``kind`` (``length``).
    """
    tokens = tokens.assign(regime=regime_of(tokens["prompt_id"])).dropna(subset=["regime"])
    rates = per_prompt_acceptance(tokens, "regime")
    rows = []
    for drafter in sorted(rates["drafter"].unique()):
        regimes = regime_order(rates.loc[rates["drafter"] == drafter, "regime"])
        longest = rates[(rates["drafter"] == drafter) & (rates["regime"] == regimes[-1])]
        shortest = rates[(rates["drafter"] == drafter) & (rates["regime"] == regimes[0])]
        if len(longest) and len(shortest) and len(regimes) > 1:
            estimate, low, high = bootstrap_difference(longest, shortest, level=level, rng=rng)
            rows.append({"drafter": drafter, "kind": "length", "comparison": f"{regimes[-1]} minus {regimes[0]}",
                         "effect": estimate, "effect_low": low, "effect_high": high})
    return pd.DataFrame(rows)


def content_effects(tokens: pd.DataFrame, own_tasks: Mapping[str, str], *, level: float = INTERVAL_LEVEL,
                    rng: int = 0) -> pd.DataFrame:
    """Per fine-tuned drafter: acceptance on its own task minus on the other tasks (same drafter).

    Parameters
    ----------
    tokens : pandas.DataFrame
        Tokens of one temperature and gamma.
    own_tasks : mapping
        Drafter name to the task it was fine-tuned on.
    """
    rates = per_prompt_acceptance(tokens, "task")
    rows = []
    for drafter, own in own_tasks.items():
        mine = rates[(rates["drafter"] == drafter) & (rates["task"] == own)]
        others = rates[(rates["drafter"] == drafter) & (rates["task"] != own)]
        if len(mine) and len(others):
            estimate, low, high = bootstrap_difference(mine, others, level=level, rng=rng)
            rows.append({"drafter": drafter, "kind": "content", "comparison": f"own task ({own}) minus other tasks",
                         "effect": estimate, "effect_low": low, "effect_high": high})
    return pd.DataFrame(rows)

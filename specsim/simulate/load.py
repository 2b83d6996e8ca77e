"""Speed-up under load: cost models by batch size, the roofline that links them, break-even concurrency.

Acceptance does not depend on how many requests share a forward pass; cost does. A pass over
``n`` tokens (``B`` requests times ``gamma + 1`` verified tokens, or ``B`` plain tokens) costs
about the time to read the weights while it is memory-bound, and grows with ``n`` once it is
compute-bound: the roofline form (inference-lab's batch cost model, vLLM's dynamic speculative
decoding)::

    seconds(n) = max(floor_s, per_token_s * n)        knee at n* = floor_s / per_token_s

Plain decoding at concurrency ``B`` runs passes of ``B`` tokens; speculative decoding passes of
``B (gamma + 1)``: past the knee, verification costs ``gamma + 1`` times a plain step, so the
speed-up falls towards ``tokens_per_step / (gamma + 1) < 1`` and crosses 1 at a break-even
concurrency. With a drafter that costs nothing and tokens per step ``tau``, the crossing is at
``B = tau * n* / (gamma + 1)`` (when ``B (gamma + 1)`` has passed the knee there).

``specsim profile --batch-size`` measures a :class:`specsim.simulate.cost.CostModel` at each
batch size (times of whole-batch passes; the ratio of plain to speculative time per token, the
speed-up, is the same per request and per batch). :func:`cost_model_at_concurrency` picks one or
interpolates between measured batch sizes, and refuses outside them. A Leviathan cost ratio
(``--cost-ratio``) carries no batch information: it assumes memory-bound passes at every
concurrency, so its speed-up does not change with load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from specsim.errors import InputError
from specsim.simulate.cost import CostModel

__all__ = ["Roofline", "fit_roofline", "cost_model_at_concurrency", "break_even_concurrency", "roofline_cost_models",
           "MAX_CONCURRENCY"]

#: Largest concurrency any command accepts.
MAX_CONCURRENCY = 65_536


@dataclass(frozen=True)
class Roofline:
    """``seconds(n) = max(floor_s, per_token_s * n)`` for a forward pass over ``n`` tokens.

    Examples
    --------
    >>> Roofline(0.02, 0.001).knee_tokens
    20.0
    """

    floor_s: float
    per_token_s: float

    @property
    def knee_tokens(self) -> float:
        """Tokens per pass where the pass turns compute-bound."""
        return self.floor_s / self.per_token_s if self.per_token_s > 0 else float("inf")

    def seconds(self, tokens: np.ndarray | float) -> np.ndarray:
        """Seconds of a pass over ``tokens`` tokens."""
        return np.maximum(self.floor_s, self.per_token_s * np.asarray(tokens, dtype=float))

    def to_dict(self) -> dict:
        """Plain dictionary with the knee."""
        return {"floor_s": self.floor_s, "per_token_s": self.per_token_s, "knee_tokens": self.knee_tokens}


def fit_roofline(tokens: np.ndarray, seconds: np.ndarray) -> Roofline:
    """Least-squares roofline through passes of ``tokens`` tokens that took ``seconds``.

    For each candidate knee between measured token counts, the floor is the mean time of the
    passes below it and the slope the least-squares slope through the origin of those above;
    the candidate with the smallest squared error (relative to each time, so that short and
    long passes weigh alike) wins.
    """
    tokens = np.asarray(tokens, dtype=float)
    seconds = np.asarray(seconds, dtype=float)
    if tokens.shape != seconds.shape or tokens.size < 2 or not (np.all(tokens > 0) and np.all(seconds > 0)):
        raise InputError("a roofline needs at least two passes with positive tokens and times", field="batch")
    best: tuple[float, Roofline] | None = None
    weights = 1 / seconds**2
    order = np.unique(tokens)
    for split in range(len(order) + 1):  # passes with tokens < order[split] are memory-bound
        low = tokens < (order[split] if split < len(order) else np.inf)
        high = ~low
        floor = float(np.sum(weights[low] * seconds[low]) / np.sum(weights[low])) if low.any() else 0.0
        slope = (float(np.sum(weights[high] * tokens[high] * seconds[high]) / np.sum(weights[high] * tokens[high] ** 2))
                 if high.any() else 0.0)
        if not low.any():
            floor = slope * float(tokens.min())
        candidate = Roofline(floor, slope)
        error = float(np.sum(weights * (candidate.seconds(tokens) - seconds) ** 2))
        if best is None or error < best[0]:
            best = (error, candidate)
    assert best is not None
    return best[1]


def _interpolate(low: CostModel, high: CostModel, weight: float) -> CostModel:
    """Every coefficient ``(1 - weight) * low + weight * high``; the verify table where both measured it."""
    values = {}
    for name in CostModel.__dataclass_fields__:
        if name in ("verify_table", "diagnostics"):
            continue
        values[name] = (1 - weight) * getattr(low, name) + weight * getattr(high, name)
    table = {g: (1 - weight) * low.verify_table[g] + weight * high.verify_table[g]
             for g in set(low.verify_table) & set(high.verify_table)}
    return replace(low, **values, verify_table=table, diagnostics={})


def cost_model_at_concurrency(models: dict[int, CostModel], concurrency: float) -> CostModel:
    """The cost model at ``concurrency`` requests per pass: measured, or linear between two measured batch sizes.

    Parameters
    ----------
    models : dict of int to CostModel
        Cost models by measured batch size (:func:`specsim.simulate.cost.read_cost_profile_batches`).
    concurrency : float
        Requests decoded together; between the smallest and largest measured batch sizes.

    Raises
    ------
    InputError
        Outside the measured batch sizes (no extrapolation: the knee may lie beyond them).
    """
    if not (np.isfinite(concurrency) and 1 <= concurrency <= MAX_CONCURRENCY):
        raise InputError(f"must be a number in [1, {MAX_CONCURRENCY}], got {concurrency}", field="--concurrency")
    sizes = sorted(models)
    if concurrency in models:
        return models[int(concurrency)]
    if not sizes[0] < concurrency < sizes[-1]:
        measured = ", ".join(map(str, sizes))
        hint = ("profile it with specsim profile --batch-size" if len(sizes) > 1 else
                "these costs are at batch size 1 only; measure a profile with specsim profile --batch-size 1,2,4,...")
        raise InputError(f"concurrency {concurrency:g} is outside the measured batch sizes ({measured}): {hint}",
                         field="--concurrency")
    above = next(size for size in sizes if size > concurrency)
    below = max(size for size in sizes if size < concurrency)
    return _interpolate(models[below], models[above], (concurrency - below) / (above - below))


def roofline_cost_models(target: Roofline, drafter: Roofline | None, gammas: list[int], batch_sizes: list[int],
                         draft_step_s: float = 0.0) -> dict[int, CostModel]:
    """Cost models by batch size from rooflines: plain steps of ``B`` tokens, verify passes of ``B (g + 1)``.

    ``drafter`` times one drafted token per request (passes of ``B`` tokens); None for a lookup
    drafter, whose step costs ``draft_step_s`` per request. Context is free (a synthetic case).
    """
    models = {}
    for size in batch_sizes:
        plain = float(target.seconds(size))
        table = {g: float(target.seconds(size * (g + 1))) for g in gammas}
        draft = float(drafter.seconds(size)) if drafter is not None else 0.0
        models[size] = CostModel(draft_base_s=draft, draft_step_s=draft_step_s * size, verify_base_s=table[min(gammas)],
                                 target_base_s=plain, verify_table=table)
    return models


def break_even_concurrency(concurrencies: np.ndarray, speedups: np.ndarray) -> float | None:
    """The load above which speculation no longer pays: where the speed-up last falls to 1.

    Linear between the last concurrency with a speed-up above 1 and the next one. None when it
    still pays at the largest concurrency, or nowhere (check ``speedups > 1`` to tell which). On
    hardware whose cost is not monotone in the batch (CPU kernels change shape with it) the
    speed-up can dip below 1 and recover; the last crossing is the one a capacity plan needs.
    """
    concurrencies = np.asarray(concurrencies, dtype=float)
    speedups = np.asarray(speedups, dtype=float)
    order = np.argsort(concurrencies)
    concurrencies, speedups = concurrencies[order], speedups[order]
    paying = np.flatnonzero(speedups > 1.0)
    if not paying.size or paying[-1] == len(speedups) - 1:
        return None
    last = int(paying[-1])
    c0, c1, s0, s1 = concurrencies[last], concurrencies[last + 1], speedups[last], speedups[last + 1]
    return float(c0 + (s0 - 1.0) / (s0 - s1) * (c1 - c0))

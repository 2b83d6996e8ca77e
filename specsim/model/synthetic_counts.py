"""Counts simulated from the hierarchical model with known parameters (parameter recovery, SBC)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from specsim.model.data import AcceptanceCounts
from specsim.model.spec import linear_predictor

__all__ = ["TRUE_PARAMETERS", "synthetic_counts", "zero_sum_truth"]

#: Parameters of a plausible drafter population (logit scale).
TRUE_PARAMETERS = {
    "intercept": 0.6, "b_finetuned": 0.5, "b_divergence": -1.2, "b_interaction": -1.5,
    "index_effect": np.array([0.0, -0.3, -0.5, -0.6]), "position_effect": np.array([0.0, 0.1, 0.15]),
    "b_index_finetuned": 0.05, "b_position_finetuned": 0.1, "sigma_task": 0.3, "sigma_drafter": 0.15,
    "kappa": 200.0,
}


def synthetic_counts(
    parameters: dict | None = None,
    *,
    n_tasks: int = 6,
    drafters: tuple[tuple[str, str], ...] = (("generic", "generic"), ("ft-a", "finetuned"), ("ft-b", "finetuned")),
    evaluated_per_cell: int = 400,
    overdispersion: bool = True,
    rng: np.random.Generator | int | None = None,
) -> tuple[AcceptanceCounts, dict]:
    """Simulate aggregated counts from the model's generative process.

    Divergences are drawn uniformly in [0, 0.1] for generic drafters (their mixture is close to
    every task) and in [0, 0.9] for fine-tuned ones. Task and drafter effects are drawn from
    their population distributions.

    Returns
    -------
    counts : AcceptanceCounts
    truth : dict
        The parameters used, with the drawn ``task_effect`` and ``drafter_effect``.
    """
    rng = np.random.default_rng(rng)
    truth = dict(TRUE_PARAMETERS if parameters is None else parameters)
    index_effect, position_effect = np.asarray(truth["index_effect"]), np.asarray(truth["position_effect"])
    truth["task_effect"] = rng.normal(0, truth["sigma_task"], n_tasks)
    truth["drafter_effect"] = rng.normal(0, truth["sigma_drafter"], len(drafters))
    parameters_now = {**truth, "index_effect": index_effect, "position_effect": position_effect}
    index, position = (grid.reshape(-1) for grid in np.meshgrid(
        np.arange(len(index_effect)), np.arange(len(position_effect)), indexing="ij"))
    rows = []
    # Draws interleave per task x drafter (divergence, then each cell's rate and count): the stream is fixed.
    for task in range(n_tasks):
        for code, (name, kind) in enumerate(drafters):
            finetuned = int(kind == "finetuned")
            divergence = rng.uniform(0, 0.9 if finetuned else 0.1)
            design = {"finetuned": finetuned, "divergence": divergence, "draft_index": index,
                      "position_bin": position, "task": np.full(index.size, task), "drafter": np.full(index.size, code)}
            rates = expit(linear_predictor(parameters_now, design, len(index_effect), len(position_effect)))
            for i, p, rate in zip(index, position, rates, strict=True):
                if overdispersion:
                    rate = rng.beta(rate * truth["kappa"], (1 - rate) * truth["kappa"])
                n = max(1, int(evaluated_per_cell * 0.8 ** i))
                rows.append({"task": f"task{task}", "drafter": name, "drafter_kind": kind, "draft_index": int(i),
                             "position_bin": int(p), "evaluated": n, "accepted": int(rng.binomial(n, rate)),
                             "divergence": divergence, "finetuned": finetuned, "task_code": task,
                             "drafter_code": code})
    cells = pd.DataFrame(rows)
    drafter_names = [name for name, _ in drafters]
    # Drafter codes must follow sorted names, as aggregate_counts assigns them.
    order = {name: i for i, name in enumerate(sorted(drafter_names))}
    truth["drafter_effect"] = np.array([truth["drafter_effect"][drafter_names.index(n)] for n in sorted(drafter_names)])
    cells["drafter_code"] = cells["drafter"].map(order)
    counts = AcceptanceCounts(cells, [f"task{t}" for t in range(n_tasks)], sorted(drafter_names),
                              np.arange(1, len(position_effect)) * 64.0, "js", "total_len", {})
    return counts, truth


def zero_sum_truth(truth: dict, drafter_kinds: list[str]) -> dict:
    """The true parameters as the zero-sum model identifies them (:class:`specsim.model.ModelOptions`).

    Task effects are centred on their mean and drafter effects on their kind's mean; the
    intercept takes the task mean and the generic drafters' mean, ``b_finetuned`` the difference
    between the fine-tuned and the generic drafters' means. The cells' rates are unchanged.

    Parameters
    ----------
    truth : dict
        As returned by :func:`synthetic_counts` (``drafter_effect`` in sorted drafter order).
    drafter_kinds : list of str
        ``generic`` or ``finetuned`` per drafter, in the same order.
    """
    kinds = np.asarray(drafter_kinds)
    drafter = np.asarray(truth["drafter_effect"], dtype=float)
    task = np.asarray(truth["task_effect"], dtype=float)
    kind_mean = {kind: drafter[kinds == kind].mean() if np.any(kinds == kind) else 0.0
                 for kind in ("generic", "finetuned")}
    return {**truth, "intercept": truth["intercept"] + task.mean() + kind_mean["generic"],
            "b_finetuned": truth["b_finetuned"] + kind_mean["finetuned"] - kind_mean["generic"],
            "task_effect": task - task.mean(),
            "drafter_effect": drafter - np.array([kind_mean[kind] for kind in kinds])}

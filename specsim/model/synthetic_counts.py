"""Counts simulated from the hierarchical model with known parameters (parameter recovery, SBC).

The generative process is the model's own (:func:`specsim.model.spec.linear_predictor`, a
beta-binomial whose concentration grows with the prompts behind a cell), over a design that holds
what the model must tell apart: drafter types with opposite draft-index profiles, fine-tuned
drafters on and off their own tasks, tasks whose contexts reach past some drafters' training
windows, and length divergences that do not follow the content match.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from specsim.model.data import AcceptanceCounts, beyond_window
from specsim.model.drafting import context_doublings, gamma_doublings
from specsim.model.spec import linear_predictor

__all__ = ["TRUE_PARAMETERS", "TRUE_DRAFTING", "SyntheticDrafter", "DEFAULT_DRAFTERS", "synthetic_counts"]

#: Parameters of a plausible population of two drafter types (logit scale), in the order of the
#: types ``feature-head``, ``lookup``: a head's acceptance falls with the draft index and with context
#: past its training window, a lookup's rises with the draft index. Effects that the model makes sum
#: to zero (types) are given summing to zero.
TRUE_PARAMETERS: dict[str, Any] = {
    "intercept": 0.2, "type_effect": np.array([0.25, -0.25]), "b_finetuned": np.array([0.4, 0.3]),
    "b_content": 0.6, "b_divergence": -0.8, "b_interaction": -0.6,
    "b_beyond": np.array([-0.45, 0.0]), "b_beyond_finetuned": np.array([0.3, 0.0]),
    "index_effect": np.array([[0.0, -0.3, -0.5, -0.6], [0.0, 0.6, 0.9, 1.1]]),
    "position_effect": np.array([0.0, 0.1, 0.15]),
    "b_index_finetuned": 0.05, "b_position_finetuned": 0.1, "sigma_task": 0.3, "sigma_drafter": 0.15,
    "sigma_task_type": 0.3, "sigma_pair": 0.2, "kappa": 40.0,
}
TYPES = ["feature-head", "lookup"]
#: Parameters of the lookups' chance of drafting at all (:mod:`specsim.model.drafting`): about 0.65 at
#: the mean at 256 tokens of context, spread over tasks and drafters as on the reference traces
#: (0.45-0.81), rising by 0.4 logit per doubling of context (each lookup's slope drawn around it) and
#: with the output's progress (the position walk), as prompt lookup does on the length experiment, and
#: falling by 0.2 logit per doubling of the draft length gamma (prompt lookup's 0.80 / 0.76 / 0.72 at
#: gamma 2 / 4 / 8 on the same prompts).
TRUE_DRAFTING: dict[str, Any] = {"draft_intercept": 0.6, "sigma_draft_task": 0.4, "sigma_draft_drafter": 0.4,
                                 "sigma_draft_pair": 0.3, "draft_b_context": 0.4, "sigma_draft_context": 0.2,
                                 "draft_b_gamma": -0.2, "draft_position_effect": np.array([0.0, 0.5, 0.8]),
                                 "draft_kappa": 40.0}


@dataclass(frozen=True)
class SyntheticDrafter:
    """One simulated drafter: its name, kind, type, training window (tokens; None: none) and own tasks."""

    name: str
    kind: str
    drafter_type: str
    window: float | None = None
    own_tasks: tuple[int, ...] = ()


#: Per type a generic drafter and two fine-tuned ones, each on its own task; the heads' windows are
#: short (256), medium (512) and long (2048), the lookups have none.
DEFAULT_DRAFTERS = (
    SyntheticDrafter("head-generic", "generic", "feature-head", 512.0),
    SyntheticDrafter("head-a", "finetuned", "feature-head", 256.0, (0,)),
    SyntheticDrafter("head-b", "finetuned", "feature-head", 2048.0, (1,)),
    SyntheticDrafter("lookup-generic", "generic", "lookup"),
    SyntheticDrafter("lookup-a", "finetuned", "lookup", None, (0,)),
    SyntheticDrafter("lookup-b", "finetuned", "lookup", None, (1,)),
)


def _zero_sum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` minus their group's mean (a group of one gets 0), as the model identifies effects."""
    out = np.asarray(values, dtype=float).copy()
    for group in np.unique(groups):
        out[groups == group] -= out[groups == group].mean()
    return out


def synthetic_counts(
    parameters: dict | None = None,
    *,
    n_tasks: int = 6,
    drafters: Sequence[SyntheticDrafter] = DEFAULT_DRAFTERS,
    evaluated_per_cell: int = 400,
    prompts_per_cell: int = 12,
    position_edges: np.ndarray = np.array([64.0, 128.0]),
    overdispersion: bool = True,
    rng: np.random.Generator | int | None = None,
    drafting: dict[str, Any] | None = None,
    steps_per_cell: int = 600,
    drafting_gammas: Sequence[int] = (2, 4, 8),
) -> tuple[AcceptanceCounts, dict]:
    """Simulate aggregated counts from the model's generative process.

    Task ``k``'s prompts are ``64 * 2**k`` tokens long, so its contexts reach past a window of
    256 from task 2 on and past 2048 at task 5; a cell's context is the prompt plus the middle of
    its position bin. Divergences are 0 on a fine-tuned drafter's own task, uniform in
    [0.2, 0.9] elsewhere, and in [0, 0.1] for generic drafters. Task and drafter effects are
    drawn from their populations and centred as the model identifies them (tasks on their mean,
    drafters on their kind and type's mean; with ``sigma_task_type``, a task's effect per type on
    both; with ``sigma_pair``, a task x drafter pair's effect off all of these, as
    :func:`specsim.model.hierarchical.pair_layout` identifies it), so ``truth`` holds the parameters
    a fit recovers.

    With ``drafting`` (parameters as :data:`TRUE_DRAFTING`), the lookups also draft nothing at
    some steps: ``steps_per_cell`` steps per task x lookup x gamma (``drafting_gammas``) x position
    bin at the cell's context,
    each prompt's chance of drafting drawn around the cell's with concentration ``draft_kappa`` (so
    the cell's mean over ``prompts_per_cell`` prompts varies as the model says). They are drawn after the acceptance
    counts, which stay those of the same seed without them.

    Returns
    -------
    counts : AcceptanceCounts
    truth : dict
        The parameters used, with the drawn ``task_effect`` and ``drafter_effect`` (drafters in
        sorted name order, as the counts' codes); with ``drafting``, also its parameters and the
        drawn ``draft_task_effect``, ``draft_drafter_effect`` (lookups in sorted name order) and
        ``draft_pair_effect`` (drafter-major, the order of
        :func:`specsim.model.drafting.drafting_pairs` on ``counts.drafting``) and ``draft_context_slope``.
    """
    rng = np.random.default_rng(rng)
    truth: dict[str, Any] = {k: np.asarray(v, dtype=float) if isinstance(v, np.ndarray) else v
             for k, v in (TRUE_PARAMETERS if parameters is None else parameters).items()}
    drafters = sorted(drafters, key=lambda d: d.name)
    types = sorted({d.drafter_type for d in drafters})
    n_index = truth["index_effect"].shape[-1]
    n_bins = len(truth["position_effect"])
    truth["task_effect"] = _zero_sum(rng.normal(0, truth["sigma_task"], n_tasks), np.zeros(n_tasks))
    groups = np.array([f"{d.kind}/{d.drafter_type}" for d in drafters])
    truth["drafter_effect"] = _zero_sum(rng.normal(0, truth["sigma_drafter"], len(drafters)), groups)
    if "sigma_task_type" in truth:  # a task's effect per type, summing to zero over tasks and over types
        z = rng.normal(0, truth["sigma_task_type"], (n_tasks, len(types)))
        truth["task_type_effect"] = z - z.mean(axis=0) - z.mean(axis=1, keepdims=True) + z.mean()
    if "sigma_pair" in truth:  # task-major pairs, every pair measured: the model's pair order
        pair_task, pair_drafter = np.divmod(np.arange(n_tasks * len(drafters)), len(drafters))
        pair_type = np.array([types.index(drafters[r].drafter_type) for r in pair_drafter])
        spanned = np.hstack([np.eye(n_tasks)[pair_task], np.eye(len(drafters))[pair_drafter],
                             np.eye(n_tasks * len(types))[pair_task * len(types) + pair_type]])
        z = rng.normal(0, truth["sigma_pair"], len(pair_task))
        truth["pair_effect"] = z - spanned @ np.linalg.lstsq(spanned, z, rcond=None)[0]
    # The last bin is as wide as the one before it (the first bin's width with one edge).
    edges = np.asarray(position_edges, dtype=float)
    bounds = np.concatenate([[0.0], edges, [2 * edges[-1] - (edges[-2] if len(edges) > 1 else 0.0)]])
    middles = (bounds[:-1] + bounds[1:]) / 2
    index, position = (grid.reshape(-1) for grid in np.meshgrid(np.arange(n_index), np.arange(n_bins), indexing="ij"))
    rows = []
    for task in range(n_tasks):
        context = 64.0 * 2 ** task + middles[position]
        for code, drafter in enumerate(drafters):
            finetuned = int(drafter.kind == "finetuned")
            own = int(task in drafter.own_tasks)
            divergence = 0.0 if own else rng.uniform(0.2, 0.9) if finetuned else rng.uniform(0, 0.1)
            beyond = beyond_window(context, np.inf if drafter.window is None else drafter.window)
            type_code = types.index(drafter.drafter_type)
            design = {"finetuned": finetuned, "drafter_type": np.full(index.size, type_code),
                      "content_match": own, "divergence": divergence, "beyond": beyond, "draft_index": index,
                      "position_bin": position, "task": np.full(index.size, task),
                      "drafter": np.full(index.size, code), "pair": np.full(index.size, task * len(drafters) + code)}
            rates = expit(linear_predictor(truth, design, n_index, n_bins))
            for i, p, rate, cell_context, cell_beyond in zip(index, position, rates, context, beyond, strict=True):
                if overdispersion:
                    concentration = truth["kappa"] * prompts_per_cell
                    rate = rng.beta(rate * concentration, (1 - rate) * concentration)
                n = max(1, int(evaluated_per_cell * 0.8 ** i))
                rows.append({"task": f"task{task}", "drafter": drafter.name, "drafter_kind": drafter.kind,
                             "drafter_type": drafter.drafter_type, "draft_index": int(i), "position_bin": int(p),
                             "evaluated": n, "accepted": int(rng.binomial(n, rate)),
                             "context_len_mean": float(cell_context), "prompts": prompts_per_cell,
                             "divergence": divergence, "beyond": float(cell_beyond), "finetuned": finetuned,
                             "content_match": own, "task_code": task, "drafter_code": code,
                             "type_code": type_code})
    cells = pd.DataFrame(rows)
    names = [d.name for d in drafters]
    drafting_rows = pd.DataFrame(columns=["task", "drafter", "gamma", "position_bin", "steps", "drafted", "prompts",
                                          "context"])
    if drafting is not None:
        lookups = [d.name for d in drafters if d.drafter_type == "lookup"]
        truth.update(drafting)
        truth["draft_task_effect"] = _zero_sum(rng.normal(0, drafting["sigma_draft_task"], n_tasks), np.zeros(n_tasks))
        truth["draft_drafter_effect"] = _zero_sum(rng.normal(0, drafting["sigma_draft_drafter"], len(lookups)),
                                                  np.zeros(len(lookups)))
        truth["draft_pair_effect"] = rng.normal(0, drafting["sigma_draft_pair"], n_tasks * len(lookups))
        truth["draft_context_slope"] = drafting["draft_b_context"] + rng.normal(
            0, drafting["sigma_draft_context"], len(lookups))
        walk = np.asarray(drafting["draft_position_effect"], dtype=float)
        found = []
        for code, name in enumerate(lookups):
            for task, gamma, position_bin in itertools.product(range(n_tasks), drafting_gammas, range(n_bins)):
                context = 64.0 * 2 ** task + middles[position_bin]
                chance = expit(drafting["draft_intercept"] + truth["draft_task_effect"][task]
                               + truth["draft_drafter_effect"][code]
                               + truth["draft_pair_effect"][code * n_tasks + task]
                               + truth["draft_context_slope"][code] * context_doublings(context)
                               + drafting.get("draft_b_gamma", 0.0) * gamma_doublings(gamma)
                               + walk[position_bin])
                concentration = drafting["draft_kappa"] * prompts_per_cell
                cell_chance = rng.beta(chance * concentration, (1 - chance) * concentration)
                found.append({"task": f"task{task}", "drafter": name, "gamma": int(gamma),
                              "position_bin": position_bin, "steps": steps_per_cell,
                              "drafted": int(rng.binomial(steps_per_cell, cell_chance)),
                              "prompts": prompts_per_cell, "context": context})
        drafting_rows = pd.DataFrame(found)
    counts = AcceptanceCounts(
        cells, [f"task{t}" for t in range(n_tasks)], names, np.asarray(position_edges, dtype=float), "js",
        "total_len", {}, {}, types, {d.name: np.inf if d.window is None else d.window for d in drafters},
        {d.name: [f"task{t}" for t in d.own_tasks] for d in drafters}, drafting_rows)
    return counts, truth

"""The chance that a variable-length drafter drafts anything at a step, by task and drafter.

A lookup drafter (prompt lookup, a datastore) proposes nothing where its index holds no match for
the last tokens. Such a step is a plain target step: it costs one forward pass and emits one
token. Conditional acceptance (:mod:`specsim.model.hierarchical`) counts drafted tokens only, so
without this part a prediction would assume a draft at every step. On the reference traces the
chance of drafting at all varies between 0.45 and 0.81 by task and drafter. Once a lookup drafts
index ``d - 1`` it drafts index ``d`` with probability 0.96-1.00 (its match runs on), so the model
describes only the first index. Prediction uses 1 for the later ones.

For task ``t`` and drafter ``r`` (the drafters that drafted nothing at some step)::

    logit q[t, r] = draft_intercept + draft_drafter_effect[r] + draft_task_effect[t] + draft_pair_effect[t, r]
    drafted[t, r] ~ BetaBinomial(steps[t, r], q kappa m, (1 - q) kappa m)

The task and drafter effects sum to zero. The pair effect (with two tasks and two drafters or more; else
0) is what a task does to one drafter and not to the others: prompt lookup drafts at 0.80 of news steps,
where the datastores draft at 0.45-0.49. ``m`` is the number of prompts behind the cell, so a cell's
over-dispersion shrinks with its prompts, as in the acceptance model. ``kappa`` is the concentration of
one prompt's chance around its pair's. Cells of many prompts hardly tell it apart from the pair effect, so
its posterior stays close to its prior, Gamma(2, 0.05): mean 40, 90% between 7 and 95. Per-prompt shares
measured on the reference traces give 11 to 130 by the method of moments (median 60; half of the cells are
under-dispersed). Without the pair effect, kappa took up the interaction (1.2 per prompt), and a probe of
ten prompts hardly moved a new task's chance.

The counts are ``offered`` (steps asked for index 0) and ``evaluated``
(steps that drafted it) at draft index 0, summed over position bins and draft lengths.

The part has its own parameters and its own likelihood. Fitted beside the acceptance model
(:func:`specsim.model.hierarchical.fit_model`), it gives the same posterior as one joint model, and the
acceptance model's sampler, SBC and timing are unchanged. The draws go into the same posterior file.
:func:`specsim.model.predict.draft_chance_draws` reads them for a prediction, on a new task from a probe's
drafted and empty steps where one is given.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from specsim.model.spec import Prior

__all__ = ["DRAFTING_PRIORS", "drafting_cells", "build_drafting_model", "fit_drafting", "draft_hazards",
           "DRAFTING_VARIABLES"]

#: Priors of the drafting part (logit scale for effects).
DRAFTING_PRIORS: dict[str, Prior] = {
    "draft_intercept": Prior("normal", (0.5, 1.5), "logit chance of drafting at a step, mean drafter and task"),
    "sigma_draft_task": Prior("gamma", (2.0, 5.0), "spread of tasks' effects on the chance of drafting"),
    "sigma_draft_drafter": Prior("gamma", (2.0, 5.0), "spread of drafters' effects on the chance of drafting"),
    "sigma_draft_pair": Prior("gamma", (2.0, 5.0), "spread of a task x drafter pair's own effect"),
    "draft_kappa": Prior("gamma", (2.0, 0.05), "beta-binomial concentration per prompt behind a cell"),
}

#: Every how many draws of the drafting part are kept (:func:`fit_drafting`).
THINNING = 2
#: Posterior variables of the drafting part, as stored in a posterior file.
DRAFTING_VARIABLES = ("draft_intercept", "draft_task_effect", "draft_drafter_effect", "draft_pair_effect",
                      "sigma_draft_task", "sigma_draft_drafter", "sigma_draft_pair", "draft_kappa")


def drafting_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Steps and steps that drafted, per task x drafter, of the drafters that drafted nothing at some step.

    Parameters
    ----------
    rows : pandas.DataFrame
        Counts rows (:mod:`specsim.traces.counts`) with ``position_bin`` and ``prompts``; those
        without ``offered`` (a fixed-length drafter's, or an engine's without per-step drafts) are
        not used.

    Returns
    -------
    pandas.DataFrame
        ``task``, ``drafter``, ``steps``, ``drafted``, ``prompts``; empty when every drafter
        drafts at every step.
    """
    first = rows[(rows["draft_index"] == 0) & rows["offered"].notna()]
    columns = ["task", "drafter", "steps", "drafted", "prompts"]
    if first.empty:
        return pd.DataFrame(columns=columns)
    cells = first.groupby(["task", "drafter"], observed=True).agg(
        steps=("offered", "sum"), drafted=("evaluated", "sum")).reset_index()
    # The prompts behind a cell: those of its first position bin (every prompt starts there), over runs.
    prompts = first[first["position_bin"] == 0].groupby(["task", "drafter"], observed=True)["prompts"].sum(
        min_count=1)
    cells["prompts"] = [prompts.get((t, d), np.nan) for t, d in zip(cells["task"], cells["drafter"], strict=True)]
    cells["prompts"] = pd.to_numeric(cells["prompts"]).fillna(1).clip(lower=1).astype(np.int64)
    cells["steps"] = cells["steps"].astype(np.int64)
    cells["drafted"] = cells["drafted"].astype(np.int64)
    partial = cells.groupby("drafter")[["steps", "drafted"]].sum()
    partial = partial.index[partial["drafted"] < partial["steps"]]
    cells = cells[cells["drafter"].isin(partial) & (cells["steps"] > 0)]
    return cells[columns].sort_values(["drafter", "task"]).reset_index(drop=True)


def build_drafting_model(cells: pd.DataFrame):
    """The PyMC model of :func:`drafting_cells` (not sampled); coords ``draft_task``, ``draft_drafter``.

    The observed counts are the data variable ``drafted_count`` (simulation-based calibration swaps them).
    """
    import pymc as pm
    import pytensor.tensor as pt

    from specsim.model.backend import configure_pytensor

    configure_pytensor()
    tasks = sorted(cells["task"].unique())
    drafters = sorted(cells["drafter"].unique())
    task_code = cells["task"].map({t: i for i, t in enumerate(tasks)}).to_numpy()
    drafter_code = cells["drafter"].map({d: i for i, d in enumerate(drafters)}).to_numpy()
    coords = {"draft_task": tasks, "draft_drafter": drafters, "draft_cell": np.arange(len(cells))}
    with pm.Model(coords=coords) as model:
        intercept = DRAFTING_PRIORS["draft_intercept"].pymc("draft_intercept")

        def zero_sum(name: str, size: int, dims: str) -> Any:
            sigma = DRAFTING_PRIORS[f"sigma_{name}"].pymc(f"sigma_{name}")
            if size < 2:
                return pm.Deterministic(f"{name}_effect", pt.zeros(size), dims=dims)
            z = pm.Normal(f"{name}_z", 0.0, 1.0, shape=size)
            return pm.Deterministic(f"{name}_effect", sigma * (z - z.mean()), dims=dims)

        task_effect = zero_sum("draft_task", len(tasks), "draft_task")
        drafter_effect = zero_sum("draft_drafter", len(drafters), "draft_drafter")
        if len(tasks) > 1 and len(drafters) > 1:
            sigma_pair = DRAFTING_PRIORS["sigma_draft_pair"].pymc("sigma_draft_pair")
            # Centred: each pair has hundreds of steps, which fix its effect better than the spread does.
            pair_effect = pm.Normal("draft_pair_effect", 0.0, sigma_pair, dims="draft_cell")
        else:
            # One drafter (or task): a pair's effect is its task's (drafter's), so the term is 0.
            pm.Deterministic("sigma_draft_pair", pt.zeros(()))
            pair_effect = pm.Deterministic("draft_pair_effect", pt.zeros(len(cells)), dims="draft_cell")
        eta = intercept + task_effect[task_code] + drafter_effect[drafter_code] + pair_effect
        chance = pm.math.invlogit(eta)
        kappa = DRAFTING_PRIORS["draft_kappa"].pymc("draft_kappa") * cells["prompts"].to_numpy(float)
        observed = pm.Data("drafted_count", cells["drafted"].to_numpy(), dims="draft_cell")
        pm.BetaBinomial("drafted", n=cells["steps"].to_numpy(), alpha=chance * kappa, beta=(1 - chance) * kappa,
                        observed=observed, dims="draft_cell")
    return model


def fit_drafting(cells: pd.DataFrame, *, draws: int, tune: int, chains: int, seed: int, target_accept: float,
                 sampler: str = "nutpie") -> Any:
    """Sample :func:`build_drafting_model` (nutpie, PyMC's NUTS as fallback); ArviZ ``InferenceData``."""
    import inspect

    import pymc as pm

    model = build_drafting_model(cells)
    # The small model is cheap: longer warm-up, smaller steps and twice the draws, thinned to
    # ``draws`` (the acceptance part's, so that the two posteriors share their draw axis). Its
    # kappa, which the pair effects leave to its prior, mixes slowly without.
    kwargs = dict(draws=THINNING * draws, tune=max(tune, 1000), chains=chains, random_seed=seed + 1,
                  progressbar=False, target_accept=max(target_accept, 0.98))
    if "quiet" in inspect.signature(pm.sample).parameters:
        kwargs["quiet"] = True
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            if sampler != "nutpie":
                raise ImportError
            idata = pm.sample(nuts_sampler="nutpie", **kwargs)
        except ImportError:
            idata = pm.sample(cores=1, compute_convergence_checks=False, **kwargs)
    import arviz as az

    # The kept draws of the groups a fit reads (warm-up groups, where a sampler stores them, are dropped).
    return az.InferenceData(**{group: idata[group].isel(draw=slice(None, None, THINNING)).assign_coords(
        draw=np.arange(draws)) for group in ("posterior", "sample_stats") if group in idata.groups()})


def draft_hazards(chance: float, n_position_bins: int) -> np.ndarray:
    """``continuation`` / ``extension`` table of :class:`specsim.simulate.acceptance.AcceptanceProfile`.

    ``chance`` at the first draft index and 1 after it (a lookup that drafted index ``d - 1`` drafts
    ``d``), in every position bin: shape (2, n_position_bins).
    """
    return np.vstack([np.full(n_position_bins, chance), np.ones(n_position_bins)])

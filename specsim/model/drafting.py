"""The chance that a variable-length drafter drafts anything at a step, by task, drafter, context and position.

A lookup drafter (prompt lookup, a datastore) proposes nothing where its index holds no match for
the last tokens. Such a step is a plain target step: it costs one forward pass and emits one
token. Conditional acceptance (:mod:`specsim.model.hierarchical`) counts drafted tokens only, so
without this part a prediction would assume a draft at every step. On the reference traces the
chance of drafting at all varies between 0.45 and 0.81 by task and drafter. Once a lookup drafts
index ``d - 1`` it drafts index ``d`` with probability 0.96-1.00 (its match runs on), so the model
describes only the first index. Prediction uses 1 for the later ones.

For task ``t``, drafter ``r`` (the drafters that drafted nothing at some step) and position bin ``b``::

    logit q[t, r, g, b] = draft_intercept + draft_drafter_effect[r] + draft_task_effect[t] + draft_pair_effect[t, r]
                          + draft_context_slope[r] * log2(context[t, r, g, b] / 256)
                          + draft_b_gamma * log2(gamma_g / 4) + draft_position_effect[b]
    drafted[t, r, g, b] ~ BetaBinomial(steps[t, r, g, b], q kappa m, (1 - q) kappa m)

The task and drafter effects sum to zero. The pair effect (with two tasks and two drafters or more; else 0;
non-centred, ``sigma_draft_pair * z``) is what a task does to one drafter and not to the others: prompt lookup
drafts at 0.80 of news steps, where the datastores draft at 0.45-0.49. ``m`` is the number of prompts behind
the cell, so a cell's over-dispersion shrinks with its prompts, as in the acceptance model. ``kappa`` is the
concentration of one prompt's chance around its cell's; prior Gamma(2, 0.05): mean 40, 90% between 7 and 95.
With cells pooled over position bins it stayed at its prior; per position bin, the reference traces fit it at
3.6 (the bins of one pair vary more than binomially) and the length experiment, one lookup, leaves it near its
prior (46). Without the pair effect, kappa took up the interaction (1.2 per prompt), and a probe of ten
prompts hardly moved a new task's chance.

Length enters twice, because it acts twice. The context slope (per drafter, around a mean
``draft_b_context`` with spread ``sigma_draft_context``; the mean alone with one drafter) is the change per
doubling of the context (prompt plus generated tokens) the lookup searches: on the length-controlled
experiment, prompt lookup's first position bin drafts at 0.51 of its steps with 128-token prompts and at
0.92 with 4096-token ones. The position walk (pinned at 0 in the first bin, steps of spread
``sigma_draft_position``) is what the output's own progress adds at one context: within the 128-token regime
prompt lookup drafts at 0.51 of its steps in the first 32 generated tokens and at 0.78 after, since the
output starts to repeat itself. Without a context (counts that give none), the slope is left out.

The draft length ``gamma`` enters as doublings from 4 (0 for counts without a gamma), with one slope
``draft_b_gamma`` for every drafter, fitted where some drafter was measured at two gammas or more (else 0):
a longer draft covers more of the output in one step, so the steps that find no match are a larger share
of the steps. On the length-controlled experiment prompt lookup drafts at 0.80, 0.76 and 0.72 of its
steps at gamma 2, 4 and 8 on the same ctx-128 prompts. Without the term the chance pools the gammas.

The counts are ``offered`` (steps asked for index 0) and ``evaluated`` (steps that drafted it) at
draft index 0 per position bin, summed over draft lengths; a cell's context is the steps-weighted mean
of its rows' ``context_len_mean`` (the mean context of the steps that drafted).

The part has its own parameters and its own likelihood. Fitted beside the acceptance model
(:func:`specsim.model.hierarchical.fit_model`), it gives the same posterior as one joint model, and the
acceptance model's sampler, SBC and timing are unchanged. The draws go into the same posterior file.
:func:`specsim.model.predict.draft_chance_draws` reads them for a prediction, per position bin of the
workload, on a new task from a probe's drafted and empty steps where one is given.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from specsim.model.spec import Prior

__all__ = ["DRAFTING_PRIORS", "drafting_cells", "build_drafting_model", "fit_drafting", "draft_hazards",
           "DRAFTING_VARIABLES", "DRAFT_CONTEXT_REFERENCE", "DRAFT_GAMMA_REFERENCE", "context_doublings",
           "gamma_doublings"]

#: Priors of the drafting part (logit scale for effects).
DRAFTING_PRIORS: dict[str, Prior] = {
    "draft_intercept": Prior("normal", (0.5, 1.5), "logit chance of drafting at a step, mean drafter and task, "
                                                  "256 tokens of context, first position bin"),
    "sigma_draft_task": Prior("gamma", (2.0, 5.0), "spread of tasks' effects on the chance of drafting"),
    "sigma_draft_drafter": Prior("gamma", (2.0, 5.0), "spread of drafters' effects on the chance of drafting"),
    "sigma_draft_pair": Prior("gamma", (2.0, 5.0), "spread of a task x drafter pair's own effect"),
    "draft_b_context": Prior("normal", (0.0, 1.0), "change of logit chance of drafting per doubling of context, "
                                                   "mean over drafters"),
    "sigma_draft_context": Prior("gamma", (2.0, 5.0), "spread of drafters' context slopes"),
    "sigma_draft_position": Prior("gamma", (2.0, 5.0), "step of the chance of drafting's position walk"),
    "draft_b_gamma": Prior("normal", (0.0, 0.5), "change of logit chance of drafting per doubling of the draft "
                                                 "length gamma (from 4)"),
    "draft_kappa": Prior("gamma", (2.0, 0.05), "beta-binomial concentration per prompt behind a cell"),
}

#: Context (tokens) at which the context term is 0: the intercept is the chance of drafting there.
DRAFT_CONTEXT_REFERENCE = 256.0
#: Draft length at which the gamma term is 0.
DRAFT_GAMMA_REFERENCE = 4.0
#: Every how many draws of the drafting part are kept (:func:`fit_drafting`).
THINNING = 2
#: Posterior variables of the drafting part, as stored in a posterior file.
DRAFTING_VARIABLES = ("draft_intercept", "draft_task_effect", "draft_drafter_effect", "draft_pair_effect",
                      "draft_b_context", "draft_context_slope", "draft_b_gamma", "draft_position_effect",
                      "sigma_draft_task", "sigma_draft_drafter", "sigma_draft_pair", "sigma_draft_context",
                      "sigma_draft_position", "draft_kappa")


def context_doublings(context: np.ndarray | float) -> np.ndarray:
    """The context term's covariate: ``log2(context / 256)`` (0 where the context is unknown).

    Examples
    --------
    >>> context_doublings(np.array([128.0, 256.0, 4096.0, np.nan])).tolist()
    [-1.0, 0.0, 4.0, 0.0]
    """
    return _doublings(np.maximum(np.asarray(context, dtype=float), 1.0), DRAFT_CONTEXT_REFERENCE)


def gamma_doublings(gamma: np.ndarray | float) -> np.ndarray:
    """The gamma term's covariate: ``log2(gamma / 4)`` (0 where the draft length is unknown).

    Examples
    --------
    >>> gamma_doublings(np.array([2.0, 4.0, 8.0, np.nan, 0.0])).tolist()
    [-1.0, 0.0, 1.0, 0.0, 0.0]
    """
    return _doublings(np.asarray(gamma, dtype=float), DRAFT_GAMMA_REFERENCE)


def _doublings(values: np.ndarray, reference: float) -> np.ndarray:
    """``log2(values / reference)``, 0 where it is not finite (a value unknown, 0 or negative)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        doublings = np.log2(values / reference)
    return np.where(np.isfinite(doublings), doublings, 0.0)


def drafting_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Steps and steps that drafted, per task x drafter x gamma x position bin (drafters that drafted nothing at times).

    Parameters
    ----------
    rows : pandas.DataFrame
        Counts rows (:mod:`specsim.traces.counts`) with ``position_bin``, ``prompts`` and
        ``context_len_mean``; those without ``offered`` (a fixed-length drafter's, or an engine's
        without per-step drafts) are not used.

    Returns
    -------
    pandas.DataFrame
        ``task``, ``drafter``, ``gamma`` (NaN where the rows give none), ``position_bin``, ``steps``,
        ``drafted``, ``prompts`` and ``context`` (mean tokens of context; NaN for every cell when some
        cell has none); empty when every drafter drafts at every step.
    """
    first = rows[(rows["draft_index"] == 0) & rows["offered"].notna()].copy()
    columns = ["task", "drafter", "gamma", "position_bin", "steps", "drafted", "prompts", "context"]
    if first.empty:
        return pd.DataFrame(columns=columns)
    context = pd.to_numeric(first.get("context_len_mean", pd.Series(np.nan, index=first.index)), errors="coerce")
    first["context_weight"] = context * first["offered"]
    first["context_steps"] = first["offered"].where(context.notna(), 0)
    first["gamma"] = pd.to_numeric(first["gamma"], errors="coerce") if "gamma" in first else np.nan
    keys = ["task", "drafter", "gamma", "position_bin"]
    cells = first.groupby(keys, observed=True, dropna=False).agg(
        steps=("offered", "sum"), drafted=("evaluated", "sum"), prompts=("prompts", lambda x: x.sum(min_count=1)),
        context_weight=("context_weight", "sum"), context_steps=("context_steps", "sum")).reset_index()
    cells["context"] = cells.pop("context_weight") / cells.pop("context_steps").where(lambda x: x > 0)
    if cells["context"].isna().any():
        cells["context"] = np.nan  # a slope on some cells only would tie it to those cells' tasks
    cells["prompts"] = pd.to_numeric(cells["prompts"]).fillna(1).clip(lower=1).astype(np.int64)
    cells["steps"] = cells["steps"].astype(np.int64)
    cells["drafted"] = cells["drafted"].astype(np.int64)
    cells["position_bin"] = cells["position_bin"].astype(np.int64)
    partial = cells.groupby("drafter")[["steps", "drafted"]].sum()
    partial = partial.index[partial["drafted"] < partial["steps"]]
    cells = cells[cells["drafter"].isin(partial) & (cells["steps"] > 0)]
    return cells[columns].sort_values(["drafter", "task", "gamma", "position_bin"]).reset_index(drop=True)


def drafting_pairs(cells: pd.DataFrame) -> list[list[str]]:
    """The task x drafter pairs of :func:`drafting_cells`, in the order of the ``draft_pair`` coordinate."""
    pairs = cells[["task", "drafter"]].drop_duplicates()
    return [[str(t), str(d)] for t, d in pairs.itertuples(index=False)]


def build_drafting_model(cells: pd.DataFrame, n_position_bins: int | None = None):
    """The PyMC model of :func:`drafting_cells` (not sampled).

    Coords ``draft_task``, ``draft_drafter``, ``draft_pair`` (:func:`drafting_pairs`),
    ``draft_position_bin`` (``n_position_bins``: the acceptance model's bins; default the cells'
    largest bin plus one) and ``draft_cell``. The observed counts are the data variable
    ``drafted_count`` (simulation-based calibration swaps them).
    """
    import pymc as pm
    import pytensor.tensor as pt

    from specsim.model.backend import configure_pytensor

    configure_pytensor()
    tasks = sorted(cells["task"].unique())
    drafters = sorted(cells["drafter"].unique())
    pairs = drafting_pairs(cells)
    task_code = cells["task"].map({t: i for i, t in enumerate(tasks)}).to_numpy()
    drafter_code = cells["drafter"].map({d: i for i, d in enumerate(drafters)}).to_numpy()
    pair_code = np.array([pairs.index([str(t), str(d)]) for t, d in zip(cells["task"], cells["drafter"], strict=True)])
    position = cells["position_bin"].to_numpy(dtype=int) if "position_bin" in cells else np.zeros(len(cells), int)
    n_bins = int(position.max()) + 1 if n_position_bins is None else int(n_position_bins)
    has_context = "context" in cells and bool(cells["context"].notna().all())
    doublings = context_doublings(cells["context"].to_numpy(float)) if has_context else np.zeros(len(cells))
    gammas = gamma_doublings(cells["gamma"].to_numpy(float)) if "gamma" in cells else np.zeros(len(cells))
    has_gamma = len(np.unique(gammas)) > 1
    coords = {"draft_task": tasks, "draft_drafter": drafters, "draft_pair": np.arange(len(pairs)),
              "draft_position_bin": np.arange(n_bins), "draft_cell": np.arange(len(cells))}
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
            # Non-centred: with a small spread a centred pair effect sits in a funnel, and SBC at 200
            # simulations put the centred posterior of the spread above its truth (rank p = 0.003).
            pair_z = pm.Normal("draft_pair_z", 0.0, 1.0, shape=len(pairs))
            pair_effect = pm.Deterministic("draft_pair_effect", sigma_pair * pair_z, dims="draft_pair")
        else:
            # One drafter (or task): a pair's effect is its task's (drafter's), so the term is 0.
            pm.Deterministic("sigma_draft_pair", pt.zeros(()))
            pair_effect = pm.Deterministic("draft_pair_effect", pt.zeros(len(pairs)), dims="draft_pair")
        if has_context:
            b_context = DRAFTING_PRIORS["draft_b_context"].pymc("draft_b_context")
            if len(drafters) > 1:
                sigma_context = DRAFTING_PRIORS["sigma_draft_context"].pymc("sigma_draft_context")
                z = pm.Normal("draft_context_z", 0.0, 1.0, shape=len(drafters))
                slope = pm.Deterministic("draft_context_slope", b_context + sigma_context * z, dims="draft_drafter")
            else:
                pm.Deterministic("sigma_draft_context", pt.zeros(()))
                slope = pm.Deterministic("draft_context_slope", b_context * pt.ones(1), dims="draft_drafter")
        else:
            # No context for some cells: the term is left out (its variables stay in the file as 0).
            pm.Deterministic("draft_b_context", pt.zeros(()))
            pm.Deterministic("sigma_draft_context", pt.zeros(()))
            slope = pm.Deterministic("draft_context_slope", pt.zeros(len(drafters)), dims="draft_drafter")
        if has_gamma:
            b_gamma = DRAFTING_PRIORS["draft_b_gamma"].pymc("draft_b_gamma")
        else:  # one draft length (or none given): the term is left out
            b_gamma = pm.Deterministic("draft_b_gamma", pt.zeros(()))
        if n_bins > 1:
            sigma_position = DRAFTING_PRIORS["sigma_draft_position"].pymc("sigma_draft_position")
            steps = pm.Normal("draft_position_steps", 0.0, 1.0, shape=n_bins - 1) * sigma_position
            walk = pt.concatenate([pt.zeros(1), pt.cumsum(steps)])
        else:
            pm.Deterministic("sigma_draft_position", pt.zeros(()))
            walk = pt.zeros(1)
        position_effect = pm.Deterministic("draft_position_effect", walk, dims="draft_position_bin")
        eta = (intercept + task_effect[task_code] + drafter_effect[drafter_code] + pair_effect[pair_code]
               + slope[drafter_code] * doublings + b_gamma * gammas + position_effect[position])
        chance = pm.math.invlogit(eta)
        kappa = DRAFTING_PRIORS["draft_kappa"].pymc("draft_kappa") * cells["prompts"].to_numpy(float)
        observed = pm.Data("drafted_count", cells["drafted"].to_numpy(), dims="draft_cell")
        pm.BetaBinomial("drafted", n=cells["steps"].to_numpy(), alpha=chance * kappa, beta=(1 - chance) * kappa,
                        observed=observed, dims="draft_cell")
    return model


def fit_drafting(cells: pd.DataFrame, *, draws: int, tune: int, chains: int, seed: int, target_accept: float,
                 sampler: str = "nutpie", n_position_bins: int | None = None) -> Any:
    """Sample :func:`build_drafting_model` (nutpie, PyMC's NUTS as fallback); ArviZ ``InferenceData``."""
    import inspect

    import pymc as pm

    model = build_drafting_model(cells, n_position_bins)
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


def draft_hazards(chance: float | np.ndarray, n_position_bins: int) -> np.ndarray:
    """``continuation`` / ``extension`` table of :class:`specsim.simulate.acceptance.AcceptanceProfile`.

    ``chance`` (one number, or one per position bin) at the first draft index and 1 after it (a
    lookup that drafted index ``d - 1`` drafts ``d``): shape (2, n_position_bins).
    """
    first = np.broadcast_to(np.asarray(chance, dtype=float), (n_position_bins,))
    return np.vstack([first, np.ones(n_position_bins)])

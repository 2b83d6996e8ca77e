"""Hierarchical model of conditional acceptance: drafter types, fine-tuning, content, length and window.

The linear predictor and the priors are defined once in :mod:`specsim.model.spec`; this
module turns them into a PyMC model on aggregated counts, samples it and diagnoses the
sampler. For cell ``c`` with ``n_c`` evaluated and ``y_c`` accepted drafted tokens from ``m_c``
sequences::

    y_c ~ BetaBinomial(n_c, a_c * kappa * m_c, (1 - a_c) * kappa * m_c)   (Binomial without over-dispersion)

with ``logit a_c`` from :func:`specsim.model.spec.linear_predictor`. ``kappa`` is the
concentration of one prompt's acceptance around the cell's: the mean of ``m`` prompts' rates
varies ``m`` times less, so a cell of 12 prompts is not as over-dispersed as a cell of one
(``kappa * m`` is exact for equal tokens per prompt; :class:`ModelOptions`). ``index_effect``
(one walk per drafter type) and ``position_effect`` are first-order Gaussian random walks pinned at
0 for the first index and bin; type effects sum to zero; task and drafter effects are normal
random effects that sum to zero (drafters: within each kind and type), so the intercept and
``b_finetuned`` are identified by the data (:class:`ModelOptions`); pair effects (task x drafter)
are normal effects projected off the task, drafter and task x type effects (:func:`pair_layout`). Terms the data cannot
identify are left out and said so (:func:`identified_options`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL
from specsim.model.artifact import Posterior, PosteriorMetadata, posterior_from_idata, save_posterior
from specsim.model.backend import configure_pytensor
from specsim.model.data import AcceptanceCounts
from specsim.model.spec import PRIORS, SCALE_PARAMETERS, linear_predictor

__all__ = ["ModelOptions", "FitResult", "build_model", "fit_model", "diagnose", "DIAGNOSTIC_THRESHOLDS",
           "MASS_MATRICES", "PARAMETERISATIONS", "SUMMARY_PARAMETERS", "identified_options", "drafter_type_of",
           "pair_layout"]

#: Parameters listed by summaries (CLI, reports), in this order (the chance of drafting's last, where fitted).
SUMMARY_PARAMETERS = ("intercept", "type_effect", "b_finetuned", "b_content", "b_divergence", "b_interaction",
                      "divergence_slope_finetuned", "b_beyond", "b_beyond_finetuned", "beyond_slope_finetuned",
                      "b_index_finetuned", "b_position_finetuned", *SCALE_PARAMETERS, "draft_intercept",
                      "draft_b_context", "draft_context_slope", "draft_b_gamma", "sigma_draft_task",
                      "sigma_draft_drafter", "sigma_draft_pair", "sigma_draft_context", "sigma_draft_position",
                      "draft_kappa")

#: Deterministic transforms of the sampled parameters (left out of the diagnostics).
DETERMINISTICS = ("acceptance", "index_effect", "position_effect", "task_effect", "task_type_effect", "drafter_effect",
                  "divergence_slope_finetuned", "beyond_slope_finetuned", "draft_task_effect", "draft_drafter_effect",
                  "draft_pair_effect", "draft_context_slope", "draft_position_effect", "pair_effect")

#: Gate on the sampler's output (Vehtari et al. 2021; PyMC and ArviZ conventions).
#: NUTS mass matrix adaptations of :func:`fit_model`.
MASS_MATRICES = ("diagonal", "low-rank")
#: Parameterisations of :class:`ModelOptions`.
PARAMETERISATIONS = ("noncentred", "centred", "auto")
DIAGNOSTIC_THRESHOLDS = {"max_r_hat": 1.01, "min_ess_bulk": 400, "min_ess_tail": 400, "max_divergences": 0,
                         "min_bfmi": 0.3}


@dataclass(frozen=True)
class ModelOptions:
    """Which terms the model has.

    Parameters
    ----------
    divergence_terms : bool
        Include ``b_divergence`` and ``b_interaction`` (off: the comparison model for LOO).
    overdispersion : bool
        Beta-binomial likelihood instead of binomial.
    parameterisation : {"noncentred", "centred", "auto"}
        Task and drafter effects as ``sigma * z`` (non-centred: suits groups with little data) or
        drawn directly from ``Normal(0, sigma)`` (centred: suits groups with much data, where the
        non-centred form correlates ``z`` with ``sigma``). ``auto`` takes the centred form when
        every task and drafter has at least :data:`CENTRED_MIN_EVALUATED` evaluated tokens. The
        centred form also draws the random walks' steps directly from ``Normal(0, sigma)``.
    content_term : bool
        Include ``b_content`` (a fine-tuned drafter on its own training task).
    window_terms : bool
        Include ``b_beyond`` and ``b_beyond_finetuned`` (context beyond the training window).
    prompt_dispersion : bool
        Scale the beta-binomial concentration by the sequences behind each cell (off: one
        concentration for every cell, whatever the prompts behind it).
    task_type_terms : bool
        Include ``task_type_effect`` (a task's effect differs between drafter types, spread
        ``sigma_task_type``; effects sum to zero over tasks and over types, so ``task_effect`` and
        ``type_effect`` keep their meaning). Needs two types and two tasks.
    pair_terms : bool
        Include ``pair_effect`` (a drafter's effect differs between tasks, spread ``sigma_pair``;
        effects sum to zero over each task's and each drafter's fitted pairs and, with the task x
        type term, over each task's pairs of one type: :func:`pair_layout`). Needs a design with
        room for them (two tasks and two drafters of one type, each measured on both).

    Task effects always sum to zero, and drafter effects within each drafter kind and type (a
    group of one drafter gives it effect 0), so that the intercept, the type effects and
    ``b_finetuned`` are the measured tasks' and drafters' means rather than sharing them with the
    effects along a ridge that only the priors bound. Prediction for a new task or drafter then adds
    the uncertainty of the population mean, ``sigma * sqrt(1 + 1/n)`` (:mod:`specsim.model.predict`).
    """

    divergence_terms: bool = True
    overdispersion: bool = True
    parameterisation: str = "noncentred"
    content_term: bool = True
    window_terms: bool = True
    prompt_dispersion: bool = True
    task_type_terms: bool = True
    pair_terms: bool = True


def identified_options(counts: AcceptanceCounts, options: ModelOptions) -> tuple[ModelOptions, list[str]]:
    """``options`` without the terms the cells cannot identify, and a note for each one left out.

    The content term needs fine-tuned cells on and off their own tasks (where every fine-tuned
    cell is on its own content, ``b_content`` and ``b_finetuned`` are one number); the window
    terms need a cell past some drafter's training window; the divergence terms need training
    lengths (:func:`specsim.model.model_cells`).
    """
    cells = counts.cells
    notes = []
    finetuned = cells[cells["finetuned"] == 1]
    if options.content_term and finetuned["content_match"].nunique() < 2:
        options = replace(options, content_term=False)
        notes.append("no fine-tuned drafter is measured both on and off its own tasks: the content term is left "
                     "out (b_finetuned carries own content)")
    if options.window_terms and not (cells["beyond"] > 0).any():
        options = replace(options, window_terms=False)
        notes.append("no cell reaches past a drafter's training window: the window terms are left out")
    if options.task_type_terms and (cells["drafter_type"].nunique() < 2 or cells["task"].nunique() < 2):
        options = replace(options, task_type_terms=False)  # one type (or task): task_effect is the whole term
    if options.divergence_terms and cells["divergence"].nunique() < 2:
        options = replace(options, divergence_terms=False)  # no training lengths (model_cells said so)
    if options.pair_terms and pair_layout(counts, options.task_type_terms)[2].shape[1] == 0:
        options = replace(options, pair_terms=False)  # every pair's effect is its task's, drafter's or type's
    return options, notes


def pair_layout(counts: AcceptanceCounts, task_type_terms: bool = True
                ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """The fitted task x drafter pairs, each cell's pair code, and a basis of the pair effects.

    Pair effects are ``basis @ w`` with ``w ~ Normal(0, sigma_pair)``: ``basis`` (pairs x k, orthonormal
    columns) spans the pair effects that are orthogonal to every task's, drafter's and (with
    ``task_type_terms``) task x type's indicator over the fitted pairs, so each such group's pair
    effects sum to zero and the task, drafter and task x type effects keep their meaning. That is the
    distribution of independent ``Normal(0, sigma_pair)`` effects projected onto that space; on a
    complete grid it is the doubly centred effect. ``k`` is 0 where every pair's effect is already
    its task's, drafter's or type's (one task, or one drafter per type).

    Returns
    -------
    pairs : list of [task, drafter]
        In the order of ``pair_effect`` (task code, then drafter code).
    pair_of_cell : numpy.ndarray
        Each cell's index into ``pairs``.
    basis : numpy.ndarray, shape (n_pairs, k)
    """
    cells = counts.cells
    n_drafters, n_types = len(counts.drafters), len(counts.drafter_types)
    task, drafter = cells["task_code"].to_numpy(int), cells["drafter_code"].to_numpy(int)
    keys, pair_of_cell = np.unique(task * n_drafters + drafter, return_inverse=True)
    pair_task, pair_drafter = keys // n_drafters, keys % n_drafters
    pair_type = np.zeros(len(keys), dtype=int)
    pair_type[pair_of_cell] = cells["type_code"].to_numpy(int)
    indicators = [np.eye(len(counts.tasks))[pair_task], np.eye(n_drafters)[pair_drafter]]
    if task_type_terms:
        indicators.append(np.eye(len(counts.tasks) * n_types)[pair_task * n_types + pair_type])
    spanned = np.hstack(indicators)
    left, singular, _ = np.linalg.svd(spanned, full_matrices=True)
    rank = int(np.sum(singular > 1e-9 * singular.max()))
    pairs = [[counts.tasks[t], counts.drafters[r]] for t, r in zip(pair_task, pair_drafter, strict=True)]
    return pairs, pair_of_cell.reshape(-1), left[:, rank:]


#: Evaluated tokens every task and drafter needs for ``parameterisation="auto"`` to centre their effects.
CENTRED_MIN_EVALUATED = 200_000


def resolved_parameterisation(counts: AcceptanceCounts, options: ModelOptions) -> str:
    """``centred`` or ``noncentred``: the option, with ``auto`` decided by the data per group."""
    if options.parameterisation not in PARAMETERISATIONS:
        raise InputError("must be noncentred, centred or auto", field="parameterisation")
    if options.parameterisation != "auto":
        return options.parameterisation
    smallest = min(counts.cells.groupby(group)["evaluated"].sum().min() for group in ("task", "drafter"))
    return "centred" if smallest >= CENTRED_MIN_EVALUATED else "noncentred"


def drafter_kinds(counts: AcceptanceCounts) -> pd.Series:
    """Each drafter's kind, indexed by drafter in the order of ``counts.drafters``."""
    kind = counts.cells.drop_duplicates("drafter").set_index("drafter")["drafter_kind"]
    return kind.loc[list(counts.drafters)]


def drafter_type_of(counts: AcceptanceCounts) -> pd.Series:
    """Each drafter's type, indexed by drafter in the order of ``counts.drafters``."""
    kind = counts.cells.drop_duplicates("drafter").set_index("drafter")["drafter_type"]
    return kind.loc[list(counts.drafters)]


def zero_sum_effects(group: str, sigma: Any, kind: np.ndarray, centred: bool) -> Any:
    """Effects of ``group`` that sum to zero within each kind (a kind of one member has effect 0).

    Centred: one ``ZeroSumNormal(sigma)`` per kind of two or more members. Non-centred:
    ``sigma * P z`` with ``z ~ Normal(0, 1)`` and ``P`` the projection that removes each kind's
    mean (the same distribution; ``z``'s kind means are left to their prior).
    """
    import pymc as pm
    import pytensor.tensor as pt

    size = len(kind)
    if centred:
        effect = pt.zeros(size)
        for k in np.unique(kind):
            members = np.flatnonzero(kind == k)
            if len(members) > 1:
                part = pm.ZeroSumNormal(f"{group}_effect_kind{k}", sigma=sigma, shape=len(members))
                effect = pt.set_subtensor(effect[members], part)
        return pm.Deterministic(f"{group}_effect", effect, dims=group)
    same = (kind[:, None] == kind[None, :]).astype(float)
    projection = np.eye(size) - same / same.sum(axis=1, keepdims=True)
    z = pm.Normal(f"{group}_z", 0.0, 1.0, dims=group)
    return pm.Deterministic(f"{group}_effect", sigma * pt.dot(projection, z), dims=group)


def build_model(counts: AcceptanceCounts, options: ModelOptions = ModelOptions()):
    """Build the PyMC model (not sampled) from aggregated counts.

    Parameters
    ----------
    counts : AcceptanceCounts
    options : ModelOptions
        Terms the cells cannot identify are left out first (:func:`identified_options`).

    Returns
    -------
    pymc.Model
        With coords ``task``, ``drafter``, ``drafter_type``, ``draft_index``, ``position_bin``,
        ``cell``; the observed counts are the data variable ``accepted_count`` (so that a
        compiled model takes other counts, as simulation-based calibration does).
    """
    configure_pytensor()
    import pymc as pm
    import pytensor.tensor as pt

    options, _ = identified_options(counts, options)
    cells = counts.cells
    n_index, n_bins, n_types = counts.n_draft_index, counts.n_position_bins, len(counts.drafter_types)
    coords = {"task": counts.tasks, "drafter": counts.drafters, "drafter_type": counts.drafter_types,
              "draft_index": np.arange(n_index), "position_bin": np.arange(n_bins), "cell": np.arange(len(cells))}
    if options.pair_terms:
        pairs, pair_of_cell, pair_basis = pair_layout(counts, options.task_type_terms)
        coords["pair"] = np.arange(len(pairs))
    with pm.Model(coords=coords) as model:
        design = {
            "finetuned": pm.Data("finetuned", cells["finetuned"].to_numpy(float), dims="cell"),
            "drafter_type": pm.Data("type_of_cell", cells["type_code"].to_numpy(), dims="cell"),
            "content_match": pm.Data("content_match", cells["content_match"].to_numpy(float), dims="cell"),
            "divergence": pm.Data("divergence", cells["divergence"].to_numpy(float), dims="cell"),
            "beyond": pm.Data("beyond", cells["beyond"].to_numpy(float), dims="cell"),
            "draft_index": pm.Data("draft_index_of_cell", cells["draft_index"].to_numpy(), dims="cell"),
            "position_bin": pm.Data("position_bin_of_cell", cells["position_bin"].to_numpy(), dims="cell"),
            "task": pm.Data("task_of_cell", cells["task_code"].to_numpy(), dims="cell"),
            "drafter": pm.Data("drafter_of_cell", cells["drafter_code"].to_numpy(), dims="cell"),
        }
        if options.pair_terms:
            design["pair"] = pm.Data("pair_of_cell", pair_of_cell, dims="cell")
        evaluated = pm.Data("evaluated", cells["evaluated"].to_numpy(), dims="cell")
        observed = pm.Data("accepted_count", cells["accepted"].to_numpy(), dims="cell")

        # Variables are created in a fixed order (it fixes the sampler's parameter vector).
        params: dict[str, Any] = {"intercept": PRIORS["intercept"].pymc("intercept")}
        if n_types > 1:
            params["type_effect"] = pm.ZeroSumNormal("type_effect", sigma=PRIORS["type_effect"].parameters[1],
                                                     dims="drafter_type")
        else:
            params["type_effect"] = pm.Deterministic("type_effect", pt.zeros(1), dims="drafter_type")
        params["b_finetuned"] = PRIORS["b_finetuned"].pymc("b_finetuned", dims="drafter_type")
        if options.content_term:
            params["b_content"] = PRIORS["b_content"].pymc("b_content")
        if options.divergence_terms:
            params["b_divergence"] = PRIORS["b_divergence"].pymc("b_divergence")
            params["b_interaction"] = PRIORS["b_interaction"].pymc("b_interaction")
            # Slope of logit acceptance in divergence for fine-tuned drafters.
            pm.Deterministic("divergence_slope_finetuned", params["b_divergence"] + params["b_interaction"])
        if options.window_terms:
            params["b_beyond"] = PRIORS["b_beyond"].pymc("b_beyond", dims="drafter_type")
            params["b_beyond_finetuned"] = PRIORS["b_beyond_finetuned"].pymc("b_beyond_finetuned",
                                                                             dims="drafter_type")
            # Change per doubling of context beyond the window for fine-tuned drafters of each type.
            pm.Deterministic("beyond_slope_finetuned", params["b_beyond"] + params["b_beyond_finetuned"],
                             dims="drafter_type")

        centred = resolved_parameterisation(counts, options) == "centred"

        def random_walk(name: str, shape: tuple[int, ...], dims: tuple[str, ...]) -> Any:
            """Walks along the last axis, pinned at 0 at its first element (one walk per leading index)."""
            if shape[-1] == 1:
                return pm.Deterministic(name, pt.zeros(shape), dims=dims)
            scale = PRIORS[f"sigma_{name}"].pymc(f"sigma_{name}")
            steps_shape = (*shape[:-1], shape[-1] - 1)
            if centred:
                steps = pm.Normal(f"{name}_steps", 0.0, scale, shape=steps_shape)
            else:
                steps = pm.Normal(f"{name}_steps", 0.0, 1.0, shape=steps_shape) * scale
            walk = pt.concatenate([pt.zeros((*shape[:-1], 1)), pt.cumsum(steps, axis=-1)], axis=-1)
            return pm.Deterministic(name, walk, dims=dims)

        params["index_effect"] = random_walk("index_effect", (n_types, n_index), ("drafter_type", "draft_index"))
        params["position_effect"] = random_walk("position_effect", (n_bins,), ("position_bin",))
        for name in ("b_index_finetuned", "b_position_finetuned"):
            params[name] = PRIORS[name].pymc(name)
        kinds = drafter_kinds(counts).to_numpy()
        types = np.asarray([counts.drafter_types.index(t) for t in drafter_type_of(counts).to_numpy()])
        groups_of = {"task": np.zeros(len(counts.tasks), dtype=int),
                     "drafter": pd.factorize(pd.Series([f"{k}/{t}" for k, t in zip(kinds, types, strict=True)]))[0]}
        for group in ("task", "drafter"):
            sigma = PRIORS[f"sigma_{group}"].pymc(f"sigma_{group}")
            # Centred as the docstring says, drafters too: with millions of tokens per drafter (what ``auto``
            # asks) the data pin each effect, and the non-centred form then ties ``z`` to ``sigma_drafter``,
            # whose two or three free effects leave it wide: R-hat 1.011-1.022 on it at three seeds of the
            # 10M benchmark, against 1.006 or less centred (README, Performance).
            params[f"{group}_effect"] = zero_sum_effects(group, sigma, groups_of[group], centred)
        if options.task_type_terms:
            # Sums to zero over tasks (each type) and over types (each task); centred as the task effects are.
            sigma = PRIORS["sigma_task_type"].pymc("sigma_task_type")
            if centred:
                params["task_type_effect"] = pm.ZeroSumNormal("task_type_effect", sigma=sigma, n_zerosum_axes=2,
                                                              dims=("task", "drafter_type"))
            else:
                z = pm.Normal("task_type_z", 0.0, 1.0, dims=("task", "drafter_type"))
                double_centred = z - z.mean(axis=0, keepdims=True) - z.mean(axis=1, keepdims=True) + z.mean()
                params["task_type_effect"] = pm.Deterministic("task_type_effect", sigma * double_centred,
                                                              dims=("task", "drafter_type"))
        if options.pair_terms:
            # Coordinates on the basis of pair effects that leave every other effect's meaning alone.
            sigma = PRIORS["sigma_pair"].pymc("sigma_pair")
            if centred:
                coordinates = pm.Normal("pair_w", 0.0, sigma, shape=pair_basis.shape[1])
            else:
                coordinates = sigma * pm.Normal("pair_z", 0.0, 1.0, shape=pair_basis.shape[1])
            params["pair_effect"] = pm.Deterministic("pair_effect", pt.dot(pair_basis, coordinates), dims="pair")
        eta = linear_predictor(params, design, n_index, n_bins)
        rate = pm.Deterministic("acceptance", pm.math.invlogit(eta), dims="cell")
        if options.overdispersion:
            kappa = PRIORS["kappa"].pymc("kappa")
            if options.prompt_dispersion:
                kappa = kappa * pm.Data("prompts", cells["prompts"].to_numpy(float), dims="cell")
            pm.BetaBinomial("accepted", n=evaluated, alpha=rate * kappa, beta=(1 - rate) * kappa, observed=observed,
                            dims="cell")
        else:
            pm.Binomial("accepted", n=evaluated, p=rate, observed=observed, dims="cell")
    return model


@dataclass(frozen=True)
class FitResult:
    """A sampled model with its diagnostics.

    Attributes
    ----------
    idata : arviz.InferenceData
        Posterior, sample stats, observed and constant data, log likelihood.
    diagnostics : dict
        ``max_r_hat``, ``min_ess_bulk``, ``min_ess_tail``, ``divergences``, ``min_bfmi``,
        ``passed`` and ``warnings`` (one line each).
    options : ModelOptions
    sampler : str
        ``nutpie`` or ``pymc``.
    metadata : PosteriorMetadata
        Everything prediction needs besides the draws (the workflow adds lengths and costs).
    """

    idata: Any
    diagnostics: dict
    options: ModelOptions
    sampler: str
    metadata: PosteriorMetadata

    def summary(self, var_names: list[str] | None = None, hdi_prob: float = INTERVAL_LEVEL) -> pd.DataFrame:
        """ArviZ summary of the main parameters."""
        import arviz as az

        posterior = self.idata.posterior
        # A parameter fixed at one value (the type effect of a fit with one drafter type) has no summary.
        names = [n for n in var_names or SUMMARY_PARAMETERS if n in posterior and np.ptp(posterior[n].values) > 0]
        with quiet_arviz_shape_checks():
            return az.summary(self.idata, var_names=names, hdi_prob=hdi_prob)

    def posterior(self) -> Posterior:
        """The draws and metadata prediction reads (as :func:`specsim.model.artifact.load_posterior` returns)."""
        return posterior_from_idata(self.idata, self.metadata)

    def save(self, path) -> Path:
        """Write the posterior file (atomic; see :mod:`specsim.model.artifact`)."""
        return save_posterior(self.idata, self.metadata, path)


@contextlib.contextmanager
def quiet_arviz_shape_checks() -> Iterator[None]:
    """Silence ArviZ's "Shape validation failed" log line (one chain, or few draws) while inside.

    The gate below says what matters of it in specsim's words (R-hat and ESS against thresholds).
    ArviZ logs through its own ``Logger("arviz")`` instance, not one ``logging.getLogger`` returns.
    """
    import arviz as az

    log = getattr(az, "_log", None)
    if log is None:
        yield
        return
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def diagnose(idata) -> dict:
    """Convergence diagnostics of the free parameters and the verdict of the gate :data:`DIAGNOSTIC_THRESHOLDS`."""
    thresholds = DIAGNOSTIC_THRESHOLDS
    import arviz as az

    # The sampled parameters only: deterministic transforms add nothing, and their pinned elements
    # (the first index and position effect is exactly 0) have no variance to diagnose.
    # Centred task and drafter effects (no ``*_z`` variable) are sampled, so they are diagnosed.
    sampled = {f"{g}_effect" for g in ("task", "drafter") if f"{g}_z" not in idata.posterior.data_vars}
    # A variable whose every draw is the same number (the type effect of a fit with one drafter type)
    # has nothing to diagnose.
    names = [n for n in idata.posterior.data_vars if (n not in DETERMINISTICS or n in sampled)
             and np.ptp(idata.posterior[n].values) > 0]
    with quiet_arviz_shape_checks():
        r_hat = az.rhat(idata, var_names=names)
        ess_bulk = az.ess(idata, var_names=names, method="bulk")
        ess_tail = az.ess(idata, var_names=names, method="tail")

    def extreme(dataset, reducer) -> float:
        values = [float(reducer(dataset[v].values)) for v in dataset.data_vars if dataset[v].size]
        values = [v for v in values if np.isfinite(v)]
        return reducer(values) if values else float("nan")

    def worst(dataset, largest: bool) -> str:
        """The variable holding the extreme figure (a failing check names it)."""
        reducer = np.max if largest else np.min
        values = {v: float(reducer(dataset[v].values)) for v in dataset.data_vars if dataset[v].size}
        values = {v: x for v, x in values.items() if np.isfinite(x)}
        return (max if largest else min)(values, key=values.__getitem__) if values else "?"

    result: dict[str, Any] = {
        "max_r_hat": extreme(r_hat, np.max),
        "min_ess_bulk": extreme(ess_bulk, np.min),
        "min_ess_tail": extreme(ess_tail, np.min),
        "divergences": int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0,
        "min_bfmi": float(np.min(az.bfmi(idata))) if "energy" in idata.sample_stats else float("nan"),
    }
    problems = []
    if not result["max_r_hat"] <= thresholds["max_r_hat"]:
        problems.append(f"R-hat {result['max_r_hat']:.3f} > {thresholds['max_r_hat']} ({worst(r_hat, True)})")
    if not result["min_ess_bulk"] >= thresholds["min_ess_bulk"]:
        problems.append(f"bulk ESS {result['min_ess_bulk']:.0f} < {thresholds['min_ess_bulk']} "
                        f"({worst(ess_bulk, False)})")
    if not result["min_ess_tail"] >= thresholds["min_ess_tail"]:
        problems.append(f"tail ESS {result['min_ess_tail']:.0f} < {thresholds['min_ess_tail']} "
                        f"({worst(ess_tail, False)})")
    if result["divergences"] > thresholds["max_divergences"]:
        problems.append(f"{result['divergences']} divergent transitions")
    if result["min_bfmi"] < thresholds["min_bfmi"]:
        problems.append(f"E-BFMI {result['min_bfmi']:.2f} < {thresholds['min_bfmi']}")
    result["passed"] = not problems
    result["warnings"] = problems
    return result


def combined_diagnostics(acceptance: dict, drafting: dict) -> dict:
    """One gate over two separately sampled parts of a fit: the worst figure of each, warnings of both."""
    result = {"max_r_hat": max(acceptance["max_r_hat"], drafting["max_r_hat"]),
              "min_ess_bulk": min(acceptance["min_ess_bulk"], drafting["min_ess_bulk"]),
              "min_ess_tail": min(acceptance["min_ess_tail"], drafting["min_ess_tail"]),
              "divergences": acceptance["divergences"] + drafting["divergences"],
              "min_bfmi": min(acceptance["min_bfmi"], drafting["min_bfmi"])}
    result["passed"] = bool(acceptance["passed"] and drafting["passed"])
    result["warnings"] = [*acceptance["warnings"], *(f"chance of drafting: {w}" for w in drafting["warnings"])]
    return result


def fit_model(
    counts: AcceptanceCounts,
    options: ModelOptions = ModelOptions(),
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    sampler: str = "nutpie",
    target_accept: float = 0.95,
    mass_matrix: str = "diagonal",
    drafting: bool = True,
) -> FitResult:
    """Sample the model (nutpie by default, PyMC's NUTS as fallback) and diagnose it.

    Parameters
    ----------
    counts : AcceptanceCounts
    options : ModelOptions
    draws, tune, chains : int
        Posterior draws and warm-up per chain.
    seed : int
        Random seed (independent streams per chain).
    sampler : {"nutpie", "pymc"}
    target_accept : float
        NUTS step-size adaptation target.
    mass_matrix : {"diagonal", "low-rank"}
        NUTS mass matrix adaptation. ``low-rank`` (nutpie only; the PyMC sampler adapts a diagonal
        one) adds to the diagonal a low-rank update that follows the strongest posterior
        correlations (``b_divergence`` against ``b_interaction``, whose sum the data fix far better
        than either): fewer leapfrog steps, and with zero-sum effects every leave-one-out fold of
        both reference experiments passes the gate; with 10M drafted tokens it needs the centred
        parameterisation and target_accept 0.99. On the moderate synthetic counts of the recovery
        test it left ``sigma_task`` short of ESS where the diagonal one passed: hence the default.
    drafting : bool
        Also fit the chance of drafting at all of the drafters that drafted nothing at some step
        (:mod:`specsim.model.drafting`); off for comparison fits that only PSIS-LOO reads.
    """
    configure_pytensor()
    import pymc as pm

    if len(counts.cells) < 2:
        raise InputError("need at least two cells of counts to fit", field="tokens")
    if mass_matrix not in MASS_MATRICES:
        raise InputError(f"must be one of {', '.join(MASS_MATRICES)}", field="--mass-matrix")
    options, notes = identified_options(counts, options)
    model = build_model(counts, options)
    used = sampler
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        kwargs = dict(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=False,
                      target_accept=target_accept)
        if "quiet" in inspect.signature(pm.sample).parameters:
            kwargs["quiet"] = True  # PyMC's "Only N samples per chain" line: the gate below says what matters
        try:
            if sampler == "nutpie":
                idata = pm.sample(nuts_sampler="nutpie", nuts_sampler_kwargs={
                    "low_rank_modified_mass_matrix": mass_matrix == "low-rank"}, **kwargs)
            else:
                idata = pm.sample(cores=1, compute_convergence_checks=False, **kwargs)
        except ImportError:
            used = "pymc"
            idata = pm.sample(cores=1, compute_convergence_checks=False, **kwargs)
        pm.compute_log_likelihood(idata, progressbar=False)  # pointwise, for PSIS-LOO
    diagnostics = diagnose(idata)
    from specsim.model.drafting import drafting_pairs

    drafting_cells = counts.drafting if drafting else counts.drafting.iloc[:0]
    if len(drafting_cells):
        # The chance of drafting at all: its own parameters and likelihood, sampled beside (the
        # joint posterior factorises) and gated as one fit with the acceptance part.
        from specsim.model.drafting import fit_drafting

        drafting_idata = fit_drafting(drafting_cells, draws=draws, tune=tune, chains=chains, seed=seed,
                                      target_accept=target_accept, sampler=used,
                                      n_position_bins=counts.n_position_bins)
        diagnostics = combined_diagnostics(diagnostics, diagnose(drafting_idata))
        idata.posterior = idata.posterior.merge(drafting_idata.posterior, compat="override")
    metadata = PosteriorMetadata(
        tasks=list(counts.tasks), drafters=list(counts.drafters),
        drafter_kinds=drafter_kinds(counts).to_dict(),
        position_edges=[float(e) for e in counts.position_edges], n_draft_index=counts.n_draft_index,
        divergence_measure=counts.divergence_measure, length_kind=counts.length_kind,
        reference_lengths={k: [float(x) for x in v] for k, v in counts.reference_lengths.items()},
        options=asdict(options), sampler=used, diagnostics=diagnostics, draws=draws, tune=tune, chains=chains,
        seed=seed, target_accept=target_accept, observed_positions=dict(counts.observed_positions),
        drafter_types=list(counts.drafter_types), drafter_type_of=drafter_type_of(counts).to_dict(),
        windows={d: float(w) for d, w in counts.windows.items() if np.isfinite(w)},
        own_tasks={d: list(t) for d, t in counts.own_tasks.items()}, notes=notes,
        types_past_window=sorted(counts.cells.loc[counts.cells["beyond"] > 0, "drafter_type"].unique().tolist()),
        drafting_tasks=sorted(drafting_cells["task"].unique().tolist()),
        drafting_drafters=sorted(drafting_cells["drafter"].unique().tolist()),
        drafting_pairs=drafting_pairs(drafting_cells),
        pairs=pair_layout(counts, options.task_type_terms)[0] if options.pair_terms else [],
    )
    return FitResult(idata, diagnostics, options, used, metadata)

"""Hierarchical model of conditional acceptance: fine-tuning, length divergence, and their interaction.

For cell ``c`` (task ``t``, drafter ``r``, draft index ``i``, position bin ``b``) with
``n_c`` evaluated and ``y_c`` accepted drafted tokens::

    logit a_c = intercept
              + b_finetuned * f_r + b_divergence * d_tr + b_interaction * f_r * d_tr
              + index_effect[i] + b_index_finetuned * f_r * (i - mean i)
              + position_effect[b] + b_position_finetuned * f_r * (b - mean b)
              + task_effect[t] + drafter_effect[r]
    y_c ~ BetaBinomial(n_c, a_c * kappa, (1 - a_c) * kappa)     (Binomial without over-dispersion)

``f_r`` is 1 for a fine-tuned drafter, ``d_tr`` the length divergence (Jensen-Shannon of
total lengths by default, in [0, 1]) between the drafter's training data and the task.
``index_effect`` and ``position_effect`` are first-order Gaussian random walks pinned at 0
for the first index and bin; task and drafter effects are non-centred normal random effects.

Priors (logit scale), chosen so that prior predictive acceptance spreads over (0, 1)
without piling up at the ends (see the report's prior predictive plot):
intercept ~ N(0, 1.5); b_finetuned ~ N(0, 1); b_divergence, b_interaction ~ N(0, 2);
random-walk step scales ~ HalfNormal(0.5); b_index_finetuned, b_position_finetuned ~ N(0, 0.5);
sigma_task ~ HalfNormal(0.5); sigma_drafter ~ Gamma(2, 10) (mean 0.2, zero density at 0,
so a handful of drafters does not trap NUTS in the funnel at 0); kappa ~ Gamma(2, 0.02) (mean 100).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.model.data import AcceptanceCounts

__all__ = ["ModelOptions", "FitResult", "build_model", "fit_model", "diagnose", "DIAGNOSTIC_THRESHOLDS"]

#: Gate on the sampler's output (Vehtari et al. 2021; PyMC and ArviZ conventions).
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
    """

    divergence_terms: bool = True
    overdispersion: bool = True


def build_model(counts: AcceptanceCounts, options: ModelOptions = ModelOptions()):
    """Build the PyMC model (not sampled) from aggregated counts.

    Parameters
    ----------
    counts : AcceptanceCounts
    options : ModelOptions

    Returns
    -------
    pymc.Model
        With coords ``task``, ``drafter``, ``draft_index``, ``position_bin``, ``cell``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    cells = counts.cells
    n_index, n_bins = counts.n_draft_index, counts.n_position_bins
    coords = {"task": counts.tasks, "drafter": counts.drafters, "draft_index": np.arange(n_index),
              "position_bin": np.arange(n_bins), "cell": np.arange(len(cells))}
    index_centre = (n_index - 1) / 2
    bin_centre = (n_bins - 1) / 2
    with pm.Model(coords=coords) as model:
        finetuned = pm.Data("finetuned", cells["finetuned"].to_numpy(float), dims="cell")
        divergence = pm.Data("divergence", cells["divergence"].to_numpy(float), dims="cell")
        draft_index = pm.Data("draft_index_of_cell", cells["draft_index"].to_numpy(), dims="cell")
        position_bin = pm.Data("position_bin_of_cell", cells["position_bin"].to_numpy(), dims="cell")
        task = pm.Data("task_of_cell", cells["task_code"].to_numpy(), dims="cell")
        drafter = pm.Data("drafter_of_cell", cells["drafter_code"].to_numpy(), dims="cell")
        evaluated = pm.Data("evaluated", cells["evaluated"].to_numpy(), dims="cell")

        intercept = pm.Normal("intercept", 0.0, 1.5)
        b_finetuned = pm.Normal("b_finetuned", 0.0, 1.0)
        eta = intercept + b_finetuned * finetuned
        if options.divergence_terms:
            b_divergence = pm.Normal("b_divergence", 0.0, 2.0)
            b_interaction = pm.Normal("b_interaction", 0.0, 2.0)
            eta = eta + b_divergence * divergence + b_interaction * finetuned * divergence
            # Slope of logit acceptance in divergence for fine-tuned drafters.
            pm.Deterministic("divergence_slope_finetuned", b_divergence + b_interaction)

        def random_walk(name: str, size: int) -> Any:
            if size == 1:
                return pm.Deterministic(name, pt.zeros(1), dims=name.replace("_effect", ""))
            scale = pm.HalfNormal(f"sigma_{name}", 0.5)
            steps = pm.Normal(f"{name}_steps", 0.0, 1.0, shape=size - 1)
            walk = pt.concatenate([pt.zeros(1), pt.cumsum(steps * scale)])
            return pm.Deterministic(name, walk, dims="draft_index" if name == "index_effect" else "position_bin")

        index_effect = random_walk("index_effect", n_index)
        position_effect = random_walk("position_effect", n_bins)
        b_index_finetuned = pm.Normal("b_index_finetuned", 0.0, 0.5)
        b_position_finetuned = pm.Normal("b_position_finetuned", 0.0, 0.5)
        sigma_task = pm.HalfNormal("sigma_task", 0.5)
        task_effect = pm.Deterministic("task_effect", sigma_task * pm.Normal("task_z", 0.0, 1.0, dims="task"),
                                       dims="task")
        # Few drafters: a boundary-avoiding prior keeps the sampler out of the funnel at 0.
        sigma_drafter = pm.Gamma("sigma_drafter", 2.0, 10.0)
        drafter_effect = pm.Deterministic(
            "drafter_effect", sigma_drafter * pm.Normal("drafter_z", 0.0, 1.0, dims="drafter"), dims="drafter")
        eta = (eta + index_effect[draft_index] + b_index_finetuned * finetuned * (draft_index - index_centre)
               + position_effect[position_bin] + b_position_finetuned * finetuned * (position_bin - bin_centre)
               + task_effect[task] + drafter_effect[drafter])
        rate = pm.Deterministic("acceptance", pm.math.invlogit(eta), dims="cell")
        observed = cells["accepted"].to_numpy()
        if options.overdispersion:
            kappa = pm.Gamma("kappa", 2.0, 0.02)
            pm.BetaBinomial("accepted", n=evaluated, alpha=rate * kappa, beta=(1 - rate) * kappa, observed=observed,
                            dims="cell")
        else:
            pm.Binomial("accepted", n=evaluated, p=rate, observed=observed, dims="cell")
    return model


@dataclass
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
    metadata : dict
        Everything prediction needs besides the posterior (stored in the NetCDF file).
    """

    idata: Any
    diagnostics: dict
    options: ModelOptions
    sampler: str
    metadata: dict = field(default_factory=dict)

    def summary(self, var_names: list[str] | None = None) -> pd.DataFrame:
        """ArviZ summary of the main parameters."""
        import arviz as az

        names = var_names or [n for n in ("intercept", "b_finetuned", "b_divergence", "b_interaction",
                                          "divergence_slope_finetuned",
                                          "b_index_finetuned", "b_position_finetuned", "sigma_task",
                                          "sigma_drafter", "kappa") if n in self.idata.posterior]
        return az.summary(self.idata, var_names=names, hdi_prob=0.95)

    def save(self, path) -> None:
        """Write the InferenceData as NetCDF with the metadata in the posterior's attributes."""
        self.idata.posterior.attrs["specsim_metadata"] = json.dumps(
            {**self.metadata, "diagnostics": self.diagnostics, "options": self.options.__dict__,
             "sampler": self.sampler}, default=_jsonable)
        self.idata.to_netcdf(str(path))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def diagnose(idata, thresholds: dict = DIAGNOSTIC_THRESHOLDS) -> dict:
    """Convergence diagnostics of the free parameters and the gate's verdict."""
    import arviz as az

    names = [n for n in idata.posterior.data_vars if n not in ("acceptance",)]
    r_hat = az.rhat(idata, var_names=names)
    ess_bulk = az.ess(idata, var_names=names, method="bulk")
    ess_tail = az.ess(idata, var_names=names, method="tail")

    def extreme(dataset, reducer) -> float:
        values = [float(reducer(dataset[v].values)) for v in dataset.data_vars if dataset[v].size]
        values = [v for v in values if np.isfinite(v)]
        return reducer(values) if values else float("nan")

    result = {
        "max_r_hat": extreme(r_hat, np.max),
        "min_ess_bulk": extreme(ess_bulk, np.min),
        "min_ess_tail": extreme(ess_tail, np.min),
        "divergences": int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0,
        "min_bfmi": float(np.min(az.bfmi(idata))) if "energy" in idata.sample_stats else float("nan"),
    }
    problems = []
    if not result["max_r_hat"] <= thresholds["max_r_hat"]:
        problems.append(f"R-hat {result['max_r_hat']:.3f} > {thresholds['max_r_hat']}")
    if not result["min_ess_bulk"] >= thresholds["min_ess_bulk"]:
        problems.append(f"bulk ESS {result['min_ess_bulk']:.0f} < {thresholds['min_ess_bulk']}")
    if not result["min_ess_tail"] >= thresholds["min_ess_tail"]:
        problems.append(f"tail ESS {result['min_ess_tail']:.0f} < {thresholds['min_ess_tail']}")
    if result["divergences"] > thresholds["max_divergences"]:
        problems.append(f"{result['divergences']} divergent transitions")
    if result["min_bfmi"] < thresholds["min_bfmi"]:
        problems.append(f"E-BFMI {result['min_bfmi']:.2f} < {thresholds['min_bfmi']}")
    result["passed"] = not problems
    result["warnings"] = problems
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
    target_accept: float = 0.9,
    progressbar: bool = False,
    log_likelihood: bool = True,
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
    progressbar : bool
    log_likelihood : bool
        Store pointwise log likelihood (for LOO).
    """
    import pymc as pm

    if len(counts.cells) < 2:
        raise InputError("need at least two cells of counts to fit", field="tokens")
    model = build_model(counts, options)
    used = sampler
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        kwargs = dict(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar,
                      target_accept=target_accept)
        try:
            if sampler == "nutpie":
                idata = pm.sample(nuts_sampler="nutpie", **kwargs)
            else:
                idata = pm.sample(cores=1, compute_convergence_checks=False, **kwargs)
        except ImportError:
            used = "pymc"
            idata = pm.sample(cores=1, compute_convergence_checks=False, **kwargs)
        if log_likelihood:
            pm.compute_log_likelihood(idata, progressbar=False)
    metadata = {
        "tasks": counts.tasks, "drafters": counts.drafters, "position_edges": counts.position_edges.tolist(),
        "n_draft_index": counts.n_draft_index, "divergence_measure": counts.divergence_measure,
        "length_kind": counts.length_kind,
        "reference_lengths": {k: v.tolist() for k, v in counts.reference_lengths.items()},
        "drafter_kinds": counts.cells.drop_duplicates("drafter").set_index("drafter")["drafter_kind"].to_dict(),
        "draws": draws, "tune": tune, "chains": chains, "seed": seed,
    }
    return FitResult(idata, diagnose(idata), options, used, metadata)

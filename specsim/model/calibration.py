"""Simulation-based calibration (Talts et al. 2018) of the acceptance model :func:`build_model` returns,
and of the chance-of-drafting part (:func:`drafting_calibration`).

The model is the real one (every term, the beta-binomial likelihood with its per-prompt
concentration), built on a design of counts (default: a small synthetic design with two drafter
types, fine-tuned drafters on and off their own tasks and contexts past some training windows,
:func:`specsim.model.synthetic_counts.synthetic_counts`). PyMC draws parameters and counts from
the model's own prior predictive, so the simulated data and the fitted model cannot drift apart;
nutpie compiles the model once and each simulation only swaps the observed counts
(``accepted_count``). The rank of each true parameter among ``n_ranks - 1`` thinned posterior
draws is uniform on ``0 .. n_ranks - 1`` when the inference is calibrated; uniformity is checked
by a chi-square test on the rank histogram of every checked parameter (each element of a vector
over drafter types).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from specsim.model.backend import configure_pytensor
from specsim.model.data import AcceptanceCounts
from specsim.model.hierarchical import ModelOptions, build_model

__all__ = ["SBCResult", "CHECKED_PARAMETERS", "CHECKED_DRAFTING_PARAMETERS", "simulation_based_calibration",
           "drafting_calibration", "sbc_design"]

#: Parameters whose ranks are checked: every fixed effect and scale of the linear predictor.
CHECKED_PARAMETERS = ("intercept", "type_effect", "b_finetuned", "b_content", "b_divergence", "b_interaction",
                      "b_beyond", "b_beyond_finetuned", "b_index_finetuned", "b_position_finetuned", "sigma_task",
                      "sigma_task_type", "sigma_pair", "kappa")
#: Parameters of the chance-of-drafting part whose ranks :func:`drafting_calibration` checks.
CHECKED_DRAFTING_PARAMETERS = ("draft_intercept", "sigma_draft_task", "sigma_draft_drafter", "sigma_draft_pair",
                               "draft_b_context", "sigma_draft_context", "draft_b_gamma", "sigma_draft_position",
                               "draft_kappa")


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true parameters and the uniformity test of each."""

    ranks: pd.DataFrame
    n_ranks: int
    p_values: dict

    def histogram(self, bins: int = 10) -> pd.DataFrame:
        """Rank counts per parameter in ``bins`` equal bins."""
        edges = np.linspace(0, self.n_ranks, bins + 1)
        return pd.DataFrame({name: np.histogram(self.ranks[name], edges)[0] for name in self.ranks.columns})


def sbc_design(seed: int = 0) -> AcceptanceCounts:
    """A small design for SBC: 4 tasks, two types of three drafters, 3 draft indices, 2 position bins.

    Only its layout and covariates matter (the counts are replaced by prior predictive draws).
    """
    from specsim.model.synthetic_counts import TRUE_PARAMETERS, synthetic_counts

    parameters = {**TRUE_PARAMETERS, "index_effect": TRUE_PARAMETERS["index_effect"][:, :3],
                  "position_effect": TRUE_PARAMETERS["position_effect"][:2]}
    counts, _ = synthetic_counts(parameters, n_tasks=4, evaluated_per_cell=150, position_edges=np.array([64.0]),
                                 rng=seed)
    return counts


def _flat(values: np.ndarray, name: str, labels: list[str] | None) -> dict[str, np.ndarray]:
    """One entry per element of a parameter's draws (leading axis: draws)."""
    if values.ndim == 1:
        return {name: values}
    return {f"{name}[{labels[i] if labels else i}]": values[:, i] for i in range(values.shape[1])}


def simulation_based_calibration(
    n_simulations: int = 100, *, counts: AcceptanceCounts | None = None, options: ModelOptions = ModelOptions(),
    n_ranks: int = 20, seed: int = 0, bins: int = 5, draws_per_chain: int = 500, tune: int = 400, chains: int = 2,
) -> SBCResult:
    """Run SBC of the model :func:`build_model` returns on ``counts``' design.

    Parameters
    ----------
    n_simulations : int
        Prior draws fitted.
    counts : AcceptanceCounts, optional
        The design (its counts are not used); default :func:`sbc_design`.
    options : ModelOptions
        The model's terms (the terms the design cannot identify are left out, as in a fit).
    n_ranks : int
        Rank resolution: ``n_ranks - 1`` posterior draws kept per fit (thinned).
    seed : int
    bins : int
        Bins of the chi-square test on ranks.
    draws_per_chain, tune, chains : int
        NUTS settings of each fit.

    Returns
    -------
    SBCResult
        Ranks of every checked parameter (elements of vectors named ``b_finetuned[lookup]``).
    """
    counts = sbc_design(seed) if counts is None else counts
    model = build_model(counts, options)
    return _calibrate(model, "accepted", "accepted_count", CHECKED_PARAMETERS, list(counts.drafter_types),
                      n_simulations, n_ranks=n_ranks, seed=seed, bins=bins, draws_per_chain=draws_per_chain,
                      tune=tune, chains=chains)


def drafting_calibration(
    n_simulations: int = 100, *, cells: pd.DataFrame | None = None, n_ranks: int = 20, seed: int = 0, bins: int = 5,
    draws_per_chain: int = 500, tune: int = 500, chains: int = 2,
) -> SBCResult:
    """SBC of the chance-of-drafting model :func:`specsim.model.drafting.build_drafting_model` returns.

    ``cells``: the design (its counts are not used); default six tasks x three lookups x gammas 2, 4
    and 8 x three position bins of 600 steps and 12 prompts each, contexts from 96 to 2200 tokens
    (:func:`specsim.model.synthetic_counts.synthetic_counts`). Checks
    :data:`CHECKED_DRAFTING_PARAMETERS`, as :func:`simulation_based_calibration` does.
    """
    from specsim.model.drafting import build_drafting_model
    from specsim.model.synthetic_counts import TRUE_DRAFTING, synthetic_counts

    if cells is None:
        cells = synthetic_counts(rng=seed, drafting=TRUE_DRAFTING)[0].drafting
    model = build_drafting_model(cells, int(cells["position_bin"].max()) + 1)
    return _calibrate(model, "drafted", "drafted_count", CHECKED_DRAFTING_PARAMETERS, None,
                      n_simulations, n_ranks=n_ranks, seed=seed, bins=bins, draws_per_chain=draws_per_chain,
                      tune=tune, chains=chains)


def _calibrate(model: Any, observed_name: str, data_name: str, checked: tuple[str, ...], types: list[str] | None,
               n_simulations: int, *, n_ranks: int, seed: int, bins: int, draws_per_chain: int, tune: int,
               chains: int) -> SBCResult:
    """Ranks of ``checked`` parameters' prior draws among posterior draws of fits to their prior predictive data.

    ``data_name``: the model's data variable of the observed counts (swapped per simulation, the
    model compiled once); ``types``: labels of vectors over drafter types (None: by position).
    """
    configure_pytensor()
    import nutpie
    import pymc as pm

    rng = np.random.default_rng(seed)
    with model:
        prior = pm.sample_prior_predictive(draws=n_simulations, random_seed=int(rng.integers(2**31)))
    compiled = nutpie.compile_pymc_model(model)
    names = [name for name in checked if name in prior.prior]
    keep = np.linspace(0, chains * draws_per_chain - 1, n_ranks - 1).astype(int)
    rows = []
    for simulation in range(n_simulations):
        observed = prior.prior_predictive[observed_name].values[0, simulation].astype(np.int64)
        trace = nutpie.sample(compiled.with_data(**{data_name: observed}), draws=draws_per_chain, tune=tune,
                              chains=chains, seed=int(rng.integers(2**31)), progress_bar=False)
        ranks: dict[str, Any] = {}
        for name in names:
            truth = prior.prior[name].values[0, simulation]
            drawn = trace.posterior[name].values
            drawn = drawn.reshape(drawn.shape[0] * drawn.shape[1], *drawn.shape[2:])
            labels = types if drawn.ndim > 1 else None
            truths = _flat(np.atleast_1d(truth)[None, :] if drawn.ndim > 1 else np.array([truth]), name, labels)
            # Thinning to nearly independent draws keeps the ranks' histogram valid.
            for element, values in _flat(drawn, name, labels).items():
                ranks[element] = int(np.sum(values[keep] < truths[element][0]))
        rows.append(ranks)
    ranks_table = pd.DataFrame(rows)
    p_values = {}
    for name in ranks_table.columns:
        counts_per_bin = np.histogram(ranks_table[name], np.linspace(0, n_ranks, bins + 1))[0]
        p_values[name] = float(stats.chisquare(counts_per_bin).pvalue)
    return SBCResult(ranks_table, n_ranks, p_values)

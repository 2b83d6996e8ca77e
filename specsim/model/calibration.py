"""Simulation-based calibration (Talts et al. 2018) of a reduced acceptance model.

The reduced model keeps the fixed effects that answer the research question (intercept,
fine-tuned, divergence, interaction) with the full model's priors and a binomial likelihood
on aggregated counts. Each simulation draws parameters from the prior, counts from the
likelihood, and fits them with NUTS (nutpie, compiled once; only the data change between
simulations); the rank of each true parameter among ``n_ranks - 1`` thinned posterior draws
is uniform on ``0 .. n_ranks - 1`` when the inference is calibrated. Uniformity is checked
by a chi-square test on the rank histogram per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

from specsim.model.backend import configure_pytensor
from specsim.model.spec import PRIORS, linear_predictor

__all__ = ["SBCResult", "REDUCED_PARAMETERS", "simulation_based_calibration"]

#: Parameters of the reduced model; their priors are the full model's (:data:`specsim.model.spec.PRIORS`).
REDUCED_PARAMETERS = ("intercept", "b_finetuned", "b_divergence", "b_interaction")


def _reduced_predictor(parameters: dict, design: dict, zeros: Any) -> Any:
    """The full model's linear predictor with every effect but the reduced model's at zero."""
    full = {**parameters, "b_index_finetuned": 0.0, "b_position_finetuned": 0.0, "index_effect": zeros,
            "position_effect": zeros, "task_effect": zeros, "drafter_effect": zeros}
    return linear_predictor(full, design, 1, 1)


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


def _design(n_cells: int, rng: np.random.Generator) -> pd.DataFrame:
    finetuned = np.arange(n_cells) % 2
    return pd.DataFrame({"finetuned": finetuned.astype(float), "divergence": rng.uniform(0, 0.8, n_cells),
                         "evaluated": rng.integers(30, 300, n_cells)})


def simulation_based_calibration(
    n_simulations: int = 100, *, n_cells: int = 16, n_ranks: int = 20, seed: int = 0, bins: int = 5,
) -> SBCResult:
    """Run SBC of the reduced model.

    Parameters
    ----------
    n_simulations : int
        Prior draws fitted.
    n_cells : int
        Cells of counts per simulated data set.
    n_ranks : int
        Rank resolution: ``n_ranks - 1`` posterior draws kept per fit (thinned).
    seed : int
    bins : int
        Bins of the chi-square test on ranks.

    Returns
    -------
    SBCResult
    """
    configure_pytensor()
    import nutpie
    import pymc as pm
    import pytensor.tensor as pt

    rng = np.random.default_rng(seed)
    design = _design(n_cells, rng)
    cell_codes = {name: np.zeros(n_cells, dtype=int) for name in ("draft_index", "position_bin", "task", "drafter")}
    with pm.Model() as model:
        finetuned = pm.Data("finetuned", design["finetuned"].to_numpy())
        divergence = pm.Data("divergence", design["divergence"].to_numpy())
        observed = pm.Data("observed", np.zeros(n_cells, dtype=np.int64))
        coefficients = {name: PRIORS[name].pymc(name) for name in REDUCED_PARAMETERS}
        eta = _reduced_predictor(coefficients, {**cell_codes, "finetuned": finetuned, "divergence": divergence},
                                 pt.zeros(1))
        pm.Binomial("accepted", n=design["evaluated"].to_numpy(), p=pm.math.invlogit(eta), observed=observed)
    compiled = nutpie.compile_pymc_model(model)
    draws_per_chain = 500
    keep = np.linspace(0, 2 * draws_per_chain - 1, n_ranks - 1).astype(int)
    rows = []
    for _ in range(n_simulations):
        truth = {name: float(PRIORS[name].draw(rng)) for name in REDUCED_PARAMETERS}
        eta = _reduced_predictor(truth, {**cell_codes, "finetuned": design["finetuned"].to_numpy(),
                                         "divergence": design["divergence"].to_numpy()}, np.zeros(1))
        counts = rng.binomial(design["evaluated"].to_numpy(), expit(eta))
        trace = nutpie.sample(compiled.with_data(observed=counts), draws=draws_per_chain, tune=300, chains=2,
                              seed=int(rng.integers(2**31)), progress_bar=False)
        ranks = {}
        for name in REDUCED_PARAMETERS:
            posterior = trace.posterior[name].values.reshape(-1)
            # Thinning to nearly independent draws keeps the ranks' histogram valid.
            ranks[name] = int(np.sum(posterior[keep] < truth[name]))
        rows.append(ranks)
    ranks = pd.DataFrame(rows)
    p_values = {}
    for name in REDUCED_PARAMETERS:
        counts_per_bin = np.histogram(ranks[name], np.linspace(0, n_ranks, bins + 1))[0]
        p_values[name] = float(stats.chisquare(counts_per_bin).pvalue)
    return SBCResult(ranks, n_ranks, p_values)

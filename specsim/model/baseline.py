"""Frequentist baseline: a binomial GLM with cluster-robust standard errors by task.

Same fixed effects as the hierarchical model (fine-tuned, divergence, interaction, draft
index and position bin as categories, their fine-tuned slopes), fitted by statsmodels on the
aggregated counts; standard errors are clustered by task because cells of one task share
its unmodelled effect.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from specsim.glossary import INTERVAL_LEVEL
from specsim.model.data import AcceptanceCounts
from specsim.model.spec import centred

__all__ = ["fit_baseline", "BASELINE_TERMS"]

BASELINE_TERMS = ("intercept", "b_finetuned", "b_divergence", "b_interaction", "b_index_finetuned",
                  "b_position_finetuned")


def _design(counts: AcceptanceCounts, divergence_terms: bool) -> pd.DataFrame:
    cells = counts.cells
    finetuned = cells["finetuned"].to_numpy(float)
    columns = {"intercept": np.ones(len(cells)), "b_finetuned": finetuned}
    if divergence_terms:
        columns["b_divergence"] = cells["divergence"].to_numpy(float)
        columns["b_interaction"] = finetuned * cells["divergence"].to_numpy(float)
    columns["b_index_finetuned"] = finetuned * centred(cells["draft_index"].to_numpy(), counts.n_draft_index)
    columns["b_position_finetuned"] = finetuned * centred(cells["position_bin"].to_numpy(), counts.n_position_bins)
    for index in range(1, counts.n_draft_index):
        columns[f"index_effect[{index}]"] = (cells["draft_index"].to_numpy() == index).astype(float)
    for position in range(1, counts.n_position_bins):
        columns[f"position_effect[{position}]"] = (cells["position_bin"].to_numpy() == position).astype(float)
    design = pd.DataFrame(columns)
    # Drop columns without variation (a bin or index no cell reached) so the GLM stays full rank.
    keep = [c for c in design.columns if c == "intercept" or design[c].std() > 0]
    return design[keep]


def fit_baseline(counts: AcceptanceCounts, divergence_terms: bool = True, level: float = INTERVAL_LEVEL
                 ) -> pd.DataFrame:
    """Fit the binomial GLM; return estimates with cluster-robust intervals (``level``, default 90%).

    Returns
    -------
    pandas.DataFrame
        Index: term; columns ``estimate``, ``std_error``, ``low``, ``high``, ``p_value``.
    """
    import statsmodels.api as sm

    cells = counts.cells
    endog = np.column_stack([cells["accepted"], cells["evaluated"] - cells["accepted"]])
    design = _design(counts, divergence_terms)
    model = sm.GLM(endog, design, family=sm.families.Binomial())
    groups = cells["task_code"].to_numpy()
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = (model.fit(cov_type="cluster", cov_kwds={"groups": groups}) if len(np.unique(groups)) > 1
               else model.fit())
        interval = fit.conf_int(1 - level)
    frame = pd.DataFrame({"estimate": fit.params, "std_error": fit.bse, "low": interval[0], "high": interval[1],
                          "p_value": fit.pvalues})
    # statsmodels warns with its source lines; what matters is said once, in specsim's words.
    kinds = {type(w.message) for w in caught if issubclass(w.category, (PerfectSeparationWarning, RuntimeWarning))}
    frame.attrs["notes"] = []
    if any(issubclass(kind, PerfectSeparationWarning) for kind in kinds):
        frame.attrs["notes"].append("the statsmodels GLM baseline separates some cells perfectly (all or none of "
                                    "their drafted tokens accepted): its estimates there run to the bounds, where the "
                                    "hierarchical model's priors keep them finite")
    elif kinds:
        frame.attrs["notes"].append("the statsmodels GLM baseline met a numerical overflow (cells near 0 or 1): read "
                                    "its estimates with care")
    return frame

"""Frequentist baseline: a binomial GLM with cluster-robust standard errors by task.

Same fixed effects as the hierarchical model (drafter types, fine-tuned per type, own content,
divergence and its interaction, the window terms per type, draft index per type and position bin
as categories, their fine-tuned slopes; the terms the data identify, :func:`identified_options`),
fitted by statsmodels on the aggregated counts; standard errors are clustered by task because
cells of one task share its unmodelled effect. Terms are named as ArviZ names the posterior's
(``b_finetuned[lookup]``); type effects are dummies against the first type, not zero-sum.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from specsim.glossary import INTERVAL_LEVEL
from specsim.model.data import AcceptanceCounts
from specsim.model.hierarchical import ModelOptions, identified_options
from specsim.model.spec import centred

__all__ = ["fit_baseline", "BASELINE_TERMS"]

BASELINE_TERMS = ("intercept", "b_finetuned", "b_content", "b_divergence", "b_interaction", "b_beyond",
                  "b_beyond_finetuned", "b_index_finetuned", "b_position_finetuned")


def _design(counts: AcceptanceCounts, options: ModelOptions) -> pd.DataFrame:
    cells = counts.cells
    finetuned = cells["finetuned"].to_numpy(float)
    types = cells["drafter_type"].to_numpy()
    columns = {"intercept": np.ones(len(cells))}
    for name in counts.drafter_types[1:]:
        columns[f"type_effect[{name}]"] = (types == name).astype(float)
    for name in counts.drafter_types:
        columns[f"b_finetuned[{name}]"] = finetuned * (types == name)
    if options.content_term:
        columns["b_content"] = finetuned * cells["content_match"].to_numpy(float)
    if options.divergence_terms:
        columns["b_divergence"] = cells["divergence"].to_numpy(float)
        columns["b_interaction"] = finetuned * cells["divergence"].to_numpy(float)
    if options.window_terms:
        beyond = cells["beyond"].to_numpy(float)
        for name in counts.drafter_types:
            columns[f"b_beyond[{name}]"] = beyond * (types == name)
            columns[f"b_beyond_finetuned[{name}]"] = finetuned * beyond * (types == name)
    columns["b_index_finetuned"] = finetuned * centred(cells["draft_index"].to_numpy(), counts.n_draft_index)
    columns["b_position_finetuned"] = finetuned * centred(cells["position_bin"].to_numpy(), counts.n_position_bins)
    for name in counts.drafter_types:
        for index in range(1, counts.n_draft_index):
            columns[f"index_effect[{name}, {index}]"] = ((cells["draft_index"].to_numpy() == index)
                                                        & (types == name)).astype(float)
    for position in range(1, counts.n_position_bins):
        columns[f"position_effect[{position}]"] = (cells["position_bin"].to_numpy() == position).astype(float)
    design = pd.DataFrame(columns)
    # Keep the GLM full rank: leave out columns without variation (a bin or index no cell reached) and
    # columns the kept ones already span (a lone fine-tuned drafter's content, divergence and window
    # columns over three tasks); the hierarchical model's priors tell such terms apart, the GLM cannot.
    keep: list[str] = []
    for column in design.columns:
        if column != "intercept" and not design[column].std() > 0:
            continue
        if np.linalg.matrix_rank(design[[*keep, column]].to_numpy()) == len(keep) + 1:
            keep.append(column)
    left_out = [c for c in design.columns if c not in keep and design[c].std() > 0]
    design = design[keep]
    design.attrs["left_out"] = left_out
    return design


def fit_baseline(counts: AcceptanceCounts, options: ModelOptions | None = None, level: float = INTERVAL_LEVEL
                 ) -> pd.DataFrame:
    """Fit the binomial GLM; return estimates with cluster-robust intervals (``level``, default 90%).

    ``options`` names the terms (the hierarchical model's; default all it can identify).

    Returns
    -------
    pandas.DataFrame
        Index: term; columns ``estimate``, ``std_error``, ``low``, ``high``, ``p_value``.
    """
    import statsmodels.api as sm

    cells = counts.cells
    endog = np.column_stack([cells["accepted"], cells["evaluated"] - cells["accepted"]])
    options, _ = identified_options(counts, options or ModelOptions())
    design = _design(counts, options)
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
    if design.attrs.get("left_out"):
        frame.attrs["notes"].append("the statsmodels GLM baseline leaves out terms the data cannot separate from "
                                    "its other terms without the hierarchical model's priors: "
                                    + ", ".join(design.attrs["left_out"]))
    if any(issubclass(kind, PerfectSeparationWarning) for kind in kinds):
        frame.attrs["notes"].append("the statsmodels GLM baseline separates some cells perfectly (all or none of "
                                    "their drafted tokens accepted): its estimates there run to the bounds, where the "
                                    "hierarchical model's priors keep them finite")
    elif kinds:
        frame.attrs["notes"].append("the statsmodels GLM baseline met a numerical overflow (cells near 0 or 1): read "
                                    "its estimates with care")
    return frame

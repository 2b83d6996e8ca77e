"""One name per quantity: every key of every ``--json`` output, with what it means.

specsim follows vLLM and Spec-Bench where they agree: *acceptance rate* is accepted over drafted
tokens, *acceptance length* and *tokens per step* count the target's bonus token (plain decoding
= 1.00). Intervals are :data:`INTERVAL_LEVEL` (90%) unless an option says otherwise: the level at
which the model's calibration is checked (leave-one-task-out coverage of held-out cells). The
test suite reads :data:`GLOSSARY` and fails on any JSON key that is not in it, so a synonym
(``speedup_mean`` beside ``speedup``) cannot creep back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INTERVAL_LEVEL", "TOKENS_PER_STEP_CONVENTION", "GLOSSARY", "central_quantiles", "undefined_keys"]

#: Default probability of every interval specsim reports.
INTERVAL_LEVEL = 0.9

#: How tokens per step are counted, the value of every ``tokens_per_step_convention`` key.
TOKENS_PER_STEP_CONVENTION = "bonus token included (vLLM, Spec-Bench; plain decoding = 1.00)"


def central_quantiles(level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """The probabilities of a central interval's ends: equal tails of ``(1 - level) / 2``.

    Examples
    --------
    >>> tuple(round(q, 3) for q in central_quantiles(0.9))
    (0.05, 0.95)
    """
    tail = (1 - level) / 2
    return tail, 1 - tail

_QUANTITIES = {
    # speed-up and tokens per step
    "speedup": "expected (or posterior predictive mean) speed-up over plain decoding, ratio of totals",
    "speedup_low": "lower end of the speed-up interval", "speedup_high": "upper end of the speed-up interval",
    "speedup_median": "posterior predictive median speed-up",
    "speedup_estimator": "how the speed-up is estimated (ratio of totals)",
    "measured_speedup": "plain over speculative wall time per generated token, ratio of totals",
    "measured_speedup_low": "lower end of the measured speed-up's 95% bootstrap interval over sequences",
    "measured_speedup_high": "upper end of the measured speed-up's 95% bootstrap interval over sequences",
    "concurrency": "requests decoded together (batch size) the costs are taken at",
    "draft_step_s": "seconds of a drafter's whole step beside its per-token cost (a lookup's search)",
    "predicted_speedup": "simulator's exact expected speed-up of a measured cell",
    "best_speedup": "speed-up at the best draft length", "best_gamma": "draft length with the highest speed-up",
    "interval_level": "probability of the central interval",
    "tokens_per_step": "expected tokens per draft-verify step, bonus token included (plain decoding = 1.00; vLLM's "
                       "acceptance length)",
    "tokens_per_step_convention": "how tokens per step are counted",
    "sequence_speedup_quantiles": "quantiles of per-sequence speed-up (Monte Carlo)",
    "q05": "5% quantile", "q50": "median", "q95": "95% quantile",
    # acceptance
    "acceptance_rate": "accepted over drafted tokens (vLLM)",
    "acceptance_rate_low": "lower end of the Wilson interval of the acceptance rate",
    "acceptance_rate_high": "upper end of the Wilson interval of the acceptance rate",
    "acceptance_rate_conditional": "accepted over evaluated at a draft index (a_d)",
    "acceptance_rate_unconditional": "accepted over drafted at a draft index (vLLM per position)",
    "acceptance_length_with_bonus": "mean tokens per verify step counting the bonus token (vLLM, Spec-Bench)",
    "accepted_per_step_without_bonus": "mean accepted drafted tokens per step (inference-lab)",
    "acceptance_first_index": "posterior mean acceptance of the first drafted token",
    "draft_chance": "posterior mean share of steps at which the drafter drafts anything (1: it always drafts; a "
                    "lookup without a match drafts nothing, and that step is a plain step)",
    "acceptance_by_draft_index": "per draft index: both per-position conventions",
    "drafted": "drafted tokens", "evaluated": "drafted tokens the target evaluated", "accepted": "accepted tokens",
    "draft_index": "0-based position inside the draft",
    # counts, lengths, times
    "sequences": "decoded sequences", "steps": "draft-verify steps", "tokens": "drafted-token rows",
    "output_tokens": "generated tokens", "cells": "cells (table rows)", "n_sequences": "sequences of a workload",
    "spec_wall_s": "speculative decoding wall seconds", "baseline_wall_s": "plain decoding wall seconds",
    "prompt_len_median": "median prompt length (tokens)", "output_len_median": "median output length (tokens)",
    "total_len_max": "longest prompt plus output (tokens)",
    **{f"{kind}_q{q}": f"{q}% quantile of {kind.replace('_', ' ')} (tokens)"
       for kind in ("prompt_len", "output_len", "total_len") for q in (10, 50, 90)},
    # extrapolation
    "extrapolates": "whether the workload visits positions beyond the measured ones",
    "max_observed_position": "largest generated-token position the traces decoded",
    "workload_max_position": "largest generated-token position the workload visits",
    "share_of_tokens_beyond_observed": "fraction of the workload's generated tokens past the measured positions",
    # keys of cells and groups
    "task": "task", "drafter": "drafter name", "drafter_kind": "generic, finetuned or untrained",
    "drafter_type": "how the drafter proposes: model (a separate small model), feature-head (EAGLE family) or lookup",
    "own_content": "whether the workload is content the drafter was trained on",
    "training_window": "longest sequence the drafter was trained on (tokens; null: trained on nothing)",
    "beyond_window_max": "doublings of the workload's context past the training window, largest over position bins",
    "temperature": "sampling temperature (0 = greedy)",
    "gamma": "draft length (vLLM's num_speculative_tokens, HF's num_assistant_tokens)",
    "schedule": "draft-length schedule",
    "gammas": "one row per draft length", "groups": "one row per group", "held_out_task": "task left out of the fit",
    "covered": "whether the interval covers the measured value",
    # errors and validation
    "error_pct": "signed error, percent of the measured value",
    "mean_absolute_percentage_error": "mean absolute percentage error over cells",
    "mean_error_pct": "mean signed error of a group, percent",
    "mean_absolute_error_pct": "mean absolute error, percent",
    "worst_group_mean_error_pct": "largest absolute mean signed error of a group, percent",
    "coverage": "share of held-out cells inside their interval", "folds": "leave-one-out fits",
    "cells_covered": "held-out cells inside their interval", "cells_covered_probe": "held-out cells inside their "
    "interval with the probe", "by_drafter_type": "the same figures per drafter type (a pooled figure hides a type)",
    "cost_run_log_sd": "spread of the fitted costs between collection runs (log scale, leave one run out) that the "
                       "interval carries; 0 for given costs",
    "costs_from": "steps the held-out cell's cost model was fitted on: kept tasks (the held-out task's left out) or "
                  "all traces (the drafter was timed only on the held-out task)",
    "target_accept": "NUTS target acceptance the fit ended with (a failing fold is refitted at a higher one)",
    "fold_draws": "draws (and warm-up) per chain a leave-one-out fold's fit ended with (a fold that still fails at "
                  "the higher target acceptance is refitted a last time with twice the draws)",
    "probe_prompts": "prompts of each held-out cell used as its probe (the others are measured)",
    "probe_tokens": "probe positions (first drafted token of each step of the probe prompts)",
    "speedup_probe": "predicted speed-up with the probe (posterior predictive mean)",
    "speedup_probe_low": "lower end of the interval with the probe",
    "speedup_probe_high": "upper end of the interval with the probe",
    "covered_probe": "whether the interval with the probe covers the measured value",
    "error_pct_probe": "signed error with the probe, percent of the measured value",
    "coverage_probe": "share of held-out cells inside their interval with the probe",
    "mean_absolute_percentage_error_probe": "mean absolute percentage error with the probe",
    "folds_passing_diagnostics": "folds whose sampler passed the diagnostics gate",
    # length divergences
    "js": "Jensen-Shannon divergence (bits)", "kl_ab": "KL(a || b)", "kl_ba": "KL(b || a)", "tv": "total variation",
    "w1_tokens": "Wasserstein-1 on tokens", "w1_log": "Wasserstein-1 on log length",
    "beyond_share": "mean over the workload's token positions of the share of training tokens before them",
    "ks": "Kolmogorov-Smirnov statistic", "estimate": "point estimate", "low": "lower end of an interval",
    "high": "upper end of an interval", "a": "first group of a pair", "b": "second group of a pair",
    "value": "value of a matrix cell", "divergence": "length divergence to the drafter's training data",
    "pairs": "divergences of every pair of groups", "matrix": "pairwise divergences", "matrix_measure":
    "divergence in the matrix", "quantiles": "length quantiles per group", "binning": "histogram binning",
    "by": "grouping column", "kind": "length kind (prompt, output or total)",
    # inputs echoed
    "directory": "trace directory", "workload": "workload given",
    "workload_kind": "lengths file, task, text or plain-decoding runs",
    "workload_assumption": "what was assumed about the workload (e.g. prompt lengths not given)",
    "content": "how the workload's content entered the prediction (probe, or assumed like the measured tasks)",
    "acceptance_from": "task whose acceptance is used", "lengths_from": "task or file whose lengths are used",
    "cost_model": "which costs the figures use", "cost_ratio": "drafter/target cost per token (Leviathan's c)",
    "alpha": "i.i.d. acceptance probability", "formula": "the closed form used",
    # traces check
    "valid": "whether the directory passed validation", "runs": "run ids",
    "incomplete_shards_skipped": "shards of an interrupted run left out",
    "cells_probed": "held-out cells predicted with a probe (a cell with no prompt beside its probe is blind only)",
    # traces compact
    "runs_compacted": "runs whose shards were merged into one", "runs_skipped": "runs left as they were "
    "(a collection holds them)", "files_before": "Parquet files of the three tables before",
    "files_after": "Parquet files of the three tables after", "bytes_before": "bytes of those files before",
    "bytes_after": "bytes of those files after",
    # fit and model
    "out": "file or folder written", "sampler": "MCMC sampler", "diagnostics": "sampler diagnostics",
    "diagnostics_passed": "whether the fit passed the diagnostics gate", "passed": "gate verdict",
    "warnings": "one line per failed check", "max_r_hat": "largest R-hat", "min_ess_bulk": "smallest bulk ESS",
    "min_ess_tail": "smallest tail ESS", "divergences": "divergent transitions after tuning",
    "min_bfmi": "smallest E-BFMI", "max_pareto_k": "largest PSIS-LOO Pareto k",
    "pareto_k_threshold": "Pareto k above which ArviZ calls a PSIS-LOO estimate unreliable (min(1 - 1/log10(S), 0.7))",
    "pareto_k_high": "cells whose Pareto k is above the threshold", "loo_cells": "cells in the PSIS-LOO estimate",
    "posterior": "posterior summary (logit scale)", "parameter": "model parameter", "mean": "posterior mean",
    "sd": "posterior standard deviation", "hdi_5%": "lower end of the 90% HDI", "hdi_95%": "upper end of the 90% HDI",
    "mcse_mean": "Monte Carlo standard error of the mean", "mcse_sd": "Monte Carlo standard error of the sd",
    "ess_bulk": "bulk effective sample size", "ess_tail": "tail effective sample size", "r_hat": "R-hat",
    "baseline_glm": "statsmodels binomial GLM", "term": "GLM term", "std_error": "standard error",
    "p_value": "p-value", "loo_comparison": "PSIS-LOO comparison", "model": "model name", "rank": "LOO rank",
    "elpd_loo": "expected log predictive density", "p_loo": "effective number of parameters",
    "elpd_diff": "difference to the best model", "dse": "standard error of the difference", "weight": "stacking weight",
    "tasks": "fitted tasks", "drafters": "fitted drafters",
    # cost profiles
    "device": "device the profile was measured on", "target_base_s": "target's one-token step at context 0 (s)",
    "draft_base_s": "drafter's one-token step at context 0 (s)",
    "verify_table": "verify seconds at context 0 per draft length",
    # imports and counts
    "source": "where the counts come from (vllm, specbench, sglang, specsim traces)",
    "conventions": "how the source counts, and what the import loses",
    "positions_resolved": "whether acceptance is known per draft index (else i.i.d. is assumed)",
    "sequences_with_lengths": "imported requests whose prompt and output lengths were stored with the counts",
    "rows": "rows written", "notes": "what a step left out or assumed, one sentence each",
    "draft_index_extrapolates": "the draft length asked for is longer than the fitted draft indices (the last one's "
                                "acceptance is reused)",
    "acceptance_measured": "every draft index up to this gamma was measured (else the last index's rate is reused)",
    "verify_cost": "where the verify cost at this gamma comes from: measured, extrapolated or assumed (constant "
                   "cost ratio)",
    "drafter_trained_on": "what the drafter was trained on",
    # report, demo, collect
    "report": "report name", "html": "rendered HTML file", "params": "report parameters",
    "traces": "trace directory", "drafted_tokens": "drafted tokens", "summary": "acceptance and speed-up per group",
    "simulator_mape": "simulator mean absolute percentage error", "fit": "the fit's summary",
    "simulator_worst_group_bias": "largest group bias of the simulator, percent",
    "run_id": "collection run id", "prompts_total": "prompts of this process", "prompts_done": "prompts written now",
    "prompts_skipped": "prompts already written", "wall_s": "wall seconds",
}

#: Every key a ``--json`` output may use, with its meaning.
GLOSSARY: dict[str, str] = dict(_QUANTITIES)


def undefined_keys(payload: Any) -> set[str]:
    """Keys of ``payload`` (recursively) that the glossary does not define."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in GLOSSARY:
                    found.add(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(payload)
    return found

"""Fit time of the hierarchical model: reference traces and a synthetic set of 10M drafted tokens.

Times the whole ``fit_model`` call (compilation included), and the aggregation of token rows into
cells for the synthetic tokens. Each fit's ``*_compile_s`` is the part of it spent in nutpie's
compilation of the model (PyTensor's graph, then Numba's log density and its gradient): it depends
on the model's structure, not on the number of tokens. Run: ``python benchmarks/bench_fit.py [--traces DIR]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsim import workflow
from specsim.model import ModelOptions, fit_model, model_cells
from specsim.model.synthetic_counts import synthetic_counts
from specsim.traces import read_traces
from specsim.traces.select import select

COMPILE_SECONDS: list[float] = []


def _timed_compile(compile_model):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        compiled = compile_model(*args, **kwargs)
        COMPILE_SECONDS.append(time.perf_counter() - start)
        return compiled
    return wrapper


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def compile_seconds(run, *args, **kwargs):
    """``run(*args, **kwargs)``, its seconds, and the seconds of the nutpie compilations within it."""
    COMPILE_SECONDS.clear()
    result, seconds = timed(run, *args, **kwargs)
    return result, seconds, sum(COMPILE_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default="data/traces/reference")
    args = parser.parse_args()
    import nutpie

    # PyMC's sampler calls nutpie.compile_pymc_model by attribute: timing it here splits compilation from sampling.
    nutpie.compile_pymc_model = _timed_compile(nutpie.compile_pymc_model)
    figures = {}
    if Path(args.traces).is_dir():
        traces = read_traces(args.traces)
        (counts, _), seconds = timed(lambda: model_cells(*workflow.traces_counts(traces, 0.0)))
        figures["reference_aggregate_s"] = seconds
        figures["reference_drafted_tokens"] = int(len(select(traces.tokens, temperature=0.0)))
        result, seconds, compiling = compile_seconds(fit_model, counts, seed=0)
        figures["reference_fit_s"] = seconds
        figures["reference_compile_s"] = compiling
        figures["reference_cells"] = len(counts.cells)
        figures["reference_diagnostics_passed"] = result.diagnostics["passed"]
    # 10M drafted tokens: token rows of 6 tasks x 3 drafters, aggregated to cells, then fitted.
    rng = np.random.default_rng(0)
    n = 10_000_000
    tokens = pd.DataFrame({
        "task": pd.Categorical.from_codes(rng.integers(0, 6, n), [f"task{i}" for i in range(6)]),
        "drafter": pd.Categorical.from_codes(rng.integers(0, 3, n), ["ft-a", "ft-b", "generic"]),
        "draft_index": rng.integers(0, 4, n), "position": rng.integers(0, 600, n),
        "accepted": rng.random(n) < 0.6,
    })
    start = time.perf_counter()
    cells = tokens.groupby(["task", "drafter", "draft_index", pd.cut(tokens["position"], [-1, 63, 255, 10**6])],
                           observed=True)["accepted"].agg(["size", "sum"])
    figures["synthetic_10M_aggregate_s"] = time.perf_counter() - start
    figures["synthetic_10M_cells"] = len(cells)
    counts, _ = synthetic_counts(rng=1, evaluated_per_cell=n // 300)  # 432 cells, fewer tokens at later indices
    figures["synthetic_10M_evaluated_tokens_in_cells"] = int(counts.cells["evaluated"].sum())
    # The configuration for big data: "auto" centres the task effects and the random walks here,
    # nutpie's low-rank mass matrix follows the remaining correlations (b_divergence against
    # b_interaction, the window slopes against the index walks), target_accept 0.99 takes the last
    # divergent transitions away.
    result, seconds, compiling = compile_seconds(fit_model, counts, ModelOptions(parameterisation="auto"), seed=0,
                                                 mass_matrix="low-rank", target_accept=0.99)
    figures["synthetic_10M_fit_s"] = seconds
    figures["synthetic_10M_compile_s"] = compiling
    figures["synthetic_10M_diagnostics"] = result.diagnostics["warnings"] or "passed"
    # For comparison: the default diagonal mass matrix at the workflow's target_accept.
    result, seconds, compiling = compile_seconds(fit_model, counts, ModelOptions(parameterisation="auto"), seed=0,
                                                 target_accept=0.95)
    figures["synthetic_10M_fit_s_diagonal"] = seconds
    figures["synthetic_10M_compile_s_diagonal"] = compiling
    figures["synthetic_10M_diagnostics_diagonal"] = result.diagnostics["warnings"] or "passed"
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

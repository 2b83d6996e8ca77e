"""Leave-one-task-out prediction on the reference traces.

For each task: fit the hierarchical model without it, then predict each drafter's speed-up on
that task (a new task effect drawn from the task population, the drafter's own effect, its
fitted cost model, the divergence of its training lengths to the task's lengths, the task's own
sequence lengths) and compare with the measured speed-up (ratio of totals). Prints JSON with
per-cell figures and the coverage of the 90% intervals.

Run: ``python scripts/reference/leave_one_task_out.py [--traces DIR] [--gamma 4]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from specsim.lengths import divergences, length_table
from specsim.model import aggregate_counts, fit_model
from specsim.model.predict import posterior_from_idata, predict_speedup
from specsim.simulate import fit_cost_model
from specsim.simulate.whatif import select
from specsim.traces import read_traces
from specsim.traces.metrics import measured_speedup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default="data/traces/reference")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    traces = read_traces(args.traces)
    tokens = select(traces.tokens, temperature=0.0)
    sequences = select(traces.sequences, temperature=0.0)
    modelled = sequences[sequences["drafter_kind"].isin(["generic", "finetuned"])]
    costs = {d: fit_cost_model(select(traces.steps, drafter=d, temperature=0.0),
                            select(traces.sequences, drafter=d, temperature=0.0))
             for d in modelled["drafter"].unique()}
    full = aggregate_counts(tokens, sequences)
    rows = []
    for task in sorted(modelled["task"].unique()):
        keep = tokens["task"] != task
        counts = aggregate_counts(tokens[keep], sequences[sequences["task"] != task],
                                  reference_lengths=full.reference_lengths)
        result = fit_model(counts, draws=args.draws, tune=args.draws, seed=0)
        posterior = posterior_from_idata(result.idata, result.metadata)
        for drafter in sorted(modelled["drafter"].unique()):
            cell = select(modelled, task=task, drafter=drafter, gamma=args.gamma)
            if cell.empty:
                continue
            lengths = length_table(cell)
            divergence = divergences(full.reference_lengths[drafter], lengths["total_len"])["js"]
            prediction = predict_speedup(posterior, costs[drafter], args.gamma, lengths["prompt_len"].to_numpy(),
                                         lengths["output_len"].to_numpy(),
                                         finetuned=cell["drafter_kind"].iloc[0] == "finetuned",
                                         divergence=divergence, drafter=drafter, rng=0)
            measured = measured_speedup(cell)
            rows.append({"held_out_task": task, "drafter": drafter, "divergence": divergence, "measured": measured,
                         "predicted_mean": prediction.mean, "low_90": prediction.low, "high_90": prediction.high,
                         "covered": prediction.low <= measured <= prediction.high,
                         "error_pct": 100 * (prediction.mean - measured) / measured,
                         "diagnostics_passed": result.diagnostics["passed"]})
    print(json.dumps({"cells": rows, "coverage_90": float(np.mean([r["covered"] for r in rows])),
                      "mean_absolute_percentage_error": float(np.mean([abs(r["error_pct"]) for r in rows]))},
                     indent=1))


if __name__ == "__main__":
    main()

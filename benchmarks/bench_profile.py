"""Cost profile vs the costs fitted on the collection runs, on the same machine.

``specsim profile`` times forward passes only (no decoding); the traces' own cost model is fitted
on the timings of whole speculative and plain decodes. On the machine that collected the traces
both should describe the same hardware: this script measures a profile of the shipped reference
traces' target and drafter, then prints each cost term and the what-if speed-up of every task of
the traces under both cost models, with their ratios.

Run on a quiet machine (nothing else using the cores): ``python benchmarks/bench_profile.py
[--drafter generic-4l] [--repeats 5]`` (prints JSON). Needs the reference drafters
(``python scripts/reference/train_drafters.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from specsim import workflow
from specsim.collect.profile import measure_cost_profile
from specsim.simulate.cost import CostModel
from specsim.traces import read_traces

ROOT = Path(__file__).resolve().parents[1]


def terms(cost: CostModel, context: int, gamma: int) -> dict[str, float]:
    """Seconds of one target token, one draft step and one verify pass of ``gamma`` drafts at ``context``."""
    draft = float(cost.draft_base_s + cost.draft_per_context_s * context)
    return {"target_token_s": float(cost.target_token_seconds(context)), "draft_step_s": draft,
            "verify_s": float(cost.step_seconds(gamma, context)) - gamma * draft,
            "prefill_overhead_s": float(cost.spec_overhead_seconds(context))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(ROOT / "data" / "traces" / "reference"))
    parser.add_argument("--drafter", default="generic-4l")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    traces = read_traces(args.traces)
    fitted = workflow.cost_models(traces)[(args.drafter, 0.0)]
    run = next(r for r in traces.runs.values() if args.drafter in r.get("drafters", {}))
    drafter_path = run["drafters"][args.drafter]["model"]
    if not Path(drafter_path).exists():
        raise SystemExit(f"{drafter_path}: no such drafter; rebuild it with python scripts/reference/train_drafters.py")
    started = time.perf_counter()
    document = measure_cost_profile(run["target"]["spec"], drafter_path, repeats=args.repeats,
                                    contexts=(64, 256, 768), gammas=(1, 2, 3, 4, 5, 6))
    profile_s = time.perf_counter() - started
    profiled = CostModel.from_dict(document["cost_model"])
    rows = []
    for task in sorted(traces.sequences["task"].unique()):
        speedups = {}
        for name, cost in (("fitted", fitted), ("profile", profiled)):
            outcome = workflow.what_if(traces, drafter=args.drafter, acceptance_from=task, workload=task,
                                         gamma=args.gamma, cost=cost, resamples=1)
            result = outcome.result
            speedups[name] = result.speedup
        rows.append({"task": task, "speedup_fitted_costs": speedups["fitted"],
                     "speedup_profile_costs": speedups["profile"],
                     "ratio_profile_over_fitted": speedups["profile"] / speedups["fitted"]})
    context = int(np.median(traces.sequences["prompt_len"] + traces.sequences["output_len"] / 2))
    fitted_terms, profile_terms = terms(fitted, context, args.gamma), terms(profiled, context, args.gamma)
    print(json.dumps({
        "drafter": args.drafter, "gamma": args.gamma, "profile_wall_s": profile_s, "median_context": context,
        "cost_terms": {k: {"fitted": fitted_terms[k], "profile": profile_terms[k],
                           "ratio_profile_over_fitted": profile_terms[k] / fitted_terms[k]} for k in fitted_terms},
        "speedups": rows,
        "max_abs_speedup_difference_pct": max(abs(r["ratio_profile_over_fitted"] - 1) for r in rows) * 100,
    }, indent=1))


if __name__ == "__main__":
    main()

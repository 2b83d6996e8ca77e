"""Speed-up under load on this machine: cost profiles at batch sizes 1-16 and each drafter's break-even load.

Measures two ``specsim profile`` documents with the reference target (SmolLM2-135M-Instruct):
one with a model drafter of the reference drafters' shape (its first 4 layers and the full head,
``smollm2#layers=4``; the trained reference drafters have the same architecture and so the same
costs) and one with prompt lookup. For each it prints the target's verify/plain cost ratios by
batch size and its roofline, then checks interpolation: batch size 12 is measured, left out, and
predicted from 8 and 16 (verify passes and the plain step). Then, from the shipped traces' own
acceptance and lengths, every drafter's speed-up at each batch size on each task (the best gamma
1-8 at each load) and where it falls to 1.

Run on a quiet machine: ``python benchmarks/bench_load.py [--repeats 5] [--out data/profiles]``
(prints JSON, writes both profiles as ``smollm2-cpu-batch-{model,lookup}.json``: the shipped
``data/profiles/`` are its output). About 15 minutes on 2 cores at 5 repeats.
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
from specsim.simulate.load import cost_model_at_concurrency
from specsim.traces import read_traces

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 2, 4, 8, 12, 16)
HELD_OUT = 12


def _interpolation_check(document: dict) -> dict:
    """Batch size 12 predicted from 8 and 16 against its measurement: relative errors."""
    models = {int(k): CostModel.from_dict(v) for k, v in document["cost_models_by_batch"].items()}
    measured = models.pop(HELD_OUT)
    predicted = cost_model_at_concurrency(models, HELD_OUT)
    errors = {f"verify_gamma_{g}": predicted.verify_table[g] / measured.verify_table[g] - 1
              for g in sorted(measured.verify_table)}
    errors["plain_step"] = predicted.target_base_s / measured.target_base_s - 1
    return {"relative_error": errors, "max_abs_relative_error": max(abs(v) for v in errors.values())}


def _break_even(traces_dir: Path, profile: Path, drafters: list[str] | None = None) -> list[dict]:
    traces = read_traces(traces_dir)
    rows = []
    chosen = drafters or sorted(traces.sequences["drafter"].unique())
    for drafter in chosen:
        for task in sorted(traces.sequences["task"].unique()):
            sweep = workflow.load_sweep(traces, drafter=drafter, acceptance_from=task, workload=task,
                                        cost_profile=profile, gammas=range(1, 9))
            rows.append({"traces": traces_dir.name, "drafter": drafter, "task": task,
                         "speedup_by_batch": {str(int(r["concurrency"])): round(r["speedup"], 3)
                                              for r in sweep.best.to_dict("records")},
                         "best_gamma_by_batch": {str(int(r["concurrency"])): int(r["gamma"])
                                                 for r in sweep.best.to_dict("records")},
                         "break_even_concurrency": sweep.break_even_concurrency})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "data" / "profiles"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"batch_sizes": list(BATCH_SIZES)}
    for name, drafter in (("model", "smollm2#layers=4"), ("lookup", "prompt-lookup")):
        started = time.perf_counter()
        document = measure_cost_profile("smollm2", drafter, gammas=(1, 2, 4, 6, 8), contexts=(64, 256),
                                        repeats=args.repeats, batch_sizes=BATCH_SIZES)
        path = out / f"smollm2-cpu-batch-{name}.json"
        path.write_text(json.dumps(document, indent=1))
        models = document["cost_models_by_batch"]
        report[name] = {
            "profile": str(path), "profile_s": round(time.perf_counter() - started, 1),
            "target_roofline": document["target_roofline"],
            "plain_step_ms_by_batch": {b: round(1000 * m["target_base_s"], 2) for b, m in models.items()},
            "draft_ms_by_batch": {b: round(1000 * (m["draft_base_s"] + m["draft_step_s"]), 3)
                                  for b, m in models.items()},
            "verify_over_plain_by_batch": {b: {g: round(v, 3) for g, v in r.items()}
                                           for b, r in document["verify_over_plain_by_batch"].items()},
            "interpolation_at_12": _interpolation_check(document),
        }
    traces = ROOT / "data" / "traces"
    report["break_even"] = (_break_even(traces / "reference", out / "smollm2-cpu-batch-model.json",
                                        ["generic-4l", "finetuned-code", "finetuned-docsum", "untrained-4l"])
                            + _break_even(traces / "reference-lookup", out / "smollm2-cpu-batch-lookup.json"))
    report["break_even_note"] = ("datastore drafters use the prompt-lookup profile (both are host-side lookups "
                                 "of well under a millisecond per request)")
    print(json.dumps(report, indent=1, default=lambda v: None if isinstance(v, float) and np.isnan(v) else v))


if __name__ == "__main__":
    main()

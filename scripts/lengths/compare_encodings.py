"""Length encodings compared on the length-controlled experiment: PSIS-LOO and leave-one-regime-out.

Each context regime of ``data/traces/lengths`` is a task here (same content; only the lengths
move), and every drafter's training lengths come from its card (``data/drafters/``). For each
encoding of the length covariate (a key of :func:`specsim.lengths.divergences`: ``js``,
``w1_log``, ``beyond_share``) the hierarchical model is fitted to the greedy traces; the fits are
compared by PSIS-LOO (ArviZ), with the model without length terms as the reference. Then, leaving
out each regime in turn, the model is refitted and predicts every drafter's speed-up on the
held-out regime (a new regime effect drawn from the population of regimes, the drafter's own effect
and cost model, the regime's own lengths): coverage of the 90% intervals, mean absolute percentage
error and the folds that pass the diagnostics gate.

Run: ``python scripts/lengths/compare_encodings.py [--draws 1000] [--measures js w1_log beyond_share]``
(prints JSON; ``--out FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from specsim import workflow
from specsim.analysis.length_effects import regime_of
from specsim.model import ModelOptions, fit_model, model_cells
from specsim.traces import read_traces
from specsim.traces.store import Traces

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = ROOT / "data" / "traces" / "lengths"
CARDS = ROOT / "data" / "drafters"


def training_lengths() -> dict[str, np.ndarray]:
    """Total lengths of each drafter's training sequences, from the drafter cards."""
    lengths = {}
    for name, card_name in (("ft-short", "lengths-ft-short"), ("ft-long", "lengths-ft-long")):
        card = json.loads((CARDS / f"{card_name}.json").read_text())
        summary = card["training_lengths"]
        lengths[name] = np.full(int(summary["sequences"]), float(summary["total_len"]))
    generic = json.loads((CARDS / "generic-4l.json").read_text())["training_lengths"]
    lengths["generic-4l"] = np.array([row["prompt_len"] + row["output_len"] for row in generic], dtype=float)
    return lengths


def regimes_as_tasks(traces: Traces) -> Traces:
    """The same traces with each sequence's task set to its context regime."""
    def relabel(frame):
        return frame.assign(task=regime_of(frame["prompt_id"]))

    return Traces(traces.root, relabel(traces.tokens), relabel(traces.steps), relabel(traces.sequences),
                  traces.runs, traces.incomplete_shards)


def main() -> None:
    import arviz as az

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(LENGTHS))
    parser.add_argument("--measures", nargs="+", default=["js", "w1_log", "beyond_share"])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--parameterisation", default="noncentred", choices=["noncentred", "centred", "auto"])
    parser.add_argument("--folds-only", action="store_true", help="skip the full fits and the LOO comparison")
    parser.add_argument("--mass-matrix", default="low-rank", choices=["diagonal", "low-rank"])
    parser.add_argument("--probe-prompts", type=int, default=0,
                        help="also predict each held-out regime with a probe of its first N prompts")
    args = parser.parse_args()
    traces = regimes_as_tasks(read_traces(args.traces))
    references = training_lengths()
    greedy_counts = workflow.traces_counts(traces, 0.0)
    started = time.perf_counter()
    fits, result = {}, {"measures": {m: {} for m in args.measures}, "draws": args.draws, "gamma": args.gamma,
                         "parameterisation": args.parameterisation, "mass_matrix": args.mass_matrix,
                         "probe_prompts": args.probe_prompts}
    options = ModelOptions(parameterisation=args.parameterisation)
    for measure in [] if args.folds_only else args.measures:
        counts, _ = model_cells(*greedy_counts, reference_lengths=references, divergence_measure=measure)
        fit = fit_model(counts, options, draws=args.draws, tune=args.draws, seed=0, target_accept=0.95,
                        mass_matrix=args.mass_matrix)
        fits[measure] = fit.idata
        divergence = counts.cells.drop_duplicates(["task", "drafter"]).set_index(["drafter", "task"])["divergence"]
        result["measures"][measure] = {
            "diagnostics_passed": bool(fit.diagnostics["passed"]), "warnings": fit.diagnostics["warnings"],
            "covariate": {f"{d}/{t}": float(v) for (d, t), v in divergence.items()},
            "divergence_slope_finetuned_mean": float(fit.idata.posterior["divergence_slope_finetuned"].mean()),
            "b_divergence_mean": float(fit.idata.posterior["b_divergence"].mean()),
        }
    if not args.folds_only:
        without = fit_model(model_cells(*greedy_counts, reference_lengths=references)[0], ModelOptions(
            divergence_terms=False, parameterisation=args.parameterisation), draws=args.draws, tune=args.draws,
            seed=0, target_accept=0.95, mass_matrix=args.mass_matrix)
        fits["no length terms"] = without.idata
        table = az.compare(fits)
        result["psis_loo"] = table[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight"]].reset_index(
            names="model").to_dict("records")
    for measure in args.measures:
        folds = workflow.leave_one_task_out(traces, gamma=args.gamma, draws=args.draws, divergence_measure=measure,
                                            reference_lengths=references, parameterisation=args.parameterisation,
                                            mass_matrix=args.mass_matrix, probe_prompts=args.probe_prompts)
        result["measures"][measure]["leave_one_regime_out"] = folds.to_dict()
    result["wall_s"] = time.perf_counter() - started
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Drafter types in both reference experiments: one model over separate models, lookups and feature heads.

Fits the hierarchical model (:mod:`specsim.model`) to each experiment's greedy traces, every drafter
type at once, and writes what issue 25 asks of it to ``data/eval/drafter-types/<experiment>.json``:

- the posterior of every term (type effects, fine-tuned per type, own content, divergence, window
  terms per type, index walks per type) and the sampler's diagnostics;
- PSIS-LOO of the model against the same model without its divergence terms and without its
  window terms (which length encoding the data prefer);
- leave-one-task-out (reference: each task; lengths: each context regime) with and without a probe
  of the held-out cell's first prompts: coverage of the 90% intervals and MAPE per drafter type and
  per gamma, never only pooled, and the folds that pass the diagnostics gate;
- the answer: per drafter type and kind, the speed-up ratio per doubling of context past the
  training window and per 0.1 of length divergence (:func:`specsim.workflow.length_effects_by_type`).

Experiments:

- ``reference``: ``data/traces/reference`` (model drafters), ``reference-lookup`` (prompt lookup,
  datastores) and ``reference-heads`` (feature heads) combined; each drafter's training lengths from
  its card (``data/drafters``; a datastore's from its file's card; prompt lookup has none);
- ``lengths``: ``data/traces/lengths`` with each context regime as a task; the fine-tuned drafters
  and the window heads were trained on the regimes' content (own content in every regime), the
  mixture drafters on none of it.

Run: ``python scripts/drafter_types.py [reference|lengths ...] [--draws 1000] [--probe-prompts N] [--gamma 4]
[--temperature 0] [--task NAME ...]`` (another gamma held out writes ``<experiment>-gamma<G>.json``; another
temperature fits that temperature's traces alone, as the model fits one temperature at a time, without a probe,
and writes ``<experiment>-t<T>.json``; ``--task`` runs only those held-out folds, without the full fit, and
writes ``...-folds-<NAME>.json``, each fold with its gate figures)
(about 10-20 minutes per experiment on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsim import workflow
from specsim.analysis.length_effects import regime_of
from specsim.errors import InputError
from specsim.lengths import length_table
from specsim.model.hierarchical import SUMMARY_PARAMETERS
from specsim.outputs import json_ready
from specsim.traces import Traces, read_traces
from specsim.traces.store import combine_traces
from specsim.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces"
CARDS = ROOT / "data" / "drafters"
OUT = ROOT / "data" / "eval" / "drafter-types"
REFERENCE_CARDS = {"generic-4l": "generic-4l", "finetuned-code": "finetuned-code",
                   "finetuned-docsum": "finetuned-docsum", "head-generic": "head-generic", "head-code": "head-code",
                   "head-docsum": "head-docsum", "generic-4l-rebuilt": "generic-4l-rebuilt"}
LENGTH_CARDS = {"generic-4l": "generic-4l", "head-generic": "head-generic", "ft-short": "lengths-ft-short",
                "ft-long": "lengths-ft-long", "head-short": "lengths-head-short", "head-long": "lengths-head-long",
                "ft-short-rebuilt": "lengths-ft-short-rebuilt"}


def card_lengths(card_name: str) -> np.ndarray:
    """Total lengths of a drafter's training sequences from its card."""
    summary = json.loads((CARDS / f"{card_name}.json").read_text())["training_lengths"]
    if isinstance(summary, dict):
        return np.full(int(summary["sequences"]), float(summary["total_len"]))
    return np.array([row["prompt_len"] + row["output_len"] for row in summary], dtype=float)


def datastore_lengths(name: str) -> np.ndarray:
    """Total lengths of a datastore's completions (prompt plus completion tokens) from its file."""
    table = pd.read_parquet(CARDS / "datastores" / f"{name}.parquet", columns=["prompt_len", "token_ids"])
    return (table["prompt_len"] + table["token_ids"].map(len)).to_numpy(dtype=float)


def regimes_as_tasks(traces: Traces) -> Traces:
    """The same traces with each sequence's task set to its context regime."""
    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(task=regime_of(frame["prompt_id"]))

    return Traces(traces.root, relabel(traces.tokens), relabel(traces.steps), relabel(traces.sequences),
                  traces.runs, traces.incomplete_shards)


def experiment(name: str) -> tuple[Traces, dict[str, np.ndarray], dict[str, list[str]] | None]:
    """The combined traces, each drafter's training lengths and (lengths experiment) own tasks."""
    if name == "reference":
        folders = [TRACES / f for f in ("reference", "reference-lookup", "reference-heads") if (TRACES / f).is_dir()]
        traces = combine_traces([read_traces(folder) for folder in folders])
        lengths = {d: card_lengths(c) for d, c in REFERENCE_CARDS.items()}
        lengths.update({f"datastore-{store}": datastore_lengths(store) for store in ("mixture", "code", "docsum")})
        return traces, lengths, None
    traces = regimes_as_tasks(read_traces(TRACES / "lengths"))
    regimes = sorted(traces.sequences["task"].dropna().unique())
    present = set(traces.sequences["drafter"])
    lengths = {d: card_lengths(c) for d, c in LENGTH_CARDS.items() if d in present}
    # The length experiment's own drafters (cards named lengths-*) were trained on the regimes' content.
    own = {d: (regimes if LENGTH_CARDS.get(d, "").startswith("lengths-") else [])
           for d in traces.sequences["drafter"].unique()}
    return traces, lengths, own


def posterior_table(outcome: workflow.FitOutcome) -> list[dict]:
    """Posterior summary of every reported term."""
    summary = outcome.result.summary(var_names=[n for n in SUMMARY_PARAMETERS if n in outcome.result.idata.posterior]
                                     + ["index_effect"])
    return summary.reset_index(names="parameter").to_dict("records")


def held_out(traces: Traces, lengths: dict[str, np.ndarray], own: dict[str, list[str]] | None, *, draws: int,
             probe_prompts: int, gamma: int, temperature: float, tasks: list[str] | None = None
             ) -> tuple[workflow.LotoResult, dict]:
    """Leave-one-task-out (every task, or ``tasks``) and its JSON section: pooled, per type and gamma, per drafter."""
    loto = workflow.leave_one_task_out(traces, temperature=temperature, gamma=gamma, draws=draws,
                                       reference_lengths=lengths, own_tasks=own,
                                       probe_prompts=probe_prompts if temperature == 0 else 0, held_out_tasks=tasks)
    return loto, {**loto.to_dict(),
                  "by_drafter_type_and_gamma": loto.by_group(("drafter_type", "gamma")).to_dict("records"),
                  "by_drafter": loto.by_group(("drafter_type", "drafter")).to_dict("records")}


def run(name: str, draws: int, probe_prompts: int, gamma: int, temperature: float = 0.0) -> dict:
    """Fit, compare, leave one task out and answer for one experiment; returns the JSON document."""
    started = time.perf_counter()
    traces, lengths, own = experiment(name)
    present = set(traces.sequences["drafter"])
    lengths = {d: v for d, v in lengths.items() if d in present}
    # As every leave-one-task-out fold: a fit that fails the diagnostics gate is fitted once more with
    # smaller NUTS steps, and the JSON says which target acceptance the reported fit used.
    for target_accept in (0.95, workflow.RETRY_TARGET_ACCEPT):
        outcome = workflow.fit(traces, temperature=temperature, draws=draws, tune=draws, reference_lengths=lengths,
                               own_tasks=own, mass_matrix="low-rank", target_accept=target_accept)
        if outcome.result.diagnostics["passed"]:
            break
    meta = outcome.result.metadata
    measured = traces.sequences[(traces.sequences["temperature"] == temperature)
                                & traces.sequences["drafter_kind"].isin(workflow.MODELLED_KINDS)]
    pooled = length_table(measured)
    workload = Workload(pooled["prompt_len"].to_numpy(), pooled["output_len"].to_numpy(), f"{name} pooled", "file")
    costs = {}
    for drafter_type in meta.drafter_types:
        members = [d for d in meta.drafters if meta.drafter_type_of.get(d) == drafter_type and d in meta.cost_models]
        costs[drafter_type] = meta.cost_model(members[0])
    effects = workflow.length_effects_by_type(outcome.result.posterior(), workload=workload, gamma=gamma, cost=costs)
    fitted_at = time.perf_counter() - started
    _, section = held_out(traces, lengths, own, draws=draws, probe_prompts=probe_prompts, gamma=gamma,
                          temperature=temperature)
    return {
        "experiment": name, "traces": meta.traces, "draws": draws, "gamma": gamma, "temperature": temperature,
        "fit": {"diagnostics": meta.diagnostics, "target_accept": meta.target_accept, "options": meta.options,
                "notes": outcome.notes,
                "drafter_types": meta.drafter_types, "drafter_type_of": meta.drafter_type_of,
                "windows": meta.windows, "own_tasks": meta.own_tasks, "posterior": posterior_table(outcome),
                "loo_comparison": meta.loo_comparison, "cells": len(outcome.counts.cells), "seconds": fitted_at},
        "length_effects": effects.to_dict("records"),
        "leave_one_task_out": section,
        "wall_s": time.perf_counter() - started,
    }


def folds_only(name: str, draws: int, probe_prompts: int, gamma: int, temperature: float, tasks: list[str]) -> dict:
    """Leave-one-task-out for the named held-out tasks only (no full fit): each fold's figures and gate."""
    started = time.perf_counter()
    traces, lengths, own = experiment(name)
    present = set(traces.sequences["drafter"])
    loto, section = held_out(traces, {d: v for d, v in lengths.items() if d in present}, own, draws=draws,
                             probe_prompts=probe_prompts, gamma=gamma, temperature=temperature, tasks=tasks)
    print(loto.summary())
    return {"experiment": name, "draws": draws, "gamma": gamma, "temperature": temperature, "held_out_tasks": tasks,
            "leave_one_task_out": section,
            "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=["reference", "lengths"],
                        help="reference, lengths or both (default: both)")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--probe-prompts", type=int, default=4)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--task", action="append", metavar="NAME",
                        help="only these held-out folds, without the full fit (repeatable): writes "
                             "<experiment>[-gamma<G>]-folds-<NAME>[-<NAME>...].json")
    args = parser.parse_args()
    unknown = sorted(set(args.experiments) - {"reference", "lengths"})
    if unknown:
        parser.error(f"no experiment {', '.join(unknown)} (choose from reference, lengths)")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.experiments:
        try:
            if args.task:
                document = folds_only(name, args.draws, args.probe_prompts, args.gamma, args.temperature, args.task)
            else:
                document = run(name, args.draws, args.probe_prompts, args.gamma, args.temperature)
        except InputError as error:  # a task, gamma or temperature the traces do not hold: nothing written
            parser.exit(2, f"{parser.prog}: {name}: {error}\n")
        suffix = f"-gamma{args.gamma}" if args.gamma != 4 else ""
        suffix += f"-t{args.temperature:g}" if args.temperature else ""
        suffix += f"-folds-{'-'.join(args.task)}" if args.task else ""
        path = OUT / f"{name}{suffix}.json"
        path.write_text(json.dumps(json_ready(document), indent=1, default=float) + "\n")
        print(f"{name}: {path} ({document['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()

"""Which part of a leave-one-task-out miss is the costs': each held-out cell under the kept tasks' costs.

A held-out cell's predicted speed-up carries two errors: the acceptance the model predicts for it,
and the costs, fitted on the kept tasks' steps and extrapolated to the held-out lengths. For each
experiment of ``scripts/drafter_types.py`` and each held-out task (lengths: context regime), this
simulates every greedy cell from its own measured acceptance and lengths under the cost models
fitted without that task (:func:`specsim.simulate.validation.cost_holdout_errors`), and under the
costs of all traces, and puts both beside the leave-one-task-out error of
``data/eval/drafter-types/<experiment>[-gamma<G>].json`` where that file holds the cell.

Writes ``data/eval/drafter-types/cost-holdout.json``: one row per experiment x held-out task x
drafter x gamma: ``error_pct_costs_held_out`` (own acceptance, kept tasks' costs),
``error_pct_costs_all`` (own acceptance, costs of every task: the simulator's own error),
``error_pct_loto`` (the model's prediction, from the JSON) and ``error_pct_acceptance_part``
(``(1 + loto) / (1 + costs held out) - 1``: what is left of the model's error once its costs' part is
taken out); per experiment x drafter type x gamma the mean of each; and per experiment, over the cells the
JSONs hold, the mean absolute of each and the correlation of the costs' and the acceptance's parts
(``loto_cells_by_experiment``: a costs' error that offsets an acceptance error shows as a negative one).
``step_time_measured_over_fitted``: per experiment x drafter x task, the greedy
steps' measured draft-verify seconds over the fitted linear cost model's
(:func:`specsim.simulate.validation.step_time_ratios`): where one linear model per drafter misses a context range.

Run: ``python scripts/cost_holdout.py [reference|lengths ...]`` (under a minute per experiment).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from specsim.outputs import json_ready
from specsim.simulate.validation import cost_holdout_errors, step_time_ratios, validate_against_measured

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drafter_types import OUT, experiment  # noqa: E402

KEY = ["held_out_task", "drafter", "gamma"]


def loto_errors(name: str, gammas: list[int]) -> pd.DataFrame:
    """The leave-one-task-out error of every held-out cell the committed JSONs of ``name`` hold."""
    frames = []
    for gamma in gammas:
        path = OUT / (f"{name}.json" if gamma == 4 else f"{name}-gamma{gamma}.json")
        if path.exists():
            cells = pd.DataFrame(json.loads(path.read_text())["leave_one_task_out"]["cells"])
            frames.append(cells[[*KEY, "drafter_type", "error_pct"]].rename(columns={"error_pct": "error_pct_loto"}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY, "drafter_type",
                                                                                      "error_pct_loto"])


def holdout_table(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every greedy cell of experiment ``name``: its cost-held-out, own-cost and loto errors; its step-time ratios."""
    traces, _, _ = experiment(name)
    greedy = traces.sequences["temperature"] == 0
    held = cost_holdout_errors(traces.tokens, traces.steps, traces.sequences)
    held = held[held["temperature"] == 0].rename(columns={"error_pct": "error_pct_costs_held_out"})
    own = validate_against_measured(traces.tokens, traces.steps, traces.sequences[greedy])
    own = own.rename(columns={"error_pct": "error_pct_costs_all", "task": "held_out_task"})
    table = held[[*KEY, "sequences", "measured_speedup", "predicted_speedup", "error_pct_costs_held_out"]].merge(
        own[[*KEY, "error_pct_costs_all"]], on=KEY, how="left")
    types = traces.sequences.drop_duplicates("drafter").set_index("drafter")["drafter_type"]
    table["drafter_type"] = table["drafter"].map(types).astype(str)
    loto = loto_errors(name, sorted(int(g) for g in table["gamma"].unique()))
    table = table.merge(loto.drop(columns="drafter_type"), on=KEY, how="left")
    # The model's error split into its costs' part (own acceptance, kept costs) and what is left: its acceptance's.
    table["error_pct_acceptance_part"] = 100 * ((1 + table["error_pct_loto"] / 100)
                                                / (1 + table["error_pct_costs_held_out"] / 100) - 1)
    ratios = step_time_ratios(traces.steps, traces.sequences)
    ratios = ratios[ratios["temperature"] == 0].assign(experiment=name)
    return table.assign(experiment=name), ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=["reference", "lengths"],
                        help="reference, lengths or both (default: both)")
    args = parser.parse_args()
    unknown = sorted(set(args.experiments) - {"reference", "lengths"})
    if unknown:
        parser.error(f"no experiment {', '.join(unknown)} (choose from reference, lengths)")
    started = time.perf_counter()
    tables, step_ratios = zip(*(holdout_table(name) for name in args.experiments), strict=True)
    table = pd.concat(tables, ignore_index=True)
    ratios = pd.concat(step_ratios, ignore_index=True)
    columns = ["error_pct_costs_held_out", "error_pct_costs_all", "error_pct_loto", "error_pct_acceptance_part"]
    groups = table.groupby(["experiment", "drafter_type", "gamma"], observed=True)[columns].mean().reset_index()
    by_task = table.groupby(["experiment", "held_out_task"], observed=True)[columns].mean().reset_index()
    # Mean absolute errors of the cells the loto files hold, and how the costs' and acceptance's parts co-vary.
    held = table.dropna(subset=["error_pct_loto"])
    parts = {name: {**{f"mean_abs_{c}": float(group[c].abs().mean()) for c in columns},
                    "cells": int(len(group)),
                    "correlation_costs_acceptance": float(group["error_pct_costs_held_out"].corr(
                        group["error_pct_acceptance_part"]))}
             for name, group in held.groupby("experiment")}
    path = OUT / "cost-holdout.json"
    document = {"command": f"python scripts/cost_holdout.py {' '.join(args.experiments)}",
                "by_drafter_type_and_gamma": groups.to_dict("records"), "by_held_out_task": by_task.to_dict("records"),
                "loto_cells_by_experiment": parts,
                "step_time_measured_over_fitted": ratios.to_dict("records"),
                "cells": table.to_dict("records"), "wall_s": time.perf_counter() - started}
    path.write_text(json.dumps(json_ready(document), indent=1, default=float) + "\n")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(by_task.round(1).to_string(index=False))
        print(pd.DataFrame(parts).round(2).to_string())
        print(groups.round(1).to_string(index=False))
        print(ratios.pivot_table(index=["experiment", "task"], columns="drafter",
                                 values="measured_over_fitted").round(3).to_string())
    print(f"{path} ({document['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()

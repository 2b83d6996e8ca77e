"""The what-if commands: simulate analytic, whatif, counts, best-gamma, load, validate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from specsim.cli import common
from specsim.cli.common import (
    _COST_PROFILE_HELP,
    _COST_RATIO_HELP,
    _TOKENIZER_HELP,
    _WORKLOAD_HELP,
    _concurrency_option,
    _cost_choice,
    _finite,
    _level_option,
    _progress_bar,
    _ranges,
    _tokenizer_loader,
    _warn_draft_indices,
    print_json,
    print_table,
    simulate_app,
    traces_and_workload,
)
from specsim.errors import InputError
from specsim.glossary import TOKENS_PER_STEP_CONVENTION


@simulate_app.command("analytic")
def simulate_analytic(
    alpha: float = typer.Option(..., help="I.i.d. acceptance probability in [0, 1].",
                                callback=_finite("--alpha", 0.0, 1.0)),
    gamma: int = typer.Option(..., help="Draft length >= 1.", min=1),
    cost_ratio: float = typer.Option(..., "--cost-ratio", help="Drafter/target cost per token, c >= 0.",
                                     callback=_finite("--cost-ratio", 0.0)),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Leviathan et al. (2023): expected tokens per step and walltime improvement."""
    from specsim.simulate.analytic import best_gamma, expected_tokens_per_step, walltime_improvement
    from specsim.simulate.cost import leviathan_cost_model

    tokens = float(expected_tokens_per_step(alpha, gamma))
    speedup = float(walltime_improvement(alpha, gamma, cost_ratio))
    best = best_gamma(np.array([alpha]), leviathan_cost_model(cost_ratio))
    result = {"alpha": alpha, "gamma": gamma, "cost_ratio": cost_ratio, "tokens_per_step": tokens,
              "tokens_per_step_convention": TOKENS_PER_STEP_CONVENTION, "speedup": speedup,
              "best_gamma": best.gamma, "best_speedup": best.speedup,
              "formula": "(1 - alpha^(gamma+1)) / ((1 - alpha) (gamma c + 1)), Leviathan et al. 2023"}
    if json_output:
        print_json(result)
        return
    common.stdout.print(f"tokens per step {tokens:.3f} (bonus included), speed-up {speedup:.3f}x; "
                        f"best gamma {best.gamma} gives {best.speedup:.3f}x")


@simulate_app.command("whatif")
def simulate_whatif(
    traces_dir: Path = typer.Option(..., "--traces", help="Trace directory."),
    drafter: str = typer.Option(..., help="Drafter whose acceptance to use."),
    acceptance_from: str = typer.Option(..., "--acceptance-from", help="Task whose acceptance behaviour to use."),
    lengths_from: str = typer.Option(..., "--lengths-from", help=_WORKLOAD_HELP),
    gamma: int = typer.Option(4, help="Draft length.", min=1),
    temperature: float = typer.Option(0.0, help="Temperature of the traces to use.",
                                      callback=_finite("--temperature", 0.0)),
    cost_ratio: float | None = typer.Option(None, "--cost-ratio", help=_COST_RATIO_HELP,
                                            callback=_finite("--cost-ratio", 0.0)),
    cost_profile: Path | None = typer.Option(None, "--cost-profile", help=_COST_PROFILE_HELP),
    concurrency: float | None = _concurrency_option(),
    resamples: int = typer.Option(200, help="Bootstrap resamples for the interval.", min=1, max=100_000),
    level: float = _level_option(),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    tokenizer: str | None = typer.Option(None, help=_TOKENIZER_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """One task's measured acceptance decoding another workload's lengths (bootstrap interval)."""
    from specsim import workflow

    cost, cost_label = _cost_choice(cost_ratio, cost_profile, concurrency)
    traces, lengths = traces_and_workload(traces_dir, lengths_from, temperature, tokenizer)
    with _progress_bar("whatif") as bar:
        task = bar.add_task("bootstrap", total=resamples)
        outcome = workflow.what_if(
            traces, drafter=drafter, acceptance_from=acceptance_from, workload=lengths, gamma=gamma,
            temperature=temperature, cost=cost, level=level, resamples=resamples, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done))
    result = outcome.result
    cost_label = cost_label or f"fitted on the traces ({drafter}, temperature {temperature:g})"
    if result.extrapolation is not None and result.extrapolation.extrapolates:
        common.stderr.print(result.extrapolation.warning() + " (this interval does not widen for it; `specsim predict` "
                            "does)", markup=False, soft_wrap=True)
    indices = workflow.measured_draft_indices(traces, drafter, acceptance_from, temperature)
    _warn_draft_indices(gamma, indices, "measured")
    if json_output:
        print_json({**outcome.to_dict(), "cost_model": cost_label, "concurrency": concurrency or 1,
                    "draft_index_extrapolates": gamma > indices})
        return
    common.stdout.print(f"{outcome.summary()}; costs: {cost_label}")


@simulate_app.command("counts")
def simulate_counts(
    counts_file: Path = typer.Argument(..., help="Counts table (specsim import, or traces aggregated)."),
    lengths_from: str = typer.Option(..., "--lengths-from", help=_WORKLOAD_HELP),
    gamma: int | None = typer.Option(None, help="Draft length (default: the counts' own; also selects the group "
                                     "measured at it where the counts hold several).", min=1, max=64),
    task: str | None = typer.Option(None, help="The task of the group to use (counts holding several)."),
    drafter: str | None = typer.Option(None, help="The drafter of the group to use."),
    temperature: float | None = typer.Option(None, help="The temperature of the group to use.",
                                             callback=_finite("--temperature", 0.0)),
    cost_ratio: float | None = typer.Option(None, "--cost-ratio", help=_COST_RATIO_HELP,
                                            callback=_finite("--cost-ratio", 0.0)),
    cost_profile: Path | None = typer.Option(None, "--cost-profile", help=_COST_PROFILE_HELP),
    concurrency: float | None = _concurrency_option(),
    level: float = _level_option(),
    seed: int = typer.Option(0, help="Seed of the interval's draws."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer that counts a text workload's tokens (the target's "
                                         "alias, GGUF file, folder or hub id)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """What-if from aggregate counts (vLLM, SGLang, Spec-Bench imports): a workload's expected speed-up.

    Counts carry no timings: give the hardware's costs (--cost-ratio or --cost-profile).
    """
    from specsim import workflow
    from specsim.traces.counts import read_counts
    from specsim.workload import resolve_workload

    cost, cost_label = _cost_choice(cost_ratio, cost_profile, concurrency)
    if cost is None:
        raise InputError("counts carry no timings: give --cost-ratio C or --cost-profile FILE", field="--cost-ratio")
    counts = workflow.select_counts_group(read_counts(counts_file), task=task, drafter=drafter,
                                          temperature=temperature, gamma=gamma)
    workload = resolve_workload(lengths_from, option="--lengths-from", tokenizer=_tokenizer_loader(tokenizer))
    result = workflow.what_if_counts(counts, workload=workload, cost=cost, gamma=gamma, level=level, seed=seed)
    if not result.positions_resolved:
        common.stderr.print("warning: the source has totals only: i.i.d. acceptance over draft positions is assumed",
                            markup=False)
    measured_gamma = int(counts["gamma"].iloc[0])
    _warn_draft_indices(gamma or measured_gamma, measured_gamma, "counted")
    if json_output:
        print_json({**result.to_dict(), **workload.describe(), "cost_model": cost_label,
                    "concurrency": concurrency or 1,
                    "draft_index_extrapolates": (gamma or measured_gamma) > measured_gamma,
                    "source": str(counts["source"].iloc[0])})
        return
    verdict = "faster than plain decoding" if result.speedup >= 1 else "slower than plain decoding"
    common.stdout.print(f"{counts['drafter'].iloc[0]} ({counts['source'].iloc[0]}) on {workload.name}: speed-up "
                        f"{result.speedup:.3f}x ({verdict}; {100 * result.level:.0f}% interval "
                        f"{result.speedup_low:.3f} to {result.speedup_high:.3f}), {result.tokens_per_step:.2f} tokens "
                        f"per step (bonus included); costs: {cost_label}")


@simulate_app.command("best-gamma")
def simulate_best_gamma(
    traces_dir: Path = typer.Option(..., "--traces", help="Trace directory."),
    drafter: str = typer.Option(..., help="Drafter whose acceptance to use."),
    acceptance_from: str = typer.Option(..., "--acceptance-from", help="Task whose acceptance behaviour to use."),
    lengths_from: str = typer.Option(..., "--lengths-from", help=_WORKLOAD_HELP),
    max_gamma: int = typer.Option(8, "--max-gamma", help="Largest draft length tried.", min=1, max=64),
    temperature: float = typer.Option(0.0, help="Temperature of the traces to use.",
                                      callback=_finite("--temperature", 0.0)),
    cost_ratio: float | None = typer.Option(None, "--cost-ratio", help=_COST_RATIO_HELP,
                                            callback=_finite("--cost-ratio", 0.0)),
    cost_profile: Path | None = typer.Option(None, "--cost-profile", help=_COST_PROFILE_HELP),
    concurrency: float | None = _concurrency_option(),
    tokenizer: str | None = typer.Option(None, help=_TOKENIZER_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Expected speed-up at every draft length 1..max-gamma for a workload, and the best one."""
    from specsim import workflow

    cost, cost_label = _cost_choice(cost_ratio, cost_profile, concurrency)
    traces, lengths = traces_and_workload(traces_dir, lengths_from, temperature, tokenizer)
    table = workflow.gamma_sweep(traces, drafter=drafter, acceptance_from=acceptance_from, workload=lengths,
                                 gammas=range(1, max_gamma + 1), temperature=temperature, cost=cost)
    best = table[table["best"]].iloc[0]
    cost_label = cost_label or f"fitted on the traces ({drafter}, temperature {temperature:g})"
    if json_output:
        print_json({"drafter": drafter, "acceptance_from": acceptance_from, "lengths_from": lengths_from,
                    "cost_model": cost_label,
                    "concurrency": concurrency or 1, "best_gamma": int(best["gamma"]), "best_speedup": best["speedup"],
                    "tokens_per_step_convention": TOKENS_PER_STEP_CONVENTION,
                    "gammas": table.drop(columns="best").to_dict("records")})
        return
    print_table(f"{drafter}: expected speed-up by draft length", table.drop(columns="best").to_dict("records"))
    unmeasured = table.loc[~table["acceptance_measured"], "gamma"].tolist()
    if unmeasured:
        common.stderr.print(f"note: gamma {_ranges(unmeasured)} drafts past the measured draft indices (0-"
                            f"{int(table['gamma'][table['acceptance_measured']].max()) - 1}): the last index's rate is "
                            "reused", markup=False, highlight=False)
    extrapolated = table.loc[table["verify_cost"] == "extrapolated", "gamma"].tolist()
    if extrapolated:
        common.stderr.print(f"note: the verify cost at gamma {_ranges(extrapolated)} was not measured at that draft "
                            "length (extrapolated from the others; on the reference CPU a gamma-2 prediction from "
                            "gamma-4 traces was 20-26% low): time it with specsim profile --gamma, or collect at it",
                            markup=False, highlight=False)
    if best["speedup"] < 1:
        common.stdout.print(f"slower than plain decoding at every draft length up to {max_gamma} (best gamma "
                            f"{int(best['gamma'])}: {best['speedup']:.3f}x); costs: {cost_label}")
    else:
        caveat = "" if best["acceptance_measured"] and best["verify_cost"] != "extrapolated" else \
            " (an extrapolation: see the notes)"
        common.stdout.print(f"best gamma {int(best['gamma'])}: {best['speedup']:.3f}x{caveat}; costs: {cost_label}")


@simulate_app.command("load")
def simulate_load(
    traces_dir: Path = typer.Option(..., "--traces", help="Trace directory."),
    drafter: str = typer.Option(..., help="Drafter whose acceptance to use."),
    acceptance_from: str = typer.Option(..., "--acceptance-from", help="Task whose acceptance behaviour to use."),
    lengths_from: str = typer.Option(..., "--lengths-from", help=_WORKLOAD_HELP),
    cost_profile: Path = typer.Option(..., "--cost-profile", help="Cost profile measured at several batch sizes "
                                      "(specsim profile --batch-size 1,2,4,...)."),
    concurrency: list[float] | None = typer.Option(None, "--concurrency", help="Concurrencies to answer for "
                                                   "(repeatable; default: the profile's batch sizes)."),
    max_gamma: int = typer.Option(8, "--max-gamma", help="Largest draft length tried.", min=1, max=64),
    temperature: float = typer.Option(0.0, help="Temperature of the traces to use.",
                                      callback=_finite("--temperature", 0.0)),
    tokenizer: str | None = typer.Option(None, help=_TOKENIZER_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Speed-up against concurrency: the best gamma at each load and where speculation stops paying."""
    from specsim import workflow

    for value in concurrency or []:
        _finite("--concurrency", 1.0, 65536.0)(value)
    traces, lengths = traces_and_workload(traces_dir, lengths_from, temperature, tokenizer)
    sweep = workflow.load_sweep(traces, drafter=drafter, acceptance_from=acceptance_from, workload=lengths,
                                cost_profile=cost_profile, concurrencies=concurrency,
                                gammas=range(1, max_gamma + 1), temperature=temperature)
    if json_output:
        print_json({"drafter": drafter, "acceptance_from": acceptance_from, "lengths_from": lengths_from,
                    "cost_model": f"cost profile {cost_profile}", **sweep.to_dict()})
        return
    print_table(f"{drafter}: best draft length by concurrency ({cost_profile})", sweep.best.to_dict("records"))
    common.stdout.print(sweep.verdict())


@simulate_app.command("validate")
def simulate_validate(
    directory: Path = typer.Argument(..., help="Trace directory."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Predicted (own acceptance, lengths, fitted costs) vs measured speed-up per cell, and bias per group."""
    from specsim import workflow
    from specsim.traces import read_traces

    validation = workflow.validate(read_traces(directory))
    if json_output:
        print_json({"directory": str(directory), "mean_absolute_percentage_error": validation.mape,
                    "worst_group_mean_error_pct": validation.worst_group_bias,
                    "groups": validation.groups.to_dict("records"), "cells": validation.cells.to_dict("records")})
        return
    print_table(f"{directory}: predicted vs measured speed-up", validation.cells.to_dict("records"))
    print_table("mean error by drafter x temperature x gamma (%)", validation.groups.to_dict("records"))
    common.stdout.print(f"mean absolute percentage error {validation.mape:.2f}% over {len(validation.cells)} cells; "
                        f"largest group bias {validation.worst_group_bias:.2f}%")

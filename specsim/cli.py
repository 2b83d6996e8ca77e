"""The ``specsim`` command line.

Conventions for every command: bad input exits with code 2 and one line on stderr
(``--debug`` shows the traceback); ``--json`` prints machine-readable results on stdout;
long work shows a progress bar on stderr. Heavy libraries (torch, PyMC) are imported inside
the commands that need them, so ``specsim --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from specsim.errors import InputError

__all__ = ["app", "main", "run", "print_json", "print_table"]

app = typer.Typer(
    help="Measure and predict the speed-up of speculative decoding.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
traces_app = typer.Typer(help="Check and summarise trace directories.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")
simulate_app = typer.Typer(help="What-if simulation: analytic, exact, Monte Carlo, replay.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

# Tables stay readable when piped or captured (rich would otherwise wrap at 80 columns).
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for bad input.")) -> None:
    _state["debug"] = debug


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, NumPy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(payload: Any) -> None:
    """Print ``payload`` as JSON on stdout (NaN written as null)."""
    sys.stdout.write(json.dumps(_clean(payload), indent=2) + "\n")


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Print rows as a rich table; floats with 3 significant decimals."""
    if not rows:
        stdout.print(f"{title}: no rows")
        return
    columns = columns or list(rows[0])
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if isinstance(rows[0][column], str) else "right")
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if isinstance(value, float):
                cells.append("-" if not math.isfinite(value) else f"{value:.3f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    stdout.print(table)


@traces_app.command("check")
def traces_check(
    directory: Path = typer.Argument(..., help="Trace directory."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate a trace directory against the trace contract (schema, version, invariants)."""
    from specsim.traces import read_traces

    traces = read_traces(directory)
    result = {
        "directory": str(directory),
        "valid": True,
        "sequences": len(traces.sequences),
        "steps": len(traces.steps),
        "tokens": len(traces.tokens),
        "runs": sorted(traces.runs),
        "incomplete_shards_skipped": list(traces.incomplete_shards),
    }
    if json_output:
        print_json(result)
        return
    stdout.print(
        f"{directory}: valid ({result['sequences']} sequences, {result['steps']} steps, "
        f"{result['tokens']} drafted tokens, {len(traces.runs)} run(s))"
    )
    if traces.incomplete_shards:
        stderr.print(
            f"warning: skipped {len(traces.incomplete_shards)} incomplete shard(s) from an interrupted "
            "run; re-run the collection to finish them"
        )


@traces_app.command("summary")
def traces_summary(
    directory: Path = typer.Argument(..., help="Trace directory."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Per task x drafter: sequences, drafted tokens, acceptance and measured speed-up.

    Acceptance rate is accepted/drafted (vLLM's convention); tokens per step is given both
    with the target's bonus token (vLLM, Spec-Bench, EAGLE: plain decoding = 1.00) and
    without it. Measured speed-up is plain over speculative wall time per generated token, a
    ratio of totals.
    """
    from specsim.traces import read_traces, summarize

    traces = read_traces(directory, tables=("steps", "sequences"))
    summary = summarize(traces.steps, traces.sequences)
    rows = summary.to_dict(orient="records")
    if json_output:
        print_json({"directory": str(directory), "speedup_estimator": "ratio of totals, time per generated token",
                    "groups": rows})
        return
    print_table(
        f"{directory}",
        rows,
        [
            "task", "drafter", "drafter_kind", "temperature", "gamma", "sequences", "drafted",
            "acceptance_rate", "acceptance_length_with_bonus", "accepted_per_step_without_bonus",
            "measured_speedup",
        ],
    )
    stdout.print(
        "acceptance_rate = accepted/drafted (vLLM); acceptance_length_with_bonus counts the "
        "target's bonus token (plain decoding = 1.00); measured_speedup = plain over speculative wall "
        "time per generated token, ratio of totals (equal to total baseline wall / total speculative wall "
        "under greedy decoding)."
    )


@app.command("collect")
def collect_command(
    config_file: Path | None = typer.Option(None, "--config", help="YAML file with the options below."),
    target: str | None = typer.Option(None, help="Target model: alias (smollm2), GGUF file, local dir or hub id."),
    drafter: list[str] | None = typer.Option(
        None, help="NAME=MODEL[,kind=generic|finetuned|untrained][,trained_on=DATASET]; repeatable."
    ),
    prompts: str | None = typer.Option(
        None, help="Prompt file (.jsonl or .parquet) or hf:DATASET?split=S&prompt=COLUMN[&id=COLUMN][&task=T]."
    ),
    gamma: list[int] | None = typer.Option(None, help="Draft length; repeatable. Default 4."),
    temperature: list[float] | None = typer.Option(None, help="0 = greedy; repeatable. Default 0."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus mass for sampling. Default 1."),
    schedule: str | None = typer.Option(None, help="constant (default) or adaptive draft length."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Token budget. Default 128."),
    seed: int | None = typer.Option(None, help="Seed of sampling. Default 0."),
    baseline: bool | None = typer.Option(None, "--baseline/--no-baseline", help="Time plain decoding too."),
    device: str | None = typer.Option(None, help="cpu (default), cuda, cuda:1, mps."),
    dtype: str | None = typer.Option(None, help="float32 (default), bfloat16, float16, auto."),
    out: Path | None = typer.Option(None, help="Trace directory to write (resumes if it exists)."),
    limit: int | None = typer.Option(None, help="Only the first N prompts."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run speculative decoding over a prompt set and write traces (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from specsim.collect.prompts import load_prompts
    from specsim.collect.runner import CollectConfig, collect, load_config_file, parse_drafter

    values = load_config_file(config_file) if config_file else {}
    given = {
        "target": target, "prompts": str(prompts) if prompts else None, "out": str(out) if out else None,
        "gammas": tuple(gamma) if gamma else None, "temperatures": tuple(temperature) if temperature else None,
        "top_p": top_p, "schedule": schedule, "max_new_tokens": max_new_tokens, "seed": seed,
        "baseline": baseline, "device": device, "dtype": dtype, "limit": limit,
        "drafters": tuple(parse_drafter(d) for d in drafter) if drafter else None,
    }
    values.update({key: value for key, value in given.items() if value is not None})
    if trust_remote_code:
        values["trust_remote_code"] = True
    for required in ("target", "drafters", "prompts", "out"):
        if not values.get(required):
            option = "--drafter" if required == "drafters" else f"--{required}"
            raise InputError("required (on the command line or in --config)", field=option)
    config = CollectConfig(**values)
    load_prompts(config.prompts)  # bad prompt sets fail before any model loads
    with Progress(
        TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.description}"), console=stderr, transient=True,
    ) as bar:
        task = bar.add_task("loading models", total=None)

        def advance(done: int, total: int, prompt_id: str) -> None:
            bar.update(task, completed=done, total=total, description=prompt_id)

        result = collect(config, progress=advance)
    if json_output:
        print_json(result)
        return
    stdout.print(
        f"{result['run_id']}: wrote {result['prompts_done']} prompt(s), skipped {result['prompts_skipped']} "
        f"already written, into {result['out']} in {result['wall_s']:.1f} s"
    )


@app.command("lengths")
def lengths_command(
    directory: Path = typer.Argument(..., help="Trace directory."),
    by: str = typer.Option("task", help="Group by task or dataset."),
    kind: str = typer.Option("total_len", help="prompt_len, output_len or total_len."),
    measure: str = typer.Option("js", help="Divergence for the matrix: js, kl_ab, kl_ba, tv, w1_tokens, w1_log, ks."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for the intervals (0: none)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Length quantiles per group and the divergence between every pair of groups."""
    from specsim.lengths import (
        DIVERGENCES,
        LENGTH_KINDS,
        bootstrap_divergences,
        divergence_matrix,
        length_quantiles,
        length_table,
    )
    from specsim.traces import read_traces

    if kind not in LENGTH_KINDS:
        raise InputError(f"must be one of {', '.join(LENGTH_KINDS)}", field="--kind")
    if measure not in DIVERGENCES:
        raise InputError(f"must be one of {', '.join(DIVERGENCES)}", field="--measure")
    if by not in ("task", "dataset"):
        raise InputError("must be task or dataset", field="--by")
    traces = read_traces(directory, tables=("sequences",))
    table = length_table(traces.sequences, by=by)
    quantiles = length_quantiles(table, by=by)
    samples = {name: group[kind].to_numpy() for name, group in table.groupby(by)}
    matrix = divergence_matrix(samples, measure)
    pairs = []
    names = list(samples)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if bootstrap:
                frame = bootstrap_divergences(samples[a], samples[b], n_resamples=bootstrap, rng=seed)
                values = {m: {"estimate": frame.loc[m, "estimate"], "low": frame.loc[m, "low"],
                              "high": frame.loc[m, "high"]} for m in DIVERGENCES}
            else:
                from specsim.lengths import divergences

                values = {m: {"estimate": v} for m, v in divergences(samples[a], samples[b]).items()}
            pairs.append({"a": a, "b": b, **values})
    if json_output:
        print_json({"directory": str(directory), "by": by, "kind": kind, "quantiles": quantiles.to_dict("records"),
                    "matrix_measure": measure, "matrix": matrix.to_dict(), "pairs": pairs,
                    "binning": "4 logarithmic bins per doubling of length (js, kl, tv)"})
        return
    print_table(f"{directory}: length quantiles by {by}", quantiles.to_dict("records"))
    rows = [{by: name, **{str(k): float(v) for k, v in row.items()}} for name, row in matrix.iterrows()]
    print_table(f"{measure} divergence of {kind} (row vs column)", rows)


@simulate_app.command("analytic")
def simulate_analytic(
    alpha: float = typer.Option(..., help="I.i.d. acceptance probability in [0, 1]."),
    gamma: int = typer.Option(..., help="Draft length >= 1."),
    cost_ratio: float = typer.Option(..., "--cost-ratio", help="Drafter/target cost per token, c >= 0."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Leviathan et al. (2023): expected tokens per step and walltime improvement."""
    from specsim.simulate.analytic import best_gamma, expected_tokens_per_step, walltime_improvement
    from specsim.simulate.cost import leviathan_cost_model

    tokens = float(expected_tokens_per_step(alpha, gamma))
    speedup = float(walltime_improvement(alpha, gamma, cost_ratio))
    best = best_gamma([alpha], leviathan_cost_model(cost_ratio))
    result = {"alpha": alpha, "gamma": gamma, "cost_ratio": cost_ratio, "tokens_per_step": tokens,
              "tokens_per_step_convention": "bonus token included (vLLM, Spec-Bench)", "speedup": speedup,
              "best_gamma": best.gamma, "best_speedup": best.speedup,
              "formula": "(1 - alpha^(gamma+1)) / ((1 - alpha) (gamma c + 1)), Leviathan et al. 2023"}
    if json_output:
        print_json(result)
        return
    stdout.print(f"tokens per step {tokens:.3f} (bonus included), speed-up {speedup:.3f}x; "
                 f"best gamma {best.gamma} gives {best.speedup:.3f}x")


def _load_lengths(source: str, traces, temperature: float | None):
    """Prompt/output lengths from a task of the traces or from a lengths file."""
    from specsim.lengths import length_table
    from specsim.simulate.whatif import select
    from specsim.workload import is_lengths_file, read_lengths_file

    if is_lengths_file(source):
        frame = read_lengths_file(source)
        return frame["prompt_len"].to_numpy(), frame["output_len"].to_numpy()
    rows = select(traces.sequences, task=source, temperature=temperature)
    if rows.empty:
        tasks = sorted(traces.sequences["task"].unique())
        raise InputError(f"no task {source!r} in the traces (tasks: {', '.join(tasks)}) and not a lengths file "
                         "(.csv, .parquet, .jsonl)", field="--lengths-from")
    table = length_table(rows)
    return table["prompt_len"].to_numpy(), table["output_len"].to_numpy()


@simulate_app.command("whatif")
def simulate_whatif(
    traces_dir: Path = typer.Option(..., "--traces", help="Trace directory."),
    drafter: str = typer.Option(..., help="Drafter whose acceptance and costs to use."),
    acceptance_from: str = typer.Option(..., "--acceptance-from", help="Task whose acceptance to use."),
    lengths_from: str = typer.Option(..., "--lengths-from", help="Task, or a lengths file with prompt_len, "
                                     "output_len (.csv/.parquet/.jsonl)."),
    gamma: int = typer.Option(..., help="Draft length to predict for."),
    temperature: float = typer.Option(0.0, help="Temperature of the traces to use."),
    resamples: int = typer.Option(200, help="Bootstrap resamples for the interval."),
    seed: int = typer.Option(0, help="Seed."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Speed-up of one task's acceptance on another task's (or a file's) lengths."""
    from specsim.simulate.cost import fit_cost_model
    from specsim.simulate.whatif import select, what_if
    from specsim.traces import read_traces

    if gamma < 1:
        raise InputError("must be >= 1", field="--gamma")
    traces = read_traces(traces_dir)
    if drafter not in set(traces.sequences["drafter"]):
        raise InputError(f"no drafter {drafter!r} in the traces (drafters: "
                         f"{', '.join(sorted(traces.sequences['drafter'].unique()))})", field="--drafter")
    tokens = select(traces.tokens, drafter=drafter, task=acceptance_from, temperature=temperature)
    if tokens.empty:
        raise InputError(f"no tokens for drafter {drafter!r}, task {acceptance_from!r}, temperature {temperature}",
                         field="--acceptance-from")
    cost = fit_cost_model(select(traces.steps, drafter=drafter, temperature=temperature),
                          select(traces.sequences, drafter=drafter, temperature=temperature))
    prompt_lengths, output_lengths = _load_lengths(lengths_from, traces, temperature)
    result = what_if(tokens, cost, gamma, prompt_lengths, output_lengths, n_resamples=resamples, rng=seed,
                     inputs={"drafter": drafter, "acceptance_from": acceptance_from, "lengths_from": lengths_from,
                             "temperature": temperature})
    if json_output:
        print_json(result.to_dict())
        return
    stdout.print(
        f"{drafter} with {acceptance_from}'s acceptance on {lengths_from}'s lengths, gamma {gamma}: "
        f"speed-up {result.speedup:.3f}x ({100 * result.level:.0f}% interval {result.speedup_low:.3f} to "
        f"{result.speedup_high:.3f}), {result.tokens_per_step:.2f} tokens per step (bonus included)"
    )


@simulate_app.command("validate")
def simulate_validate(
    directory: Path = typer.Argument(..., help="Trace directory."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Predicted (own acceptance, lengths, fitted costs) vs measured speed-up per cell."""
    from specsim.simulate.whatif import validate_against_measured
    from specsim.traces import read_traces

    traces = read_traces(directory)
    table = validate_against_measured(traces.tokens, traces.steps, traces.sequences)
    mape = float(table["error_pct"].abs().mean())
    if json_output:
        print_json({"directory": str(directory), "mean_absolute_percentage_error": mape,
                    "cells": table.to_dict("records")})
        return
    print_table(f"{directory}: predicted vs measured speed-up", table.to_dict("records"))
    stdout.print(f"mean absolute percentage error {mape:.2f}%")


def _cost_models(traces) -> dict:
    from specsim.simulate.cost import fit_cost_model
    from specsim.simulate.whatif import select

    return {drafter: fit_cost_model(select(traces.steps, drafter=drafter), select(traces.sequences, drafter=drafter))
            for drafter in sorted(traces.sequences["drafter"].unique())}


@app.command("fit")
def fit_command(
    directory: Path = typer.Argument(..., help="Trace directory."),
    out: Path = typer.Option(..., help="Posterior file to write (.nc, ArviZ InferenceData)."),
    temperature: float = typer.Option(0.0, help="Temperature of the traces to fit."),
    draws: int = typer.Option(1000, help="Posterior draws per chain."),
    tune: int = typer.Option(1000, help="Warm-up draws per chain."),
    chains: int = typer.Option(4, help="Chains."),
    seed: int = typer.Option(0, help="Seed."),
    sampler: str = typer.Option("nutpie", help="nutpie (default) or pymc."),
    target_accept: float = typer.Option(0.95, "--target-accept", help="NUTS target acceptance (raise it if the "
                                        "diagnostics report divergent transitions)."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also fit the model without divergence "
                                 "terms and compare both by PSIS-LOO."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fit the hierarchical acceptance model (and the statsmodels baseline) to traces."""
    import arviz as az

    from specsim.model import ModelOptions, aggregate_counts, fit_baseline, fit_model
    from specsim.simulate.whatif import select
    from specsim.traces import read_traces

    if sampler not in ("nutpie", "pymc"):
        raise InputError("must be nutpie or pymc", field="--sampler")
    if not 0 < target_accept < 1:
        raise InputError(f"must be in (0, 1), got {target_accept}", field="--target-accept")
    if out.suffix != ".nc":
        raise InputError("posterior files end in .nc (NetCDF)", path=out, field="--out")
    traces = read_traces(directory)
    tokens = select(traces.tokens, temperature=temperature)
    sequences = select(traces.sequences, temperature=temperature)
    if tokens.empty:
        raise InputError(f"no tokens at temperature {temperature}", field="--temperature")
    counts = aggregate_counts(tokens, sequences)
    with stderr.status("sampling the hierarchical model (compiles first)"):
        result = fit_model(counts, draws=draws, tune=tune, chains=chains, seed=seed, sampler=sampler,
                           target_accept=target_accept)
        comparison = None
        if compare:
            without = fit_model(counts, ModelOptions(divergence_terms=False), draws=draws, tune=tune, chains=chains,
                                seed=seed, sampler=sampler, target_accept=target_accept)
            table = az.compare({"with_divergence": result.idata, "without_divergence": without.idata})
            comparison = table[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight"]].reset_index(
                names="model").to_dict("records")
            pareto = az.loo(result.idata, pointwise=True).pareto_k.values
            result.diagnostics["max_pareto_k"] = float(np.max(pareto))
    baseline = fit_baseline(counts)
    result.metadata["cost_models"] = {name: {k: v for k, v in cost.to_dict().items() if k != "diagnostics"}
                                      for name, cost in _cost_models(traces).items()}
    result.metadata["temperature"] = temperature
    result.metadata["traces"] = str(directory)
    result.metadata["loo_comparison"] = comparison
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    summary = result.summary()
    payload = {"out": str(out), "sampler": result.sampler, "diagnostics": result.diagnostics,
               "posterior": summary.reset_index(names="parameter").to_dict("records"),
               "baseline_glm": baseline.reset_index(names="term").to_dict("records"),
               "loo_comparison": comparison, "cells": len(counts.cells), "tasks": counts.tasks,
               "drafters": counts.drafters}
    if json_output:
        print_json(payload)
    else:
        print_table("posterior (logit scale)", summary.reset_index(names="parameter").to_dict("records"))
        print_table("statsmodels binomial GLM, cluster-robust by task", baseline.reset_index(names="term").to_dict(
            "records"))
        if comparison:
            print_table("PSIS-LOO: with vs without divergence terms", comparison)
        stdout.print(f"wrote {out}")
    if not result.diagnostics["passed"]:
        stderr.print("warning: sampler diagnostics failed: " + "; ".join(result.diagnostics["warnings"]),
                     markup=False)


@app.command("predict")
def predict_command(
    posterior_file: Path = typer.Argument(..., help="Posterior written by specsim fit."),
    workload: str = typer.Option(..., help="Lengths file (prompt_len, output_len; .csv/.parquet/.jsonl) or a task "
                                 "of the fitted traces."),
    drafter_kind: str = typer.Option("finetuned", "--drafter-kind", help="generic or finetuned."),
    drafter: str | None = typer.Option(None, help="A drafter of the fit: its effect, training lengths and costs."),
    divergence: float | None = typer.Option(None, help="Length divergence to the drafter's training data "
                                            "(default: computed from the drafter's training lengths)."),
    gamma: int = typer.Option(4, help="Draft length."),
    cost_from: str | None = typer.Option(None, "--cost-from", help="Drafter whose fitted costs to use "
                                         "(default: --drafter, else the first fitted drafter of that kind)."),
    level: float = typer.Option(0.9, help="Central interval probability."),
    seed: int = typer.Option(0, help="Seed."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Posterior predictive speed-up of a workload for a generic or fine-tuned drafter."""
    from specsim.model import load_posterior, predict_speedup
    from specsim.simulate.cost import CostModel

    if drafter_kind not in ("generic", "finetuned"):
        raise InputError("must be generic or finetuned", field="--drafter-kind")
    if gamma < 1:
        raise InputError("must be >= 1", field="--gamma")
    if not posterior_file.is_file():
        raise InputError("no such posterior file", path=posterior_file)
    posterior = load_posterior(posterior_file)
    meta = posterior.metadata
    if drafter is not None and drafter not in meta["drafters"]:
        raise InputError(f"not a drafter of the fit ({', '.join(meta['drafters'])})", field="--drafter")
    costs = meta["cost_models"]
    cost_name = cost_from or drafter or next(
        (d for d in meta["drafters"] if meta["drafter_kinds"].get(d) == drafter_kind), meta["drafters"][0])
    if cost_name not in costs:
        raise InputError(f"no cost model for {cost_name!r} ({', '.join(costs)})", field="--cost-from")
    task = None
    from specsim.workload import is_lengths_file

    if is_lengths_file(workload):
        prompt_lengths, output_lengths = _load_lengths(workload, None, None)
    else:
        from specsim.traces import read_traces

        traces = read_traces(meta["traces"], tables=("sequences",))
        prompt_lengths, output_lengths = _load_lengths(workload, traces, meta.get("temperature", 0.0))
        task = workload
    prediction = predict_speedup(
        posterior, CostModel(**costs[cost_name]), gamma, prompt_lengths, output_lengths,
        finetuned=drafter_kind == "finetuned", divergence=divergence, drafter=drafter, task=task, level=level,
        rng=seed,
        reference_lengths=None if drafter or divergence is not None else np.concatenate(
            [np.asarray(v) for v in meta["reference_lengths"].values()]),
    )
    payload = {"workload": workload, "drafter_kind": drafter_kind, "drafter": drafter, "gamma": gamma,
               "cost_model_of": cost_name, **prediction.to_dict(),
               "diagnostics_passed": meta["diagnostics"]["passed"]}
    if json_output:
        print_json(payload)
        return
    stdout.print(
        f"{drafter_kind} drafter on {workload} (divergence {prediction.divergence:.3f}), gamma {gamma}: speed-up "
        f"{prediction.mean:.3f}x, {100 * level:.0f}% interval {prediction.low:.3f} to {prediction.high:.3f}; "
        f"{prediction.tokens_per_step_mean:.2f} tokens per step (bonus included)"
    )
    if not meta["diagnostics"]["passed"]:
        stderr.print("warning: the fit failed its sampler diagnostics: " + "; ".join(
            meta["diagnostics"]["warnings"]), markup=False)


@app.command("report")
def report_command(
    name: str = typer.Argument(..., help="Report: main, whatif, or a path to a percent script."),
    param: list[str] | None = typer.Option(None, "--param", help="KEY=VALUE parameter override; repeatable."),
    out: Path = typer.Option(Path("out/reports"), help="Folder of the HTML file."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Render a report to one self-contained HTML file (Quarto if installed, else Jupyter)."""
    import shutil

    from specsim.report import parse_params, render_report

    params = parse_params(param or [])
    with stderr.status(f"rendering {name} ({'quarto' if shutil.which('quarto') else 'jupyter kernel'})"):
        path = render_report(name, params, out)
    if json_output:
        print_json({"report": name, "html": str(path), "params": params})
        return
    stdout.print(f"wrote {path}")


_REFERENCE_TRACES = Path("data/traces/reference")


@app.command("demo")
def demo_command(
    traces_dir: Path = typer.Option(_REFERENCE_TRACES, "--traces", help="Trace directory."),
    out: Path = typer.Option(Path("out/demo"), help="Folder for the posterior and the report."),
    draws: int = typer.Option(1000, help="Posterior draws per chain."),
) -> None:
    """The main job: check the shipped traces, summarise, validate the simulator, fit, report."""
    from specsim.report import render_report
    from specsim.simulate.whatif import validate_against_measured
    from specsim.traces import read_traces, summarize

    stdout.rule("specsim demo")
    traces = read_traces(traces_dir)
    stdout.print(f"traces {traces_dir}: valid, {len(traces.sequences)} sequences, {len(traces.tokens)} drafted "
                 f"tokens, run(s) {', '.join(sorted(traces.runs))}")
    greedy = traces.sequences[traces.sequences["temperature"] == 0]
    summary = summarize(traces.steps[traces.steps["temperature"] == 0], greedy)
    print_table("greedy acceptance and measured speed-up", summary.to_dict("records"), [
        "task", "drafter", "gamma", "sequences", "acceptance_rate", "acceptance_length_with_bonus",
        "measured_speedup"])
    validation = validate_against_measured(traces.tokens, traces.steps, traces.sequences)
    stdout.print(f"simulator vs measured speed-up: mean absolute percentage error "
                 f"{validation['error_pct'].abs().mean():.2f}% over {len(validation)} cells")
    out.mkdir(parents=True, exist_ok=True)
    posterior = out / "posterior.nc"
    fit_command(traces_dir, posterior, 0.0, draws, draws, 4, 0, "nutpie", 0.95, True, False)
    with stderr.status("rendering the main report"):
        html = render_report("main", {"traces": str(traces_dir), "posterior": str(posterior)}, out)
    stdout.print(f"report: {html.resolve()}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``specsim`` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        app(args=args, prog_name="specsim", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except InputError as error:
        if _state["debug"]:
            raise
        stderr.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        stderr.print("interrupted", markup=False)
        return 130
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()

"""The model's commands: fit, predict, loto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from specsim.cli import common
from specsim.cli.common import (
    _COST_PROFILE_HELP,
    _COST_RATIO_HELP,
    _MASS_MATRIX_HELP,
    _WORKLOAD_HELP,
    _concurrency_option,
    _cost_choice,
    _finite,
    _level_option,
    _progress_bar,
    _tokenizer_loader,
    _warn_draft_indices,
    app,
    print_json,
    print_table,
)
from specsim.errors import InputError
from specsim.outputs import check_output_file


@app.command("fit")
def fit_command(
    directories: list[Path] = typer.Argument(..., help="Trace directories (several are fitted as one: an "
                                             "experiment's model, lookup and head drafters), or counts tables "
                                             "(.parquet: specsim import, specsim traces counts)."),
    out: Path = typer.Option(..., help="Posterior file to write (.nc, ArviZ InferenceData)."),
    temperature: float | None = typer.Option(None, help="Temperature to fit (default: 0 for traces, the only "
                                             "one for counts).", callback=_finite("--temperature", 0.0)),
    draws: int = typer.Option(1000, help="Posterior draws per chain.", min=1, max=100_000),
    tune: int = typer.Option(1000, help="Warm-up draws per chain.", min=1, max=100_000),
    chains: int = typer.Option(4, help="Chains.", min=1, max=64),
    seed: int = typer.Option(0, help="Seed."),
    sampler: str = typer.Option("nutpie", help="nutpie (default) or pymc."),
    target_accept: float = typer.Option(0.95, "--target-accept", help="NUTS target acceptance (raise it if the "
                                        "diagnostics report divergent transitions).",
                                        callback=_finite("--target-accept", 0.0, 1.0)),
    no_compare: bool = typer.Option(False, "--no-compare", help="Skip the fit without divergence terms and "
                                    "its PSIS-LOO comparison (done by default)."),
    length_measure: str = typer.Option("js", "--length-measure", help="Length covariate: js (Jensen-Shannon of "
                                       "total lengths, default), w1_log (Wasserstein on log length), beyond_share "
                                       "(share of training tokens before the workload's positions), ..."),
    mass_matrix: str = typer.Option("diagonal", "--mass-matrix", help=_MASS_MATRIX_HELP + " Default here: "
                                    "diagonal."),
    parameterisation: str = typer.Option("noncentred", "--parameterisation", help="Task and drafter effects and "
                                         "random walks: noncentred (default; suits little data), centred (suits "
                                         "much data) or auto (centred when every task and drafter has 200k evaluated "
                                         "tokens)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fit the hierarchical acceptance model (and the statsmodels baseline) to traces or a counts table."""
    from specsim import workflow
    from specsim.traces import read_traces

    check_output_file(out, ".nc", "--out")
    options: dict[str, Any] = dict(draws=draws, tune=tune, chains=chains, seed=seed, sampler=sampler,
                                   target_accept=target_accept, compare=not no_compare, mass_matrix=mass_matrix,
                                   parameterisation=parameterisation)
    from specsim.traces.store import combine_traces

    counts_files = [path for path in directories if path.suffix == ".parquet"]
    if counts_files and len(counts_files) < len(directories):
        raise InputError("give trace directories or counts tables, not both (specsim traces counts turns a trace "
                         "directory into a table)", field="DIRECTORIES")
    source: Any = counts_files or combine_traces([read_traces(path) for path in directories])
    with common.stderr.status("sampling the hierarchical model (compiles first)"):
        outcome = workflow.fit(source, temperature=temperature, divergence_measure=length_measure, **options)
    for note in outcome.notes:
        common.stderr.print(f"note: {note}", markup=False)
    outcome.result.save(out)
    payload = {"out": str(out), **outcome.to_dict()}
    if json_output:
        print_json(payload)
    else:
        print_table("posterior (logit scale)", payload["posterior"])
        print_table("statsmodels binomial GLM, cluster-robust by task", payload["baseline_glm"])
        if payload["loo_comparison"]:
            print_table("PSIS-LOO: with vs without divergence terms", payload["loo_comparison"])
        common.stdout.print(f"wrote {out}")
    if not outcome.result.diagnostics["passed"]:
        common.stderr.print("warning: sampler diagnostics failed: " + "; ".join(outcome.result.diagnostics["warnings"]),
                            markup=False)


@app.command("predict")
def predict_command(
    posterior_file: Path = typer.Argument(..., help="Posterior written by specsim fit."),
    workload: str = typer.Option(..., help=_WORKLOAD_HELP.replace("Task of the traces", "Task of the fit")),
    drafter_kind: str | None = typer.Option(None, "--drafter-kind", help="generic or finetuned (default: the "
                                            "--drafter's fitted kind, else finetuned)."),
    drafter: str | None = typer.Option(None, help="A drafter of the fit: its effect, training lengths and costs."),
    drafter_type: str | None = typer.Option(None, "--drafter-type", help="A new drafter's type: model, "
                                            "feature-head or lookup (a fitted --drafter has its own)."),
    own_content: bool | None = typer.Option(None, "--own-content/--other-content", help="The workload is (not) "
                                            "the drafter's training content (default: a fitted task's own)."),
    divergence: float | None = typer.Option(None, help="Length divergence to the drafter's training data "
                                            "(default: computed from the drafter's training lengths).",
                                            callback=_finite("--divergence", 0.0)),
    gamma: int = typer.Option(4, help="Draft length.", min=1, max=64),
    cost_from: str | None = typer.Option(None, "--cost-from", help="Drafter whose fitted costs to use "
                                         "(default: --drafter, else the first fitted drafter of that kind)."),
    cost_ratio: float | None = typer.Option(None, "--cost-ratio", help=_COST_RATIO_HELP,
                                            callback=_finite("--cost-ratio", 0.0)),
    cost_profile: Path | None = typer.Option(None, "--cost-profile", help=_COST_PROFILE_HELP),
    concurrency: float | None = _concurrency_option(),
    probe: Path | None = typer.Option(None, help="Probe of the workload (specsim probe): updates the new task's "
                                      "effect with this drafter's agreement on a few of its prompts."),
    level: float = _level_option(),
    seed: int = typer.Option(0, help="Seed."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer that counts a text workload's tokens (the target's "
                                         "alias, GGUF file, folder or hub id)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Posterior predictive speed-up of a workload for a generic or fine-tuned drafter.

    Without --probe the interval assumes the workload resembles the measured tasks (a new task
    effect drawn from their spread); with it, the workload's own content enters the prediction.
    """
    from specsim import workflow
    from specsim.collect.probe import read_probe
    from specsim.model import load_posterior

    cost, cost_label = _cost_choice(cost_ratio, cost_profile, concurrency)
    if probe is not None and drafter is None:
        raise InputError("a probe is per drafter: give --drafter too", field="--probe")
    probe_rows = read_probe(probe, drafter) if probe is not None else None
    from specsim.workload import is_lengths_file, resolve_workload

    posterior = load_posterior(posterior_file)
    drafter_kind = workflow.drafter_kind_of(posterior.metadata, drafter, drafter_kind)
    source: Any = workload
    if is_lengths_file(workload):
        source = resolve_workload(workload, tokenizer=_tokenizer_loader(tokenizer,
                                                                       traces_dir=posterior.metadata.traces))
    predicted = workflow.predict(
        posterior, workload=source, drafter_kind=drafter_kind, drafter=drafter, divergence=divergence, gamma=gamma,
        cost=cost, cost_from=cost_from, level=level, seed=seed, probe=probe_rows, drafter_type=drafter_type,
        own_content=own_content)
    meta = posterior.metadata
    prediction, cost_name = predicted.speedup, predicted.cost_name
    cost_label = cost_label or f"fitted on the traces ({cost_name})"
    payload = {"drafter_kind": drafter_kind, "drafter": drafter, "gamma": gamma, "cost_model": cost_label,
               "concurrency": concurrency or 1,
               "cost_run_log_sd": meta.cost_run_log_sd if cost_name != "given" else 0.0,
               "content": (f"probe of {len(probe_rows)} tokens" if probe_rows is not None else
                           "assumed like the measured tasks (no probe)"),
               **predicted.to_dict(), "diagnostics_passed": meta.diagnostics["passed"],
               "draft_index_extrapolates": gamma > meta.n_draft_index}
    _warn_draft_indices(gamma, meta.n_draft_index, "fitted")
    if prediction.extrapolation is not None and prediction.extrapolation.extrapolates:
        common.stderr.print(prediction.extrapolation.warning() + " (the interval widens: the position random walk "
                            "continues one bin per doubling)", markup=False, soft_wrap=True)
    if json_output:
        print_json(payload)
    else:
        common.stdout.print(f"{predicted.summary(drafter_kind)}, gamma {gamma}; costs: {cost_label}")
    if not meta.diagnostics["passed"]:
        common.stderr.print("warning: the fit failed its sampler diagnostics: " + "; ".join(
            meta.diagnostics["warnings"]), markup=False)


@app.command("loto")
def loto_command(
    directory: Path = typer.Argument(..., help="Trace directory."),
    temperature: float = typer.Option(0.0, help="Temperature of the traces.", callback=_finite("--temperature", 0.0)),
    gamma: int = typer.Option(4, help="Draft length of the held-out cells.", min=1),
    draws: int = typer.Option(1000, help="Posterior draws (and warm-up) per chain of each fold.", min=1,
                              max=100_000),
    level: float = _level_option(),
    seed: int = typer.Option(0, help="Seed."),
    length_measure: str = typer.Option("js", "--length-measure", help="Length covariate (as for specsim fit)."),
    probe_prompts: int = typer.Option(0, "--probe-prompts", help="Also predict each held-out cell with a probe "
                                      "made of its first N prompts (greedy traces; every prediction is then "
                                      "compared on the other prompts; a cell of N prompts or fewer is predicted "
                                      "blind only).", min=0),
    mass_matrix: str = typer.Option("low-rank", "--mass-matrix", help=_MASS_MATRIX_HELP + " Default here: "
                                    "low-rank (every fold of both reference experiments passes with it)."),
    held_out: list[str] | None = typer.Option(None, "--task", help="Hold out only this task (one fold); "
                                              "repeatable. Default: every task."),
    refits: int = typer.Option(2, "--refits", help="Refits of a fold that fails the diagnostics gate: the "
                               "first at target_accept 0.99, the second there with twice the draws; 0 for none "
                               "(a quick look).", min=0, max=2),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Leave-one-task-out: fit without each task, predict it, report interval coverage."""
    from specsim import workflow
    from specsim.traces import read_traces

    traces = read_traces(directory)
    with _progress_bar("leave-one-task-out") as bar:
        task = bar.add_task("fitting", total=None)
        result = workflow.leave_one_task_out(
            traces, temperature=temperature, gamma=gamma, draws=draws, seed=seed, level=level,
            divergence_measure=length_measure, probe_prompts=probe_prompts, mass_matrix=mass_matrix,
            held_out_tasks=held_out or None, refits=refits,
            progress=lambda done, total, name: bar.update(task, completed=done, total=total, description=name))
    if json_output:
        print_json({"directory": str(directory), **result.to_dict()})
        return
    print_table("leave-one-task-out predictions", result.cells.to_dict("records"))
    common.stdout.print(result.summary())

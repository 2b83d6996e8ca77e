"""Reports and the main job: report, demo."""

from __future__ import annotations

from pathlib import Path

import typer

from specsim.cli import common
from specsim.cli.common import app, print_json, print_table
from specsim.outputs import check_output_dir


def _report_help() -> str:
    from specsim.report.params import REPORT_PARAMETERS

    listed = "\n\n".join(f"{name}: {', '.join(sorted(checks))}" for name, checks in REPORT_PARAMETERS.items())
    return ("Render a report to one self-contained HTML file (Quarto if installed, else Jupyter).\n\n"
            "main: the answer on the reference experiments (give posterior=FILE to skip its refit of a few "
            "minutes); whatif: one drafter's acceptance on another workload; counts: an engine's counts (specsim "
            "import) under your costs. Parameters (--param KEY=VALUE), checked as the options they mirror:\n\n"
            + listed)


@app.command("report", help=_report_help())
def report_command(
    name: str = typer.Argument(..., help="Report: main, whatif, counts, or a path to a percent script."),
    param: list[str] | None = typer.Option(None, "--param", help="KEY=VALUE parameter override; repeatable."),
    out: Path = typer.Option(Path("out/reports"), help="Folder of the HTML file."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Render a report to one self-contained HTML file (Quarto if installed, else Jupyter)."""
    import shutil

    from specsim.report import find_report, parse_params, render_report

    params = parse_params(param or [])
    find_report(name)
    check_output_dir(out, "--out")
    refit = "; fitting the model first, a few minutes: posterior=FILE skips it" if (
        name == "main" and not params.get("posterior")) else ""
    with common.stderr.status(f"rendering {name} ({'quarto' if shutil.which('quarto') else 'jupyter kernel'}{refit})"):
        path = render_report(name, params, out)
    if json_output:
        print_json({"report": name, "html": str(path), "params": params})
        return
    common.stdout.print(f"wrote {path}")


#: The shipped reference experiment: separate-model, lookup and feature-head drafters on the same prompts.
_REFERENCE_TRACES = [Path("data/traces/reference"), Path("data/traces/reference-lookup"),
                     Path("data/traces/reference-heads")]


@app.command("demo")
def demo_command(
    traces_dirs: list[Path] = typer.Option(_REFERENCE_TRACES, "--traces", help="Trace directory (repeatable: "
                                           "fitted as one experiment; default: the three reference folders)."),
    out: Path = typer.Option(Path("out/demo"), help="Folder for the posterior and the report."),
    draws: int = typer.Option(1000, help="Posterior draws per chain.", min=1, max=100_000),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The main job: check the shipped traces, summarise, validate the simulator, fit, report."""
    from specsim import workflow
    from specsim.traces import read_traces
    from specsim.traces.store import combine_traces

    check_output_dir(out, "--out")
    traces = combine_traces([read_traces(folder) for folder in traces_dirs])
    if not json_output:
        common.stdout.rule("specsim demo")
        common.stdout.print(f"traces {', '.join(map(str, traces_dirs))}: valid, {len(traces.sequences)} sequences, "
                            f"{len(traces.tokens)} drafted tokens, run(s) {', '.join(sorted(traces.runs))}")
    result = workflow.demo(traces, out, draws=draws, folders=traces_dirs,
                           stage=lambda name: common.stderr.print(f"{name} ...", markup=False))
    if json_output:
        print_json(result.to_dict())
        return
    print_table("greedy acceptance and measured speed-up", result.summary.to_dict("records"), [
        "task", "drafter", "gamma", "sequences", "acceptance_rate", "acceptance_length_with_bonus", "measured_speedup"])
    validation = result.validation
    common.stdout.print(f"simulator vs measured speed-up: mean absolute percentage error {validation.mape:.2f}% over "
                        f"{len(validation.cells)} cells (largest drafter x temperature x gamma bias "
                        f"{validation.worst_group_bias:.2f}%)")
    print_table("posterior (logit scale)", result.fit.to_dict()["posterior"])
    diagnostics = result.fit.result.diagnostics
    if not diagnostics["passed"]:
        common.stderr.print("warning: sampler diagnostics failed: " + "; ".join(diagnostics["warnings"]), markup=False)
    common.stdout.print(f"report: {result.report.resolve()}")

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
    without it. Measured speed-up is summed baseline wall time over summed speculative wall
    time.
    """
    from specsim.traces import read_traces, summarize

    traces = read_traces(directory, tables=("steps", "sequences"))
    summary = summarize(traces.steps, traces.sequences)
    rows = summary.to_dict(orient="records")
    if json_output:
        print_json({"directory": str(directory), "speedup_estimator": "ratio of totals", "groups": rows})
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
        "target's bonus token (plain decoding = 1.00); measured_speedup = total baseline wall / "
        "total speculative wall."
    )


@app.command("collect")
def collect_command(
    config_file: Path | None = typer.Option(None, "--config", help="YAML file with the options below."),
    target: str | None = typer.Option(None, help="Target model: alias (smollm2), GGUF file, local dir or hub id."),
    drafter: list[str] | None = typer.Option(
        None, help="NAME=MODEL[,kind=generic|finetuned|untrained][,trained_on=DATASET]; repeatable."
    ),
    prompts: Path | None = typer.Option(None, help="Prompt file (.jsonl or .parquet)."),
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

    from specsim.collect.prompts import read_prompts
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
    read_prompts(config.prompts)  # bad prompt files fail before any model loads
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

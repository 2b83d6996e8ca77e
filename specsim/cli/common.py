"""What every ``specsim`` command shares: the typer apps, the consoles, option helpers and printing.

Command modules print through ``common.stdout`` and ``common.stderr`` (looked up when they print,
so a test can swap a console).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL
from specsim.outputs import json_ready

__all__ = ["app", "traces_app", "simulate_app", "datastore_app", "stdout", "stderr", "print_json", "print_table"]

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
    _state["debug"] = _state["debug"] or debug


def print_json(payload: Any) -> None:
    """Print ``payload`` as JSON on stdout (NaN written as null)."""
    sys.stdout.write(json.dumps(json_ready(payload), indent=2) + "\n")


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Print rows as rich tables that fit the terminal (:func:`specsim.tables.render_tables`)."""
    from specsim.tables import render_tables

    if not rows:
        stdout.print(f"{title}: no rows")
        return
    for table in render_tables(title, rows, stdout.width, columns):
        stdout.print(table)


def _finite(option: str, low: float | None = None, high: float | None = None):
    """Typer callback: a finite number within [low, high] (checked at parse time, range in the message)."""
    def check(value: float | None) -> float | None:
        if value is None:
            return value
        bounds = ((f">= {low:g}" if low is not None else "") + (" and " if low is not None and high is not None else "")
                  + (f"<= {high:g}" if high is not None else ""))
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise InputError(f"must be a finite number {bounds}".rstrip() + f", got {value}", field=option)
        return value
    return check


def _level_option(default: float = INTERVAL_LEVEL):
    return typer.Option(default, help=f"Central interval probability (default {INTERVAL_LEVEL}: the level at which "
                        "the model's calibration is checked).", callback=_open_unit("--level"))


def _open_unit(option: str):
    """Typer callback: :func:`specsim.workflow.check_level` at parse time (an interval of level 0 or 1 says nothing)."""
    def check(value: float | None) -> float | None:
        from specsim.workflow import check_level

        return value if value is None else check_level(value, option)
    return check


def _cost_choice(cost_ratio: float | None, cost_profile: Path | None, concurrency: float | None = None):
    """A hardware cost model chosen on the command line, or None for the traces' own costs."""
    from specsim.workflow import choose_cost

    return choose_cost(cost_ratio, cost_profile, concurrency)


def _concurrency_option():
    return typer.Option(None, "--concurrency", help="Requests decoded together (batch size): the cost profile's "
                        "costs at that load, interpolated between its measured batch sizes (specsim profile "
                        "--batch-size). Default: batch size 1.", callback=_finite("--concurrency", 1.0, 65536.0))


_COST_RATIO_HELP = ("Constant drafter/target cost per token (Leviathan's c; verifying gamma tokens costs one target "
                    "step) instead of the traces' fitted costs.")
_COST_PROFILE_HELP = "Cost-model JSON (from specsim profile or a fit) instead of the traces' fitted costs."


def _require_collect_extra(command: str) -> None:
    """One line naming the extra to install when torch or transformers is missing."""
    import importlib.util

    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise InputError(f"{package} is not installed: {command} needs the collect extra (pip install "
                             "'specsim[collect]', with torch==2.13.0 or your CUDA build first)", field=command)


_WORKLOAD_HELP = ("Task of the traces, lengths file (prompt_len and/or output_len; .csv, .parquet, .jsonl or .txt), "
                  "text workload (JSONL of prompt/response or chats, or hf:DATASET with ?split=S &prompt=COLUMN "
                  "&response=COLUMN; counted with --tokenizer) or a folder of plain-decoding runs (collect --baseline "
                  "without a drafter).")
_TOKENIZER_HELP = ("Tokenizer that counts a text workload's tokens (the target's alias, GGUF file, folder or hub "
                   "id; default: the target named in the traces).")


def _tokenizer_loader(spec: str | None, traces: Any = None, traces_dir: str | None = None):
    """A function loading the target's tokenizer for text workloads (None when no target is known).

    Without ``spec``, the target named in the traces' run metadata (``traces``, or the
    ``runs/*.json`` of ``traces_dir``), when they name exactly one.
    """
    if spec is None:
        runs: list[Any] = list(traces.runs.values()) if traces is not None else []
        if traces is None and traces_dir and (Path(traces_dir) / "runs").is_dir():
            for path in sorted((Path(traces_dir) / "runs").glob("*.json")):
                try:
                    runs.append(json.loads(path.read_text()))
                except (OSError, ValueError):
                    continue
        specs = {run.get("target", {}).get("spec") for run in runs
                 if isinstance(run, dict) and isinstance(run.get("target"), dict)}
        specs.discard(None)
        spec = specs.pop() if len(specs) == 1 else None
    if spec is None:
        return None

    def load() -> Any:
        _require_collect_extra("--tokenizer")
        from specsim.collect.models import load_tokenizer

        return load_tokenizer(spec)

    return load


def _progress_bar(label: str):
    """A rich progress bar on stderr, silent when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.description}"), console=stderr, transient=True,
                    disable=not stderr.is_terminal)


datastore_app = typer.Typer(help="Datastores of lookup drafters (--drafter NAME=datastore:PATH).",
                            no_args_is_help=True)
app.add_typer(datastore_app, name="datastore")


def _batch_sizes(values: list[str] | None) -> tuple[int, ...]:
    """``--batch-size`` values: whole numbers in [1, 4096], repeatable or comma-separated."""
    sizes = []
    for part in ",".join(values or ["1"]).split(","):
        if not part.strip().isdigit() or not 1 <= int(part) <= 4096:
            raise InputError(f"batch sizes must be whole numbers in [1, 4096], got {part.strip()!r}",
                             field="--batch-size")
        sizes.append(int(part))
    return tuple(sorted(set(sizes)))


def _warn_draft_indices(gamma: int, indices: int, how: str) -> None:
    """One warning line when ``gamma`` drafts past the ``indices`` draft indices the data hold."""
    if gamma > indices:
        stderr.print(f"warning: gamma {gamma} drafts past the {how} draft indices (0-{indices - 1}): the last "
                     "index's acceptance is reused for the rest", markup=False, soft_wrap=True)


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 5]`` as ``1-3, 5``."""
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


_MASS_MATRIX_HELP = ("NUTS mass matrix: diagonal or low-rank (nutpie's diagonal plus a low-rank update that "
                     "follows strong posterior correlations; for millions of tokens, with --parameterisation auto).")


def traces_and_workload(traces_dir: Path, lengths_from: str, temperature: float, tokenizer: str | None):
    """The trace directory and the workload ``--lengths-from`` names (a task of it, a file or text)."""
    from specsim.traces import read_traces
    from specsim.workload import resolve_workload

    traces = read_traces(traces_dir)
    lengths = resolve_workload(lengths_from, traces.sequences, temperature=temperature, option="--lengths-from",
                               tokenizer=_tokenizer_loader(tokenizer, traces))
    return traces, lengths

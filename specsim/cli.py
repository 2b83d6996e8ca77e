"""The ``specsim`` command line.

Conventions for every command: bad input exits with code 2 and one line on stderr
(``--debug`` shows the traceback); ``--json`` prints machine-readable results on stdout;
long work shows a progress bar on stderr. Heavy libraries (torch, PyMC) are imported inside
the commands that need them, so ``specsim --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console

from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL, TOKENS_PER_STEP_CONVENTION
from specsim.outputs import check_output_dir, check_output_file

#: How tokens per step are counted in every output.

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
    _state["debug"] = _state["debug"] or debug


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


@traces_app.command("counts")
def traces_counts(
    directory: Path = typer.Argument(..., help="Trace directory."),
    out: Path = typer.Option(..., help="Counts table to write (.parquet)."),
    temperature: float | None = typer.Option(None, help="Only this temperature (default: every temperature).",
                                             callback=_finite("--temperature", 0.0)),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Aggregate per-token traces into a counts table (per draft index and position range, with lengths).

    The counts table is the aggregate level that engines expose; `specsim fit`, `specsim simulate
    counts` and `specsim predict` read it like traces.
    """
    from specsim.lengths import length_table
    from specsim.traces import read_traces
    from specsim.traces.counts import counts_from_traces, summarize_counts, write_counts
    from specsim.traces.select import select

    check_output_file(out, ".parquet", "--out", inputs=[directory])
    traces = read_traces(directory)
    tables = [select(frame, temperature=temperature) if temperature is not None else frame
              for frame in (traces.tokens, traces.steps, traces.sequences)]
    if tables[0].empty:
        raise InputError(f"no tokens at temperature {temperature}", field="--temperature")
    counts = counts_from_traces(tables[0], tables[1], tables[2], source=f"specsim traces {directory}")
    write_counts(counts, out, lengths=length_table(tables[2]))
    summary = summarize_counts(counts)
    payload = {"out": str(out), "rows": len(counts), "groups": summary.to_dict("records")}
    if json_output:
        print_json(payload)
        return
    stdout.print(f"wrote {out}: {len(counts)} rows, {len(summary)} groups (task x drafter x temperature x gamma)")


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
    from specsim import workflow
    from specsim.traces import read_traces

    traces = read_traces(directory)  # every reader validates the whole directory, as `traces check` does
    summary = workflow.summarize_traces(traces)
    if json_output:
        print_json({"directory": str(directory), **summary.to_dict()})
        return
    rows = summary.groups.to_dict(orient="records")
    print_table(
        f"{directory}",
        rows,
        [
            "task", "drafter", "drafter_kind", "temperature", "gamma", "sequences", "drafted",
            "acceptance_rate", "acceptance_length_with_bonus", "accepted_per_step_without_bonus",
            "measured_speedup", "measured_speedup_low", "measured_speedup_high",
        ],
    )
    stdout.print(
        "acceptance_rate = accepted/drafted (vLLM); acceptance_length_with_bonus counts the "
        "target's bonus token (plain decoding = 1.00); measured_speedup = plain over speculative wall "
        "time per generated token, ratio of totals (equal to total baseline wall / total speculative wall "
        "under greedy decoding), with a 95% bootstrap interval over sequences (low, high)."
    )


@app.command("collect")
def collect_command(
    config_file: Path | None = typer.Option(None, "--config", help="YAML file with the options below."),
    target: str | None = typer.Option(None, help="Target model: alias (smollm2), GGUF file, local dir or hub id."),
    drafter: list[str] | None = typer.Option(
        None, help="NAME=MODEL with optional ,kind=K (generic, finetuned or untrained) and ,trained_on=DATASET; "
                   "repeatable. MODEL may be "
                   "prompt-lookup[:N] (transformers' prompt lookup, longest n-gram N, default 2) or "
                   "datastore:PATH (from specsim datastore build; fine-tuned on its tasks)."
    ),
    prompts: str | None = typer.Option(
        None, help="Prompt file (.jsonl or .parquet) or hf:DATASET with ?split=S &prompt=COLUMN and optional "
                   "&id=COLUMN &task=T (joined without spaces)."
    ),
    gamma: list[int] | None = typer.Option(None, help="Draft length; repeatable. Default 4."),
    temperature: list[float] | None = typer.Option(None, help="0 = greedy; repeatable. Default 0."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus mass for sampling. Default 1."),
    schedule: str | None = typer.Option(None, help="constant (default) or adaptive draft length."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Token budget. Default 128."),
    seed: int | None = typer.Option(None, help="Seed of sampling. Default 0."),
    baseline: bool | None = typer.Option(None, "--baseline/--no-baseline", help="Time plain decoding too; with no "
                                         "--drafter, plain decoding only: the target's own output lengths for the "
                                         "prompts, a workload for predict and simulate whatif."),
    device: str | None = typer.Option(None, help="cpu (default), cuda, cuda:1, mps."),
    dtype: str | None = typer.Option(None, help="float32 (default), bfloat16, float16, auto."),
    out: Path | None = typer.Option(None, help="Trace directory to write (resumes if it exists)."),
    limit: int | None = typer.Option(None, help="Only the first N prompts."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub "
                                           "(runs code from the model's repository; also needed when the --config "
                                           "file sets trust_remote_code: true)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run speculative decoding over a prompt set and write traces (resumable)."""
    from specsim.collect.prompts import load_prompts
    from specsim.collect.runner import CollectConfig, collect, load_config_file, parse_drafter

    _require_collect_extra("collect")
    values = load_config_file(config_file) if config_file else {}
    if values.get("trust_remote_code") and not trust_remote_code:
        raise InputError("trust_remote_code: true runs code from the model repositories; confirm it with "
                         "--trust-remote-code on the command line", path=config_file, field="trust_remote_code")
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
    for required in ("target", "prompts", "out"):
        if not values.get(required):
            raise InputError("required (on the command line or in --config)", field=f"--{required}")
    if not values.get("drafters") and values.get("baseline") is not True:
        raise InputError("required (on the command line or in --config); or give --baseline alone for plain "
                         "decoding only (a workload's output lengths)", field="--drafter")
    values.setdefault("drafters", ())
    config = CollectConfig(**values)
    check_output_dir(config.out, "--out")
    load_prompts(config.prompts)  # bad prompt sets fail before any model loads
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"{config.device}: no CUDA device is available to torch {torch.__version__}",
                             field="--device")
    with _progress_bar("collect") as bar:
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


datastore_app = typer.Typer(help="Datastores of lookup drafters (--drafter NAME=datastore:PATH).",
                            no_args_is_help=True)
app.add_typer(datastore_app, name="datastore")


@datastore_app.command("build")
def datastore_build(
    out: Path = typer.Option(..., help="Datastore file to write (.parquet)."),
    completions: Path | None = typer.Option(None, help="Parquet/JSONL with task and completion (text) or token_ids "
                                            "(and optionally prompt_len)."),
    tokenizer: str | None = typer.Option(None, help="The target's tokenizer, for text completions."),
    prompts: str | None = typer.Option(None, help="Instead: prompts whose greedy target outputs fill the store."),
    target: str | None = typer.Option(None, help="Target model decoding --prompts."),
    task: list[str] | None = typer.Option(None, help="Keep these tasks only; repeatable."),
    max_ngram: int = typer.Option(4, "--max-ngram", help="Longest suffix matched."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Budget of each greedy output (--prompts)."),
    trained_on: str | None = typer.Option(None, "--trained-on", help="Name of what it holds (default: its tasks)."),
    json_output: bool = typer.Option(False, "--json", help="Print the datastore's card as JSON."),
) -> None:
    """Build a datastore: a task's completions as target tokens (the fine-tuned lookup drafter)."""
    from specsim.collect.datastore import build_datastore

    _require_collect_extra("datastore build")
    check_output_file(out, ".parquet", inputs=[completions])
    with _progress_bar("decode") as bar:
        job = bar.add_task("prompts", total=None)
        card = build_datastore(out, completions=completions, prompts=prompts, target=target, tokenizer=tokenizer,
                               tasks=list(task) if task else None, max_ngram=max_ngram,
                               max_new_tokens=max_new_tokens, trained_on=trained_on,
                               progress=lambda done, total: bar.update(job, completed=done, total=total))
    if json_output:
        print_json(card)
        return
    stdout.print(f"{card['path']}: {card['train_sequences']} completions, {card['train_tokens']} tokens of "
                 f"{', '.join(card['tasks'])} (max n-gram {card['max_ngram']})")


def _batch_sizes(values: list[str] | None) -> tuple[int, ...]:
    """``--batch-size`` values: whole numbers in [1, 4096], repeatable or comma-separated."""
    sizes = []
    for part in ",".join(values or ["1"]).split(","):
        if not part.strip().isdigit() or not 1 <= int(part) <= 4096:
            raise InputError(f"batch sizes must be whole numbers in [1, 4096], got {part.strip()!r}",
                             field="--batch-size")
        sizes.append(int(part))
    return tuple(sorted(set(sizes)))


@app.command("profile")
def profile_command(
    target: str = typer.Option(..., help="Target model: alias (smollm2), GGUF file, local dir or hub id."),
    drafter: str = typer.Option(..., help="Drafter model (same forms), or prompt-lookup[:N] or datastore:PATH."),
    out: Path = typer.Option(..., help="Cost profile to write (.json; give it to --cost-profile)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("float32", help="float32, bfloat16, float16."),
    gamma: list[int] | None = typer.Option(None, help="Draft lengths to time verify passes at (repeatable; "
                                           "default 1 2 4 6 8).", min=1, max=64),
    context: list[int] | None = typer.Option(None, help="Context lengths (repeatable; default 64 256 1024).",
                                             min=2, max=1_000_000),
    repeats: int = typer.Option(5, help="Timed repeats per pass (the median is kept).", min=1, max=1000),
    batch_size: list[str] | None = typer.Option(None, "--batch-size", help="Batch sizes to time "
                                                "(repeatable or comma-separated, e.g. 1,2,4,8,16; default 1)."),
    seed: int = typer.Option(0, help="Seed of the random input tokens."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Measure a cost profile by timing forward passes (prefill, draft step, verify at several gammas and contexts)."""
    import json as json_module

    from specsim.collect.profile import measure_cost_profile
    from specsim.traces.store import atomic_write_bytes

    _require_collect_extra("profile")
    check_output_file(out, ".json", "--out")
    batch_sizes = _batch_sizes(batch_size)
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", device):
        raise InputError(f"must be cpu, cuda, cuda:N, mps or xpu, got {device!r}", field="--device")
    with _progress_bar("profile") as bar:
        task = bar.add_task("loading models", total=None)
        document = measure_cost_profile(
            target, drafter, device=device, dtype=dtype, gammas=tuple(gamma or (1, 2, 4, 6, 8)),
            contexts=tuple(context or (64, 256, 1024)), repeats=repeats, seed=seed, trust_remote_code=trust_remote_code,
            batch_sizes=batch_sizes,
            progress=lambda done, total, what: bar.update(task, completed=done, total=total, description=what))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json_module.dumps(document, indent=1).encode())
    cost = document["cost_model"]
    summary = {"out": str(out), "device": document["device_name"], "target_base_s": cost["target_base_s"],
               "draft_base_s": cost["draft_base_s"], "draft_step_s": cost["draft_step_s"],
               "cost_ratio": cost["draft_base_s"] / cost["target_base_s"],
               "verify_table": cost["verify_table"], "batch_sizes": document["batch_sizes"]}
    if "target_roofline" in document:
        summary["target_roofline"] = document["target_roofline"]
        summary["verify_over_plain_by_batch"] = document["verify_over_plain_by_batch"]
    if json_output:
        print_json(summary)
        return
    drafter_cost = (f"drafter step {1000 * cost['draft_base_s']:.1f} ms (c = {summary['cost_ratio']:.3f})"
                    if cost["draft_base_s"] > 0 else f"lookup step {1000 * cost['draft_step_s']:.3f} ms")
    stdout.print(f"wrote {out}: target step {1000 * cost['target_base_s']:.1f} ms, {drafter_cost} "
                 f"on {document['device_name']}")
    if "target_roofline" in document:
        roofline = document["target_roofline"]
        stdout.print(f"batch sizes {', '.join(map(str, document['batch_sizes']))}: the target's passes turn "
                     f"compute-bound near {roofline['knee_tokens']:.0f} tokens per pass (roofline floor "
                     f"{1000 * roofline['floor_s']:.1f} ms, {1000 * roofline['per_token_s']:.2f} ms per token)")


@app.command("probe")
def probe_command(
    target: str = typer.Option(..., help="Target model: alias (smollm2), GGUF file, local dir or hub id."),
    drafter: list[str] = typer.Option(..., help="NAME=MODEL; repeatable."),
    prompts: str = typer.Option(..., help="Prompts of the new workload (.jsonl/.parquet or hf:...)."),
    out: Path = typer.Option(..., help="Probe table to write (.parquet; give it to predict --probe)."),
    task: str | None = typer.Option(None, help="Task name for the probe (default: the prompts' own)."),
    limit: int = typer.Option(10, help="Prompts probed (the first N).", min=1, max=10_000),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Target tokens per prompt.", min=1,
                                       max=100_000),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("float32", help="float32, bfloat16, float16."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Probe a new workload: the target's outputs on a few prompts, each drafter's teacher-forced agreement."""
    import pyarrow as pa

    from specsim.collect.probe import probe_workload
    from specsim.collect.prompts import load_prompts
    from specsim.collect.runner import parse_drafter
    from specsim.traces.store import atomic_write_table

    _require_collect_extra("probe")
    check_output_file(out, ".parquet", "--out", inputs=[prompts])
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", device):
        raise InputError(f"must be cpu, cuda, cuda:N, mps or xpu, got {device!r}", field="--device")
    specs = [parse_drafter(text) for text in drafter]
    load_prompts(prompts)  # bad prompt sets fail before any model loads
    with _progress_bar("probe") as bar:
        bar_task = bar.add_task("loading models", total=None)
        table = probe_workload(target, [(s.name, s.model) for s in specs], prompts, task=task, limit=limit,
                               max_new_tokens=max_new_tokens, device=device, dtype=dtype,
                               trust_remote_code=trust_remote_code,
                               progress=lambda done, total, what: bar.update(bar_task, completed=done, total=total,
                                                                             description=what))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_table(pa.Table.from_pandas(table, preserve_index=False), out)
    rates = table.groupby("drafter")["agree"].agg(["mean", "size"]).reset_index()
    per_drafter = [{"drafter": str(r.drafter), "acceptance_rate_conditional": float(r.mean), "tokens": int(r.size)}
                   for r in rates.itertuples()]
    if json_output:
        print_json({"out": str(out), "task": str(table["task"].iloc[0]) if len(table) else task,
                    "drafters": per_drafter})
        return
    for row in per_drafter:
        stdout.print(f"{row['drafter']}: teacher-forced agreement {row['acceptance_rate_conditional']:.3f} over "
                     f"{row['tokens']} tokens (greedy acceptance of a token whose prefix was accepted)")
    stdout.print(f"wrote {out}")


@app.command("lengths")
def lengths_command(
    directory: Path = typer.Argument(..., help="Trace directory."),
    by: str = typer.Option("task", help="Group by task or dataset."),
    kind: str = typer.Option("total_len", help="prompt_len, output_len or total_len."),
    measure: str = typer.Option("js", help="Divergence for the matrix: js, kl_ab, kl_ba, tv, w1_tokens, w1_log, ks."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for the intervals (0: none).", min=0, max=100_000),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    level: float = _level_option(),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Length quantiles per group and the divergence between every pair of groups."""
    from specsim import workflow
    from specsim.traces import read_traces

    traces = read_traces(directory)  # every reader validates the whole directory, as `traces check` does
    with _progress_bar("lengths") as bar:
        task = bar.add_task("bootstrap", total=None)
        result = workflow.lengths(traces, by=by, kind=kind, measure=measure, bootstrap=bootstrap, seed=seed,
                                  level=level, progress=lambda: bar.advance(task))
    if json_output:
        print_json({"directory": str(directory), **result.to_dict()})
        return
    print_table(f"{directory}: length quantiles by {by}", result.quantiles.to_dict("records"))
    rows = [{by: name, **{str(k): float(v) for k, v in row.items()}} for name, row in result.matrix.iterrows()]
    print_table(f"{measure} divergence of {kind} (row vs column)", rows)


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
    stdout.print(f"tokens per step {tokens:.3f} (bonus included), speed-up {speedup:.3f}x; "
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
    from specsim.traces import read_traces
    from specsim.workload import resolve_workload

    cost, cost_label = _cost_choice(cost_ratio, cost_profile, concurrency)
    traces = read_traces(traces_dir)
    lengths = resolve_workload(lengths_from, traces.sequences, temperature=temperature, option="--lengths-from",
                               tokenizer=_tokenizer_loader(tokenizer, traces))
    with _progress_bar("whatif") as bar:
        task = bar.add_task("bootstrap", total=resamples)
        result, workload = workflow.what_if(
            traces, drafter=drafter, acceptance_from=acceptance_from, workload=lengths, gamma=gamma,
            temperature=temperature, cost=cost, level=level, resamples=resamples, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done))
    cost_label = cost_label or f"fitted on the traces ({drafter}, temperature {temperature:g})"
    if result.extrapolation is not None and result.extrapolation.extrapolates:
        stderr.print(result.extrapolation.warning() + " (this interval does not widen for it; `specsim predict` "
                     "does)", markup=False, soft_wrap=True)
    indices = workflow.measured_draft_indices(traces, drafter, acceptance_from, temperature)
    _warn_draft_indices(gamma, indices, "measured")
    if json_output:
        print_json({**result.to_dict(), **workload.describe(), "cost_model": cost_label,
                    "concurrency": concurrency or 1, "draft_index_extrapolates": gamma > indices})
        return
    verdict = "faster than plain decoding" if result.speedup >= 1 else "slower than plain decoding"
    stdout.print(
        f"{drafter} with {acceptance_from}'s acceptance on {workload.name}'s lengths, gamma {gamma}: "
        f"speed-up {result.speedup:.3f}x ({verdict}; {100 * result.level:.0f}% interval {result.speedup_low:.3f} to "
        f"{result.speedup_high:.3f}), {result.tokens_per_step:.2f} tokens per step (bonus included); costs: "
        f"{cost_label}"
    )


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
        stderr.print("warning: the source has totals only: i.i.d. acceptance over draft positions is assumed",
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
    stdout.print(f"{counts['drafter'].iloc[0]} ({counts['source'].iloc[0]}) on {workload.name}: speed-up "
                 f"{result.speedup:.3f}x ({verdict}; {100 * result.level:.0f}% interval {result.speedup_low:.3f} to "
                 f"{result.speedup_high:.3f}), {result.tokens_per_step:.2f} tokens per step (bonus included); costs: "
                 f"{cost_label}")


@app.command("import")
def import_command(
    kind: str = typer.Argument(..., help="Source: vllm (a /metrics scrape, or several: their window), vllm-requests "
                               "(responses with per-request speculative_decoding metrics), vllm-bench (vllm bench "
                               "serve --save-result JSON), vllm-log (logged SpecDecoding metrics lines), sglang "
                               "(responses, meta_info lines or a stream), specbench (answer JSONL), llamacpp (a "
                               "llama.cpp server /metrics scrape) or aiperf (AIPerf profile_export.jsonl)."),
    source: Path = typer.Argument(..., help="The source file."),
    out: Path = typer.Option(..., help="Counts table to write (.parquet)."),
    task: str = typer.Option(..., help="Task (workload) name the counts describe."),
    drafter: str = typer.Option(..., help="Drafter name."),
    drafter_kind: str = typer.Option("generic", "--drafter-kind", help="generic, finetuned or untrained."),
    trained_on: str | None = typer.Option(None, "--trained-on", help="What a fine-tuned drafter was trained on."),
    temperature: float | None = typer.Option(None, help="Sampling temperature of the run (0 = greedy).",
                                             callback=_finite("--temperature", 0.0)),
    gamma: int | None = typer.Option(None, help="Draft length (default: inferred where the source shows it).",
                                     min=1, max=64),
    model: str | None = typer.Option(None, "--model", help="The model_name to import from a scrape serving several."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Import a serving engine's or benchmark's acceptance data as a counts table."""
    from specsim.engines import SOURCES, import_source
    from specsim.traces.counts import summarize_counts, write_counts

    check_output_file(out, ".parquet", "--out", inputs=[source])
    result = import_source(kind, source, model=model, task=task, drafter=drafter, drafter_kind=drafter_kind,
                           trained_on=trained_on, temperature=temperature, gamma=gamma)
    lengths = result.lengths
    write_counts(result.counts, out, lengths=None if lengths is None else lengths.assign(task=task))
    summary = summarize_counts(result.counts).iloc[0].to_dict()
    payload = {"out": str(out), "source": kind, "conventions": SOURCES[kind], **summary,
               "sequences_with_lengths": 0 if lengths is None else len(lengths), "notes": result.notes}
    if json_output:
        print_json(payload)
        return
    for note in result.notes:
        stderr.print(f"note: {note}", markup=False, highlight=False)
    stdout.print(f"wrote {out}: acceptance rate {summary['acceptance_rate']:.3f} (accepted/drafted), "
                 f"{summary['tokens_per_step']:.3f} tokens per step (bonus included), {summary['steps']} steps; "
                 f"{SOURCES[kind]}")


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
    from specsim.traces import read_traces
    from specsim.workload import resolve_workload

    cost, cost_label = _cost_choice(cost_ratio, cost_profile, concurrency)
    traces = read_traces(traces_dir)
    lengths = resolve_workload(lengths_from, traces.sequences, temperature=temperature, option="--lengths-from",
                               tokenizer=_tokenizer_loader(tokenizer, traces))
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
        stderr.print(f"note: gamma {_ranges(unmeasured)} drafts past the measured draft indices (0-"
                     f"{int(table['gamma'][table['acceptance_measured']].max()) - 1}): the last index's rate is "
                     "reused", markup=False, highlight=False)
    extrapolated = table.loc[table["verify_cost"] == "extrapolated", "gamma"].tolist()
    if extrapolated:
        stderr.print(f"note: the verify cost at gamma {_ranges(extrapolated)} was not measured at that draft length "
                     "(extrapolated from the others; on the reference CPU a gamma-2 prediction from gamma-4 traces was "
                     "20-26% low): time it with specsim profile --gamma, or collect at it", markup=False,
                     highlight=False)
    if best["speedup"] < 1:
        stdout.print(f"slower than plain decoding at every draft length up to {max_gamma} (best gamma "
                     f"{int(best['gamma'])}: {best['speedup']:.3f}x); costs: {cost_label}")
    else:
        caveat = "" if best["acceptance_measured"] and best["verify_cost"] != "extrapolated" else \
            " (an extrapolation: see the notes)"
        stdout.print(f"best gamma {int(best['gamma'])}: {best['speedup']:.3f}x{caveat}; costs: {cost_label}")


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
    from specsim.traces import read_traces
    from specsim.workload import resolve_workload

    for value in concurrency or []:
        _finite("--concurrency", 1.0, 65536.0)(value)
    traces = read_traces(traces_dir)
    lengths = resolve_workload(lengths_from, traces.sequences, temperature=temperature, option="--lengths-from",
                               tokenizer=_tokenizer_loader(tokenizer, traces))
    sweep = workflow.load_sweep(traces, drafter=drafter, acceptance_from=acceptance_from, workload=lengths,
                                cost_profile=cost_profile, concurrencies=concurrency,
                                gammas=range(1, max_gamma + 1), temperature=temperature)
    if json_output:
        print_json({"drafter": drafter, "acceptance_from": acceptance_from, "lengths_from": lengths_from,
                    "cost_model": f"cost profile {cost_profile}", **sweep.to_dict()})
        return
    print_table(f"{drafter}: best draft length by concurrency ({cost_profile})", sweep.best.to_dict("records"))
    stdout.print(sweep.verdict())


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
    stdout.print(f"mean absolute percentage error {validation.mape:.2f}% over {len(validation.cells)} cells; "
                 f"largest group bias {validation.worst_group_bias:.2f}%")


_MASS_MATRIX_HELP = ("NUTS mass matrix: diagonal or low-rank (nutpie's diagonal plus a low-rank update that "
                     "follows strong posterior correlations; for millions of tokens, with --parameterisation auto).")


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
    parameterisation: str = typer.Option("noncentred", "--parameterisation", help="Task effects and random walks: "
                                         "noncentred (default; suits little data), centred (suits much data) or "
                                         "auto (centred when every task and drafter has 200k evaluated tokens)."),
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
    with stderr.status("sampling the hierarchical model (compiles first)"):
        outcome = workflow.fit(source, temperature=temperature, divergence_measure=length_measure, **options)
    for note in outcome.notes:
        stderr.print(f"note: {note}", markup=False)
    outcome.result.save(out)
    payload = {"out": str(out), **outcome.to_dict()}
    if json_output:
        print_json(payload)
    else:
        print_table("posterior (logit scale)", payload["posterior"])
        print_table("statsmodels binomial GLM, cluster-robust by task", payload["baseline_glm"])
        if payload["loo_comparison"]:
            print_table("PSIS-LOO: with vs without divergence terms", payload["loo_comparison"])
        stdout.print(f"wrote {out}")
    if not outcome.result.diagnostics["passed"]:
        stderr.print("warning: sampler diagnostics failed: " + "; ".join(outcome.result.diagnostics["warnings"]),
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
    prediction, resolved, cost_name = workflow.predict(
        posterior, workload=source, drafter_kind=drafter_kind, drafter=drafter, divergence=divergence, gamma=gamma,
        cost=cost, cost_from=cost_from, level=level, seed=seed, probe=probe_rows, drafter_type=drafter_type,
        own_content=own_content)
    meta = posterior.metadata
    cost_label = cost_label or f"fitted on the traces ({cost_name})"
    payload = {"drafter_kind": drafter_kind, "drafter": drafter, "gamma": gamma, "cost_model": cost_label,
               "concurrency": concurrency or 1,
               "cost_run_log_sd": meta.cost_run_log_sd if cost_name != "given" else 0.0,
               "content": (f"probe of {len(probe_rows)} tokens" if probe_rows is not None else
                           "assumed like the measured tasks (no probe)"),
               **resolved.describe(), **prediction.to_dict(), "diagnostics_passed": meta.diagnostics["passed"],
               "draft_index_extrapolates": gamma > meta.n_draft_index}
    _warn_draft_indices(gamma, meta.n_draft_index, "fitted")
    if prediction.extrapolation is not None and prediction.extrapolation.extrapolates:
        stderr.print(prediction.extrapolation.warning() + " (the interval widens: the position random walk "
                     "continues one bin per doubling)", markup=False, soft_wrap=True)
    if json_output:
        print_json(payload)
    else:
        verdict = "faster than plain decoding" if prediction.mean >= 1 else "slower than plain decoding"
        stdout.print(
            f"{drafter_kind} drafter on {resolved.name} (divergence {prediction.divergence:.3f}), gamma {gamma}: "
            f"speed-up {prediction.mean:.3f}x ({verdict}; {100 * level:.0f}% interval {prediction.low:.3f} to "
            f"{prediction.high:.3f}); {prediction.tokens_per_step_mean:.2f} tokens per step (bonus included); "
            f"costs: {cost_label}")
    if not meta.diagnostics["passed"]:
        stderr.print("warning: the fit failed its sampler diagnostics: " + "; ".join(
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
                                      "compared on the other prompts).", min=0),
    mass_matrix: str = typer.Option("low-rank", "--mass-matrix", help=_MASS_MATRIX_HELP + " Default here: "
                                    "low-rank (every fold of both reference experiments passes with it)."),
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
            progress=lambda done, total, name: bar.update(task, completed=done, total=total, description=name))
    if json_output:
        print_json({"directory": str(directory), **result.to_dict()})
        return
    print_table("leave-one-task-out predictions", result.cells.to_dict("records"))
    stdout.print(result.summary())


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
    with stderr.status(f"rendering {name} ({'quarto' if shutil.which('quarto') else 'jupyter kernel'}{refit})"):
        path = render_report(name, params, out)
    if json_output:
        print_json({"report": name, "html": str(path), "params": params})
        return
    stdout.print(f"wrote {path}")


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
        stdout.rule("specsim demo")
        stdout.print(f"traces {', '.join(map(str, traces_dirs))}: valid, {len(traces.sequences)} sequences, "
                     f"{len(traces.tokens)} drafted tokens, run(s) {', '.join(sorted(traces.runs))}")
    result = workflow.demo(traces, out, draws=draws, folders=traces_dirs,
                           stage=lambda name: stderr.print(f"{name} ...", markup=False))
    if json_output:
        print_json(result.to_dict())
        return
    print_table("greedy acceptance and measured speed-up", result.summary.to_dict("records"), [
        "task", "drafter", "gamma", "sequences", "acceptance_rate", "acceptance_length_with_bonus", "measured_speedup"])
    validation = result.validation
    stdout.print(f"simulator vs measured speed-up: mean absolute percentage error {validation.mape:.2f}% over "
                 f"{len(validation.cells)} cells (largest drafter x temperature x gamma bias "
                 f"{validation.worst_group_bias:.2f}%)")
    print_table("posterior (logit scale)", result.fit.to_dict()["posterior"])
    diagnostics = result.fit.result.diagnostics
    if not diagnostics["passed"]:
        stderr.print("warning: sampler diagnostics failed: " + "; ".join(diagnostics["warnings"]), markup=False)
    stdout.print(f"report: {result.report.resolve()}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``specsim`` console script; returns the exit code."""
    try:  # typer >= 0.20 vendors click as typer._click; older releases use click itself
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as click_errors  # type: ignore[no-redef]

    args = list(sys.argv[1:] if argv is None else argv)
    # --debug is the root's option, but users type it anywhere: taken out wherever it is.
    _state["debug"] = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    try:
        code = app(args=args, prog_name="specsim", standalone_mode=False)
        return int(code) if isinstance(code, int) else 0
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except click_errors.NoArgsIsHelpError as error:
        stdout.print(error.format_message(), markup=False, highlight=False)
        return 2
    except click_errors.ClickException as error:
        # Usage errors in one line (click's own output is a usage block plus a hint).
        message = " ".join(error.format_message().split())
        stderr.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        return 2
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

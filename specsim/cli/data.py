"""Commands that read, collect, time and import data: traces, collect, datastore, profile, probe, lengths, import."""

from __future__ import annotations

from pathlib import Path

import typer

from specsim.cli import common
from specsim.cli.common import (
    _batch_sizes,
    _finite,
    _level_option,
    _progress_bar,
    _require_collect_extra,
    app,
    datastore_app,
    print_json,
    print_table,
    traces_app,
)
from specsim.collect.models import check_device
from specsim.errors import InputError
from specsim.outputs import check_output_dir, check_output_file


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
    common.stdout.print(
        f"{directory}: valid ({result['sequences']} sequences, {result['steps']} steps, "
        f"{result['tokens']} drafted tokens, {len(traces.runs)} run(s))"
    )
    if traces.incomplete_shards:
        common.stderr.print(
            f"warning: skipped {len(traces.incomplete_shards)} incomplete shard(s) from an interrupted "
            "run; re-run the collection to finish them"
        )


@traces_app.command("compact")
def traces_compact(
    directory: Path = typer.Argument(..., help="Trace directory."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Merge each run's per-prompt shards into one shard; every row reads back unchanged.

    A collection writes three Parquet files per prompt; compacted, a run is three files, a third
    of the bytes or more smaller. A collection resumed afterwards still skips the prompts done, and
    a run being collected is left as it is. Safe to interrupt: nothing is deleted before its
    compacted copy is complete.
    """
    from specsim.traces.compact import compact_traces

    with _progress_bar("compacting") as bar:
        task = bar.add_task("", total=None)
        result = compact_traces(directory, progress=lambda done, total, run: bar.update(
            task, completed=done, total=total, description=run))
    if json_output:
        print_json(result)
        return
    saved = result["bytes_before"] - result["bytes_after"]
    common.stdout.print(
        f"{directory}: {len(result['runs_compacted'])} run(s) compacted, {result['files_before']} -> "
        f"{result['files_after']} files, {result['bytes_before']:,} -> {result['bytes_after']:,} bytes "
        f"({saved / max(result['bytes_before'], 1):.0%} smaller); {result['sequences']} sequences, "
        f"{result['tokens']} drafted tokens, unchanged")
    if result["runs_skipped"]:
        common.stderr.print(f"left as they are (being collected): {', '.join(result['runs_skipped'])}")


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
    common.stdout.print(f"wrote {out}: {len(counts)} rows, {len(summary)} groups (task x drafter x temperature x "
                        "gamma)")


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
    common.stdout.print(
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
    common.stdout.print(
        f"{result['run_id']}: wrote {result['prompts_done']} prompt(s), skipped {result['prompts_skipped']} "
        f"already written, into {result['out']} in {result['wall_s']:.1f} s"
    )


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
    common.stdout.print(f"{card['path']}: {card['train_sequences']} completions, {card['train_tokens']} tokens of "
                        f"{', '.join(card['tasks'])} (max n-gram {card['max_ngram']})")


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
    check_device(device)
    contexts = tuple(context or (64, 256, 1024))
    with _progress_bar("profile") as bar:
        task = bar.add_task("loading models", total=None)
        document = measure_cost_profile(
            target, drafter, device=device, dtype=dtype, gammas=tuple(gamma or (1, 2, 4, 6, 8)),
            contexts=contexts, repeats=repeats, seed=seed, trust_remote_code=trust_remote_code,
            batch_sizes=batch_sizes,
            progress=lambda done, total, what: bar.update(task, completed=done, total=total, description=what))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json_module.dumps(document, indent=1).encode())
    cost = document["cost_model"]
    # c at the shortest profiled context: the fitted base alone can be 0 when the context term takes all the time.
    shortest = min(contexts)
    target_step = cost["target_base_s"] + cost.get("target_per_context_s", 0.0) * shortest
    draft_step = cost["draft_base_s"] + cost.get("draft_per_context_s", 0.0) * shortest
    summary = {"out": str(out), "device": document["device_name"], "target_base_s": cost["target_base_s"],
               "target_step_s": target_step, "context": shortest,
               "draft_base_s": cost["draft_base_s"], "draft_step_s": cost["draft_step_s"],
               "cost_ratio": draft_step / target_step if target_step > 0 else None,
               "verify_table": cost["verify_table"], "batch_sizes": document["batch_sizes"]}
    if "target_roofline" in document:
        summary["target_roofline"] = document["target_roofline"]
        summary["verify_over_plain_by_batch"] = document["verify_over_plain_by_batch"]
    if json_output:
        print_json(summary)
        return
    ratio = f" (c = {summary['cost_ratio']:.3f})" if summary["cost_ratio"] is not None else ""
    drafter_cost = (f"drafter step {1000 * draft_step:.1f} ms{ratio}"
                    if cost["draft_base_s"] > 0 else f"lookup step {1000 * cost['draft_step_s']:.3f} ms")
    common.stdout.print(f"wrote {out}: target step {1000 * target_step:.1f} ms at context {shortest}, {drafter_cost} "
                        f"on {document['device_name']}")
    if "target_roofline" in document:
        roofline = document["target_roofline"]
        common.stdout.print(f"batch sizes {', '.join(map(str, document['batch_sizes']))}: the target's passes turn "
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
    check_device(device)
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
        common.stdout.print(f"{row['drafter']}: teacher-forced agreement {row['acceptance_rate_conditional']:.3f} over "
                            f"{row['tokens']} tokens (greedy acceptance of a token whose prefix was accepted)")
    common.stdout.print(f"wrote {out}")


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
        common.stderr.print(f"note: {note}", markup=False, highlight=False)
    common.stdout.print(f"wrote {out}: acceptance rate {summary['acceptance_rate']:.3f} (accepted/drafted), "
                        f"{summary['tokens_per_step']:.3f} tokens per step (bonus included), {summary['steps']} steps; "
                        f"{SOURCES[kind]}")

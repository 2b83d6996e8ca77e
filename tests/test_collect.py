from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from specsim.cli import main
from specsim.collect.prompts import Prompt, read_prompts, write_prompts
from specsim.collect.runner import CollectConfig, DrafterSpec, collect, load_config_file, parse_drafter
from specsim.errors import InputError
from specsim.glossary import undefined_keys
from specsim.traces import read_traces
from specsim.workload import resolve_workload
from tests.models import save_tiny_drafter

REPO = Path(__file__).resolve().parents[1]
SPECSIM = [sys.executable, "-m", "specsim.cli"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, smol_tokenizer):
    root = tmp_path_factory.mktemp("models")
    return {
        "target": save_tiny_drafter(root / "target", smol_tokenizer, seed=0),
        "drafter": save_tiny_drafter(root / "drafter", smol_tokenizer, seed=1),
        "small_vocab": save_tiny_drafter(root / "small_vocab", smol_tokenizer, seed=2, vocab_size=1000),
    }


def _prompts(path: Path, n: int) -> Path:
    prompts = [Prompt(f"p{i}", "code" if i % 2 else "chat", "unit", prompt=f"def f{i}(x):\n    return")
               for i in range(n)]
    prompts.append(Prompt("chat-msg", "chat", "unit", messages=({"role": "user", "content": "Hi there"},)))
    write_prompts(prompts, path)
    return path


def _config(tiny_models, prompts, out, **changes) -> CollectConfig:
    values = dict(
        target=str(tiny_models["target"]),
        drafters=(DrafterSpec("tiny", str(tiny_models["drafter"]), "finetuned", "unit"),
                  DrafterSpec("self", str(tiny_models["target"]), "generic", "mixture")),
        prompts=str(prompts), out=str(out), gammas=(2, 3), temperatures=(0.0, 1.0), max_new_tokens=12,
    )
    values.update(changes)
    return CollectConfig(**values)


def test_collect_writes_consistent_traces(tmp_path, tiny_models):
    config = _config(tiny_models, _prompts(tmp_path / "p.jsonl", 3), tmp_path / "traces")
    result = collect(config)
    assert result["prompts_done"] == 4
    traces = read_traces(tmp_path / "traces")  # checks every invariant between the three tables
    sequences = traces.sequences
    assert len(sequences) == 4 * 2 * 2 * 2
    greedy = sequences[sequences["temperature"] == 0]
    # Greedy speculative output equals the target's own: same ids for every drafter and gamma.
    for _, group in greedy.groupby("prompt_id"):
        outputs = {tuple(ids) for ids in group["output_token_ids"]}
        assert len(outputs) == 1
        assert (group["baseline_tokens"] == group["output_len"]).all()
    self_steps = traces.steps[traces.steps["drafter"] == "self"]
    assert (self_steps["n_accepted"] == self_steps["n_drafted"]).all()
    run = traces.runs[result["run_id"]]
    assert run["target"]["source"] == "local" and run["config"]["gammas"] == [2, 3]
    # Resuming the finished run does nothing.
    again = collect(config)
    assert again["prompts_done"] == 0 and again["prompts_skipped"] == 4


def test_baseline_only_collection_gives_the_targets_output_lengths(tmp_path, tiny_models, capsys):
    prompts = _prompts(tmp_path / "p.jsonl", 2)
    out = tmp_path / "plain"
    command = ["collect", "--target", str(tiny_models["target"]), "--prompts", str(prompts), "--out", str(out),
               "--max-new-tokens", "12", "--json"]
    assert main(command) == 2 and "--baseline alone" in capsys.readouterr().err  # no drafter, no --baseline
    assert main([*command, "--baseline"]) == 0
    assert json.loads(capsys.readouterr().out)["prompts_done"] == 3
    assert main([*command, "--baseline"]) == 0  # resumes: nothing left to do
    assert json.loads(capsys.readouterr().out)["prompts_skipped"] == 3
    workload = resolve_workload(str(out))
    assert workload.kind == "plain-decoding runs" and len(workload.output_lengths) == 3
    # Greedy plain decoding is what greedy speculative decoding outputs (lossless): same lengths.
    collect(_config(tiny_models, prompts, tmp_path / "traces", temperatures=(0.0,), gammas=(2,)))
    sequences = read_traces(tmp_path / "traces").sequences.drop_duplicates("prompt_id").sort_values("prompt_id")
    plain = pd.concat([pd.read_parquet(f) for f in (out / "baseline").glob("*.parquet")]).sort_values("prompt_id")
    assert plain["output_len"].tolist() == sequences["output_len"].tolist()
    assert plain["prompt_len"].tolist() == sequences["prompt_len"].tolist()
    # ... and the what-if takes it as the workload.
    assert main(["simulate", "whatif", "--traces", str(tmp_path / "traces"), "--drafter", "tiny",
                 "--acceptance-from", "code", "--lengths-from", str(out), "--cost-ratio", "0.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workload_kind"] == "plain-decoding runs"


def test_collect_is_reproducible_under_sampling(tmp_path, tiny_models):
    prompts = _prompts(tmp_path / "p.jsonl", 2)
    first = collect(_config(tiny_models, prompts, tmp_path / "a", temperatures=(1.0,), gammas=(2,)))
    second = collect(_config(tiny_models, prompts, tmp_path / "b", temperatures=(1.0,), gammas=(2,)))
    a, b = read_traces(tmp_path / "a").sequences, read_traces(tmp_path / "b").sequences
    assert first["run_id"] == second["run_id"]
    key = ["prompt_id", "drafter"]
    assert [list(x) for x in a.sort_values(key)["output_token_ids"]] == \
        [list(x) for x in b.sort_values(key)["output_token_ids"]]


def test_vocabulary_mismatch_is_refused(tmp_path, tiny_models, capsys):
    prompts = _prompts(tmp_path / "p.jsonl", 1)
    code = main(["collect", "--target", str(tiny_models["target"]), "--drafter",
                 f"bad={tiny_models['small_vocab']}", "--prompts", str(prompts), "--out", str(tmp_path / "t")])
    assert code == 2
    err = capsys.readouterr().err
    assert "drafter bad" in err and "1000 output logits" in err
    assert not list((tmp_path / "t").glob("sequences/*.parquet"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gamma", "0"], "gamma must be >= 1"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "inf"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--device", "bogus"], "device must be cpu, cuda"),
        (["--dtype", "float8"], "dtype must be"),
        (["--out", "/dev/null/x"], "is a file, not a folder"),
        (["--drafter", "nomodel"], "expected NAME=MODEL"),
        (["--drafter", "x=m,kind=weird"], "kind 'weird'"),
        (["--drafter", "x=m,kind=finetuned"], "needs the dataset"),
        (["--prompts", "/nonexistent.jsonl"], "no such prompt file"),
        (["--max-new-tokens", "0"], "max-new-tokens must be >= 1"),
    ],
)
def test_collect_bad_options(tmp_path, args, message, capsys):
    # Every case is refused before a model loads (the runs take well under a second each).
    prompts = _prompts(tmp_path / "p.jsonl", 1)
    base = ["collect", "--target", "smollm2", "--drafter", "d=smollm2#layers=2", "--prompts", str(prompts),
            "--out", str(tmp_path / "t")]
    # Later options of the same name win for scalars; for repeatable ones the bad value is added.
    argv = base + args if args[0] != "--drafter" else [a for a in base if a != "d=smollm2#layers=2"] + args
    if args[0] == "--drafter":
        argv.remove("--drafter")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt_id": "a", "task": "t", "dataset": "d"}\n', "exactly one of 'prompt' and 'messages'"),
        ('{"prompt_id": "a", "task": "t", "dataset": "d", "prompt": "x"}\nnot json\n', "line 2: not valid JSON"),
        ('{"prompt_id": "a", "task": "", "dataset": "d", "prompt": "x"}\n', "task: line 1"),
        ('{"prompt_id": "a", "task": "t", "dataset": "d", "prompt": "x"}\n' * 2, "duplicate prompt_id"),
        ('{"prompt_id": "a", "task": "t", "dataset": "d", "messages": [{"role": 1}]}\n', "messages: line 1"),
        ("", "no prompts"),
    ],
)
def test_bad_prompt_files(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_prompts(path)


def test_yaml_config(tmp_path, tiny_models):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"target: {tiny_models['target']}\n"
        f"drafters:\n  - {{name: tiny, model: {tiny_models['drafter']}, kind: finetuned, trained_on: unit}}\n"
        "gamma: [2, 4]\ntemperature: 0\nmax_new_tokens: 8\n"
    )
    values = load_config_file(path)
    assert values["gammas"] == (2, 4) and values["temperatures"] == (0,)
    assert values["drafters"][0] == parse_drafter(f"tiny={tiny_models['drafter']},kind=finetuned,trained_on=unit")
    path.write_text("target: x\nbogus: 1\n")
    with pytest.raises(InputError, match="unknown option"):
        load_config_file(path)
    # Wrong types in YAML are one clear line each, not a TypeError.
    for text, field in (("max_new_tokens: ten\n", "max_new_tokens"), ("gamma: [two]\n", "gammas"),
                        ("top_p: [0.9]\n", "top_p"), ("seed: 1.5\n", "seed"), ("baseline: 3\n", "baseline"),
                        ("temperature: hot\n", "temperatures")):
        path.write_text(f"target: x\nprompts: p.jsonl\nout: o\ndrafters: [{{name: d, model: m}}]\n{text}")
        with pytest.raises(InputError, match=f"{field}: must be"):
            CollectConfig(**load_config_file(path))
    # `record: false` once wrote no traces yet counted the prompt as done: it is no option any more.
    path.write_text("target: x\nrecord: false\n")
    with pytest.raises(InputError, match=r"unknown option\(s\) \['record'\]"):
        load_config_file(path)


def _collect_command(tiny_models, prompts, out, extra=()):
    return [*SPECSIM, "collect", "--target", str(tiny_models["target"]),
            "--drafter", f"tiny={tiny_models['drafter']},kind=finetuned,trained_on=unit",
            "--prompts", str(prompts), "--out", str(out), "--gamma", "3", "--max-new-tokens", "48",
            "--temperature", "0", "--temperature", "1", "--json", *extra]


@pytest.mark.integration
def test_sigkill_then_resume_loses_at_most_the_prompt_in_flight(tmp_path, tiny_models):
    prompts = _prompts(tmp_path / "p.jsonl", 12)
    out = tmp_path / "traces"
    process = subprocess.Popen(_collect_command(tiny_models, prompts, out), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Wait on files (and on the process), never on a wall-clock deadline: a loaded machine is slow, not wrong.
    while len(list(out.glob("sequences/*.parquet"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written_before = {p.name for p in out.glob("sequences/*.parquet")}
    assert len(written_before) >= 3, "the collector did not get far enough to be killed mid-run"
    partial = read_traces(out)  # every file left behind is readable
    assert len(partial.sequences["prompt_id"].unique()) == len(written_before)
    resumed = subprocess.run(_collect_command(tiny_models, prompts, out), cwd=REPO, capture_output=True,
                             text=True, check=True)
    summary = json.loads(resumed.stdout)
    assert not undefined_keys(summary)
    assert summary["prompts_skipped"] == len(written_before)
    assert summary["prompts_skipped"] + summary["prompts_done"] == 13
    final = read_traces(out)
    assert final.sequences["prompt_id"].nunique() == 13
    assert not list(out.glob("*/*.tmp"))


@pytest.mark.integration
def test_two_processes_shard_the_prompts(tmp_path, tiny_models):
    prompts = _prompts(tmp_path / "p.jsonl", 5)
    out = tmp_path / "traces"
    processes = [
        subprocess.Popen(_collect_command(tiny_models, prompts, out), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
        for rank in range(2)
    ]
    results = [json.loads(p.communicate()[0]) for p in processes]
    assert [r["prompts_done"] for r in results] == [3, 3]
    traces = read_traces(out)
    assert traces.sequences["prompt_id"].nunique() == 6
    assert len(traces.sequences) == 6 * 2


@pytest.mark.model
@pytest.mark.parametrize("gamma", [pytest.param(1, marks=pytest.mark.slow), 3, pytest.param(5, marks=pytest.mark.slow)])
def test_smollm2_greedy_speculative_equals_greedy(gamma):
    """Three oracles on the real target: drafter = target, a random drafter, a truncated one."""
    from specsim.collect.decoding import CachedLM, ConstantGamma, ModelDrafter, Warp, autoregressive_decode
    from specsim.collect.decoding import speculative_decode as decode
    from specsim.collect.models import load_model, truncate_layers
    from tests.models import tiny_llama

    target = load_model("smollm2")
    prompt = target.tokenizer("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")["input_ids"]
    lm = CachedLM(target.model)
    plain = autoregressive_decode(lm, prompt, warp=Warp(), max_new_tokens=40, eos_ids=set())
    drafters = {
        "self": target.model,
        "random": tiny_llama(target.model.config.vocab_size, seed=5),
        "truncated": truncate_layers(target.model, 4),
    }
    for name, model in drafters.items():
        result = decode(lm, ModelDrafter(model), prompt, schedule=ConstantGamma(gamma), warp=Warp(),
                        max_new_tokens=40, eos_ids=set())
        assert result.output_ids == plain.output_ids, name
        n_accepted, n_drafted = result.steps["n_accepted"], result.steps["n_drafted"]
        if name == "self":
            assert n_accepted == n_drafted
            assert all(e == g + 1 for e, g in zip(result.steps["n_emitted"][:-1], n_drafted[:-1], strict=True))
        if name == "random":
            assert sum(n_accepted) / sum(n_drafted) < 0.1


def test_adaptive_schedule_is_recorded(tmp_path, tiny_models):
    config = _config(tiny_models, _prompts(tmp_path / "p.jsonl", 2), tmp_path / "traces", schedule="adaptive",
                     gammas=(5,), temperatures=(0.0,), max_new_tokens=30)
    collect(config)
    traces = read_traces(tmp_path / "traces")
    assert set(traces.sequences["schedule"]) == {"adaptive"}
    tiny = traces.steps[traces.steps["drafter"] == "tiny"]
    # The random drafter is rejected early, so the adaptive schedule shrinks its drafts.
    assert tiny["n_drafted"].min() < 5 and tiny["n_drafted"].max() == 5
    self_steps = traces.steps[traces.steps["drafter"] == "self"]
    assert (self_steps["n_drafted"].iloc[:-1] == 5).all()


# --- Hugging Face datasets as a prompt source (the hub is unreachable here: local datasets take
# the same `datasets.load_dataset` / `load_from_disk` path) -------------------------------------


def _hf_folder(path: Path) -> Path:
    path.mkdir()
    rows = [{"qid": f"q{i}", "question": f"What does math.fsum do ({i})?", "answer": "sums"} for i in range(3)]
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hf_source_from_a_data_folder(tmp_path):
    from specsim.collect.prompts import load_prompts, prompts_digest

    folder = _hf_folder(tmp_path / "ds")
    source = f"hf:{folder}?split=train&prompt=question&id=qid&task=qa"
    prompts = load_prompts(source)
    assert [p.prompt_id for p in prompts] == ["q0", "q1", "q2"]
    assert {p.task for p in prompts} == {"qa"} and prompts[1].prompt.endswith("(1)?")
    assert prompts[0].dataset == str(folder) and prompts[0].extra["split"] == "train"
    assert prompts_digest(source) == prompts_digest(source)
    # Without an id column, ids are split-row; the task defaults to the dataset's last component.
    unnamed = load_prompts(f"hf:{folder}?prompt=question")
    assert [p.prompt_id for p in unnamed] == ["train-0", "train-1", "train-2"] and unnamed[0].task == "ds"


def test_hf_source_chats_from_save_to_disk(tmp_path):
    import datasets

    from specsim.collect.prompts import load_prompts

    chats = [[{"role": "user", "content": f"Explain zlib.crc32 ({i})"}] for i in range(2)]
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"chat": chats, "id": ["a", "b"]})}).save_to_disk(
        tmp_path / "saved")
    prompts = load_prompts(f"hf:{tmp_path / 'saved'}?split=test&messages=chat&id=id&task=explain")
    assert [p.prompt_id for p in prompts] == ["a", "b"]
    assert prompts[0].messages == ({"role": "user", "content": "Explain zlib.crc32 (0)"},)


@pytest.mark.parametrize("suffix, message", [
    ("?split=train", "exactly one of prompt=COLUMN and messages=COLUMN"),
    ("?prompt=question&messages=question", "exactly one of"),
    ("?prompt=question&colour=red", "unknown option 'colour'"),
    ("?prompt=nope", "no column 'nope'"),
    ("?prompt=question&id=answer", "duplicate prompt_id"),
    ("?prompt=question&split=validation", "cannot load the dataset"),
])
def test_hf_source_errors(tmp_path, suffix, message):
    from specsim.collect.prompts import load_prompts

    folder = _hf_folder(tmp_path / "ds")
    with pytest.raises(InputError, match=message):
        load_prompts(f"hf:{folder}{suffix}")


@pytest.mark.integration
def test_hf_hub_unreachable_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code = main(["collect", "--target", "smollm2", "--drafter", "d=smollm2#layers=1", "--prompts",
                 "hf:specsim-nonexistent/never-published?split=test&prompt=text", "--out", str(tmp_path / "t")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "cannot load the dataset" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_collect_from_hf_source(tmp_path, tiny_models):
    folder = _hf_folder(tmp_path / "ds")
    source = f"hf:{folder}?split=train&prompt=question&id=qid&task=qa"
    config = _config(tiny_models, source, tmp_path / "traces", gammas=(2,), temperatures=(0.0,))
    result = collect(config)
    assert result["prompts_done"] == 3
    sequences = read_traces(tmp_path / "traces").sequences
    assert set(sequences["prompt_id"]) == {"q0", "q1", "q2"} and set(sequences["task"]) == {"qa"}
    assert collect(config)["prompts_skipped"] == 3


def test_collect_refuses_remote_code_from_yaml_and_non_utf8_prompts(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("target: smollm2\nprompts: p.jsonl\nout: o\ntrust_remote_code: true\n"
                      "drafters: [{name: d, model: smollm2}]\n")
    assert main(["collect", "--config", str(config)]) == 2
    assert "confirm it with --trust-remote-code" in capsys.readouterr().err
    prompts = tmp_path / "latin1.jsonl"
    prompts.write_bytes('{"prompt_id": "a", "task": "t", "dataset": "d", "prompt": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_prompts(prompts)


def test_probe_agreement_oracles(tmp_path, tiny_models, capsys):
    # Teacher-forced agreement is greedy acceptance: the target probing itself agrees everywhere.
    prompts = _prompts(tmp_path / "p.jsonl", 3)
    out = tmp_path / "probe.parquet"
    argv = ["probe", "--target", str(tiny_models["target"]), "--drafter", f"self={tiny_models['target']}",
            "--drafter", f"other={tiny_models['drafter']}", "--prompts", str(prompts), "--out", str(out),
            "--max-new-tokens", "24", "--task", "new", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert not undefined_keys(summary)
    rates = {row["drafter"]: row["acceptance_rate_conditional"] for row in summary["drafters"]}
    assert rates["self"] == 1.0 and rates["other"] < 0.5
    from specsim.collect.probe import read_probe

    table = read_probe(out, "other")
    assert set(table["task"]) == {"new"} and len(table) == 4 * 24  # 3 prompts and a chat
    # The probe is also a workload: its prompts' lengths and the target's outputs.
    from specsim.workload import resolve_workload

    workload = resolve_workload(str(out))
    per_prompt = table.groupby("prompt_id")
    assert workload.output_lengths.tolist() == per_prompt.size().tolist()
    assert workload.prompt_lengths.tolist() == per_prompt["context_len"].min().tolist()
    assert main([*argv[:-1], "--limit", "0"]) == 2


def test_text_workloads_are_counted_in_the_targets_tokens(tmp_path, smol_tokenizer, capsys):
    from specsim.collect.text_workload import text_workload_lengths

    rows = [{"prompt": "def add(a, b):", "response": "    return a + b\n"},
            {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there!"}]}]
    text = tmp_path / "chat.jsonl"
    text.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = text_workload_lengths(text, smol_tokenizer)
    chat = smol_tokenizer.apply_chat_template([rows[1]["messages"][0]], add_generation_prompt=True, tokenize=True)
    chat = chat["input_ids"] if hasattr(chat, "keys") else chat
    assert lengths["prompt_len"].tolist() == [len(smol_tokenizer("def add(a, b):")["input_ids"]), len(chat)]
    assert lengths["output_len"].tolist() == [
        len(smol_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("    return a + b\n", "Hi there!")]
    # The same from an hf: source with a response column.
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"q": "def add(a, b):", "a": "    return a + b\n"}) + "\n"
                                                for _ in range(2)))
    hf = text_workload_lengths(f"hf:{folder}?prompt=q&response=a", smol_tokenizer)
    assert hf["prompt_len"].tolist() == [lengths["prompt_len"][0]] * 2
    # Through the CLI: refused without a tokenizer, counted with the target's.
    counts = tmp_path / "c.parquet"
    assert main(["import", "vllm", str(REPO / "tests" / "fixtures" / "vllm_metrics.txt"), "--out", str(counts),
                 "--task", "t", "--drafter", "d"]) == 0
    command = ["simulate", "counts", str(counts), "--lengths-from", str(text), "--cost-ratio", "0.1", "--json"]
    capsys.readouterr()
    assert main(command) == 2 and "give --tokenizer" in capsys.readouterr().err
    assert main([*command, "--tokenizer", "smollm2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["workload_kind"] == "text" and payload["n_sequences"] == 2
    prompts_only = tmp_path / "prompts.jsonl"
    prompts_only.write_text(json.dumps({"prompt": "Explain"}) + "\n")
    assert main(["simulate", "counts", str(counts), "--lengths-from", str(prompts_only), "--cost-ratio", "0.1",
                 "--tokenizer", "smollm2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "collect --baseline" in err


@pytest.mark.integration
@pytest.mark.slow  # the hub client's retries back off for about 50 s before it gives up
def test_unloadable_hub_model_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "traces"
    prompts = _prompts(tmp_path / "p.jsonl", 1)
    code = main(["collect", "--target", "SomeOrg/no-such-model", "--drafter", "d=SomeOrg/no-such-drafter",
                 "--prompts", str(prompts), "--out", str(out)])
    err = capsys.readouterr().err
    # The hub client's per-retry lines stay quiet; the one line says which model failed.
    assert code == 2 and err.count("\n") == 1 and "SomeOrg/no-such-model" in err, err
    assert not out.exists()


def test_a_compacted_collection_resumes_without_redoing_a_prompt(tmp_path, tiny_models):
    """Collect 2 of 4 prompts, compact, collect the rest, compact again: the rows of one whole collection."""
    from specsim.traces.compact import compact_traces

    prompts = _prompts(tmp_path / "p.jsonl", 3)
    whole = read_traces(collect(_config(tiny_models, prompts, tmp_path / "whole", gammas=(2,)))["out"])
    out = tmp_path / "parts"
    assert collect(_config(tiny_models, prompts, out, gammas=(2,), limit=2))["prompts_done"] == 2
    assert compact_traces(out)["files_after"] == 3
    rest = collect(_config(tiny_models, prompts, out, gammas=(2,)))
    assert (rest["prompts_skipped"], rest["prompts_done"]) == (2, 2)
    again = compact_traces(out)
    assert (again["files_before"], again["files_after"]) == (9, 3)
    parts = read_traces(out)
    for name in ("tokens", "steps", "sequences"):
        ignored = ["draft_s", "verify_s", "spec_wall_s", "baseline_wall_s", "prefill_s", "baseline_prefill_s"]
        keys = [k for k in ("prompt_id", "drafter", "gamma", "temperature", "step", "draft_index")
                if k in getattr(whole, name)]
        left, right = (getattr(t, name).drop(columns=ignored, errors="ignore").sort_values(keys)
                       .reset_index(drop=True) for t in (whole, parts))
        pd.testing.assert_frame_equal(left, right)  # timings differ between two runs; every other value is equal

"""The drafter-training scripts' teacher stage: one cached pass gives generate's greedy completions
and the targets a full forward pass gives (real Llama models, random weights; SmolLM2 under `model`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.models import tiny_llama

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _distillation():
    return _script("distillation", "distillation.py")


def _generate(model, prompts: list[list[int]], eos: int, max_new_tokens: int) -> list[list[int]]:
    """``generate``'s greedy completions of a left-padded batch, cut after the first ``eos`` (kept)."""
    width = max(map(len, prompts))
    ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=eos, eos_token_id=eos)
    completions = []
    for row in range(len(prompts)):
        completion = out[row, width:].tolist()
        completions.append(completion[: completion.index(eos) + 1] if eos in completion else completion)
    return completions


def _check_against_generate(model, prompts: list[list[int]], max_new_tokens: int, top_k: int) -> None:
    distillation = _distillation()
    # An end-of-sequence token that the greedy continuation of the first prompt reaches at step 5,
    # so one row stops early while the others run to max_new_tokens.
    unstopped = _generate(model, prompts, eos=-1 % model.config.vocab_size, max_new_tokens=max_new_tokens)
    eos = unstopped[0][4]
    expected = _generate(model, prompts, eos, max_new_tokens)
    records = distillation.greedy_teacher(model, prompts, eos, max_new_tokens, top_k=top_k)
    assert [r["ids"][r["prompt_len"]:].tolist() for r in records] == expected
    assert [r["output_len"] for r in records] == [len(c) for c in expected]
    assert expected[0][-1] == eos and len(expected[0]) <= 5
    sequences = [p + c for p, c in zip(prompts, expected, strict=True)]
    full = distillation.teacher_targets(model, sequences, eos, top_k=top_k)
    for record, reference in zip(records, full, strict=True):
        assert record["hidden"].shape == reference["hidden"].shape
        torch.testing.assert_close(record["hidden"].float(), reference["hidden"].float(), atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(record["top_logits"].float(), reference["top_logits"].float(), atol=2e-2,
                                   rtol=2e-3)
        assert (record["top_ids"][:, 0] == reference["top_ids"][:, 0]).all()


def test_greedy_teacher_matches_generate_and_full_forward():
    model = tiny_llama(vocab_size=300, seed=3, hidden=64)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 300, (n,), generator=generator).tolist() for n in (7, 19, 12)]
    _check_against_generate(model, prompts, max_new_tokens=16, top_k=8)


def test_precision_is_checked_and_bfloat16_runs():
    distillation = _distillation()
    model = tiny_llama(vocab_size=300, seed=3, hidden=64)
    with pytest.raises(ValueError, match="precision"):
        distillation.greedy_teacher(model, [[1, 2, 3]], 0, 4, precision="float8")
    records = distillation.greedy_teacher(model, [[1, 2, 3], [4, 5]], 0, 4, top_k=8, precision="bfloat16")
    assert [len(r["ids"]) - r["output_len"] for r in records] == [3, 2]
    assert all(r["hidden"].dtype == torch.float16 and len(r["top_ids"]) == len(r["ids"]) for r in records)


@pytest.mark.model
def test_greedy_teacher_on_smollm2():
    from specsim.collect.models import load_model
    from specsim.collect.prompts import encode_prompt, read_prompts

    target = load_model("smollm2")
    prompts = [encode_prompt(target.tokenizer, p) for p in read_prompts(REPO / "data" / "prompts" / "qa.jsonl")[:3]]
    _check_against_generate(target.model, prompts, max_new_tokens=12, top_k=32)


def _reference_trainer():
    return _script("train_drafters", "reference/train_drafters.py")


def test_length_batches_cover_every_sequence_once_within_the_budget():
    trainer = _reference_trainer()
    lengths = [5, 1, 3, 8, 2, 9, 4, 4]
    batches = trainer.length_batches(lengths, max_tokens=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    order = [lengths[i] for b in batches for i in b]
    assert order == sorted(order)  # shortest first
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 8 for b in batches)
    assert [len(b) for b in trainer.length_batches(lengths, 10**9, max_rows=3)] == [3, 3, 2]


@pytest.mark.model
def test_shipped_teacher_completions_match_the_train_prompts(tmp_path):
    from transformers import AutoTokenizer

    from specsim.collect.models import _dequantised_gguf, smollm2_gguf_path
    from specsim.collect.prompts import encode_prompt, read_prompts

    trainer = _reference_trainer()
    folder, _ = _dequantised_gguf(smollm2_gguf_path(), trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    shipped = trainer.read_completions()
    expected = set()
    for task in trainer.TASKS:
        for prompt in read_prompts(REPO / "data" / "prompts" / f"{task}.jsonl"):
            if prompt.extra["split"] != "train":
                continue
            expected.add((task, prompt.prompt_id))
            row = shipped[(task, prompt.prompt_id)]
            assert row["prompt_len"] == len(encode_prompt(tokenizer, prompt))
            completion = row["completion"]
            assert 1 <= len(completion) <= trainer.MAX_NEW_TOKENS
            assert tokenizer.eos_token_id not in completion[:-1]  # a completion ends at its first eos
    assert set(shipped) == expected  # no held-out prompt has a completion
    # The writer reproduces the shipped file's rows.
    records = [{"task": t, "prompt_id": p, "prompt_len": r["prompt_len"],
                "ids": torch.tensor([0] * r["prompt_len"] + r["completion"])} for (t, p), r in shipped.items()]
    trainer.write_completions(records, tmp_path / "completions.parquet")
    assert trainer.read_completions(tmp_path / "completions.parquet") == shipped


@pytest.mark.slow
@pytest.mark.model
def test_generated_teacher_completions_reproduce_the_shipped_ones(tmp_path, monkeypatch):
    """``--teacher generate --precision float32`` gives the shipped completions back, token for token (qa)."""
    from specsim.collect.models import load_model

    trainer = _reference_trainer()
    monkeypatch.setattr(trainer, "TASKS", ("qa",))
    monkeypatch.setattr(trainer, "WORK", tmp_path)
    records = trainer.teacher_data(load_model("smollm2"), "generate", "float32")
    shipped = trainer.read_completions()
    assert len(records) == sum(1 for task, _ in shipped if task == "qa")
    for record in records:
        assert record["ids"][record["prompt_len"]:].tolist() == shipped[("qa", record["prompt_id"])]["completion"]
    assert (tmp_path / "teacher-generate-float32-qa.pt").exists()  # cached, so a rerun resumes

"""The length-controlled experiment's prompt builder: deterministic, and on target lengths (real tokenizer)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("build_prompts", REPO / "scripts" / "lengths" / "build_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from specsim.collect.models import _dequantised_gguf, smollm2_gguf_path

    folder, _ = _dequantised_gguf(smollm2_gguf_path(), trust_remote_code=False)
    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.model
def test_prompts_are_deterministic_and_hit_their_regimes(tokenizer):
    builder = _builder()
    pools = builder.split_files(builder.source_files())
    assert not set(pools["train"]) & set(pools["heldout"])  # no file in both pools
    files = pools["heldout"][:8]
    first = builder.build(tokenizer, files, per_regime=2)
    again = builder.build(tokenizer, files, per_regime=2)
    assert {k: [p.prompt for p in v] for k, v in first.items()} == {k: [p.prompt for p in v] for k, v in again.items()}
    for regime, prompts in first.items():
        target, new_tokens = builder.REGIMES[regime]
        assert len(prompts) == 2
        for prompt in prompts:
            # The collector encodes the prompt text the same way (no chat template, no special tokens added).
            assert abs(len(tokenizer(prompt.prompt)["input_ids"]) - target) <= builder.TOLERANCE_TOKENS
            assert prompt.extra["max_new_tokens"] == new_tokens and prompt.extra["split"] == "heldout"


def test_shipped_prompt_sets_match_their_manifest():
    import json

    folder = REPO / "data" / "prompts" / "lengths"
    manifest = json.loads((folder / "manifest.json").read_text())
    builder = _builder()
    assert manifest["regimes"] == {k: {"prompt_tokens": p, "new_tokens": n} for k, (p, n) in builder.REGIMES.items()}
    train_files = set(json.loads((folder / "train_files.json").read_text()))
    for regime, count in manifest["heldout_prompts"].items():
        rows = [json.loads(line) for line in (folder / f"heldout-{regime}.jsonl").read_text().splitlines()]
        assert len(rows) == count >= 12
        assert not {row["file"] for row in rows} & train_files  # held-out prompts come from held-out files

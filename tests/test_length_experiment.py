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
    # Extra prompts of a regime: deterministic, on target, from files the regime has not used yet.
    extra = builder.build_extra(tokenizer, files, first, {"ctx-128": 2})
    assert [p.prompt for p in extra["ctx-128"]] == [p.prompt for p in builder.build_extra(
        tokenizer, files, first, {"ctx-128": 2})["ctx-128"]]
    assert len(extra["ctx-128"]) == 2
    assert not {p.extra["file"] for p in extra["ctx-128"]} & {p.extra["file"] for p in first["ctx-128"]}
    for prompt in extra["ctx-128"]:
        assert abs(len(tokenizer(prompt.prompt)["input_ids"]) - 64) <= builder.TOLERANCE_TOKENS


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
    for regime, count in manifest["extra_heldout_prompts"].items():
        rows = [json.loads(line) for line in (folder / f"heldout-{regime}-extra.jsonl").read_text().splitlines()]
        first = [json.loads(line) for line in (folder / f"heldout-{regime}.jsonl").read_text().splitlines()]
        assert len(rows) == count == builder.EXTRA_HELDOUT[regime]
        assert not {row["file"] for row in rows} & (train_files | {row["file"] for row in first})


def _regime_tokens(rates: dict[str, float], prompts: int = 12, per_prompt: int = 400, seed: int = 0):
    """Drafted tokens of one drafter in several regimes, with known acceptance per regime."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for regime, rate in rates.items():
        context = int(regime.split("-")[1])
        for prompt in range(prompts):
            frames.append(pd.DataFrame({
                "drafter": "d", "prompt_id": f"{regime}-p{prompt}", "task": "t",
                "context_len": rng.integers(context // 2, context, per_prompt), "evaluated": True,
                "accepted": rng.random(per_prompt) < rate}))
    return pd.concat(frames, ignore_index=True)


def test_length_effect_and_context_bins_recover_known_rates():
    from specsim.analysis.length_effects import acceptance_by_context, content_effects, length_effects

    tokens = _regime_tokens({"ctx-128": 0.6, "ctx-512": 0.5, "ctx-2048": 0.4})
    effect = length_effects(tokens).iloc[0]
    assert effect["comparison"] == "ctx-2048 minus ctx-128"
    # The true difference -0.2 is inside the 90% bootstrap interval, and the interval is tight.
    assert effect["effect_low"] <= -0.2 <= effect["effect_high"] and effect["effect_high"] - effect["effect_low"] < 0.1
    bins = acceptance_by_context(tokens, level=0.999)
    # Contexts 1024-2047 hold only ctx-2048 tokens: acceptance near 0.4, inside its 99.9% Wilson interval.
    top = bins[bins["context_start"] == 1024].iloc[0]
    assert top["context_end"] == tokens["context_len"].max() and top["acceptance_low"] <= 0.4 <= top["acceptance_high"]
    assert bins["evaluated"].sum() == len(tokens)
    # The content effect: one drafter on its own task against the others.
    mixed = tokens.assign(task=tokens["prompt_id"].str.startswith("ctx-128").map({True: "own", False: "other"}))
    content = content_effects(mixed, {"d": "own"}).iloc[0]
    assert content["effect_low"] <= 0.15 <= content["effect_high"]  # 0.6 against the pooled 0.45

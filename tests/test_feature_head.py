"""Feature heads: the draft-vocabulary map, the folder format, losslessness, distribution
preservation with a restricted draft vocabulary, and no target pass of the head's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from specsim.collect.decoding import CachedLM, ConstantGamma, Warp, autoregressive_decode, speculative_decode
from specsim.collect.feature_head import (
    DraftVocabulary,
    FeatureHead,
    FeatureHeadDrafter,
    head_layer_config,
    load_feature_head,
    save_feature_head,
)
from specsim.errors import InputError
from tests.models import tiny_llama
from tests.test_speculative_sampling import ALPHA, LENGTH, VOCAB, _chi_square_pvalue, _exact_joint_of_model


def _head(target: torch.nn.Module, draft_ids: list[int], seed: int = 0) -> FeatureHead:
    torch.manual_seed(seed)
    vocabulary = DraftVocabulary(np.array(draft_ids, dtype=np.int64), target.config.vocab_size)
    head = FeatureHead(head_layer_config(target.config), vocabulary)
    with torch.no_grad():
        # Start from the target's own output rows: the head's guesses then agree with the target often.
        head.lm_head.weight.copy_(target.lm_head.weight[torch.as_tensor(draft_ids)])
    return head.eval()


def test_vocabulary_round_trip_and_choice():
    vocabulary = DraftVocabulary(np.array([2, 5, 7, 11]), 16)
    assert vocabulary.to_target(vocabulary.to_draft([2, 5, 7, 11])).tolist() == [2, 5, 7, 11]
    assert vocabulary.to_draft(vocabulary.to_target(np.arange(4))).tolist() == [0, 1, 2, 3]
    assert vocabulary.to_draft([3, 0, 15]).tolist() == [-1, -1, -1]
    assert vocabulary.coverage([2, 3, 5, 6]) == 0.5
    counts = np.array([5, 1, 9, 9, 0, 3])
    chosen = DraftVocabulary.from_counts(counts, 3, always=[4])
    assert chosen.draft_to_target.tolist() == [2, 3, 4]  # the two most frequent, and the one always kept
    assert DraftVocabulary.from_counts(counts, 2).draft_to_target.tolist() == [2, 3]


@pytest.mark.parametrize("ids, message", [([3, 3], "sorted"), ([5, 2], "sorted"), ([0, 16], "outside"),
                                          ([], "at least one")])
def test_vocabulary_rejects_bad_maps(ids, message):
    with pytest.raises(InputError, match=message):
        DraftVocabulary(np.array(ids, dtype=np.int64), 16)


def test_folder_round_trip_and_bad_folders(tmp_path):
    target = tiny_llama(32, seed=0)
    head = _head(target, list(range(0, 32, 2)))
    folder = save_feature_head(head, tmp_path / "head", {"kind": "generic", "trained_on": "mixture", "window": 64})
    loaded, config = load_feature_head(folder)
    features, embeddings = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert torch.equal(head(features, embeddings)[1], loaded(features, embeddings)[1])
    assert config["draft_vocab_size"] == 16 and loaded.vocabulary.draft_to_target.tolist() == list(range(0, 32, 2))
    broken = json.loads((folder / "feature_head.json").read_text())
    broken["draft_vocab_size"] = 17
    (folder / "feature_head.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match="draft_to_target holds 16 tokens"):
        load_feature_head(folder)
    (folder / "feature_head.json").write_text("[1]")
    with pytest.raises(InputError, match="not a feature head"):
        load_feature_head(folder)


def _counting(model: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    original = model.forward

    def forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.forward = forward  # type: ignore[method-assign]
    return calls


def test_greedy_is_lossless_and_uses_only_the_verify_passes():
    """Token for token the target's greedy output; one target pass per step (and the prefill)."""
    target_model = tiny_llama(64, seed=3)
    target = CachedLM(target_model)
    head = _head(target_model, list(range(0, 64, 3)) + [62, 63][: 0])
    drafter = FeatureHeadDrafter(head, target_model.get_input_embeddings())
    calls = _counting(target_model)
    rng = np.random.default_rng(1)
    accepted = 0
    for trial in range(4):
        prompt = [int(t) for t in rng.integers(64, size=6 + trial)]
        plain = autoregressive_decode(target, prompt, warp=Warp(), max_new_tokens=30, eos_ids=set()).output_ids
        for gamma in (1, 3, 6):
            calls.clear()
            result = speculative_decode(target, drafter, prompt, schedule=ConstantGamma(gamma), warp=Warp(),
                                        max_new_tokens=30, eos_ids=set())
            assert result.output_ids == plain, (trial, gamma)
            assert len(calls) == 1 + len(result.steps["n_drafted"]), "a target pass beyond prefill + verify"
            assert all(d == min(gamma, 30 - sum(result.steps["n_emitted"][:i]))
                       for i, d in enumerate(result.steps["n_drafted"]))
            assert set(result.tokens["token_id"].tolist()) <= set(head.vocabulary.draft_to_target.tolist())
            accepted += sum(result.steps["n_accepted"])
    assert accepted > 0, "no drafted token was ever accepted: the check would not see a wrong acceptance"


def test_drafter_refuses_missing_features():
    target_model = tiny_llama(16, seed=0)
    drafter = FeatureHeadDrafter(_head(target_model, [1, 2, 3]), target_model.get_input_embeddings())
    drafter.reset()
    with pytest.raises(RuntimeError, match="target features"):
        drafter.propose([1, 2, 3], 2, Warp(), None)


def _head_samples(n_samples: int, seed: int, draft_ids: list[int]) -> tuple[list[tuple[int, ...]], int, int, dict]:
    target_model = tiny_llama(VOCAB, seed=0)
    warp = Warp(1.0)
    prompt = [0, 1, 2, 0, 1]
    target = CachedLM(target_model)
    drafter = FeatureHeadDrafter(_head(target_model, draft_ids, seed=1), target_model.get_input_embeddings())
    generator = torch.Generator().manual_seed(seed)
    samples, accepted, rejected = [], 0, 0
    for _ in range(n_samples):
        result = speculative_decode(target, drafter, prompt, schedule=ConstantGamma(2), warp=warp,
                                    max_new_tokens=LENGTH, eos_ids=set(), generator=generator, record=False)
        samples.append(tuple(result.output_ids))
        accepted += sum(result.steps["n_accepted"])
        rejected += sum(d > a for d, a in zip(result.steps["n_drafted"], result.steps["n_accepted"], strict=True))
    return samples, accepted, rejected, _exact_joint_of_model(target_model, warp, prompt)


@pytest.mark.integration
def test_sampling_with_a_restricted_vocabulary_preserves_the_target():
    """Tokens outside the draft vocabulary (q = 0) still appear with the target's probabilities."""
    samples, accepted, rejected, joint = _head_samples(2500, seed=5, draft_ids=[0, 2])
    assert accepted > 300 and rejected > 300, "both branches of the rule must be exercised"
    outside = sum(token in (1, 3) for sample in samples for token in sample)
    assert outside > 500, "tokens outside the draft vocabulary must be reached through the residual"
    assert _chi_square_pvalue(samples, joint) > ALPHA


@pytest.mark.integration
def test_sampling_check_catches_a_head_that_ignores_its_vocabulary(monkeypatch):
    """The same check fails when the rule is handed q over the whole vocabulary instead of the draft's."""
    import specsim.collect.feature_head as feature_head

    original = feature_head.FeatureHeadDrafter.propose

    def wrong(self, tokens, n, warp, generator):
        draft = original(self, tokens, n, warp, generator)
        # Plausible bug: the draft was sampled over the draft vocabulary, q reported as uniform.
        return feature_head.Draft(draft.tokens, torch.zeros_like(draft.logits))

    monkeypatch.setattr(feature_head.FeatureHeadDrafter, "propose", wrong)
    samples, _, _, joint = _head_samples(2500, seed=5, draft_ids=[0, 2])
    assert _chi_square_pvalue(samples, joint) < ALPHA


def test_collect_reads_the_head_folder(tmp_path, smol_tokenizer):
    """``--drafter NAME=HEAD`` is a feature head: type and kind from its configuration, in the traces."""
    from specsim.collect.prompts import Prompt, write_prompts
    from specsim.collect.runner import CollectConfig, collect, parse_drafter
    from specsim.traces import read_traces
    from tests.models import save_tiny_drafter

    target_dir = save_tiny_drafter(tmp_path / "target", smol_tokenizer, seed=0)
    from transformers import AutoModelForCausalLM

    target_model = AutoModelForCausalLM.from_pretrained(target_dir)
    head = _head(target_model, list(range(0, len(smol_tokenizer), 7)))
    folder = save_feature_head(head, tmp_path / "head", {"kind": "finetuned", "trained_on": "code", "window": 256})
    spec = parse_drafter(f"h={folder}")
    assert (spec.method, spec.drafter_type, spec.kind, spec.trained_on) == ("feature-head", "feature-head",
                                                                          "finetuned", "code")
    write_prompts([Prompt("p0", "code", "unit", prompt="def f(x):\n    return x\n")], tmp_path / "p.jsonl")
    collect(CollectConfig(target=str(target_dir), prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "traces"),
                          drafters=(spec,), gammas=(3,), temperatures=(0.0, 1.0), max_new_tokens=12))
    traces = read_traces(tmp_path / "traces")
    assert set(traces.sequences["drafter_type"]) == {"feature-head"}
    assert (traces.steps["n_drafted"] == np.minimum(3, 12 - traces.steps.groupby(
        ["temperature"])["n_emitted"].cumsum() + traces.steps["n_emitted"])).all()
    meta = json.loads(next((tmp_path / "traces" / "runs").glob("*.json")).read_text())
    assert meta["drafters"]["h"]["method"] == "feature-head" and meta["drafters"]["h"]["window"] == 256


def test_profile_times_a_head_per_drafted_token(tmp_path, smol_tokenizer, capsys):
    """`specsim profile` with a head folder: its prefill and one pass of its layer per drafted token, timed."""
    from transformers import AutoModelForCausalLM

    from specsim.cli import main
    from tests.models import save_tiny_drafter

    target_dir = save_tiny_drafter(tmp_path / "target", smol_tokenizer, seed=0)
    head = _head(AutoModelForCausalLM.from_pretrained(target_dir), list(range(0, len(smol_tokenizer), 7)))
    folder = save_feature_head(head, tmp_path / "head", {"kind": "generic", "trained_on": "mixture", "window": 64})
    out = tmp_path / "profile.json"
    assert main(["profile", "--target", str(target_dir), "--drafter", str(folder), "--out", str(out), "--gamma", "2",
                 "--context", "16", "--context", "64", "--repeats", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    document = json.loads(out.read_text())
    kinds = {row["kind"] for row in document["measurements"]}
    assert "draft" in kinds and "draft_step" not in kinds and document["drafter"]["method"] == "feature-head"
    assert summary["draft_base_s"] > 0 and summary["target_step_s"] > 0 and summary["cost_ratio"] > 0
    # Batch sizes above 1 are refused in one line (a head drafts one sequence at a time).
    assert main(["profile", "--target", str(target_dir), "--drafter", str(folder), "--out", str(tmp_path / "b.json"),
                 "--batch-size", "1,2"]) == 2
    assert "batch size 1 only" in capsys.readouterr().err

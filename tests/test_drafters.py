"""Model-free drafters: Hugging Face's prompt-lookup rule exactly, losslessness of every drafter
type (empty drafts included), point-mass speculative sampling, datastores and their bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specsim.collect.datastore import build_datastore
from specsim.collect.decoding import (
    CachedLM,
    ConstantGamma,
    Warp,
    autoregressive_decode,
    speculative_decode,
    verify_draft,
)
from specsim.collect.drafters import (
    DatastoreDrafter,
    ModelDrafter,
    PromptLookupDrafter,
    lookup_copy_sources,
    read_datastore,
    write_datastore,
)
from specsim.collect.runner import DrafterSpec, collect, parse_drafter
from specsim.errors import InputError
from tests.models import tiny_llama
from tests.test_speculative_sampling import ALPHA, LENGTH, VOCAB, _chi_square_pvalue, _exact_joint_of_model


def _hf_candidates(tokens: list[int], n: int, max_ngram: int, eos: list[int]) -> list[int]:
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    generator = PromptLookupCandidateGenerator(
        eos_token_id=torch.tensor(eos) if eos else None, num_output_tokens=n, max_matching_ngram_size=max_ngram,
        max_length=10_000)
    ids = torch.tensor([tokens])
    candidates, _ = generator.get_candidates(ids)
    return candidates[0, len(tokens):].tolist()


def test_prompt_lookup_equals_transformers_candidates():
    """Every proposal of a growing sequence equals transformers' own candidate generator."""
    rng = np.random.default_rng(0)
    compared = drafted = 0
    for case in range(60):
        vocab = int(rng.integers(3, 9))
        eos = [int(rng.integers(vocab))] if case % 3 == 0 else []
        n, max_ngram = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        drafter = PromptLookupDrafter(max_ngram, set(eos))
        sequence = [int(t) for t in rng.integers(vocab, size=int(rng.integers(1, 5)))]
        while len(sequence) < 50:
            # The drafter's index grows with the sequence, as in decoding.
            proposal = drafter.propose(sequence, n, Warp(), None)
            assert proposal.logits is None
            assert proposal.tokens == _hf_candidates(sequence, n, max_ngram, eos), (case, sequence)
            compared += 1
            drafted += bool(proposal.tokens)
            sequence += [int(t) for t in rng.integers(vocab, size=int(rng.integers(1, 4)))]
    assert compared > 1000 and 0.2 < drafted / compared < 1.0  # both branches exercised


def test_prompt_lookup_rejects_bad_sizes():
    with pytest.raises(InputError, match="n-gram"):
        PromptLookupDrafter(0)
    with pytest.raises(InputError, match="prompt-lookup:N"):
        parse_drafter("pl=prompt-lookup:0")
    assert parse_drafter("pl=prompt-lookup:3").drafter_type == "lookup"
    assert parse_drafter("pl=prompt-lookup").method == "prompt-lookup"


def test_lookup_copy_sources_tell_prompt_from_output():
    # Prompt [5 6 7 8]; the output repeats "6 7" (copied from the prompt), then makes "9 10" and
    # repeats it (copied from its own output); the first step matches nothing.
    prompt = [5, 6, 7, 8]
    output = [1, 6, 7, 8, 9, 10, 2, 9, 10, 3]
    sources = lookup_copy_sources(prompt, output, [0, 2, 8, 9])
    # Contexts end ...8 1 (1 unseen: none), ...1 6 (6 seen in the prompt: "7 8" copied from it), ...2 9
    # ("9" first seen in the output at context index 8: copied from the output), ...9 10 ("9 10" likewise).
    assert sources == ["none", "prompt", "output", "output"]
    # The replay is the drafter's own rule: a drafter asked at the same contexts copies the same tokens.
    drafter = PromptLookupDrafter(2)
    draft = drafter.propose([*prompt, *output[:2]], 4, None, None)
    assert draft.tokens == [7, 8, 1, 6] and drafter.copied_from == 2


def _store(path, sequences, tasks=None, **metadata):
    return write_datastore(path, sequences, np.full(len(sequences), 7), tasks or ["code"] * len(sequences),
                           {"max_ngram": 3, "target": "tiny", **metadata})


def test_datastore_round_trip_and_card(tmp_path):
    path = _store(tmp_path / "ds.parquet", [[1, 2, 3, 4], [1, 2, 5]], ["code", "qa"], trained_on="mix")
    store = read_datastore(path)
    assert store.sequences == [[1, 2, 3, 4], [1, 2, 5]] and store.max_ngram == 3
    card = store.card()
    assert card["tasks"] == ["code", "qa"] and card["train_tokens"] == 7
    assert card["lengths"]["prompt_len"] == [7, 7]
    spec = parse_drafter(f"ds=datastore:{path}")
    assert (spec.kind, spec.trained_on, spec.drafter_type) == ("finetuned", "mix", "lookup")


def test_datastore_drafter_continues_longest_suffix(tmp_path):
    store = read_datastore(_store(tmp_path / "ds.parquet", [[1, 2, 3, 4, 9], [7, 2, 3, 5], [8, 2, 3, 5]]))
    drafter = DatastoreDrafter(store, eos_ids={9}, min_ngram=2)
    # Suffix (1, 2, 3) occurs once, followed by 4; then (2, 3, 4) -> 9 = EOS stops the draft.
    assert drafter.propose([0, 1, 2, 3], 5, Warp(), None).tokens == [4]
    drafter.reset()
    # Suffix (2, 3) alone: 5 follows twice, 4 once.
    assert drafter.propose([0, 6, 2, 3], 1, Warp(), None).tokens == [5]
    drafter.reset()
    assert drafter.propose([0, 6, 6], 3, Warp(), None).tokens == []


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such datastore"), (b"not parquet", "not a readable Parquet"),
])
def test_datastore_bad_files_are_one_error(tmp_path, content, message):
    path = tmp_path / "ds.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_datastore(path)


def test_datastore_without_metadata_is_one_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"token_ids": [[1, 2]]}), path)
    with pytest.raises(InputError, match="not a specsim datastore"):
        read_datastore(path)


def test_datastore_build_takes_token_id_completions(tmp_path):
    """Completions held as token ids (as the teacher completions are) are stored as those ids, not as text."""
    import pandas as pd

    completions = tmp_path / "completions.parquet"
    pd.DataFrame({"task": ["code", "qa", "code"], "prompt_len": [5, 6, 7],
                  "completion": [np.array([1, 2, 3], dtype=np.int32), np.array([4, 5]), np.array([6])]}
                 ).to_parquet(completions)
    card = build_datastore(tmp_path / "ds.parquet", completions=completions, tasks=["code"], max_ngram=3)
    store = read_datastore(card["path"])
    assert store.sequences == [[1, 2, 3], [6]] and card["trained_on"] == "code" and card["train_tokens"] == 4
    assert store.card()["lengths"]["prompt_len"] == [5, 7]


@pytest.mark.parametrize(("column", "message"), [
    ([{"a": 1}, [1, 2]], "row 0: neither text nor a list of token ids"),
    (["some text", [1, 2]], "text completions need --tokenizer"),
])
def test_datastore_build_rejects_bad_completions(tmp_path, column, message):
    completions = tmp_path / "completions.jsonl"
    import pandas as pd

    pd.DataFrame({"task": ["code", "code"], "completion": column}).to_json(completions, orient="records", lines=True)
    with pytest.raises(InputError, match=message):
        build_datastore(tmp_path / "ds.parquet", completions=completions)
    assert not (tmp_path / "ds.parquet").exists()


def _repetitive_prompt(rng: np.random.Generator, vocab: int) -> list[int]:
    motif = [int(t) for t in rng.integers(vocab, size=6)]
    return motif * 3 + [int(t) for t in rng.integers(vocab, size=4)]


def test_greedy_is_lossless_for_every_drafter_type(tmp_path):
    """Model, prompt-lookup and datastore drafts (often empty) leave greedy output unchanged."""
    target_model = tiny_llama(64, seed=3)
    target = CachedLM(target_model)
    rng = np.random.default_rng(1)
    prompts = [_repetitive_prompt(rng, 64) for _ in range(4)]
    plains = [autoregressive_decode(target, p, warp=Warp(), max_new_tokens=30, eos_ids=set()).output_ids
              for p in prompts]
    # A datastore holding half of the true continuations: a fine-tuned drafter that is often right.
    store = read_datastore(_store(tmp_path / "ds.parquet", [p + o for p, o in zip(prompts[:2], plains[:2],
                                                                                   strict=True)]))
    drafters = {"model": ModelDrafter(tiny_llama(64, seed=4)), "prompt-lookup": PromptLookupDrafter(2),
                "datastore": DatastoreDrafter(store)}
    empty_steps = {}
    for name, drafter in drafters.items():
        accepted = drafted = empty = 0
        for prompt, plain in zip(prompts, plains, strict=True):
            for gamma in (1, 3, 6):
                result = speculative_decode(target, drafter, prompt, schedule=ConstantGamma(gamma), warp=Warp(),
                                            max_new_tokens=30, eos_ids=set())
                assert result.output_ids == plain, (name, gamma)
                steps = result.steps
                assert len(result.tokens["step"]) == sum(steps["n_drafted"])
                assert all(e <= a + 1 for e, a in zip(steps["n_emitted"], steps["n_accepted"], strict=True))
                accepted += sum(steps["n_accepted"])
                drafted += sum(steps["n_drafted"])
                empty += sum(d == 0 for d in steps["n_drafted"])
        empty_steps[name] = empty
        # The random model drafter is always rejected; the lookups are often right.
        assert drafted > 0 and (accepted > 0 or name == "model"), name
    assert empty_steps["model"] == 0 and empty_steps["prompt-lookup"] > 0 and empty_steps["datastore"] > 0


def test_point_mass_rule_accepts_with_target_probability():
    target = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    one_hot = torch.nn.functional.one_hot(torch.tensor([1]), 3).float()
    generator = torch.Generator().manual_seed(0)
    outcomes = [verify_draft(target, one_hot, torch.tensor([1]), False, generator) for _ in range(4000)]
    accepted = np.mean([n for n, _, _ in outcomes])
    assert abs(accepted - 0.5) < 4 * np.sqrt(0.25 / 4000)
    # A rejection never resamples the rejected token.
    assert all(token != 1 for n, token, _ in outcomes if n == 0)
    assert outcomes[0][2].tolist() == [0.5]


def _wrong_point_mass_rule(target_probs, draft_probs, draft, greedy, generator=None):
    """Plausible bug: after a rejection, sample from the target (the rejected token included)."""
    n_accepted, _, accept_prob = verify_draft(target_probs, draft_probs, draft, greedy, generator)
    return n_accepted, int(torch.multinomial(target_probs[n_accepted], 1, generator=generator)), accept_prob


def _point_mass_samples(n_samples: int, seed: int) -> tuple[list[tuple[int, ...]], int, int, dict]:
    target_model = tiny_llama(VOCAB, seed=0)
    warp = Warp(1.0)
    prompt = [0, 1, 2, 0, 1]  # the last bigram recurs: prompt lookup drafts [2, 0, 1]
    target, drafter = CachedLM(target_model), PromptLookupDrafter(2)
    generator = torch.Generator().manual_seed(seed)
    samples, accepted, rejected = [], 0, 0
    for _ in range(n_samples):
        result = speculative_decode(target, drafter, prompt, schedule=ConstantGamma(3), warp=warp,
                                    max_new_tokens=LENGTH, eos_ids=set(), generator=generator, record=False)
        samples.append(tuple(result.output_ids))
        accepted += sum(result.steps["n_accepted"])
        rejected += sum(min(d, 1) for d, a in zip(result.steps["n_drafted"], result.steps["n_accepted"],
                                                  strict=True) if a < d)
    return samples, accepted, rejected, _exact_joint_of_model(target_model, warp, prompt)


@pytest.mark.integration
def test_point_mass_sampling_matches_target_model():
    """Prompt-lookup drafts under sampling leave the target's joint distribution unchanged."""
    samples, accepted, rejected, joint = _point_mass_samples(2500, seed=3)
    assert accepted > 500 and rejected > 500, "both branches of the rule must be exercised"
    assert _chi_square_pvalue(samples, joint) > ALPHA


@pytest.mark.integration
def test_point_mass_wrong_rule_is_caught(monkeypatch):
    import specsim.collect.decoding as decoding

    monkeypatch.setattr(decoding, "verify_draft", _wrong_point_mass_rule)
    samples, _, _, joint = _point_mass_samples(2500, seed=3)
    assert _chi_square_pvalue(samples, joint) < ALPHA


def test_collect_records_lookup_drafters(tmp_path, smol_tokenizer):
    """A collection with prompt lookup and a datastore: drafter_type, empty steps, metadata, validation."""
    import json

    from specsim.collect.prompts import Prompt, write_prompts
    from specsim.traces import read_traces
    from tests.models import save_tiny_drafter

    tokenizer = smol_tokenizer
    target = save_tiny_drafter(tmp_path / "target", tokenizer, seed=0)
    prompts = [Prompt(f"p{i}", "code", "unit", prompt="def f(x):\n    return x + x + x + x\n" * (i + 1))
               for i in range(2)]
    write_prompts(prompts, tmp_path / "p.jsonl")
    ids = tokenizer("def f(x):\n    return x + x + x + x\n")["input_ids"]
    store = _store(tmp_path / "ds.parquet", [ids * 3], trained_on="unit")
    from specsim.collect.runner import CollectConfig

    config = CollectConfig(target=str(target), prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "traces"),
                           drafters=(parse_drafter("pl=prompt-lookup:3"), parse_drafter(f"ds=datastore:{store}"),
                                     DrafterSpec("m", str(target))),
                           gammas=(4,), temperatures=(0.0, 1.0), max_new_tokens=16)
    collect(config)
    traces = read_traces(tmp_path / "traces")
    types = traces.sequences.groupby("drafter")["drafter_type"].first().to_dict()
    assert types == {"pl": "lookup", "ds": "lookup", "m": "model"}
    lookup = traces.steps[traces.steps["drafter"] != "m"]
    assert (lookup["n_drafted"] < 4).any()
    assert (traces.tokens.loc[traces.tokens["drafter"] != "m", "q_draft"] == 1.0).all()
    meta = json.loads(next((tmp_path / "traces" / "runs").glob("*.json")).read_text())
    assert meta["drafters"]["pl"]["method"] == "prompt-lookup" and meta["drafters"]["pl"]["max_ngram"] == 3
    assert meta["drafters"]["ds"]["datastore"]["train_sequences"] == 1
    assert meta["config"]["drafters"][1]["datastore_sha256"]


@pytest.mark.parametrize("drafter", ["model", "prompt-lookup", "datastore"])
def test_profile_times_every_drafter_type(tmp_path, smol_tokenizer, drafter, capsys):
    """`specsim profile` fits a cost model for a model drafter (per token) and a lookup drafter (per step, > 0)."""
    import json

    from specsim.cli import main
    from tests.models import save_tiny_drafter

    target = save_tiny_drafter(tmp_path / "target", smol_tokenizer, seed=0)
    spec = {"model": str(save_tiny_drafter(tmp_path / "drafter", smol_tokenizer, seed=1)),
            "prompt-lookup": "prompt-lookup:3",
            "datastore": f"datastore:{_store(tmp_path / 'ds.parquet', [[5, 6, 7, 8] * 20])}"}[drafter]
    out = tmp_path / "profile.json"
    assert main(["profile", "--target", str(target), "--drafter", spec, "--out", str(out), "--gamma", "2",
                 "--gamma", "4", "--context", "16", "--context", "64", "--context", "128", "--repeats", "3",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    document = json.loads(out.read_text())
    kinds = {row["kind"] for row in document["measurements"]}
    # The target's step at the shortest context (the fitted base alone may be 0 on a loaded machine).
    assert summary["target_step_s"] > 0 and summary["context"] == 16 and set(summary["verify_table"]) == {"2", "4"}
    if drafter == "model":
        assert "draft" in kinds and summary["draft_base_s"] > 0 and summary["draft_step_s"] == 0
    else:
        # Real, measured and small: the lookup's whole step, never an assumed 0.
        assert "draft_step" in kinds and "draft" not in kinds
        assert summary["draft_base_s"] == 0 and 0 < summary["draft_step_s"] < summary["target_step_s"]
        assert document["drafter"]["method"] == drafter


@pytest.mark.model
def test_smollm2_prompt_lookup_equals_transformers_generate():
    """Same output and the same number of target forward passes as ``generate(prompt_lookup_num_tokens=)``."""
    from specsim.collect.models import load_model
    from specsim.collect.runner import _eos_ids

    target = load_model("smollm2")
    model = target.model
    from specsim.collect.prompts import Prompt, encode_prompt

    # An edit request: the answer copies the prompt's code, so lookups are accepted.
    prompt = encode_prompt(target.tokenizer, Prompt("edit", "code", "unit", messages=({
        "role": "user", "content": "Add a docstring to this function:\n\ndef add(a, b):\n    total = a + b\n"
                                   "    return total\n"},)))
    eos = _eos_ids(target)
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for gamma, max_new in ((4, 40), (10, 37)):
            calls.clear()
            expected = model.generate(torch.tensor([prompt]), do_sample=False, prompt_lookup_num_tokens=gamma,
                                      max_new_tokens=max_new, eos_token_id=sorted(eos), pad_token_id=sorted(eos)[0],
                                      temperature=None, top_p=None, top_k=None)[0, len(prompt):].tolist()
            hf_calls = len(calls)
            calls.clear()
            result = speculative_decode(CachedLM(model), PromptLookupDrafter(2, eos), prompt,
                                        schedule=ConstantGamma(gamma), warp=Warp(), max_new_tokens=max_new,
                                        eos_ids=eos)
            assert result.output_ids == expected, gamma
            # transformers folds the prefill into its first verification; specsim encodes it apart.
            assert len(calls) == hf_calls + 1 == len(result.steps["n_drafted"]) + 1, gamma
            assert sum(result.steps["n_accepted"]) > 0
    finally:
        hook.remove()

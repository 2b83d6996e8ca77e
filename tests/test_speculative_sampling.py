"""Speculative sampling keeps the target distribution exactly (statistical tests).

Each test compares the joint distribution of the first three generated tokens with the
target's exact joint distribution by Pearson's chi-square test at alpha = 1e-4 (the false
failure rate of each test under a correct implementation, for a random seed; seeds are
fixed, so the outcome is reproducible). A mutation test runs the same check on a plausible
wrong rule (on rejection, sample from p instead of norm(max(0, p - q))) and requires it to
fail, so the check has power.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from specsim.collect.decoding import (
    CachedLM,
    ConstantGamma,
    ModelDrafter,
    Warp,
    autoregressive_decode,
    speculative_decode,
    verify_draft,
)
from tests.models import tiny_llama

ALPHA = 1e-4
VOCAB = 4
LENGTH = 3


def _chi_square_pvalue(samples: list[tuple[int, ...]], expected_probs: dict[tuple[int, ...], float]) -> float:
    cells = sorted(expected_probs)
    counts = {cell: 0 for cell in cells}
    for sample in samples:
        counts[sample] += 1
    observed = np.array([counts[c] for c in cells], dtype=float)
    expected = np.array([expected_probs[c] for c in cells])
    expected = expected / expected.sum() * len(samples)  # float32 rounding: make the totals agree
    keep = expected >= 5  # Pearson's approximation needs enough expected counts per cell
    # Pool the sparse cells into one so no probability mass is dropped.
    observed = np.append(observed[keep], observed[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return float(stats.chisquare(observed, expected).pvalue)


def _markov_chain(seed: int, sharpness: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(VOCAB, VOCAB, generator=generator, dtype=torch.float64), -1)


def _joint_of_chain(chain: torch.Tensor, start: int) -> dict[tuple[int, ...], float]:
    joint = {}
    for sequence in itertools.product(range(VOCAB), repeat=LENGTH):
        prob, prev = 1.0, start
        for token in sequence:
            prob *= float(chain[prev, token])
            prev = token
        joint[sequence] = prob
    return joint


def _wrong_rule(target_probs, draft_probs, draft, greedy, generator=None):
    """Plausible bug: after a rejection, sample from the target instead of the residual."""
    n_accepted, _, accept_prob = verify_draft(target_probs, draft_probs, draft, greedy, generator)
    row = target_probs[n_accepted]
    return n_accepted, int(torch.multinomial(row, 1, generator=generator)), accept_prob


def _sample_chain(p_chain, q_chain, gamma, n_samples, rule, seed):
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n_samples):
        tokens = [0]
        while len(tokens) < LENGTH + 1:
            draft = []
            prev = tokens[-1]
            for _ in range(gamma):
                token = int(torch.multinomial(q_chain[prev], 1, generator=generator))
                draft.append(token)
                prev = token
            contexts = [tokens[-1], *draft]
            target_probs = p_chain[contexts]
            draft_probs = q_chain[contexts[:-1]]
            n_accepted, next_token, _ = rule(target_probs, draft_probs, torch.tensor(draft), False, generator)
            tokens.extend([*draft[:n_accepted], next_token])
        samples.append(tuple(tokens[1 : LENGTH + 1]))
    return samples


@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_rule_preserves_markov_target(gamma):
    p_chain, q_chain = _markov_chain(0, 2.0), _markov_chain(1, 2.0)
    samples = _sample_chain(p_chain, q_chain, gamma, 12_000, verify_draft, seed=gamma)
    assert _chi_square_pvalue(samples, _joint_of_chain(p_chain, 0)) > ALPHA


def test_wrong_rule_is_caught():
    p_chain, q_chain = _markov_chain(0, 2.0), _markov_chain(1, 2.0)
    samples = _sample_chain(p_chain, q_chain, 2, 12_000, _wrong_rule, seed=7)
    assert _chi_square_pvalue(samples, _joint_of_chain(p_chain, 0)) < ALPHA


def test_greedy_rule_takes_target_argmax():
    target = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    draft_probs = torch.full((2, 3), 1 / 3)
    n_accepted, next_token, accept_prob = verify_draft(target, draft_probs, torch.tensor([1, 2]), greedy=True)
    assert (n_accepted, next_token) == (1, 0)
    assert accept_prob.tolist() == [1.0, 0.0]


def _exact_joint_of_model(model: torch.nn.Module, warp: Warp, prompt: list[int]) -> dict[tuple[int, ...], float]:
    joint = {}
    with torch.inference_mode():
        for sequence in itertools.product(range(VOCAB), repeat=LENGTH):
            ids = torch.tensor([[*prompt, *sequence[:-1]]])
            probs = warp.probs(model(input_ids=ids).logits[0, len(prompt) - 1 :].double())
            joint[sequence] = float(np.prod([probs[i, token].item() for i, token in enumerate(sequence)]))
    return joint


@pytest.mark.integration
@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_end_to_end_sampling_matches_target_model(temperature, top_p):
    target_model, drafter_model = tiny_llama(VOCAB, seed=0), tiny_llama(VOCAB, seed=1)
    warp = Warp(temperature, top_p)
    prompt = [0, 1]
    target, drafter = CachedLM(target_model), ModelDrafter(drafter_model)
    generator = torch.Generator().manual_seed(11)
    samples, accepted = [], 0
    for _ in range(2500):
        result = speculative_decode(target, drafter, prompt, schedule=ConstantGamma(2), warp=warp,
                                    max_new_tokens=LENGTH, eos_ids=set(), generator=generator, record=False)
        samples.append(tuple(result.output_ids))
        accepted += sum(result.steps["n_accepted"])
    assert accepted > 0, "the drafter never matched: the test would not exercise acceptance"
    assert _chi_square_pvalue(samples, _exact_joint_of_model(target_model, warp, prompt)) > ALPHA


def test_greedy_tiny_models_match_plain_decoding():
    target_model, drafter_model = tiny_llama(64, seed=3), tiny_llama(64, seed=4)
    target, drafter = CachedLM(target_model), ModelDrafter(drafter_model)
    prompt = [5, 9, 2]
    plain = autoregressive_decode(target, prompt, warp=Warp(), max_new_tokens=40, eos_ids=set())
    for gamma in (1, 2, 5):
        result = speculative_decode(target, drafter, prompt, schedule=ConstantGamma(gamma), warp=Warp(),
                                    max_new_tokens=40, eos_ids=set())
        assert result.output_ids == plain.output_ids
    self_draft = speculative_decode(target, ModelDrafter(target_model), prompt, schedule=ConstantGamma(3),
                                    warp=Warp(), max_new_tokens=40, eos_ids=set())
    assert self_draft.output_ids == plain.output_ids
    assert self_draft.steps["n_accepted"] == self_draft.steps["n_drafted"]


@pytest.mark.integration
def test_end_to_end_wrong_rule_is_caught(monkeypatch):
    import specsim.collect.decoding as decoding

    monkeypatch.setattr(decoding, "verify_draft", _wrong_rule)
    with pytest.raises(AssertionError):
        test_end_to_end_sampling_matches_target_model(1.0, 1.0)

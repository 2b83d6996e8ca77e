"""The draft-verify loop: speculative decoding of one sequence, batch size 1, with KV caches.

Both models keep a :class:`transformers.DynamicCache` that holds every token of the
sequence but the last; a rejection crops the caches (``DynamicCache.crop`` with a negative
count), so the prefix is never re-encoded. The acceptance rule is Leviathan et al.'s:
greedy accepts a drafted token when it is the target's argmax; sampling accepts with
probability ``min(1, p/q)`` and on rejection draws from ``norm(max(0, p - q))``, which
leaves the (temperature- and top-p-warped) target distribution unchanged.

Drafting follows Hugging Face's ``CandidateGenerator`` seam: a :class:`~specsim.collect.drafters.Drafter`
proposes up to ``n`` tokens (:meth:`~specsim.collect.drafters.Drafter.propose`) and learns the
verified sequence (:meth:`~specsim.collect.drafters.Drafter.accept`); a :class:`GammaSchedule`
chooses ``n``. A draft may be shorter than ``n`` or empty (a plain target step). A
deterministic drafter's token is a point mass (``q = 1``), so sampling accepts it with
probability ``p(x)`` and a rejection draws from ``p`` with ``x`` removed.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from specsim.collect.drafters import Drafter, ModelDrafter

__all__ = [
    "Warp",
    "CachedLM",
    "Drafter",
    "ModelDrafter",
    "GammaSchedule",
    "ConstantGamma",
    "AdaptiveGamma",
    "make_schedule",
    "verify_draft",
    "DecodeResult",
    "speculative_decode",
    "autoregressive_decode",
]


@dataclass(frozen=True)
class Warp:
    """How logits become the decoding distribution.

    Parameters
    ----------
    temperature : float
        0 means greedy (argmax); otherwise logits are divided by it.
    top_p : float
        Nucleus mass kept (1 keeps the whole vocabulary).
    """

    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy."""
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoding distribution over the vocabulary, shape like ``logits`` (last axis vocab).

        Greedy decoding gives a one-hot distribution on the argmax.
        """
        logits = logits.float()
        if self.greedy:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            outside = (sorted_probs.cumsum(-1) - sorted_probs) >= self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class CachedLM:
    """A causal LM with a KV cache over the sequence's tokens but the last.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM in eval mode.
    """

    def __init__(self, model: torch.nn.Module):
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self._cache_class = DynamicCache
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept either.
        parameters = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        # Computing the vocabulary projection only for the rows we read saves most of a
        # prefill's cost (prompt length x vocabulary); models without the argument return all.
        self._keeps_logits = "logits_to_keep" in parameters
        self.reset()

    def reset(self) -> None:
        """Forget the sequence: an empty cache."""
        self.cache = self._cache_class(config=self.model.config)  # type: ignore[arg-type]
        self.cached = 0

    @torch.inference_mode()
    def forward(self, token_ids: list[int], keep: int | None = None) -> torch.Tensor:
        """Feed ``token_ids`` after the cached prefix; return their logits.

        Parameters
        ----------
        token_ids : list of int
            Tokens to append to the cache.
        keep : int, optional
            Return logits of the last ``keep`` tokens only (shape (keep, vocab)); all of them,
            shape (n, vocab), when None.
        """
        inputs = torch.tensor([token_ids], device=self.device)
        kwargs: dict[str, Any] = {self._cache_argument: self.cache}
        if keep is not None and self._keeps_logits:
            kwargs["logits_to_keep"] = keep
        output = self.model(input_ids=inputs, use_cache=True, **kwargs)
        self.cached += len(token_ids)
        logits = output.logits[0]
        return logits if keep is None else logits[-keep:]

    @torch.inference_mode()
    def forward_rows(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        """Feed a batch of equal-length ``rows`` after the cached prefix (one per batch row).

        The cache then holds ``len(rows)`` sequences; a batch's first call fixes its size (call
        :meth:`reset` before another size). Returns the logits of each row's last ``keep``
        tokens, shape (rows, keep, vocab). Used to time passes at a batch size (``specsim
        profile --batch-size``).
        """
        inputs = torch.tensor(rows, device=self.device)
        kwargs: dict[str, Any] = {self._cache_argument: self.cache}
        if self._keeps_logits:
            kwargs["logits_to_keep"] = keep
        output = self.model(input_ids=inputs, use_cache=True, **kwargs)
        self.cached += inputs.shape[1]
        return output.logits[:, -keep:]

    @torch.inference_mode()
    def forward_hidden(self, token_ids: list[int], keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, also returning the last layer's hidden state of every fed token.

        Returns
        -------
        logits : torch.Tensor, shape (keep, vocab)
        hidden : torch.Tensor, shape (len(token_ids), hidden_size)
            The final normalised hidden states (what the LM head reads).
        """
        inputs = torch.tensor([token_ids], device=self.device)
        kwargs: dict[str, Any] = {self._cache_argument: self.cache}
        if self._keeps_logits:
            kwargs["logits_to_keep"] = keep
        output = self.model(input_ids=inputs, use_cache=True, output_hidden_states=True, **kwargs)
        self.cached += len(token_ids)
        return output.logits[0][-keep:], output.hidden_states[-1][0]

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` cached tokens, dropping the rest."""
        excess = self.cached - length
        if excess > 0:
            self.cache.crop(-excess)
            self.cached = length


class GammaSchedule:
    """How many tokens to draft in the next step; learns from each verification."""

    name = "constant"

    def __init__(self, gamma: int):
        if gamma < 1:
            raise ValueError(f"gamma must be >= 1, got {gamma}")
        self.gamma_max = gamma
        self.current = gamma

    def next_gamma(self) -> int:
        """Draft length for the next step."""
        return self.current

    def update(self, n_accepted: int, n_drafted: int) -> None:
        """Learn from a verified step (constant: nothing to learn)."""


class ConstantGamma(GammaSchedule):
    """Always draft ``gamma`` tokens."""


class AdaptiveGamma(GammaSchedule):
    """Hugging Face's heuristic: +2 after a fully accepted draft, -1 otherwise, in [1, gamma].

    Starts at ``gamma``; the chosen draft length of every step is recorded as its
    ``n_drafted``.
    """

    name = "adaptive"

    def update(self, n_accepted: int, n_drafted: int) -> None:
        """Grow after full acceptance, shrink after a rejection."""
        if n_accepted == n_drafted:
            self.current = min(self.gamma_max, self.current + 2)
        else:
            self.current = max(1, self.current - 1)


def make_schedule(name: str, gamma: int) -> GammaSchedule:
    """Build a schedule by name: ``constant`` or ``adaptive``."""
    schedules = {"constant": ConstantGamma, "adaptive": AdaptiveGamma}
    if name not in schedules:
        raise ValueError(f"unknown gamma schedule {name!r}; choose constant or adaptive")
    return schedules[name](gamma)


def verify_draft(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    draft: torch.Tensor,
    greedy: bool,
    generator: torch.Generator | None = None,
) -> tuple[int, int, torch.Tensor]:
    """Leviathan et al.'s acceptance rule for one draft.

    Parameters
    ----------
    target_probs : torch.Tensor, shape (g + 1, vocab)
        Target decoding distributions after each draft prefix (row ``g`` for the bonus).
        Under greedy only argmaxes are read, so logits may be passed instead.
    draft_probs : torch.Tensor, shape (g, vocab)
        Drafter decoding distributions the draft was sampled from (unused under greedy).
    draft : torch.Tensor, shape (g,)
        Drafted token ids.
    greedy : bool
        Accept iff the drafted token is the target's argmax.
    generator : torch.Generator, optional
        Random source for sampling.

    Returns
    -------
    n_accepted : int
        Accepted prefix length (bonus not counted).
    next_token : int
        The corrected token after a rejection, or the bonus token.
    accept_prob : torch.Tensor, shape (g,)
        ``min(1, p/q)`` of each drafted token (0/1 under greedy).
    """
    g = draft.shape[0]
    if greedy:
        accept_prob = (target_probs[:g].argmax(-1) == draft).float()
        accepted = accept_prob.bool()
    else:
        rows = torch.arange(g, device=draft.device)
        accept_prob = torch.clamp(target_probs[rows, draft] / draft_probs[rows, draft], max=1.0)
        uniform = torch.rand(g, generator=generator, device=draft.device)
        accepted = uniform < accept_prob
    rejected = (~accepted).nonzero()
    n_accepted = int(rejected[0]) if len(rejected) else g
    if greedy:
        next_token = int(target_probs[n_accepted].argmax())
    elif n_accepted < g:
        residual = torch.clamp(target_probs[n_accepted] - draft_probs[n_accepted], min=0.0)
        next_token = int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    else:
        next_token = int(torch.multinomial(target_probs[g], 1, generator=generator))
    return n_accepted, next_token, accept_prob


@dataclass
class DecodeResult:
    """One decoded sequence with its per-step and per-drafted-token records.

    Attributes
    ----------
    output_ids : list of int
        Generated tokens (the prompt excluded), EOS included when it ended the sequence.
    finish_reason : str
        ``eos`` or ``length``.
    wall_s : float
        Wall time of the whole decode (prefill included), device-synchronised.
    steps : dict of str to list
        Per step: ``context_len``, ``n_asked`` (tokens asked of the drafter), ``n_drafted``,
        ``n_accepted``, ``n_emitted``, ``draft_s``, ``verify_s``.
    tokens : dict of str to list
        Per drafted token: ``step``, ``draft_index``, ``position``, ``context_len``,
        ``token_id``, ``evaluated``, ``accepted``, ``p_target``, ``q_draft``,
        ``accept_prob``, ``overlap``, ``overlap_t1``. Empty when recording is off.
    """

    output_ids: list[int]
    finish_reason: str
    wall_s: float
    steps: dict[str, list] = field(default_factory=dict)
    tokens: dict[str, list] = field(default_factory=dict)


_STEP_FIELDS = ("context_len", "n_asked", "n_drafted", "n_accepted", "n_emitted", "draft_s", "verify_s")
_TOKEN_FIELDS = ("step", "draft_index", "position", "context_len", "token_id", "evaluated", "accepted",
                 "p_target", "q_draft", "accept_prob", "overlap", "overlap_t1")


def _token_records(
    target_logits: torch.Tensor, draft_probs_t1: torch.Tensor, draft: torch.Tensor, warp: Warp,
    target_probs: torch.Tensor, draft_probs: torch.Tensor, accept_prob: torch.Tensor,
) -> dict[str, np.ndarray]:
    """Per-drafted-token probabilities; ``draft_probs_t1`` is the drafter's distribution at temperature 1."""
    g = draft.shape[0]
    rows = torch.arange(g, device=draft.device)
    p1 = torch.softmax(target_logits[:g].float(), -1)
    q1 = draft_probs_t1
    overlap_t1 = torch.minimum(p1, q1).sum(-1)
    if warp.greedy:
        # At temperature 0 the decoding distributions are one-hot: report p, q at temperature 1.
        p_target, q_draft, overlap = p1[rows, draft], q1[rows, draft], accept_prob
    else:
        p_target, q_draft = target_probs[rows, draft], draft_probs[rows, draft]
        overlap = torch.minimum(target_probs[:g], draft_probs).sum(-1)
    stacked = torch.stack([p_target, q_draft, accept_prob, overlap, overlap_t1]).clamp(0.0, 1.0)
    values = stacked.cpu().double().numpy()
    return {
        "p_target": values[0], "q_draft": values[1], "accept_prob": values[2], "overlap": values[3],
        "overlap_t1": values[4] if warp.greedy else np.full(g, np.nan),
    }


def speculative_decode(
    target: CachedLM,
    drafter: Drafter,
    prompt_ids: list[int],
    *,
    schedule: GammaSchedule,
    warp: Warp,
    max_new_tokens: int,
    eos_ids: frozenset[int] | set[int],
    generator: torch.Generator | None = None,
    record: bool = True,
) -> DecodeResult:
    """Speculatively decode one prompt.

    Parameters
    ----------
    target : CachedLM
        The target model; its cache is reset.
    drafter : Drafter
        The drafter; it is reset. A step whose draft is empty is a plain target step.
    prompt_ids : list of int
        Prompt token ids (at least one).
    schedule : GammaSchedule
        Draft length per step; each step asks for ``min(next_gamma, tokens left)`` tokens and
        records as ``n_drafted`` how many the drafter proposed.
    warp : Warp
        Temperature and top-p of both models' decoding distributions.
    max_new_tokens : int
        Token budget.
    eos_ids : set of int
        Tokens that end the sequence (kept in the output).
    generator : torch.Generator, optional
        Random source of drafting and acceptance (sampling only).
    record : bool, default True
        Record per-token probabilities; off, only step counts and timings are kept (the
        benchmark of recording overhead).

    Returns
    -------
    DecodeResult
    """
    device = target.device
    steps: dict[str, list] = {name: [] for name in _STEP_FIELDS}
    tokens_rec: dict[str, Any] = {name: [] for name in _TOKEN_FIELDS} if record else {}
    _sync(device)
    start = time.perf_counter()
    target.reset()
    drafter.reset()
    tokens = list(prompt_ids)
    features = drafter.needs_target_features
    prefill_features = None
    if len(tokens) > 1:
        if features:
            prefill_features = target.forward_hidden(tokens[:-1], keep=1)[1]
        else:
            target.forward(tokens[:-1], keep=1)
    drafter.prefill(tokens, prefill_features)
    generated = 0
    finish_reason = "length"
    step = 0
    while generated < max_new_tokens:
        n_asked = min(schedule.next_gamma(), max_new_tokens - generated)
        context_len = len(tokens)
        _sync(device)
        t0 = time.perf_counter()
        proposal = drafter.propose(tokens, n_asked, warp, generator)
        draft = list(proposal.tokens[:n_asked])
        n_draft = len(draft)
        _sync(device)
        t1 = time.perf_counter()
        cached_before = target.cached
        inputs = tokens[cached_before:] + draft
        hidden = None
        if features:
            target_logits, hidden = target.forward_hidden(inputs, keep=n_draft + 1)
        else:
            target_logits = target.forward(inputs, keep=n_draft + 1)
        vocab = target_logits.shape[-1]
        draft_tensor = torch.tensor(draft, device=target_logits.device, dtype=torch.long)
        if proposal.logits is None:
            # A deterministic draft: each token a point mass.
            draft_t1 = torch.nn.functional.one_hot(draft_tensor, vocab).float()
            draft_probs = draft_t1
        else:
            draft_logits = proposal.logits[:n_draft].to(target_logits.device)
            draft_t1 = torch.softmax(draft_logits.float(), -1) if record else draft_logits
            draft_probs = draft_logits if warp.greedy else warp.probs(draft_logits)
        # Greedy acceptance reads only argmaxes: the logits stand in for one-hot distributions.
        target_probs = target_logits if warp.greedy else warp.probs(target_logits)
        n_accepted, next_token, accept_prob = verify_draft(
            target_probs, draft_probs, draft_tensor, warp.greedy, generator
        )
        emitted = [*draft[:n_accepted], next_token][: max_new_tokens - generated]
        eos_at = next((i for i, token in enumerate(emitted) if token in eos_ids), None)
        if eos_at is not None:
            emitted = emitted[: eos_at + 1]
            finish_reason = "eos"
        tokens.extend(emitted)
        target.rollback(len(tokens) - 1)
        # Hidden states of the verified tokens now in the target's cache (what a feature head reads).
        drafter.accept(tokens, None if hidden is None else hidden[: target.cached - cached_before])
        _sync(device)
        t2 = time.perf_counter()
        schedule.update(n_accepted, n_draft)
        for name, value in zip(
            _STEP_FIELDS, (context_len, n_asked, n_draft, n_accepted, len(emitted), t1 - t0, t2 - t1), strict=True
        ):
            steps[name].append(value)
        if record and n_draft:
            index = np.arange(n_draft)
            columns = _token_records(target_logits, draft_t1, draft_tensor, warp, target_probs, draft_probs,
                                     accept_prob)
            columns.update(
                step=np.full(n_draft, step), draft_index=index, position=generated + index,
                context_len=context_len + index, token_id=np.asarray(draft),
                evaluated=index <= n_accepted, accepted=index < n_accepted,
            )
            for name in _TOKEN_FIELDS:
                tokens_rec[name].append(columns[name])
        generated += len(emitted)
        step += 1
        if finish_reason == "eos":
            break
    _sync(device)
    wall = time.perf_counter() - start
    if record:
        tokens_rec = {name: np.concatenate(parts) if parts else np.array([]) for name, parts in tokens_rec.items()}
    return DecodeResult(tokens[len(prompt_ids) :], finish_reason, wall, steps, tokens_rec)


def autoregressive_decode(
    target: CachedLM,
    prompt_ids: list[int],
    *,
    warp: Warp,
    max_new_tokens: int,
    eos_ids: frozenset[int] | set[int],
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """Plain decoding of the target with its KV cache, same stopping rule; the baseline."""
    device = target.device
    _sync(device)
    start = time.perf_counter()
    target.reset()
    tokens = list(prompt_ids)
    pending = tokens
    finish_reason = "length"
    for _ in range(max_new_tokens):
        logits = target.forward(pending, keep=1)[-1]
        if warp.greedy:
            token = int(logits.argmax())
        else:
            token = int(torch.multinomial(warp.probs(logits), 1, generator=generator))
        tokens.append(token)
        pending = [token]
        if token in eos_ids:
            finish_reason = "eos"
            break
    _sync(device)
    return DecodeResult(tokens[len(prompt_ids) :], finish_reason, time.perf_counter() - start)

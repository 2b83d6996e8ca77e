"""Drafters: one interface, several kinds of proposer.

A drafter proposes up to ``n`` tokens for a context (:meth:`Drafter.propose`) and learns which
of them the target accepted (:meth:`Drafter.accept`), the two verbs of Hugging Face's
``CandidateGenerator``. The draft-verify loop (:func:`specsim.collect.decoding.speculative_decode`),
the recorder and the timings never change with the drafter. Types (``drafter_type`` in the traces):

- ``model``: a separate causal LM sharing the target's vocabulary (:class:`ModelDrafter`).
- ``lookup``: model-free; :class:`PromptLookupDrafter` copies the continuation of an earlier
  match of the context's last n-gram (Hugging Face's prompt lookup, the generic form), and
  :class:`DatastoreDrafter` continues the context's longest suffix by the most frequent next
  token in a datastore of a task's completions and the running sequence (after REST, He et
  al. 2023, and SuffixDecoding, 2024: the fine-tuned form).
- ``feature-head``: a small network over the target's own hidden states (EAGLE family; see
  :mod:`specsim.collect.feature_head`).

A draft may hold fewer than ``n`` tokens, or none: the step is then a plain target step. A
drafter with a distribution returns its raw logits with the draft; a deterministic drafter
returns none, and its draft is a point mass (``q = 1``): under sampling a drafted token is
accepted with probability ``p(x)`` and a rejection resamples from ``norm(max(0, p - onehot(x)))``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from specsim.collect.datastore import Datastore, read_datastore, write_datastore
from specsim.errors import InputError

__all__ = [
    "Draft",
    "Drafter",
    "ModelDrafter",
    "PromptLookupDrafter",
    "lookup_copy_sources",
    "DatastoreDrafter",
    "Datastore",
    "read_datastore",
    "write_datastore",
]


@dataclass(frozen=True)
class Draft:
    """Tokens proposed for one step.

    Attributes
    ----------
    tokens : list of int
        Drafted token ids, length 0 to ``n``.
    logits : torch.Tensor or None
        Raw logits the tokens were chosen from, shape (len(tokens), vocab); None for a
        deterministic drafter (each token a point mass).
    """

    tokens: list[int]
    logits: torch.Tensor | None = None


class Drafter(ABC):
    """A proposer of draft tokens (see the module docstring).

    Subclasses set :attr:`drafter_type` and implement :meth:`propose`; the others have
    defaults that suit a drafter without state across steps. A drafter that reads the target's
    hidden states sets :attr:`needs_target_features`; the loop then passes the target's last
    hidden state of every token it has verified (never an extra target pass).
    """

    drafter_type: ClassVar[str]
    needs_target_features: ClassVar[bool] = False

    def reset(self) -> None:  # noqa: B027 - a stateless drafter has nothing to reset
        """Start a new sequence."""

    def prefill(self, tokens: list[int], target_features: torch.Tensor | None = None) -> None:  # noqa: B027
        """See the prompt (all of ``tokens``); ``target_features`` (len(tokens) - 1, hidden) where needed."""

    @abstractmethod
    def propose(self, tokens: list[int], n: int, warp: Any, generator: torch.Generator | None) -> Draft:
        """Draft up to ``n`` tokens after the committed sequence ``tokens``."""

    def accept(self, tokens: list[int], target_features: torch.Tensor | None = None) -> None:  # noqa: B027
        """Learn the verified sequence ``tokens`` (its last token not yet seen by the target).

        ``target_features`` holds the target's hidden states of the tokens verified in this
        step that were kept, shape (k, hidden), where :attr:`needs_target_features`.
        """

    def options(self) -> dict[str, Any]:
        """Every option that defines the drafter's proposals (for the run metadata)."""
        return {}


class ModelDrafter(Drafter):
    """A drafter backed by a causal LM sharing the target's vocabulary."""

    drafter_type = "model"

    def __init__(self, model: torch.nn.Module):
        from specsim.collect.decoding import CachedLM

        self.lm = CachedLM(model)

    def reset(self) -> None:
        """Start a new sequence."""
        self.lm.reset()

    def prefill(self, tokens: list[int], target_features: torch.Tensor | None = None) -> None:
        """Encode all tokens but the last."""
        if len(tokens) > 1:
            self.lm.forward(tokens[:-1], keep=1)

    def propose(self, tokens: list[int], n: int, warp: Any, generator: torch.Generator | None) -> Draft:
        """Draft ``n`` tokens after ``tokens``, each from the model's warped distribution."""
        pending = tokens[self.lm.cached :]
        draft: list[int] = []
        rows = []
        for _ in range(n):
            logits = self.lm.forward(pending, keep=1)[-1]
            rows.append(logits)
            if warp.greedy:
                token = int(logits.argmax())
            else:
                token = int(torch.multinomial(warp.probs(logits), 1, generator=generator))
            draft.append(token)
            pending = [token]
        return Draft(draft, torch.stack(rows) if rows else None)

    def accept(self, tokens: list[int], target_features: torch.Tensor | None = None) -> None:
        """Drop cached drafted tokens past the accepted prefix (the cache holds all but the last)."""
        self.lm.rollback(len(tokens) - 1)


class _NgramIndex:
    """First occurrence of every n-gram (sizes 1..max_size) of a growing token sequence."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.first: dict[tuple[int, ...], int] = {}
        self.indexed = 0  # n-grams starting before this index are in ``first``

    def extend(self, tokens: list[int]) -> None:
        """Index the n-grams of ``tokens`` that start at or after ``indexed`` and end inside it."""
        length = len(tokens)
        for size in range(1, self.max_size + 1):
            for start in range(max(self.indexed - size + 1, 0), length - size + 1):
                self.first.setdefault(tuple(tokens[start : start + size]), start)
        self.indexed = length


class PromptLookupDrafter(Drafter):
    """Hugging Face's prompt lookup (transformers ``PromptLookupCandidateGenerator``), exactly.

    For n-gram sizes from ``max_ngram`` down to 1, the context's last n-gram is searched in the
    context; the leftmost earlier occurrence with a continuation gives up to ``n`` following
    tokens, cut before the first end-of-sequence token (an EOS cut to nothing drafts nothing, as
    in transformers). No match: an empty draft, a plain target step.

    Parameters
    ----------
    max_ngram : int, default 2
        Longest n-gram matched (transformers' ``max_matching_ngram_size``).
    eos_ids : set of int
        End-of-sequence tokens.
    """

    drafter_type = "lookup"

    def __init__(self, max_ngram: int = 2, eos_ids: frozenset[int] | set[int] = frozenset()):
        if max_ngram < 1:
            raise InputError(f"the longest n-gram must be >= 1, got {max_ngram}", field="--drafter prompt-lookup")
        self.max_ngram = max_ngram
        self.eos_ids = frozenset(eos_ids)
        self.reset()

    def reset(self) -> None:
        """Forget the sequence."""
        self.index = _NgramIndex(self.max_ngram)
        #: Index in the context of the first token the last draft copied (None: nothing drafted).
        self.copied_from: int | None = None

    def propose(self, tokens: list[int], n: int, warp: Any, generator: torch.Generator | None) -> Draft:
        """Copy up to ``n`` tokens after the leftmost earlier match of the longest matching n-gram."""
        length = len(tokens)
        self.index.extend(tokens)
        self.copied_from = None
        for size in range(min(self.max_ngram, length - 1), 0, -1):
            start = self.index.first.get(tuple(tokens[length - size :]))
            # The leftmost occurrence; only the context's own last n-gram has no continuation.
            if start is None or start + size >= length:
                continue
            chosen = tokens[start + size : min(start + size + n, length)]
            cut = next((i for i, token in enumerate(chosen) if token in self.eos_ids), None)
            chosen = chosen if cut is None else chosen[:cut]
            self.copied_from = start + size if chosen else None
            return Draft(chosen)
        return Draft([])

    def options(self) -> dict[str, Any]:
        """The method and its n-gram size."""
        return {"method": "prompt-lookup", "max_ngram": self.max_ngram}


def lookup_copy_sources(prompt_ids: list[int], output_ids: list[int], step_positions: list[int],
                        max_ngram: int = 2, eos_ids: frozenset[int] = frozenset()) -> list[str]:
    """Where prompt lookup copied each step's draft from: ``prompt``, ``output`` or ``none`` (no draft).

    Replays :class:`PromptLookupDrafter` on the sequence's own context at each step (the prompt
    and the output generated before the step's first drafted position): a draft copied from
    before the prompt's end repeats the prompt, one from after it repeats the model's own output.
    Lookup is deterministic, so the replay is the collection's lookup, step for step.
    """
    drafter = PromptLookupDrafter(max_ngram, eos_ids)
    sources = []
    for position in step_positions:
        drafter.propose([*prompt_ids, *output_ids[:position]], 1, None, None)
        start = drafter.copied_from
        sources.append("none" if start is None else "prompt" if start < len(prompt_ids) else "output")
    return sources


class _ContinuationTable:
    """Counts of the next token after every n-gram (sizes 1..max_size) of some token sequences."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.counts: dict[tuple[int, ...], dict[int, int]] = {}
        self.best: dict[tuple[int, ...], int] = {}

    def add(self, tokens: list[int], start: int = 0) -> None:
        """Count the continuations of n-grams of ``tokens`` whose next token lies at ``start`` or later."""
        for end in range(max(start, 1), len(tokens)):
            following = tokens[end]
            for size in range(1, min(self.max_size, end) + 1):
                key = tuple(tokens[end - size : end])
                counts = self.counts.setdefault(key, {})
                counts[following] = counts.get(following, 0) + 1
                best = self.best.get(key)
                # Most frequent continuation; the earlier-seen one wins a tie.
                if best is None or counts[following] > counts[best]:
                    self.best[key] = following


class DatastoreDrafter(Drafter):
    """Retrieval drafting from a datastore of a task's completions and the running sequence.

    Each drafted token continues the longest suffix (up to the datastore's ``max_ngram``
    tokens, at least ``min_ngram``) of the context plus the draft so far that occurs in the
    datastore or earlier in the sequence, by its most frequent next token; drafting stops at
    the first suffix without a match or at an end-of-sequence token (not drafted).

    Parameters
    ----------
    datastore : Datastore
    eos_ids : set of int
    min_ngram : int, default 2
        Shortest suffix that may propose a token (a single-token match guesses too often).
    """

    drafter_type = "lookup"

    def __init__(self, datastore: Datastore, eos_ids: frozenset[int] | set[int] = frozenset(), min_ngram: int = 2):
        self.datastore = datastore
        self.eos_ids = frozenset(eos_ids)
        self.min_ngram = min(min_ngram, datastore.max_ngram)
        self.store = _ContinuationTable(datastore.max_ngram)
        for sequence in datastore.sequences:
            self.store.add(sequence)
        self.reset()

    def reset(self) -> None:
        """Forget the running sequence (the datastore stays)."""
        self.context = _ContinuationTable(self.datastore.max_ngram)
        self.seen = 0

    def _next(self, tokens: list[int]) -> int | None:
        for size in range(min(self.datastore.max_ngram, len(tokens)), self.min_ngram - 1, -1):
            key = tuple(tokens[len(tokens) - size :])
            candidates = [table for table in (self.context, self.store) if key in table.best]
            if candidates:
                if len(candidates) == 1:
                    return candidates[0].best[key]
                merged: dict[int, int] = dict(self.store.counts[key])
                for token, count in self.context.counts[key].items():
                    merged[token] = merged.get(token, 0) + count
                return max(merged, key=lambda token: merged[token])
        return None

    def propose(self, tokens: list[int], n: int, warp: Any, generator: torch.Generator | None) -> Draft:
        """Draft up to ``n`` tokens by repeated longest-suffix retrieval."""
        self.context.add(tokens, start=self.seen)
        self.seen = len(tokens)
        draft: list[int] = []
        while len(draft) < n:
            token = self._next(tokens + draft)
            if token is None or token in self.eos_ids:
                break
            draft.append(token)
        return Draft(draft)

    def options(self) -> dict[str, Any]:
        """The method, the datastore's provenance and the n-gram sizes."""
        card = self.datastore.card()
        card.pop("lengths")
        return {"method": "datastore", "min_ngram": self.min_ngram, "datastore": card}

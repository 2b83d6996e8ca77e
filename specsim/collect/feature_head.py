"""Feature heads: EAGLE-style drafters over the target's own hidden states, with a draft vocabulary.

A feature head (Li et al. 2024, EAGLE; its draft vocabulary after EAGLE-3, 2025) is one decoder
layer that reads, at each position ``i``, the target's last hidden state ``f_i`` (after the final
norm, what the target's LM head reads) and the embedding of the next token ``t_{i+1}``:

    x_i = fuse([f_i ; embed(t_{i+1})])            fusion: Linear(2h, h)
    f'_{i+1} = norm(layer(x_0..x_i))              one Llama decoder layer, causal, own KV cache
    logits_{i+2} = lm_head(f'_{i+1})              over the draft vocabulary only

so that the head predicts the target's next feature and, from it, the token after next. Drafting
is autoregressive over the head's own features: after the true pairs of the committed sequence,
each drafted token enters with the feature the head predicted for its position. The collector
passes the target's hidden states of every verified token (:meth:`Drafter.accept`); the head
never asks for a target pass of its own.

**Draft vocabulary.** The head's output layer has ``V_d`` rows (8,192 by default against the
target's 49,152), one per target token id in :attr:`DraftVocabulary.draft_to_target` (sorted,
unique). A drafted token is always a target id; tokens outside the draft vocabulary get ``q = 0``
(logit ``-inf`` in the full-vocabulary row the loop receives), so speculative sampling still
leaves the target distribution unchanged: those tokens are reached only through the residual.
``target_to_draft`` maps back, ``-1`` for a target id outside.

A head lives in a folder: ``feature_head.json`` (format, the decoder layer's Llama configuration,
the target it was trained for, kind, training data and window, the card) and
``model.safetensors`` (fusion, layer, norm, draft LM head and the vocabulary map). The token
embedding is the target's own (frozen; EAGLE shares it), taken from the loaded target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from specsim.collect.drafters import Draft, Drafter
from specsim.errors import InputError

__all__ = [
    "HEAD_FORMAT",
    "HEAD_CONFIG",
    "HEAD_WEIGHTS",
    "DraftVocabulary",
    "FeatureHead",
    "FeatureHeadDrafter",
    "is_feature_head",
    "head_layer_config",
    "read_head_config",
    "load_feature_head",
    "save_feature_head",
]

HEAD_FORMAT = "specsim-feature-head"
HEAD_VERSION = 1
HEAD_CONFIG = "feature_head.json"
HEAD_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class DraftVocabulary:
    """The map between a head's draft vocabulary and the target's.

    Parameters
    ----------
    draft_to_target : numpy.ndarray of int64, shape (V_d,)
        Target id of each draft id: sorted, unique, each in ``[0, target_size)``.
    target_size : int
        The target's vocabulary size.
    """

    draft_to_target: np.ndarray
    target_size: int

    def __post_init__(self) -> None:
        ids = np.asarray(self.draft_to_target)
        if ids.ndim != 1 or len(ids) == 0:
            raise InputError("a draft vocabulary needs at least one token", field="draft_to_target")
        if not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"draft_to_target must hold integer token ids, got {ids.dtype}", field="draft_to_target")
        if ids.min() < 0 or ids.max() >= self.target_size:
            raise InputError(f"draft_to_target holds ids outside the target's vocabulary of {self.target_size}",
                             field="draft_to_target")
        if len(ids) > 1 and not (np.diff(ids) > 0).all():
            raise InputError("draft_to_target must be sorted and without repeats", field="draft_to_target")

    @property
    def size(self) -> int:
        """``V_d``, tokens in the draft vocabulary."""
        return len(self.draft_to_target)

    @property
    def target_to_draft(self) -> np.ndarray:
        """Draft id of each target id, ``-1`` outside the draft vocabulary, shape (target_size,)."""
        mapping = np.full(self.target_size, -1, dtype=np.int64)
        mapping[self.draft_to_target] = np.arange(self.size)
        return mapping

    def to_target(self, draft_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Target ids of draft ids."""
        return np.asarray(self.draft_to_target)[np.asarray(list(draft_ids) if not isinstance(draft_ids, np.ndarray)
                                                           else draft_ids, dtype=np.int64)]

    def to_draft(self, target_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Draft ids of target ids, ``-1`` for those outside the draft vocabulary."""
        ids = np.asarray(list(target_ids) if not isinstance(target_ids, np.ndarray) else target_ids, dtype=np.int64)
        return self.target_to_draft[ids]

    def coverage(self, target_ids: Iterable[int]) -> float:
        """Share of ``target_ids`` inside the draft vocabulary (NaN for none)."""
        ids = np.fromiter(target_ids, dtype=np.int64)
        return float(np.isin(ids, self.draft_to_target).mean()) if len(ids) else float("nan")

    @classmethod
    def from_counts(cls, counts: np.ndarray, size: int, always: Iterable[int] = ()) -> DraftVocabulary:
        """The ``size`` most frequent target ids of ``counts`` (shape (target_size,)); ties go to the lower id.

        ``always`` (end-of-sequence tokens, say) are kept whatever their count.
        """
        counts = np.asarray(counts, dtype=np.float64)
        target_size = len(counts)
        if not 1 <= size <= target_size:
            raise InputError(f"a draft vocabulary of {size} tokens must lie in [1, {target_size}]",
                             field="draft_vocab_size")
        keep = list(dict.fromkeys(int(t) for t in always))
        ranked = np.lexsort((np.arange(target_size), -counts))  # by count, then id
        chosen = set(keep)
        for token in ranked:
            if len(chosen) >= size:
                break
            chosen.add(int(token))
        return cls(np.array(sorted(chosen), dtype=np.int64), target_size)


def head_layer_config(target_config: Any) -> dict[str, Any]:
    """The Llama configuration of a head's one decoder layer, from the target's configuration.

    The layer has the target's width, heads, rotary embedding and norm; its own (unused)
    token table has one row: the head reads the target's embeddings.
    """
    config = target_config.to_dict()
    keep = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "hidden_act", "rms_norm_eps", "rope_parameters", "rope_theta", "rope_scaling", "max_position_embeddings",
            "attention_bias", "mlp_bias")
    layer = {key: config[key] for key in keep if config.get(key) is not None}
    layer.update(num_hidden_layers=1, vocab_size=1, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                 tie_word_embeddings=False)
    return layer


class FeatureHead(torch.nn.Module):
    """The network: fusion, one decoder layer with its final norm, and the draft LM head.

    Parameters
    ----------
    layer_config : dict
        :func:`head_layer_config` of the target.
    vocabulary : DraftVocabulary
    """

    def __init__(self, layer_config: dict[str, Any], vocabulary: DraftVocabulary):
        from transformers import LlamaConfig, LlamaModel

        super().__init__()
        self.layer_config = dict(layer_config)
        self.vocabulary = vocabulary
        config = LlamaConfig(**layer_config)
        config._attn_implementation = "sdpa"
        hidden = config.hidden_size
        self.fuse = torch.nn.Linear(2 * hidden, hidden, bias=True)
        self.layer = LlamaModel(config)
        self.lm_head = torch.nn.Linear(hidden, vocabulary.size, bias=False)
        self.register_buffer("draft_to_target", torch.as_tensor(vocabulary.draft_to_target, dtype=torch.long))

    @property
    def hidden_size(self) -> int:
        """Width of the features."""
        return int(self.fuse.out_features)

    def forward(self, features: torch.Tensor, token_embeddings: torch.Tensor, *, cache: Any = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted next features and draft-vocabulary logits of the token after next.

        Parameters
        ----------
        features : torch.Tensor, shape (batch, n, hidden)
            ``f_i`` of each pair (the target's, or the head's own while drafting).
        token_embeddings : torch.Tensor, shape (batch, n, hidden)
            Embedding of ``t_{i+1}``.
        cache : transformers.DynamicCache, optional
            The head's KV cache over earlier pairs (extended in place).

        Returns
        -------
        predicted : torch.Tensor, shape (batch, n, hidden)
            ``f'_{i+1}``.
        logits : torch.Tensor, shape (batch, n, V_d)
        """
        fused = self.fuse(torch.cat([features, token_embeddings], dim=-1))
        output = self.layer(inputs_embeds=fused, attention_mask=attention_mask, position_ids=position_ids,
                            cache=cache, use_cache=cache is not None)
        predicted = output.last_hidden_state
        return predicted, self.lm_head(predicted)


def is_feature_head(path: str | Path) -> bool:
    """Whether ``path`` is a feature head's folder (it holds ``feature_head.json``)."""
    return (Path(path) / HEAD_CONFIG).is_file()


def read_head_config(path: str | Path) -> dict[str, Any]:
    """A head folder's ``feature_head.json``, checked for its format and fields."""
    file = Path(path) / HEAD_CONFIG
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the feature head's configuration: {error}", path=file) from None
    if not isinstance(config, dict) or config.get("format") != HEAD_FORMAT:
        raise InputError(f"not a feature head (format must be {HEAD_FORMAT!r})", path=file, field="format")
    if config.get("version") != HEAD_VERSION:
        raise InputError(f"version {config.get('version')!r}, this specsim reads version {HEAD_VERSION}", path=file,
                         field="version")
    for name, kind in (("layer_config", dict), ("target_vocab_size", int), ("draft_vocab_size", int),
                       ("kind", str)):
        if not isinstance(config.get(name), kind) or isinstance(config.get(name), bool):
            raise InputError(f"must be a {kind.__name__}", path=file, field=name)
    return config


def save_feature_head(head: FeatureHead, folder: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``head`` and its configuration (``metadata`` adds kind, trained_on, window, card) atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    temporary = folder.with_name(folder.name + ".tmp")
    temporary.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in head.state_dict().items()}
    save_file(state, str(temporary / HEAD_WEIGHTS))
    config = {"format": HEAD_FORMAT, "version": HEAD_VERSION, **metadata, "layer_config": head.layer_config,
              "target_vocab_size": head.vocabulary.target_size, "draft_vocab_size": head.vocabulary.size}
    (temporary / HEAD_CONFIG).write_text(json.dumps(config, indent=1, default=str) + "\n")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        os.replace(folder, old)
        os.replace(temporary, folder)
        for child in old.iterdir():
            child.unlink()
        old.rmdir()
    else:
        os.replace(temporary, folder)
    return folder


def load_feature_head(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                      ) -> tuple[FeatureHead, dict[str, Any]]:
    """A head from its folder, in eval mode, and its configuration."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_head_config(path)
    weights = Path(path) / HEAD_WEIGHTS
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as error:
        raise InputError(f"cannot read the feature head's weights: {error}", path=weights) from None
    if "draft_to_target" not in state:
        raise InputError("no draft_to_target (the draft vocabulary's map)", path=weights, field="draft_to_target")
    vocabulary = DraftVocabulary(state["draft_to_target"].numpy().astype(np.int64), config["target_vocab_size"])
    if vocabulary.size != config["draft_vocab_size"]:
        raise InputError(f"draft_to_target holds {vocabulary.size} tokens, the configuration says "
                         f"{config['draft_vocab_size']}", path=weights, field="draft_to_target")
    head = FeatureHead(config["layer_config"], vocabulary)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"weights do not fit the configuration: {first}", path=weights) from None
    return head.to(device=device, dtype=dtype).eval(), config


class FeatureHeadDrafter(Drafter):
    """Drafting with a :class:`FeatureHead` over the target's verified hidden states.

    The head's KV cache holds the pairs whose feature is the target's own (every committed token
    but the last); drafted pairs are cropped after each proposal, and the next proposal first
    encodes the pairs the target has verified since, in one pass.

    Parameters
    ----------
    head : FeatureHead
    embeddings : torch.nn.Embedding
        The target's input embeddings.
    """

    drafter_type: ClassVar[str] = "feature-head"
    needs_target_features: ClassVar[bool] = True

    def __init__(self, head: FeatureHead, embeddings: torch.nn.Module, options: dict[str, Any] | None = None):
        from transformers import DynamicCache

        self.head = head
        self.embeddings = embeddings
        self._options = dict(options or {})
        parameter = next(head.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._cache_class = DynamicCache
        self.vocab_size = head.vocabulary.target_size
        self.reset()

    def reset(self) -> None:
        """Forget the sequence."""
        self.cache = self._cache_class(config=self.head.layer.config)
        self.encoded = 0  # pairs in the head's cache
        self.features: list[torch.Tensor] = []
        self.n_features = 0

    def prefill(self, tokens: list[int], target_features: torch.Tensor | None = None) -> None:
        """Take the target's features of the prompt (all tokens but the last)."""
        if target_features is not None and len(target_features):
            self.features.append(target_features.to(self.device, self.dtype))
            self.n_features += len(target_features)

    def accept(self, tokens: list[int], target_features: torch.Tensor | None = None) -> None:
        """Take the target's features of the tokens it verified and kept."""
        self.prefill(tokens, target_features)

    def _step(self, features: torch.Tensor, tokens: list[int], start: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([tokens], device=self.device)
        positions = torch.arange(start, start + len(tokens), device=self.device)[None]
        predicted, logits = self.head(features[None], self.embeddings(ids).to(self.dtype), cache=self.cache,
                                      position_ids=positions)
        return predicted[0, -1], logits[0, -1]

    @torch.inference_mode()
    def propose(self, tokens: list[int], n: int, warp: Any, generator: torch.Generator | None) -> Draft:
        """Draft up to ``n`` tokens after ``tokens`` from the head's warped draft-vocabulary distribution."""
        length = len(tokens)
        if self.n_features != length - 1:
            raise RuntimeError(f"the head holds {self.n_features} target features for {length} tokens "
                               f"(needs {length - 1}): the loop must pass every verified token's hidden state")
        if n < 1 or length < 2:
            return Draft([])
        if len(self.features) > 1:
            self.features = [torch.cat(self.features)]
        features = self.features[0]
        # The true pairs not yet encoded: (f_i, t_{i+1}) for i in [encoded, length - 1).
        feature, row = self._step(features[self.encoded : length - 1], tokens[self.encoded + 1 : length],
                                  self.encoded)
        self.encoded = length - 1
        draft_to_target: torch.Tensor = self.head.draft_to_target  # type: ignore[assignment]
        draft: list[int] = []
        rows = []
        for index in range(n):
            full = torch.full((self.vocab_size,), float("-inf"), device=self.device, dtype=torch.float32)
            full[draft_to_target] = row.float()
            rows.append(full)
            if warp.greedy:
                token = int(draft_to_target[int(row.argmax())])
            else:
                token = int(torch.multinomial(warp.probs(full), 1, generator=generator))
            draft.append(token)
            if index + 1 < n:
                feature, row = self._step(feature[None], [token], length - 1 + index)
        if n > 1:  # transformers 5: crop takes the count of tokens to remove, negative
            self.cache.crop(-(n - 1))
        return Draft(draft, torch.stack(rows))

    def options(self) -> dict[str, Any]:
        """The method and the head's provenance."""
        return {"method": "feature-head", **self._options}

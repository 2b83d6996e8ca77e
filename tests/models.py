"""Small real models built locally for the collector tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int, seed: int, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    """A randomly initialised Llama, deterministic in ``seed``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=False,
        eos_token_id=None, bos_token_id=None, pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # Sharper logits than the default init, so distributions are far from uniform.
        model.lm_head.weight.mul_(40.0)
    return model


def save_tiny_drafter(directory: Path, tokenizer, seed: int, vocab_size: int | None = None) -> Path:
    """A tiny random Llama with ``tokenizer`` saved as a local model directory."""
    model = tiny_llama(vocab_size or len(tokenizer), seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory

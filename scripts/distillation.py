"""Distillation pieces shared by the drafter-training scripts of both reference experiments.

A drafter (the target's first layers with the target's frozen embeddings and head) learns the
target's final hidden state (mean squared error) and the target's top-k next-token distribution
(KL divergence over the same k tokens), the EAGLE-style loss of the first experiment. Teacher
targets come from the target itself: ``greedy_teacher`` generates a batch of completions and
keeps the targets of every position in the same pass (prefill, then one cached step per new
token); ``teacher_targets`` takes them for fixed sequences in one batched forward pass.

``precision="bfloat16"`` runs the target's teacher passes under autocast: on CPUs with AMX or
AVX-512 BF16 about 3x faster than ``"float32"`` (the precision behind the shipped drafters). The
drafters always train in float32 (autocast did not make their steps faster here).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path

import torch

TOP_K = 32
PRECISIONS = ("float32", "bfloat16")


def autocast(model, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bfloat16 on the model's device when ``precision`` is ``"bfloat16"``; else nothing."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _cache_argument(model) -> str:
    """``cache`` (transformers 5) or ``past_key_values`` (earlier): the name ``model.forward`` takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _targets(target, hidden: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden state (float16), top-k token ids (int32) and logits (float16) for ``hidden`` (n, h)."""
    top = target.lm_head(hidden).topk(top_k, dim=-1)
    return hidden.half(), top.indices.int(), top.values.half()


@torch.inference_mode()
def greedy_teacher(target, prompts: list[list[int]], eos_id: int, max_new_tokens: int, top_k: int = TOP_K,
                   precision: str = "float32") -> list[dict]:
    """Greedy completions of ``prompts`` with the target's targets at every position, in one pass.

    The prompts are left-padded into one batch; the prefill gives the prompt positions' final
    hidden states (after the norm) and top-k logits, then every new token is fed once through the
    key-value cache, giving its own. A completion ends after its first ``eos_id`` (kept) or after
    ``max_new_tokens``; finished rows are fed ``eos_id`` until the whole batch ends, as
    ``generate`` does with ``pad_token_id=eos_id``. Returns, per prompt, the record
    ``teacher_targets`` would give for prompt + completion, plus ``prompt_len`` and ``output_len``.
    """
    from transformers import DynamicCache

    width = max(map(len, prompts))
    ids = torch.tensor([[eos_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = {_cache_argument(target.model): DynamicCache(), "use_cache": True}
    with autocast(target, precision):
        hidden = target.model(input_ids=ids, attention_mask=mask, position_ids=positions, **cache).last_hidden_state
        parts = [[_targets(target, hidden[row, width - len(p):], top_k)] for row, p in enumerate(prompts)]
        completions: list[list[int]] = [[] for _ in prompts]
        finished = torch.zeros(len(prompts), dtype=torch.bool)
        following = torch.stack([part[0][1][-1, 0] for part in parts]).long()
        for _ in range(max_new_tokens):
            following = torch.where(finished, eos_id, following)
            mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            hidden = target.model(input_ids=following[:, None], attention_mask=mask, position_ids=positions,
                                  **cache).last_hidden_state[:, 0]
            step = _targets(target, hidden, top_k)
            for row in torch.nonzero(~finished).flatten().tolist():
                completions[row].append(int(following[row]))
                parts[row].append(tuple(t[row:row + 1] for t in step))
            finished |= following == eos_id
            if bool(finished.all()):
                break
            following = step[1][:, 0].long()
    records = []
    for prompt, completion, part in zip(prompts, completions, parts, strict=True):
        hidden_states, top_ids, top_logits = (torch.cat(column) for column in zip(*part, strict=True))
        records.append({"ids": torch.tensor(prompt + completion), "hidden": hidden_states, "top_ids": top_ids,
                        "top_logits": top_logits, "prompt_len": len(prompt), "output_len": len(completion)})
    return records


@torch.inference_mode()
def teacher_targets(target, sequences: list[list[int]], pad_id: int, top_k: int = TOP_K,
                    precision: str = "float32") -> list[dict]:
    """Final hidden state (after the norm, float16) and top-k logits of the target at every position.

    One forward pass for the whole batch (right padding does not change earlier positions under
    causal attention).
    """
    width = max(map(len, sequences))
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    with autocast(target, precision):
        hidden = target.model(input_ids=ids, attention_mask=mask).last_hidden_state
        records = []
        for row, s in enumerate(sequences):
            hidden_states, top_ids, top_logits = _targets(target, hidden[row, : len(s)], top_k)
            records.append({"ids": torch.tensor(s), "hidden": hidden_states, "top_ids": top_ids,
                            "top_logits": top_logits})
    return records


def drafter_hidden(drafter, ids: torch.Tensor) -> torch.Tensor:
    """Final hidden state (after the norm) of the drafter for a batch, shape (batch, n, hidden)."""
    return drafter.model(input_ids=ids).last_hidden_state


@torch.no_grad()
def top1(drafter, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The drafter's most likely next token at positions ``start`` onwards of one sequence ``ids`` (n,)."""
    return drafter.lm_head(drafter_hidden(drafter, ids[None])[0, start:]).argmax(-1)


def distillation_loss(drafter, records: list[dict]) -> torch.Tensor:
    """Mean over equal-length records of MSE to the target's hidden state plus top-k KL."""
    ids = torch.stack([r["ids"] for r in records])
    hidden = drafter_hidden(drafter, ids)
    target_hidden = torch.stack([r["hidden"].float() for r in records])
    top_ids = torch.stack([r["top_ids"] for r in records]).long()
    mse = torch.nn.functional.mse_loss(hidden, target_hidden)
    head = drafter.lm_head.weight[top_ids]  # (b, n, k, hidden)
    student = torch.einsum("bnh,bnkh->bnk", hidden, head)
    teacher = torch.log_softmax(torch.stack([r["top_logits"].float() for r in records]), -1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(student, -1).flatten(0, 1), teacher.flatten(0, 1),
                                    log_target=True, reduction="batchmean")
    return mse + kl


@torch.no_grad()
def agreement_by_position(drafter, records: list[dict], edges: list[int]) -> list[float]:
    """Top-1 agreement of the drafter with the target per position bin ``[edges[i], edges[i+1])``.

    Under greedy decoding this is the acceptance of a drafted token whose prefix was accepted.
    """
    hits = torch.zeros(len(edges) - 1)
    counts = torch.zeros(len(edges) - 1)
    for record in records:
        predicted = top1(drafter, record["ids"])
        agree = (predicted == record["top_ids"][:, 0].long()).float()
        for b in range(len(edges) - 1):
            part = agree[edges[b]: edges[b + 1]]
            hits[b] += part.sum()
            counts[b] += len(part)
    return (hits / counts.clamp(min=1)).tolist()


def trainable_layers(drafter) -> list:
    """Freeze the embeddings and head; return the decoder layers' and final norm's parameters (trained)."""
    for parameter in drafter.parameters():
        parameter.requires_grad = False
    trainable = [p for layer in drafter.model.layers for p in layer.parameters()] + list(
        drafter.model.norm.parameters())
    for parameter in trainable:
        parameter.requires_grad = True
    return trainable


def optimiser(trainable: list, peak_lr: float, total_steps: int):
    """AdamW (weight decay 0.01) with a 5% linear warm-up then a cosine decay over ``total_steps``."""
    optimizer = torch.optim.AdamW(trainable, lr=peak_lr, weight_decay=0.01, fused=True)
    warmup = max(1, total_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(s, total_steps) / total_steps))))
    return optimizer, schedule


def training_step(drafter, optimizer, schedule, trainable: list, records: list[dict]) -> float:
    """One optimiser step on ``records`` (gradient norm clipped at 1); returns the loss."""
    loss = distillation_loss(drafter, records)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    schedule.step()
    return float(loss.detach())


def save_drafter(drafter, tokenizer, folder: Path) -> None:
    """Save a model directory whole or not at all (written beside it, then renamed into place)."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    drafter.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)

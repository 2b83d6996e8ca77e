"""Distillation pieces shared by the drafter-training scripts of both reference experiments.

A drafter (the target's first layers with the target's frozen embeddings and head) learns the
target's final hidden state (mean squared error) and the target's top-k next-token distribution
(KL divergence over the same k tokens), the EAGLE-style loss of the first experiment. Teacher
targets come from one batched forward pass of the target (right-padded, with an attention mask).
"""

from __future__ import annotations

import math

import torch

TOP_K = 32


@torch.inference_mode()
def teacher_targets(target, sequences: list[list[int]], pad_id: int, top_k: int = TOP_K) -> list[dict]:
    """Final hidden state (after the norm, float16) and top-k logits of the target at every position.

    One forward pass for the whole batch (right padding does not change earlier positions under
    causal attention).
    """
    width = max(map(len, sequences))
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    output = target(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    top = output.logits.topk(top_k, dim=-1)
    hidden = output.hidden_states[-1]
    return [{"ids": torch.tensor(s), "hidden": hidden[row, : len(s)].half(),
             "top_ids": top.indices[row, : len(s)].int(), "top_logits": top.values[row, : len(s)].half()}
            for row, s in enumerate(sequences)]


def drafter_hidden(drafter, ids: torch.Tensor) -> torch.Tensor:
    """Final hidden state (after the norm) of the drafter for a batch, shape (batch, n, hidden)."""
    return drafter.model(input_ids=ids).last_hidden_state


def distillation_loss(drafter, records: list[dict]) -> torch.Tensor:
    """Mean over equal-length records of MSE to the target's hidden state plus top-k KL."""
    ids = torch.stack([r["ids"] for r in records])
    hidden = drafter_hidden(drafter, ids)
    target_hidden = torch.stack([r["hidden"] for r in records]).float()
    top_ids = torch.stack([r["top_ids"] for r in records]).long()
    mse = torch.nn.functional.mse_loss(hidden, target_hidden)
    head = drafter.lm_head.weight[top_ids]  # (b, n, k, hidden)
    student = torch.einsum("bnh,bnkh->bnk", hidden, head)
    teacher = torch.log_softmax(torch.stack([r["top_logits"] for r in records]).float(), -1)
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
        predicted = drafter.lm_head(drafter_hidden(drafter, record["ids"][None])[0]).argmax(-1)
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
    optimizer = torch.optim.AdamW(trainable, lr=peak_lr, weight_decay=0.01)
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

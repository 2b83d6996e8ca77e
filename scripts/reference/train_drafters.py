"""Distil small drafters from the SmolLM2-135M-Instruct target on CPU, seeded.

Stages (each cached, so a rerun resumes):

1. teacher: greedy completions (<= 96 new tokens) of every train-split prompt of every task,
   16 prompts at a time, then one batched target forward pass over prompt + completion keeping,
   at every position, the target's final hidden state (after its norm) and its top-32 logits;
   cached per task (``teacher-<task>.pt``), so an interrupted stage resumes.
2. generic: the target's first 4 decoder layers with its (frozen) embeddings, norm and head;
   layers and norm trained on the mixture of all tasks with an EAGLE-style loss: mean squared
   error to the target's final hidden state plus the KL divergence of the target's top-32
   distribution to the drafter's distribution over the same 32 tokens. AdamW, cosine schedule.
3. finetuned-code and finetuned-docsum: the generic drafter trained further on one task only.
   The docsum train split is small (108 sequences) and overfits within a few epochs at the code
   drafter's rate, so its checkpoint is the epoch with the best validation agreement on its own
   task (early stopping on the validation split; the held-out split is never looked at).

10% of the train prompts are kept for validation (never the held-out split used for traces);
after every epoch the drafter's top-1 agreement with the target on validation completions
(the greedy acceptance of a first drafted token) is recorded. Writes model directories to
``$SPECSIM_CACHE/reference/drafters/<name>`` and cards with loss curves and agreement to
``data/drafters/<name>.json``. Run: ``python scripts/reference/train_drafters.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from specsim.collect.models import cache_dir, load_model, truncate_layers
from specsim.collect.prompts import encode_prompt, read_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distillation import (  # noqa: E402
    drafter_hidden,
    optimiser,
    teacher_targets,
    trainable_layers,
    training_step,
)

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("code", "docsum", "explain-short", "explain-long", "qa")
WORK = cache_dir() / "reference"
CARDS = ROOT / "data" / "drafters"
SEED = 7
LAYERS = 4
TOP_K = 32
MAX_NEW_TOKENS = 96
PLAN = {  # name: (start from, tasks, epochs, peak learning rate, keep: "last" or "best" epoch)
    "generic-4l": (None, TASKS, 4, 5e-4, "last"),
    "finetuned-code": ("generic-4l", ("code",), 10, 5e-4, "last"),
    "finetuned-docsum": ("generic-4l", ("docsum",), 8, 5e-4, "best"),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def teacher_data(target) -> list[dict]:
    """Teacher completions and targets of every task's train prompts, cached per task (resumable).

    Generation runs 16 prompts at a time (left padding); the targets (hidden states, top-k
    logits) come from one batched forward pass per 16 sequences (right padding).
    """
    tokenizer, model = target.tokenizer, target.model
    eos = tokenizer.eos_token_id
    records = []
    for task in TASKS:
        path = WORK / f"teacher-{task}.pt"
        if path.exists():
            records += torch.load(path, weights_only=False)
            continue
        prompts = [p for p in read_prompts(ROOT / "data" / "prompts" / f"{task}.jsonl") if p.extra["split"] == "train"]
        encoded = [encode_prompt(tokenizer, p) for p in prompts]
        task_records = []
        for start in range(0, len(encoded), 16):
            batch = encoded[start : start + 16]
            width = max(map(len, batch))
            ids = torch.tensor([[eos] * (width - len(b)) + b for b in batch])
            mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch])
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                                     do_sample=False, pad_token_id=eos)
            sequences, completions = [], []
            for row, prompt_ids in enumerate(batch):
                completion = out[row, width:].tolist()
                if eos in completion:
                    completion = completion[: completion.index(eos) + 1]
                completions.append(completion)
                sequences.append(prompt_ids + completion)
            for row, targets in enumerate(teacher_targets(model, sequences, eos, TOP_K)):
                task_records.append({"task": task, "prompt_id": prompts[start + row].prompt_id,
                                     "prompt_len": len(batch[row]), "output_len": len(completions[row]), **targets})
            log(f"teacher {task}: {min(start + 16, len(encoded))}/{len(encoded)}")
        WORK.mkdir(parents=True, exist_ok=True)
        torch.save(task_records, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        records += task_records
    return records


def split(records: list[dict]) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(SEED)
    validation = set()
    for task in TASKS:
        ids = sorted(r["prompt_id"] for r in records if r["task"] == task)
        validation.update(rng.choice(ids, size=max(1, len(ids) // 10), replace=False).tolist())
    train = [r for r in records if r["prompt_id"] not in validation]
    return train, [r for r in records if r["prompt_id"] in validation]


@torch.no_grad()
def agreement(drafter, records: list[dict]) -> dict[str, float]:
    """Top-1 agreement with the target on completion positions, per task."""
    hits: dict[str, list[int]] = {}
    for record in records:
        hidden = drafter_hidden(drafter, record["ids"][None])[0]
        start = record["prompt_len"] - 1
        predicted = drafter.lm_head(hidden[start:-1]).argmax(-1)
        target = record["top_ids"][start:-1, 0].long()
        counts = hits.setdefault(record["task"], [0, 0])
        counts[0] += int((predicted == target).sum())
        counts[1] += len(target)
    return {task: a / max(n, 1) for task, (a, n) in hits.items()}


def train(name: str, base, records: list[dict], validation: list[dict]) -> dict:
    start_from, tasks, epochs, peak_lr, keep = PLAN[name]
    drafter = truncate_layers(base, LAYERS) if start_from is None else load_drafter(start_from)
    trainable = trainable_layers(drafter)
    data = [r for r in records if r["task"] in tasks]
    optimizer, schedule = optimiser(trainable, peak_lr, epochs * len(data))
    rng = np.random.default_rng(SEED)
    card = {"name": name, "start_from": start_from or f"first {LAYERS} layers of the target", "tasks": list(tasks),
            "epochs": epochs, "peak_lr": peak_lr, "optimizer": "AdamW (weight decay 0.01), warm-up then cosine",
            "loss": "MSE to target final hidden state + KL of target top-32 distribution", "seed": SEED,
            "train_sequences": len(data), "train_positions": int(sum(len(r["ids"]) for r in data)),
            "validation_agreement": [agreement(drafter.eval(), validation)], "epoch_loss": []}
    log(f"{name}: start agreement {card['validation_agreement'][0]}")

    def own_task(agreement_by_task: dict[str, float]) -> float:
        return float(np.mean([agreement_by_task[t] for t in tasks]))

    best_score, best_epoch, best_state = -1.0, 0, None
    for epoch in range(epochs):
        drafter.train()
        losses = []
        for index in rng.permutation(len(data)):
            losses.append(training_step(drafter, optimizer, schedule, trainable, [data[index]]))
        card["epoch_loss"].append(float(np.mean(losses)))
        card["validation_agreement"].append(agreement(drafter.eval(), validation))
        log(f"{name}: epoch {epoch + 1} loss {card['epoch_loss'][-1]:.4f} agreement {card['validation_agreement'][-1]}")
        if keep == "best" and own_task(card["validation_agreement"][-1]) > best_score:
            best_score, best_epoch = own_task(card["validation_agreement"][-1]), epoch + 1
            best_state = {k: v.detach().clone() for k, v in drafter.state_dict().items()}
    if best_state is not None:
        drafter.load_state_dict(best_state)
        log(f"{name}: keeping epoch {best_epoch} (own-task validation agreement {best_score:.4f})")
    card["kept_epoch"] = best_epoch if keep == "best" else epochs
    folder = WORK / "drafters" / name
    drafter.save_pretrained(folder)
    base_tokenizer.save_pretrained(folder)
    card["training_lengths"] = [{"task": r["task"], "prompt_len": r["prompt_len"], "output_len": r["output_len"]}
                                for r in data]
    CARDS.mkdir(parents=True, exist_ok=True)
    (CARDS / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def load_drafter(name: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(WORK / "drafters" / name, dtype=torch.float32)


if __name__ == "__main__":
    torch.manual_seed(SEED)
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    target = load_model("smollm2")
    base_tokenizer = target.tokenizer
    records = teacher_data(target)
    train_records, validation_records = split(records)
    log(f"teacher data: {len(records)} sequences, {sum(len(r['ids']) for r in records)} positions")
    for drafter_name in PLAN:
        if not (WORK / "drafters" / drafter_name / "config.json").exists():
            train(drafter_name, target.model, train_records, validation_records)

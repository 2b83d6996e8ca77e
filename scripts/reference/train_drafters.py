"""Distil small drafters from the SmolLM2-135M-Instruct target on CPU, seeded.

Stages (each cached, so a rerun resumes):

1. teacher: the target's greedy completion (<= 96 new tokens) of every train-split prompt of every
   task, and at every position of prompt + completion the target's final hidden state (after its
   norm) and its top-32 logits; cached per task (``teacher-<source>-<precision>-<task>.pt``), so an
   interrupted stage resumes. ``--teacher shipped`` (default) reads the completions from
   ``data/drafters/teacher_completions.parquet`` (46k tokens, the float32 target's from the
   batched teacher stage of an earlier rebuild) and needs one batched forward pass over the
   sequences, shortest first; ``--teacher generate`` generates them again with
   ``distillation.greedy_teacher`` (16 prompts at a time, shortest first; the targets come from
   the same pass) and ``--write-completions`` exports them in the shipped file's format.
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
``$SPECSIM_CACHE/cards/<name>.json`` (``--cards data/drafters`` replaces the shipped drafters'
cards). ``--recipe quick`` (default) trains fewer epochs at higher rates than ``--recipe full``,
the recipe behind the shipped traces (``RECIPES``);
``--precision bfloat16`` (default) runs the teacher passes under bfloat16 autocast, ``float32`` as
behind the shipped drafters (the drafters train in float32 either way).
Run: ``python scripts/reference/train_drafters.py`` (both experiments' drafters: ``make drafters``).
"""

from __future__ import annotations

import argparse
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
    PRECISIONS,
    greedy_teacher,
    optimiser,
    save_drafter,
    teacher_targets,
    top1,
    trainable_layers,
    training_step,
)

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("code", "docsum", "explain-short", "explain-long", "qa")
WORK = cache_dir() / "reference"
CARDS = cache_dir() / "cards"
COMPLETIONS = ROOT / "data" / "drafters" / "teacher_completions.parquet"
#: Sequences per teacher forward pass: at most this many padded tokens (shortest sequences first).
TEACHER_BATCH_TOKENS = 8192
SEED = 7
LAYERS = 4
TOP_K = 32
MAX_NEW_TOKENS = 96
PLAN = {  # name: (start from, tasks, keep: "last" or "best" epoch)
    "generic-4l": (None, TASKS, "last"),
    "finetuned-code": ("generic-4l", ("code",), "last"),
    "finetuned-docsum": ("generic-4l", ("docsum",), "best"),
}
#: (epochs, peak learning rate) per drafter. "full" is the recipe behind the shipped traces;
#: "quick" takes half the epochs or fewer at a higher rate, so that both experiments' drafters are
#: rebuilt in about 20 minutes on a 2-core CPU, with validation agreement close to "full"'s
#: (data/README.md has both measured).
RECIPES = {
    "full": {"generic-4l": (4, 5e-4), "finetuned-code": (10, 5e-4), "finetuned-docsum": (8, 5e-4)},
    "quick": {"generic-4l": (2, 1.5e-3), "finetuned-code": (6, 1.5e-3), "finetuned-docsum": (2, 1e-3)},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def length_batches(lengths: list[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` in batches, shortest first, each at most ``max_tokens`` padded tokens."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        batch = batches[-1] if batches else None
        if batch is None or (len(batch) + 1) * lengths[index] > max_tokens or len(batch) == max_rows:
            batches.append([index])
        else:
            batch.append(index)
    return batches


def read_completions(path: Path = COMPLETIONS) -> dict[tuple[str, str], dict]:
    """Shipped teacher completions by (task, prompt_id): ``prompt_len`` and ``completion`` token ids."""
    import pyarrow.parquet as pq

    return {(row["task"], row["prompt_id"]): row for row in pq.read_table(path).to_pylist()}


def write_completions(records: list[dict], path: Path) -> None:
    """The teacher completions of ``records`` as Parquet (task, prompt_id, prompt_len, completion)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(records, key=lambda r: (r["task"], r["prompt_id"]))
    table = pa.table({"task": [r["task"] for r in rows], "prompt_id": [r["prompt_id"] for r in rows],
                      "prompt_len": pa.array([r["prompt_len"] for r in rows], pa.int32()),
                      "completion": pa.array([r["ids"][r["prompt_len"]:].tolist() for r in rows],
                                             pa.list_(pa.int32()))})
    temporary = path.with_suffix(".tmp")
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, path)


def teacher_data(target, source: str, precision: str) -> list[dict]:
    """Teacher completions and targets of every task's train prompts, cached per task (resumable).

    ``source="shipped"``: the completions of ``COMPLETIONS``, targets from one forward pass per
    batch of at most ``TEACHER_BATCH_TOKENS`` padded tokens. ``source="generate"``: greedy
    completions and their targets from ``greedy_teacher``, 16 prompts at a time. Either way the
    sequences go shortest first, so a batch pads little.
    """
    tokenizer, model = target.tokenizer, target.model
    eos = tokenizer.eos_token_id
    shipped = read_completions() if source == "shipped" else {}
    records = []
    for task in TASKS:
        path = WORK / f"teacher-{source}-{precision}-{task}.pt"
        if path.exists():
            records += torch.load(path, weights_only=False)
            continue
        started = time.perf_counter()
        prompts = [p for p in read_prompts(ROOT / "data" / "prompts" / f"{task}.jsonl") if p.extra["split"] == "train"]
        encoded = [encode_prompt(tokenizer, p) for p in prompts]
        by_index: dict[int, dict] = {}
        if source == "shipped":
            sequences = []
            for prompt, ids in zip(prompts, encoded, strict=True):
                row = shipped.get((task, prompt.prompt_id))
                if row is None or row["prompt_len"] != len(ids):
                    print(f"{COMPLETIONS}: no completion for {task}/{prompt.prompt_id} with a {len(ids)}-token "
                          "prompt (the prompts or the tokenizer changed); rerun with --teacher generate",
                          file=sys.stderr)
                    raise SystemExit(2)
                sequences.append(ids + row["completion"])
            batches = length_batches([len(s) for s in sequences], TEACHER_BATCH_TOKENS)
        else:
            batches = length_batches([len(e) for e in encoded], 10**9, max_rows=16)
        for batch in batches:
            if source == "shipped":
                targets = teacher_targets(model, [sequences[i] for i in batch], eos, TOP_K, precision)
                for i, record in zip(batch, targets, strict=True):
                    record.update(prompt_len=len(encoded[i]), output_len=len(sequences[i]) - len(encoded[i]))
            else:
                targets = greedy_teacher(model, [encoded[i] for i in batch], eos, MAX_NEW_TOKENS, TOP_K, precision)
            for i, record in zip(batch, targets, strict=True):
                by_index[i] = {"task": task, "prompt_id": prompts[i].prompt_id, **record}
            log(f"teacher {task}: {len(by_index)}/{len(encoded)}")
        task_records = [by_index[i] for i in sorted(by_index)]  # the prompts file's order
        WORK.mkdir(parents=True, exist_ok=True)
        torch.save(task_records, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        log(f"teacher {task}: {time.perf_counter() - started:.0f} s")
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
def agreement(drafter, records: list[dict], tasks: tuple[str, ...] = TASKS) -> dict[str, float]:
    """Top-1 agreement with the target on completion positions, per task (of ``tasks``)."""
    hits: dict[str, list[int]] = {}
    for record in (r for r in records if r["task"] in tasks):
        start = record["prompt_len"] - 1
        predicted = top1(drafter, record["ids"], start)[:-1]
        target = record["top_ids"][start:-1, 0].long()
        counts = hits.setdefault(record["task"], [0, 0])
        counts[0] += int((predicted == target).sum())
        counts[1] += len(target)
    return {task: a / max(n, 1) for task, (a, n) in hits.items()}


def train(name: str, base, records: list[dict], validation: list[dict], recipe: str, labels: dict,
          cards: Path) -> dict:
    """Train one drafter of ``PLAN`` for its ``RECIPES[recipe]`` epochs; save it and its card.

    Validation agreement is measured on every task before training and after the last (and the
    kept) epoch; after the other epochs on the drafter's own tasks (all of them for generic-4l).
    """
    start_from, tasks, keep = PLAN[name]
    epochs, peak_lr = RECIPES[recipe][name]
    drafter = truncate_layers(base, LAYERS) if start_from is None else load_drafter(start_from)
    trainable = trainable_layers(drafter)
    data = [r for r in records if r["task"] in tasks]
    optimizer, schedule = optimiser(trainable, peak_lr, epochs * len(data))
    rng = np.random.default_rng(SEED)
    started = time.perf_counter()
    card = {"name": name, "start_from": start_from or f"first {LAYERS} layers of the target", "tasks": list(tasks),
            "epochs": epochs, "peak_lr": peak_lr, "optimizer": "AdamW (weight decay 0.01), warm-up then cosine",
            "loss": "MSE to target final hidden state + KL of target top-32 distribution", "seed": SEED,
            "train_sequences": len(data), "train_positions": int(sum(len(r["ids"]) for r in data)),
            "recipe": recipe, **labels, "validation_agreement": [agreement(drafter.eval(), validation)],
            "epoch_loss": []}
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
        card["validation_agreement"].append(agreement(drafter.eval(), validation,
                                                      TASKS if epoch + 1 == epochs else tasks))
        log(f"{name}: epoch {epoch + 1} loss {card['epoch_loss'][-1]:.4f} agreement {card['validation_agreement'][-1]}")
        if keep == "best" and own_task(card["validation_agreement"][-1]) > best_score:
            best_score, best_epoch = own_task(card["validation_agreement"][-1]), epoch + 1
            best_state = {k: v.detach().clone() for k, v in drafter.state_dict().items()}
    if best_state is not None:
        drafter.load_state_dict(best_state)
        card["validation_agreement"][best_epoch] = agreement(drafter.eval(), validation)
        log(f"{name}: keeping epoch {best_epoch} (own-task validation agreement {best_score:.4f})")
    card["kept_epoch"] = best_epoch if keep == "best" else epochs
    card["train_s"] = round(time.perf_counter() - started, 1)
    save_drafter(drafter, base_tokenizer, WORK / "drafters" / name)
    card["training_lengths"] = [{"task": r["task"], "prompt_len": r["prompt_len"], "output_len": r["output_len"]}
                                for r in data]
    cards.mkdir(parents=True, exist_ok=True)
    (cards / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def load_drafter(name: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(WORK / "drafters" / name, dtype=torch.float32)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", choices=("shipped", "generate"), default="shipped",
                        help="completions from data/drafters/teacher_completions.parquet or generated again")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="quick",
                        help="epochs per drafter: quick (about 20 min for both experiments) or full (the "
                             "recipe behind the shipped traces)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bfloat16",
                        help="teacher passes under bfloat16 autocast, or in float32")
    parser.add_argument("--cards", type=Path, default=CARDS, help="folder for the drafter cards (%(default)s)")
    parser.add_argument("--only", nargs="+", choices=tuple(PLAN), metavar="NAME",
                        help=f"train only these drafters ({', '.join(PLAN)}; default: all; a fine-tuned one needs "
                             "generic-4l). Each is seeded as in a full run only if the drafters before it are trained "
                             "too, or it is first")
    parser.add_argument("--write-completions", type=Path, metavar="PATH",
                        help="after the teacher stage, write its completions as Parquet (the shipped format)")
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    torch.manual_seed(SEED)
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    began = time.perf_counter()
    target = load_model("smollm2")
    base_tokenizer = target.tokenizer
    records = teacher_data(target, options.teacher, options.precision)
    if options.write_completions:
        write_completions(records, options.write_completions)
    train_records, validation_records = split(records)
    log(f"teacher data: {len(records)} sequences, {sum(len(r['ids']) for r in records)} positions "
        f"({time.perf_counter() - began:.0f} s so far)")
    labels = {"teacher": (f"completions of {COMPLETIONS.relative_to(ROOT)}" if options.teacher == "shipped"
                          else "completions generated by the training script"),
              "teacher_precision": options.precision}
    for drafter_name in PLAN:
        if options.only and drafter_name not in options.only:
            continue
        if (WORK / "drafters" / drafter_name / "config.json").exists():
            log(f"{drafter_name}: already in {WORK / 'drafters'}, kept (delete it to train it again)")
        else:
            train(drafter_name, target.model, train_records, validation_records, options.recipe, labels,
                  options.cards)
    log(f"first experiment's drafters ready in {WORK / 'drafters'} ({time.perf_counter() - began:.0f} s)")

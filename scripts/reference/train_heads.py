"""Train the reference feature heads (EAGLE-style, draft vocabulary) on CPU, seeded and resumable.

Stages (each cached under ``$SPECSIM_CACHE/reference``, so a rerun resumes):

1. features: the target's final hidden states (after its norm) at every position of every
   task's train-split prompt + teacher completion: the teacher stage of ``train_drafters.py``
   (the same cached files, ``teacher-shipped-<precision>-<task>.pt``), one batched pass.
2. vocabulary: the ``--draft-vocab`` (8,192) most frequent target tokens of the training
   sequences of all tasks (prompts and completions; end-of-sequence always kept). Coverage of
   the validation completions of every task, and of the shipped held-out outputs, news
   included, goes on the card.
3. generic head: from scratch on the mixture of all tasks. Loss after EAGLE: smooth L1 to the
   target's next feature plus the cross-entropy of the head's draft-vocabulary distribution
   to the target's distribution restricted to the draft vocabulary (renormalised), with
   uniform noise on the input features (EAGLE's robustness to its own drafted features). A
   second, unrolled pass feeds the head's own predicted features as inputs (a short form of
   EAGLE-3's training-time test), so that later draft indices are trained too. AdamW, warm-up
   then cosine; a checkpoint after every epoch (``--epochs`` resumes).
4. head-code, head-docsum: the generic head trained further on one task.

10% of the train prompts are kept for validation (``train_drafters.split``, the same split);
validation replays greedy speculative decoding on them at gamma 4 with the real drafter
(:class:`specsim.collect.feature_head.FeatureHeadDrafter`) and the cached target features:
acceptance by draft index and by context position, and tokens per step. Heads go to
``$SPECSIM_CACHE/reference/heads/<name>``, cards to ``--cards`` (default
``$SPECSIM_CACHE/cards``). Run: ``python scripts/reference/train_heads.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_drafters import CARDS, ROOT, SEED, TASKS, WORK, length_batches, log, split, teacher_data  # noqa: E402

from specsim.collect.decoding import Warp  # noqa: E402
from specsim.collect.feature_head import (  # noqa: E402
    DraftVocabulary,
    FeatureHead,
    FeatureHeadDrafter,
    head_layer_config,
    load_feature_head,
    save_feature_head,
)
from specsim.collect.models import load_model  # noqa: E402

HEADS = WORK / "heads"
#: name: (start from, tasks)
PLAN = {"head-generic": (None, TASKS), "head-code": ("head-generic", ("code",)),
        "head-docsum": ("head-generic", ("docsum",))}
#: (epochs, peak learning rate)
RECIPE = {"head-generic": (12, 1e-3), "head-code": (4, 3e-4), "head-docsum": (4, 3e-4)}
BATCH_TOKENS = 4096
NOISE = 0.2  # uniform noise on input features, in units of the features' root mean square
FEATURE_WEIGHT, TOKEN_WEIGHT, UNROLL_WEIGHT = 1.0, 1.0, 0.5
GAMMA = 4
POSITION_EDGES = (0, 128, 256, 512, 1024, 2048, 4096, 8192)


def draft_vocabulary(records: list[dict], size: int, target_size: int, eos: int) -> DraftVocabulary:
    counts = np.zeros(target_size)
    for record in records:
        np.add.at(counts, record["ids"].numpy(), 1)
    return DraftVocabulary.from_counts(counts, size, always=[eos])


def head_loss(head: FeatureHead, embeddings, records: list[dict], target_rows: torch.Tensor, rms: float,
              generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of a batch of sequences (right-padded) and its parts."""
    width = max(len(r["ids"]) for r in records)
    ids = torch.zeros(len(records), width, dtype=torch.long)
    features = torch.zeros(len(records), width, head.hidden_size)
    mask = torch.zeros(len(records), width)
    for row, record in enumerate(records):
        n = len(record["ids"])
        ids[row, :n], features[row, :n], mask[row, :n] = record["ids"], record["hidden"].float(), 1
    inputs, targets, pair_mask = features[:, :-1], features[:, 1:], mask[:, 1:]
    token_embeddings = embeddings(ids[:, 1:])
    attention = mask[:, 1:].long()
    noise = (torch.rand(inputs.shape, generator=generator) - 0.5) * NOISE * rms
    with torch.no_grad():
        teacher = torch.log_softmax(targets @ target_rows.T, dim=-1)  # restricted to the draft vocabulary
    weight = pair_mask / pair_mask.sum()

    def parts(predicted: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = torch.nn.functional.smooth_l1_loss(predicted, targets, reduction="none").mean(-1)
        token = -(teacher.exp() * torch.log_softmax(logits, -1)).sum(-1)
        return (feature * weight).sum(), (token * weight).sum()

    predicted, logits = head(inputs + noise, token_embeddings, attention_mask=attention)
    feature, token = parts(predicted, logits)
    # Unrolled: pair i reads the head's own prediction of f_i (from pair i - 1) instead of the target's.
    own = torch.cat([inputs[:, :1], predicted[:, :-1]], dim=1)
    predicted2, logits2 = head(own, token_embeddings, attention_mask=attention)
    feature2, token2 = parts(predicted2, logits2)
    loss = FEATURE_WEIGHT * feature + TOKEN_WEIGHT * token + UNROLL_WEIGHT * (FEATURE_WEIGHT * feature2
                                                                              + TOKEN_WEIGHT * token2)
    return loss, {"feature": float(feature), "token": float(token), "feature_unrolled": float(feature2),
                  "token_unrolled": float(token2)}


@torch.inference_mode()
def replay(head: FeatureHead, embeddings, records: list[dict], gamma: int = GAMMA) -> dict:
    """Greedy speculative decoding replayed on teacher sequences (the target's greedy outputs).

    Per draft index: drafted tokens evaluated and accepted; per step, tokens emitted (bonus
    included) and the context length; by task and by context-position bin.
    """
    drafter = FeatureHeadDrafter(head.eval(), embeddings)
    warp = Warp()
    by_task: dict[str, dict] = {}
    by_position = {"evaluated": np.zeros(len(POSITION_EDGES) - 1), "accepted": np.zeros(len(POSITION_EDGES) - 1)}
    for record in records:
        ids, hidden, start = record["ids"].tolist(), record["hidden"].float(), record["prompt_len"]
        stats = by_task.setdefault(record["task"], {"evaluated": np.zeros(gamma), "accepted": np.zeros(gamma),
                                                    "steps": 0, "emitted": 0})
        drafter.reset()
        tokens = ids[:start]
        drafter.prefill(tokens, hidden[: start - 1])
        while len(tokens) < len(ids):
            length = len(tokens)
            n = min(gamma, len(ids) - length)
            draft = drafter.propose(tokens, n, warp, None).tokens
            truth = ids[length : length + n]
            accepted = next((i for i, (a, b) in enumerate(zip(draft, truth, strict=True)) if a != b), n)
            emitted = ids[length : min(length + accepted + 1, len(ids))]
            stats["evaluated"][: min(accepted + 1, n)] += 1
            stats["accepted"][:accepted] += 1
            stats["steps"] += 1
            stats["emitted"] += len(emitted)
            for index in range(min(accepted + 1, n)):
                bin_ = np.searchsorted(POSITION_EDGES, length + index, side="right") - 1
                by_position["evaluated"][bin_] += 1
                by_position["accepted"][bin_] += index < accepted
            tokens = tokens + emitted
            drafter.accept(tokens, hidden[length - 1 : len(tokens) - 1])

    def summary(stats: dict) -> dict:
        rates = stats["accepted"] / np.maximum(stats["evaluated"], 1)
        return {"acceptance_by_index": np.round(rates, 4).tolist(), "evaluated_by_index": stats["evaluated"].tolist(),
                "tokens_per_step": round(stats["emitted"] / max(stats["steps"], 1), 4),
                "drafted_accepted": round(float(stats["accepted"].sum() / max(stats["evaluated"].sum(), 1)), 4)}

    total = {key: sum(s[key] for s in by_task.values()) for key in ("evaluated", "accepted", "steps", "emitted")}
    positions = [{"context_from": POSITION_EDGES[i], "context_to": POSITION_EDGES[i + 1],
                  "evaluated": int(by_position["evaluated"][i]),
                  "acceptance": (round(float(by_position["accepted"][i] / by_position["evaluated"][i]), 4)
                                 if by_position["evaluated"][i] else None)}
                 for i in range(len(POSITION_EDGES) - 1) if by_position["evaluated"][i]]
    return {"gamma": gamma, "all": summary(total), "by_task": {t: summary(s) for t, s in sorted(by_task.items())},
            "by_context_position": positions}


def fit_head(name: str, head: FeatureHead, embeddings, target_rows: torch.Tensor, data: list[dict], epochs: int,
             peak_lr: float, seed: int, checkpoint: Path, card: dict, after_epoch=None) -> dict:
    """Train ``head`` on ``data`` (AdamW, warm-up then cosine), resumable from ``checkpoint`` after every epoch.

    ``card`` gains ``epoch_loss`` and ``train_s`` (seconds of every epoch, ``after_epoch`` included);
    ``after_epoch(epoch, card)`` (optional) may add to the card and returns a text for the log.
    Returns the card (the checkpoint's, when resuming).
    """
    rms = float(torch.cat([r["hidden"].float() for r in data[:50]]).pow(2).mean().sqrt())
    batches = length_batches([len(r["ids"]) for r in data], BATCH_TOKENS)
    total_steps = epochs * len(batches)
    optimizer = torch.optim.AdamW(head.parameters(), lr=peak_lr, weight_decay=0.01)
    warmup = max(1, total_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(s, total_steps) / total_steps))))
    first_epoch = 0
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        card, first_epoch = saved["card"], saved["epoch"]
        log(f"{name}: resuming after epoch {first_epoch}")
    generator = torch.Generator().manual_seed(seed + first_epoch)
    rng = np.random.default_rng(seed + first_epoch)
    for epoch in range(first_epoch, epochs):
        started = time.perf_counter()
        head.train()
        sums: dict[str, float] = {}
        for batch in rng.permutation(len(batches)):
            loss, parts = head_loss(head, embeddings, [data[i] for i in batches[batch]], target_rows, rms, generator)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            for key, value in {"loss": float(loss), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value / len(batches)
        card["epoch_loss"].append({k: round(v, 5) for k, v in sums.items()})
        said = after_epoch(epoch + 1, card) if after_epoch is not None else ""
        card["train_s"] = round(card.get("train_s", 0.0) + time.perf_counter() - started, 1)
        log(f"{name}: epoch {epoch + 1} loss {sums['loss']:.4f} {said}")
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"head": head.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "card": card, "epoch": epoch + 1}, checkpoint.with_suffix(".tmp"))
        os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    return card


def train(name: str, target, records: list[dict], validation: list[dict], vocabulary: DraftVocabulary,
          cards: Path, epochs: int | None, labels: dict) -> dict:
    start_from, tasks = PLAN[name]
    planned_epochs, peak_lr = RECIPE[name]
    epochs = epochs or planned_epochs
    embeddings = target.model.get_input_embeddings()
    embeddings.weight.requires_grad_(False)
    target_rows = target.model.get_output_embeddings().weight.detach()[torch.as_tensor(vocabulary.draft_to_target)]
    if start_from is None:
        torch.manual_seed(SEED)
        head = FeatureHead(head_layer_config(target.model.config), vocabulary)
        head.lm_head.weight.data.copy_(target_rows)
    else:
        head, _ = load_feature_head(HEADS / start_from)
    head.train()
    data = [r for r in records if r["task"] in tasks]
    checkpoint = HEADS / f"{name}.checkpoint.pt"
    card = {"name": name, "drafter_type": "feature-head", "start_from": start_from or "random (EAGLE-style head)",
            "tasks": list(tasks), "epochs": epochs, "peak_lr": peak_lr, "batch_tokens": BATCH_TOKENS,
            "loss": (f"{FEATURE_WEIGHT} x smooth L1 to the target's next feature + {TOKEN_WEIGHT} x cross-entropy to "
                     f"the target's draft-vocabulary distribution, plus {UNROLL_WEIGHT} x both again on a pass "
                     "that reads the head's own predicted features"),
            "input_noise": f"uniform, width {NOISE} x feature RMS", "seed": SEED, "train_sequences": len(data),
            "train_positions": int(sum(len(r["ids"]) for r in data)), **labels,
            "epoch_loss": [], "validation": []}

    def validate(epoch: int, card: dict) -> str:
        measured = replay(head, embeddings, [r for r in validation if r["task"] in tasks])
        card["validation"].append({"epoch": epoch, **measured["all"]})
        return f"validation {measured['all']}"

    card = fit_head(name, head, embeddings, target_rows, data, epochs, peak_lr, SEED, checkpoint, card, validate)
    card["final_validation"] = replay(head, embeddings, validation)
    card["training_lengths"] = [{"task": r["task"], "prompt_len": r["prompt_len"], "output_len": r["output_len"]}
                                for r in data]
    window = max(len(r["ids"]) for r in data)
    kind = "generic" if start_from is None else "finetuned"
    save_feature_head(head, HEADS / name, {
        "target": "smollm2", "kind": kind, "trained_on": "+".join(tasks) if kind == "finetuned" else "mixture",
        "window": window, "training": {k: card[k] for k in ("start_from", "tasks", "epochs", "peak_lr", "loss",
                                                             "train_sequences", "train_positions", "seed")}})
    checkpoint.unlink(missing_ok=True)
    cards.mkdir(parents=True, exist_ok=True)
    (cards / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def heldout_coverage(vocabulary: DraftVocabulary) -> dict[str, float]:
    """Share of the shipped held-out outputs (every task, news included) inside the draft vocabulary."""
    import pyarrow.parquet as pq

    outputs: dict[str, list[int]] = {}
    for folder in ("reference", "reference-lookup"):
        for shard in sorted((ROOT / "data" / "traces" / folder / "sequences").glob("*.parquet")):
            table = pq.read_table(shard, columns=["task", "output_token_ids"]).to_pylist()
            for row in table:
                outputs.setdefault(row["task"], []).extend(row["output_token_ids"])
    return {task: round(vocabulary.coverage(ids), 4) for task, ids in sorted(outputs.items())}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="bfloat16",
                        help="the teacher pass (the target's features) under bfloat16 autocast, or float32")
    parser.add_argument("--draft-vocab", type=int, default=8192, help="tokens in the draft vocabulary")
    parser.add_argument("--epochs", type=int, help="epochs of every head (default: the recipe's)")
    parser.add_argument("--only", choices=tuple(PLAN), action="append", help="train only these heads")
    parser.add_argument("--cards", type=Path, default=CARDS, help="folder for the head cards (%(default)s)")
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    began = time.perf_counter()
    target = load_model("smollm2")
    records = teacher_data(target, "shipped", options.precision)
    train_records, validation_records = split(records)
    log(f"features: {len(records)} sequences, {sum(len(r['ids']) for r in records)} positions "
        f"({time.perf_counter() - began:.0f} s)")
    eos = target.tokenizer.eos_token_id
    vocabulary = draft_vocabulary(train_records, options.draft_vocab, target.model.config.vocab_size, eos)
    coverage = {"validation_completions": {task: round(vocabulary.coverage(
        int(t) for r in validation_records if r["task"] == task for t in r["ids"][r["prompt_len"]:]), 4)
        for task in TASKS}, "heldout_outputs": heldout_coverage(vocabulary)}
    log(f"draft vocabulary of {vocabulary.size}: coverage {coverage}")
    labels = {"teacher": "completions of data/drafters/teacher_completions.parquet",
              "teacher_precision": options.precision, "draft_vocab_size": vocabulary.size,
              "draft_vocab_source": "most frequent target tokens of all tasks' train sequences",
              "draft_vocab_coverage": coverage}
    for head_name in options.only or PLAN:
        if (HEADS / head_name / "feature_head.json").exists():
            log(f"{head_name}: already in {HEADS}, kept (delete it to train it again)")
            continue
        train(head_name, target, train_records, validation_records, vocabulary, options.cards, options.epochs,
              labels)
    log(f"heads ready in {HEADS} ({time.perf_counter() - began:.0f} s)")

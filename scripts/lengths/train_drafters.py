"""Fine-tune the generic drafter on the same content at two length regimes (equal training tokens).

Both drafters start from the first experiment's ``generic-4l`` (``scripts/reference/
train_drafters.py`` builds it) and learn from the standard library's train-pool source files
(``data/prompts/lengths/train_files.json``; held-out files are never read), cut into windows:

- ``ft-short``: windows of 256 tokens (8 per step);
- ``ft-long``: windows of 2048 tokens (1 per step);

the same training tokens each (``STEPS_PER_EPOCH`` x 2048; 49,152 by default, a budget sized for
a 2-core CPU: the teacher pass of the 30-layer target dominates), the same number of optimiser steps,
the same loss (``scripts/distillation.py``), schedule and seed: only the context length of the
training data differs. 10% of the train-pool files are kept for validation: after each epoch the
drafter's top-1 agreement with the target is measured by position bin on 2048-token validation
windows. Stages are cached under ``$SPECSIM_CACHE/lengths/`` (teacher targets per drafter,
trained drafters), so a rerun resumes. Cards go to ``$SPECSIM_CACHE/cards/lengths-<name>.json``
(``--cards data/drafters`` replaces the shipped drafters' cards). ``--precision bfloat16`` (default)
runs the teacher passes under bfloat16 autocast; ``float32`` is the precision behind the shipped
drafters (the drafters train in float32 either way).
Run: ``python scripts/lengths/train_drafters.py`` (both experiments' drafters: ``make drafters``).
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

from specsim.collect.models import cache_dir, load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distillation import (  # noqa: E402
    PRECISIONS,
    agreement_by_position,
    optimiser,
    save_drafter,
    teacher_targets,
    trainable_layers,
    training_step,
)

ROOT = Path(__file__).resolve().parents[2]
WORK = cache_dir() / "lengths"
GENERIC = cache_dir() / "reference" / "drafters" / "generic-4l"
CARDS = cache_dir() / "cards"
SEED = 11
TOKENS_PER_STEP = 2048
STEPS_PER_EPOCH = int(os.environ.get("LENGTHS_STEPS_PER_EPOCH", "24"))
EPOCHS = 3
PEAK_LR = 3e-4
#: name: (window tokens, windows per optimiser step)
PLAN = {"ft-short": (256, 8), "ft-long": (2048, 1)}
VALIDATION_WINDOWS = 4
POSITION_EDGES = [0, 128, 256, 512, 1024, 2048]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_and_validation_files() -> tuple[list[Path], list[Path]]:
    import sysconfig

    names = json.loads((ROOT / "data" / "prompts" / "lengths" / "train_files.json").read_text())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / name for name in names]
    order = np.random.default_rng(SEED).permutation(len(files))
    n_validation = max(1, len(files) // 10)
    return [files[i] for i in sorted(order[n_validation:])], [files[i] for i in sorted(order[:n_validation])]


def windows(tokenizer, files: list[Path], length: int, count: int, seed: int) -> list[list[int]]:
    """``count`` random windows of ``length`` tokens from ``files`` (files weighted by their size)."""
    rng = np.random.default_rng(seed)
    encoded = [tokenizer(f.read_text(encoding="utf-8"))["input_ids"] for f in files]
    encoded = [ids for ids in encoded if len(ids) > length]
    weights = np.array([len(ids) - length for ids in encoded], dtype=float)
    picks = rng.choice(len(encoded), size=count, p=weights / weights.sum())
    return [encoded[i][(start := int(rng.integers(0, len(encoded[i]) - length))): start + length] for i in picks]


def cached(path: Path, build):
    """Load ``path`` or build, save (atomically) and return it."""
    if path.exists():
        return torch.load(path, weights_only=False)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(value, temporary)
    os.replace(temporary, path)
    return value


def teacher(target, tokenizer, name: str, files: list[Path], length: int, count: int, batch: int,
            precision: str) -> list[dict]:
    def build():
        sequences = windows(tokenizer, files, length, count, seed=SEED + length)
        records = []
        for start in range(0, len(sequences), batch):
            records += teacher_targets(target, sequences[start:start + batch], tokenizer.eos_token_id,
                                       precision=precision)
            log(f"teacher {name}: {min(start + batch, len(sequences))}/{len(sequences)}")
        return records
    return cached(WORK / f"teacher-{name}-{precision}.pt", build)


def start_card() -> dict:
    """What the generic drafter in the cache is: the parts of its card that tell one build from another."""
    path = CARDS / "generic-4l.json"
    if not path.exists():
        return {"card": None}
    card = json.loads(path.read_text())
    keys = ("recipe", "epochs", "peak_lr", "teacher_precision", "teacher", "seed", "kept_epoch")
    return {"card": "$SPECSIM_CACHE/cards/generic-4l.json", **{k: card[k] for k in keys if k in card},
            "final_validation_agreement": card.get("validation_agreement", [None])[-1]}


def train(name: str, records: list[dict], validation: list[dict], precision: str, cards: Path, tokenizer,
          save_as: str | None = None) -> dict:
    from transformers import AutoModelForCausalLM

    window, per_step = PLAN[name]
    saved_name = save_as or name
    drafter = AutoModelForCausalLM.from_pretrained(GENERIC, dtype=torch.float32)
    trainable = trainable_layers(drafter)
    total = EPOCHS * STEPS_PER_EPOCH
    optimizer, schedule = optimiser(trainable, PEAK_LR, total)
    rng = np.random.default_rng(SEED)
    started = time.perf_counter()
    card = {"name": saved_name, "start_from": "generic-4l (first experiment)",
            "content": "python-stdlib-source (train pool)",
            "window_tokens": window, "windows": len(records), "training_tokens": window * len(records),
            "epochs": EPOCHS, "steps": total, "tokens_per_step": TOKENS_PER_STEP, "peak_lr": PEAK_LR,
            "optimizer": "AdamW (weight decay 0.01), warm-up then cosine",
            "loss": "MSE to target final hidden state + KL of target top-32 distribution", "seed": SEED,
            "teacher_precision": precision, "training_lengths": {"total_len": window, "sequences": len(records)},
            "validation_position_edges": POSITION_EDGES,
            "validation_agreement_by_position": [
                agreement_by_position(drafter.eval(), validation, POSITION_EDGES)],
            "epoch_loss": []}
    log(f"{name}: start agreement {np.round(card['validation_agreement_by_position'][0], 3).tolist()}")
    for epoch in range(EPOCHS):
        drafter.train()
        order = rng.permutation(len(records))
        losses = []
        for step in range(STEPS_PER_EPOCH):
            batch = [records[i] for i in order[step * per_step:(step + 1) * per_step]]
            losses.append(training_step(drafter, optimizer, schedule, trainable, batch))
        card["epoch_loss"].append(float(np.mean(losses)))
        card["validation_agreement_by_position"].append(
            agreement_by_position(drafter.eval(), validation, POSITION_EDGES))
        log(f"{name}: epoch {epoch + 1} loss {card['epoch_loss'][-1]:.4f} agreement "
            f"{np.round(card['validation_agreement_by_position'][-1], 3).tolist()}")
    card["train_s"] = round(time.perf_counter() - started, 1)
    if save_as:
        # A rebuild is another drafter: it says whose recipe it follows and which generic drafter it started from.
        card.update(recipe_of=name, start_from_generic=start_card())
    save_drafter(drafter, tokenizer, WORK / "drafters" / saved_name)
    cards.mkdir(parents=True, exist_ok=True)
    (cards / f"lengths-{saved_name}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", choices=PRECISIONS, default="bfloat16",
                        help="teacher passes under bfloat16 autocast, or in float32")
    parser.add_argument("--cards", type=Path, default=CARDS, help="folder for the drafter cards (%(default)s)")
    parser.add_argument("--only", nargs="+", choices=tuple(PLAN), metavar="NAME",
                        help=f"train only these drafters ({', '.join(PLAN)}; default: all). Each is seeded as in a "
                             "full run only if the drafters before it in that order are trained too, or it is first")
    parser.add_argument("--as", dest="save_as", metavar="NAME",
                        help="save the one drafter of --only under this name (a rebuild beside the shipped one's "
                             "traces; its card records the recipe it follows and the generic drafter it started from)")
    options = parser.parse_args()
    if options.save_as and (not options.only or len(options.only) != 1):
        parser.error("--as needs exactly one drafter in --only")
    if options.save_as is not None and (not options.save_as or options.save_as in PLAN
                                        or Path(options.save_as).name != options.save_as
                                        or options.save_as.startswith(".")):
        parser.error(f"--as {options.save_as!r}: a plain folder name, not a path and not one of {', '.join(PLAN)}")
    began = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    if not (GENERIC / "config.json").exists():
        print(f"{GENERIC}: no generic drafter there; run scripts/reference/train_drafters.py first", file=sys.stderr)
        raise SystemExit(2)
    target = load_model("smollm2")
    tokenizer = target.tokenizer
    train_files, validation_files = train_and_validation_files()
    def validation_targets() -> list[dict]:
        sequences = windows(tokenizer, validation_files, 2048, VALIDATION_WINDOWS, SEED)
        return [r for i in range(0, len(sequences), 2)
                for r in teacher_targets(target.model, sequences[i:i + 2], tokenizer.eos_token_id,
                                         precision=options.precision)]

    validation = cached(WORK / f"validation-{options.precision}.pt", validation_targets)
    for name, (window, _) in PLAN.items():
        saved_name = options.save_as or name
        if (WORK / "drafters" / saved_name / "config.json").exists() or (options.only and name not in options.only):
            continue
        count = TOKENS_PER_STEP * STEPS_PER_EPOCH // window
        records = teacher(target.model, tokenizer, name, train_files, window, count, max(1, 4096 // window),
                          options.precision)
        train(name, records, validation, options.precision, options.cards, tokenizer, options.save_as)
    log(f"length experiment's drafters ready in {WORK / 'drafters'} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()

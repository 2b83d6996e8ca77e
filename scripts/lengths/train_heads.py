"""Feature heads of the length-controlled experiment: the same content, short against long training windows.

Two EAGLE-style heads (``specsim.collect.feature_head``), trained from scratch on this CPU with the
reference heads' loss and draft vocabulary (``scripts/reference/train_heads.py``; the vocabulary is
``head-generic``'s, so the two differ only in their training windows):

- ``head-short``: windows of 256 tokens;
- ``head-long``: windows of 2048 tokens;

of the standard library's train-pool source files (``data/prompts/lengths/train_files.json``, as the
length experiment's model drafters ``ft-short``/``ft-long``), the same training tokens each
(``TRAIN_TOKENS``), epochs, schedule and seed. Both are then validated before any collection
on 2048-token windows of the held-out 10% of the
files, the first draft index's agreement with the target by context position (teacher-forced, as
the model drafters' validation). Published heads trained on short windows lose acceptance
beyond them (OWL, DFlash); this measures whether these do.

Stages are cached under ``$SPECSIM_CACHE/lengths/`` (the target's features of every window) and
``$SPECSIM_CACHE/reference/heads/`` (the heads, resumable per epoch). Cards go to
``$SPECSIM_CACHE/cards/lengths-head-*.json`` (``--cards data/drafters`` replaces the shipped ones).
Run: ``python scripts/lengths/train_heads.py`` (needs ``scripts/reference/train_heads.py``'s
``head-generic`` for the vocabulary; part of ``make drafters``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from specsim.collect.feature_head import FeatureHead, head_layer_config, load_feature_head, save_feature_head
from specsim.collect.models import cache_dir, load_model

HERE = Path(__file__).resolve().parent


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(HERE.parent))
length_drafters = _module("length_drafters", HERE / "train_drafters.py")
sys.path.insert(0, str(HERE.parent / "reference"))
reference_heads = _module("reference_heads", HERE.parent / "reference" / "train_heads.py")

WORK = cache_dir() / "lengths"
HEADS = reference_heads.HEADS
SEED = 13
#: Training tokens of each head (windows x window length), equal for both.
TRAIN_TOKENS = int(os.environ.get("LENGTHS_HEAD_TOKENS", "49152"))
EPOCHS = int(os.environ.get("LENGTHS_HEAD_EPOCHS", "10"))
PEAK_LR = 1e-3
#: name: window tokens
PLAN = {"head-short": 256, "head-long": 2048}
VALIDATION_WINDOWS = 4
VALIDATION_PROMPT = 32  # tokens of each validation window read before drafting starts
log = length_drafters.log


def features(target, sequences: list[list[int]], batch: int, precision: str, name: str) -> list[dict]:
    """The target's final normalised hidden state at every position of every window (float16)."""
    records = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
    for start in range(0, len(sequences), batch):
        chunk = sequences[start:start + batch]
        with torch.inference_mode(), autocast:
            hidden = target.model.model(input_ids=torch.tensor(chunk)).last_hidden_state
        for row, ids in enumerate(chunk):
            records.append({"task": "stdlib", "ids": torch.tensor(ids), "hidden": hidden[row].to(torch.float16),
                            "prompt_len": VALIDATION_PROMPT, "output_len": len(ids) - VALIDATION_PROMPT})
        log(f"features {name}: {min(start + batch, len(sequences))}/{len(sequences)}")
    return records


EDGES = (0, 128, 256, 512, 1024, 2048)


@torch.inference_mode()
def agreement_by_position(head: FeatureHead, target, validation: list[dict]) -> list[dict]:
    """Teacher-forced top-1 agreement of the head's first draft token with the target, by context position.

    At every position ``i`` of a validation window the head reads the target's true features and
    tokens up to ``i`` (the pairs ``(f_j, t_{j+1})``, ``j < i``) and drafts the token after
    ``t_{i+1}``; the target's own choice there is the argmax of its LM head on ``f_{i+1}``. Under
    greedy decoding this is the first draft index's acceptance on the target's own continuation
    of that prefix, as the length drafters' validation measures it (``scripts/lengths/train_drafters.py``).
    """
    embeddings = target.model.get_input_embeddings()
    lm_head = target.model.get_output_embeddings()
    head.eval()
    draft_to_target = head.draft_to_target
    agree = np.zeros(len(EDGES) - 1)
    total = np.zeros(len(EDGES) - 1)
    for record in validation:
        ids, hidden = record["ids"], record["hidden"].float()
        _, logits = head(hidden[None, :-1], embeddings(ids[None, 1:]).float())
        drafted = draft_to_target[logits[0, :-1].argmax(-1)]          # the token after t_{i+1}, i = 0 .. n - 3
        chosen = lm_head(hidden[1:-1]).argmax(-1)                      # the target's choice from f_{i+1}
        positions = np.arange(len(ids) - 2) + 2                         # context length at that draft
        bins = np.searchsorted(EDGES, positions, side="right") - 1
        hits = (drafted == chosen).numpy()
        for b in range(len(EDGES) - 1):
            agree[b] += hits[bins == b].sum()
            total[b] += (bins == b).sum()
    return [{"context_from": EDGES[b], "context_to": EDGES[b + 1], "positions": int(total[b]),
             "agreement": round(float(agree[b] / total[b]), 4)} for b in range(len(EDGES) - 1) if total[b]]


def train(name: str, target, records: list[dict], validation: list[dict], vocabulary, cards: Path,
          labels: dict) -> dict:
    """Train one head from scratch (resumable per epoch); validate by context position; save head and card."""
    embeddings = target.model.get_input_embeddings()
    embeddings.weight.requires_grad_(False)
    target_rows = target.model.get_output_embeddings().weight.detach()[torch.as_tensor(vocabulary.draft_to_target)]
    torch.manual_seed(SEED)
    head = FeatureHead(head_layer_config(target.model.config), vocabulary)
    head.lm_head.weight.data.copy_(target_rows)
    head.train()
    checkpoint = HEADS / f"{name}.checkpoint.pt"
    window = len(records[0]["ids"])
    card = {"name": name, "drafter_type": "feature-head", "start_from": "random (EAGLE-style head)",
            "content": "python-stdlib-source (train pool)", "window_tokens": window, "windows": len(records),
            "training_tokens": window * len(records), "epochs": EPOCHS, "peak_lr": PEAK_LR,
            "batch_tokens": reference_heads.BATCH_TOKENS, "seed": SEED,
            "loss": "as the reference heads (scripts/reference/train_heads.py)", **labels, "epoch_loss": []}
    card = reference_heads.fit_head(name, head, embeddings, target_rows, records, EPOCHS, PEAK_LR, SEED, checkpoint,
                                    card)
    card["validation_agreement_by_position"] = agreement_by_position(head, target, validation)
    card["training_lengths"] = {"total_len": window, "sequences": len(records)}
    save_feature_head(head, HEADS / name, {
        "target": "smollm2", "kind": "finetuned", "trained_on": f"stdlib-{window}", "window": window,
        "training": {k: card[k] for k in ("start_from", "content", "window_tokens", "windows", "training_tokens",
                                           "epochs", "peak_lr", "seed")}})
    checkpoint.unlink(missing_ok=True)
    cards.mkdir(parents=True, exist_ok=True)
    (cards / f"lengths-{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16",
                        help="the target's feature pass under bfloat16 autocast, or in float32")
    parser.add_argument("--cards", type=Path, default=length_drafters.CARDS,
                        help="folder for the head cards (%(default)s)")
    options = parser.parse_args()
    began = time.perf_counter()
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    if not (HEADS / "head-generic" / "feature_head.json").exists():
        print(f"{HEADS / 'head-generic'}: no generic head there (its draft vocabulary is shared); run "
              "scripts/reference/train_heads.py first", file=sys.stderr)
        raise SystemExit(2)
    vocabulary = load_feature_head(HEADS / "head-generic")[0].vocabulary
    target = load_model("smollm2")
    tokenizer = target.tokenizer
    train_files, validation_files = length_drafters.train_and_validation_files()
    validation = length_drafters.cached(WORK / f"head-validation-{options.precision}.pt", lambda: features(
        target, length_drafters.windows(tokenizer, validation_files, 2048, VALIDATION_WINDOWS, SEED), 1,
        options.precision, "validation"))
    for record in validation:
        record["prompt_len"] = VALIDATION_PROMPT
    cards = {}
    for name, window in PLAN.items():
        if (HEADS / name / "feature_head.json").exists():
            card_path = options.cards / f"lengths-{name}.json"
            if card_path.exists():
                card = json.loads(card_path.read_text())
                card.pop("validation", None)
                card.pop("validation_s", None)
                card["validation_agreement_by_position"] = agreement_by_position(
                    load_feature_head(HEADS / name)[0], target, validation)
                card_path.write_text(json.dumps(card, indent=1) + "\n")
            log(f"{name}: already built; validation {card_path.exists() and card['validation_agreement_by_position']}")
            continue
        count = TRAIN_TOKENS // window
        def build(name: str = name, window: int = window, count: int = count) -> list[dict]:
            sequences = length_drafters.windows(tokenizer, train_files, window, count, SEED + window)
            return features(target, sequences, max(1, 4096 // window), options.precision, name)

        records = length_drafters.cached(WORK / f"head-features-{name}-{options.precision}.pt", build)
        labels = {"teacher_precision": options.precision, "draft_vocab_size": vocabulary.size,
                  "draft_vocab_source": "head-generic's (most frequent target tokens of the reference tasks)"}
        cards[name] = train(name, target, records, validation, vocabulary, options.cards, labels)
        log(f"{name}: validation by context position {cards[name]['validation_agreement_by_position']}")
    generic, _ = load_feature_head(HEADS / "head-generic")
    log(f"head-generic (reference mixture, for comparison): {agreement_by_position(generic, target, validation)}")
    log(f"length experiment's heads ready in {HEADS} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()

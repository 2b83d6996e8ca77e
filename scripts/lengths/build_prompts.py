"""Build the length-controlled prompt sets: the same content cut at controlled context lengths.

Content: the Python standard library's own source files (shipped with every Python, offline),
split once by file into train and held-out pools, so no held-out file is seen in training.
Each prompt is a window of a file's tokens (SmolLM2's tokenizer) that starts at a line boundary;
the target continues it as raw text (no chat template). Regimes fix the prompt length and the
number of new tokens, so that only the context length moves while the content stays the same:

=========  ============  ==========  ======================
regime     prompt tokens  new tokens  total tokens (about)
=========  ============  ==========  ======================
ctx-128    64            64          128
ctx-256    128           128         256
ctx-512    256           256         512
ctx-1024   768           256         1024
ctx-2048   1792          256         2048
ctx-4096   3840          256         4096
=========  ============  ==========  ======================

ctx-4096 was added after the first five were collected; it comes last in :data:`REGIMES`, so the
seeded stream draws the first five regimes' prompts exactly as before.

Writes ``data/prompts/lengths/heldout-<regime>.jsonl`` (the prompts traced, one file per regime
since each regime has its own number of new tokens), ``heldout-<regime>-extra.jsonl`` (more prompts
of a regime, :data:`EXTRA_HELDOUT`, from files that regime has not used),
``data/prompts/lengths/train_files.json`` (the training pool: which files the drafters learn
from) and ``manifest.json``. Run: ``python scripts/lengths/build_prompts.py``.
"""

from __future__ import annotations

import json
import platform
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

from specsim.collect.prompts import Prompt, write_prompts

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "prompts" / "lengths"
SEED = 20261129
#: regime name: (prompt tokens, new tokens)
REGIMES = {"ctx-128": (64, 64), "ctx-256": (128, 128), "ctx-512": (256, 256), "ctx-1024": (768, 256),
           "ctx-2048": (1792, 256), "ctx-4096": (3840, 256)}
HELDOUT_PER_REGIME = 12
#: Extra held-out prompts of a regime, written to ``heldout-<regime>-extra.jsonl`` and collected as a
#: stage of their own (the first 12 stay as collected): the shortest regime's 12 prompts give too
#: few drafted tokens for a Wilson half-width of 0.03.
EXTRA_HELDOUT = {"ctx-128": 8}
#: Files smaller than this (bytes) cannot hold the longest window.
MIN_FILE_BYTES = 16_000
HELDOUT_SHARE = 0.3
#: A regime's prompt must re-tokenise to within this many tokens of its target length.
TOLERANCE_TOKENS = 8


def source_files() -> list[Path]:
    """The standard library's top-level modules large enough for the longest regime, sorted."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.glob("*.py") if p.stat().st_size >= MIN_FILE_BYTES)


def split_files(files: list[Path], seed: int = SEED) -> dict[str, list[Path]]:
    """Train and held-out pools of files (by a seeded permutation)."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_heldout = int(round(HELDOUT_SHARE * len(files)))
    return {"heldout": sorted(files[i] for i in order[:n_heldout]),
            "train": sorted(files[i] for i in order[n_heldout:])}


def window(tokenizer: Any, text: str, prompt_tokens: int, rng: np.random.Generator) -> str | None:
    """A window of ``prompt_tokens`` tokens of ``text`` starting at a line boundary, as text.

    The window leaves room for the continuation inside the file; ``None`` if the file is too
    short or no window re-tokenises to within :data:`TOLERANCE_TOKENS` of the target.
    """
    encoded = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) < prompt_tokens + 512:
        return None
    last = len(ids) - prompt_tokens - 256
    newline_starts = [i for i, (begin, _) in enumerate(offsets[:last]) if begin > 0 and text[begin - 1] == "\n"]
    for _ in range(10):
        if not newline_starts:
            return None
        start = int(rng.choice(newline_starts))
        piece = tokenizer.decode(ids[start:start + prompt_tokens])
        if abs(len(tokenizer(piece)["input_ids"]) - prompt_tokens) <= TOLERANCE_TOKENS and piece.strip():
            return piece
    return None


def heldout_prompt(regime: str, path: Path, piece: str) -> Prompt:
    """The held-out prompt of ``regime`` made of a window ``piece`` of the file ``path``."""
    prompt_tokens, new_tokens = REGIMES[regime]
    return Prompt(f"{regime}-{path.stem}", "stdlib-code", "python-stdlib-source", prompt=piece,
                  extra={"split": "heldout", "regime": regime, "prompt_tokens": prompt_tokens,
                         "max_new_tokens": new_tokens, "file": path.name})


def build(tokenizer: Any, files: list[Path], per_regime: int = HELDOUT_PER_REGIME,
          seed: int = SEED) -> dict[str, list[Prompt]]:
    """Held-out prompts of every regime (deterministic in seed and files)."""
    rng = np.random.default_rng(seed)
    by_regime: dict[str, list[Prompt]] = {name: [] for name in REGIMES}
    for name, (prompt_tokens, _) in REGIMES.items():
        order = rng.permutation(len(files))
        for index in order:
            if len(by_regime[name]) == per_regime:
                break
            path = files[index]
            piece = window(tokenizer, path.read_text(encoding="utf-8"), prompt_tokens, rng)
            if piece is None:
                continue
            by_regime[name].append(heldout_prompt(name, path, piece))
    return by_regime


def build_extra(tokenizer: Any, files: list[Path], used: dict[str, list[Prompt]],
                extra: dict[str, int] | None = None, seed: int = SEED) -> dict[str, list[Prompt]]:
    """Extra held-out prompts per regime from files the regime has not used yet.

    Drawn from a random stream of their own, so the regimes' first prompts stay as they were.
    """
    extra = EXTRA_HELDOUT if extra is None else extra
    rng = np.random.default_rng([seed, 1])
    by_regime: dict[str, list[Prompt]] = {}
    for name, count in extra.items():
        prompt_tokens = REGIMES[name][0]
        taken = {prompt.extra["file"] for prompt in used.get(name, [])}
        by_regime[name] = []
        for index in rng.permutation(len(files)):
            path = files[index]
            if len(by_regime[name]) == count:
                break
            if path.name in taken:
                continue
            piece = window(tokenizer, path.read_text(encoding="utf-8"), prompt_tokens, rng)
            if piece is None:
                continue
            by_regime[name].append(heldout_prompt(name, path, piece))
    return by_regime


def main() -> None:
    from specsim.collect.models import load_model

    tokenizer = load_model("smollm2").tokenizer
    pools = split_files(source_files())
    prompts = build(tokenizer, pools["heldout"])
    OUT.mkdir(parents=True, exist_ok=True)
    for name, regime_prompts in prompts.items():
        write_prompts(regime_prompts, OUT / f"heldout-{name}.jsonl")
    extra = build_extra(tokenizer, pools["heldout"], prompts)
    for name, regime_prompts in extra.items():
        write_prompts(regime_prompts, OUT / f"heldout-{name}-extra.jsonl")
    (OUT / "train_files.json").write_text(json.dumps([p.name for p in pools["train"]], indent=1) + "\n")
    manifest = {"seed": SEED, "python": platform.python_version(), "command": " ".join([sys.executable, *sys.argv]),
                "regimes": {k: {"prompt_tokens": p, "new_tokens": n} for k, (p, n) in REGIMES.items()},
                "files": {split: len(files) for split, files in pools.items()},
                "heldout_prompts": {name: len(regime_prompts) for name, regime_prompts in prompts.items()},
                "extra_heldout_prompts": {name: len(regime_prompts) for name, regime_prompts in extra.items()},
                "tolerance_tokens": TOLERANCE_TOKENS}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()

"""Collect the length-controlled traces: three drafters crossed with five context-length regimes.

Same content (held-out standard-library source files), same target (SmolLM2-135M-Instruct,
float32, CPU), drafters ``generic-4l`` (first experiment, trained on the multitask mixture),
``ft-short`` and ``ft-long`` (``scripts/lengths/train_drafters.py``: the generic drafter fine-tuned
on 256- or 2048-token windows of the train-pool files). Stages, each resumable (re-running skips
prompts already written; ``--limit N`` collects the first N prompts of a stage, the run id does not
change):

- ``greedy-<regime>``: every drafter, greedy, gamma 4, every held-out prompt of the regime, with
  the regime's number of new tokens (64 to 256);
- ``sampling-<regime>``: every drafter, temperature 0.7, gamma 4, the regime's first
  :data:`SAMPLING_PROMPTS` prompts;
- ``greedy-<regime>-extra``: as ``greedy-<regime>`` on the regime's extra held-out prompts
  (``heldout-<regime>-extra.jsonl``, files the regime had not used).

Writes ``data/traces/lengths`` and its ``manifest.json``. Run:
``python scripts/lengths/collect_lengths.py [STAGE ...] [--limit N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specsim.collect.models import cache_dir
from specsim.collect.prompts import read_prompts, write_prompts
from specsim.collect.runner import CollectConfig, DrafterSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages import run_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "traces" / "lengths"
PROMPTS = ROOT / "data" / "prompts" / "lengths"
SAMPLING_PROMPTS = 4


def stages() -> dict[str, CollectConfig]:
    """Every stage's configuration, greedy stages first, short regimes first."""
    manifest = json.loads((PROMPTS / "manifest.json").read_text())
    work = cache_dir()
    drafters = (
        DrafterSpec("generic-4l", str(work / "reference" / "drafters" / "generic-4l"), "generic", "mixture"),
        DrafterSpec("ft-short", str(work / "lengths" / "drafters" / "ft-short"), "finetuned", "stdlib-windows-256"),
        DrafterSpec("ft-long", str(work / "lengths" / "drafters" / "ft-long"), "finetuned", "stdlib-windows-2048"),
    )
    configs = {}
    for temperature, prefix in ((0.0, "greedy"), (0.7, "sampling")):
        for regime, sizes in manifest["regimes"].items():
            prompts = PROMPTS / f"heldout-{regime}.jsonl"
            if temperature > 0:
                subset = PROMPTS / f"sampling-{regime}.jsonl"
                write_prompts(read_prompts(prompts)[:SAMPLING_PROMPTS], subset)
                prompts = subset
            configs[f"{prefix}-{regime}"] = CollectConfig(
                target="smollm2", drafters=drafters, prompts=str(prompts), out=str(OUT), gammas=(4,),
                temperatures=(temperature,), max_new_tokens=sizes["new_tokens"], seed=0)
    for regime in manifest.get("extra_heldout_prompts", {}):
        configs[f"greedy-{regime}-extra"] = CollectConfig(
            target="smollm2", drafters=drafters, prompts=str(PROMPTS / f"heldout-{regime}-extra.jsonl"), out=str(OUT),
            gammas=(4,), temperatures=(0.0,), max_new_tokens=manifest["regimes"][regime]["new_tokens"], seed=0)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each stage")
    args = parser.parse_args()
    for name, config in stages().items():
        if not args.stages or name in args.stages:
            run_stage(name, config, OUT, f"python scripts/lengths/collect_lengths.py {name}", args.limit)


if __name__ == "__main__":
    main()

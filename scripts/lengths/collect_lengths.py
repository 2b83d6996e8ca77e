"""Collect the length-controlled traces: drafters of three types crossed with six context-length regimes.

Same content (held-out standard-library source files), same target (SmolLM2-135M-Instruct,
float32, CPU). Drafters, in three groups of stages:

- separate models (stages ``greedy-<regime>``, ``sampling-<regime>``): ``generic-4l`` (first
  experiment, trained on the multitask mixture), ``ft-short`` and ``ft-long``
  (``scripts/lengths/train_drafters.py``: the generic drafter fine-tuned on 256- or 2048-token
  windows of the train-pool files);
- model-free lookup (``lookup-greedy-<regime>``, ``lookup-sampling-<regime>``): transformers'
  prompt lookup, trained on nothing;
- feature heads (``heads-greedy-<regime>``, ``heads-sampling-<regime>``): ``head-short`` and
  ``head-long`` (``scripts/lengths/train_heads.py``: trained from scratch on 256- or 2048-token
  windows of the train-pool files, the same tokens). The first experiment's ``head-generic`` is not
  collected here: its content (the reference tasks) is not this experiment's, and the window
  contrast needs only the two; it also keeps the shipped traces under 40 MB.

Each group: greedy, gamma 4, every held-out prompt of the regime, with the regime's number of new
tokens (64 to 256); temperature 0.7, gamma 4, the regime's first :data:`SAMPLING_PROMPTS` prompts;
``<group>greedy-<regime>-extra`` on a regime's extra held-out prompts (``heldout-<regime>-extra.jsonl``,
files the regime had not used); ``lookup-greedy-gamma2-8-<regime>`` and ``heads-greedy-gamma2-8-<regime>``: one
drafter of the type (prompt lookup; ``head-short``, the head whose window the long regimes pass) at gamma 2
and 8, greedy (shipped with ``--limit``: 6 prompts for lookup, 4 for the head, within the 40 MB of traces);
The shipped ``ft-short`` is not on the machine to collect at other gammas, and a rebuild is another drafter
(data card), so the separate-model type's gamma contrast has a drafter of its own: ``ft-short-rebuilt``
(``scripts/lengths/train_drafters.py --only ft-short --as ft-short-rebuilt``, ``ft-short``'s recipe from a
rebuilt ``generic-4l``), stages ``rebuilt-greedy-gamma2-4-8-<regime>``: greedy at gamma 2, 4 and 8 on the
regime's held-out prompts (shipped with ``--limit 4``, ctx-128 to ctx-2048 as the other separate models).
Every stage is resumable (re-running skips prompts already written; ``--limit N`` collects the first N prompts
of a stage, the run id does not change).

Writes ``data/traces/lengths`` and its ``manifest.json``. Run:
``python scripts/lengths/collect_lengths.py [STAGE ...] [--limit N]``; ``--list`` prints the stages.
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


#: The drafter of each group collected at gamma 2 and 8 (the fine-tuned short-window one where the type has one);
#: the separate models' is :func:`rebuilt_drafter`, in stages of its own.
GAMMA_DRAFTERS = {"lookup-": "prompt-lookup", "heads-": "head-short"}


def rebuilt_drafter() -> DrafterSpec:
    """``ft-short-rebuilt``: ``ft-short``'s recipe, trained again on this machine (its card: data/drafters)."""
    path = cache_dir() / "lengths" / "drafters" / "ft-short-rebuilt"
    return DrafterSpec("ft-short-rebuilt", str(path), "finetuned", "stdlib-windows-256")


def drafter_groups() -> dict[str, tuple[DrafterSpec, ...]]:
    """The drafters of each group of stages, by the prefix of their stage names."""
    work = cache_dir()
    heads = work / "reference" / "heads"
    return {
        "": (
            DrafterSpec("generic-4l", str(work / "reference" / "drafters" / "generic-4l"), "generic", "mixture"),
            DrafterSpec("ft-short", str(work / "lengths" / "drafters" / "ft-short"), "finetuned", "stdlib-windows-256"),
            DrafterSpec("ft-long", str(work / "lengths" / "drafters" / "ft-long"), "finetuned", "stdlib-windows-2048"),
        ),
        "lookup-": (DrafterSpec("prompt-lookup", "prompt-lookup:2", "generic", None),),
        "heads-": (
            DrafterSpec("head-short", str(heads / "head-short"), "finetuned", "stdlib-windows-256"),
            DrafterSpec("head-long", str(heads / "head-long"), "finetuned", "stdlib-windows-2048"),
        ),
    }


def stages() -> dict[str, CollectConfig]:
    """Every stage's configuration: per group, greedy stages first, short regimes first."""
    manifest = json.loads((PROMPTS / "manifest.json").read_text())
    configs = {}
    for prefix, drafters in drafter_groups().items():
        for temperature, mode in ((0.0, "greedy"), (0.7, "sampling")):
            for regime, sizes in manifest["regimes"].items():
                prompts = PROMPTS / f"heldout-{regime}.jsonl"
                if temperature > 0:
                    subset = PROMPTS / f"sampling-{regime}.jsonl"
                    if not subset.exists():
                        write_prompts(read_prompts(prompts)[:SAMPLING_PROMPTS], subset)
                    prompts = subset
                configs[f"{prefix}{mode}-{regime}"] = CollectConfig(
                    target="smollm2", drafters=drafters, prompts=str(prompts), out=str(OUT), gammas=(4,),
                    temperatures=(temperature,), max_new_tokens=sizes["new_tokens"], seed=0)
        # One drafter of the type at gamma 2 and 8: whether the length curve depends on gamma.
        chosen = tuple(d for d in drafters if d.name == GAMMA_DRAFTERS.get(prefix))
        for regime, sizes in manifest["regimes"].items() if chosen else ():
            configs[f"{prefix}greedy-gamma2-8-{regime}"] = CollectConfig(
                target="smollm2", drafters=chosen, prompts=str(PROMPTS / f"heldout-{regime}.jsonl"),
                out=str(OUT), gammas=(2, 8), temperatures=(0.0,), max_new_tokens=sizes["new_tokens"], seed=0)
        for regime in manifest.get("extra_heldout_prompts", {}):
            configs[f"{prefix}greedy-{regime}-extra"] = CollectConfig(
                target="smollm2", drafters=drafters, prompts=str(PROMPTS / f"heldout-{regime}-extra.jsonl"),
                out=str(OUT), gammas=(4,), temperatures=(0.0,),
                max_new_tokens=manifest["regimes"][regime]["new_tokens"], seed=0)
    for regime, sizes in manifest["regimes"].items():
        configs[f"rebuilt-greedy-gamma2-4-8-{regime}"] = CollectConfig(
            target="smollm2", drafters=(rebuilt_drafter(),), prompts=str(PROMPTS / f"heldout-{regime}.jsonl"),
            out=str(OUT), gammas=(2, 4, 8), temperatures=(0.0,), max_new_tokens=sizes["new_tokens"], seed=0)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each stage")
    parser.add_argument("--list", action="store_true", help="print the stages and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(stages()))
        return
    for name, config in stages().items():
        if not args.stages or name in args.stages:
            run_stage(name, config, OUT, f"python scripts/lengths/collect_lengths.py {name}", args.limit)


if __name__ == "__main__":
    main()

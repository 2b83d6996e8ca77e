"""Collect the shipped reference traces: SmolLM2 target, untrained, generic and fine-tuned drafters.

Held-out prompts only (no drafter saw them), taken round-robin across tasks so that a stage
cut short still covers every task. Stages, each resumable (re-running skips prompts already
written):

1. ``greedy-gamma4``: every drafter on every held-out prompt, greedy, gamma 4;
2. ``sampling-t0.7``: every drafter on every held-out prompt, temperature 0.7, gamma 4;
3. ``greedy-gamma2-6``: the generic drafter on every held-out prompt, greedy, gamma 2 and 6;
   ``rebuilt-greedy-gamma4-8``: ``generic-4l-rebuilt`` on every held-out prompt, greedy, gamma 4 and 8
   in one run. The shipped ``generic-4l`` is not on this machine and a rebuild is another drafter
   (data card), so the separate-model type's gamma 8 has a drafter of its own: ``train_drafters.py
   --recipe full --precision float32 --only generic-4l``, its folder and card then copied to
   ``generic-4l-rebuilt`` (card: ``data/drafters/generic-4l-rebuilt.json``);
4. ``news-greedy-gamma4``: every drafter on the first :data:`NEWS_PROMPTS` held-out prompts of
   the news task (English prose no drafter was trained on), greedy, gamma 4: a task far from
   Python in the population (greedy only: no temperature 0.7 stage for it yet).
5. ``lookup-greedy-gamma4`` (into ``data/traces/reference-lookup``): the model-free drafters on
   every held-out prompt, greedy, gamma 4: transformers' prompt lookup (generic, trained on
   nothing) and datastores of the teacher completions the model drafters were distilled on
   (all tasks: generic, "mixture"; code only and docsum only: fine-tuned), built into
   ``data/drafters/datastores`` when missing; ``lookup-news-greedy-gamma4`` the same on the news
   prompts; ``lookup-greedy-gamma2-8`` prompt lookup at gamma 2 and 8; ``lookup-sampling-t0.7``
   every lookup drafter at temperature 0.7 on the first :data:`SAMPLING_SUBSET` held-out prompts (shipped with
   ``--limit 30``, which keeps the traces under 40 MB).
6. ``heads-greedy-gamma4``, ``heads-news-greedy-gamma4`` and ``heads-greedy-gamma1-2`` (the generic head
   at gamma 1 and 2; into ``data/traces/reference-heads``):
   the feature heads of ``train_heads.py`` (generic, on the mixture; fine-tuned on code and on
   docsum) on every held-out prompt and on the news prompts, greedy, gamma 4; ``heads-greedy-gamma8`` the
   generic head at gamma 8 (shipped with ``--limit 48``, as prompt lookup's gamma 8); ``heads-sampling-t0.7``
   every head at temperature 0.7 on the first
   :data:`SAMPLING_SUBSET` held-out prompts.

Writes ``data/traces/reference`` and its ``manifest.json`` (commands, versions, collector commit,
hardware, time taken). Needs the drafters of ``train_drafters.py``.
Run: ``python scripts/reference/collect_reference.py [STAGE ...] [--limit N]``; ``--limit N`` takes the
first N prompts of the interleaved order (the run id does not change, so a later run without the
limit resumes and completes the stage).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from specsim.collect.models import cache_dir
from specsim.collect.prompts import read_prompts, write_prompts
from specsim.collect.runner import CollectConfig, DrafterSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages import run_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "traces" / "reference"
PROMPTS = ROOT / "data" / "prompts"
DRAFTERS = cache_dir() / "reference" / "drafters"
OUT_LOOKUP = ROOT / "data" / "traces" / "reference-lookup"
OUT_HEADS = ROOT / "data" / "traces" / "reference-heads"
HEADS = cache_dir() / "reference" / "heads"
DATASTORES = Path("data") / "drafters" / "datastores"  # relative to ROOT: run metadata stays portable
TEACHER = Path("data") / "drafters" / "teacher_completions.parquet"
PER_TASK = {"code": 12, "docsum": 12, "explain-long": 12, "explain-short": 24, "qa": 48}
MAX_NEW_TOKENS = 96
NEWS_PROMPTS = 24
#: Held-out prompts (the first of the interleaved order, every task) of the temperature-0.7 lookup stage.
SAMPLING_SUBSET = 40


def heldout_file(counts: dict[str, int], name: str) -> Path:
    """Write the first ``count`` held-out prompts of each task, interleaved across tasks."""
    per_task = []
    for task, count in counts.items():
        heldout = [p for p in read_prompts(PROMPTS / f"{task}.jsonl") if p.extra["split"] == "heldout"]
        per_task.append(heldout[:count])
    prompts = [p for group in itertools.zip_longest(*per_task) for p in group if p is not None]
    path = PROMPTS / name
    write_prompts(prompts, path)
    return path


def datastore(name: str, tasks: list[str] | None, trained_on: str) -> str:
    """The datastore of the teacher completions of ``tasks`` (all when None), built when missing."""
    from specsim.collect.datastore import build_datastore

    path = DATASTORES / f"{name}.parquet"
    if not (ROOT / path).exists():
        build_datastore(ROOT / path, completions=ROOT / TEACHER, tokenizer="smollm2", tasks=tasks, max_ngram=4,
                        trained_on=trained_on)
    return f"datastore:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each stage")
    args = parser.parse_args()
    untrained = DrafterSpec("untrained-4l", "smollm2#layers=4", "untrained", None)
    generic = DrafterSpec("generic-4l", str(DRAFTERS / "generic-4l"), "generic", "mixture")
    code = DrafterSpec("finetuned-code", str(DRAFTERS / "finetuned-code"), "finetuned", "code")
    docsum = DrafterSpec("finetuned-docsum", str(DRAFTERS / "finetuned-docsum"), "finetuned", "docsum")
    rebuilt = DrafterSpec("generic-4l-rebuilt", str(DRAFTERS / "generic-4l-rebuilt"), "generic", "mixture")
    prompts = str(heldout_file(PER_TASK, "reference_heldout.jsonl"))
    drafters = (untrained, generic, code, docsum)
    stages = {
        "greedy-gamma4": CollectConfig(target="smollm2", drafters=drafters, prompts=prompts, out=str(OUT),
                                       gammas=(4,), max_new_tokens=MAX_NEW_TOKENS, seed=0),
        "sampling-t0.7": CollectConfig(target="smollm2", drafters=drafters, prompts=prompts, out=str(OUT),
                                       gammas=(4,), temperatures=(0.7,), max_new_tokens=MAX_NEW_TOKENS, seed=0),
        "greedy-gamma2-6": CollectConfig(target="smollm2", drafters=(generic,), prompts=prompts, out=str(OUT),
                                         gammas=(2, 6), max_new_tokens=MAX_NEW_TOKENS, seed=0),
        "rebuilt-greedy-gamma4-8": CollectConfig(target="smollm2", drafters=(rebuilt,), prompts=prompts,
                                                 out=str(OUT), gammas=(4, 8), max_new_tokens=MAX_NEW_TOKENS, seed=0),
    }
    news = str(heldout_file({"news": NEWS_PROMPTS}, "reference_news_heldout.jsonl"))
    stages["news-greedy-gamma4"] = CollectConfig(target="smollm2", drafters=drafters, prompts=news, out=str(OUT),
                                                 gammas=(4,), max_new_tokens=MAX_NEW_TOKENS, seed=0)
    for name, config in stages.items():
        if not args.stages or name in args.stages:
            run_stage(name, config, OUT, f"python scripts/reference/collect_reference.py {name}", args.limit)
    lookup_stages = ("lookup-greedy-gamma4", "lookup-news-greedy-gamma4", "lookup-greedy-gamma2-8",
                     "lookup-sampling-t0.7")
    if not args.stages or set(lookup_stages) & set(args.stages):
        os.chdir(ROOT)
        lookups = (DrafterSpec("prompt-lookup", "prompt-lookup:2", "generic", None),
                   DrafterSpec("datastore-mixture", datastore("mixture", None, "mixture"), "generic", "mixture"),
                   DrafterSpec("datastore-code", datastore("code", ["code"], "code"), "finetuned", "code"),
                   DrafterSpec("datastore-docsum", datastore("docsum", ["docsum"], "docsum"), "finetuned", "docsum"))
        relative = str(Path(prompts).relative_to(ROOT))
        sampling = PROMPTS / "reference_sampling_subset.jsonl"
        write_prompts(read_prompts(prompts)[:SAMPLING_SUBSET], sampling)
        lookup_configs = {
            "lookup-greedy-gamma4": (lookups, relative, (4,), 0.0),
            "lookup-news-greedy-gamma4": (lookups, str(Path(news).relative_to(ROOT)), (4,), 0.0),
            "lookup-greedy-gamma2-8": (lookups[:1], relative, (2, 8), 0.0),
            "lookup-sampling-t0.7": (lookups, str(sampling.relative_to(ROOT)), (4,), 0.7),
        }
        for name, (chosen, stage_prompts, gammas, temperature) in lookup_configs.items():
            if args.stages and name not in args.stages:
                continue
            config = CollectConfig(target="smollm2", drafters=chosen, prompts=stage_prompts,
                                   out=str(OUT_LOOKUP.relative_to(ROOT)), gammas=gammas, temperatures=(temperature,),
                                   max_new_tokens=MAX_NEW_TOKENS, seed=0)
            run_stage(name, config, OUT_LOOKUP, f"python scripts/reference/collect_reference.py {name}", args.limit)
    heads = (DrafterSpec("head-generic", str(HEADS / "head-generic"), "generic", "mixture"),
             DrafterSpec("head-code", str(HEADS / "head-code"), "finetuned", "code"),
             DrafterSpec("head-docsum", str(HEADS / "head-docsum"), "finetuned", "docsum"))
    for name, stage_prompts in (("heads-greedy-gamma4", prompts), ("heads-news-greedy-gamma4", news)):
        if not args.stages or name in args.stages:
            config = CollectConfig(target="smollm2", drafters=heads, prompts=stage_prompts, out=str(OUT_HEADS),
                                   gammas=(4,), max_new_tokens=MAX_NEW_TOKENS, seed=0)
            run_stage(name, config, OUT_HEADS, f"python scripts/reference/collect_reference.py {name}", args.limit)
    # The simulator's best gamma for the generic head on this CPU is 1 (the verify pass of 5 tokens costs
    # 1.6 plain steps here): gamma 1 and 2 measured, so that the prediction is checked, not assumed; gamma 8
    # for the far end of the draft-index profile; temperature 0.7 for every head on a subset.
    sampling = PROMPTS / "reference_sampling_subset.jsonl"
    write_prompts(read_prompts(prompts)[:SAMPLING_SUBSET], sampling)
    head_stages = {"heads-greedy-gamma1-2": (heads[:1], prompts, (1, 2), 0.0),
                   "heads-greedy-gamma8": (heads[:1], prompts, (8,), 0.0),
                   "heads-sampling-t0.7": (heads, str(sampling), (4,), 0.7)}
    for name, (chosen, stage_prompts, gammas, temperature) in head_stages.items():
        if not args.stages or name in args.stages:
            config = CollectConfig(target="smollm2", drafters=chosen, prompts=stage_prompts, out=str(OUT_HEADS),
                                   gammas=gammas, temperatures=(temperature,), max_new_tokens=MAX_NEW_TOKENS,
                                   seed=0)
            run_stage(name, config, OUT_HEADS, f"python scripts/reference/collect_reference.py {name}", args.limit)


if __name__ == "__main__":
    main()

"""Collect the shipped reference traces: SmolLM2 target, untrained, generic and fine-tuned drafters.

Held-out prompts only (no drafter saw them), taken round-robin across tasks so that a stage
cut short still covers every task. Stages, each resumable (re-running skips prompts already
written):

1. ``greedy-gamma4``: every drafter on every held-out prompt, greedy, gamma 4;
2. ``sampling-t0.7``: every drafter on every held-out prompt, temperature 0.7, gamma 4;
3. ``greedy-gamma2-6``: the generic drafter on every held-out prompt, greedy, gamma 2 and 6.

Writes ``data/traces/reference`` and its ``manifest.json`` (commands, versions, collector commit,
hardware, time taken). Needs the drafters of ``train_drafters.py``.
Run: ``python scripts/reference/collect_reference.py [STAGE ...] [--limit N]``; ``--limit N`` takes the
first N prompts of the interleaved order (the run id does not change, so a later run without the
limit resumes and completes the stage).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from specsim.collect.models import cache_dir
from specsim.collect.prompts import read_prompts, write_prompts
from specsim.collect.runner import CollectConfig, DrafterSpec, collect, library_versions

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "traces" / "reference"
PROMPTS = ROOT / "data" / "prompts"
DRAFTERS = cache_dir() / "reference" / "drafters"
PER_TASK = {"code": 12, "docsum": 12, "explain-long": 12, "explain-short": 24, "qa": 48}
MAX_NEW_TOKENS = 96


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


def collector_commit() -> str:
    """Git commit of the collector code (with ``+dirty`` when specsim/ has local changes)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "specsim") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each stage")
    args = parser.parse_args()
    untrained = DrafterSpec("untrained-4l", "smollm2#layers=4", "untrained", None)
    generic = DrafterSpec("generic-4l", str(DRAFTERS / "generic-4l"), "generic", "mixture")
    code = DrafterSpec("finetuned-code", str(DRAFTERS / "finetuned-code"), "finetuned", "code")
    docsum = DrafterSpec("finetuned-docsum", str(DRAFTERS / "finetuned-docsum"), "finetuned", "docsum")
    prompts = str(heldout_file(PER_TASK, "reference_heldout.jsonl"))
    drafters = (untrained, generic, code, docsum)
    stages = {
        "greedy-gamma4": CollectConfig(target="smollm2", drafters=drafters, prompts=prompts, out=str(OUT),
                                       gammas=(4,), max_new_tokens=MAX_NEW_TOKENS, seed=0),
        "sampling-t0.7": CollectConfig(target="smollm2", drafters=drafters, prompts=prompts, out=str(OUT),
                                       gammas=(4,), temperatures=(0.7,), max_new_tokens=MAX_NEW_TOKENS, seed=0),
        "greedy-gamma2-6": CollectConfig(target="smollm2", drafters=(generic,), prompts=prompts, out=str(OUT),
                                         gammas=(2, 6), max_new_tokens=MAX_NEW_TOKENS, seed=0),
    }
    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"stages": {}}
    for name, config in stages.items():
        if args.stages and name not in args.stages:
            continue
        config = dataclasses.replace(config, limit=args.limit)
        start, commit = time.perf_counter(), collector_commit()

        def progress(done, total, prompt_id, stage=name):
            print(f"[{time.strftime('%H:%M:%S')}] {stage}: {done}/{total} {prompt_id}", flush=True)

        result = collect(config, progress=progress)
        stage = manifest["stages"].setdefault(name, {"wall_s": 0.0})
        stage.update({"run_id": result["run_id"], "prompts": result["prompts_total"],
                      "command": f"python scripts/reference/collect_reference.py {name}"
                                 + (f" --limit {args.limit}" if args.limit else ""),
                      "collector_commit": commit,
                      "config": config.defining_fields()})
        stage["wall_s"] += time.perf_counter() - start
        manifest.update({"versions": library_versions(), "python": platform.python_version(),
                         "platform": platform.platform(),
                         "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                         "torch_threads": __import__("torch").get_num_threads()})
        OUT.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()

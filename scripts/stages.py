"""Resumable collection stages with a manifest, shared by both reference experiments' scripts."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from specsim.collect.runner import CollectConfig, collect, library_versions

ROOT = Path(__file__).resolve().parents[1]


def collector_commit() -> str:
    """Git commit of the collector code (with ``+dirty`` when specsim/ has local changes)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "specsim") else "")


def run_stage(name: str, config: CollectConfig, out: Path, command: str, limit: int | None = None) -> dict:
    """Collect one stage (resumable; ``limit`` takes the first N prompts) and record it in ``out/manifest.json``.

    The manifest keeps, per stage, the run id, prompts, command, collector commit, configuration
    and the wall time summed over the parts it was collected in, with the machine it ran on.
    """
    import torch

    config = dataclasses.replace(config, limit=limit)
    start, commit = time.perf_counter(), collector_commit()

    def progress(done, total, prompt_id):
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {done}/{total} {prompt_id}", flush=True)

    result = collect(config, progress=progress)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"stages": {}}
    stage = manifest["stages"].setdefault(name, {"wall_s": 0.0})
    stage.update({"run_id": result["run_id"], "prompts": result["prompts_total"],
                  "command": command + (f" --limit {limit}" if limit else ""), "collector_commit": commit,
                  "config": config.defining_fields()})
    stage["wall_s"] += time.perf_counter() - start
    manifest.update({"versions": library_versions(), "python": platform.python_version(),
                     "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()})
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return result


def run_stages(stages: dict, description: str) -> None:
    """Command line of a staged script: run the stages named (default: all, in order); unknown ones refused."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("stages", nargs="*", help=f"stages to run: {', '.join(stages)} (default: all, in order)")
    args = parser.parse_args()
    unknown = set(args.stages) - set(stages)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}")
    for name, stage in stages.items():
        if not args.stages or name in args.stages:
            stage()

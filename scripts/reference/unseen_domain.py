"""Predict a task from an unseen domain before measuring it, with and without a probe; then measure it.

The evaluation of issue 12's goal: for a task from a domain no reference task covers, the 90%
interval of ``predict`` should cover the measured speed-up, and a 10-prompt probe should bring the
error within 10%. The domain is this machine's system-package documentation (``/usr/share/doc``:
READMEs and similar prose of Debian packages, Python packages left out), reserved for evaluation:
no drafter is trained on it and no reference task uses it.

Stages (each writes under ``data/eval/sysdoc/`` and skips work already done):

1. ``prompts``: 40 documentation passages (800-2400 characters, at most two per package) as
   summarisation prompts; the first 10 are the probe's, the other 30 are measured.
2. ``probe``: ``specsim probe`` of the reference drafters on the 10 probe prompts (target greedy
   outputs, at most 96 new tokens as in the reference traces, one teacher-forced pass per drafter).
3. ``predict``: fit the greedy reference traces (every task, news included), then predict each
   drafter's speed-up (gamma 4, the reference traces' fitted costs) on the probe prompts' lengths,
   without and with the probe. Written with the time and commit *before* anything is measured.
4. ``collect``: greedy, gamma 4, the three modelled drafters on the 30 measured prompts, with the
   plain-decoding baseline (``data/eval/sysdoc/traces``);
5. ``revise``: the same predictions with the current code, after measuring, in
   ``predictions_revised.json`` and labelled so (``predictions.json`` stays as it was made);
6. ``compare``: measured speed-up (bootstrap interval over sequences) against every prediction:
   covered or not, error in percent; ``comparison.json`` and a Markdown table for ``data/README.md``.

Run: ``python scripts/reference/unseen_domain.py [STAGE ...]`` (default: all, in order). Needs the
reference drafters (``scripts/reference/train_drafters.py``).
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsim.collect.models import cache_dir
from specsim.collect.prompts import Prompt, write_prompts
from specsim.collect.runner import CollectConfig, DrafterSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_prompts import paragraph_chunks  # noqa: E402
from data_card import markdown  # noqa: E402
from stages import collector_commit, run_stage, run_stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "eval" / "sysdoc"
REFERENCE = ROOT / "data" / "traces" / "reference"
DOCS = Path("/usr/share/doc")
SEED = 20261130
PROBE_PROMPTS, MEASURED_PROMPTS = 10, 30
MAX_NEW_TOKENS = 96
GAMMA = 4
LEVEL = 0.9
DRAFTERS = cache_dir() / "reference" / "drafters"
MODELLED = (
    DrafterSpec("generic-4l", str(DRAFTERS / "generic-4l"), "generic", "mixture"),
    DrafterSpec("finetuned-code", str(DRAFTERS / "finetuned-code"), "finetuned", "code"),
    DrafterSpec("finetuned-docsum", str(DRAFTERS / "finetuned-docsum"), "finetuned", "docsum"),
)
#: Licence and packaging boilerplate is not documentation prose.
BOILERPLATE = re.compile(r"copyright|licen[cs]e|warranty|debian/|dpkg-|\bGPL\b", re.IGNORECASE)


def passages() -> list[tuple[str, str]]:
    """(package, passage) pairs of prose from the system's package documentation, sorted."""
    found = []
    for path in sorted(DOCS.rglob("*")):
        name = path.name.lower()
        package = path.relative_to(DOCS).parts[0]
        if (not path.is_file() or path.is_symlink() or "python" in package or "changelog" in name
                or "copyright" in name or not re.match(r"(readme|news|.*\.txt|.*\.md)", name)):
            continue
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode("utf-8", "replace") if name.endswith(".gz") else raw.decode("utf-8",
                                                                                                        "replace")
        found.extend((package, chunk) for chunk in paragraph_chunks(text))
    prose = []
    for package, text in found:
        letters = sum(c.isalpha() or c.isspace() for c in text) / len(text)
        if letters >= 0.85 and not BOILERPLATE.search(text):
            prose.append((package, text))
    return prose


def build_prompts() -> None:
    """The probe's and the measured prompts, at most two passages per package."""
    rng = np.random.default_rng(SEED)
    candidates = passages()
    chosen: list[Prompt] = []
    per_package: dict[str, int] = {}
    for index in rng.permutation(len(candidates)):
        package, text = candidates[index]
        if per_package.get(package, 0) == 2:
            continue
        per_package[package] = per_package.get(package, 0) + 1
        split = "probe" if len(chosen) < PROBE_PROMPTS else "measured"
        chosen.append(Prompt(
            f"sysdoc-{len(chosen):03d}", "sysdoc", "debian-package-docs", messages=({
                "role": "user",
                "content": f"Summarise this part of the documentation of the {package} package in a few sentences."
                           f"\n\n{text}"},),
            extra={"split": split, "package": package}))
        if len(chosen) == PROBE_PROMPTS + MEASURED_PROMPTS:
            break
    OUT.mkdir(parents=True, exist_ok=True)
    write_prompts([p for p in chosen if p.extra["split"] == "probe"], OUT / "probe_prompts.jsonl")
    write_prompts([p for p in chosen if p.extra["split"] == "measured"], OUT / "measured_prompts.jsonl")
    print(f"{len(candidates)} prose passages from {len({p for p, _ in candidates})} packages; wrote "
          f"{PROBE_PROMPTS} probe and {len(chosen) - PROBE_PROMPTS} measured prompts")


def probe() -> None:
    """The probe table of the modelled drafters (skipped when it exists)."""
    path = OUT / "probe.parquet"
    if path.exists():
        print(f"{path} exists")
        return
    from specsim.collect.probe import probe_workload
    from specsim.traces.store import atomic_write_bytes

    start = time.perf_counter()
    table = probe_workload("smollm2", [(d.name, d.model) for d in MODELLED], str(OUT / "probe_prompts.jsonl"),
                           limit=PROBE_PROMPTS, max_new_tokens=MAX_NEW_TOKENS,
                           progress=lambda done, total, prompt_id: print(f"probe {done}/{total} {prompt_id}",
                                                                         flush=True))
    atomic_write_bytes(path, table.to_parquet(index=False))
    print(f"probe: {len(table)} rows in {time.perf_counter() - start:.0f} s")


def predict(path: Path = OUT / "predictions.json", note: str = "made before the task was measured") -> None:
    """Fit the reference traces and predict every drafter without and with the probe, before measuring."""
    if path.exists():
        print(f"{path} exists (predictions are made once)")
        return
    from specsim import workflow
    from specsim.traces import read_traces
    from specsim.workload import resolve_workload

    table = pd.read_parquet(OUT / "probe.parquet")
    workload = resolve_workload(str(OUT / "probe.parquet"))  # the probed prompts' and target outputs' lengths
    start = time.perf_counter()
    outcome = workflow.fit(read_traces(REFERENCE), temperature=0.0, compare=False, seed=0)
    posterior = outcome.result.posterior()
    fit_s = time.perf_counter() - start
    rows = []
    for drafter in MODELLED:
        for with_probe in (False, True):
            prediction = workflow.predict(
                posterior, workload=workload, drafter_kind=drafter.kind, drafter=drafter.name, gamma=GAMMA,
                level=LEVEL, seed=0, probe=table[table["drafter"] == drafter.name] if with_probe else None)
            rows.append({"drafter": drafter.name, "probe": with_probe, **prediction.speedup.to_dict(),
                         "probe_agreement": float(table.loc[table["drafter"] == drafter.name, "agree"].mean())})
    record = {"made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": collector_commit(),
              "note": note, "cost_run_log_sd": posterior.metadata.cost_run_log_sd,
              "fit": {"traces": "data/traces/reference", "temperature": 0.0, "tasks": posterior.metadata.tasks,
                      "diagnostics_passed": bool(outcome.result.diagnostics["passed"]),
                      "warnings": outcome.result.diagnostics["warnings"], "seconds": round(fit_s, 1)},
              "workload": workload.describe(), "gamma": GAMMA, "level": LEVEL, "predictions": rows}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(pd.DataFrame(rows)[["drafter", "probe", "speedup", "speedup_low", "speedup_high", "tokens_per_step",
                              "probe_agreement"]].to_string(index=False))


def revise() -> None:
    """The same predictions with the current code, made after measuring and labelled so.

    The predictions of ``predict`` stay as they were made; a method changed after seeing the
    measurement (here: intervals that carry the costs' drift between collection runs) is
    evaluated on the same probe and workload in ``predictions_revised.json`` (remove it to make it
    anew with the current code; git keeps the earlier revisions).
    """
    predict(OUT / "predictions_revised.json", "made after the task was measured, with the current model: methods "
                                              "revised after seeing the first comparison (cost drift between runs in "
                                              "the interval) and later (zero-sum task and drafter effects, a new "
                                              "task's effect widened by sqrt(1 + 1/n), Gamma scale priors)")


def collect() -> None:
    """Greedy, gamma 4, the modelled drafters on the measured prompts (resumable)."""
    config = CollectConfig(target="smollm2", drafters=MODELLED, prompts=str(OUT / "measured_prompts.jsonl"),
                           out=str(OUT / "traces"), gammas=(GAMMA,), max_new_tokens=MAX_NEW_TOKENS, seed=0)
    run_stage("sysdoc-greedy-gamma4", config, OUT / "traces", "python scripts/reference/unseen_domain.py collect")


def compare() -> None:
    """Measured against predicted, per drafter, without and with the probe."""
    from specsim.analysis.metrics import measured_speedup_interval
    from specsim.traces import read_traces

    sequences = read_traces(OUT / "traces").sequences
    steps = read_traces(OUT / "traces").steps
    rows = []
    records = {"before measuring": json.loads((OUT / "predictions.json").read_text())}
    if (OUT / "predictions_revised.json").exists():
        records["revised after measuring"] = json.loads((OUT / "predictions_revised.json").read_text())
    measured = {}
    for drafter in {prediction["drafter"] for record in records.values() for prediction in record["predictions"]}:
        cell_steps = steps[steps["drafter"] == drafter]
        measured[drafter] = (measured_speedup_interval(sequences[sequences["drafter"] == drafter], level=LEVEL, rng=0),
                             float((cell_steps["n_accepted"] + 1).mean()))
    for made, record in records.items():
        for prediction in record["predictions"]:
            speedup, tokens_per_step = measured[prediction["drafter"]]
            low, high = prediction["speedup_low"], prediction["speedup_high"]
            rows.append({"predictions": made, "drafter": prediction["drafter"], "probe": prediction["probe"],
                         "predicted": prediction["speedup"], "low": low, "high": high, "measured": speedup.estimate,
                         "measured_low": speedup.low, "measured_high": speedup.high,
                         "covered": bool(low <= speedup.estimate <= high),
                         "error_pct": 100 * (prediction["speedup"] - speedup.estimate) / speedup.estimate,
                         "predicted_tokens_per_step": prediction["tokens_per_step"],
                         "measured_tokens_per_step": tokens_per_step,
                         "probe_agreement": prediction["probe_agreement"]})
    frame = pd.DataFrame(rows)
    (OUT / "comparison.json").write_text(json.dumps({
        "predictions_made_at": {made: record["made_at"] for made, record in records.items()}, "rows": rows},
        indent=1) + "\n")
    shown = frame.assign(interval=[f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(frame["low"], frame["high"], strict=True)])
    print(markdown(shown[["predictions", "drafter", "probe", "predicted", "interval", "measured", "covered",
                          "error_pct", "predicted_tokens_per_step", "measured_tokens_per_step", "probe_agreement"]]))


STAGES = {"prompts": build_prompts, "probe": probe, "predict": predict, "collect": collect, "revise": revise,
          "compare": compare}


def main() -> None:
    run_stages(STAGES, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

"""The unseen-domain evaluation again, for the deployed drafter types: lookups and feature heads.

The same domain, prompts and rules as ``unseen_domain.py`` (system-package documentation, 10 probe
prompts, 30 measured ones, predictions written and committed before anything is measured), for
the reference experiment's prompt lookup, datastores (generic mixture, code, docsum) and feature
heads (generic, code, docsum), predicted by the model that holds every drafter type
(``scripts/drafter_types.py``'s reference fit). Stages (each writes under
``data/eval/sysdoc/types/`` and skips work already done):

1. ``probe``: greedy, gamma 4, every drafter on the 10 probe prompts (traces in
   ``types/probe-traces``); the probe is the first drafted token of every step (under greedy
   decoding its acceptance is the drafter's agreement with the target's output there,
   :func:`specsim.workflow.probe_from_traces`);
2. ``predict``: fit the reference experiment (every type), then predict each drafter's speed-up
   (gamma 4, its fitted costs) on the probe prompts' lengths, without and with its probe;
   written with the time and commit before anything is measured;
3. ``collect``: greedy, gamma 4, every drafter on the 30 measured prompts with the plain-decoding
   baseline (``types/traces``);
4. ``compare``: measured speed-up against every prediction, per drafter and per type;
5. ``revise``: the predictions again with the model's chance of drafting at all
   (:mod:`specsim.model.drafting`, added after ``compare`` showed the lookups' tokens per step
   too high), its probe carrying the steps that drafted nothing (``probe-drafting.parquet``, from
   the same probe traces). Written to ``predictions-revised.json``, labelled as made after the
   measurements were known; ``predictions.json`` stays as committed. ``compare-revised`` compares
   them (``comparison-revised.json``).

Run: ``python scripts/reference/unseen_domain_types.py [STAGE ...]``. Needs the reference heads
(``scripts/reference/train_heads.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from specsim.collect.models import cache_dir
from specsim.collect.runner import CollectConfig, DrafterSpec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import drafter_types  # noqa: E402
from data_card import markdown  # noqa: E402
from stages import collector_commit, run_stage, run_stages  # noqa: E402
from unseen_domain import GAMMA, LEVEL, MAX_NEW_TOKENS  # noqa: E402
from unseen_domain import OUT as SYSDOC  # noqa: E402

ROOT = HERE.parents[1]
OUT = SYSDOC / "types"
HEADS = cache_dir() / "reference" / "heads"
DATASTORES = Path("data") / "drafters" / "datastores"  # relative to ROOT: run metadata stays portable
DRAFTERS = (
    DrafterSpec("prompt-lookup", "prompt-lookup:2", "generic", None),
    DrafterSpec("datastore-mixture", f"datastore:{DATASTORES / 'mixture.parquet'}", "generic", "mixture"),
    DrafterSpec("datastore-code", f"datastore:{DATASTORES / 'code.parquet'}", "finetuned", "code"),
    DrafterSpec("datastore-docsum", f"datastore:{DATASTORES / 'docsum.parquet'}", "finetuned", "docsum"),
    DrafterSpec("head-generic", str(HEADS / "head-generic"), "generic", "mixture"),
    DrafterSpec("head-code", str(HEADS / "head-code"), "finetuned", "code"),
    DrafterSpec("head-docsum", str(HEADS / "head-docsum"), "finetuned", "docsum"),
)


def _collect(name: str, prompts: Path, out: Path) -> None:
    import os

    os.chdir(ROOT)
    config = CollectConfig(target="smollm2", drafters=DRAFTERS, prompts=str(prompts.relative_to(ROOT)),
                           out=str(out.relative_to(ROOT)), gammas=(GAMMA,), max_new_tokens=MAX_NEW_TOKENS, seed=0)
    run_stage(name, config, out, f"python scripts/reference/unseen_domain_types.py {name.split('-')[-1]}")


def probe() -> None:
    """Every drafter on the probe prompts; the probe table from their first drafted tokens."""
    from specsim import workflow
    from specsim.traces import read_traces
    from specsim.traces.store import atomic_write_bytes

    path = OUT / "probe.parquet"
    if path.exists():
        print(f"{path} exists")
        return
    _collect("sysdoc-types-probe", SYSDOC / "probe_prompts.jsonl", OUT / "probe-traces")
    tokens = read_traces(OUT / "probe-traces").tokens
    table = workflow.probe_from_traces(tokens, sorted(tokens["prompt_id"].unique()))
    atomic_write_bytes(path, table.to_parquet(index=False))
    print(f"probe: {len(table)} rows")


def predict(revised: bool = False) -> None:
    """Fit every type of the reference experiment and predict each drafter without and with its probe."""
    from specsim import workflow
    from specsim.traces import read_traces
    from specsim.workload import Workload

    path = OUT / ("predictions-revised.json" if revised else "predictions.json")
    if path.exists():
        print(f"{path} exists (predictions are made once)")
        return
    if revised:
        probe_traces = read_traces(OUT / "probe-traces")
        table = workflow.probe_from_traces(probe_traces.tokens, sorted(probe_traces.tokens["prompt_id"].unique()),
                                           probe_traces.steps)
        from specsim.traces.store import atomic_write_bytes

        atomic_write_bytes(OUT / "probe-drafting.parquet", table.to_parquet(index=False))
    else:
        table = pd.read_parquet(OUT / "probe.parquet")
    sequences = read_traces(OUT / "probe-traces").sequences.drop_duplicates("prompt_id")
    workload = Workload(sequences["prompt_len"].to_numpy(), sequences["output_len"].to_numpy(), "sysdoc probe",
                        "file")
    start = time.perf_counter()
    traces, lengths, own = drafter_types.experiment("reference")
    outcome = workflow.fit(traces, compare=False, seed=0, reference_lengths=lengths, own_tasks=own,
                           mass_matrix="low-rank")
    posterior = outcome.result.posterior()
    fit_s = time.perf_counter() - start
    rows = []
    for drafter in DRAFTERS:
        for with_probe in (False, True):
            prediction = workflow.predict(
                posterior, workload=workload, drafter=drafter.name, gamma=GAMMA, level=LEVEL, seed=0,
                probe=table[table["drafter"] == drafter.name] if with_probe else None, own_content=False)
            rows.append({"drafter": drafter.name, "drafter_type": drafter.drafter_type, "probe": with_probe,
                         **prediction.speedup.to_dict(),
                         "probe_agreement": _agreement(table, drafter.name)})
    note = ("revised: made after the measured prompts were decoded and compared (predictions.json), with the "
            "model's chance of drafting at all; it uses the reference traces and the probe only" if revised
            else "made before the measured prompts were decoded by these drafters")
    record = {"made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": collector_commit(),
              "note": note,
              "cost_run_log_sd": posterior.metadata.cost_run_log_sd,
              "fit": {"traces": posterior.metadata.traces, "temperature": 0.0, "tasks": posterior.metadata.tasks,
                      "drafter_types": posterior.metadata.drafter_types,
                      "diagnostics_passed": bool(outcome.result.diagnostics["passed"]),
                      "warnings": outcome.result.diagnostics["warnings"], "seconds": round(fit_s, 1)},
              "workload": workload.describe(), "gamma": GAMMA, "level": LEVEL, "predictions": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(pd.DataFrame(rows)[["drafter", "probe", "speedup", "speedup_low", "speedup_high", "tokens_per_step",
                              "probe_agreement"]].to_string(index=False))


def _agreement(table: pd.DataFrame, drafter: str) -> float:
    """The probe's agreement of a drafter over the steps that drafted."""
    rows = table[table["drafter"] == drafter]
    if "drafted" in rows:
        rows = rows[rows["drafted"].astype(bool)]
    return float(rows["agree"].mean())


def collect() -> None:
    """Greedy, gamma 4, every drafter on the measured prompts (resumable)."""
    _collect("sysdoc-types-collect", SYSDOC / "measured_prompts.jsonl", OUT / "traces")


def compare(revised: bool = False) -> None:
    """Measured against predicted, per drafter and type, without and with the probe."""
    from specsim.analysis.metrics import measured_speedup_interval
    from specsim.traces import read_traces

    traces = read_traces(OUT / "traces")
    suffix = "-revised" if revised else ""
    record = json.loads((OUT / f"predictions{suffix}.json").read_text())
    rows = []
    for prediction in record["predictions"]:
        drafter = prediction["drafter"]
        cell = traces.sequences[traces.sequences["drafter"] == drafter]
        steps = traces.steps[traces.steps["drafter"] == drafter]
        measured = measured_speedup_interval(cell, level=LEVEL, rng=0)
        low, high = prediction["speedup_low"], prediction["speedup_high"]
        rows.append({"drafter": drafter, "drafter_type": prediction["drafter_type"], "probe": prediction["probe"],
                     "predicted": prediction["speedup"], "low": low, "high": high, "measured": measured.estimate,
                     "measured_low": measured.low, "measured_high": measured.high,
                     "covered": bool(low <= measured.estimate <= high),
                     "error_pct": 100 * (prediction["speedup"] - measured.estimate) / measured.estimate,
                     "predicted_tokens_per_step": prediction["tokens_per_step"],
                     "measured_tokens_per_step": float((steps["n_accepted"] + 1).mean()),
                     "predicted_draft_chance": prediction.get("draft_chance", 1.0),
                     "measured_draft_chance": float((steps["n_drafted"] > 0).mean()),
                     "probe_agreement": prediction["probe_agreement"]})
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["drafter_type", "probe"]).agg(
        cells=("covered", "size"), covered=("covered", "sum"),
        mean_absolute_error_pct=("error_pct", lambda e: e.abs().mean())).reset_index()
    (OUT / f"comparison{suffix}.json").write_text(json.dumps(
        {"predictions_made_at": record["made_at"], "note": record["note"], "rows": rows,
         "by_type": summary.to_dict("records")}, indent=1) + "\n")
    shown = frame.assign(interval=[f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(frame["low"], frame["high"], strict=True)])
    print(markdown(shown[["drafter", "drafter_type", "probe", "predicted", "interval", "measured", "covered",
                          "error_pct", "predicted_tokens_per_step", "measured_tokens_per_step",
                          "predicted_draft_chance", "measured_draft_chance", "probe_agreement"]]))
    print(markdown(summary))


STAGES = {"probe": probe, "predict": predict, "collect": collect, "compare": compare,
          "revise": lambda: predict(revised=True), "compare-revised": lambda: compare(revised=True)}


def main() -> None:
    run_stages(STAGES, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

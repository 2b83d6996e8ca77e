"""Held-out acceptance of rebuilt drafters next to the shipped traces' drafters, on the same prompts.

Collects greedy, gamma-4 traces (no baseline: acceptance only) of the rebuilt ``generic-4l``,
``finetuned-code`` and ``finetuned-docsum`` (``$SPECSIM_CACHE/reference/drafters`` unless
``--drafters DIR``) on the first ``--limit`` prompts of ``data/prompts/reference_heldout.jsonl``
(interleaved across tasks: 25 prompts are 5 per task), then prints acceptance (accepted over
drafted tokens, Wilson 95% interval) and tokens per step per drafter x task beside the
``greedy-gamma4`` stage of ``data/traces/reference`` on the same prompts. Under greedy decoding
acceptance does not depend on timing, so the comparison holds across machines and runs.
Run: ``python scripts/reference/compare_rebuilt.py --out /tmp/rebuilt-check [--json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from specsim.collect.models import cache_dir
from specsim.collect.runner import CollectConfig, DrafterSpec, collect

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "traces" / "reference"
PROMPTS = ROOT / "data" / "prompts" / "reference_heldout.jsonl"
DRAFTERS = {"generic-4l": ("generic", "mixture"), "finetuned-code": ("finetuned", "code"),
            "finetuned-docsum": ("finetuned", "docsum")}


def greedy_steps(traces: Path) -> pd.DataFrame:
    steps = pd.read_parquet(traces / "steps")
    return steps[(steps.temperature == 0) & (steps.gamma == 4)]


def compare(rebuilt: pd.DataFrame, shipped: pd.DataFrame) -> pd.DataFrame:
    """Acceptance and tokens per step per drafter x task (and over all tasks), rebuilt beside shipped."""
    shipped = shipped[shipped.prompt_id.isin(set(rebuilt.prompt_id)) & shipped.drafter.isin(set(rebuilt.drafter))]
    rows = []
    for drafter, group in rebuilt.groupby("drafter"):
        for task in [*sorted(group.task.unique()), "all"]:
            new = group if task == "all" else group[group.task == task]
            old = shipped[shipped.drafter == drafter]
            old = old if task == "all" else old[old.task == task]
            accepted, drafted = int(new.n_accepted.sum()), int(new.n_drafted.sum())
            low, high = proportion_confint(accepted, drafted, method="wilson")
            rebuilt_rate, shipped_rate = accepted / drafted, old.n_accepted.sum() / old.n_drafted.sum()
            rows.append({"drafter": drafter, "task": task, "prompts": new.prompt_id.nunique(),
                         "rebuilt": round(rebuilt_rate, 3), "rebuilt_wilson95": f"{low:.3f}-{high:.3f}",
                         "shipped": round(float(shipped_rate), 3),
                         "difference": round(float(rebuilt_rate - shipped_rate), 3),
                         "tokens_per_step_rebuilt": round(float(new.n_emitted.mean()), 2),
                         "tokens_per_step_shipped": round(float(old.n_emitted.mean()), 2)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafters", type=Path, default=cache_dir() / "reference" / "drafters")
    parser.add_argument("--out", type=Path, required=True, help="trace directory for the rebuilt drafters")
    parser.add_argument("--limit", type=int, default=25, help="first N held-out prompts")
    parser.add_argument("--json", action="store_true", help="print the table as JSON records")
    options = parser.parse_args()
    drafters = tuple(DrafterSpec(name, str(options.drafters / name), kind, trained_on)
                     for name, (kind, trained_on) in DRAFTERS.items())
    config = CollectConfig(target="smollm2", drafters=drafters, prompts=str(PROMPTS), out=str(options.out),
                           gammas=(4,), max_new_tokens=96, seed=0, baseline=False, limit=options.limit)
    collect(config)
    table = compare(greedy_steps(options.out), greedy_steps(SHIPPED))
    print(json.dumps(table.to_dict("records"), indent=1) if options.json else table.to_string(index=False))


if __name__ == "__main__":
    main()

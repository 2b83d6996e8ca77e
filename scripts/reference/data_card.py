"""Figures for the data card (data/README.md) from the reference traces, as Markdown tables.

Prints: length quantiles per task; per task x drafter (greedy, gamma 4) the acceptance rate with
its Wilson 95% interval (tokens independent) and a bootstrap 95% interval over sequences, tokens
per step, and the measured speed-up with its bootstrap interval; the widest Wilson half-width per
temperature; the fine-tuned drafters' margin over the generic drafter on their own task with a
paired bootstrap over prompts (both drafters decoded the same prompts); the drafter training
cards' validation agreement.
Run: ``python scripts/reference/data_card.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from specsim.analysis import summarize
from specsim.analysis.metrics import bootstrap_ratio, measured_speedup_interval
from specsim.lengths import length_quantiles, length_table
from specsim.traces import read_traces
from specsim.traces.select import select

ROOT = Path(__file__).resolve().parents[2]


def markdown(frame) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_margin(steps, task: str, drafter: str, reference: str = "generic-4l", n_resamples: int = 4000):
    """Acceptance of ``drafter`` minus ``reference`` on ``task`` (gamma 4), paired bootstrap over prompts."""
    cell = select(steps, task=task, gamma=4)
    counts = cell.groupby(["prompt_id", "drafter"])[["n_accepted", "n_drafted"]].sum().unstack("drafter")
    counts = counts.dropna()
    if counts.empty or drafter not in counts["n_accepted"] or reference not in counts["n_accepted"]:
        return None
    accepted, drafted = counts["n_accepted"], counts["n_drafted"]
    rng = np.random.default_rng(0)
    weights = rng.multinomial(len(counts), np.full(len(counts), 1 / len(counts)), size=n_resamples)

    def rate(name, w):
        return (w @ accepted[name].to_numpy(float)) / (w @ drafted[name].to_numpy(float))

    ones = np.ones(len(counts))
    estimate = rate(drafter, ones) - rate(reference, ones)
    resampled = rate(drafter, weights) - rate(reference, weights)
    low, high = np.quantile(resampled, [0.025, 0.975])
    return rate(drafter, ones), rate(reference, ones), estimate, low, high, len(counts)


def main() -> None:
    traces = read_traces(ROOT / "data" / "traces" / "reference")
    greedy_seq = select(traces.sequences, temperature=0.0)
    print("## Length quantiles (greedy runs, tokens)\n")
    quantiles = length_quantiles(length_table(select(greedy_seq, drafter="generic-4l", gamma=4)))
    print(markdown(quantiles.round(1)))
    for temperature in sorted(traces.sequences["temperature"].unique()):
        steps = select(traces.steps, temperature=temperature)
        sequences = select(traces.sequences, temperature=temperature)
        summary = summarize(steps, sequences, level=0.95)  # the data card's criterion is a Wilson 95% half-width
        rows = []
        for _, row in summary.iterrows():
            cell_steps = select(steps, task=row["task"], drafter=row["drafter"], gamma=row["gamma"])
            per_sequence = cell_steps.groupby("prompt_id")[["n_accepted", "n_drafted"]].sum()
            acceptance = bootstrap_ratio(per_sequence["n_accepted"], per_sequence["n_drafted"], rng=0, level=0.95)
            speed = measured_speedup_interval(
                select(sequences, task=row["task"], drafter=row["drafter"], gamma=row["gamma"]),
                rng=0, level=0.95)
            rows.append({"task": row["task"], "drafter": row["drafter"], "gamma": int(row["gamma"]),
                         "sequences": int(row["sequences"]), "drafted": int(row["drafted"]),
                         "acceptance": row["acceptance_rate"],
                         "wilson_95": f"{row['acceptance_rate_low']:.3f}-{row['acceptance_rate_high']:.3f}",
                         "bootstrap_95": f"{acceptance.low:.3f}-{acceptance.high:.3f}",
                         "tokens_per_step": row["acceptance_length_with_bonus"],
                         "speedup": speed.estimate, "speedup_95": f"{speed.low:.3f}-{speed.high:.3f}"})
        table = pd.DataFrame(rows)
        print(f"\n## Temperature {temperature}\n")
        print(markdown(table))
        half_width = (table["wilson_95"].str.split("-").map(lambda v: (float(v[1]) - float(v[0])) / 2)).max()
        print(f"\nwidest Wilson half-width: {half_width:.3f}")
        for drafter, task in (("finetuned-code", "code"), ("finetuned-docsum", "docsum")):
            margin = paired_margin(steps, task, drafter)
            if margin is not None:
                own, generic, difference, low, high, n = margin
                print(f"{drafter} vs generic-4l on {task} (gamma 4, {n} prompts): acceptance {own:.3f} vs "
                      f"{generic:.3f}, margin {difference:+.3f} (paired bootstrap 95% {low:+.3f} to {high:+.3f})")
    print("\n## Drafter training (validation top-1 agreement with the target, by epoch)\n")
    for card in sorted((ROOT / "data" / "drafters").glob("*.json")):
        data = json.loads(card.read_text())
        if "validation_agreement" not in data:  # the length-controlled experiment's cards (its own section)
            continue
        kept = data.get("kept_epoch", data["epochs"])
        first, last = data["validation_agreement"][0], data["validation_agreement"][kept]
        losses = data["epoch_loss"]
        print(f"- {data['name']}: tasks {', '.join(data['tasks'])}, {data['train_sequences']} sequences, "
              f"{data['epochs']} epochs (kept epoch {kept}), loss {losses[0]:.3f} -> {losses[kept - 1]:.3f}; "
              "agreement " + ", ".join(f"{t} {first.get(t, np.nan):.3f}->{last.get(t, np.nan):.3f}"
                                       for t in sorted(last)))

if __name__ == "__main__":
    main()

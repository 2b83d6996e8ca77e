"""Figures for the length-controlled experiment's data card (data/README.md), model-free.

From ``data/traces/lengths`` (same content, context lengths moved) and ``data/traces/reference``
(content moved): prints Markdown tables and writes ``data/lengths_acceptance_by_context.png``:

1. acceptance (accepted / evaluated drafted tokens) by absolute context position, doubling bins up
   to the longest context, per drafter and regime, with Wilson 90% intervals;
2. per drafter x regime: sequences, drafted tokens, acceptance (Wilson 95% half-width, the
   experiment's criterion), tokens per step and measured speed-up (bootstrap over prompts);
3. the pure length effect: each drafter's acceptance in the longest regime minus the shortest,
   with a bootstrap over prompts (same content, same drafter: only the context length moved);
   beside it, the content effect of the first experiment (a fine-tuned drafter on its own task
   minus on the other tasks, same drafter);
4. the training window x length interaction: (ft-long - ft-short), and (head-long - head-short), in
   the longest regime both were measured in minus the same difference in the shortest, paired by
   prompt.

Run: ``python scripts/lengths/data_card.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from specsim.analysis.length_effects import (
    acceptance_by_context,
    content_effects,
    length_effects,
    regime_of,
    regime_order,
)
from specsim.analysis.metrics import measured_speedup_interval, wilson_interval
from specsim.report.present import format_number, plot_acceptance_by_context
from specsim.traces import read_traces
from specsim.traces.select import select

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = ROOT / "data" / "traces" / "lengths"
REFERENCE = ROOT / "data" / "traces" / "reference"
FIGURE = ROOT / "data" / "lengths_acceptance_by_context.png"


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "".join("| " + " | ".join(format_number(v) for v in row) + " |\n"
                            for row in frame.itertuples(index=False))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = read_traces(LENGTHS)
    tokens = select(traces.tokens, temperature=0.0, gamma=4).assign(regime=lambda f: regime_of(f["prompt_id"]))
    evaluated = tokens[tokens["evaluated"]]

    by_context = acceptance_by_context(tokens)
    fig, ax = plt.subplots(figsize=(9, 4))
    plot_acceptance_by_context(ax, by_context)
    ax.set(title="Same content, context length moved")
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)
    rows = by_context.assign(context=[f"{a}-{b}" for a, b in zip(by_context["context_start"],
                                                                 by_context["context_end"], strict=True)],
                             wilson_90=[f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(by_context["acceptance_low"],
                                                                               by_context["acceptance_high"],
                                                                               strict=True)])
    rows = rows[["drafter", "context", "evaluated", "acceptance", "wilson_90"]]
    print("### Acceptance by absolute context position (greedy, gamma 4)\n")
    print(markdown(rows))

    cells = []
    every = traces.sequences.assign(regime=lambda f: regime_of(f["prompt_id"]))
    all_evaluated = traces.tokens[traces.tokens["evaluated"]].assign(regime=lambda f: regime_of(f["prompt_id"]))
    for (temperature, gamma, drafter, regime), group in every.groupby(["temperature", "gamma", "drafter", "regime"]):
        cell_steps = select(traces.steps, drafter=drafter, temperature=temperature, gamma=gamma)
        cell_steps = cell_steps[regime_of(cell_steps["prompt_id"]) == regime]
        accepted, drafted = int(cell_steps["n_accepted"].sum()), int(cell_steps["n_drafted"].sum())
        cell_tokens = all_evaluated[(all_evaluated["drafter"] == drafter) & (all_evaluated["regime"] == regime)
                                    & (all_evaluated["temperature"] == temperature)
                                    & (all_evaluated["gamma"] == gamma)]
        low, high = wilson_interval(cell_tokens["accepted"].sum(), len(cell_tokens), 0.95)
        speed = measured_speedup_interval(group, rng=0, level=0.95)
        cells.append({"temperature": temperature, "gamma": gamma, "drafter": drafter, "regime": regime,
                      "sequences": len(group), "drafted": drafted,
                      "acceptance_rate": accepted / drafted, "conditional_acceptance": cell_tokens["accepted"].mean(),
                      "wilson_95_half_width": (high - low) / 2,
                      "tokens_per_step": (accepted + len(cell_steps)) / len(cell_steps),
                      "measured_speedup": speed.estimate, "speedup_95": f"{speed.low:.3f}-{speed.high:.3f}"})
    cells = pd.DataFrame(cells).sort_values(["temperature", "gamma", "drafter", "regime"],
                                            key=lambda c: c.map(lambda r: int(r.split("-")[1]))
                                            if c.name == "regime" else c)
    print("\n### Cells (gamma 4; temperature 0 = greedy)\n")
    print(markdown(cells[cells["gamma"] == 4].drop(columns="gamma")))
    for temperature, part in cells[cells["gamma"] == 4].groupby("temperature"):
        print(f"\nwidest Wilson 95% half-width at temperature {temperature:g}: "
              f"{part['wilson_95_half_width'].max():.3f}")
    other = cells[cells["gamma"] != 4]
    if not other.empty:
        print("\n### Cells at gamma 2 and 8 (greedy; one drafter of each type collected there)\n")
        print(markdown(other.drop(columns="temperature")))
        print(f"\nwidest Wilson 95% half-width at gamma 2 and 8: {other['wilson_95_half_width'].max():.3f}")

    print("\n### The length effect alone beside the content effect (90% bootstrap over prompts)\n")
    effects = [length_effects(tokens)]
    if REFERENCE.is_dir():
        reference = read_traces(REFERENCE)
        reference_sequences = select(reference.sequences, temperature=0.0)
        own = {d: t for d, t in reference_sequences.drop_duplicates("drafter").set_index("drafter")[
            "drafter_trained_on"].items() if t in set(reference_sequences["task"])}
        effects.append(content_effects(select(reference.tokens, temperature=0.0, gamma=4), own))
    table = pd.concat(effects, ignore_index=True)
    table["interval_90"] = [f"{lo:+.3f} to {hi:+.3f}" for lo, hi in zip(table["effect_low"], table["effect_high"],
                                                                        strict=True)]
    print(markdown(table[["kind", "drafter", "comparison", "effect", "interval_90"]]))

    rates = evaluated.groupby(["drafter", "regime", "prompt_id"]).agg(accepted=("accepted", "sum"),
                                                                      evaluated=("accepted", "size"))
    for long_name, short_name in (("ft-long", "ft-short"), ("head-long", "head-short")):
        print(f"\n### Training window x length ({long_name} minus {short_name}, longest minus shortest regime "
              "both measured)\n")
        print(window_interaction(rates, long_name, short_name))


def window_interaction(rates: pd.DataFrame, long_name: str, short_name: str) -> str:
    """(long - short window) in the longest regime both drafters were measured in, minus in the shortest.

    Paired by prompt, 2000 bootstrap resamples; one line of text.
    """
    measured = [set(rates.loc[name].index.get_level_values("regime")) for name in (long_name, short_name)
                if name in rates.index.get_level_values("drafter")]
    if len(measured) < 2 or len(measured[0] & measured[1]) < 2:
        return f"not measured: {long_name} and {short_name} share fewer than two regimes"
    regimes = regime_order(sorted(measured[0] & measured[1]))
    gap = {r: (rates.loc[long_name].xs(r, level="regime"), rates.loc[short_name].xs(r, level="regime"))
           for r in (regimes[0], regimes[-1])}
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(2000):
        values = []
        for regime in (regimes[-1], regimes[0]):
            long_rates, short_rates = gap[regime]
            pick = rng.integers(0, len(long_rates), len(long_rates))  # paired by prompt
            values.append(long_rates["accepted"].iloc[pick].sum() / long_rates["evaluated"].iloc[pick].sum()
                          - short_rates["accepted"].iloc[pick].sum() / short_rates["evaluated"].iloc[pick].sum())
        draws.append(values[0] - values[1])
    point = [(gap[r][0]["accepted"].sum() / gap[r][0]["evaluated"].sum()
              - gap[r][1]["accepted"].sum() / gap[r][1]["evaluated"].sum()) for r in (regimes[-1], regimes[0])]
    low, high = np.quantile(draws, [0.05, 0.95])
    return (f"interaction {point[0] - point[1]:+.3f} (90% {low:+.3f} to {high:+.3f}); {long_name} minus {short_name} "
            f"{point[0]:+.3f} at {regimes[-1]}, {point[1]:+.3f} at {regimes[0]}")


if __name__ == "__main__":
    main()

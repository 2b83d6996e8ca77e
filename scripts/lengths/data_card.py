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
4. the fine-tuning x length interaction: (ft-long - ft-short) in the longest regime minus the same
   difference in the shortest, paired by prompt.

Run: ``python scripts/lengths/data_card.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from specsim.report.present import format_number
from specsim.traces import read_traces
from specsim.traces.metrics import measured_speedup_interval, wilson_interval
from specsim.traces.select import select

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = ROOT / "data" / "traces" / "lengths"
REFERENCE = ROOT / "data" / "traces" / "reference"
FIGURE = ROOT / "data" / "lengths_acceptance_by_context.png"
RESAMPLES = 2000


def regime_of(prompt_ids: pd.Series) -> pd.Series:
    return prompt_ids.str.extract(r"^(ctx-\d+)-")[0]


def per_prompt_rates(tokens: pd.DataFrame) -> pd.DataFrame:
    evaluated = tokens[tokens["evaluated"]]
    return evaluated.groupby(["drafter", "regime", "prompt_id"]).agg(
        accepted=("accepted", "sum"), evaluated=("accepted", "size")).reset_index()


def bootstrap_difference(a: pd.DataFrame, b: pd.DataFrame, rng: np.random.Generator) -> tuple[float, float, float]:
    """Acceptance of ``a`` minus ``b`` (ratio of totals), each resampled over its prompts."""
    def resampled(frame: pd.DataFrame) -> np.ndarray:
        weights = rng.multinomial(len(frame), np.full(len(frame), 1 / len(frame)), size=RESAMPLES)
        return (weights @ frame["accepted"].to_numpy()) / (weights @ frame["evaluated"].to_numpy())

    estimate = a["accepted"].sum() / a["evaluated"].sum() - b["accepted"].sum() / b["evaluated"].sum()
    low, high = np.quantile(resampled(a) - resampled(b), [0.025, 0.975])
    return float(estimate), float(low), float(high)


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "".join("| " + " | ".join(format_number(v) for v in row) + " |\n"
                            for row in frame.itertuples(index=False))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    traces = read_traces(LENGTHS)
    tokens = select(traces.tokens, temperature=0.0).assign(regime=lambda f: regime_of(f["prompt_id"]))
    sequences = select(traces.sequences, temperature=0.0).assign(regime=lambda f: regime_of(f["prompt_id"]))
    regimes = sorted(sequences["regime"].unique(), key=lambda r: int(r.split("-")[1]))
    drafters = sorted(sequences["drafter"].unique())

    evaluated = tokens[tokens["evaluated"]]
    edges = 2 ** np.arange(5, int(np.ceil(np.log2(evaluated["context_len"].max()))) + 1)
    evaluated = evaluated.assign(bin=np.searchsorted(edges, evaluated["context_len"].to_numpy(), side="right"))
    by_context = evaluated.groupby(["drafter", "bin"]).agg(accepted=("accepted", "sum"),
                                                           evaluated=("accepted", "size")).reset_index()
    rows = []
    fig, ax = plt.subplots(figsize=(9, 4))
    for drafter, group in by_context.groupby("drafter"):
        group = group[group["evaluated"] >= 30]
        rate = group["accepted"] / group["evaluated"]
        low, high = np.array([wilson_interval(a, n) for a, n in zip(group["accepted"], group["evaluated"],
                                                                     strict=True)]).T
        starts = [0 if b == 0 else int(edges[b - 1]) for b in group["bin"]]
        ax.errorbar(np.array(starts) + 1, rate, yerr=np.clip([rate - low, high - rate], 0, None), marker="o",
                    capsize=2, label=drafter)
        for start, b, r, lo, hi, n in zip(starts, group["bin"], rate, low, high, group["evaluated"], strict=True):
            end = int(edges[b]) if b < len(edges) else int(evaluated["context_len"].max()) + 1
            rows.append({"drafter": drafter, "context": f"{start}-{end - 1}", "evaluated": int(n),
                         "acceptance": r, "wilson_90": f"{lo:.3f}-{hi:.3f}"})
    ax.set(xscale="log", xlabel="context position of the drafted token (tokens, log scale)",
           ylabel="conditional acceptance", ylim=(0, 1), title="Same content, context length moved")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)
    print("### Acceptance by absolute context position (greedy, gamma 4)\n")
    print(markdown(pd.DataFrame(rows)))

    cells = []
    for (drafter, regime), group in sequences.groupby(["drafter", "regime"]):
        cell_steps = select(traces.steps, drafter=drafter, temperature=0.0)
        cell_steps = cell_steps[regime_of(cell_steps["prompt_id"]) == regime]
        accepted, drafted = int(cell_steps["n_accepted"].sum()), int(cell_steps["n_drafted"].sum())
        cell_tokens = evaluated[(evaluated["drafter"] == drafter) & (evaluated["regime"] == regime)]
        low, high = wilson_interval(cell_tokens["accepted"].sum(), len(cell_tokens), 0.95)
        speed = measured_speedup_interval(group, rng=0, level=0.95)
        cells.append({"drafter": drafter, "regime": regime, "sequences": len(group), "drafted": drafted,
                      "acceptance_rate": accepted / drafted, "conditional_acceptance": cell_tokens["accepted"].mean(),
                      "wilson_95_half_width": (high - low) / 2,
                      "tokens_per_step": (accepted + len(cell_steps)) / len(cell_steps),
                      "measured_speedup": speed.estimate, "speedup_95": f"{speed.low:.3f}-{speed.high:.3f}"})
    cells = pd.DataFrame(cells)
    print("\n### Cells (greedy, gamma 4)\n")
    print(markdown(cells))
    print(f"\nwidest Wilson 95% half-width: {cells['wilson_95_half_width'].max():.3f}")

    rates = per_prompt_rates(tokens)
    print("\n### The length effect alone (same content, same drafter; longest minus shortest regime)\n")
    effects = []
    for drafter in drafters:
        longest = rates[(rates["drafter"] == drafter) & (rates["regime"] == regimes[-1])]
        shortest = rates[(rates["drafter"] == drafter) & (rates["regime"] == regimes[0])]
        if len(longest) and len(shortest):
            estimate, low, high = bootstrap_difference(longest, shortest, rng)
            effects.append({"drafter": drafter, "comparison": f"{regimes[-1]} - {regimes[0]}", "effect": estimate,
                            "bootstrap_95": f"{low:+.3f} to {high:+.3f}"})
    if REFERENCE.is_dir():
        reference = read_traces(REFERENCE)
        ref = select(reference.tokens, temperature=0.0, gamma=4)
        ref = ref[ref["evaluated"]].assign(regime=lambda f: f["task"])
        ref_rates = ref.groupby(["drafter", "regime", "prompt_id"]).agg(
            accepted=("accepted", "sum"), evaluated=("accepted", "size")).reset_index()
        for drafter, own in (("finetuned-code", "code"), ("finetuned-docsum", "docsum")):
            mine = ref_rates[(ref_rates["drafter"] == drafter) & (ref_rates["regime"] == own)]
            others = ref_rates[(ref_rates["drafter"] == drafter) & (ref_rates["regime"] != own)]
            if len(mine) and len(others):
                estimate, low, high = bootstrap_difference(mine, others, rng)
                effects.append({"drafter": drafter, "comparison": f"content: own task ({own}) - other tasks "
                                "(first experiment)", "effect": estimate, "bootstrap_95": f"{low:+.3f} to {high:+.3f}"})
    print(markdown(pd.DataFrame(effects)))


if __name__ == "__main__":
    main()

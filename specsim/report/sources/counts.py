# %% [raw]
# ---
# title: "What-if from an engine's counts: acceptance measured in serving, speed-up on your hardware"
# format:
#   html:
#     embed-resources: true
#     code-fold: true
# execute:
#   echo: false
#   warning: false
# jupyter: python3
# ---

# %% [markdown]
# Acceptance counts as a serving engine or benchmark reports them (`specsim import`: vLLM, SGLang,
# Spec-Bench; or `specsim traces counts`), combined with a workload's lengths and the costs of the
# hardware you name (a constant drafter/target cost ratio, Leviathan's c, or a cost profile from
# `specsim profile`). Counts carry no timings, so the costs are always yours. Tokens per step count
# the target's bonus token; intervals draw each draft index's rate from its Beta posterior.

# %% tags=["parameters"]
counts = ""
lengths_from = ""
cost_ratio: float | None = None
cost_profile = ""
tokenizer = ""
gamma = 0
max_gamma = 8
seed = 0
task = ""
drafter = ""
temperature: float | None = None

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from specsim import workflow
from specsim.analysis.metrics import wilson_interval
from specsim.engines import SOURCES
from specsim.report.present import show, table, verdict
from specsim.traces.counts import counts_by_index, read_counts, read_counts_lengths, summarize_counts
from specsim.workload import resolve_workload

warnings.filterwarnings("ignore", category=DeprecationWarning)
if not counts or not lengths_from:
    raise ValueError("give the counts file (counts=...) and the workload (lengths_from=...)")
if bool(cost_profile) == (cost_ratio is not None):
    raise ValueError("give exactly one of cost_ratio and cost_profile: counts carry no timings")
table_of_counts = workflow.select_counts_group(read_counts(counts), task=task or None, drafter=drafter or None,
                                               temperature=temperature, gamma=int(gamma) or None)
chosen_cost, chosen_label = workflow.choose_cost(None if cost_ratio is None else float(cost_ratio),
                                                 cost_profile or None)
assert chosen_cost is not None and chosen_label is not None  # counts carry no timings: one was given above
cost, cost_label = chosen_cost, chosen_label


def _tokenizer():
    from specsim.collect.models import load_tokenizer

    return load_tokenizer(tokenizer)


# lengths_from: a lengths file, or a task whose lengths the counts file carries (specsim traces counts).
workload = resolve_workload(lengths_from, read_counts_lengths(counts), option="lengths_from",
                            tokenizer=_tokenizer if tokenizer else None)
source = str(table_of_counts["source"].iloc[0])
drafter = str(table_of_counts["drafter"].iloc[0])
measured_gamma = int(table_of_counts["gamma"].iloc[0])
gamma = int(gamma) or measured_gamma
result = workflow.what_if_counts(table_of_counts, workload=workload, cost=cost, gamma=gamma, seed=seed)
sweep = pd.DataFrame([{"gamma": g, "speedup": workflow.what_if_counts(table_of_counts, workload=workload, cost=cost,
                                                                       gamma=g, draws=100, seed=seed).speedup}
                      for g in range(1, int(max_gamma) + 1)])
best = sweep.loc[sweep["speedup"].idxmax()]
lines = [verdict(f"{drafter} ({source}) on {workload.name}", result.speedup, result.speedup_low, result.speedup_high,
                 result.level, gamma, cost_label, int(best["gamma"]), float(best["speedup"]))]
kind = source.split()[0]
lines.append(f"Source conventions: {SOURCES.get(kind, 'specsim per-token traces aggregated')}.")
if not result.positions_resolved:
    lines.append("**The source has totals only:** acceptance is assumed the same at every draft index (i.i.d.), "
                 "which overstates long drafts when acceptance falls along the draft.")
if gamma > measured_gamma:
    lines.append(f"Draft lengths past the measured {measured_gamma} reuse the last measured index's acceptance.")
if workload.assumption:
    lines.append(f"Workload: {workload.assumption}.")
display(Markdown("\n\n".join(lines)))

# %% [markdown]
# ## Acceptance by draft index, and the speed-up at each draft length

# %%
by_index = counts_by_index(table_of_counts)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
if len(by_index):
    rate = by_index["accepted"] / by_index["evaluated"]
    low, high = np.array([wilson_interval(int(a), int(n)) for a, n in zip(by_index["accepted"], by_index["evaluated"],
                                                                        strict=True)]).T
    axes[0].errorbar(by_index["draft_index"], rate, yerr=np.clip([rate - low, high - rate], 0, None), marker="o",
                     capsize=3, label=drafter)
    axes[0].set(xlabel="draft index", ylabel="conditional acceptance", ylim=(0, 1),
                title="Acceptance by draft index (90% Wilson)")
else:
    summary = summarize_counts(table_of_counts).iloc[0]
    axes[0].bar([0], [summary["acceptance_rate"]], label=f"{drafter} (totals only)")
    axes[0].set(xlabel="all draft indices pooled", ylabel="acceptance rate", ylim=(0, 1),
                title="Acceptance (totals only)")
axes[0].legend(fontsize=8)
axes[1].plot(sweep["gamma"], sweep["speedup"], marker="o", label=f"{drafter}, {cost_label}")
axes[1].axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
axes[1].set(xlabel="gamma (draft length)", ylabel="expected speed-up (x)", title=f"Best gamma: {int(best['gamma'])}")
axes[1].legend(fontsize=8)
fig.tight_layout()
show(fig)
display(table(pd.DataFrame([{"speedup": result.speedup, "low": result.speedup_low, "high": result.speedup_high,
                             "tokens_per_step": result.tokens_per_step, "best_gamma": int(best["gamma"]),
                             "best_speedup": float(best["speedup"])}]),
              intervals={f"speed-up at gamma {gamma} (x, {100 * result.level:.0f}%)": ("speedup", "low", "high")},
              rename={"tokens_per_step": "tokens per step (bonus counted)", "best_gamma": "best gamma",
                      "best_speedup": "speed-up at best gamma (x)"},
              caption=f"Workload {workload.name}, {len(workload.output_lengths)} sequences; costs: {cost_label}."))

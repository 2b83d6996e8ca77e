# %% [raw]
# ---
# title: "What-if: a drafter's acceptance on another workload's lengths"
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
# The acceptance behaviour (by draft index and sequence position) of one task, measured for one
# drafter, combined with the prompt and output lengths of another task or a lengths file, and the
# drafter's fitted cost model. Speed-up is a ratio of totals; intervals bootstrap the recorded
# sequences; tokens per step count the bonus token.

# %% tags=["parameters"]
traces = "data/traces/reference"
drafter = "generic-4l"
acceptance_from = "code"
lengths_from = "docsum"
gamma = 4
temperature = 0.0
cost_ratio = None
cost_profile = ""
concurrency = None
seed = 0

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from specsim import workflow
from specsim.model import model_cells
from specsim.report.present import drafter_colours, shipped_path, show, table, verdict
from specsim.simulate.acceptance import profile_from_tokens
from specsim.simulate.cost import read_cost_profile_batches
from specsim.simulate.montecarlo import simulate_workload
from specsim.traces import read_traces
from specsim.traces.select import select

warnings.filterwarnings("ignore", category=DeprecationWarning)
traces = shipped_path(traces)
data = read_traces(traces)
cost, cost_label = workflow.choose_cost(None if cost_ratio is None else float(cost_ratio), cost_profile or None,
                                       None if concurrency is None else float(concurrency))
cost_label = cost_label or (
    f"fitted on the traces' own machine ({drafter}, temperature {temperature:g}; "
    f"{data.runs[next(iter(data.runs))].get('device_name', 'unknown device') if data.runs else 'unknown'})")
outcome = workflow.what_if(data, drafter=drafter, acceptance_from=acceptance_from, workload=lengths_from,
                                   gamma=gamma, temperature=temperature, cost=cost, seed=seed)
result, workload = outcome.result, outcome.workload
sweep = workflow.gamma_sweep(data, drafter=drafter, acceptance_from=acceptance_from, workload=workload,
                             temperature=temperature, cost=cost)
best = sweep[sweep["best"]].iloc[0]
break_even = workflow.break_even_cost_ratio(data, drafter=drafter, acceptance_from=acceptance_from, workload=workload,
                                            temperature=temperature)
training = model_cells(*workflow.traces_counts(data, temperature))[0].reference_lengths.get(drafter)
reach = result.extrapolation
lines = [verdict(f"{drafter} on {workload.name}", result.speedup, result.speedup_low, result.speedup_high,
                 result.level, gamma, cost_label, int(best["gamma"]), float(best["speedup"]), break_even)]
lines.append(f"Acceptance measured on **{acceptance_from}**; {result.tokens_per_step:.2f} tokens per step (bonus "
             "token counted, as vLLM and Spec-Bench).")
if reach is not None and reach.extrapolates:
    lines.append(f"**Where the data end:** {100 * reach.share_of_tokens_beyond:.0f}% of this workload's generated "
                 f"tokens lie past position {reach.max_observed_position}, the last one measured; there the last "
                 "measured acceptance is assumed and the interval does not widen (`specsim predict` widens it).")
elif reach is not None:
    lines.append(f"Every generated position of this workload was measured (up to {reach.max_observed_position}).")
display(Markdown("\n\n".join(lines)))

# %% [markdown]
# ## The workload's lengths, the acceptance source's, and the drafter's training data

# %%
tokens = select(data.tokens, drafter=drafter, task=acceptance_from, temperature=temperature)
source = select(data.sequences, drafter=drafter, task=acceptance_from, temperature=temperature)
colours = drafter_colours(sorted(data.sequences["drafter"].unique()))
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
largest = max(workload.total_lengths.max(), 2, *(training if training is not None else [2]))
bins = np.logspace(0, np.log10(largest * 1.1), 30)
axes[0].hist(source["prompt_len"] + source["output_len"], bins=bins, histtype="step", linewidth=1.5,
             label=f"{acceptance_from} (acceptance source)", density=True)
axes[0].hist(workload.total_lengths, bins=bins, histtype="step", linewidth=1.5, label=f"{workload.name} (workload)",
             density=True)
if training is not None:
    axes[0].hist(training, bins=bins, histtype="stepfilled", alpha=0.25, color=colours[drafter],
                 label=f"{drafter} training data", density=True)
axes[0].set(xscale="log", xlabel="total length (tokens, log scale)", ylabel="density", title="Length distributions")
axes[0].legend(fontsize=7)
axes[1].plot(sweep["gamma"], sweep["speedup"], marker="o", color=colours[drafter], label=f"{drafter} (expected)")
axes[1].axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
axes[1].set(xlabel="gamma (draft length)", ylabel="expected speed-up (x)",
            title=f"Best gamma: {int(best['gamma'])}" + ("" if best["speedup"] >= 1 else " (every gamma below 1x)"))
axes[1].legend(fontsize=7)
simulated = simulate_workload(profile_from_tokens(tokens, gamma=gamma), cost or workflow.cost_models(data)[
    (drafter, temperature)], gamma, np.repeat(workload.prompt_lengths, 50), np.repeat(workload.output_lengths, 50),
    rng=seed)
axes[2].hist(simulated.sequence_speedups, bins=40, color="grey", label="simulated sequences")
axes[2].axvline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
axes[2].set(xlabel="per-sequence speed-up (x)", ylabel="sequences", title="Monte Carlo, per sequence")
axes[2].legend(fontsize=7)
fig.tight_layout()
show(fig)

# %% [markdown]
# ## The numbers

# %%
rows = [{"costs": "chosen" if cost is not None else "the traces' own", "speedup": result.speedup,
         "low": result.speedup_low, "high": result.speedup_high, "tokens_per_step": result.tokens_per_step,
         "best_gamma": int(best["gamma"]), "best_speedup": float(best["speedup"])}]
if cost is not None:
    # The same acceptance under the traces' own machine costs, side by side with the chosen hardware.
    outcome = workflow.what_if(data, drafter=drafter, acceptance_from=acceptance_from, workload=workload, gamma=gamma,
                              temperature=temperature, seed=seed)
    own = outcome.result
    own_sweep = workflow.gamma_sweep(data, drafter=drafter, acceptance_from=acceptance_from, workload=workload,
                                     temperature=temperature)
    own_best = own_sweep[own_sweep["best"]].iloc[0]
    rows.append({"costs": "the traces' own", "speedup": own.speedup, "low": own.speedup_low, "high": own.speedup_high,
                 "tokens_per_step": own.tokens_per_step, "best_gamma": int(own_best["gamma"]),
                 "best_speedup": float(own_best["speedup"])})
display(table(pd.DataFrame(rows), intervals={f"speed-up at gamma {gamma} (x, {100 * result.level:.0f}%)": (
              "speedup", "low", "high")},
              rename={"tokens_per_step": "tokens per step (bonus counted)", "best_gamma": "best gamma",
                      "best_speedup": "speed-up at best gamma (x)"},
              caption=f"Workload {workload.name}, {len(workload.output_lengths)} sequences. Chosen costs: "
                      f"{cost_label}. Break-even drafter/target cost ratio with this acceptance: "
                      f"c = {break_even:.3f}."))
display(table(sweep.drop(columns="best"), rename={"speedup": "expected speed-up (x)",
                                                   "tokens_per_step": "tokens per step (bonus counted)"},
              caption="Expected speed-up at each draft length (exact expectation, measured acceptance)."))

# %% [markdown]
# ## Under load
# Acceptance does not depend on how many requests share a forward pass; cost does. With a cost
# profile measured at several batch sizes (`specsim profile --batch-size 1,2,4,8,16`), the
# expected speed-up of the best draft length at each concurrency, and where it falls to 1.

# %%
batches = read_cost_profile_batches(cost_profile) if cost_profile else {}
if len(batches) > 1:
    load = workflow.load_sweep(data, drafter=drafter, acceptance_from=acceptance_from, workload=workload,
                               cost_profile=cost_profile, temperature=temperature)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(load.best["concurrency"], load.best["speedup"], marker="o", color=colours[drafter],
            label=f"{drafter}, best gamma at each load")
    at_gamma = load.table[load.table["gamma"] == gamma]
    ax.plot(at_gamma["concurrency"], at_gamma["speedup"], marker=".", linestyle=":", color=colours[drafter],
            label=f"{drafter}, gamma {gamma}")
    ax.axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
    ax.set(xscale="log", xlabel="concurrency (requests per forward pass, log scale)", ylabel="expected speed-up (x)",
           title="Speed-up under load")
    ax.legend(fontsize=7)
    fig.tight_layout()
    show(fig)
    display(Markdown(f"**Under load:** {load.verdict()}."))
    display(table(load.best, rename={"gamma": "best gamma", "speedup": "expected speed-up (x)"},
                  caption=f"Best draft length at each measured batch size of {cost_profile}."))
else:
    display(Markdown("No load figure: it needs a cost profile measured at several batch sizes "
                     "(`cost_profile=` from `specsim profile --batch-size 1,2,4,8,16`). A constant cost ratio "
                     "assumes memory-bound passes at every load, and so no load effect."))

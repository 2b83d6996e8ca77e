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
seed = 0

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from specsim import workflow
from specsim.lengths import divergences, length_table
from specsim.simulate.acceptance import profile_from_tokens
from specsim.simulate.cost import leviathan_cost_model
from specsim.simulate.montecarlo import simulate_workload
from specsim.traces import read_traces
from specsim.traces.select import select

warnings.filterwarnings("ignore")
data = read_traces(traces)
cost = leviathan_cost_model(float(cost_ratio)) if cost_ratio is not None else None
cost_label = (f"constant cost ratio c = {float(cost_ratio):g}" if cost_ratio is not None
              else f"fitted on the traces ({drafter}, temperature {temperature:g})")
result, workload = workflow.what_if(data, drafter=drafter, acceptance_from=acceptance_from, workload=lengths_from,
                                   gamma=gamma, temperature=temperature, cost=cost, seed=seed)
sweep = workflow.gamma_sweep(data, drafter=drafter, acceptance_from=acceptance_from, workload=workload,
                             temperature=temperature, cost=cost)
source = length_table(select(data.sequences, task=acceptance_from, temperature=temperature))
shift = divergences(source["total_len"], workload.total_lengths)
best = sweep[sweep["best"]].iloc[0]
verdict = "faster than" if result.speedup >= 1 else "slower than"
display(Markdown(
    f"**{drafter}** with the acceptance of **{acceptance_from}** on the lengths of **{workload.name}**, gamma {gamma}: "
    f"expected speed-up **{result.speedup:.3f}x**, {verdict} plain decoding ({100 * result.level:.0f}% interval "
    f"{result.speedup_low:.3f} to {result.speedup_high:.3f}), {result.tokens_per_step:.2f} tokens per step. "
    f"Costs: {cost_label}. Best draft length {int(best['gamma'])} ({best['speedup']:.3f}x). Length shift from "
    f"{acceptance_from} to {workload.name}: JS {shift['js']:.3f}, KS {shift['ks']:.3f}, W1 on log length "
    f"{shift['w1_log']:.3f}."))

# %%
tokens = select(data.tokens, drafter=drafter, task=acceptance_from, temperature=temperature)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
bins = np.logspace(0, np.log10(max(workload.total_lengths.max(), 2) * 1.1), 30)
axes[0].hist(source["total_len"], bins=bins, histtype="step", label=acceptance_from, density=True)
axes[0].hist(workload.total_lengths, bins=bins, histtype="step", label=str(workload.name), density=True)
axes[0].set(xscale="log", xlabel="total length (tokens)", ylabel="density", title="Length distributions")
axes[0].legend(fontsize=8)
axes[1].plot(sweep["gamma"], sweep["speedup"], marker="o", label="expected speed-up")
axes[1].axhline(1, color="black", linewidth=0.8, label="plain decoding (1x)")
axes[1].set(xlabel="gamma (draft length)", ylabel="expected speed-up (x)",
            title=f"Best gamma: {int(best['gamma'])}" + ("" if best["speedup"] >= 1 else " (all below 1x)"))
axes[1].legend(fontsize=8)
simulated = simulate_workload(profile_from_tokens(tokens, gamma=gamma), cost or workflow.cost_models(data)[
    (drafter, temperature)], gamma, np.repeat(workload.prompt_lengths, 50), np.repeat(workload.output_lengths, 50),
    rng=seed)
axes[2].hist(simulated.sequence_speedups, bins=40, color="grey")
axes[2].set(xlabel="per-sequence speed-up (x)", ylabel="simulated sequences", title="Monte Carlo, per sequence")
fig.tight_layout()
plt.show()
display(pd.DataFrame([{k: v for k, v in result.to_dict().items() if k != "sequence_speedup_quantiles"}]).T.rename(
    columns={0: "value"}))

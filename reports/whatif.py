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
seed = 0

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from specsim.lengths import divergences, length_table
from specsim.simulate import fit_cost_model, profile_from_tokens
from specsim.simulate.exact import expected_workload
from specsim.simulate.montecarlo import simulate_workload
from specsim.simulate.whatif import select, what_if
from specsim.traces import read_traces
from specsim.workload import is_lengths_file, read_lengths_file

warnings.filterwarnings("ignore")
data = read_traces(traces)
tokens = select(data.tokens, drafter=drafter, task=acceptance_from, temperature=temperature)
if tokens.empty:
    raise ValueError(f"no tokens for drafter {drafter!r} on task {acceptance_from!r} at temperature {temperature}")
cost = fit_cost_model(select(data.steps, drafter=drafter, temperature=temperature),
                      select(data.sequences, drafter=drafter, temperature=temperature))
if is_lengths_file(str(lengths_from)):
    workload = read_lengths_file(lengths_from)
else:
    workload = length_table(select(data.sequences, task=lengths_from, temperature=temperature))
source = length_table(select(data.sequences, task=acceptance_from, temperature=temperature))
prompt_lengths, output_lengths = workload["prompt_len"].to_numpy(), workload["output_len"].to_numpy()
result = what_if(tokens, cost, gamma, prompt_lengths, output_lengths, rng=seed)
shift = divergences(source["prompt_len"] + source["output_len"], prompt_lengths + output_lengths)
display(Markdown(
    f"**{drafter}** with the acceptance of **{acceptance_from}** on the lengths of **{lengths_from}**, gamma {gamma}: "
    f"expected speed-up **{result.speedup:.3f}x** (95% interval {result.speedup_low:.3f} to "
    f"{result.speedup_high:.3f}), {result.tokens_per_step:.2f} tokens per step. Length shift from "
    f"{acceptance_from} to {lengths_from}: JS {shift['js']:.3f}, KS {shift['ks']:.3f}, W1 on log length "
    f"{shift['w1_log']:.3f}."))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
bins = np.logspace(0, np.log10(max((prompt_lengths + output_lengths).max(), 2) * 1.1), 30)
axes[0].hist(source["prompt_len"] + source["output_len"], bins=bins, histtype="step", label=acceptance_from,
             density=True)
axes[0].hist(prompt_lengths + output_lengths, bins=bins, histtype="step", label=str(lengths_from), density=True)
axes[0].set(xscale="log", xlabel="total length", title="Length distributions")
axes[0].legend(fontsize=8)
gammas = np.arange(1, 9)
curve = [expected_workload(profile_from_tokens(tokens, gamma=int(g)), cost, int(g), prompt_lengths,
                           output_lengths).speedup for g in gammas]
axes[1].plot(gammas, curve, marker="o")
axes[1].axhline(1, color="black", linewidth=0.8)
axes[1].set(xlabel="gamma", ylabel="expected speed-up", title=f"Best gamma: {gammas[int(np.argmax(curve))]}")
simulated = simulate_workload(profile_from_tokens(tokens, gamma=gamma), cost, gamma, np.repeat(prompt_lengths, 50),
                              np.repeat(output_lengths, 50), rng=seed)
axes[2].hist(simulated.sequence_speedups, bins=40, color="grey")
axes[2].set(xlabel="per-sequence speed-up", title="Monte Carlo, per sequence")
fig.tight_layout()
plt.show()
display(pd.DataFrame([result.to_dict()]).T.rename(columns={0: "value"}))

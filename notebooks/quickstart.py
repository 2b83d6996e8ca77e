# %% [markdown]
# # specsim quick start: what-if on a laptop
#
# Load the shipped traces, look at acceptance, and ask what speed-up a drafter would give on a
# workload with other lengths. No GPU and no torch needed.

# %% tags=["parameters"]
traces = "../data/traces/reference"
gamma = 4

# %%
import numpy as np

from specsim import workflow
from specsim.analysis import summarize
from specsim.lengths import divergences, length_table
from specsim.simulate.analytic import walltime_improvement
from specsim.traces import read_traces
from specsim.traces.select import select

data = read_traces(traces)
summarize(data.steps, data.sequences)[["task", "drafter", "gamma", "acceptance_rate", "acceptance_length_with_bonus",
                                       "measured_speedup"]]

# %% [markdown]
# Leviathan et al.'s closed form for a first feel: acceptance 0.6, cost ratio 0.2.

# %%
[round(float(walltime_improvement(0.6, g, 0.2)), 3) for g in range(1, 7)]

# %% [markdown]
# What-if: the first drafter's acceptance on the first task, with the lengths of the last task.

# %%
greedy = select(data.sequences, temperature=0.0)
drafter = sorted(greedy["drafter"].unique())[0]
tasks = sorted(greedy["task"].unique())
source, workload = tasks[0], tasks[-1]
outcome = workflow.what_if(data, drafter=drafter, acceptance_from=source, workload=workload, gamma=gamma,
                                   resamples=50, seed=0)
result, lengths = outcome.result, outcome.workload
shift = divergences(length_table(select(greedy, task=source))["total_len"], lengths.total_lengths)
print(f"{drafter}: {source}'s acceptance on {workload}'s lengths (JS {shift['js']:.2f}): "
      f"{result.speedup:.3f}x [{result.speedup_low:.3f}, {result.speedup_high:.3f}]")
assert np.isfinite(result.speedup)

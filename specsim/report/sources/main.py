# %% [raw]
# ---
# title: "Speed-up vs length divergence for fine-tuned and generic drafters"
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
# **Question.** To what extent does the divergence between the sequence-length distribution of a
# workload and a drafter's training data change the speed-up of speculative decoding, for a
# fine-tuned drafter versus a generic one? Everything below is computed from the traces named in the
# parameters; acceptance rates are accepted/drafted (vLLM) unless marked *conditional*; tokens per
# step count the target's bonus token (vLLM, Spec-Bench); speed-ups are ratios of totals (summed
# plain-decoding wall time over summed speculative wall time).

# %% tags=["parameters"]
# Trace folders fitted as one experiment (comma-separated): the model drafters, the lookups, the heads.
traces = "data/traces/reference,data/traces/reference-lookup,data/traces/reference-heads"
lengths_traces = "data/traces/lengths"
posterior = ""
temperature = 0.0
gamma = 4
draws = 1000
cost_ratio = None
cost_profile = ""
# Batch profiles (comma-separated), each for the drafters of its own drafter's type (model, lookup, feature-head).
load_profile = "data/profiles/smollm2-cpu-batch-model.json,data/profiles/smollm2-cpu-batch-lookup.json"
seed = 0

# %%
import logging
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from specsim import workflow
from specsim.analysis import conditional_acceptance_by_index, summarize
from specsim.analysis.metrics import measured_speedup_interval, wilson_interval
from specsim.glossary import INTERVAL_LEVEL
from specsim.lengths import divergence_matrix, length_table
from specsim.model import fit_baseline, load_posterior, model_cells
from specsim.model.hierarchical import DIAGNOSTIC_THRESHOLDS, SUMMARY_PARAMETERS
from specsim.report.present import drafter_colours, shipped_path, show, table, verdict
from specsim.traces import read_traces
from specsim.traces.counts import token_step_positions
from specsim.traces.select import select
from specsim.traces.store import combine_traces
from specsim.workload import Workload

warnings.filterwarnings("ignore")
pd.set_option("display.precision", 3)
folders = [shipped_path(folder.strip()) for folder in traces.split(",")]
lengths_traces = shipped_path(lengths_traces)
data = combine_traces([read_traces(folder) for folder in folders])
traces = ", ".join(folders)
tokens = select(data.tokens, temperature=temperature)
steps = select(data.steps, temperature=temperature)
sequences = select(data.sequences, temperature=temperature)
drafters = sorted(sequences["drafter"].unique())
tasks = sorted(sequences["task"].unique())
kinds = sequences.drop_duplicates("drafter").set_index("drafter")["drafter_kind"].to_dict()
types = sequences.drop_duplicates("drafter").set_index("drafter")["drafter_type"].to_dict()
colors = drafter_colours(drafters)
display(Markdown(f"Traces: `{traces}`: {len(sequences)} sequences, {len(steps)} steps, {len(tokens)} drafted tokens "
                 f"at temperature {temperature}; tasks {', '.join(tasks)}; drafters "
                 + ", ".join(f"{d} ({types[d]}, {kinds[d]})" for d in drafters) + "."))

# %% [markdown]
# ## Verdict

# %%
at_gamma = sequences[sequences["gamma"] == gamma]
pooled_speedup = {d: measured_speedup_interval(select(at_gamma, drafter=d), rng=seed) for d in drafters
                  if select(at_gamma, drafter=d)["baseline_wall_s"].notna().any()}
best_drafter = max(pooled_speedup, key=lambda d: pooled_speedup[d].estimate)
best_cell = max(((t, best_drafter) for t in tasks if not select(at_gamma, task=t, drafter=best_drafter).empty),
                key=lambda cell: measured_speedup_interval(select(at_gamma, task=cell[0], drafter=cell[1]),
                                                           rng=seed).estimate)
break_even = workflow.break_even_cost_ratio(data, drafter=best_drafter, acceptance_from=best_cell[0],
                                            workload=best_cell[0], temperature=temperature)
device = next(iter(data.runs.values()), {}).get("device_name", "the traces' machine")
interval = pooled_speedup[best_drafter]
lines = [verdict(f"On the measured tasks pooled, the best drafter, {best_drafter},", interval.estimate, interval.low,
                 interval.high, interval.level, gamma, f"as measured on {device}")]
if interval.high < 1:
    lines.append(f"Every drafter is slower than plain decoding on this hardware. With {best_drafter}'s acceptance on "
                 f"{best_cell[0]} (its best task), speculative decoding pays off where a drafter token costs less "
                 f"than **{break_even:.3f}** of a target step (Leviathan's c; `specsim simulate whatif --cost-ratio`).")
lines.append(f"**Where the data end:** contexts up to {int(tokens['context_len'].max())} tokens and generated "
             f"positions up to {int(sequences['output_len'].max()) - 1}; predictions past them extrapolate "
             "(`specsim predict` says so and widens its interval).")
display(Markdown("\n\n".join(lines)))

# %% [markdown]
# ## What was measured

# %%
summary = summarize(steps, sequences)
display(table(summary[["task", "drafter", "drafter_kind", "gamma", "sequences", "drafted", "acceptance_rate",
                       "acceptance_rate_low", "acceptance_rate_high", "acceptance_length_with_bonus",
                       "measured_speedup"]],
              intervals={"acceptance rate (90% Wilson)": ("acceptance_rate", "acceptance_rate_low",
                                                          "acceptance_rate_high")},
              rename={"drafter_kind": "kind", "drafted": "drafted tokens",
                      "acceptance_length_with_bonus": "tokens per step (bonus counted)",
                      "measured_speedup": "measured speed-up (x)"},
              caption="Acceptance rate = accepted / drafted tokens (vLLM); speed-up = plain over speculative wall time "
                      "per generated token, ratio of totals."))

# %% [markdown]
# ## Length distributions per task
# Total length is prompt plus output tokens; divergences use 4 logarithmic bins per doubling.

# %%
lengths = length_table(sequences)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
bins = np.logspace(0, np.log10(lengths["total_len"].max() * 1.1), 30)
for task, group in lengths.groupby("task"):
    axes[0].hist(group["total_len"], bins=bins, histtype="step", linewidth=1.6, label=task, density=True)
axes[0].set(xscale="log", xlabel="total length (tokens)", ylabel="density", title="Total length by task")
axes[0].legend(fontsize=8)
matrix = divergence_matrix({t: g["total_len"].to_numpy() for t, g in lengths.groupby("task")}, "js")
image = axes[1].imshow(matrix.to_numpy(), cmap="viridis", vmin=0, vmax=1)
axes[1].set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right", fontsize=8)
axes[1].set_yticks(range(len(matrix)), matrix.index, fontsize=8)
axes[1].set(title="Jensen-Shannon divergence (bits)", xlabel="task", ylabel="task")
fig.colorbar(image, ax=axes[1], label="JS divergence (bits)")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## Acceptance by draft index and by position in the sequence
# Conditional acceptance: accepted among tokens evaluated at that draft index (a rejection ends the
# step), with 90% Wilson intervals.

# %%
by_index = conditional_acceptance_by_index(tokens[tokens["gamma"] == gamma], by=["drafter"])
tok = tokens[tokens["evaluated"]].assign(step_position=token_step_positions)
tok["position_bin"] = pd.cut(tok["step_position"], [-1, 15, 31, 63, 127, 255, 100_000],
                             labels=["0-15", "16-31", "32-63", "64-127", "128-255", "256+"])
by_position = tok.groupby(["drafter", "position_bin"], observed=True)["accepted"].agg(["sum", "size"]).reset_index()
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for drafter, group in by_index.groupby("drafter"):
    pairs = zip(group["accepted"], group["evaluated"], strict=True)
    low, high = np.array([wilson_interval(a, n) for a, n in pairs]).T
    error = np.clip([group["rate"] - low, high - group["rate"]], 0, None)
    axes[0].errorbar(group["draft_index"], group["rate"], yerr=error, marker="o", capsize=3, label=drafter,
                     color=colors[drafter])
axes[0].set(xlabel="draft index", ylabel="conditional acceptance", title=f"By draft index (gamma {gamma})", ylim=(0, 1))
for drafter, group in by_position.groupby("drafter"):
    rate = group["sum"] / group["size"]
    axes[1].plot(group["position_bin"].astype(str), rate, marker="o", label=drafter, color=colors[drafter])
axes[1].set(xlabel="generated position of the step", ylabel="acceptance", title="By position in the sequence",
            ylim=(0, 1))
axes[0].legend(fontsize=8)
fig.tight_layout()
show(fig)

# %% [markdown]
# ## Acceptance by context position
# Conditional acceptance of drafted tokens by their absolute position in the context (prompt plus
# generated tokens), in doubling bins up to the longest context measured; 90% Wilson intervals.

# %%
evaluated = tokens[tokens["evaluated"]]
edges = 2 ** np.arange(4, int(np.ceil(np.log2(max(evaluated["context_len"].max(), 32)))) + 1)
evaluated = evaluated.assign(context_bin=np.searchsorted(edges, evaluated["context_len"].to_numpy(), side="right"))
by_context = evaluated.groupby(["drafter", "context_bin"], observed=True)["accepted"].agg(["sum", "size"]).reset_index()
fig, ax = plt.subplots(figsize=(11, 3.6))
for drafter, group in by_context.groupby("drafter"):
    group = group[group["size"] >= 20]
    rate = group["sum"] / group["size"]
    low, high = np.array([wilson_interval(a, n) for a, n in zip(group["sum"], group["size"], strict=True)]).T
    centres = np.array([edges[b - 1] * 1.41 if b > 0 else 8 for b in group["context_bin"]])
    ax.errorbar(centres, rate, yerr=np.clip([rate - low, high - rate], 0, None), marker="o", capsize=2,
                label=drafter, color=colors[drafter])
ax.set(xscale="log", xlabel="context position of the drafted token (tokens, log scale)",
       ylabel="conditional acceptance", ylim=(0, 1),
       title=f"Acceptance by context position (up to {int(evaluated['context_len'].max())} tokens)")
ax.legend(fontsize=8)
show(fig)

# %% [markdown]
# ## Measured speed-up per task and drafter
# Bootstrap over sequences (90%); below 1 means speculative decoding was slower than plain decoding
# on this hardware.

# %%
rows = []
for (task, drafter), cell in sequences[sequences["gamma"] == gamma].groupby(["task", "drafter"]):
    if cell["baseline_wall_s"].notna().any():
        interval = measured_speedup_interval(cell, rng=seed)
        rows.append({"task": task, "drafter": drafter, "kind": kinds[drafter], "speedup": interval.estimate,
                     "low": interval.low, "high": interval.high})
measured = pd.DataFrame(rows)
fig, ax = plt.subplots(figsize=(11, 3.4))
width = 0.8 / max(len(drafters), 1)
for i, drafter in enumerate(drafters):
    part = measured[measured["drafter"] == drafter].set_index("task").reindex(tasks)
    x = np.arange(len(tasks)) + i * width
    ax.bar(x, part["speedup"], width, color=colors[drafter], label=drafter,
           yerr=np.clip([part["speedup"] - part["low"], part["high"] - part["speedup"]], 0, None), capsize=2)
ax.set_xticks(np.arange(len(tasks)) + width * (len(drafters) - 1) / 2, tasks)
ax.axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
ax.set(xlabel="task", ylabel="measured speed-up (x)", title=f"Measured speed-up (gamma {gamma})")
ax.legend(fontsize=8)
show(fig)

# %% [markdown]
# ## The hierarchical model
# Binomial counts (beta-binomial) of accepted among evaluated drafted tokens per task x drafter x draft
# index x position bin, with fine-tuning, length divergence, their interaction, draft-index and
# position random walks and task and drafter effects (see `specsim.model.hierarchical`). Untrained
# drafters are left out. Prior predictive check first: acceptance rates the priors allow.

# %%
counts, _ = model_cells(*workflow.traces_counts(data, temperature))
import pymc as pm  # noqa: E402

from specsim.model import build_model  # noqa: E402

logging.getLogger("pymc").setLevel(logging.ERROR)  # after import: PyMC sets its own level on import

with build_model(counts):
    prior = pm.sample_prior_predictive(draws=300, random_seed=seed)
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(prior.prior["acceptance"].values.reshape(-1), bins=40, density=True, color="grey")
ax.set(xlabel="acceptance rate of a cell", ylabel="prior density", title="Prior predictive acceptance")
show(fig)

# %%
import arviz as az  # noqa: E402

if posterior:
    fitted = load_posterior(posterior)
else:
    fitted = workflow.fit(data, temperature=temperature, draws=draws, tune=draws, seed=seed,
                          compare=False).result.posterior()
idata, meta = fitted.idata, fitted.metadata
diagnostics = meta.diagnostics
names = [n for n in SUMMARY_PARAMETERS if n in idata.posterior and np.ptp(idata.posterior[n].values) > 0]
posterior_table = az.summary(idata, var_names=names, hdi_prob=INTERVAL_LEVEL)[
    ["mean", "sd", "hdi_5%", "hdi_95%", "r_hat", "ess_bulk", "ess_tail"]]
baseline = fit_baseline(counts)
side = posterior_table[["mean", "hdi_5%", "hdi_95%"]].join(
    baseline[["estimate", "low", "high"]].rename(columns={"estimate": "glm_estimate", "low": "glm_low",
                                                          "high": "glm_high"}),
    how="left").reset_index(names="parameter")
display(table(side, intervals={"posterior mean (90% HDI)": ("mean", "hdi_5%", "hdi_95%"),
                               "GLM estimate (90% cluster-robust)": ("glm_estimate", "glm_low", "glm_high")},
              caption="Logit scale. A dash: the GLM has no such term (random effects and scales are the "
                      "hierarchical model's own)."))
status = "passed" if diagnostics["passed"] else "FAILED: " + "; ".join(diagnostics["warnings"])
gates = DIAGNOSTIC_THRESHOLDS
display(Markdown(f"**Sampler diagnostics** ({status}): max R-hat {diagnostics['max_r_hat']:.3f} (gate "
                 f"{gates['max_r_hat']}), min bulk ESS {diagnostics['min_ess_bulk']:.0f} and tail ESS "
                 f"{diagnostics['min_ess_tail']:.0f} (gates {gates['min_ess_bulk']} and {gates['min_ess_tail']}), "
                 f"{diagnostics['divergences']} divergences (gate {gates['max_divergences']}), min E-BFMI "
                 f"{diagnostics['min_bfmi']:.2f} (gate {gates['min_bfmi']})."))
gaps = side.dropna(subset=["glm_estimate"]).set_index("parameter")
disagree = [name for name in gaps.index
            if not (gaps.loc[name, "glm_low"] <= gaps.loc[name, "mean"] <= gaps.loc[name, "glm_high"])]
if disagree:
    display(Markdown(
        f"**Why the GLM and the posterior differ** on {', '.join(f'`{n}`' for n in disagree)}: the GLM treats "
        "every drafted token as independent and has no task or drafter effects, so a contrast such as "
        "`b_finetuned` absorbs whatever differs between the few drafters and tasks behind it (its intervals are "
        f"cluster-robust over only {len(meta.tasks)} tasks). The hierarchical model gives each task and drafter "
        "its own effect (summing to zero within a kind), so its `b_finetuned` is the difference of the kinds' "
        "means after those effects, with over-dispersion (kappa) on top. Where they disagree, the GLM's figure "
        "is the pooled association and the posterior's the adjusted one; the predictions use the posterior."))
effects = [name for name in ("task_effect", "drafter_effect") if name in idata.posterior]
if effects:
    axes_forest = az.plot_forest(idata, var_names=effects, combined=True, hdi_prob=INTERVAL_LEVEL,
                                 figsize=(7, 0.35 * sum(idata.posterior[n].shape[-1] for n in effects) + 1.5))
    axes_forest[0].set(xlabel="effect on logit acceptance (posterior mean, 90% HDI)", ylabel="task / drafter",
                       title="Task and drafter effects")
    axes_forest[0].axvline(0, color="black", linewidth=0.8, linestyle="--")
    show(axes_forest[0].figure)
if meta.loo_comparison:
    display(table(pd.DataFrame(meta.loo_comparison), rename={"elpd_loo": "elpd (LOO)", "elpd_diff": "elpd difference",
                                                            "dse": "standard error of difference"},
                  caption="PSIS-LOO comparison, with vs without the divergence terms."))

# %% [markdown]
# ## Speed-up vs length divergence, with posterior bands
# Posterior predictive expected speed-up of a new task (its effect drawn from the task population) with
# the pooled lengths of all measured tasks, for each drafter kind, as the divergence grows; measured
# cells are the points (at their task's divergence to the drafter's training data).

# %%
cost_models = {d: model for (d, t), model in workflow.cost_models(data).items() if t == temperature}
pooled_lengths = length_table(sequences)
pooled = Workload(pooled_lengths["prompt_len"].to_numpy(), pooled_lengths["output_len"].to_numpy(), "pooled", "file")
grid = np.linspace(0, max(0.05, counts.cells["divergence"].max()), 9)
fitted_types = list(fitted.metadata.drafter_types)
fig, axes = plt.subplots(1, len(fitted_types), figsize=(4.5 * len(fitted_types), 3.8), sharey=True, squeeze=False)
curves = {}
for drafter_type, ax in zip(fitted_types, axes[0], strict=True):
    for kind, color in (("generic", "tab:blue"), ("finetuned", "tab:red")):
        members = [d for d in drafters if kinds[d] == kind and types[d] == drafter_type and d in cost_models]
        if not members:
            continue
        cost = cost_models[members[0]]
        preds = [workflow.predict(fitted, workload=pooled, drafter_kind=kind, drafter_type=drafter_type,
                                  divergence=float(x), gamma=gamma, cost=cost, n_draws=200, seed=seed).speedup
                 for x in grid]
        curves[(drafter_type, kind)] = preds
        ax.plot(grid, [p.mean for p in preds], color=color, label=f"{kind} (posterior mean)")
        ax.fill_between(grid, [p.low for p in preds], [p.high for p in preds], color=color, alpha=0.2,
                        label=f"{kind} 90% band")
    ax.axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
    ax.set(xlabel="JS divergence of total length", ylabel="speed-up (x)", title=drafter_type)
cell_divergence = counts.cells.drop_duplicates(["task", "drafter"]).set_index(["task", "drafter"])["divergence"]
for _, row in measured.iterrows():
    if (row["task"], row["drafter"]) in cell_divergence.index and types[row["drafter"]] in fitted_types:
        ax = axes[0][fitted_types.index(types[row["drafter"]])]
        ax.scatter(cell_divergence[(row["task"], row["drafter"])], row["speedup"],
                   color="tab:red" if kinds[row["drafter"]] == "finetuned" else "tab:blue", edgecolor="black", zorder=3)
axes[0][-1].legend(fontsize=8)
fig.suptitle(f"Speed-up vs length divergence per drafter type (gamma {gamma}; each type's own fitted costs)")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## Speed-up as the workload's lengths move
# The same pooled workload with every prompt and output length scaled by a factor, predicted for each
# fitted drafter: the length covariate is recomputed from the scaled lengths against the drafter's
# training lengths, the positions the workload visits and the context-dependent costs follow the
# lengths. Hollow markers: the workload reaches generated positions the traces never observed for
# that drafter (the interval widens there; `predict` says so).

# %%
factors = [0.5, 1, 2, 4, 8]
fig, ax = plt.subplots(figsize=(8, 4))
scaled_rows = []
for drafter in [d for d in fitted.metadata.drafters if d in cost_models]:
    points = []
    for factor in factors:
        scaled = Workload(np.maximum(np.rint(pooled.prompt_lengths * factor), 0).astype(int),
                          np.maximum(np.rint(pooled.output_lengths * factor), 1).astype(int), f"pooled x{factor}",
                          "file")
        prediction = workflow.predict(fitted, workload=scaled, drafter_kind=kinds[drafter], drafter=drafter,
                                      gamma=gamma, cost=cost_models[drafter], n_draws=100, seed=seed).speedup
        extrapolates = bool(prediction.extrapolation is not None and prediction.extrapolation.extrapolates)
        points.append((factor, prediction, extrapolates))
        scaled_rows.append({"drafter": drafter, "length factor": factor, "covariate": prediction.divergence,
                            "speedup": prediction.mean, "low": prediction.low, "high": prediction.high,
                            "extrapolates": "yes" if extrapolates else "no"})
    x = np.array([f for f, _, _ in points])
    mean = np.array([p.mean for _, p, _ in points])
    ax.plot(x, mean, color=colors[drafter], label=drafter)
    ax.fill_between(x, [p.low for _, p, _ in points], [p.high for _, p, _ in points], color=colors[drafter],
                    alpha=0.15)
    for f, p, out in points:
        ax.scatter(f, p.mean, color="white" if out else colors[drafter], edgecolor=colors[drafter], zorder=3)
ax.axhline(1, color="black", linewidth=0.8, linestyle="--")
ax.set(xscale="log", xlabel="workload length factor (prompt and output lengths scaled; log scale)",
       ylabel="predicted speed-up (x)", title=f"Speed-up as the lengths move (gamma {gamma}, 90% bands)")
ax.legend(fontsize=8)
show(fig)
display(table(pd.DataFrame(scaled_rows), intervals={"speed-up (x), 90%": ("speedup", "low", "high")},
              caption="Predicted speed-up of the pooled workload with its lengths scaled; covariate: the fit's "
                      "length measure against the drafter's training lengths."))

# %% [markdown]
# ## Best draft length per workload
# Exact expected speed-up (dynamic programming over positions) from each task x drafter's measured
# acceptance profile, own lengths and the drafter's fitted cost model; with a chosen cost model
# (`cost_ratio` or `cost_profile` parameters) the same acceptance under those costs, side by side.

# %%
chosen_cost, chosen_label = workflow.choose_cost(None if cost_ratio is None else float(cost_ratio),
                                                 cost_profile or None)
best_rows = []
curve_rows = []
for task, drafter in tokens[["task", "drafter"]].drop_duplicates().itertuples(index=False):
    sweep = workflow.gamma_sweep(data, drafter=drafter, acceptance_from=task, workload=task, temperature=temperature)
    speeds = sweep["speedup"].tolist()
    curve_rows.append((task, drafter, speeds))
    row = {"task": task, "drafter": drafter, "best_gamma": int(sweep.loc[sweep["best"], "gamma"].iloc[0]),
           "best_speedup": max(speeds), f"speedup_at_gamma_{gamma}": speeds[gamma - 1]}
    if chosen_cost is not None:
        chosen = workflow.gamma_sweep(data, drafter=drafter, acceptance_from=task, workload=task,
                                      temperature=temperature, cost=chosen_cost)
        row.update({"best_gamma_chosen": int(chosen.loc[chosen["best"], "gamma"].iloc[0]),
                    "best_speedup_chosen": float(chosen["speedup"].max()),
                    f"speedup_at_gamma_{gamma}_chosen": float(chosen["speedup"].iloc[gamma - 1])})
    best_rows.append(row)
best = pd.DataFrame(best_rows)
fig, axes = plt.subplots(1, len(tasks), figsize=(3 * len(tasks), 3), sharey=True, squeeze=False)
for task, drafter, speeds in curve_rows:
    ax = axes[0][tasks.index(task)]
    ax.plot(range(1, 9), speeds, marker=".", color=colors[drafter], label=drafter)
    ax.set(title=task, xlabel="gamma (draft length)", ylabel="expected speed-up (x)")
for ax in axes[0]:
    ax.axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
axes[0][-1].legend(fontsize=7)
fig.tight_layout()
show(fig)
display(table(best, rename={"best_gamma": "best gamma", "best_speedup": "speed-up at best gamma (x)",
                            f"speedup_at_gamma_{gamma}": f"speed-up at gamma {gamma} (x)",
                            "best_gamma_chosen": f"best gamma, {chosen_label}",
                            "best_speedup_chosen": f"speed-up at best gamma, {chosen_label} (x)",
                            f"speedup_at_gamma_{gamma}_chosen": f"speed-up at gamma {gamma}, {chosen_label} (x)"},
              caption="The traces' own machine costs" + (f", and {chosen_label} beside them" if chosen_label
                                                          else "; give cost_ratio or cost_profile to compare with "
                                                               "other hardware")))

# %%
zigzag = [(task, drafter) for task, drafter, speeds in curve_rows
          if int(np.sum(np.diff(np.sign(np.diff(speeds))) != 0)) > 1]
if zigzag:
    task, drafter = zigzag[0]
    table_of_verify = cost_models[drafter].verify_table
    display(Markdown(
        f"**Why some curves zig-zag** ({len(zigzag)} of {len(curve_rows)}, e.g. {drafter} on {task}): under the "
        "traces' own costs each gamma's verify pass costs what it was measured to cost, and on this CPU that is "
        "not monotone in the number of tokens verified (" + ", ".join(
            f"gamma {g}: {1000 * v:.1f} ms" for g, v in sorted(table_of_verify.items())) + "): batched matrix "
        "kernels run some widths faster than narrower ones. The acceptance side is smooth; the zig-zag is the "
        "hardware's. Gammas never measured take the linear fit through the measured ones."))

# %% [markdown]
# ## Under load
# Acceptance does not depend on how many requests share a forward pass; cost does. Under the cost
# profiles `load_profile` (`specsim profile --batch-size 1,2,4,...`: the target's plain and verify
# passes and a drafter's step timed with B requests together; each profile for the drafters of its
# own drafter's type, a type without one left out), each task x drafter's measured
# acceptance and own lengths give the expected speed-up at each concurrency, at the best draft
# length for that load, and the break-even concurrency above which speculation stops paying.

# %%
import json
from pathlib import Path

from specsim.simulate.cost import read_cost_profile_batches

load_rows = []


def profile_type(path: str) -> str:
    """The drafter type a batch profile timed (its drafter's method: a lookup, a head, else a model)."""
    method = json.loads(Path(path).read_text()).get("drafter", {}).get("method", "model")
    return {"prompt-lookup": "lookup", "datastore": "lookup", "feature-head": "feature-head"}.get(method, "model")


load_profiles = {profile_type(path): path for path in (shipped_path(p.strip()) for p in load_profile.split(","))
                 if path and Path(path).is_file()}
load_sizes = sorted(set.intersection(*(set(read_cost_profile_batches(p)) for p in load_profiles.values()))
                    ) if load_profiles else []
if len(load_sizes) > 1:
    fig, axes = plt.subplots(1, len(tasks), figsize=(3 * len(tasks), 3), sharey=True, squeeze=False)
    for task, drafter in tokens[["task", "drafter"]].drop_duplicates().itertuples(index=False):
        if types[drafter] not in load_profiles:
            continue  # no batch profile of this drafter type: its costs under load were not measured
        load = workflow.load_sweep(data, drafter=drafter, acceptance_from=task, workload=task,
                                   cost_profile=load_profiles[types[drafter]], temperature=temperature)
        ax = axes[0][tasks.index(task)]
        ax.plot(load.best["concurrency"], load.best["speedup"], marker=".", color=colors[drafter], label=drafter)
        ax.set(xscale="log", title=task, xlabel="concurrency (log scale)", ylabel="speed-up, best gamma (x)")
        first, last = load.best.iloc[0], load.best.iloc[-1]
        load_rows.append({"task": task, "drafter": drafter, "speedup_first": float(first["speedup"]),
                          "gamma_first": int(first["gamma"]), "speedup_last": float(last["speedup"]),
                          "gamma_last": int(last["gamma"]),
                          "pays_at": ", ".join(f"{c:g}" for c in load.pays_at) or "none",
                          "break_even": load.break_even_concurrency})
    for ax in axes[0]:
        ax.axhline(1, color="black", linewidth=0.8, linestyle="--", label="plain decoding (1x)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    show(fig)
    loads = pd.DataFrame(load_rows)
    smallest, largest = load_sizes[0], load_sizes[-1]
    display(table(loads, rename={"speedup_first": f"speed-up at {smallest} (x)",
                                 "gamma_first": f"best gamma at {smallest}",
                                 "speedup_last": f"speed-up at {largest} (x)", "gamma_last": f"best gamma at {largest}",
                                 "pays_at": "faster at (batch sizes)", "break_even": "break-even concurrency"},
                  caption=f"Costs of {', '.join(load_profiles.values())} (each for its drafter type; a type without "
                          "a profile is left out) at batch sizes {', '.join(map(str, load_sizes))} (not the traces' "
                          "own costs, which are batch size 1); linear between measured sizes. A dash: no crossing "
                          "(faster at every size or at none)."))
    paying = loads[loads["pays_at"] != "none"]
    load_line = (f"- **Under load** ({load_profile}): {len(paying)} of {len(loads)} task x drafter cells are faster "
                 f"than plain decoding at some concurrency between {smallest} and {largest}")
    crossings = loads["break_even"].dropna()
    load_line += (f"; where they stop paying, the break-even concurrency is {crossings.min():.1f} to "
                  f"{crossings.max():.1f}." if len(crossings) else ".")
    display(Markdown(load_line[2:]))
else:
    load_line = ""
    display(Markdown(f"No load figure: `load_profile` (`{load_profile or 'not given'}`) must be a cost profile "
                     "measured at several batch sizes (`specsim profile --batch-size 1,2,4,8,16`). A constant "
                     "cost ratio assumes memory-bound passes at every load, and so no load effect."))

# %% [markdown]
# ## Measured vs predicted speed-up
# *Simulator*: exact expectation from the cell's own acceptance, lengths and the drafter's cost model.
# *Model*: posterior predictive mean and 90% interval for the cell's task and drafter.

# %%
validation = workflow.validate(data).cells
validation = validation[(validation["gamma"] == gamma) & (validation["temperature"] == temperature)]
model_rows = []
for _, row in validation.iterrows():
    if kinds[row["drafter"]] not in ("generic", "finetuned"):
        model_rows.append({"model_mean": np.nan, "model_low": np.nan, "model_high": np.nan})
        continue
    cell = length_table(select(sequences, task=row["task"], drafter=row["drafter"]))
    cell_workload = Workload(cell["prompt_len"].to_numpy(), cell["output_len"].to_numpy(), row["task"], "task")
    prediction = workflow.predict(fitted, workload=cell_workload, drafter_kind=kinds[row["drafter"]],
                                  drafter=row["drafter"], gamma=gamma, cost=cost_models[row["drafter"]],
                                  divergence=float(cell_divergence.get((row["task"], row["drafter"]), 0.0)),
                                  n_draws=200, seed=seed).speedup
    model_rows.append({"model_mean": prediction.mean, "model_low": prediction.low, "model_high": prediction.high})
compared = pd.concat([validation.reset_index(drop=True), pd.DataFrame(model_rows)], axis=1)
compared["model_covers"] = (compared["model_low"] <= compared["measured_speedup"]) & (
    compared["measured_speedup"] <= compared["model_high"])
display(table(compared[["task", "drafter", "sequences", "measured_speedup", "predicted_speedup", "error_pct",
                        "model_mean", "model_low", "model_high", "model_covers"]],
              intervals={"model speed-up (x, 90%)": ("model_mean", "model_low", "model_high")},
              rename={"measured_speedup": "measured (x)", "predicted_speedup": "simulator (x)",
                      "error_pct": "simulator error (%)", "model_covers": "model interval covers"},
              caption="A dash: the untrained drafter is not part of the model's drafter population."))
mape = compared["error_pct"].abs().mean()
display(Markdown(f"Simulator mean absolute percentage error: **{mape:.1f}%**; model intervals cover "
                 f"{int(compared['model_covers'].sum())} of {int(compared['model_low'].notna().sum())} cells "
                 "(in-sample; `specsim loto` gives the out-of-sample coverage)."))

# %% [markdown]
# ## How length changes each drafter type's speed-up
# For each drafter type and kind, a new drafter of that type on a new task decodes the pooled
# workload under its type's fitted costs; the speed-up ratio between one doubling of context past the
# drafter's training window and inside it, and between length divergence 0.1 and 0, isolates the
# acceptance side of each length effect (the lengths and costs are the same in both arms). From
# this fit and, where it has been run, from the length-controlled experiment's
# (`python scripts/drafter_types.py lengths`, `data/eval/drafter-types/lengths.json`), where content
# is fixed and only the context moves. Where no cell of a type reaches past a training window the
# ratio per doubling is the prior's, not a measurement (the table says so). A lookup has no training
# window: its length effect is how often it finds a match at all, which rises with the context it
# searches; the ratio per doubling of context doubles every position bin's context and keeps its
# acceptance.

# %%
type_effects = workflow.length_effects_by_type(
    fitted, workload=pooled, gamma=gamma, seed=seed, n_draws=200,
    cost={t: cost_models[next(d for d in drafters if types[d] == t and d in cost_models)] for t in fitted_types})
sources = {"this fit": type_effects}
controlled_answer = Path(shipped_path("data/eval/drafter-types/lengths.json"))
if controlled_answer.is_file():
    sources["length-controlled experiment"] = pd.DataFrame(json.loads(controlled_answer.read_text())["length_effects"])
type_rows = pd.concat([frame.assign(source=name) for name, frame in sources.items()], ignore_index=True)
# A length-controlled answer written before the chance of drafting had a context term lacks its columns.
for column in ("per_context_doubling", "per_context_doubling_low", "per_context_doubling_high"):
    type_rows[column] = type_rows.get(column, np.nan)
type_rows["draft_context_terms"] = type_rows.get("draft_context_terms", pd.Series(False)).fillna(False).astype(bool)
display(table(type_rows[["source", "drafter_type", "drafter_kind", "per_doubling", "per_doubling_low",
                         "per_doubling_high", "per_divergence_step", "per_divergence_step_low",
                         "per_divergence_step_high", "per_context_doubling", "per_context_doubling_low",
                         "per_context_doubling_high", "window_measured", "measured_drafters"]],
              intervals={"speed-up ratio per doubling past the window (90%)": ("per_doubling", "per_doubling_low",
                                                                               "per_doubling_high"),
                         "speed-up ratio per +0.1 divergence (90%)": ("per_divergence_step",
                                                                      "per_divergence_step_low",
                                                                      "per_divergence_step_high"),
                         "speed-up ratio per doubling of context, through the chance of drafting (90%)": (
                             "per_context_doubling", "per_context_doubling_low", "per_context_doubling_high")},
              rename={"drafter_type": "type", "drafter_kind": "kind", "window_measured": "cells past a window",
                      "measured_drafters": "measured drafters"},
              caption="Ratios below 1: the speed-up falls. The same lengths and costs in both arms; past the window "
                      "and per divergence move acceptance only, per doubling of context moves only a lookup's "
                      "chance of drafting at all (empty where the fit has no such term)."))
type_lines = []
for row in type_rows.itertuples(index=False):
    if row.draft_context_terms:
        resolved = not (row.per_context_doubling_low <= 1 <= row.per_context_doubling_high)
        type_lines.append(f"- **{row.drafter_kind} {row.drafter_type}** ({row.source}): each doubling of the context "
                          f"it searches multiplies the speed-up by {row.per_context_doubling:.3f} (90% "
                          f"{row.per_context_doubling_low:.3f} to {row.per_context_doubling_high:.3f}) through its "
                          "chance of drafting at all" + ("" if resolved else "; not distinguishable from no change")
                          + ".")
    if not row.window_measured:
        continue
    resolved = not (row.per_doubling_low <= 1 <= row.per_doubling_high)
    type_lines.append(f"- **{row.drafter_kind} {row.drafter_type}** ({row.source}): each doubling of context past "
                      f"its training window multiplies the speed-up by {row.per_doubling:.3f} (90% "
                      f"{row.per_doubling_low:.3f} to {row.per_doubling_high:.3f})"
                      + ("" if resolved else "; not distinguishable from no change") + ".")

# %% [markdown]
# ## The length effect alone: a length-controlled experiment
# In the traces above, a fine-tuned drafter's own task is also its own length distribution, so
# length and content move together. The length-controlled experiment (`lengths_traces`) fixes the
# content (held-out standard-library source files) and moves only the context length, from about
# 128 to about 2048 tokens, for a generic drafter and two drafters fine-tuned on the same content at
# short and long windows. Below: acceptance by absolute context position there, and the length
# effect alone (longest minus shortest regime, same drafter) beside the content effect of the
# traces above (a fine-tuned drafter on its own task minus on the other tasks); 90% bootstrap
# intervals over prompts, no model.

# %%
from specsim.analysis.length_effects import acceptance_by_context, content_effects, length_effects
from specsim.report.present import plot_acceptance_by_context

length_lines = []
effects = pd.DataFrame()
if lengths_traces and Path(lengths_traces).is_dir():
    controlled = read_traces(lengths_traces)
    # One gamma (a drafter measured at several would mix them): the report's, else the experiment's most common.
    controlled_gammas = select(controlled.tokens, temperature=0.0)["gamma"]
    controlled_gamma = gamma if (controlled_gammas == gamma).any() else int(controlled_gammas.mode().iloc[0])
    controlled_tokens = select(controlled.tokens, temperature=0.0, gamma=controlled_gamma)
    by_position = acceptance_by_context(controlled_tokens)
    controlled_drafters = sorted(by_position["drafter"].unique())
    controlled_colors = drafter_colours(controlled_drafters)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    plot_acceptance_by_context(ax, by_position, controlled_colors)
    ax.set(title=f"Same content, context length moved (greedy, gamma {controlled_gamma}; up to "
                 f"{int(by_position['context_end'].max())} tokens)")
    show(fig)
    own = {d: t for d, t in sequences.drop_duplicates("drafter").set_index("drafter")["drafter_trained_on"].items()
           if kinds.get(d) == "finetuned" and t in tasks}
    effects = pd.concat([length_effects(controlled_tokens, rng=seed),
                         content_effects(select(tokens, gamma=gamma), own, rng=seed)], ignore_index=True)
    shown = effects[["kind", "drafter", "comparison"]].assign(**{
        "acceptance difference (90% interval)": [f"{e:+.3f} ({lo:+.3f} to {hi:+.3f})" for e, lo, hi in
                                                 zip(effects["effect"], effects["effect_low"], effects["effect_high"],
                                                     strict=True)]})
    display(table(shown, caption="Length effect (length-controlled experiment) and content effect (traces above): "
                                 "differences in conditional acceptance, bootstrap over prompts."))
    for row in effects.itertuples(index=False):
        length_lines.append(f"- {row.kind.capitalize()} effect for **{row.drafter}** ({row.comparison}): "
                            f"{row.effect:+.3f} acceptance (90% {row.effect_low:+.3f} to {row.effect_high:+.3f}"
                            + ("; not distinguishable from zero" if row.effect_low <= 0 <= row.effect_high else "")
                            + ").")
else:
    display(Markdown(f"No length-controlled traces at `{lengths_traces}`: this section needs them "
                     "(`python scripts/lengths/collect_lengths.py`)."))

# %% [markdown]
# ## The answer, in numbers

# %%
post = idata.posterior
lines = []
for drafter_type in fitted_types:
    if {(drafter_type, "generic"), (drafter_type, "finetuned")} <= set(curves):
        ft, gen = curves[(drafter_type, "finetuned")][0], curves[(drafter_type, "generic")][0]
        lines.append(f"- **{drafter_type}: fine-tuned against generic**, on the pooled workload at gamma {gamma} and "
                     f"no length shift: {ft.mean:.2f}x (90% {ft.low:.2f} to {ft.high:.2f}) against {gen.mean:.2f}x "
                     f"({gen.low:.2f} to {gen.high:.2f}); at divergence {grid[-1]:.2f} "
                     f"{curves[(drafter_type, 'finetuned')][-1].mean:.2f}x against "
                     f"{curves[(drafter_type, 'generic')][-1].mean:.2f}x.")
for (drafter_type, kind), preds in curves.items():
    lines.append(f"- Predicted speed-up of a **{kind} {drafter_type}** drafter on the pooled workload: "
                 f"{preds[0].mean:.2f}x (90% {preds[0].low:.2f} to {preds[0].high:.2f}) at divergence {grid[0]:.2f}, "
                 f"{preds[-1].mean:.2f}x ({preds[-1].low:.2f} to {preds[-1].high:.2f}) at {grid[-1]:.2f}.")
lines.append(f"- Measured speed-ups at gamma {gamma} range from {measured['speedup'].min():.2f}x to "
             f"{measured['speedup'].max():.2f}x on this hardware.")
if "divergence_slope_finetuned" in post:
    slope_ft = post["divergence_slope_finetuned"].values.reshape(-1)
    slope_gen = post["b_divergence"].values.reshape(-1)
    q = lambda v: (np.mean(v), *np.quantile(v, [0.05, 0.95]))  # noqa: E731
    m, lo, hi = q(slope_ft * 0.1)
    lines.append(f"- For **fine-tuned** drafters, +0.1 of length divergence moves logit acceptance by {m:+.2f} "
                 f"(90% interval {lo:+.2f} to {hi:+.2f}).")
    m, lo, hi = q(slope_gen * 0.1)
    lines.append(f"- For **generic** drafters the same shift moves it by {m:+.2f} ({lo:+.2f} to {hi:+.2f}); their "
                 "training mixture is close to every task, so this slope rests on a narrow range of divergences.")
if "sigma_task" in post:
    spread = post["sigma_task"].values.reshape(-1)
    line = (f"- **Content**: the tasks' own effects spread with a standard deviation of {np.mean(spread):.2f} "
            f"logit (90% {np.quantile(spread, 0.05):.2f} to {np.quantile(spread, 0.95):.2f}) across "
            f"{len(meta.tasks)} tasks")
    if "divergence_slope_finetuned" in post:
        length_shift = abs(float(np.mean(post["divergence_slope_finetuned"].values))) * 0.1
        line += (f", {np.mean(spread) / length_shift:.1f}x the move of a 0.1 length-divergence shift for a "
                 "fine-tuned drafter" if length_shift > 0 else "")
    if "sigma_task_type" in post:
        by_type = post["sigma_task_type"].values.reshape(-1)
        line += (f"; a task's effect differs between drafter types by a further {np.mean(by_type):.2f} "
                 f"(90% {np.quantile(by_type, 0.05):.2f} to {np.quantile(by_type, 0.95):.2f})")
    if "sigma_pair" in post:
        by_pair = post["sigma_pair"].values.reshape(-1)
        line += (f", and a drafter's effect between tasks by a further {np.mean(by_pair):.2f} "
                 f"(90% {np.quantile(by_pair, 0.05):.2f} to {np.quantile(by_pair, 0.95):.2f})")
    lines.append(line + ". Without a probe a new task's prediction draws its effect from that spread; "
                 "`specsim probe` on 5-10 of its prompts and `predict --probe` measure it instead.")
if meta.loo_comparison:
    loo = pd.DataFrame(meta.loo_comparison).set_index("model")
    others = ", ".join(f"{name.replace('_', ' ')} by {loo.loc[name, 'elpd_diff']:.1f} elpd (standard error "
                       f"{loo.loc[name, 'dse']:.1f})" for name in loo.index if name != loo["rank"].idxmin())
    lines.append(f"- PSIS-LOO prefers the model **{loo['rank'].idxmin().replace('_', ' ')}**; it leads {others}.")
lines.extend(type_lines)
lines.extend(length_lines)
if load_line:
    lines.append(load_line)
if not diagnostics["passed"]:
    lines.append("- **Warning:** the sampler diagnostics failed; treat the model figures with caution.")
display(Markdown("\n".join(lines)))

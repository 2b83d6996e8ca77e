"""The verbs users run, each written once: the CLI, the reports, the notebook and the scripts call these.

Every verb takes loaded traces (:class:`specsim.traces.Traces`) or a posterior
(:class:`specsim.model.Posterior`) and plain options, and returns a result object or a table;
none of them prints. Cost models always come from :func:`cost_models` (one model per drafter
and temperature, :func:`specsim.simulate.cost.fit_cost_models`), workloads from
:func:`specsim.workload.resolve_workload`, and intervals default to :data:`INTERVAL_LEVEL`.

=============================  =========================================================
verb                           what it answers
=============================  =========================================================
:func:`summarize_traces`       acceptance and measured speed-up of every group
:func:`lengths`                length quantiles and divergences between groups
:func:`validate`               does the simulator reproduce each measured cell?
:func:`what_if`                one task's measured acceptance on another workload's lengths
:func:`gamma_sweep`            expected speed-up at each draft length; the best one
:func:`load_sweep`             speed-up against concurrency; best gamma and break-even load
:func:`choose_cost`            the hardware's cost model: a ratio, a profile (at a concurrency)
:func:`traces_counts`          traces as the model reads every source: counts and lengths
:func:`fit`                    the hierarchical model, its baseline GLM and the LOO comparison
:func:`predict`                posterior predictive speed-up of a workload
:func:`length_effects_by_type` speed-up per doubling past the window and per divergence, per type
:func:`leave_one_task_out`     predictions of held-out tasks: coverage of the intervals
:func:`demo`                   the main job on a trace folder, report included
=============================  =========================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from specsim.analysis.metrics import measured_speedup
from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL, TOKENS_PER_STEP_CONVENTION, central_quantiles
from specsim.lengths import divergences, length_table
from specsim.model.data import MODELLED_KINDS
from specsim.simulate.acceptance import AcceptanceProfile, profile_from_tokens
from specsim.simulate.cost import CostKey, CostModel, fit_cost_models
from specsim.simulate.exact import expected_grid, expected_workload
from specsim.simulate.validation import validate_against_measured
from specsim.simulate.whatif import WhatIfResult
from specsim.simulate.whatif import what_if as simulate_what_if
from specsim.traces.select import select
from specsim.traces.store import Traces
from specsim.workload import Workload, resolve_workload

__all__ = [
    "INTERVAL_LEVEL", "MODELLED_KINDS", "cost_models", "Validation", "validate", "WhatIf", "what_if", "gamma_sweep",
    "Prediction",
    "FitOutcome", "fit", "traces_counts", "predict", "leave_one_task_out", "probe_from_traces", "cost_transfer",
    "check_level", "LotoResult", "length_effects_by_type", "TracesSummary", "summarize_traces", "LengthsResult",
    "lengths", "DemoResult",
    "demo",
    "break_even_cost_ratio", "CountsWhatIf", "what_if_counts", "CostChoice", "choose_cost", "LoadSweep", "load_sweep",
]

#: The diagnostics of a leave-one-out fold's fit each held-out row carries (which check a failing fold failed).
FOLD_GATE_FIGURES = ("max_r_hat", "min_ess_bulk", "min_ess_tail", "divergences", "min_bfmi")
#: NUTS target acceptance a leave-one-out fold that failed the diagnostics gate is fitted again at.
RETRY_TARGET_ACCEPT = 0.99
#: A fold that fails at :data:`RETRY_TARGET_ACCEPT` too is fitted a last time with this many times the draws and
#: warm-up: smaller steps take divergences away, longer chains a slowly mixing scale (R-hat, ESS).
RETRY_DRAWS_FACTOR = 2


def check_level(level: float, option: str = "--level") -> float:
    """``level`` if it is a probability strictly between 0 and 1, else :class:`InputError`."""
    if not (np.isfinite(level) and 0 < level < 1):
        raise InputError(f"must be a number > 0 and < 1, got {level}", field=option)
    return float(level)


def cost_models(traces: Traces) -> dict[CostKey, CostModel]:
    """The cost model of every drafter x temperature of the traces (the one grouping)."""
    return fit_cost_models(traces.steps, traces.sequences)


@dataclass(frozen=True)
class Validation:
    """Simulator vs measured speed-up per cell, and the errors by group.

    Attributes
    ----------
    cells : pandas.DataFrame
        One row per task x drafter x temperature x gamma x schedule (see
        :func:`specsim.simulate.validation.validate_against_measured`).
    groups : pandas.DataFrame
        Mean signed and absolute error per drafter x temperature x gamma: a bias that the
        overall MAPE hides shows here.
    """

    cells: pd.DataFrame
    groups: pd.DataFrame

    @property
    def mape(self) -> float:
        """Mean absolute percentage error over cells."""
        return float(self.cells["error_pct"].abs().mean())

    @property
    def worst_group_bias(self) -> float:
        """Largest absolute mean signed error of a group, in percent."""
        return float(self.groups["mean_error_pct"].abs().max())


def validate(traces: Traces) -> Validation:
    """Predict every measured cell from its own acceptance, lengths and cost model."""
    cells = validate_against_measured(traces.tokens, traces.steps, traces.sequences)
    groups = cells.groupby(["drafter", "temperature", "gamma"], observed=True)["error_pct"].agg(
        cells="size", mean_error_pct="mean", mean_absolute_error_pct=lambda e: e.abs().mean()).reset_index()
    return Validation(cells, groups)


@dataclass(frozen=True)
class TracesSummary:
    """Per task x drafter x temperature x gamma: the headline figures, and acceptance by draft index.

    Attributes
    ----------
    groups : pandas.DataFrame
        :func:`specsim.traces.summarize` (acceptance rate, tokens per step both ways, measured
        speed-up with its bootstrap interval).
    by_draft_index : pandas.DataFrame
        :func:`specsim.analysis.metrics.acceptance_by_draft_index` (conditional and unconditional
        rates; needs the per-token table).
    """

    groups: pd.DataFrame
    by_draft_index: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """JSON of ``specsim traces summary --json``: each group with its per-index rows."""
        from specsim.analysis.metrics import SUMMARY_GROUP

        columns = ["draft_index", "drafted", "evaluated", "accepted", "acceptance_rate_conditional",
                   "acceptance_rate_unconditional"]
        per_index = {key: group[columns].to_dict("records")
                     for key, group in self.by_draft_index.groupby(SUMMARY_GROUP, observed=True, dropna=False)}
        rows = self.groups.to_dict(orient="records")
        for row in rows:
            row["acceptance_by_draft_index"] = per_index.get(tuple(row[k] for k in SUMMARY_GROUP), [])
        return {"speedup_estimator": "ratio of totals, time per generated token", "groups": rows}


def summarize_traces(traces: Traces) -> TracesSummary:
    """Headline figures and acceptance by draft index of every group of the traces."""
    from specsim.analysis import summarize
    from specsim.analysis.metrics import SUMMARY_GROUP, acceptance_by_draft_index

    return TracesSummary(summarize(traces.steps, traces.sequences),
                         acceptance_by_draft_index(traces.tokens, SUMMARY_GROUP))


@dataclass(frozen=True)
class LengthsResult:
    """Length quantiles per group and the divergences between every pair of groups.

    Attributes
    ----------
    by, kind, measure : str
        Grouping column, length kind, and the divergence of ``matrix``.
    quantiles : pandas.DataFrame
    matrix : pandas.DataFrame
        ``measure`` between every pair of groups (row vs column).
    pairs : list of dict
        Every divergence of every pair, with bootstrap intervals when ``level`` is set.
    level : float or None
        The intervals' probability (None: no bootstrap).
    """

    by: str
    kind: str
    measure: str
    quantiles: pd.DataFrame
    matrix: pd.DataFrame
    pairs: list[dict]
    level: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON of ``specsim lengths --json``."""
        return {"by": self.by, "kind": self.kind, "quantiles": self.quantiles.to_dict("records"),
                "matrix_measure": self.measure, "pairs": self.pairs,
                "matrix": [{"a": a, "b": b, "value": float(self.matrix.loc[a, b])} for a in self.matrix.index
                           for b in self.matrix.columns],
                "interval_level": self.level,
                "binning": "4 logarithmic bins per doubling of length (js, kl, tv)"}


def lengths(
    traces: Traces, *, by: str = "task", kind: str = "total_len", measure: str = "js", bootstrap: int = 200,
    seed: int = 0, level: float = INTERVAL_LEVEL, progress: Callable[[], None] | None = None,
) -> LengthsResult:
    """Length quantiles per task (or dataset) and the divergence of every pair, with bootstrap intervals.

    ``bootstrap`` resamples both groups of a pair (0: point estimates only); ``progress`` is
    called once per resample.
    """
    from specsim.lengths import DIVERGENCES, LENGTH_KINDS, bootstrap_divergences, divergence_matrix, length_quantiles

    if kind not in LENGTH_KINDS:
        raise InputError(f"must be one of {', '.join(LENGTH_KINDS)}", field="--kind")
    if measure not in DIVERGENCES:
        raise InputError(f"must be one of {', '.join(DIVERGENCES)}", field="--measure")
    if by not in ("task", "dataset"):
        raise InputError("must be task or dataset", field="--by")
    check_level(level)
    table = length_table(traces.sequences, by=by)
    samples = {name: group[kind].to_numpy() for name, group in table.groupby(by)}
    names = list(samples)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if bootstrap:
                frame = bootstrap_divergences(samples[a], samples[b], n_resamples=bootstrap, rng=seed, level=level,
                                              progress=progress)
                values = {m: {"estimate": frame.loc[m, "estimate"], "low": frame.loc[m, "low"],
                              "high": frame.loc[m, "high"]} for m in DIVERGENCES}
            else:
                values = {m: {"estimate": v} for m, v in divergences(samples[a], samples[b]).items()}
            pairs.append({"a": a, "b": b, **values})
    return LengthsResult(by, kind, measure, length_quantiles(table, by=by), divergence_matrix(samples, measure),
                         pairs, level if bootstrap else None)


def measured_draft_indices(traces: Traces, drafter: str, task: str, temperature: float = 0.0) -> int:
    """How many draft indices a drafter's traces on a task measured (0 where they hold none)."""
    tokens = traces.tokens
    index = tokens.loc[(tokens["drafter"] == drafter) & (tokens["task"] == task)
                       & (tokens["temperature"] == temperature), "draft_index"]
    return int(index.max()) + 1 if len(index) else 0


def _acceptance_tokens(traces: Traces, drafter: str, task: str, temperature: float) -> pd.DataFrame:
    if drafter not in set(traces.sequences["drafter"]):
        raise InputError(f"no drafter {drafter!r} in the traces (drafters: "
                         f"{', '.join(sorted(traces.sequences['drafter'].unique()))})", field="--drafter")
    tokens = select(traces.tokens, drafter=drafter, task=task, temperature=temperature)
    if tokens.empty:
        held = traces.sequences.loc[traces.sequences["drafter"] == drafter]
        tasks = sorted(held.loc[np.isclose(held["temperature"].astype(float), temperature), "task"].unique())
        temperatures = sorted(held["temperature"].astype(float).unique())
        measured = (f"its tasks at temperature {temperature:g}: {', '.join(tasks)}" if tasks else
                    f"its temperatures: {', '.join(f'{t:g}' for t in temperatures)}")
        raise InputError(f"no tokens for drafter {drafter!r} on task {task!r} at temperature {temperature:g} "
                         f"({measured})", field="--acceptance-from")
    return tokens


def _acceptance_steps(traces: Traces, drafter: str, task: str, temperature: float) -> pd.DataFrame:
    """The steps behind :func:`_acceptance_tokens`: how many tokens each step drafted of those asked."""
    return select(traces.steps, drafter=drafter, task=task, temperature=temperature)


def _measured_profile(traces: Traces, drafter: str, acceptance_from: str, workload: str | Workload,
                      temperature: float) -> tuple[AcceptanceProfile, Workload]:
    """The drafter's measured acceptance profile on ``acceptance_from`` and the resolved workload."""
    tokens = _acceptance_tokens(traces, drafter, acceptance_from, temperature)
    if not isinstance(workload, Workload):
        workload = resolve_workload(workload, traces.sequences, temperature=temperature, option="--lengths-from")
    profile = profile_from_tokens(tokens, steps=_acceptance_steps(traces, drafter, acceptance_from, temperature))
    return profile, workload


def _cost_of(traces: Traces, drafter: str, temperature: float) -> CostModel:
    models = cost_models(traces)
    if (drafter, temperature) not in models:
        raise InputError(f"no timed steps of drafter {drafter!r} at temperature {temperature}", field="--drafter")
    return models[(drafter, temperature)]


@dataclass(frozen=True)
class WhatIf:
    """One task's measured acceptance on a workload: the simulator's answer and the workload it read."""

    result: WhatIfResult
    workload: Workload

    def to_dict(self) -> dict[str, Any]:
        """JSON fields: the simulator's figures and the workload's description."""
        return {**self.result.to_dict(), **self.workload.describe()}

    def summary(self) -> str:
        """One line, as the CLI prints it (without the costs' label)."""
        r = self.result
        verdict = "faster than plain decoding" if r.speedup >= 1 else "slower than plain decoding"
        return (f"{r.inputs.get('drafter')} with {r.inputs.get('acceptance_from')}'s acceptance on "
                f"{self.workload.name}'s lengths, gamma {r.inputs.get('gamma')}: speed-up {r.speedup:.3f}x ({verdict}; "
                f"{100 * r.level:.0f}% interval {r.speedup_low:.3f} to {r.speedup_high:.3f}), "
                f"{r.tokens_per_step:.2f} tokens per step (bonus included)")


def what_if(
    traces: Traces, *, drafter: str, acceptance_from: str, workload: str | Workload, gamma: int,
    temperature: float = 0.0, cost: CostModel | None = None, level: float = INTERVAL_LEVEL, resamples: int = 200,
    seed: int = 0, progress: Callable[[int, int], None] | None = None,
) -> WhatIf:
    """A drafter's measured acceptance on one task, decoding another workload's lengths.

    Parameters
    ----------
    traces : Traces
    drafter, acceptance_from : str
        Drafter and task whose acceptance profile is used.
    workload : str or Workload
        Lengths file or task name (:func:`specsim.workload.resolve_workload`).
    gamma : int
        Draft length.
    temperature : float
    cost : CostModel, optional
        Costs to use; default the drafter's fitted model at ``temperature``.
    level : float
        Interval probability.
    resamples : int
        Bootstrap resamples over recorded sequences.
    seed : int
    progress : callable, optional
        Called as ``progress(done, total)`` during the bootstrap.
    """
    check_level(level)
    if gamma < 1:
        raise InputError(f"must be >= 1, got {gamma}", field="--gamma")
    if resamples < 1:
        raise InputError(f"must be >= 1, got {resamples}", field="--resamples")
    tokens = _acceptance_tokens(traces, drafter, acceptance_from, temperature)
    if not isinstance(workload, Workload):
        workload = resolve_workload(workload, traces.sequences, temperature=temperature, option="--lengths-from")
    cost = cost or _cost_of(traces, drafter, temperature)
    result = simulate_what_if(tokens, cost, gamma, workload.prompt_lengths, workload.output_lengths,
                              n_resamples=resamples, level=level, rng=seed, progress=progress,
                              steps=_acceptance_steps(traces, drafter, acceptance_from, temperature),
                              inputs={"drafter": drafter, "acceptance_from": acceptance_from,
                                      "lengths_from": workload.name, "temperature": temperature, "gamma": gamma})
    return WhatIf(result, workload)


def gamma_sweep(
    traces: Traces, *, drafter: str, acceptance_from: str, workload: str | Workload,
    gammas: Iterable[int] = range(1, 9), temperature: float = 0.0, cost: CostModel | None = None,
) -> pd.DataFrame:
    """Exact expected speed-up at each draft length (the best marked), from measured acceptance.

    Returns
    -------
    pandas.DataFrame
        Columns ``gamma``, ``speedup``, ``tokens_per_step`` (bonus included), ``best``,
        ``acceptance_measured`` (every draft index up to gamma was measured; beyond them the
        last measured index's rate is reused) and ``verify_cost`` (``measured``: the traces were
        collected at that draft length, or the cost profile timed it; ``extrapolated`` from other
        draft lengths; ``assumed``: a constant cost ratio).
    """
    profile, workload = _measured_profile(traces, drafter, acceptance_from, workload, temperature)
    if cost is None:
        steps = traces.steps
        collected = set(steps.loc[(steps["drafter"] == drafter) & (steps["temperature"] == temperature),
                                  "gamma"].astype(int).unique())
    else:
        collected = set(cost.verify_table)
    assumed = cost is not None and not cost.verify_table
    cost = cost or _cost_of(traces, drafter, temperature)
    gammas = [int(g) for g in gammas]
    if min(gammas) < 1:
        raise InputError(f"draft lengths must be >= 1, got {min(gammas)}", field="--gamma")
    # One profile of the measured draft indices; longer drafts reuse the last measured index's rate.
    rows = [{"gamma": p.gamma, "speedup": p.speedup, "tokens_per_step": p.tokens_per_step}
            for p in expected_grid(profile, cost, np.array(gammas), workload.prompt_lengths, workload.output_lengths)]
    table = pd.DataFrame(rows)
    table["best"] = table["speedup"] == table["speedup"].max()
    table["acceptance_measured"] = table["gamma"] <= profile.rates.shape[0]
    table["verify_cost"] = ["assumed" if assumed else "measured" if int(g) in collected else "extrapolated"
                            for g in table["gamma"]]
    return table


class CostChoice(NamedTuple):
    """The hardware's cost model and the label every output shows for it (both None: the traces' own costs)."""

    model: CostModel | None
    label: str | None


def choose_cost(cost_ratio: float | None = None, cost_profile: str | Path | None = None,
                concurrency: float | None = None) -> CostChoice:
    """The hardware's cost model and its label, or ``(None, None)`` for the traces' own fitted costs.

    Parameters
    ----------
    cost_ratio : float, optional
        Leviathan's constant drafter/target cost per token (:func:`leviathan_cost_model`). It
        carries no batch information: at any concurrency it assumes memory-bound passes, and the
        speed-up does not change with load (the label says so).
    cost_profile : path-like, optional
        A ``specsim profile`` file (or a bare cost model).
    concurrency : float, optional
        Requests decoded together: the profile's cost model at that batch size
        (:func:`specsim.simulate.load.cost_model_at_concurrency`; between measured sizes only).
        The traces' fitted costs are at batch size 1.
    """
    from specsim.simulate.cost import leviathan_cost_model, read_cost_profile_batches
    from specsim.simulate.load import MAX_CONCURRENCY, cost_model_at_concurrency

    if cost_ratio is not None and cost_profile is not None:
        raise InputError("give --cost-ratio or --cost-profile, not both", field="--cost-ratio")
    if cost_ratio is not None and not (isinstance(cost_ratio, (int, float)) and np.isfinite(cost_ratio)
                                       and cost_ratio >= 0):
        raise InputError(f"must be a finite number >= 0, got {cost_ratio}", field="--cost-ratio")
    if concurrency is not None and not (np.isfinite(concurrency) and 1 <= concurrency <= MAX_CONCURRENCY):
        raise InputError(f"must be a number in [1, {MAX_CONCURRENCY}], got {concurrency}", field="--concurrency")
    if cost_ratio is not None:
        label = f"constant cost ratio c = {cost_ratio:g} (Leviathan et al.)"
        if concurrency not in (None, 1):
            label += f"; at concurrency {concurrency:g} it assumes memory-bound passes (no load effect)"
        return CostChoice(leviathan_cost_model(cost_ratio), label)
    if cost_profile is not None:
        models = read_cost_profile_batches(cost_profile)
        if concurrency is None or concurrency == 1:
            return CostChoice(models[1], f"cost profile {cost_profile}")
        between = "" if concurrency in models else \
            f" (interpolated between batch sizes {', '.join(map(str, sorted(models)))})"
        return CostChoice(cost_model_at_concurrency(models, concurrency),
                          f"cost profile {cost_profile} at concurrency {concurrency:g}{between}")
    if concurrency not in (None, 1):
        raise InputError("the traces' fitted costs are at batch size 1: for a concurrency give --cost-profile "
                         "(specsim profile --batch-size 1,2,4,...)", field="--concurrency")
    return CostChoice(None, None)


@dataclass(frozen=True)
class LoadSweep:
    """Expected speed-up against concurrency (:func:`load_sweep`).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per concurrency x gamma: ``concurrency``, ``gamma``, ``speedup``,
        ``tokens_per_step`` and ``best`` (the best gamma at that concurrency).
    best : pandas.DataFrame
        One row per concurrency: the best gamma and its speed-up.
    break_even_concurrency : float or None
        The load above which even the best gamma is slower than plain decoding
        (:func:`specsim.simulate.load.break_even_concurrency`; None when it still pays at the
        largest concurrency or at none: see :attr:`pays_at`).
    break_even_by_gamma : dict of int to float or None
        The same for each fixed gamma.
    """

    table: pd.DataFrame
    best: pd.DataFrame
    break_even_concurrency: float | None
    break_even_by_gamma: dict[int, float | None]

    @property
    def pays_at(self) -> list[float]:
        """Concurrencies where the best gamma is faster than plain decoding."""
        return [float(c) for c in self.best.loc[self.best["speedup"] > 1, "concurrency"]]

    def verdict(self) -> str:
        """One line: where speculation pays under load."""
        pays, largest = self.pays_at, float(self.best["concurrency"].max())
        if not pays:
            return "slower than plain decoding at every concurrency measured"
        if self.break_even_concurrency is None:
            return f"faster than plain decoding up to the largest concurrency measured ({largest:g})"
        return (f"break-even concurrency {self.break_even_concurrency:.1f}: above it even the best gamma is slower "
                f"than plain decoding (faster at {', '.join(f'{c:g}' for c in pays)})")

    def to_dict(self) -> dict:
        """JSON-ready: the best gamma at each load, break-even loads and the whole table."""
        return {"break_even_concurrency": self.break_even_concurrency, "pays_at": self.pays_at,
                "verdict": self.verdict(),
                "break_even_concurrency_by_gamma": {str(g): v for g, v in self.break_even_by_gamma.items()},
                "best_by_concurrency": self.best.to_dict("records"),
                "table": self.table.drop(columns="best").to_dict("records")}


def load_sweep(
    traces: Traces, *, drafter: str, acceptance_from: str, workload: str | Workload, cost_profile: str | Path,
    concurrencies: Iterable[float] | None = None, gammas: Iterable[int] = range(1, 9), temperature: float = 0.0,
) -> LoadSweep:
    """Speed-up against concurrency from measured acceptance and a profile measured at several batch sizes.

    Acceptance does not depend on the batch; each concurrency's cost model does
    (:func:`specsim.simulate.load.cost_model_at_concurrency`). ``concurrencies`` default to the
    profile's measured batch sizes.
    """
    from specsim.simulate.cost import read_cost_profile_batches
    from specsim.simulate.load import break_even_concurrency, cost_model_at_concurrency

    models = read_cost_profile_batches(cost_profile)
    if len(models) < 2:
        raise InputError("the cost profile holds batch size 1 only: measure one with specsim profile "
                         "--batch-size 1,2,4,...", path=cost_profile, field="--cost-profile")
    levels = sorted({float(c) for c in (concurrencies or models)})
    if not isinstance(workload, Workload):
        workload = resolve_workload(workload, traces.sequences, temperature=temperature, option="--lengths-from")
    frames = []
    for level in levels:
        table = gamma_sweep(traces, drafter=drafter, acceptance_from=acceptance_from, workload=workload,
                            gammas=gammas, temperature=temperature, cost=cost_model_at_concurrency(models, level))
        frames.append(table.assign(concurrency=level))
    table = pd.concat(frames, ignore_index=True)[["concurrency", "gamma", "speedup", "tokens_per_step", "best"]]
    best = table[table["best"]].drop_duplicates("concurrency")[["concurrency", "gamma", "speedup"]]
    by_gamma = {int(g): break_even_concurrency(group["concurrency"], group["speedup"])
                for g, group in table.groupby("gamma")}
    return LoadSweep(table, best.reset_index(drop=True),
                     break_even_concurrency(best["concurrency"], best["speedup"]), by_gamma)


def break_even_cost_ratio(
    traces: Traces, *, drafter: str, acceptance_from: str, workload: str | Workload, temperature: float = 0.0,
    max_gamma: int = 8,
) -> float:
    """Largest drafter/target cost ratio ``c`` (Leviathan's constant cost) at which the best draft length
    still breaks even (speed-up 1) with this acceptance on this workload; bisection on ``c``.

    Returns 0 when no positive ``c`` pays off (acceptance too low for any hardware).
    """
    from specsim.simulate.cost import leviathan_cost_model

    # The measured profile and the workload once; each bisection step only changes the costs.
    profile, workload = _measured_profile(traces, drafter, acceptance_from, workload, temperature)
    gammas = np.arange(1, max_gamma + 1)

    def best(c: float) -> float:
        grid = expected_grid(profile, leviathan_cost_model(c), gammas, workload.prompt_lengths,
                             workload.output_lengths)
        return max(float(point.speedup) for point in grid)

    if best(0.0) <= 1:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(20):  # c to within 1e-6
        middle = (low + high) / 2
        low, high = (middle, high) if best(middle) > 1 else (low, middle)
    return low


@dataclass(frozen=True)
class CountsWhatIf:
    """Expected speed-up of a workload from a counts table's acceptance (engines' aggregate data).

    Attributes
    ----------
    speedup, speedup_low, speedup_high : float
        Exact expectation at the counts' rates; interval over Beta posterior draws of the rates.
    tokens_per_step : float
        Bonus token included.
    level : float
    positions_resolved : bool
        False when the source had only totals (i.i.d. acceptance assumed).
    """

    speedup: float
    speedup_low: float
    speedup_high: float
    tokens_per_step: float
    level: float
    positions_resolved: bool

    def to_dict(self) -> dict:
        """JSON fields."""
        return {"speedup": self.speedup, "speedup_low": self.speedup_low, "speedup_high": self.speedup_high,
                "interval_level": self.level, "tokens_per_step": self.tokens_per_step,
                "tokens_per_step_convention": TOKENS_PER_STEP_CONVENTION,
                "positions_resolved": self.positions_resolved}


def what_if_counts(
    counts: pd.DataFrame, *, workload: Workload, cost: CostModel, gamma: int | None = None,
    level: float = INTERVAL_LEVEL, draws: int = 400, seed: int = 0,
) -> CountsWhatIf:
    """A counts table's acceptance (one group) decoding a workload, under a given cost model.

    Counts carry no timings, so the cost model is the user's (``--cost-ratio`` or a profile).
    The interval draws each draft index's rate from its Beta(accepted + 1/2, rejected + 1/2)
    posterior (Jeffreys prior).
    """
    from specsim.simulate.acceptance import (
        AcceptanceProfile,
        counts_by_range,
        jeffreys_rate_draws,
        profile_from_counts_table,
    )
    from specsim.traces.counts import counts_by_index, refuse_unmeasured

    check_level(level)
    counts = select_counts_group(counts, gamma=gamma)
    refuse_unmeasured(counts, ("task", "drafter", "temperature", "gamma"))
    profile, resolved = profile_from_counts_table(counts)
    gamma = gamma or int(counts["gamma"].iloc[0])
    point = expected_workload(profile, cost, gamma, workload.prompt_lengths, workload.output_lengths)
    rng = np.random.default_rng(seed)
    by_range = counts_by_range(counts)
    if by_range is not None:
        # Position ranges resolved: each (index, range) cell's rate from its own Beta; the hazards of
        # drafts of any length kept as measured.
        column, edges, _ = by_range
        accepted, evaluated = column["accepted"], column["evaluated"]
        pooled = jeffreys_rate_draws(accepted.sum(1), evaluated.sum(1), rng, (draws, len(accepted)))
        cells = jeffreys_rate_draws(accepted, evaluated, rng, (draws, *accepted.shape))
        cells = np.where(evaluated[None] > 0, cells, pooled[:, :, None])
        draws_of = [AcceptanceProfile(sample, edges, profile.continuation, profile.extension) for sample in cells]
    elif resolved:
        rows = counts_by_index(counts)
        samples = jeffreys_rate_draws(rows["accepted"].to_numpy(), rows["evaluated"].to_numpy(), rng,
                                      (draws, len(rows)))
    else:
        # Totals only: the i.i.d. rate's uncertainty from the drafted tokens (accepted of drafted).
        total = counts.sum(numeric_only=True)
        rate = float(profile.rates[0, 0])
        n = max(float(total["drafted"]), 1.0)
        samples = np.repeat(jeffreys_rate_draws(rate * n, n, rng, (draws, 1)), len(profile.rates), 1)
    if by_range is None:
        draws_of = [AcceptanceProfile(sample[:, None], np.array([])) for sample in samples]
    speedups = [expected_workload(draw, cost, gamma, workload.prompt_lengths, workload.output_lengths).speedup
                for draw in draws_of]
    low, high = np.quantile(speedups, central_quantiles(level))
    return CountsWhatIf(point.speedup, float(low), float(high), point.tokens_per_step, level, resolved)


def select_counts_group(counts: pd.DataFrame, *, task: str | None = None, drafter: str | None = None,
                        temperature: float | None = None, source: str | None = None,
                        gamma: int | None = None) -> pd.DataFrame:
    """The rows of the one group (source x task x drafter x temperature x gamma) the selection leaves.

    ``gamma`` selects among groups measured at several draft lengths when it matches one of them
    (otherwise it is the draft length to predict at, and does not select).

    Raises
    ------
    specsim.errors.InputError
        No group, or several, match; the message lists the groups and the options that select.
    """
    from specsim.traces.counts import COUNTS_GROUP

    rows = counts
    for column, value in (("task", task), ("drafter", drafter), ("source", source)):
        if value is not None:
            rows = rows[rows[column].astype(str) == value]
    if temperature is not None:
        rows = rows[np.isclose(rows["temperature"].astype(float), float(temperature))]
    if gamma is not None and (rows["gamma"] == gamma).any() and rows["gamma"].nunique() > 1:
        rows = rows[rows["gamma"] == gamma]
    groups = rows.groupby(COUNTS_GROUP, dropna=False, observed=True)
    if groups.ngroups == 1:
        return rows
    listed = [f"{task_}/{drafter_}/temperature {temp:g}/gamma {g} ({source_})"
              for source_, task_, drafter_, _, temp, g in (counts if groups.ngroups == 0 else rows).groupby(
                  COUNTS_GROUP, dropna=False, observed=True).groups]
    shown = ", ".join(listed[:8]) + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")
    if groups.ngroups == 0:
        raise InputError(f"no group of the counts matches the selection; they hold {shown}", field="--task")
    raise InputError(f"the counts hold {groups.ngroups} groups: {shown}; select one with --task, --drafter, "
                     "--temperature or --gamma", field="--task")


@dataclass
class FitOutcome:
    """A fitted model with everything ``specsim fit`` reports.

    Attributes
    ----------
    result : specsim.model.FitResult
        Posterior, diagnostics and the complete metadata (lengths, cost models, LOO).
    baseline : pandas.DataFrame
        The statsmodels binomial GLM (cluster-robust by task).
    counts : specsim.model.AcceptanceCounts
    """

    result: Any
    baseline: pd.DataFrame
    counts: Any
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON payload of ``specsim fit --json``."""
        summary = self.result.summary()
        meta = self.result.metadata
        return {"sampler": self.result.sampler, "diagnostics": self.result.diagnostics,
                "posterior": summary.reset_index(names="parameter").to_dict("records"),
                "baseline_glm": self.baseline.reset_index(names="term").to_dict("records"),
                "loo_comparison": meta.loo_comparison, "cells": len(self.counts.cells), "tasks": meta.tasks,
                "drafters": meta.drafters, "notes": list(self.notes)}


def _check_measure(measure: str) -> None:
    from specsim.lengths import DIVERGENCES

    if measure not in DIVERGENCES:
        raise InputError(f"must be one of {', '.join(DIVERGENCES)}", field="--length-measure")


def _check_sampler_options(sampler: str, draws: int, tune: int, chains: int, target_accept: float,
                           mass_matrix: str = "diagonal", parameterisation: str = "noncentred") -> None:
    from specsim.model.hierarchical import MASS_MATRICES, PARAMETERISATIONS

    if sampler not in ("nutpie", "pymc"):
        raise InputError("must be nutpie or pymc", field="--sampler")
    if parameterisation not in PARAMETERISATIONS:
        raise InputError(f"must be one of {', '.join(PARAMETERISATIONS)}", field="--parameterisation")
    if mass_matrix not in MASS_MATRICES:
        raise InputError(f"must be one of {', '.join(MASS_MATRICES)}", field="--mass-matrix")
    for name, value in (("--draws", draws), ("--tune", tune), ("--chains", chains)):
        if value < 1:
            raise InputError(f"must be >= 1, got {value}", field=name)
    if not 0 < target_accept < 1:
        raise InputError(f"must be in (0, 1), got {target_accept}", field="--target-accept")


def _fit_notes(diagnostics: dict, baseline: pd.DataFrame) -> list[str]:
    """What the fit's libraries warned of, as specsim's one-line notes (the warnings themselves are silenced)."""
    notes = []
    high = diagnostics.get("pareto_k_high", 0)
    if high:
        notes.append(f"PSIS-LOO: {high} of {diagnostics['loo_cells']} cells have a Pareto k above "
                     f"{diagnostics['pareto_k_threshold']:.2f} (largest {diagnostics['max_pareto_k']:.2f}): the "
                     "with/without-divergence comparison leans on those cells and is less reliable than its dse says")
    notes.extend(baseline.attrs.get("notes", []))
    return notes


def _sample(counts: Any, options: dict[str, Any], compare: bool, parameterisation: str = "noncentred",
            ) -> tuple[Any, dict, list | None]:
    """Fit the model to aggregated cells, and by PSIS-LOO compare it with the model without each length term.

    The comparison models leave out the divergence terms, the window terms, and the task x
    drafter pair term, where the fit has them; ``loo_comparison`` ranks all of them.
    """
    import arviz as az

    from specsim.model import ModelOptions, fit_model

    full_options = ModelOptions(parameterisation=parameterisation)
    result = fit_model(counts, full_options, **options)
    comparison = None
    diagnostics = dict(result.diagnostics)
    fitted = result.options
    reduced = {}
    if fitted.divergence_terms:
        reduced["without_divergence"] = replace(fitted, divergence_terms=False)
    if fitted.window_terms:
        reduced["without_window"] = replace(fitted, window_terms=False)
    if fitted.pair_terms:
        reduced["without_pair"] = replace(fitted, pair_terms=False)
    if compare and reduced:
        models = {"with_length_terms": result.idata}
        models.update({name: fit_model(counts, reduced_options, **options, drafting=False).idata
                       for name, reduced_options in reduced.items()})
        with warnings.catch_warnings():
            # ArviZ warns of each high Pareto k with its source line; the count is said once, in
            # specsim's words, by :func:`_fit_notes`.
            warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
            table = az.compare(models)
            loo = az.loo(result.idata, pointwise=True)
        comparison = table[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight"]].reset_index(
            names="model").to_dict("records")
        pareto_k = np.asarray(loo.pareto_k.values).reshape(-1)
        good_k = float(getattr(loo, "good_k", 0.7))
        diagnostics["max_pareto_k"] = float(np.max(pareto_k))
        diagnostics["pareto_k_threshold"] = good_k
        diagnostics["pareto_k_high"] = int(np.sum(pareto_k > good_k))
        diagnostics["loo_cells"] = int(pareto_k.size)
    return result, diagnostics, comparison


#: Run-to-run cost drift (log scale) assumed when the traces hold no two runs that time the same
#: drafter, temperature and draft length: the order measured on this project's traces (0.038 between
#: the reference runs; 3-6% between them and the unseen-domain run). Zero would claim that costs
#: transfer exactly to a run nobody measured.
DEFAULT_COST_RUN_LOG_SD = 0.05


def cost_transfer(traces: Traces) -> tuple[float, pd.DataFrame]:
    """How much fitted costs move between the traces' collection runs (leave one run out).

    Returns the root mean square over runs x drafters of the mean log error of a run's speed-ups
    under costs fitted on the other runs, and the per-run table
    (:func:`specsim.simulate.validation.cost_transfer_errors`). When fewer than two runs can be
    compared (each run times other drafters, temperatures or draft lengths) the drift cannot be
    measured and :data:`DEFAULT_COST_RUN_LOG_SD` is returned with an empty table.
    """
    from specsim.simulate.validation import cost_transfer_errors

    table = cost_transfer_errors(traces.tokens, traces.steps, traces.sequences)
    if table["run_id"].nunique() < 2:
        return DEFAULT_COST_RUN_LOG_SD, table.iloc[0:0]
    return float(np.sqrt(np.mean(table["log_error_mean"] ** 2))), table


def _task_lengths(lengths: pd.DataFrame | None) -> dict[str, dict[str, list[int]]]:
    if lengths is None:
        return {}
    return {str(task): {"prompt_len": group["prompt_len"].astype(int).tolist(),
                        "output_len": group["output_len"].astype(int).tolist()}
            for task, group in length_table(lengths).groupby("task")}


def traces_counts(traces: Traces, temperature: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One temperature of the traces as the model reads every source: a counts table and length summaries.

    The counts (:func:`specsim.traces.counts.counts_from_traces`) carry measured contexts and the
    sequences behind each row; the lengths are the modelled drafters' sequences, one row each.
    """
    from specsim.traces.counts import counts_from_traces

    tokens = select(traces.tokens, temperature=temperature)
    if tokens.empty:
        raise InputError(f"no tokens at temperature {temperature}", field="--temperature")
    steps = select(traces.steps, temperature=temperature)
    sequences = select(traces.sequences, temperature=temperature)
    counts = counts_from_traces(tokens, steps, sequences)
    modelled = sequences[sequences["drafter_kind"].isin(MODELLED_KINDS)]
    return counts, length_table(modelled)[["task", "prompt_len", "output_len"]]


def _counts_source(source: Traces | str | Path | list[str | Path], temperature: float | None
                   ) -> tuple[pd.DataFrame, pd.DataFrame | None, float]:
    """The counts, length summaries and temperature of a trace folder or of one or more counts files."""
    from specsim.traces.counts import read_counts, read_counts_lengths, refuse_unmeasured

    if isinstance(source, Traces):
        temperature = 0.0 if temperature is None else temperature
        counts, lengths = traces_counts(source, temperature)
        return counts, lengths, temperature
    paths = [source] if isinstance(source, (str, Path)) else list(source)
    table = pd.concat([read_counts(path) for path in paths], ignore_index=True)
    summaries = [read_counts_lengths(path) for path in paths]
    lengths = None if any(s is None for s in summaries) else pd.concat(summaries, ignore_index=True)
    if temperature is not None:
        table = table[np.isclose(table["temperature"].to_numpy(dtype=float), temperature)]
        if table.empty:
            raise InputError(f"no counts at temperature {temperature}", field="--temperature")
    elif table["temperature"].nunique(dropna=False) > 1:
        raise InputError("counts of several temperatures; choose one with --temperature", field="--temperature")
    refuse_unmeasured(table, ("task", "drafter"), what=", ".join(map(str, paths)))
    temperatures = table["temperature"].dropna().unique()
    return table, lengths, float(temperatures[0]) if len(temperatures) else 0.0


def fit(
    source: Traces | str | Path | list[str | Path], *, temperature: float | None = None, draws: int = 1000,
    tune: int = 1000, chains: int = 4, seed: int = 0, sampler: str = "nutpie", target_accept: float = 0.95,
    compare: bool = True, reference_lengths: dict[str, np.ndarray] | None = None,
    own_tasks: dict[str, list[str]] | None = None, divergence_measure: str = "js",
    parameterisation: str = "noncentred", mass_matrix: str = "diagonal",
) -> FitOutcome:
    """Fit the hierarchical model to counts, whatever their source: traces or counts files.

    Traces become counts first (:func:`traces_counts`; several folders:
    :func:`specsim.traces.store.combine_traces`); counts files (an engine's import, or ``specsim
    traces counts``; several are concatenated) are read and checked. Both reach the model through one aggregation
    into cells (:func:`specsim.model.model_cells`), so the same data give the same cells whichever
    route they took. ``temperature`` selects one (default 0 for traces; a counts file of one
    temperature needs none).

    ``divergence_measure`` names the length covariate (a key of
    :func:`specsim.lengths.divergences`: ``js`` by default, ``w1_log``, ``beyond_share``, ...);
    ``reference_lengths`` and ``own_tasks`` override each drafter's training lengths and tasks;
    ``mass_matrix`` is the NUTS mass matrix adaptation (:func:`specsim.model.fit_model`),
    ``parameterisation`` that of the effects (:class:`specsim.model.ModelOptions`).

    Also fits the model without each length term (divergence, window) and compares them by
    PSIS-LOO (``compare``), fits the statsmodels baseline, and stores in the posterior's metadata
    what prediction needs: the fitted tasks' lengths and, from traces, each drafter's cost model
    at that temperature and the cost drift between collection runs (counts carry no timings:
    ``predict`` then needs ``--cost-ratio`` or ``--cost-profile``). ``FitOutcome.notes`` says
    what was left out or assumed.
    """
    from specsim.model import fit_baseline, model_cells

    _check_sampler_options(sampler, draws, tune, chains, target_accept, mass_matrix, parameterisation)
    _check_measure(divergence_measure)
    counts_table, lengths, temperature = _counts_source(source, temperature)
    counts, notes = model_cells(counts_table, lengths, reference_lengths=reference_lengths, own_tasks=own_tasks,
                                divergence_measure=divergence_measure)
    options: dict[str, Any] = dict(draws=draws, tune=tune, chains=chains, seed=seed, sampler=sampler,
                                   target_accept=target_accept, mass_matrix=mass_matrix)
    result, diagnostics, comparison = _sample(counts, options, compare, parameterisation=parameterisation)
    costs: dict[str, dict] = {}
    spread, transfer = DEFAULT_COST_RUN_LOG_SD, pd.DataFrame()
    if isinstance(source, Traces):
        costs = {drafter: model.to_dict(diagnostics=False) for (drafter, temp), model in cost_models(source).items()
                 if temp == temperature}
        spread, transfer = cost_transfer(source)
    locations = [source.root] if isinstance(source, Traces) else (
        [source] if isinstance(source, (str, Path)) else list(source))
    metadata = replace(result.metadata, diagnostics=diagnostics, temperature=float(temperature),
                       traces=" + ".join(str(Path(location).resolve()) for location in locations),
                       task_lengths=_task_lengths(lengths), cost_models=costs, loo_comparison=comparison,
                       cost_run_log_sd=spread, cost_transfer=transfer.to_dict("records"))
    result = replace(result, diagnostics=diagnostics, metadata=metadata)
    baseline = fit_baseline(counts, result.options)
    return FitOutcome(result, baseline, counts, notes + metadata.notes + _fit_notes(diagnostics, baseline))


def _workload_for_posterior(posterior: Any, source: str) -> Workload:
    """A lengths file, or a task whose lengths the posterior stored."""
    from specsim.workload import is_lengths_file

    meta = posterior.metadata
    if is_lengths_file(source):
        return resolve_workload(source)
    if source not in meta.task_lengths:
        raise InputError(f"no task {source!r} in the fit (tasks: {', '.join(sorted(meta.task_lengths))}) and not a "
                         "lengths file (.csv, .parquet, .jsonl)", field="--workload")
    stored = meta.task_lengths[source]
    return Workload(np.asarray(stored["prompt_len"]), np.asarray(stored["output_len"]), source, "task")


def drafter_kind_of(meta: Any, drafter: str | None, drafter_kind: str | None) -> str:
    """The kind a prediction is for: a fitted drafter's own kind, else ``drafter_kind`` (default finetuned).

    Raises
    ------
    specsim.errors.InputError
        The posterior holds no drafters, or ``drafter_kind`` contradicts the fitted drafter's kind.
    """
    if not meta.drafters or not meta.drafter_kinds:
        raise InputError("the posterior holds no drafters (drafter_kinds is empty): not a posterior specsim fit wrote",
                         field="posterior")
    if drafter is None:
        return drafter_kind or "finetuned"
    fitted = meta.drafter_kinds.get(drafter)
    if fitted is None:
        raise InputError(f"not a drafter of the fit ({', '.join(meta.drafters)})", field="--drafter")
    if drafter_kind is not None and drafter_kind != fitted:
        raise InputError(f"{drafter} was fitted as a {fitted} drafter; --drafter-kind {drafter_kind} contradicts "
                         "it (leave --drafter-kind out)", field="--drafter-kind")
    return fitted


@dataclass(frozen=True)
class Prediction:
    """A posterior predictive speed-up, the workload it is for and whose costs it used."""

    speedup: Any
    workload: Workload
    cost_name: str

    def to_dict(self) -> dict[str, Any]:
        """JSON fields: the prediction's figures and the workload's description."""
        return {**self.workload.describe(), **self.speedup.to_dict()}

    def summary(self, kind: str) -> str:
        """One line, as the CLI prints it (without the costs' label)."""
        p = self.speedup
        verdict = "faster than plain decoding" if p.mean >= 1 else "slower than plain decoding"
        return (f"{kind} drafter on {self.workload.name} (divergence {p.divergence:.3f}): speed-up {p.mean:.3f}x "
                f"({verdict}; {100 * p.level:.0f}% interval {p.low:.3f} to {p.high:.3f}); "
                f"{p.tokens_per_step_mean:.2f} tokens per step (bonus included)"
                + (f"; drafts at {100 * p.draft_chance_mean:.0f}% of steps" if p.draft_chance_mean < 1 else ""))


def predict(
    posterior: Any, *, workload: str | Workload, drafter_kind: str | None = None, drafter: str | None = None,
    divergence: float | None = None, gamma: int = 4, cost: CostModel | None = None, cost_from: str | None = None,
    level: float = INTERVAL_LEVEL, seed: int = 0, n_draws: int = 400, probe: pd.DataFrame | None = None,
    drafter_type: str | None = None, own_content: bool | None = None,
) -> Prediction:
    """Posterior predictive speed-up of a workload for a generic or fine-tuned drafter.

    Parameters
    ----------
    posterior : specsim.model.Posterior
    workload : str or Workload
        Lengths file or a task of the fit.
    drafter_kind : {"generic", "finetuned"}, optional
        The kind to predict for; with ``drafter``, its fitted kind (a contradicting one is
        refused); without, default ``finetuned``.
    drafter : str, optional
        A drafter of the fit: its effect, training lengths and cost model.
    divergence : float, optional
        Length divergence to the drafter's training data; default computed from the drafter's
        training lengths (or, without a drafter, from the pooled training lengths).
    gamma : int
    cost : CostModel, optional
        Costs to use; default the stored cost model of ``cost_from``.
    cost_from : str, optional
        Drafter whose stored costs to use (default ``drafter``, else the first fitted drafter of
        that kind).
    level : float
    seed : int
    n_draws : int
    probe : pandas.DataFrame, optional
        A probe of the workload by this drafter (``specsim probe``): updates the new task's
        effect, so the prediction sees the workload's content, not only its lengths.
    drafter_type : str, optional
        A new drafter's type (needed when the fit holds several); a fitted drafter's is its own.
    own_content : bool, optional
        The workload is the drafter's own training content (default: a fitted task among the
        drafter's own tasks).

    Returns
    -------
    Prediction
        ``speedup`` (:class:`specsim.model.SpeedupPrediction`), the ``workload`` and ``cost_name``
        (whose cost model was used; ``given`` for ``cost``).
    """
    from specsim.model import predict_speedup

    check_level(level)
    meta = posterior.metadata
    drafter_kind = drafter_kind_of(meta, drafter, drafter_kind)
    if drafter_kind not in MODELLED_KINDS:
        raise InputError("must be generic or finetuned", field="--drafter-kind")
    if gamma < 1:
        raise InputError(f"must be >= 1, got {gamma}", field="--gamma")
    if drafter is not None and drafter not in meta.drafters:
        raise InputError(f"not a drafter of the fit ({', '.join(meta.drafters)})", field="--drafter")
    if not isinstance(workload, Workload):
        workload = _workload_for_posterior(posterior, workload)
    if cost is None:
        cost_name = cost_from or drafter or next(
            (d for d in meta.drafters if meta.drafter_kinds.get(d) == drafter_kind), meta.drafters[0])
        cost = meta.cost_model(cost_name)
    else:
        cost_name = "given"
    task = workload.name if workload.kind == "task" else None
    reference = None
    if drafter is None and divergence is None:
        reference = np.concatenate([np.asarray(v) for v in meta.reference_lengths.values()])
    prediction = predict_speedup(posterior, cost, gamma, workload.prompt_lengths, workload.output_lengths,
                                 finetuned=drafter_kind == "finetuned", divergence=divergence, drafter=drafter,
                                 task=task, level=level, rng=seed, n_draws=n_draws, reference_lengths=reference,
                                 probe=probe, cost_log_sd=meta.cost_run_log_sd if cost_name != "given" else 0.0,
                                 drafter_type=drafter_type, own_content=own_content)
    return Prediction(prediction, workload, cost_name)


def probe_from_traces(tokens: pd.DataFrame, prompt_ids: list[str], steps: pd.DataFrame | None = None) -> pd.DataFrame:
    """A probe table (:mod:`specsim.collect.probe`) from greedy traces of some prompts.

    The first drafted token of every step is always evaluated, and under greedy decoding it is
    accepted exactly when the drafter's argmax equals the target's next token given the target's
    own output so far: a teacher-forced agreement at that position, as the probe measures.

    With the matching ``steps``, the probe also carries the steps that drafted nothing (a lookup
    without a match): one row each with ``drafted`` 0 (and ``agree`` 0, not counted as
    agreement), beside ``drafted`` 1 on every other row. The chance of drafting at all is then
    updated from the probe (:func:`specsim.model.predict.draft_chance_draws`).
    """
    first = tokens[tokens["prompt_id"].isin(prompt_ids) & (tokens["draft_index"] == 0)]
    probe = pd.DataFrame({"task": first["task"].astype(str), "drafter": first["drafter"].astype(str),
                          "prompt_id": first["prompt_id"].astype(str), "position": first["position"].to_numpy(),
                          "context_len": first["context_len"].to_numpy(), "agree": first["accepted"].to_numpy()})
    if steps is None:
        return probe
    from specsim.traces.counts import step_positions

    positions = step_positions(steps)
    empty = (steps["prompt_id"].isin(prompt_ids) & (steps["n_drafted"] == 0)).to_numpy()
    chosen = steps[empty]
    nothing = pd.DataFrame({"task": chosen["task"].astype(str), "drafter": chosen["drafter"].astype(str),
                            "prompt_id": chosen["prompt_id"].astype(str), "position": positions[empty],
                            "context_len": chosen["context_len"].to_numpy(), "agree": False})
    probe = pd.concat([probe.assign(drafted=True), nothing.assign(drafted=False)], ignore_index=True)
    return probe.sort_values(["drafter", "prompt_id", "position"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class LotoResult:
    """Leave-one-task-out predictions and what they say about the intervals.

    Attributes
    ----------
    cells : pandas.DataFrame
        One row per held-out task x drafter (see :func:`leave_one_task_out`).
    level : float
        The intervals' probability.
    probe_prompts : int
        Prompts of each held-out cell used as its probe (0: no probe).
    """

    cells: pd.DataFrame
    level: float
    probe_prompts: int = 0

    @staticmethod
    def _figures(cells: pd.DataFrame, probe: bool) -> dict[str, Any]:
        folds = cells.drop_duplicates("held_out_task")
        figures: dict[str, Any] = {
            "cells": len(cells), "cells_covered": int(cells["covered"].sum()),
            "coverage": float(cells["covered"].mean()),
            "mean_absolute_percentage_error": float(cells["error_pct"].abs().mean()),
            "folds": int(len(folds)), "folds_passing_diagnostics": int(folds["diagnostics_passed"].sum())}
        if probe:
            # A cell with no prompt left beside its probe (probe_tokens 0) counts blind only.
            probed = cells[cells["probe_tokens"] > 0]
            covered = probed["covered_probe"].astype(bool)
            figures.update({"cells_probed": int(len(probed)), "cells_covered_probe": int(covered.sum()),
                            "coverage_probe": float(covered.mean()) if len(probed) else None,
                            "mean_absolute_percentage_error_probe":
                                float(probed["error_pct_probe"].abs().mean()) if len(probed) else None})
        return figures

    def overall(self) -> dict[str, Any]:
        """Coverage, MAPE and folds over every held-out cell (pooled: read :meth:`by_group` beside it)."""
        return self._figures(self.cells, bool(self.probe_prompts))

    def by_group(self, by: tuple[str, ...] = ("drafter_type",)) -> pd.DataFrame:
        """The same figures per group of cells (default per drafter type): a pooled figure hides a type."""
        rows = []
        for key, group in self.cells.groupby(list(by), observed=True, sort=True):
            values = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(by, values, strict=True)), **self._figures(group, bool(self.probe_prompts))})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """One line per drafter type and one pooled, as the CLI prints them."""
        lines = []
        for name, figures in [*((row["drafter_type"], row) for row in self.by_group().to_dict("records")),
                              ("all types", self.overall())]:
            line = (f"{name}: {100 * self.level:.0f}% intervals cover {figures['cells_covered']} of {figures['cells']} "
                    f"held-out cells; MAPE {figures['mean_absolute_percentage_error']:.1f}%")
            if self.probe_prompts and figures["cells_probed"]:
                line += (f"; with a probe of {self.probe_prompts} prompts {figures['cells_covered_probe']} of "
                         f"{figures['cells_probed']}, MAPE {figures['mean_absolute_percentage_error_probe']:.1f}%")
            if self.probe_prompts and figures["cells_probed"] < figures["cells"]:
                line += (f"; {figures['cells'] - figures['cells_probed']} cell(s) of {self.probe_prompts} prompts "
                         "or fewer predicted blind only")
            lines.append(line)
        overall = self.overall()
        lines.append(f"{overall['folds_passing_diagnostics']} of {overall['folds']} folds passed the diagnostics gate")
        failed = self.cells[~self.cells["diagnostics_passed"].astype(bool)].drop_duplicates("held_out_task")
        for fold in failed.to_dict("records"):
            figures = [f"{name} {fold[name]:.4g}" for name in FOLD_GATE_FIGURES if pd.notna(fold.get(name))]
            accept = f" at target_accept {fold['target_accept']:g}" if pd.notna(fold.get("target_accept")) else ""
            if pd.notna(fold.get("fold_draws")):
                accept += f" with {int(fold['fold_draws'])} draws per chain"
            checks = fold.get("warnings")
            checks = f" ({checks})" if isinstance(checks, str) and checks else ""
            lines.append(f"fold {fold['held_out_task']} failed the gate{accept}: {', '.join(figures) or 'no figures'}"
                         + checks)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON of ``specsim loto --json``: pooled figures, figures per drafter type, every cell."""
        overall = self.overall()
        return {"interval_level": self.level, **{k: v for k, v in overall.items() if k != "cells"},
                **({"probe_prompts": self.probe_prompts} if self.probe_prompts else {}),
                "by_drafter_type": self.by_group().to_dict("records"), "cells": self.cells.to_dict("records")}


def leave_one_task_out(
    traces: Traces, *, temperature: float = 0.0, gamma: int = 4, draws: int = 1000, seed: int = 0,
    target_accept: float = 0.95, level: float = INTERVAL_LEVEL, n_draws: int = 400,
    progress: Callable[[int, int, str], None] | None = None, divergence_measure: str = "js",
    reference_lengths: dict[str, np.ndarray] | None = None, parameterisation: str = "noncentred",
    probe_prompts: int = 0, mass_matrix: str = "low-rank", own_tasks: dict[str, list[str]] | None = None,
    held_out_tasks: Iterable[str] | None = None, refits: int = 2,
) -> LotoResult:
    """Fit without each task in turn and predict every drafter's speed-up on it.

    The held-out task enters as a new task (its effect drawn from the task population); each
    drafter keeps its own effect and training lengths; the task's own sequence lengths are the
    workload. Costs are held out too: each fold fits the drafters' cost models, and their drift
    between collection runs (:func:`cost_transfer`), on the kept tasks' steps only (a drafter whose
    every timed step is in the held-out task falls back to costs fitted on all traces, and its
    rows say so in ``costs_from``).

    With ``probe_prompts`` k > 0 (greedy traces only), the first k prompts of each held-out cell
    (by prompt id) serve as that drafter's probe of the task: their first drafted token of every
    step, whose acceptance under greedy decoding is the drafter's agreement with the target's
    output at that position (what ``specsim probe`` measures). Every prediction, with and without
    the probe, is then compared with the speed-up measured on the *other* prompts of the cell. A
    cell of k prompts or fewer has none left beside its probe: it is predicted blind on all its
    prompts, its probe columns are NaN and ``probe_tokens`` 0, and the probe figures leave it out
    (``cells_probed``).

    ``held_out_tasks`` holds out only these tasks, one fold each (default: every task of the
    traces at ``temperature``; a name not among them is an :class:`InputError` on ``--task``).

    Folds use nutpie's low-rank mass matrix by default (every fold of both reference
    experiments passes with it). A fold whose fit fails the diagnostics gate is fitted once more
    at :data:`RETRY_TARGET_ACCEPT` (smaller NUTS steps), and if it still fails, a last time there
    with :data:`RETRY_DRAWS_FACTOR` times the draws and warm-up (longer chains); ``refits`` (0 to 2)
    caps these refits. Each row says the ``target_accept`` and the draws per chain (``fold_draws``)
    its fold ended with.

    Returns
    -------
    LotoResult
        Its ``cells``: one row per held-out task x drafter: ``drafter_type``, ``gamma``,
        ``measured_speedup``, ``speedup`` (posterior predictive mean), ``speedup_low``,
        ``speedup_high``, ``covered``, ``error_pct``, ``divergence``, the fold's
        ``diagnostics_passed``, ``target_accept``, ``fold_draws``, ``costs_from`` and ``cost_run_log_sd`` (the
        kept traces' cost drift), the fold's gate figures (:data:`FOLD_GATE_FIGURES`) and its
        ``warnings`` (the failed checks, each naming its worst variable, joined by "; "); with
        ``probe_prompts``, also ``speedup_probe``,
        ``speedup_probe_low``, ``speedup_probe_high``, ``covered_probe``, ``error_pct_probe``
        and ``probe_tokens``.
    """
    from specsim.model import model_cells, predict_speedup

    check_level(level)
    if probe_prompts < 0:
        raise InputError(f"must be >= 0, got {probe_prompts}", field="--probe-prompts")
    if refits not in (0, 1, 2):
        raise InputError(f"must be 0, 1 or 2, got {refits}", field="--refits")
    if probe_prompts and temperature != 0:
        raise InputError("a probe measures greedy agreement: use it with --temperature 0", field="--probe-prompts")
    tokens = select(traces.tokens, temperature=temperature)
    steps = select(traces.steps, temperature=temperature)
    sequences = select(traces.sequences, temperature=temperature)
    modelled = sequences[sequences["drafter_kind"].isin(MODELLED_KINDS)]
    # Checked before the first fold's fit: a held-out cell is measured at one temperature and gamma.
    if modelled.empty:
        temperatures = sorted(float(t) for t in traces.sequences["temperature"].dropna().unique())
        held = ", ".join(f"{t:g}" for t in temperatures)
        raise InputError(f"no traces at temperature {temperature:g} (they hold {held})", field="--temperature")
    gammas = sorted(int(g) for g in modelled["gamma"].unique())
    if gamma not in gammas:
        raise InputError(f"no traces at gamma {gamma} (at temperature {temperature:g} they hold gamma "
                         f"{', '.join(map(str, gammas))})", field="--gamma")
    # Checked before any work: the tasks to hold out.
    tasks = sorted(modelled["task"].unique())
    if held_out_tasks is not None:
        chosen = list(dict.fromkeys(held_out_tasks))
        unknown = [t for t in chosen if t not in tasks]
        if unknown or not chosen:
            raise InputError(f"no task {', '.join(unknown) or '(none named)'} at temperature {temperature:g} "
                             f"(the traces hold {', '.join(tasks)})", field="--task")
        tasks = [t for t in tasks if t in chosen]
    _check_measure(divergence_measure)
    full, _ = model_cells(*traces_counts(traces, temperature), divergence_measure=divergence_measure,
                          reference_lengths=reference_lengths, own_tasks=own_tasks)
    all_costs = cost_models(traces)
    rows = []
    for number, task in enumerate(tasks):
        if progress is not None:
            progress(number, len(tasks), task)
        kept = Traces(traces.root, traces.tokens[traces.tokens["task"] != task],
                      traces.steps[traces.steps["task"] != task], traces.sequences[traces.sequences["task"] != task],
                      traces.runs, traces.incomplete_shards)
        retry_accept = max(target_accept, RETRY_TARGET_ACCEPT)
        ladder = ((target_accept, draws), (retry_accept, draws), (retry_accept, RETRY_DRAWS_FACTOR * draws))
        for fold_accept, fold_draws in dict.fromkeys(ladder[:1 + refits]):
            outcome = fit(kept, temperature=temperature, draws=fold_draws, tune=fold_draws, seed=seed,
                          target_accept=fold_accept, compare=False, reference_lengths=full.reference_lengths,
                          own_tasks=full.own_tasks, divergence_measure=divergence_measure,
                          parameterisation=parameterisation,
                          mass_matrix=mass_matrix)
            if outcome.result.diagnostics["passed"]:
                break
        posterior = outcome.result.posterior()
        # The fold's gate figures, so that a failing fold says which check failed.
        gate = {name: outcome.result.diagnostics.get(name) for name in FOLD_GATE_FIGURES}
        gate["warnings"] = "; ".join(outcome.result.diagnostics.get("warnings", []))
        # fit() already fitted the kept traces' costs and their drift: read them from the posterior.
        fold_meta = outcome.result.metadata
        spread = fold_meta.cost_run_log_sd
        for drafter in sorted(modelled["drafter"].unique()):
            cell = select(modelled, task=task, drafter=drafter, gamma=gamma)
            probed_ids = sorted(cell["prompt_id"].unique())[:probe_prompts]
            if len(probed_ids) == cell["prompt_id"].nunique():
                probed_ids = []  # a probe would leave no prompt to measure: this cell is predicted blind only
            cell = cell[~cell["prompt_id"].isin(probed_ids)]
            if cell.empty:
                continue
            lengths = length_table(cell)
            reference = full.reference_lengths.get(drafter)
            divergence = (0.0 if reference is None
                          else divergences(reference, lengths[full.length_kind])[full.divergence_measure])
            measured = measured_speedup(cell)
            kept_costs = drafter in fold_meta.cost_models
            costs_from = "kept tasks" if kept_costs else "all traces"
            cost = fold_meta.cost_model(drafter) if kept_costs else all_costs[(drafter, temperature)]
            arguments = (posterior, cost, gamma, lengths["prompt_len"].to_numpy(), lengths["output_len"].to_numpy())
            options = dict(finetuned=cell["drafter_kind"].iloc[0] == "finetuned", divergence=divergence,
                           drafter=drafter, own_content=task in full.own_tasks.get(drafter, []), level=level,
                           rng=seed, n_draws=n_draws, cost_log_sd=spread)
            prediction = predict_speedup(*arguments, **options)
            row = {"held_out_task": task, "drafter": drafter, "drafter_type": str(cell["drafter_type"].iloc[0]),
                   "gamma": gamma, "divergence": divergence,
                   "measured_speedup": measured, "speedup": prediction.mean, "speedup_low": prediction.low,
                   "speedup_high": prediction.high, "covered": bool(prediction.low <= measured <= prediction.high),
                   "error_pct": 100 * (prediction.mean - measured) / measured,
                   "diagnostics_passed": bool(outcome.result.diagnostics["passed"]), "target_accept": fold_accept,
                   "fold_draws": fold_draws,
                   "costs_from": costs_from, "cost_run_log_sd": spread, **gate}
            if probe_prompts and not probed_ids:
                row.update({"speedup_probe": np.nan, "speedup_probe_low": np.nan, "speedup_probe_high": np.nan,
                            "covered_probe": np.nan, "error_pct_probe": np.nan, "probe_tokens": 0})
            elif probe_prompts:
                probe = probe_from_traces(select(tokens, task=task, drafter=drafter, gamma=gamma), probed_ids,
                                          select(steps, task=task, drafter=drafter, gamma=gamma))
                with_probe = predict_speedup(*arguments, **options, probe=probe)
                row.update({"speedup_probe": with_probe.mean, "speedup_probe_low": with_probe.low,
                            "speedup_probe_high": with_probe.high,
                            "covered_probe": bool(with_probe.low <= measured <= with_probe.high),
                            "error_pct_probe": 100 * (with_probe.mean - measured) / measured,
                            "probe_tokens": len(probe)})
            rows.append(row)
    if progress is not None:
        progress(len(tasks), len(tasks), "")
    return LotoResult(pd.DataFrame(rows), level, probe_prompts)


@dataclass(frozen=True)
class DemoResult:
    """What ``specsim demo`` did on a trace folder: checked, summarised, validated, fitted, reported."""

    traces: Traces
    summary: pd.DataFrame
    validation: Validation
    fit: FitOutcome
    posterior: Path
    report: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON of ``specsim demo --json``."""
        return {"traces": str(self.traces.root), "sequences": len(self.traces.sequences),
                "drafted": len(self.traces.tokens), "summary": self.summary.to_dict("records"),
                "simulator_mape": self.validation.mape, "simulator_worst_group_bias": self.validation.worst_group_bias,
                "posterior": str(self.posterior), "fit": self.fit.to_dict(), "report": str(self.report.resolve())}


def demo(traces: Traces, out: str | Path, *, draws: int = 1000, folders: Iterable[str | Path] | None = None,
         stage: Callable[[str], None] | None = None) -> DemoResult:
    """The main job on an experiment: greedy summary, simulator validation, the model's fit, the main report.

    ``traces`` may combine several folders (``folders``, handed on to the report; default its
    root). ``stage`` is told the name of each long step as it starts (the CLI shows it); the
    posterior and the report go to ``out``.
    """
    from specsim.analysis import summarize
    from specsim.report import render_report

    out = Path(out)
    greedy = traces.sequences[traces.sequences["temperature"] == 0]
    summary = summarize(traces.steps[traces.steps["temperature"] == 0], greedy)
    if stage is not None:
        stage("validating the simulator against the measured cells")
    validation = validate(traces)
    if stage is not None:
        stage("sampling the hierarchical model (compiles first)")
    outcome = fit(traces, draws=draws, tune=draws)
    posterior = outcome.result.save(out / "posterior.nc")
    if stage is not None:
        stage("rendering the main report")
    gamma = int(greedy["gamma"].mode().iloc[0])  # the report's figures at the traces' most common draft length
    sources = ",".join(str(folder) for folder in (folders or [traces.root]))
    html = render_report("main", {"traces": sources, "posterior": str(posterior), "gamma": gamma}, out)
    return DemoResult(traces, summary, validation, outcome, posterior, Path(html))


def length_effects_by_type(
    posterior: Any, *, workload: Workload, gamma: int = 4, cost: CostModel | dict[str, CostModel],
    level: float = INTERVAL_LEVEL,
    divergence_step: float = 0.1, n_draws: int = 400, seed: int = 0,
) -> pd.DataFrame:
    """How speed-up changes with length, per drafter type and kind: the research question's answer.

    For each fitted drafter type and kind (generic, fine-tuned), a new drafter of that type and
    kind on a new task decodes ``workload`` under ``cost`` (one for every type, or one per type);
    the speed-up is computed draw by draw
    (i) inside the training window and one doubling of context past it (``beyond`` 0 and 1 in
    every position bin), and (ii) at divergence 0 and ``divergence_step``. Their ratios isolate the
    acceptance side of each length effect (the workload's lengths and the costs are the same in
    both arms). Ratios below 1: the speed-up falls.

    A type whose drafters draft nothing at some steps (lookups) also drafts at each step with
    the fit's chance of drafting (:mod:`specsim.model.drafting`) in every arm, and (iii) with every
    position bin's context doubled, which moves only that chance: ``per_context_doubling`` is the
    length effect of a drafter without a training window.

    Returns
    -------
    pandas.DataFrame
        One row per type x kind: ``per_doubling``, ``per_divergence_step`` and
        ``per_context_doubling`` (posterior mean of the speed-up ratio) with ``_low``/``_high``
        interval ends, the logit slopes ``beyond_slope``, ``divergence_slope`` and
        ``draft_context_slope`` (posterior means), ``window_terms``, ``divergence_terms`` and
        ``draft_context_terms`` (whether the fit has them: a ratio of exactly 1 without them is no
        measurement), ``window_measured`` (whether cells of the type reach past a window:
        otherwise the ratio is the prior's), and the measured drafters of that type and kind.
    """
    from specsim.model.drafting import draft_hazards
    from specsim.model.predict import DrafterSpec, acceptance_draws, draft_chance_draws, workload_context
    from specsim.simulate.acceptance import AcceptanceProfile

    check_level(level)
    meta = posterior.metadata
    rng = np.random.default_rng(seed)
    edges = np.asarray(meta.position_edges, dtype=float)
    n_bins = len(edges) + 1
    pairs, weights = np.unique(np.column_stack([workload.prompt_lengths, workload.output_lengths]), axis=0,
                               return_counts=True)
    chosen = rng.choice(posterior.n_draws, size=min(n_draws, posterior.n_draws), replace=False)
    context = workload_context(pairs[:, 0], pairs[:, 1], edges, weights)[0]
    d = posterior.draws
    rows = []
    for drafter_type in meta.drafter_types:
        for kind in MODELLED_KINDS:
            spec = DrafterSpec(kind == "finetuned", drafter_type)
            arms = {"inside": (np.zeros(n_bins), 0.0), "beyond": (np.ones(n_bins), 0.0),
                    "diverged": (np.zeros(n_bins), divergence_step)}
            # The same seed in every arm: the new task's and drafter's effects are the same draws.
            rates = {arm: acceptance_draws(posterior, spec, divergence=divergence, beyond=beyond, rng=seed)
                     for arm, (beyond, divergence) in arms.items()}
            inside = draft_chance_draws(posterior, spec, rng=seed, context=context, gamma=gamma)
            chances: dict[str, np.ndarray | None] = dict.fromkeys(arms, inside)
            # Every bin's context doubled: the acceptance inside the window, only the chance of drafting moves.
            rates["longer"] = rates["inside"]
            chances["longer"] = draft_chance_draws(posterior, spec, rng=seed, context=2 * context, gamma=gamma)
            costs = cost[drafter_type] if isinstance(cost, dict) else cost
            speedups = {}
            for arm, arm_rates in rates.items():
                draws = []
                chance = chances[arm]
                for i in chosen:
                    hazards = None if chance is None else draft_hazards(chance[i], n_bins)
                    draws.append(expected_workload(AcceptanceProfile(arm_rates[i], edges, hazards, hazards), costs,
                                                   gamma, pairs[:, 0], pairs[:, 1].astype(int),
                                                   weights=weights).speedup)
                speedups[arm] = np.array(draws)
            type_code = meta.drafter_types.index(drafter_type)
            finetuned = float(kind == "finetuned")
            row: dict[str, Any] = {"drafter_type": drafter_type, "drafter_kind": kind}
            for name, ratio in (("per_doubling", speedups["beyond"] / speedups["inside"]),
                                ("per_divergence_step", speedups["diverged"] / speedups["inside"]),
                                ("per_context_doubling", speedups["longer"] / speedups["inside"])):
                low, high = np.quantile(ratio, central_quantiles(level))
                row.update({name: float(ratio.mean()), f"{name}_low": float(low), f"{name}_high": float(high)})
            slope = d["b_beyond"][:, type_code] + finetuned * d["b_beyond_finetuned"][:, type_code] if (
                "b_beyond" in d) else np.zeros(1)
            row["beyond_slope"] = float(slope.mean())
            row["divergence_slope"] = (float((d["b_divergence"] + finetuned * d["b_interaction"]).mean())
                                       if "b_divergence" in d else 0.0)
            row["window_terms"] = "b_beyond" in d
            # A type none of whose cells reaches past a window has only its prior's slope.
            row["window_measured"] = "b_beyond" in d and drafter_type in meta.types_past_window
            row["divergence_terms"] = "b_divergence" in d
            drafting = inside is not None and "draft_b_context" in d and np.ptp(d["draft_b_context"]) > 0
            row["draft_context_terms"] = bool(drafting)
            row["draft_context_slope"] = float(np.mean(d["draft_b_context"])) if drafting else 0.0
            row["measured_drafters"] = ", ".join(
                r for r in meta.drafters if meta.drafter_kinds.get(r) == kind
                and meta.drafter_type_of.get(r, meta.drafter_types[0]) == drafter_type) or "none"
            rows.append(row)
    return pd.DataFrame(rows)

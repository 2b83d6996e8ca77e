"""Model cells from counts: the one route from traces and engines into the hierarchical model.

Per-token traces become a counts table first (:func:`specsim.traces.counts.counts_from_traces`),
engines' output is imported into one (:mod:`specsim.engines`); :func:`model_cells` turns any counts
table into cells: one row per task x drafter x draft index x position bin with tokens evaluated and
accepted (conditional acceptance) and the covariates of :mod:`specsim.model.spec`:

- ``finetuned`` and ``drafter_type`` (a separate model, a feature head or a lookup);
- ``content_match``: the task is one the drafter was trained on (its ``drafter_trained_on``
  names, ``+``-separated, or ``own_tasks``);
- ``divergence``: the length divergence between the drafter's training data and the task, from
  the tasks' length summaries (a ``mixture`` drafter's training data pool every task);
- ``beyond``: doublings of the cell's mean context length past the drafter's training window (the
  longest of its training sequences; a drafter trained on nothing has none);
- ``prompts``: the sequences behind the cell (the over-dispersion scales with it).

Drafters that draft nothing at some steps (lookups) also get drafting cells: steps and steps
that drafted, per task x drafter x gamma x position bin (:mod:`specsim.model.drafting`).

Never one row per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.lengths import divergences, length_table
from specsim.model.drafting import drafting_cells

__all__ = ["AcceptanceCounts", "model_cells", "training_windows", "beyond_window", "MIXTURE_NAMES",
           "UNSPECIFIED_TYPE", "MODELLED_KINDS", "LENGTH_KIND"]

#: ``drafter_trained_on`` values that mean "all tasks pooled".
MIXTURE_NAMES = ("mixture", "all")
#: Drafter kinds the model describes (the untrained baseline is not a drafter population).
MODELLED_KINDS = ("generic", "finetuned")
#: The lengths the divergence covariate and the training windows are taken of: prompt plus output.
LENGTH_KIND = "total_len"
#: Drafter type of counts whose source does not say (engines' counters).
UNSPECIFIED_TYPE = "unspecified"


@dataclass(frozen=True)
class AcceptanceCounts:
    """Counts and covariates ready for :func:`specsim.model.hierarchical.build_model`.

    Attributes
    ----------
    cells : pandas.DataFrame
        One row per task x drafter x draft_index x position_bin with ``evaluated``,
        ``accepted``, ``finetuned`` (0/1), ``drafter_type``, ``content_match`` (0/1),
        ``divergence``, ``beyond``, ``context_len_mean``, ``prompts`` and integer codes
        ``task_code``, ``drafter_code``, ``type_code``.
    tasks, drafters, drafter_types : list of str
        Names behind the codes.
    position_edges : numpy.ndarray
        Interior edges of the position bins.
    divergence_measure, length_kind : str
        How the divergence was computed.
    reference_lengths : dict of str to numpy.ndarray
        The training-data lengths used for each drafter (empty: no divergence covariate).
    observed_positions : dict of str to int
        Largest generated-token position each drafter's data decoded (longest output minus
        one): predictions for positions beyond it extrapolate.
    windows : dict of str to float
        Each drafter's training window in tokens (``inf``: trained on nothing, no window).
    own_tasks : dict of str to list of str
        The tasks each drafter was trained on (its own content).
    drafting : pandas.DataFrame
        Steps and steps that drafted anything, per task x drafter, of the drafters that drafted
        nothing at some step (:func:`specsim.model.drafting.drafting_cells`; empty: every drafter
        drafts at every step).
    """

    cells: pd.DataFrame
    tasks: list[str]
    drafters: list[str]
    position_edges: np.ndarray
    divergence_measure: str
    length_kind: str
    reference_lengths: dict[str, np.ndarray]
    observed_positions: dict[str, int] = field(default_factory=dict)
    drafter_types: list[str] = field(default_factory=lambda: ["model"])
    windows: dict[str, float] = field(default_factory=dict)
    own_tasks: dict[str, list[str]] = field(default_factory=dict)
    drafting: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["task", "drafter", "steps", "drafted", "prompts"]))

    @property
    def n_draft_index(self) -> int:
        """Number of draft indices."""
        return int(self.cells["draft_index"].max()) + 1

    @property
    def n_position_bins(self) -> int:
        """Number of position bins."""
        return len(self.position_edges) + 1


def training_windows(reference_lengths: Mapping[str, np.ndarray], drafters: Sequence[str]) -> dict[str, float]:
    """Each drafter's training window: the longest of its training sequences (``inf`` without any)."""
    return {d: float(np.max(reference_lengths[d])) if d in reference_lengths and len(reference_lengths[d])
            else float("inf") for d in drafters}


def beyond_window(context_len: np.ndarray | float, window: np.ndarray | float) -> np.ndarray:
    """Doublings of context past a training window: ``max(0, log2(context / window))`` (0 without a window).

    Examples
    --------
    >>> beyond_window(np.array([100.0, 256.0, 1024.0]), 256.0).tolist()
    [0.0, 0.0, 2.0]
    """
    context = np.asarray(context_len, dtype=float)
    window = np.broadcast_to(np.asarray(window, dtype=float), context.shape)
    with np.errstate(divide="ignore"):
        doublings = np.log2(context / window)
    return np.where(np.isfinite(window) & (window > 0), np.maximum(doublings, 0.0), 0.0)


def _trained_names(trained_on: object) -> list[str]:
    name = "" if trained_on is None or pd.isna(trained_on) else str(trained_on)
    return [part.strip() for part in name.split("+") if part.strip()]


def _own_tasks(trained_on: pd.Series, tasks: Sequence[str], own_tasks: Mapping[str, Sequence[str]] | None
               ) -> dict[str, list[str]]:
    own = {}
    for drafter, name in trained_on.items():
        if own_tasks and drafter in own_tasks:
            own[str(drafter)] = [str(t) for t in own_tasks[drafter]]
            continue
        names = _trained_names(name)
        own[str(drafter)] = list(tasks) if set(names) & set(MIXTURE_NAMES) else [t for t in names if t in tasks]
    return own


def _references(trained_on: pd.Series, task_lengths: Mapping[str, np.ndarray],
                reference_lengths: Mapping[str, np.ndarray] | None, notes: list[str]) -> dict[str, np.ndarray]:
    """Training lengths per drafter; empty (no divergence covariate) where one cannot be resolved."""
    references = {}
    for drafter, name in trained_on.items():
        if reference_lengths and drafter in reference_lengths:
            references[str(drafter)] = np.asarray(reference_lengths[drafter], dtype=float)
            continue
        names = _trained_names(name)
        if not names:
            continue  # trained on nothing (prompt lookup): no training lengths, no window
        names = list(task_lengths) if set(names) & set(MIXTURE_NAMES) else names
        if not set(names) <= set(task_lengths):
            notes.append(f"drafter {drafter!r} trained on {name!r}, which is no task of the data and has no "
                         "training lengths given: the divergence covariate is 0 (fit without divergence terms)")
            return {}
        references[str(drafter)] = np.concatenate([task_lengths[n] for n in names])
    return references


def model_cells(
    counts: pd.DataFrame,
    lengths: pd.DataFrame | None = None,
    *,
    divergence_measure: str = "js",
    reference_lengths: Mapping[str, np.ndarray] | None = None,
    own_tasks: Mapping[str, Sequence[str]] | None = None,
) -> tuple[AcceptanceCounts, list[str]]:
    """Model cells from a counts table (:mod:`specsim.traces.counts`), whatever its source.

    Parameters
    ----------
    counts : pandas.DataFrame
        A counts table of one temperature (:func:`specsim.traces.counts.read_counts` or
        :func:`specsim.traces.counts.counts_from_traces`).
    lengths : pandas.DataFrame, optional
        The tasks' sequence lengths (``task``, ``prompt_len``, ``output_len``; one row per
        sequence). Without them (or without training lengths for a drafter) the divergence
        covariate is 0 for every cell: fit without divergence terms.
    divergence_measure : str
        Key of :func:`specsim.lengths.divergences` used as the covariate (of total lengths,
        :data:`LENGTH_KIND`).
    reference_lengths : mapping, optional
        Training-data total lengths per drafter, overriding the ``drafter_trained_on`` default;
        they also set each drafter's training window.
    own_tasks : mapping, optional
        The tasks each drafter was trained on, overriding its ``drafter_trained_on`` names (a
        drafter trained on windows of a corpus that the tasks cut at several lengths).

    The untrained baseline (``drafter_kind`` untrained) is no drafter population and is left out.

    Returns
    -------
    counts : AcceptanceCounts
    notes : list of str
        What was left out or assumed (groups with totals only, no length summaries, no context
        lengths or prompt counts).
    """
    from specsim.traces.counts import with_optional_columns

    notes: list[str] = []
    counts = with_optional_columns(counts)
    if counts["temperature"].nunique(dropna=False) > 1:
        raise InputError("counts of several temperatures; fit one temperature at a time", field="temperature")
    kinds = MODELLED_KINDS
    length_kind = LENGTH_KIND
    counts = counts[counts["drafter_kind"].isin(kinds)]
    group = ["source", "task", "drafter", "drafter_kind", "gamma"]
    resolved_groups = counts.groupby(group, observed=True)["draft_index"].transform("max") >= 0
    totals_only = counts.loc[~resolved_groups, group].drop_duplicates()
    if len(totals_only):
        notes.append(f"{len(totals_only)} group(s) with totals only (no draft index) left out: "
                     + ", ".join(f"{r.task}/{r.drafter}" for r in totals_only.itertuples()))
    rows = counts[counts["draft_index"] >= 0].copy()
    if rows.empty:
        raise InputError(f"no per-draft-index counts (draft_index >= 0) of drafter kinds {', '.join(kinds)}: the "
                         "model needs resolved positions", field="draft_index")
    starts = rows["position_start"].to_numpy(dtype=float)
    if np.isnan(starts).any() and not np.isnan(starts).all():
        raise InputError("some rows have a position range and some pool every position; give one kind",
                         field="position_start")
    positions_resolved = not np.isnan(starts).all()
    edges = np.unique(starts[starts > 0]) if positions_resolved else np.array([])
    rows["position_bin"] = np.searchsorted(edges, np.nan_to_num(starts), side="right")
    rows["drafter_type"] = rows["drafter_type"].where(rows["drafter_type"].notna(), UNSPECIFIED_TYPE)
    task_lengths = None
    tasks = sorted(rows["task"].unique())
    if lengths is None or not set(tasks) <= set(lengths["task"]):
        notes.append("no length summaries for every task: the divergence covariate is 0 (fit without "
                     "divergence terms)")
    else:
        table = length_table(lengths[lengths["task"].isin(tasks)])
        task_lengths = {str(task): g[length_kind].to_numpy(dtype=float) for task, g in table.groupby("task")}
    trained_on = rows.drop_duplicates("drafter").set_index("drafter")["drafter_trained_on"]
    references = _references(trained_on, task_lengths or {}, reference_lengths, notes) if task_lengths else (
        {str(d): np.asarray(v, dtype=float) for d, v in (reference_lengths or {}).items() if d in trained_on.index})
    windows = training_windows(references, [str(d) for d in trained_on.index])
    rows["context_len_mean"] = _context_lengths(rows, lengths, notes)
    blind_lookups = sorted(str(d) for d, g in rows.groupby("drafter", observed=True)
                           if (g["drafter_type"] == "lookup").any() and g["offered"].isna().all())
    if blind_lookups:
        notes.append(f"lookup drafter(s) {', '.join(blind_lookups)} without steps asked per draft index (`offered`; "
                     "an engine's counters): their chance of drafting at all is unknown, and predictions take them as "
                     "drafting at every step, an upper bound on their speed-up")
    rows["prompts"] = _prompts(rows, notes)
    # Sums over sources and draft lengths; context lengths weighted by evaluated tokens.
    rows["evaluated"] = rows["evaluated"].astype(np.int64)
    rows["context_weight"] = rows["context_len_mean"] * rows["evaluated"]
    keys = ["task", "drafter", "drafter_kind", "drafter_type", "draft_index", "position_bin"]
    cells = rows.groupby(keys, observed=True)[["evaluated", "accepted", "context_weight", "prompts"]].sum(
        min_count=1).reset_index()
    cells = cells[cells["evaluated"] > 0].reset_index(drop=True)
    cells["context_len_mean"] = cells.pop("context_weight") / cells["evaluated"]
    cells["accepted"] = cells["accepted"].astype(np.int64)
    cells["prompts"] = cells["prompts"].fillna(1).clip(lower=1).astype(np.int64)
    if task_lengths is None or not references:
        cells["divergence"] = 0.0
    else:
        # A drafter trained on nothing (prompt lookup) has no training lengths to diverge from.
        divergence = {(task, drafter): divergences(references[drafter], task_lengths[task])[divergence_measure]
                      if drafter in references else 0.0
                      for task, drafter in cells[["task", "drafter"]].drop_duplicates().itertuples(index=False)}
        cells["divergence"] = [divergence[(t, d)] for t, d in zip(cells["task"], cells["drafter"], strict=True)]
    cells["beyond"] = np.where(cells["context_len_mean"].notna(),
                               beyond_window(cells["context_len_mean"].fillna(1.0).to_numpy(),
                                             cells["drafter"].map(windows).to_numpy(dtype=float)), 0.0)
    own = _own_tasks(trained_on, tasks, own_tasks)
    cells["finetuned"] = (cells["drafter_kind"] == "finetuned").astype(int)
    cells["content_match"] = [int(t in own.get(d, [])) for t, d in zip(cells["task"], cells["drafter"], strict=True)]
    drafters = sorted(cells["drafter"].unique())
    types = sorted(cells["drafter_type"].unique())
    cells["task_code"] = cells["task"].map({t: i for i, t in enumerate(tasks)})
    cells["drafter_code"] = cells["drafter"].map({d: i for i, d in enumerate(drafters)})
    cells["type_code"] = cells["drafter_type"].map({t: i for i, t in enumerate(types)})
    observed: dict[str, int] = {}
    if positions_resolved:
        observed = {str(d): int(v) - 1 for d, v in rows.groupby("drafter")["position_stop"].max().items()}
    elif lengths is not None:
        longest = int(lengths["output_len"].max()) - 1
        observed = {str(d): longest for d in drafters}
    return AcceptanceCounts(cells, tasks, drafters, edges, divergence_measure, length_kind, references, observed,
                            types, {d: windows[d] for d in drafters}, {d: own.get(d, []) for d in drafters},
                            drafting_cells(rows)), notes


def _context_lengths(rows: pd.DataFrame, lengths: pd.DataFrame | None, notes: list[str]) -> pd.Series:
    """Each row's mean context length: measured (traces), else the task's mean prompt plus the range's middle."""
    measured = pd.to_numeric(rows["context_len_mean"], errors="coerce")
    missing = measured.isna() & (rows["evaluated"] > 0)
    if not missing.any():
        return measured
    if lengths is None or not set(rows.loc[missing, "task"]) <= set(lengths["task"]):
        notes.append("no context lengths for some rows and no length summaries to estimate them: those cells are "
                     "taken as inside every training window")
        return measured
    table = length_table(lengths)
    prompt = table.groupby("task")["prompt_len"].mean()
    output = table.groupby("task")["output_len"].mean()
    start = rows["position_start"].astype(float).fillna(0.0)
    stop = np.minimum(rows["position_stop"].astype(float).fillna(np.inf), rows["task"].map(output).astype(float))
    middle = (start + np.maximum(stop, start)) / 2
    notes.append("context lengths estimated from the tasks' mean prompt length and the middle of each position "
                 "range (the source gives no per-row context)")
    return measured.fillna(rows["task"].map(prompt).astype(float) + middle).clip(lower=1.0)


def _prompts(rows: pd.DataFrame, notes: list[str]) -> pd.Series:
    """Sequences behind each row: its own count, else the group's sequences, else 1."""
    own = pd.to_numeric(rows["prompts"], errors="coerce")
    if own.notna().all():
        return own
    group = pd.to_numeric(rows["sequences"], errors="coerce")
    if own.isna().any() and group[own.isna()].isna().any():
        notes.append("no sequence counts for some rows: their over-dispersion is taken per cell, not per prompt")
    return own.fillna(group).fillna(1.0)

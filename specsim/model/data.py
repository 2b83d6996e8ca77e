"""Aggregated acceptance counts and covariates for the hierarchical model.

One row per task x drafter x draft index x position bin: tokens evaluated and accepted
(conditional acceptance), with the drafter's kind, the length divergence between the
drafter's training data and the task, and the indices the model needs. Never one row per
token.

The divergence reference of a drafter is the length distribution of its training data:
given explicitly (``reference_lengths``), or else the tasks named by its
``drafter_trained_on`` in the traces (a generic drafter trained on a ``mixture`` pools every
task).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.lengths import divergences, length_table
from specsim.traces.counts import token_step_positions
from specsim.traces.schema import DEFAULT_POSITION_EDGES

__all__ = ["AcceptanceCounts", "aggregate_counts", "aggregate_counts_table", "drafter_reference_lengths",
           "MIXTURE_NAMES"]

#: ``drafter_trained_on`` values that mean "all tasks pooled".
MIXTURE_NAMES = ("mixture", "all", "")


@dataclass(frozen=True)
class AcceptanceCounts:
    """Counts and covariates ready for :func:`specsim.model.hierarchical.build_model`.

    Attributes
    ----------
    cells : pandas.DataFrame
        One row per task x drafter x draft_index x position_bin with ``evaluated``,
        ``accepted``, ``finetuned`` (0/1), ``divergence`` and integer codes ``task_code``,
        ``drafter_code``.
    tasks, drafters : list of str
        Names behind the codes.
    position_edges : numpy.ndarray
        Interior edges of the position bins.
    divergence_measure, length_kind : str
        How the divergence was computed.
    reference_lengths : dict of str to numpy.ndarray
        The training-data total lengths used for each drafter.
    observed_positions : dict of str to int
        Largest generated-token position each drafter's traces decoded (longest output minus
        one): predictions for positions beyond it extrapolate.
    """

    cells: pd.DataFrame
    tasks: list[str]
    drafters: list[str]
    position_edges: np.ndarray
    divergence_measure: str
    length_kind: str
    reference_lengths: dict[str, np.ndarray]
    observed_positions: dict[str, int] = field(default_factory=dict)

    @property
    def n_draft_index(self) -> int:
        """Number of draft indices."""
        return int(self.cells["draft_index"].max()) + 1

    @property
    def n_position_bins(self) -> int:
        """Number of position bins."""
        return len(self.position_edges) + 1


def drafter_reference_lengths(
    sequences: pd.DataFrame, length_kind: str = "total_len",
    reference_lengths: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Training-data lengths of each drafter (see the module docstring)."""
    references = {}
    for drafter, group in sequences.groupby("drafter", observed=True):
        if reference_lengths and drafter in reference_lengths:
            references[drafter] = np.asarray(reference_lengths[drafter], dtype=float)
            continue
        trained_on = group["drafter_trained_on"].iloc[0]
        trained_on = "" if pd.isna(trained_on) else str(trained_on)
        if trained_on in MIXTURE_NAMES:
            rows = sequences
        else:
            names = [name.strip() for name in trained_on.split("+")]
            rows = sequences[sequences["task"].isin(names) | sequences["dataset"].isin(names)]
            if rows.empty:
                raise InputError(
                    f"drafter {drafter!r} was trained on {trained_on!r}, which is no task or dataset in the traces; "
                    "give its training lengths (reference lengths)", field="drafter_trained_on")
        rows = length_table(rows)
        references[drafter] = rows[length_kind].to_numpy(dtype=float)
    return references


def aggregate_counts(
    tokens: pd.DataFrame,
    sequences: pd.DataFrame,
    *,
    position_edges: np.ndarray = DEFAULT_POSITION_EDGES,
    max_draft_index: int | None = None,
    divergence_measure: str = "js",
    length_kind: str = "total_len",
    reference_lengths: Mapping[str, np.ndarray] | None = None,
    kinds: tuple[str, ...] = ("generic", "finetuned"),
) -> AcceptanceCounts:
    """Aggregate evaluated/accepted tokens into model cells with covariates.

    Parameters
    ----------
    tokens, sequences : pandas.DataFrame
        Tables of one temperature (filter first).
    position_edges : numpy.ndarray
        Interior edges of the sequence-position bins (position of the step's first token).
    max_draft_index : int, optional
        Pool draft indices at or beyond this into the last one.
    divergence_measure : str
        Key of :func:`specsim.lengths.divergences` used as the covariate.
    length_kind : str
        ``prompt_len``, ``output_len`` or ``total_len``.
    reference_lengths : mapping, optional
        Training-data lengths per drafter, overriding the ``drafter_trained_on`` default.
    kinds : tuple of str
        Drafter kinds to keep (the untrained baseline is left out by default).
    """
    if tokens["temperature"].nunique() > 1:
        raise InputError("tokens of several temperatures; fit one temperature at a time", field="temperature")
    tokens = tokens[tokens["drafter_kind"].isin(kinds) & tokens["evaluated"]]
    sequences = sequences[sequences["drafter_kind"].isin(kinds)]
    if tokens.empty:
        raise InputError(f"no evaluated tokens of drafter kinds {', '.join(kinds)}", field="drafter_kind")
    step_position = token_step_positions(tokens)
    # Bins past the longest sequence would only add parameters the data cannot inform.
    edges = np.asarray(position_edges, dtype=float)
    edges = edges[edges <= step_position.max()]
    cells = _cells(tokens, np.searchsorted(edges, step_position, side="right"), np.ones(len(tokens), np.int64),
                   max_draft_index)
    references = drafter_reference_lengths(sequences, length_kind, reference_lengths)
    table = length_table(sequences)
    task_lengths = {task: group[length_kind].to_numpy(dtype=float) for task, group in table.groupby("task")}
    # The generated positions the traces decoded (the longest output of each drafter).
    observed = sequences.groupby("drafter", observed=True)["output_len"].max() - 1
    return _with_covariates(cells, edges, task_lengths, references, divergence_measure, length_kind,
                            {str(d): int(p) for d, p in observed.items()})


def _cells(rows: pd.DataFrame, position_bin: np.ndarray, evaluated: np.ndarray,
           max_draft_index: int | None) -> pd.DataFrame:
    """Evaluated and accepted drafted tokens summed per task x drafter x kind x draft index x position bin."""
    index = rows["draft_index"].to_numpy()
    if max_draft_index is not None:
        index = np.minimum(index, max_draft_index)
    frame = pd.DataFrame({
        "task": rows["task"].to_numpy(), "drafter": rows["drafter"].to_numpy(),
        "drafter_kind": rows["drafter_kind"].to_numpy(), "draft_index": index, "position_bin": position_bin,
        "evaluated": evaluated, "accepted": rows["accepted"].to_numpy(dtype=np.int64),
    })
    return frame.groupby(["task", "drafter", "drafter_kind", "draft_index", "position_bin"], observed=True)[
        ["evaluated", "accepted"]].sum().reset_index()


def _with_covariates(cells: pd.DataFrame, edges: np.ndarray, task_lengths: Mapping[str, np.ndarray] | None,
                     references: dict[str, np.ndarray], divergence_measure: str, length_kind: str,
                     observed_positions: dict[str, int]) -> AcceptanceCounts:
    """Add the divergence covariate (0 without task lengths), the fine-tuned flag and the codes."""
    if task_lengths is None:
        cells["divergence"] = 0.0
    else:
        divergence = {
            (task, drafter): divergences(references[drafter], task_lengths[task])[divergence_measure]
            for task, drafter in cells[["task", "drafter"]].drop_duplicates().itertuples(index=False)
        }
        cells["divergence"] = [divergence[(t, d)] for t, d in zip(cells["task"], cells["drafter"], strict=True)]
    cells["finetuned"] = (cells["drafter_kind"] == "finetuned").astype(int)
    tasks, drafters = sorted(cells["task"].unique()), sorted(cells["drafter"].unique())
    cells["task_code"] = cells["task"].map({t: i for i, t in enumerate(tasks)})
    cells["drafter_code"] = cells["drafter"].map({d: i for i, d in enumerate(drafters)})
    return AcceptanceCounts(cells, tasks, drafters, edges, divergence_measure, length_kind, references,
                            observed_positions)


def aggregate_counts_table(
    counts: pd.DataFrame,
    lengths: pd.DataFrame | None = None,
    *,
    max_draft_index: int | None = None,
    divergence_measure: str = "js",
    length_kind: str = "total_len",
    reference_lengths: Mapping[str, np.ndarray] | None = None,
    kinds: tuple[str, ...] = ("generic", "finetuned"),
) -> tuple[AcceptanceCounts, list[str]]:
    """Model cells from a counts table (:mod:`specsim.traces.counts`), the same cells as from traces.

    Parameters
    ----------
    counts : pandas.DataFrame
        A counts table of one temperature (:func:`specsim.traces.counts.read_counts`).
    lengths : pandas.DataFrame, optional
        The tasks' sequence lengths (``task``, ``prompt_len``, ``output_len``; the counts file's
        length summaries). Without them (or without training lengths for a drafter) the
        divergence covariate is 0 for every cell: fit without divergence terms.
    max_draft_index, divergence_measure, length_kind, reference_lengths, kinds
        As for :func:`aggregate_counts`.

    Returns
    -------
    counts : AcceptanceCounts
    notes : list of str
        What was left out or assumed (groups with totals only, no length summaries).
    """
    from specsim.traces.counts import with_optional_columns

    notes = []
    counts = with_optional_columns(counts)
    if counts["temperature"].nunique(dropna=False) > 1:
        raise InputError("counts of several temperatures; fit one temperature at a time", field="temperature")
    counts = counts[counts["drafter_kind"].isin(kinds)]
    group = ["source", "task", "drafter", "drafter_kind", "gamma"]
    resolved_groups = counts.groupby(group, observed=True)["draft_index"].transform("max") >= 0
    totals_only = counts.loc[~resolved_groups, group].drop_duplicates()
    if len(totals_only):
        notes.append(f"{len(totals_only)} group(s) with totals only (no draft index) left out: "
                     + ", ".join(f"{r.task}/{r.drafter}" for r in totals_only.itertuples()))
    rows = counts[counts["draft_index"] >= 0]
    if rows.empty:
        raise InputError(f"no per-draft-index counts (draft_index >= 0) of drafter kinds {', '.join(kinds)}: the "
                         "model needs resolved positions", field="draft_index")
    starts = rows["position_start"].to_numpy(dtype=float)
    if np.isnan(starts).any() and not np.isnan(starts).all():
        raise InputError("some rows have a position range and some pool every position; give one kind",
                         field="position_start")
    edges = np.unique(starts[starts > 0]) if not np.isnan(starts).all() else np.array([])
    cells = _cells(rows, np.searchsorted(edges, np.nan_to_num(starts), side="right"),
                   rows["evaluated"].to_numpy(dtype=np.int64), max_draft_index)
    cells = cells[cells["evaluated"] > 0].reset_index(drop=True)
    task_lengths, references = None, {}
    tasks = set(cells["task"])
    if lengths is None or not tasks <= set(lengths["task"]):
        notes.append("no length summaries for every task: the divergence covariate is 0 (fit without "
                     "divergence terms)")
    else:
        table = length_table(lengths[lengths["task"].isin(tasks)])
        task_lengths = {task: g[length_kind].to_numpy(dtype=float) for task, g in table.groupby("task")}
        trained_on = rows.drop_duplicates("drafter").set_index("drafter")["drafter_trained_on"]
        for drafter, name in trained_on.items():
            if reference_lengths and drafter in reference_lengths:
                references[drafter] = np.asarray(reference_lengths[drafter], dtype=float)
                continue
            name = "" if pd.isna(name) else str(name)
            names = list(task_lengths) if name in MIXTURE_NAMES else [n.strip() for n in name.split("+")]
            if not set(names) <= set(task_lengths):
                notes.append(f"drafter {drafter!r} trained on {name!r}, which is no task of the counts: the "
                             "divergence covariate is 0 (fit without divergence terms)")
                task_lengths, references = None, {}
                break
            references[drafter] = np.concatenate([task_lengths[n] for n in names])
    observed = {}
    if not np.isnan(starts).all():
        observed = {str(d): int(v) - 1 for d, v in rows.groupby("drafter")["position_stop"].max().items()}
    elif lengths is not None:
        longest = int(lengths["output_len"].max()) - 1
        observed = {str(d): longest for d in cells["drafter"].unique()}
    return _with_covariates(cells, edges, task_lengths, references, divergence_measure, length_kind, observed), notes

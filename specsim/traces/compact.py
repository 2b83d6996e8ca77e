"""Merging a trace directory's shards into one shard per run, without losing a row or the collection's resume.

A collection writes one shard per prompt: three Parquet files, each with its own footer, schema
and column chunks. On the shipped traces (3,402 files) more than a third of the bytes were those
per-file parts. :func:`compact_traces` rewrites every run's complete shards as one compacted shard
(``<run_id>-compacted-<n>``) whose sequences file lists, in its metadata, the shards it holds.

Crash safety and resume follow from that list:

- the compacted shard is written like any shard (tokens, steps, then sequences, each atomically);
  until its sequences file exists it is an incomplete shard, skipped by the reader, and the shards
  it copies are untouched;
- once it exists, the shards it lists are superseded: the reader skips their files wherever a
  crash left them, and the next compaction deletes them;
- :meth:`specsim.traces.store.TraceWriter.completed_shards` counts the listed shards as done, so a
  collection resumed after compaction redoes no prompt; its new shards are merged by the next
  compaction, together with the run's earlier compacted shard.

A run that a collection holds (its lock in ``.locks/``) is left as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa

from specsim.errors import InputError
from specsim.traces.schema import METADATA_COMPACTED_KEY, TABLES
from specsim.traces.store import (
    COMPACTED_INFIX,
    TraceWriter,
    _read_table_file,
    atomic_write_table,
    compacted_contents,
    compacted_shard_name,
    read_traces,
    superseded_shards,
    to_arrow,
)

__all__ = ["compact_traces"]


def _table_bytes(root: Path) -> tuple[int, int]:
    """Files and bytes of the three tables' Parquet files."""
    files = [path for name in TABLES for path in (root / name).glob("*.parquet")]
    return len(files), sum(path.stat().st_size for path in files)


def _next_number(stems: list[str], run_id: str) -> int:
    prefix = f"{run_id}{COMPACTED_INFIX}"
    numbers = [int(stem[len(prefix):]) for stem in stems if stem.startswith(prefix) and stem[len(prefix):].isdigit()]
    return max(numbers, default=0) + 1


def compact_traces(root: str | Path, *, progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Merge each run's shards of a trace directory into one compacted shard; the rows read back unchanged.

    Parameters
    ----------
    root : str or Path
        A trace directory (validated first, as every reader does).
    progress : callable, optional
        Called as ``progress(done, total, run_id)`` after each run.

    Returns
    -------
    dict
        ``directory``, ``runs_compacted``, ``runs_skipped`` (held by a running collection),
        ``files_before`` / ``files_after`` and ``bytes_before`` / ``bytes_after`` (the three
        tables' Parquet files), and ``sequences``, ``steps``, ``tokens`` (rows after; a compacted
        run's rows are checked equal before and after).

    Raises
    ------
    specsim.errors.InputError
        Not a valid trace directory (the message names file and field).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from specsim.simulate import AcceptanceProfile, CostModel, SyntheticWorkload, simulate_traces
    >>> profile = AcceptanceProfile(np.array([[0.6]]), np.array([]))
    >>> cell = SyntheticWorkload("code", "code", "d", "generic", profile, np.array([20, 30]), np.array([16, 8]))
    >>> cost = CostModel(draft_base_s=0.003, verify_base_s=0.03, target_base_s=0.03)
    >>> tables = simulate_traces([cell], cost, gamma=3, rng=0)
    >>> writer = TraceWriter(tempfile.mkdtemp())
    >>> for prompt_id, rows in tables["sequences"].groupby("prompt_id"):
    ...     pick = {name: tables[name][tables[name]["prompt_id"] == prompt_id] for name in ("tokens", "steps")}
    ...     writer.write_shard(f"run-{prompt_id}", pick["tokens"], pick["steps"], rows)
    >>> _ = writer.write_run_metadata("synthetic", {"seed": 0})
    >>> result = compact_traces(writer.root)
    >>> result["files_before"], result["files_after"], result["sequences"]
    (6, 3, 2)
    """
    root = Path(root)
    before = read_traces(root)  # refuses a directory that is not valid traces, with file and field
    files_before, bytes_before = _table_bytes(root)
    writer = TraceWriter(root)  # removes stray temporary files of dead writers
    superseded = superseded_shards(root)
    for stem in superseded:  # a crash after a compacted shard was written, before its sources were deleted
        for name in TABLES:
            (root / name / f"{stem}.parquet").unlink(missing_ok=True)
    # Each shard's run, from the rows read above (a shard holds one run's prompt; an empty shard has none).
    shards_by_run: dict[str, list[str]] = {}
    run_ids, first_row = before.sequences["run_id"].astype(str).to_numpy(), 0
    for stem, rows in before.sequences.attrs["shard_rows"]:
        shards_by_run.setdefault(str(run_ids[first_row]) if rows else "", []).append(stem)
        first_row += rows
    lock_folder = root / ".locks"
    compacted, skipped = [], []
    for done, (run_id, stems) in enumerate(sorted(shards_by_run.items()), start=1):
        if len(stems) > 1:
            held = [path.stem.rsplit("-rank", 1)[1] for path in lock_folder.glob(f"{run_id}-rank*.lock")]
            ranks = sorted({0} | {int(rank) for rank in held if rank.isdigit()})
            with ExitStack() as locks:
                try:
                    for rank in ranks:
                        locks.enter_context(writer.lock(run_id, rank))
                except InputError:  # a collection of this run is writing here now
                    skipped.append(run_id)
                else:
                    _compact_run(root, run_id, sorted(stems))
                    compacted.append(run_id)
        if progress is not None:
            progress(done, len(shards_by_run), run_id)
    after = read_traces(root)
    # The compacted runs' rows, table by table (a skipped run's collection may add rows meanwhile).
    rows_by_run = [{name: getattr(traces, name)["run_id"].value_counts() for name in TABLES}
                   for traces in (before, after)]
    changed = sorted({f"{name} of {run}" for name in TABLES for run in compacted
                      if rows_by_run[0][name].get(run, 0) != rows_by_run[1][name].get(run, 0)})
    if changed:  # cannot happen unless a compacted run changed under us; say so rather than report success
        raise InputError(f"rows changed during compaction: {', '.join(changed)}", path=root)
    files_after, bytes_after = _table_bytes(root)
    return {"directory": str(root), "runs_compacted": compacted, "runs_skipped": skipped,
            "files_before": files_before, "files_after": files_after, "bytes_before": bytes_before,
            "bytes_after": bytes_after, **{name: len(getattr(after, name)) for name in TABLES}}


def _compact_run(root: Path, run_id: str, stems: list[str]) -> None:
    """Write one run's ``stems`` as its next compacted shard, then delete them."""
    name_of_new = compacted_shard_name(run_id, _next_number(stems, run_id))
    # An earlier compacted shard is held by name too, so that a crash before it is deleted cannot double its rows.
    holds = [held for stem in stems for held in (
        [*compacted_contents(root / "sequences" / f"{stem}.parquet"), stem] if COMPACTED_INFIX in stem else [stem])]
    for table_name in TABLES:  # sequences last: its file marks the compacted shard complete
        parts = []
        for stem in stems:
            path = root / table_name / f"{stem}.parquet"
            if not path.exists():
                raise InputError(f"shard {stem!r} has a sequences file but no {table_name} file",
                                 path=root / table_name)
            parts.append(_read_table_file(path, table_name).replace_schema_metadata(None))
        table = to_arrow(pa.concat_tables(parts), table_name)
        if table_name == "sequences":
            metadata = dict(table.schema.metadata or {})
            metadata[METADATA_COMPACTED_KEY] = json.dumps(holds).encode()
            table = table.replace_schema_metadata(metadata)
        atomic_write_table(table, root / table_name / f"{name_of_new}.parquet")
    for stem in stems:
        for table_name in ("sequences", *TABLES[:-1]):
            (root / table_name / f"{stem}.parquet").unlink(missing_ok=True)

"""Reading and writing trace directories, crash-safely.

The writer puts each table of a shard into its own Parquet file through a sibling ``.tmp``
file that is flushed, fsynced and renamed onto its final name, so a reader never sees a file
that was half written; the sequences file is written last and marks the shard complete. The
reader skips ``.tmp`` files, shards whose sequences file is missing (a crash in the middle
of a shard) and shards that a compacted shard holds (:mod:`specsim.traces.compact`), validates
every file's schema and version, and checks the invariants of the trace contract (see :mod:`specsim.traces.validate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from specsim.errors import InputError
from specsim.traces.schema import (
    METADATA_COMPACTED_KEY,
    METADATA_TABLE_KEY,
    METADATA_VERSION_KEY,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    SCHEMAS,
    TABLES,
)

__all__ = [
    "Traces",
    "TraceWriter",
    "read_traces",
    "combine_traces",
    "atomic_write_bytes",
    "atomic_write_table",
    "to_arrow",
    "superseded_shards",
    "compacted_shard_name",
    "compacted_contents",
]

_TMP_SUFFIX = ".tmp"


def _temporary_sibling(path: Path) -> Path:
    """``<name>.<pid>.tmp`` beside ``path``: one name per process, so concurrent writers never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}{_TMP_SUFFIX}")


def _writer_alive(temporary: Path) -> bool:
    """Whether the process that named ``temporary`` (``<name>.<pid>.tmp``) is still running."""
    pid_text = temporary.name[: -len(_TMP_SUFFIX)].rsplit(".", 1)[-1]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems refuse to open directories; the rename still stands
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a fsynced temporary sibling and a rename.

    Parameters
    ----------
    path : str or Path
        Final file name; its directory must exist.
    payload : bytes
        The whole content of the file.
    """
    path = Path(path)
    tmp = _temporary_sibling(path)
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def atomic_write_table(table: pa.Table, path: str | Path) -> None:
    """Write an Arrow table as Parquet to ``path`` atomically (temp file, fsync, rename).

    Parameters
    ----------
    table : pyarrow.Table
        The table, with its schema metadata.
    path : str or Path
        Final file name; its directory must exist.
    """
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def to_arrow(frame: pd.DataFrame | pa.Table, table_name: str) -> pa.Table:
    """Convert rows of one trace table to an Arrow table with the contract's schema.

    Parameters
    ----------
    frame : pandas.DataFrame or pyarrow.Table
        Rows with at least the schema's columns; extra columns are dropped.
    table_name : {"tokens", "steps", "sequences"}
        Which table of the contract.

    Returns
    -------
    pyarrow.Table
        Columns in schema order and dtypes, with the version and table name in its metadata.
    """
    schema = SCHEMAS[table_name]
    missing = [name for name in schema.names if name not in frame.column_names] if isinstance(
        frame, pa.Table
    ) else [name for name in schema.names if name not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", field=table_name)
    if isinstance(frame, pa.Table):
        table = frame.select(schema.names).cast(schema)
    else:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    return table.replace_schema_metadata(
        {METADATA_VERSION_KEY: SCHEMA_VERSION.encode(), METADATA_TABLE_KEY: table_name.encode()}
    )


class TraceWriter:
    """Append shards to a trace directory, each table of a shard in one atomic file.

    Parameters
    ----------
    root : str or Path
        The trace directory; created if missing. Stray ``.tmp`` files from an earlier crash
        are removed.

    Examples
    --------
    >>> import tempfile
    >>> writer = TraceWriter(tempfile.mkdtemp())
    >>> sorted(writer.completed_shards())
    []
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for name in (*TABLES, "runs"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for stray in self.root.glob(f"*/*{_TMP_SUFFIX}"):
            if not _writer_alive(stray):  # another live process may be writing it right now
                stray.unlink(missing_ok=True)

    @contextmanager
    def lock(self, run_id: str, rank: int = 0) -> Iterator[None]:
        """Hold the advisory lock of one run's process ``rank`` in this folder for the ``with`` block.

        A second collection of the same run and rank into the same folder is refused with the
        process id that holds it (two identical runs would otherwise redo every prompt); other
        runs and other ranks write beside it freely.
        """
        import fcntl

        folder = self.root / ".locks"
        folder.mkdir(exist_ok=True)
        path = folder / f"{run_id}-rank{rank}.lock"
        handle = open(path, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise InputError(f"run {run_id} (rank {rank}) is being collected into this folder by {holder}; "
                                 "wait for it or use another --out", path=self.root, field="--out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            handle.close()

    def completed_shards(self) -> set[str]:
        """Shards whose sequences file exists (the last file a shard writes) or that a compacted shard holds."""
        return set(_shard_files(self.root, "sequences")) | superseded_shards(self.root)

    def write_shard(
        self,
        shard: str,
        tokens: pd.DataFrame | pa.Table,
        steps: pd.DataFrame | pa.Table,
        sequences: pd.DataFrame | pa.Table,
    ) -> None:
        """Write one complete unit of work: tokens, then steps, then sequences.

        Parameters
        ----------
        shard : str
            File stem shared by the three files, e.g. ``"run1-HumanEval_0"``.
        tokens, steps, sequences : pandas.DataFrame or pyarrow.Table
            Rows of each table for this shard.
        """
        if not shard or "/" in shard or shard.startswith("."):
            raise InputError(f"invalid shard name {shard!r}", field="shard")
        tables = {
            "tokens": to_arrow(tokens, "tokens"),
            "steps": to_arrow(steps, "steps"),
            "sequences": to_arrow(sequences, "sequences"),
        }
        for name in TABLES:
            atomic_write_table(tables[name], self.root / name / f"{shard}.parquet")

    def write_run_metadata(self, run_id: str, metadata: Mapping[str, Any]) -> Path:
        """Write ``runs/<run_id>.json`` atomically and return its path."""
        path = self.root / "runs" / f"{run_id}.json"
        payload = json.dumps(dict(metadata), indent=2, sort_keys=True, default=str)
        atomic_write_bytes(path, payload.encode())
        return path


@dataclass(frozen=True)
class Traces:
    """All tables of a trace directory, loaded and validated.

    Attributes
    ----------
    root : Path
        The trace directory.
    tokens, steps, sequences : pandas.DataFrame
        The three tables of the contract (see :mod:`specsim.traces.schema`).
    runs : dict
        Run metadata by run id, from ``runs/*.json``.
    incomplete_shards : tuple of str
        Shards that had tokens or steps but no sequences file (a crash mid-shard); skipped.
    """

    root: Path
    tokens: pd.DataFrame
    steps: pd.DataFrame
    sequences: pd.DataFrame
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    incomplete_shards: tuple[str, ...] = ()


def _check_file_schema(path: Path, table_name: str, schema: pa.Schema) -> None:
    expected = SCHEMAS[table_name]
    metadata = schema.metadata or {}
    version = metadata.get(METADATA_VERSION_KEY)
    if version is None:
        raise InputError("no specsim schema version in the Parquet metadata", path=path)
    if version.decode() not in READABLE_VERSIONS:
        raise InputError(
            f"schema version {version.decode()!r}, this specsim reads versions {', '.join(READABLE_VERSIONS)}",
            path=path,
        )
    stored_table = metadata.get(METADATA_TABLE_KEY, b"").decode()
    if stored_table != table_name:
        raise InputError(f"file holds table {stored_table!r}, expected {table_name!r}", path=path)
    for expected_field in expected:
        if expected_field.name in _ADDED_IN_VERSION_2 and version == b"1":
            continue
        if expected_field.name not in schema.names:
            raise InputError("missing column", path=path, field=expected_field.name)
        actual = schema.field(expected_field.name).type
        if not actual.equals(expected_field.type):
            raise InputError(
                f"dtype {actual}, expected {expected_field.type}", path=path, field=expected_field.name
            )


#: Columns that version 2 added, with the value a version-1 file means (a column name: that column's values).
_ADDED_IN_VERSION_2: dict[str, str] = {"drafter_type": "model", "n_asked": "n_drafted"}


def _read_table_file(path: Path, table_name: str) -> pa.Table:
    try:
        parquet = pq.ParquetFile(path)
        _check_file_schema(path, table_name, parquet.schema_arrow)
        names = SCHEMAS[table_name].names
        stored = [name for name in names if name in parquet.schema_arrow.names]
        table = parquet.read(columns=stored)
        for name, value in _ADDED_IN_VERSION_2.items():
            if name in names and name not in stored:
                field = SCHEMAS[table_name].field(name)
                column = (table.column(value).cast(field.type) if value in table.column_names
                          else pa.array(np.full(table.num_rows, value, dtype=object), type=field.type))
                table = table.add_column(names.index(name), field, column)
    except InputError:
        raise
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"not a readable Parquet file ({error})", path=path) from None
    nulls = [
        f.name for f in SCHEMAS[table_name] if not f.nullable and table.column(f.name).null_count
    ]
    if nulls:
        raise InputError("null values in a required column", path=path, field=nulls[0])
    # specsim writes a missing value as null; a NaN would read back as "missing" and silently drop rows.
    for schema_field in SCHEMAS[table_name]:
        if pa.types.is_floating(schema_field.type) and pc.any(pc.is_nan(table.column(schema_field.name))).as_py():
            raise InputError("NaN value (write a missing value as null)", path=path, field=schema_field.name)
    return table


def _shard_files(root: Path, table_name: str) -> dict[str, Path]:
    return {path.stem: path for path in sorted((root / table_name).glob("*.parquet"))}


#: What a compacted shard's name holds between its run id and its number (:func:`compacted_shard_name`).
COMPACTED_INFIX = "-compacted-"


def compacted_shard_name(run_id: str, number: int) -> str:
    """The stem of a run's ``number``-th compacted shard, e.g. ``run-ab12-compacted-1``."""
    return f"{run_id}{COMPACTED_INFIX}{number}"


def compacted_contents(path: Path) -> list[str]:
    """The shards a compacted sequences file holds (empty for a shard written by a collection)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"not a readable Parquet file ({error})", path=path) from None
    listed = metadata.get(METADATA_COMPACTED_KEY)
    if listed is None:
        return []
    try:
        names = json.loads(listed)
    except (json.JSONDecodeError, UnicodeDecodeError):
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InputError("the list of compacted shards is not a JSON list of names", path=path,
                         field=METADATA_COMPACTED_KEY.decode())
    return names


def superseded_shards(root: Path) -> set[str]:
    """Shards that a compacted shard of ``root`` holds; their own files, where a crash left them, are not read."""
    return {name for stem, path in _shard_files(root, "sequences").items() if COMPACTED_INFIX in stem
            for name in compacted_contents(path)}


def _read_runs(root: Path) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "runs").glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"not valid JSON ({error})", path=path) from None
        if not isinstance(run, dict):
            raise InputError(f"run metadata must be a JSON object, got a {type(run).__name__}", path=path)
        runs[path.stem] = run
    return runs


def read_traces(
    root: str | Path,
    *,
    tables: Iterable[str] = TABLES,
    validate: bool = True,
) -> Traces:
    """Load a trace directory, checking schemas, versions and the contract's invariants.

    Parameters
    ----------
    root : str or Path
        The trace directory (``tokens/``, ``steps/``, ``sequences/``, ``runs/``).
    tables : iterable of str, optional
        Tables to load; the others are returned empty. Cross-table invariants are checked
        only between loaded tables. Leaving out ``tokens`` saves memory on large traces.
    validate : bool, default True
        Check the invariants (see :func:`specsim.traces.validate.validate_traces`).

    Returns
    -------
    Traces

    Raises
    ------
    specsim.errors.InputError
        The directory is missing or empty, or a file is unreadable, has another schema
        version or dtype, or violates an invariant; the message names file and field.
    """
    from specsim.traces.validate import validate_traces

    root = Path(root)
    wanted = set(tables)
    unknown = wanted - set(TABLES)
    if unknown:
        raise InputError(f"unknown table(s) {sorted(unknown)}", field="tables")
    if not root.is_dir():
        raise InputError("no such trace directory", path=root)
    superseded = superseded_shards(root)
    complete = {stem: path for stem, path in _shard_files(root, "sequences").items() if stem not in superseded}
    if not complete:
        raise InputError("no trace shards (sequences/*.parquet) in this directory", path=root)
    incomplete = sorted(
        {stem for name in ("tokens", "steps") for stem in _shard_files(root, name)} - set(complete) - superseded
    )
    frames: dict[str, pd.DataFrame] = {}
    for table_name in TABLES:
        files = _shard_files(root, table_name)
        if table_name not in wanted:
            frames[table_name] = SCHEMAS[table_name].empty_table().to_pandas()
            continue
        parts, shard_of_row = [], []
        for shard in complete:
            path = files.get(shard)
            if path is None:
                raise InputError(
                    f"shard {shard!r} has a sequences file but no {table_name} file",
                    path=root / table_name,
                )
            table = _read_table_file(path, table_name)
            parts.append(table.replace_schema_metadata(None))
            shard_of_row.append((shard, table.num_rows))
        table = pa.concat_tables(parts)
        frame = table.to_pandas()
        frame.attrs["shard_rows"] = shard_of_row
        frames[table_name] = frame
    traces = Traces(
        root=root,
        tokens=frames["tokens"],
        steps=frames["steps"],
        sequences=frames["sequences"],
        runs=_read_runs(root),
        incomplete_shards=tuple(incomplete),
    )
    if validate:
        validate_traces(traces, loaded=wanted)
    return traces


def combine_traces(parts: list[Traces]) -> Traces:
    """Several trace directories as one (e.g. an experiment's model, lookup and head drafters).

    Tables are concatenated and run metadata merged; the result's ``root`` is the first
    directory's. A drafter name must mean one drafter: the same name with another kind, type or
    training data in two directories is refused.
    """
    if not parts:
        raise InputError("no trace directories to combine", field="traces")
    if len(parts) == 1:
        return parts[0]
    keys = ["drafter", "drafter_kind", "drafter_type", "drafter_trained_on"]
    identities = pd.concat([p.sequences[keys].astype(str).drop_duplicates().assign(root=str(p.root)) for p in parts])
    clash = identities.groupby("drafter")[keys[1:]].nunique().max(axis=1)
    if (clash > 1).any():
        name = clash[clash > 1].index[0]
        roots = sorted(identities.loc[identities["drafter"] == name, "root"].unique())
        raise InputError(f"drafter {name!r} means different drafters in {' and '.join(roots)}: rename one",
                         field="drafter")
    frames = {name: pd.concat([getattr(p, name) for p in parts], ignore_index=True)
              for name in ("tokens", "steps", "sequences")}
    runs = {run: meta for p in parts for run, meta in p.runs.items()}
    return Traces(parts[0].root, frames["tokens"], frames["steps"], frames["sequences"], runs,
                  tuple(shard for p in parts for shard in p.incomplete_shards))

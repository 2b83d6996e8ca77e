"""Compaction of trace directories: every row reads back unchanged, crashes lose nothing, resume still skips."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from specsim.traces import TraceWriter, read_traces
from specsim.traces.compact import compact_traces
from specsim.traces.schema import METADATA_COMPACTED_KEY, TABLES


def _per_prompt(tables, root, run_id="synthetic"):
    """One shard per prompt, named as a collection names them."""
    writer = TraceWriter(root)
    for index, (prompt_id, rows) in enumerate(tables["sequences"].groupby("prompt_id", sort=True)):
        pick = {name: tables[name][tables[name]["prompt_id"] == prompt_id] for name in ("tokens", "steps")}
        writer.write_shard(f"{run_id}-{index:05d}-{prompt_id}", pick["tokens"], pick["steps"], rows)
    writer.write_run_metadata(run_id, {"seed": 1, "device": "cpu"})
    return writer


def _frames(root):
    traces = read_traces(root)
    return {name: getattr(traces, name) for name in TABLES}


def _assert_same_rows(before, after):
    for name in TABLES:
        pd.testing.assert_frame_equal(before[name], after[name], check_exact=True)


@pytest.fixture
def per_prompt_dir(tmp_path, synthetic_tables):
    _per_prompt(synthetic_tables, tmp_path / "traces")
    return tmp_path / "traces"


def test_compaction_keeps_every_row_and_every_completed_shard(per_prompt_dir):
    before, done_before = _frames(per_prompt_dir), TraceWriter(per_prompt_dir).completed_shards()
    result = compact_traces(per_prompt_dir)
    assert result["files_before"] == 3 * len(done_before) and result["files_after"] == 3
    assert result["bytes_after"] < result["bytes_before"] and result["runs_compacted"] == ["synthetic"]
    _assert_same_rows(before, _frames(per_prompt_dir))
    # A resumed collection asks completed_shards: every prompt shard is still done.
    assert done_before < TraceWriter(per_prompt_dir).completed_shards()
    held = json.loads(pq.read_schema(per_prompt_dir / "sequences" / "synthetic-compacted-1.parquet")
                      .metadata[METADATA_COMPACTED_KEY])
    assert sorted(held) == sorted(done_before)
    # Compacting a compacted directory changes nothing.
    assert compact_traces(per_prompt_dir)["runs_compacted"] == []
    _assert_same_rows(before, _frames(per_prompt_dir))


def test_a_crash_before_the_sources_are_deleted_doubles_no_row(per_prompt_dir, tmp_path):
    before = _frames(per_prompt_dir)
    saved = tmp_path / "saved"
    shutil.copytree(per_prompt_dir, saved)
    compact_traces(per_prompt_dir)
    # The crash, in the middle of deleting the sources (sequences file first): the first prompt's shard
    # is whole, the second has lost its sequences file only.
    first, second = sorted(path.stem for path in (saved / "sequences").glob("*.parquet"))[:2]
    for stem, tables in ((first, TABLES), (second, ("tokens", "steps"))):
        for name in tables:
            shutil.copy(saved / name / f"{stem}.parquet", per_prompt_dir / name / f"{stem}.parquet")
    traces = read_traces(per_prompt_dir)
    assert traces.incomplete_shards == ()
    _assert_same_rows(before, _frames(per_prompt_dir))
    # The next compaction deletes what the crash left.
    result = compact_traces(per_prompt_dir)
    assert result["files_after"] == 3
    _assert_same_rows(before, _frames(per_prompt_dir))


def test_a_crash_while_writing_the_compacted_shard_leaves_the_sources(per_prompt_dir):
    before = _frames(per_prompt_dir)
    # Tokens and steps of a compacted shard, no sequences file: what a crash in the middle leaves.
    for name in ("tokens", "steps"):
        pq.write_table(pq.read_table(next(iter((per_prompt_dir / name).glob("*.parquet")))),
                       per_prompt_dir / name / "synthetic-compacted-1.parquet")
    assert read_traces(per_prompt_dir).incomplete_shards == ("synthetic-compacted-1",)
    _assert_same_rows(before, _frames(per_prompt_dir))
    result = compact_traces(per_prompt_dir)  # overwrites the partial shard, then deletes the sources
    assert result["files_after"] == 3
    assert read_traces(per_prompt_dir).incomplete_shards == ()
    _assert_same_rows(before, _frames(per_prompt_dir))


def test_new_shards_after_a_compaction_join_the_next_one(tmp_path, synthetic_tables):
    prompts = sorted(synthetic_tables["sequences"]["prompt_id"].unique())
    first, rest = set(prompts[: len(prompts) // 2]), set(prompts[len(prompts) // 2:])
    whole = tmp_path / "whole"
    _per_prompt(synthetic_tables, whole)
    root = tmp_path / "parts"
    _per_prompt({name: frame[frame["prompt_id"].isin(first)] for name, frame in synthetic_tables.items()}, root)
    compact_traces(root)
    writer = TraceWriter(root)
    for index, prompt_id in enumerate(prompts):
        if prompt_id in rest:
            pick = {name: frame[frame["prompt_id"] == prompt_id] for name, frame in synthetic_tables.items()}
            writer.write_shard(f"synthetic-{index:05d}-{prompt_id}", pick["tokens"], pick["steps"], pick["sequences"])
    assert writer.completed_shards() >= TraceWriter(whole).completed_shards()
    result = compact_traces(root)
    assert result["files_after"] == 3
    assert sorted(path.name for path in (root / "sequences").iterdir()) == ["synthetic-compacted-2.parquet"]
    assert writer.completed_shards() >= TraceWriter(whole).completed_shards()
    left, right = _frames(whole), _frames(root)
    for name in TABLES:  # the same rows, in another order (the first half's shard comes first)
        keys = list(left[name].columns[:14])
        pd.testing.assert_frame_equal(left[name].sort_values(keys).reset_index(drop=True),
                                      right[name].sort_values(keys).reset_index(drop=True))


def test_a_run_being_collected_is_left_as_it_is(per_prompt_dir):
    files = sorted(per_prompt_dir.glob("*/*.parquet"))
    with TraceWriter(per_prompt_dir).lock("synthetic"):
        result = compact_traces(per_prompt_dir)
    assert result["runs_skipped"] == ["synthetic"] and result["runs_compacted"] == []
    assert sorted(per_prompt_dir.glob("*/*.parquet")) == files

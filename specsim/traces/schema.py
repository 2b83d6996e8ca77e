"""The trace contract: Arrow schemas of the tokens, steps and sequences tables.

This module is the single place that defines the on-disk contract between the collector
(writes), and the simulator, the model and the reports (read). Every table carries the same
key columns (:data:`KEY_FIELDS`), so any table can be grouped by task, drafter, gamma or
temperature without a join.

Layout of a trace directory ``DIR``::

    DIR/tokens/<shard>.parquet      one row per drafted token
    DIR/steps/<shard>.parquet       one row per draft-verify cycle
    DIR/sequences/<shard>.parquet   one row per prompt x drafter x gamma x temperature
    DIR/runs/<run_id>.json          run metadata (models, device, versions, seed, config)

A shard is one unit of collection work (one prompt of one run). A shard is complete when
its sequences file exists; the writer writes it last. Each Parquet file stores
``specsim.schema_version`` and ``specsim.table`` in its schema metadata.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = [
    "DEFAULT_POSITION_EDGES",
    "BASELINE_FOLDER",
    "SCHEMA_VERSION",
    "TABLES",
    "KEY_FIELDS",
    "SEQUENCE_KEY",
    "STEP_KEY",
    "DRAFTER_KINDS",
    "DRAFTER_TYPES",
    "READABLE_VERSIONS",
    "FINISH_REASONS",
    "SCHEDULES",
    "TOKENS_SCHEMA",
    "STEPS_SCHEMA",
    "SEQUENCES_SCHEMA",
    "SCHEMAS",
    "METADATA_VERSION_KEY",
    "METADATA_TABLE_KEY",
    "METADATA_COMPACTED_KEY",
]

#: Interior edges of the default sequence-position bins (generated tokens so far when a step
#: starts): the bins of counts tables, acceptance profiles and the model's cells.
DEFAULT_POSITION_EDGES = np.array([32, 64, 128, 256, 512, 1024])

SCHEMA_VERSION = "2"
#: Versions the reader accepts. Version 1 had no ``drafter_type`` column: every drafter was a
#: separate model, and the reader fills ``"model"``.
READABLE_VERSIONS = ("1", "2")
#: Folder of a trace directory where plain-decoding-only runs (``collect --baseline`` without a
#: drafter) write one Parquet file per prompt: ``run_id``, ``prompt_id``, ``task``, ``dataset``,
#: ``target``, ``temperature``, ``prompt_len``, ``output_len``, ``finish_reason``,
#: ``baseline_wall_s``. A workload source (:func:`specsim.workload.resolve_workload`).
BASELINE_FOLDER = "baseline"
METADATA_VERSION_KEY = b"specsim.schema_version"
METADATA_TABLE_KEY = b"specsim.table"
#: Key of a compacted shard's sequences file: the JSON list of the shards it holds
#: (:mod:`specsim.traces.compact`); a shard it names is superseded wherever its own files remain.
METADATA_COMPACTED_KEY = b"specsim.compacted_shards"

DRAFTER_KINDS = ("generic", "finetuned", "untrained")
#: How a drafter proposes tokens (:mod:`specsim.collect.drafters`): a separate small language
#: model, a feature-level head over the target's hidden states (EAGLE family), model-free lookup
#: in the sequence itself (prompt lookup), or retrieval from a datastore of a task's completions.
DRAFTER_TYPES = ("model", "feature-head", "lookup")
FINISH_REASONS = ("eos", "length", "stop")
SCHEDULES = ("constant", "adaptive")

#: Columns every table carries; together with ``prompt_id`` they identify one sequence.
KEY_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("drafter", pa.string(), nullable=False),
    # "generic", "finetuned" or "untrained" (a truncated model never trained as a drafter).
    pa.field("drafter_kind", pa.string(), nullable=False),
    # One of DRAFTER_TYPES (version 2; the reader fills "model" into version-1 files).
    pa.field("drafter_type", pa.string(), nullable=False),
    # Dataset or mixture the drafter was trained on; the reference of its length divergence.
    pa.field("drafter_trained_on", pa.string(), nullable=True),
    pa.field("temperature", pa.float64(), nullable=False),
    # Maximum draft length; a step drafts at most this many tokens.
    pa.field("gamma", pa.int32(), nullable=False),
    # How each step's draft length was chosen: "constant" (always gamma) or "adaptive".
    pa.field("schedule", pa.string(), nullable=False),
]

#: Columns that identify one decoded sequence.
SEQUENCE_KEY = ["run_id", "prompt_id", "drafter", "gamma", "schedule", "temperature"]
#: Columns that identify one draft-verify step.
STEP_KEY = [*SEQUENCE_KEY, "step"]

TOKENS_SCHEMA = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("step", pa.int32(), nullable=False),
        pa.field("draft_index", pa.int32(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("context_len", pa.int32(), nullable=False),
        pa.field("token_id", pa.int64(), nullable=False),
        pa.field("evaluated", pa.bool_(), nullable=False),
        pa.field("accepted", pa.bool_(), nullable=False),
        pa.field("p_target", pa.float64(), nullable=False),
        pa.field("q_draft", pa.float64(), nullable=False),
        pa.field("accept_prob", pa.float64(), nullable=False),
        pa.field("overlap", pa.float64(), nullable=False),
        # For greedy runs, the overlap of the temperature-1 distributions; null otherwise.
        pa.field("overlap_t1", pa.float64(), nullable=True),
    ]
)

STEPS_SCHEMA = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("step", pa.int32(), nullable=False),
        pa.field("context_len", pa.int32(), nullable=False),
        # Tokens the loop asked the drafter for: min(gamma, tokens left) (version 2; a version-1
        # file, all fixed-length drafters, is read with n_asked = n_drafted).
        pa.field("n_asked", pa.int32(), nullable=False),
        pa.field("n_drafted", pa.int32(), nullable=False),
        pa.field("n_accepted", pa.int32(), nullable=False),
        pa.field("n_emitted", pa.int32(), nullable=False),
        pa.field("draft_s", pa.float64(), nullable=False),
        pa.field("verify_s", pa.float64(), nullable=False),
    ]
)

SEQUENCES_SCHEMA = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("prompt_len", pa.int32(), nullable=False),
        pa.field("output_len", pa.int32(), nullable=False),
        pa.field("n_steps", pa.int32(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("spec_wall_s", pa.float64(), nullable=False),
        pa.field("baseline_wall_s", pa.float64(), nullable=True),
        pa.field("baseline_tokens", pa.int32(), nullable=True),
        pa.field("output_token_ids", pa.list_(pa.int32()), nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "tokens": TOKENS_SCHEMA,
    "steps": STEPS_SCHEMA,
    "sequences": SEQUENCES_SCHEMA,
}
#: Table names in the order the writer writes them (sequences last marks a shard complete).
TABLES = ("tokens", "steps", "sequences")

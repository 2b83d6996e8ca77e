"""The trace store: schema, crash-safe writer, validating reader, and acceptance metrics."""

from specsim.traces.metrics import (
    acceptance_length_with_bonus,
    acceptance_rate,
    accepted_per_step_without_bonus,
    conditional_acceptance_by_index,
    emitted_per_step,
    summarize,
    unconditional_acceptance_by_index,
)
from specsim.traces.schema import SCHEMA_VERSION, SCHEMAS, SEQUENCE_KEY, STEP_KEY
from specsim.traces.store import Traces, TraceWriter, read_traces

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMAS",
    "SEQUENCE_KEY",
    "STEP_KEY",
    "Traces",
    "TraceWriter",
    "read_traces",
    "summarize",
    "acceptance_rate",
    "acceptance_length_with_bonus",
    "accepted_per_step_without_bonus",
    "emitted_per_step",
    "conditional_acceptance_by_index",
    "unconditional_acceptance_by_index",
]

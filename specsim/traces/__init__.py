"""The trace contract: schema, crash-safe writer, validating reader, row selection and counts tables.

What the traces measured (acceptance conventions, speed-ups, length effects) is
:mod:`specsim.analysis`.
"""

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
]

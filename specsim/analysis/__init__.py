"""What the traces measured: acceptance in every convention, measured speed-up and its bootstrap, length effects.

Analysis of the trace contract (:mod:`specsim.traces`): every acceptance convention is a named
function that says which tool it matches (:mod:`specsim.analysis.metrics`); the model-free length
and content effects of the length-controlled experiment are :mod:`specsim.analysis.length_effects`.
Per-token detail (p, q, overlap) lives here; the model and the simulator read counts.
"""

from specsim.analysis.metrics import (
    acceptance_length_with_bonus,
    acceptance_rate,
    accepted_per_step_without_bonus,
    conditional_acceptance_by_index,
    emitted_per_step,
    summarize,
    unconditional_acceptance_by_index,
)

__all__ = [
    "summarize",
    "acceptance_rate",
    "acceptance_length_with_bonus",
    "accepted_per_step_without_bonus",
    "emitted_per_step",
    "conditional_acceptance_by_index",
    "unconditional_acceptance_by_index",
]

"""What-if simulation of speculative decoding: analytic, exact, Monte Carlo and replay."""

from specsim.simulate.acceptance import AcceptanceProfile, profile_from_counts, profile_from_tokens
from specsim.simulate.cost import CostModel, fit_cost_model, leviathan_cost_model
from specsim.simulate.synthetic_traces import SyntheticWorkload, simulate_traces

__all__ = [
    "AcceptanceProfile",
    "profile_from_counts",
    "profile_from_tokens",
    "CostModel",
    "fit_cost_model",
    "leviathan_cost_model",
    "SyntheticWorkload",
    "simulate_traces",
]

"""Drafts of any length end to end: traces -> counts -> profile -> exact, Monte Carlo and measured.

A lookup drafter proposes fewer tokens than asked, or none. Synthetic traces of such a drafter
(known acceptance, continuation and costs, a verify cost per drafted count) must be predicted
by the exact simulator and the Monte Carlo one alike, from the per-token profile and from the
counts file, and ignoring the drafted-count law must visibly miss (the check has power).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from specsim.analysis.metrics import measured_speedup
from specsim.simulate import AcceptanceProfile, CostModel, profile_from_tokens, simulate_traces
from specsim.simulate.acceptance import profile_from_counts_table
from specsim.simulate.exact import expected_workload
from specsim.simulate.montecarlo import simulate_workload
from specsim.simulate.synthetic_traces import SyntheticWorkload
from specsim.traces.counts import counts_from_traces, read_counts, step_index_counts, write_counts

EDGES = np.array([40])
SHORT_EDGES = np.array([8])
GAMMA = 5
# Lookup-like costs: drafting is a cheap search, verifying d tokens costs by a measured table.
COST = CostModel(draft_step_s=0.0004, draft_base_s=0.0001, verify_base_s=0.02, verify_per_token_s=0.004,
                 verify_per_context_s=1e-5, target_base_s=0.02, target_per_context_s=1e-5,
                 verify_table={0: 0.02, 1: 0.026, 2: 0.028, 3: 0.033, 4: 0.035, 5: 0.04})
# Acceptance falls with the draft index; the drafter more often finds something to copy late.
RATES = np.array([[0.75, 0.8], [0.7, 0.75], [0.65, 0.7], [0.6, 0.65], [0.6, 0.6]])
CONTINUATION = np.array([[0.45, 0.7], [0.9, 0.9], [0.85, 0.9], [0.8, 0.85], [0.8, 0.8]])


@pytest.fixture(scope="module")
def lookup_traces():
    rng = np.random.default_rng(5)
    cell = SyntheticWorkload(
        task="edit", dataset="unit", drafter="pl", drafter_kind="generic", drafter_type="lookup",
        profile=AcceptanceProfile(RATES, EDGES, continuation=CONTINUATION), after_rejection=0.6,
        prompt_lengths=rng.integers(50, 400, 600), output_lengths=rng.integers(20, 160, 600))
    return cell, simulate_traces([cell], COST, gamma=GAMMA, rng=7)


def test_synthetic_lookup_traces_hold_short_and_empty_drafts(lookup_traces):
    _, tables = lookup_traces
    steps = tables["steps"]
    assert (steps["n_drafted"] == 0).mean() > 0.2 and (steps["n_drafted"] == GAMMA).mean() > 0.1
    assert (steps["n_drafted"] <= steps["n_asked"]).all()


def test_profile_recovers_continuation_and_rates(lookup_traces):
    _, tables = lookup_traces
    profile = profile_from_tokens(tables["tokens"], gamma=GAMMA, position_edges=EDGES, steps=tables["steps"])
    assert np.abs(profile.rates - RATES).max() < 0.05
    assert np.abs(profile.continuation - CONTINUATION).max() < 0.05
    # The per-token and per-step routes count the same acceptances.
    tokens_only = profile_from_tokens(tables["tokens"], gamma=GAMMA, position_edges=EDGES)
    np.testing.assert_allclose(tokens_only.rates, profile.rates)
    assert tokens_only.full_drafts and not profile.full_drafts


def test_exact_monte_carlo_and_measured_agree(lookup_traces):
    cell, tables = lookup_traces
    sequences = tables["sequences"]
    profile = profile_from_tokens(tables["tokens"], gamma=GAMMA, position_edges=EDGES, steps=tables["steps"])
    prompt, output = sequences["prompt_len"].to_numpy(), sequences["output_len"].to_numpy()
    exact = expected_workload(profile, COST, GAMMA, prompt, output)
    measured_tps = sequences["output_len"].sum() / sequences["n_steps"].sum()
    assert exact.tokens_per_step == pytest.approx(measured_tps, rel=0.02)
    assert exact.speedup == pytest.approx(measured_speedup(sequences), rel=0.02)
    simulated = simulate_workload(profile, COST, GAMMA, np.repeat(prompt, 10), np.repeat(output, 10), rng=1)
    assert simulated.speedup == pytest.approx(exact.speedup, rel=0.01)
    assert np.repeat(output, 10).sum() / simulated.steps.sum() == pytest.approx(exact.tokens_per_step, rel=0.01)
    # Power: a simulator that takes every draft as full misses by far more than the tolerance.
    full = expected_workload(AcceptanceProfile(profile.rates, EDGES), COST, GAMMA, prompt, output)
    assert abs(full.tokens_per_step / measured_tps - 1) > 0.15
    # Its speed-up errs less (it also overstates each step's verify cost) but still beyond twice the tolerance.
    assert abs(full.speedup / measured_speedup(sequences) - 1) > 0.05


def test_counts_route_carries_drafts_of_any_length(lookup_traces, tmp_path):
    _, tables = lookup_traces
    counts = counts_from_traces(tables["tokens"], tables["steps"], tables["sequences"], position_edges=EDGES)
    # Steps that drafted nothing still count: index 0 is asked of every step.
    assert counts.loc[counts["draft_index"] == 0, "asked"].sum() == len(tables["steps"])
    path = write_counts(counts, tmp_path / "counts.parquet")
    back = read_counts(path)
    group = back[back["draft_index"] >= 0]
    profile, resolved = profile_from_counts_table(group)
    assert resolved and not profile.full_drafts
    sequences = tables["sequences"]
    prompt, output = sequences["prompt_len"].to_numpy(), sequences["output_len"].to_numpy()
    exact = expected_workload(profile, COST, GAMMA, prompt, output)
    measured_tps = sequences["output_len"].sum() / sequences["n_steps"].sum()
    # Pooled over positions: the two bins' continuations differ, so allow a little more.
    assert exact.tokens_per_step == pytest.approx(measured_tps, rel=0.04)


def test_step_counts_of_a_fixed_drafter_equal_token_counts():
    """For full drafts the step route reproduces the token route's counts exactly."""
    from tests.conftest import TRUE_COST, small_workloads

    tables = simulate_traces(small_workloads(3, seed=2), TRUE_COST, gamma=4, rng=3)
    for _, cell_steps in tables["steps"].groupby("task"):
        cell_tokens = tables["tokens"].merge(cell_steps[["run_id", "prompt_id"]].drop_duplicates())
        counts = step_index_counts(cell_steps, 4, SHORT_EDGES)
        step_position = (cell_tokens["position"] - cell_tokens["draft_index"]).to_numpy()
        bins = np.searchsorted(SHORT_EDGES, step_position, side="right")
        assert len(np.unique(bins)) == 2
        evaluated = pd.crosstab(cell_tokens["draft_index"], bins, values=cell_tokens["evaluated"],
                                aggfunc="sum").fillna(0).to_numpy()
        np.testing.assert_array_equal(counts["evaluated"], evaluated)
        np.testing.assert_array_equal(counts["offered"], counts["evaluated"])
        np.testing.assert_array_equal(counts["asked"], counts["drafted"])


def test_bad_hazards_are_refused():
    from specsim.errors import InputError

    with pytest.raises(InputError, match="continuation"):
        AcceptanceProfile(np.array([[0.5]]), np.array([]), continuation=np.array([[1.5]]))
    with pytest.raises(InputError, match="position bins"):
        AcceptanceProfile(np.array([[0.5, 0.5]]), np.array([3]), extension=np.array([[1.0]]))

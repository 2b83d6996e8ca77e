"""The workflow verbs themselves, called as the API (the CLI's tests call them through the commands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specsim import workflow
from specsim.glossary import central_quantiles
from specsim.simulate import AcceptanceProfile, SyntheticWorkload, simulate_traces
from specsim.simulate.acceptance import iid_rate_from_tokens_per_step, jeffreys_rate_draws
from specsim.simulate.analytic import expected_tokens_per_step
from specsim.traces import Traces
from tests.conftest import TRUE_COST


def _iid_traces(alpha: float, *, gamma: int = 8, sequences: int = 20, output_len: int = 600) -> Traces:
    """Traces of one drafter whose every drafted token is accepted with probability ``alpha``."""
    cell = SyntheticWorkload("code", "humaneval", "iid", "generic", AcceptanceProfile.constant(alpha),
                             np.full(sequences, 50), np.full(sequences, output_len), "mixture")
    tables = simulate_traces([cell], TRUE_COST, gamma=gamma, rng=int(alpha * 100))
    return Traces(Path("."), tables["tokens"], tables["steps"], tables["sequences"], {}, ())


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.85])
def test_break_even_cost_ratio_is_leviathans_closed_form(alpha):
    # Under Leviathan's costs (target step 1, drafted token c, verification as one target step) a
    # step yields tau(gamma) tokens for gamma c + 1, so speculation breaks even at c = (tau - 1) / gamma;
    # the verb bisects the exact simulator instead, over gammas 1-8. Long outputs make the last,
    # shortened steps of a sequence negligible; the closed form is taken at the traces' own rate.
    traces = _iid_traces(alpha)
    evaluated = traces.tokens[traces.tokens["evaluated"]]
    measured = float(evaluated["accepted"].mean())
    closed = max((float(expected_tokens_per_step(measured, g)) - 1) / g for g in range(1, 9))
    found = workflow.break_even_cost_ratio(traces, drafter="iid", acceptance_from="code", workload="code")
    assert found == pytest.approx(closed, rel=0.02)


def test_break_even_cost_ratio_of_a_drafter_never_accepted_is_negligible():
    # Every drafted token rejected: each (draft index, position bin) rate is only the Jeffreys
    # pseudo-count's 0.5 / (n + 1), so speculation breaks even only at a c of that order (Leviathan
    # at gamma 1: c = tau - 1 = a), never at a c any hardware has.
    traces = _iid_traces(0.0, gamma=2, sequences=5, output_len=100)
    evaluated = int(traces.tokens["evaluated"].sum())
    found = workflow.break_even_cost_ratio(traces, drafter="iid", acceptance_from="code", workload="code")
    assert 0.0 <= found < 0.01
    assert found >= 0.5 / (evaluated + 1) * 0.9  # at least the pooled pseudo-count rate


def test_iid_rate_inverts_leviathans_tokens_per_step():
    for alpha in (0.05, 0.5, 0.9):
        for gamma in (1, 4, 8):
            tokens = float(expected_tokens_per_step(alpha, gamma))
            assert iid_rate_from_tokens_per_step(tokens, gamma) == pytest.approx(alpha, abs=1e-9)


def test_jeffreys_draws_match_the_beta_posterior():
    # Beta(accepted + 1/2, rejected + 1/2): mean (a + 1/2) / (n + 1), and the central interval's
    # ends at the Beta quantiles.
    from scipy.stats import beta

    draws = jeffreys_rate_draws(np.array([7.0]), np.array([20.0]), np.random.default_rng(0), (200_000, 1))[:, 0]
    assert draws.mean() == pytest.approx(7.5 / 21, abs=3e-3)
    low, high = np.quantile(draws, central_quantiles(0.9))
    assert low == pytest.approx(beta.ppf(0.05, 7.5, 13.5), abs=5e-3)
    assert high == pytest.approx(beta.ppf(0.95, 7.5, 13.5), abs=5e-3)


def test_loto_figures_are_coverage_and_mape_by_hand():
    # Five held-out cells of two drafter types from three folds: the figures recomputed by hand.
    cells = pd.DataFrame({
        "held_out_task": ["a", "a", "b", "b", "c"],
        "drafter": ["h", "l", "h", "l", "h"],
        "drafter_type": ["feature-head", "lookup", "feature-head", "lookup", "feature-head"],
        "measured_speedup": [1.0, 2.0, 1.5, 1.2, 0.8],
        "speedup": [1.1, 1.8, 1.5, 1.5, 0.8],
        "covered": [True, False, True, True, False],
        "diagnostics_passed": [True, True, False, False, True],
        "target_accept": [0.95, 0.95, 0.99, 0.99, 0.95], "fold_draws": [1000, 1000, 2000, 2000, 1000],
        "max_r_hat": [1.002, 1.002, 1.031, 1.031, 1.004], "divergences": [0, 0, 3, 3, 0],
        "warnings": ["", "", "R-hat 1.031 > 1.01 (kappa)", "R-hat 1.031 > 1.01 (kappa)", ""],
    })
    cells["error_pct"] = 100 * (cells["speedup"] - cells["measured_speedup"]) / cells["measured_speedup"]
    result = workflow.LotoResult(cells, level=0.9)
    overall = result.overall()
    assert overall["cells_covered"] == 3 and overall["coverage"] == pytest.approx(3 / 5)
    # |errors|: 10%, 10%, 0%, 25%, 0% -> mean 9%
    assert overall["mean_absolute_percentage_error"] == pytest.approx(9.0)
    assert overall["folds"] == 3 and overall["folds_passing_diagnostics"] == 2
    by_type = result.by_group().set_index("drafter_type")
    assert by_type.loc["feature-head", "coverage"] == pytest.approx(2 / 3)
    assert by_type.loc["feature-head", "mean_absolute_percentage_error"] == pytest.approx(10 / 3)
    assert by_type.loc["lookup", "coverage"] == pytest.approx(1 / 2)
    assert by_type.loc["lookup", "mean_absolute_percentage_error"] == pytest.approx(17.5)
    payload = result.to_dict()
    assert payload["coverage"] == overall["coverage"] and len(payload["by_drafter_type"]) == 2
    assert "lookup: 90% intervals cover 1 of 2 held-out cells; MAPE 17.5%" in result.summary()
    # The failing fold says which check failed, once, with the target acceptance and draws it ended at.
    last = result.summary().splitlines()[-1]
    assert last == ("fold b failed the gate at target_accept 0.99 with 2000 draws per chain: max_r_hat 1.031, "
                    "divergences 3 "
                    "(R-hat 1.031 > 1.01 (kappa))")


def test_a_cell_with_no_prompt_beside_its_probe_counts_blind_only():
    # Three cells with a probe of 4 prompts; the third had 4 prompts, all of them the probe's: blind only.
    cells = pd.DataFrame({
        "held_out_task": ["a", "b", "c"], "drafter": ["l", "l", "l"], "drafter_type": ["lookup"] * 3,
        "measured_speedup": [1.0, 2.0, 1.5], "speedup": [1.2, 2.0, 1.5], "covered": [True, True, False],
        "error_pct": [20.0, 0.0, 0.0], "diagnostics_passed": [True, True, True],
        "speedup_probe": [1.1, 1.6, np.nan], "covered_probe": [True, False, np.nan],
        "error_pct_probe": [10.0, -20.0, np.nan], "probe_tokens": [120, 130, 0],
    })
    result = workflow.LotoResult(cells, level=0.9, probe_prompts=4)
    overall = result.overall()
    assert overall["cells"] == 3 and overall["cells_covered"] == 2
    assert overall["cells_probed"] == 2 and overall["cells_covered_probe"] == 1
    assert overall["coverage_probe"] == pytest.approx(0.5)
    assert overall["mean_absolute_percentage_error_probe"] == pytest.approx(15.0)
    assert "with a probe of 4 prompts 1 of 2, MAPE 15.0%; 1 cell(s) of 4 prompts or fewer predicted blind only" in (
        result.summary())
    none_probed = workflow.LotoResult(cells.iloc[2:], level=0.9, probe_prompts=4).overall()
    assert none_probed["cells_probed"] == 0 and none_probed["coverage_probe"] is None

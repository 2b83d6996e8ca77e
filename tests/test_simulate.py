from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specsim.analysis.metrics import bootstrap_ratio, measured_speedup_interval
from specsim.cli import main
from specsim.simulate import AcceptanceProfile, CostModel, fit_cost_model, profile_from_tokens, simulate_traces
from specsim.simulate.analytic import (
    best_gamma,
    expected_tokens_per_step,
    speedup_by_index,
    tokens_per_step_by_index,
    walltime_improvement,
)
from specsim.simulate.cost import leviathan_cost_model
from specsim.simulate.exact import accepted_count_probabilities, expected_workload, step_start_probabilities
from specsim.simulate.montecarlo import simulate_workload
from specsim.simulate.validation import (
    cost_holdout_errors,
    cost_transfer_errors,
    step_time_ratios,
    validate_against_measured,
)
from specsim.simulate.whatif import what_if
from tests.conftest import TRUE_COST, small_workloads

FALLING = AcceptanceProfile(np.array([[0.85, 0.6, 0.5], [0.75, 0.55, 0.45], [0.7, 0.5, 0.4], [0.6, 0.45, 0.35]]),
                            np.array([16, 64]))


@pytest.mark.parametrize(
    ("alpha", "gamma", "c", "expected"),
    [
        # Hand-computed from Leviathan et al.'s Theorem 3.8: (1 - a^(g+1)) / ((1 - a)(g c + 1)).
        (0.8, 3, 0.05, (1 - 0.8**4) / (0.2 * 1.15)),
        (0.6, 5, 0.0, (1 - 0.6**6) / 0.4),
        (0.0, 4, 0.1, 1 / 1.4),
        (1.0, 4, 0.25, 5 / 2.0),
    ],
)
def test_leviathan_improvement_factor(alpha, gamma, c, expected):
    assert walltime_improvement(alpha, gamma, c) == pytest.approx(expected, rel=1e-12)


@given(alpha=st.floats(0, 1), c=st.floats(0, 1))
def test_leviathan_corollary_gamma_one(alpha, c):
    # Corollary 3.9: with gamma = 1 the improvement is (1 + alpha) / (1 + c).
    assert walltime_improvement(alpha, 1, c) == pytest.approx((1 + alpha) / (1 + c))


@given(alpha=st.floats(0, 1), gamma=st.integers(1, 12))
def test_per_index_form_reduces_to_iid(alpha, gamma):
    rates = np.full(gamma, alpha)
    assert tokens_per_step_by_index(rates) == pytest.approx(expected_tokens_per_step(alpha, gamma))
    assert speedup_by_index(rates, leviathan_cost_model(0.1)) == pytest.approx(walltime_improvement(alpha, gamma, 0.1))


def test_best_gamma_and_falling_acceptance():
    best = best_gamma([0.8], leviathan_cost_model(0.05))
    assert best.speedup == pytest.approx(walltime_improvement(0.8, best.gamma, 0.05))
    assert all(best.speedup >= walltime_improvement(0.8, g, 0.05) - 1e-12 for g in range(1, 17))
    # Verify cost growing with gamma pulls the best draft length down.
    steep = CostModel(draft_base_s=0.05, verify_base_s=1.0, verify_per_token_s=0.3, target_base_s=1.0)
    assert best_gamma([0.8], steep).gamma < best.gamma


@given(rates=st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_accepted_count_probabilities_sum_to_one(rates):
    probabilities = accepted_count_probabilities(np.array(rates))
    assert probabilities.sum() == pytest.approx(1.0)
    assert np.dot(probabilities, np.arange(len(rates) + 1)) + 1 == pytest.approx(tokens_per_step_by_index(rates))


def test_exact_matches_leviathan_for_long_sequences():
    prediction = expected_workload(AcceptanceProfile.constant(0.8), leviathan_cost_model(0.05), 3, np.zeros(1),
                                   np.array([200_000]))
    assert prediction.speedup == pytest.approx(walltime_improvement(0.8, 3, 0.05), rel=1e-4)
    assert prediction.tokens_per_step == pytest.approx(expected_tokens_per_step(0.8, 3), rel=1e-4)


def test_step_start_probabilities_short_cases():
    # alpha = 1: a step starts every gamma + 1 positions.
    visits = step_start_probabilities(AcceptanceProfile.constant(1.0), 2, 10)
    np.testing.assert_allclose(visits, [1, 0, 0, 1, 0, 0, 1, 0, 0, 1])
    # alpha = 0: a step at every position.
    np.testing.assert_allclose(step_start_probabilities(AcceptanceProfile.constant(0.0), 3, 6), np.ones(6))


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_exact_agrees_with_monte_carlo(gamma):
    rng = np.random.default_rng(0)
    prompt = rng.integers(5, 400, 40)
    output = rng.integers(1, 300, 40)
    exact = expected_workload(FALLING, TRUE_COST, gamma, prompt, output)
    replicates = 400
    simulated = simulate_workload(FALLING, TRUE_COST, gamma, np.tile(prompt, replicates), np.tile(output, replicates),
                                  rng=gamma)
    per_sequence = simulated.spec_s.reshape(replicates, -1)
    steps = simulated.steps.reshape(replicates, -1)
    # Per-sequence means within 4.5 Monte Carlo standard errors (all 40 sequences: a false
    # failure rate of about 40 x 7e-6), and the workload ratio within 4.5 standard errors.
    for values, expected in ((per_sequence, exact.spec_s), (steps, exact.steps)):
        standard_error = values.std(axis=0, ddof=1) / np.sqrt(replicates) + 1e-12
        assert np.all(np.abs(values.mean(axis=0) - expected) <= 4.5 * standard_error + 1e-9)
    totals = per_sequence.sum(axis=1)
    ratio_error = exact.baseline_s.sum() / totals.mean() ** 2 * totals.std(ddof=1) / np.sqrt(replicates)
    assert abs(simulated.speedup - exact.speedup) <= 4.5 * ratio_error


def test_monte_carlo_is_reproducible():
    a = simulate_workload(FALLING, TRUE_COST, 4, np.full(50, 30), np.full(50, 90), rng=3)
    b = simulate_workload(FALLING, TRUE_COST, 4, np.full(50, 30), np.full(50, 90), rng=3)
    np.testing.assert_array_equal(a.steps, b.steps)


def test_cost_model_recovers_true_costs():
    rng = np.random.default_rng(5)
    cells = small_workloads(n_sequences=60, seed=2)
    tables = simulate_traces(cells, TRUE_COST, gamma=3, rng=rng)
    more = simulate_traces(cells, TRUE_COST, gamma=6, rng=rng, run_id="g6")
    steps = pd.concat([tables["steps"], more["steps"]])
    sequences = pd.concat([tables["sequences"], more["sequences"]])
    fitted = fit_cost_model(steps, sequences)
    for name in ("draft_base_s", "verify_base_s", "verify_per_token_s", "verify_per_context_s", "target_base_s",
                 "target_per_context_s", "spec_prefill_base_s", "spec_prefill_per_token_s"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE_COST, name), rel=1e-3, abs=1e-9), name
    assert fitted.diagnostics["verify"]["r_squared"] > 0.999


def test_profile_recovered_from_synthetic_tokens():
    cells = small_workloads(n_sequences=100, seed=4)[:1]
    tables = simulate_traces(cells, TRUE_COST, gamma=4, rng=6)
    profile = profile_from_tokens(tables["tokens"], position_edges=np.array([64]))
    evaluated = tables["tokens"][tables["tokens"]["evaluated"]]
    late = (evaluated["position"] - evaluated["draft_index"]) >= 64
    counts = np.array([[np.sum((evaluated["draft_index"] == d) & (late == b)) for b in (False, True)]
                       for d in range(4)])
    truth = cells[0].profile.rates
    # Within 4 binomial standard errors in every cell (8 cells: false failure rate ~5e-4).
    assert np.all(np.abs(profile.rates - truth) <= 4 * np.sqrt(truth * (1 - truth) / counts))


def test_prediction_of_synthetic_traces_matches_measured():
    tables = simulate_traces(small_workloads(n_sequences=80, seed=8), TRUE_COST, gamma=4, timing_noise=0.05, rng=9)
    table = validate_against_measured(tables["tokens"], tables["steps"], tables["sequences"],
                                      position_edges=np.array([64]))
    assert table["error_pct"].abs().max() < 5


def test_bootstrap_ratio_interval_covers_estimate():
    rng = np.random.default_rng(1)
    numerator, denominator = rng.gamma(2, 1, 100), rng.gamma(2, 1, 100)
    interval = bootstrap_ratio(numerator, denominator, rng=2)
    assert interval.low < interval.estimate < interval.high


def test_measured_interval_and_whatif_cover_the_truth():
    # Known truth: traces simulated from known acceptance and costs; the intervals must contain
    # the exact expected speed-up of the process that generated them.
    from specsim.analysis.metrics import measured_speedup

    workloads = small_workloads(n_sequences=40, seed=4)
    tables = simulate_traces(workloads, TRUE_COST, gamma=4, rng=5)
    code, chat = workloads
    interval = measured_speedup_interval(tables["sequences"].query("task == 'code'"), rng=0)
    truth = expected_workload(code.profile, TRUE_COST, 4, code.prompt_lengths, code.output_lengths).speedup
    assert interval.estimate == pytest.approx(measured_speedup(tables["sequences"].query("task == 'code'")))
    assert interval.low < truth < interval.high, (interval, truth)
    tokens = tables["tokens"][tables["tokens"]["task"] == "code"]
    result = what_if(tokens, TRUE_COST, 4, chat.prompt_lengths, chat.output_lengths, n_resamples=200, rng=1)
    truth = expected_workload(code.profile, TRUE_COST, 4, chat.prompt_lengths, chat.output_lengths).speedup
    assert result.level == 0.9 and result.speedup_low < truth < result.speedup_high, (result, truth)


def test_cli_analytic_json(capsys):
    assert main(["simulate", "analytic", "--alpha", "0.8", "--gamma", "3", "--cost-ratio", "0.05", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["tokens_per_step"] == pytest.approx(2.952)
    assert payload["speedup"] == pytest.approx(2.5669565)


@pytest.mark.parametrize("args", [["--alpha", "1.5", "--gamma", "3"], ["--alpha", "0.5", "--gamma", "0"]])
def test_cli_analytic_bad_input(capsys, args):
    assert main(["simulate", "analytic", *args, "--cost-ratio", "0.1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_whatif_and_validate(trace_dir, tmp_path, capsys):
    common = ["simulate", "whatif", "--traces", str(trace_dir), "--drafter", "generic-4l", "--acceptance-from", "code",
              "--gamma", "3", "--resamples", "20", "--json"]
    assert main([*common, "--lengths-from", "chat"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["interval_level"] == 0.9 and payload["speedup_low"] < payload["speedup_high"]
    assert payload["n_sequences"] == 4 and payload["cost_model"].startswith("fitted on the traces")
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("prompt_len,output_len\n100,50\n2000,400\n")
    assert main([*common, "--lengths-from", str(lengths)]) == 0
    captured = capsys.readouterr()
    # Outputs of 400 tokens go past every measured position (synthetic outputs stop below 120).
    payload = json.loads(captured.out)
    assert payload["extrapolates"] and payload["max_observed_position"] < 120 < payload["workload_max_position"]
    assert payload["share_of_tokens_beyond_observed"] > 0.5
    assert captured.err.count("\n") == 1 and "warning: extrapolating" in captured.err
    assert main([*common, "--lengths-from", "chat"]) == 0
    assert "extrapolating" not in capsys.readouterr().err
    assert main([*common, "--lengths-from", "chat", "--cost-ratio", "0.05"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["cost_model"].startswith("constant cost ratio") and payload["speedup"] > 1
    assert main(["simulate", "best-gamma", "--traces", str(trace_dir), "--drafter", "generic-4l",
                 "--acceptance-from", "code", "--lengths-from", "chat", "--cost-ratio", "0.05", "--json"]) == 0
    sweep = json.loads(capsys.readouterr().out)
    assert sweep["best_speedup"] == max(row["speedup"] for row in sweep["gammas"]) and len(sweep["gammas"]) == 8
    # Traces at gamma 4: indices past 0-3 reuse the last rate; a constant ratio's verify cost is assumed.
    assert [row["acceptance_measured"] for row in sweep["gammas"]] == [True] * 4 + [False] * 4
    assert {row["verify_cost"] for row in sweep["gammas"]} == {"assumed"}
    assert main(["simulate", "best-gamma", "--traces", str(trace_dir), "--drafter", "generic-4l",
                 "--acceptance-from", "code", "--lengths-from", "chat", "--max-gamma", "5"]) == 0
    captured = capsys.readouterr()
    assert "gamma 5 drafts past the measured draft indices (0-3)" in captured.err
    assert "verify cost at gamma 1-3, 5 was not measured" in captured.err
    assert main([*common, "--lengths-from", "chat", "--gamma", "6"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["draft_index_extrapolates"]
    assert "gamma 6 drafts past the measured draft indices (0-3)" in captured.err
    assert main([*common, "--lengths-from", "nosuchtask"]) == 2
    assert "no task 'nosuchtask'" in capsys.readouterr().err
    lengths.write_text("prompt_len,output\n1,2\n")
    assert main([*common, "--lengths-from", str(lengths)]) == 2
    assert "output_len: no output_len column (columns: prompt_len, output)" in capsys.readouterr().err
    assert main(["simulate", "validate", str(trace_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_absolute_percentage_error"] < 10


def test_cost_transfer_finds_a_run_whose_drafter_costs_moved():
    # Two runs with the same costs and a third whose drafter steps cost 1.5x: leaving each run out,
    # the moved run's speed-up is over-predicted by the others' costs, the same-cost runs barely miss.
    from dataclasses import replace

    cells = small_workloads(n_sequences=40, seed=3)
    moved = replace(TRUE_COST, draft_base_s=1.5 * TRUE_COST.draft_base_s)
    runs = [simulate_traces(cells, cost, gamma=4, rng=seed, run_id=run)
            for run, cost, seed in (("a", TRUE_COST, 1), ("b", TRUE_COST, 2), ("c", moved, 3))]
    tables = {name: pd.concat([run[name] for run in runs], ignore_index=True)
              for name in ("tokens", "steps", "sequences")}
    errors = cost_transfer_errors(tables["tokens"], tables["steps"], tables["sequences"],
                                  position_edges=np.array([64])).set_index("run_id")["log_error_mean"]
    assert set(errors.index) == {"a", "b", "c"}
    assert errors["c"] > 0.05  # cheaper drafting assumed than the run paid
    assert errors["a"] < 0 and errors["b"] < 0  # the moved run makes the others' drafting look dearer
    two = cost_transfer_errors(*(pd.concat([run[name] for run in runs[:2]], ignore_index=True)
                                 for name in ("tokens", "steps", "sequences")), position_edges=np.array([64]))
    assert two["log_error_mean"].abs().max() < 0.02
    # One run alone cannot measure a drift: the workflow then assumes the documented default, not 0.
    from specsim.traces.store import Traces
    from specsim.workflow import DEFAULT_COST_RUN_LOG_SD, cost_transfer

    one = Traces(Path("."), runs[0]["tokens"], runs[0]["steps"], runs[0]["sequences"], {}, ())
    spread, table = cost_transfer(one)
    assert spread == DEFAULT_COST_RUN_LOG_SD > 0 and table.empty


def test_cost_holdout_finds_a_task_whose_costs_the_others_do_not_extrapolate():
    # Three tasks under the same linear costs: each held out, the others' costs give its speed-up from
    # its own acceptance almost exactly. A fourth, long task whose drafting costs 10x more per context
    # token: the short tasks' costs under-price its drafting and over-predict it.
    from dataclasses import replace

    from specsim.simulate.synthetic_traces import SyntheticWorkload

    rng = np.random.default_rng(5)
    profile = AcceptanceProfile(np.array([[0.8, 0.7], [0.7, 0.6], [0.65, 0.55], [0.6, 0.5]]), np.array([64]))

    def cell(task: str, prompts: tuple[int, int]) -> SyntheticWorkload:
        return SyntheticWorkload(task, task, "generic-4l", "generic", profile, rng.integers(*prompts, 12),
                                 rng.integers(40, 120, 12), "mixture")

    same = simulate_traces([cell("short", (10, 60)), cell("mid", (200, 400)), cell("long-ish", (600, 900))],
                           TRUE_COST, gamma=4, rng=1)
    errors = cost_holdout_errors(same["tokens"], same["steps"], same["sequences"], position_edges=np.array([64]))
    assert set(errors["held_out_task"]) == {"short", "mid", "long-ish"}
    assert errors["error_pct"].abs().max() < 2
    moved = simulate_traces([cell("long", (1500, 2500))], replace(TRUE_COST, draft_per_context_s=2e-5), gamma=4, rng=2)
    tables = [pd.concat([same[name], moved[name]], ignore_index=True) for name in ("tokens", "steps", "sequences")]
    errors = cost_holdout_errors(*tables, position_edges=np.array([64])).set_index("held_out_task")["error_pct"]
    assert errors["long"] > 5
    # Under costs fitted on its own steps the long task is simulated as closely as the others: the miss
    # is the extrapolated costs'.
    own = validate_against_measured(moved["tokens"], moved["steps"], moved["sequences"], np.array([64]))
    assert own["error_pct"].abs().max() < 2
    # Where the one linear model misses, task by task: the three tasks under their own costs take the
    # fitted time; with the long task pooled in, its steps take more than one linear model gives them.
    ratios = step_time_ratios(same["steps"], same["sequences"]).set_index("task")["measured_over_fitted"]
    assert set(ratios.index) == {"short", "mid", "long-ish"} and (ratios - 1).abs().max() < 0.02
    pooled = step_time_ratios(tables[1], tables[2]).set_index("task")
    assert pooled.loc["long", "measured_over_fitted"] > 1.02
    assert pooled["context_mean"].idxmax() == "long" and pooled["context_mean"].idxmin() == "short"
    assert pooled["steps"].sum() == len(tables[1])


def test_run_normalisation_keeps_the_context_cost_and_removes_a_slow_spell():
    # The length experiment's design: each run holds one context range. The plain token costs twice as
    # much at 2,000 tokens as at none, the drafter's token does not grow, so its share of a step falls
    # with the context. Scaling each run to one pooled time per token flattened the target's context
    # cost and priced the long run's steps as dear as the short ones'. Scaled to the plain time's trend,
    # the long run's speed-up is predicted from the two shorter runs' costs, and a run collected while
    # the machine was 1.5x slower (same lengths as another) is brought onto the same scale.
    from specsim.simulate.cost import fit_cost_models, normalise_run_timings
    from specsim.simulate.synthetic_traces import SyntheticWorkload

    rng = np.random.default_rng(11)
    profile = AcceptanceProfile(np.array([[0.8, 0.7], [0.7, 0.6], [0.65, 0.55], [0.6, 0.5]]), np.array([64]))
    cost = CostModel(draft_base_s=0.012, verify_base_s=0.035, verify_per_token_s=0.003, verify_per_context_s=3e-5,
                     target_base_s=0.03, target_per_context_s=1.5e-5, spec_prefill_base_s=0.02,
                     baseline_prefill_base_s=0.015)
    slow = CostModel(**{name: 1.5 * value for name, value in cost.to_dict(diagnostics=False).items()
                        if name != "verify_table"})

    def run(task: str, prompts: tuple[int, int], run_id: str, costs: CostModel, seed: int) -> dict:
        cell = SyntheticWorkload(task, task, "small-drafter", "generic", profile, rng.integers(*prompts, 16),
                                 rng.integers(60, 120, 16), "mixture")
        return simulate_traces([cell], costs, gamma=4, rng=seed, run_id=run_id)

    runs = [run("short", (40, 120), "r-short", cost, 1), run("mid", (700, 900), "r-mid", cost, 2),
            run("mid", (700, 900), "r-mid-slow", slow, 3), run("long", (1800, 2200), "r-long", cost, 4)]
    tokens, steps, sequences = (pd.concat([r[name] for r in runs], ignore_index=True)
                                for name in ("tokens", "steps", "sequences"))
    fitted = fit_cost_models(steps, sequences)[("small-drafter", 0.0)]
    assert fitted.target_per_context_s == pytest.approx(cost.target_per_context_s, rel=0.15)
    assert fitted.draft_per_context_s < 0.1 * cost.target_per_context_s
    # The slow spell is gone: the two mid runs' plain seconds per token agree after scaling.
    _, scaled = normalise_run_timings(steps, sequences)
    per_token = (scaled.groupby("run_id")["baseline_wall_s"].sum() / scaled.groupby("run_id")["output_len"].sum())
    assert per_token["r-mid-slow"] == pytest.approx(per_token["r-mid"], rel=0.05)
    # The long run held out: the kept runs' costs give its speed-up from its own acceptance.
    errors = cost_holdout_errors(tokens, steps, sequences, position_edges=np.array([64])).set_index("held_out_task")
    assert abs(errors.loc["long", "error_pct"]) < 3
    ratios = step_time_ratios(steps, sequences).set_index("task")["measured_over_fitted"]
    assert (ratios - 1).abs().max() < 0.03
    # One timed run is left as it is.
    one_steps, one_sequences = normalise_run_timings(runs[0]["steps"], runs[0]["sequences"])
    assert one_steps["verify_s"].equals(runs[0]["steps"]["verify_s"])


def test_weighted_workload_equals_the_expanded_one():
    # predict collapses a workload to its distinct (prompt, output) pairs with their counts.
    profile = AcceptanceProfile(np.array([[0.8, 0.6], [0.7, 0.5], [0.6, 0.4]]), np.array([64.0]))
    prompt, output, weight = np.array([10, 300, 50]), np.array([20, 90, 200]), np.array([3, 1, 5])
    weighted = expected_workload(profile, TRUE_COST, 3, prompt, output, weights=weight)
    expanded = expected_workload(profile, TRUE_COST, 3, np.repeat(prompt, weight), np.repeat(output, weight))
    assert weighted.speedup == pytest.approx(expanded.speedup, rel=1e-12)
    assert weighted.tokens_per_step == pytest.approx(expanded.tokens_per_step, rel=1e-12)
    assert weighted.speedup != pytest.approx(expected_workload(profile, TRUE_COST, 3, prompt, output).speedup)


def test_profile_of_one_gamma_at_one_context_fits():
    # profile --gamma 4 --context 16 --repeats 1 is allowed by the options: one verify pass is one
    # coefficient (no per-context term can be told from one context).
    from specsim.collect.profile import fit_profile

    rows = [{"kind": kind, "context": 16, "gamma": 4, "seconds": seconds} for kind, seconds in
            (("target", 0.02), ("verify", 0.03), ("draft_step", 0.0001), ("spec_prefill", 0.05),
             ("baseline_prefill", 0.05))]
    model = fit_profile(rows)
    assert model.verify_table == {4: pytest.approx(0.03)} and model.verify_per_context_s == 0.0
    assert model.target_base_s == pytest.approx(0.02)

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from specsim.cli import main
from specsim.model import ModelOptions, aggregate_counts, fit_baseline, fit_model, load_posterior, predict_speedup
from specsim.model.calibration import simulation_based_calibration
from specsim.model.spec import linear_predictor
from specsim.model.synthetic_counts import synthetic_counts, zero_sum_truth
from specsim.simulate import AcceptanceProfile
from specsim.simulate.exact import expected_workload
from tests.conftest import TRUE_COST

MAIN_EFFECTS = ("intercept", "b_finetuned", "b_interaction")


@pytest.fixture(scope="module")
def recovery_fit():
    counts, truth = synthetic_counts(rng=3, evaluated_per_cell=600)
    return counts, truth, fit_model(counts, draws=500, tune=700, chains=4, seed=3)


@pytest.mark.integration
def test_parameter_recovery(recovery_fit):
    counts, truth, result = recovery_fit
    summary = result.summary(hdi_prob=0.95)
    # Zero-sum effects: the intercept and b_finetuned are the measured tasks' and drafters' means.
    kinds = [result.metadata.drafter_kinds[d] for d in counts.drafters]
    identified = zero_sum_truth(truth, kinds)
    for name in MAIN_EFFECTS:
        low, high = summary.loc[name, "hdi_2.5%"], summary.loc[name, "hdi_97.5%"]
        assert low <= identified[name] <= high, (name, identified[name], low, high)
    # The interaction is what the model exists to measure: its sign must be resolved.
    assert summary.loc["b_interaction", "hdi_97.5%"] < 0
    # The length effect (fine-tuned drafters' divergence slope) and the content effects (each task's
    # effect against the tasks' mean) are both recovered, each without absorbing the other.
    slope = result.idata.posterior["divergence_slope_finetuned"].values.reshape(-1)
    low, high = np.quantile(slope, [0.025, 0.975])
    assert low <= truth["b_divergence"] + truth["b_interaction"] <= high
    effects = result.idata.posterior["task_effect"].values.reshape(-1, len(counts.tasks))
    contrasts = effects - effects.mean(axis=1, keepdims=True)
    true_contrasts = truth["task_effect"] - truth["task_effect"].mean()
    low, high = np.quantile(contrasts, [0.005, 0.995], axis=0)  # 99% per task: six checks at once
    assert np.all((low <= true_contrasts) & (true_contrasts <= high)), (low, true_contrasts, high)
    assert result.diagnostics["max_r_hat"] <= 1.01
    assert result.diagnostics["min_ess_bulk"] >= 400


@pytest.mark.integration
def test_baseline_glm_agrees_in_sign(recovery_fit):
    counts, truth, result = recovery_fit
    baseline = fit_baseline(counts)
    # Generic drafters only see small divergences, so the GLM separates the two slopes poorly;
    # the fine-tuned drafters' slope (their sum) is well determined and must be negative.
    assert baseline.loc["b_divergence", "estimate"] + baseline.loc["b_interaction", "estimate"] < 0
    assert baseline.loc["b_interaction", "low"] <= truth["b_interaction"] <= baseline.loc["b_interaction", "high"]
    assert set(baseline.columns) == {"estimate", "std_error", "low", "high", "p_value"}


@pytest.mark.integration
def test_prediction_interval_and_direction(recovery_fit):
    counts, truth, result = recovery_fit
    posterior = result.posterior()
    lengths = np.full(30, 120), np.full(30, 80)
    near = predict_speedup(posterior, TRUE_COST, 4, *lengths, finetuned=True, divergence=0.05, rng=0)
    far = predict_speedup(posterior, TRUE_COST, 4, *lengths, finetuned=True, divergence=0.8, rng=0)
    # The true speed-up of a typical new task and drafter (effects 0) lies in each 90% interval.
    for prediction, divergence in ((near, 0.05), (far, 0.8)):
        parameters = {**truth, "task_effect": np.zeros(1), "drafter_effect": np.zeros(1)}
        index = np.repeat(np.arange(4), 3)
        design = {"finetuned": 1, "divergence": divergence, "draft_index": index,
                  "position_bin": np.tile(np.arange(3), 4), "task": np.zeros(12, int), "drafter": np.zeros(12, int)}
        rates = expit(linear_predictor(parameters, design, 4, 3)).reshape(4, 3)
        true = expected_workload(AcceptanceProfile(rates, counts.position_edges), TRUE_COST, 4, *lengths).speedup
        assert prediction.low < true < prediction.high, (prediction, true)
    # Fine-tuned drafters lose speed-up as the workload's lengths move away from their data.
    assert far.mean < near.mean


@pytest.mark.integration
def test_simulation_based_calibration():
    result = simulation_based_calibration(100, seed=11)
    # Four parameters at alpha = 0.001 each: false failure rate about 0.4%.
    assert all(p > 1e-3 for p in result.p_values.values()), result.p_values
    assert len(result.ranks) == 100


def test_aggregate_counts_divergence_reference(two_kind_traces):
    _, tables = two_kind_traces
    counts = aggregate_counts(tables["tokens"], tables["sequences"], position_edges=np.array([32]))
    cells = counts.cells
    assert cells["evaluated"].sum() == tables["tokens"]["evaluated"].sum()
    ft = cells[cells["drafter"] == "ft-short"].groupby("task")["divergence"].first()
    assert ft["short"] == 0.0 and ft["long"] > ft["mid"] > 0  # the fine-tuned drafter's own task is its reference
    generic = cells[cells["drafter"] == "generic"].groupby("task")["divergence"].first()
    assert generic.max() < ft["long"]


@pytest.mark.integration
def test_cli_fit_and_predict(two_kind_traces, tmp_path, capsys):
    root, _ = two_kind_traces
    out = tmp_path / "posterior.nc"
    code = main(["fit", str(root), "--out", str(out), "--draws", "300", "--tune", "300", "--chains", "2",
                 "--no-compare", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["sampler"] == "nutpie" and out.exists()
    assert {row["term"] for row in payload["baseline_glm"]} >= {"intercept", "b_finetuned", "b_interaction"}
    posterior = load_posterior(out)
    assert posterior.metadata.tasks == ["long", "mid", "short"]
    lengths = tmp_path / "workload.csv"
    pd.DataFrame({"prompt_len": [300, 500], "output_len": [80, 100]}).to_csv(lengths, index=False)
    assert main(["predict", str(out), "--workload", str(lengths), "--drafter", "ft-short", "--drafter-kind",
                 "finetuned", "--gamma", "3", "--json"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["interval_level"] == 0.9 and prediction["speedup_low"] < prediction["speedup_high"]
    assert prediction["cost_model"] == "fitted on the traces (ft-short)"
    # A fitted drafter's kind comes from the fit; a contradicting --drafter-kind is refused.
    assert main(["predict", str(out), "--workload", str(lengths), "--drafter", "ft-short", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["drafter_kind"] == "finetuned"
    assert main(["predict", str(out), "--workload", str(lengths), "--drafter", "ft-short", "--drafter-kind",
                 "generic"]) == 2
    assert "fitted as a finetuned drafter" in capsys.readouterr().err
    longest = posterior.metadata.n_draft_index
    assert main(["predict", str(out), "--workload", str(lengths), "--drafter", "ft-short", "--gamma",
                 str(longest + 2), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["draft_index_extrapolates"] and "past the fitted draft indices" in captured.err
    assert main(["predict", str(out), "--workload", "mid", "--drafter-kind", "generic", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)
    assert not near["extrapolates"]
    # A workload far past the measured positions: warned on stderr, flagged in JSON, a wider interval.
    far_lengths = tmp_path / "far.csv"
    pd.DataFrame({"prompt_len": [8000, 16000], "output_len": [4000, 2000]}).to_csv(far_lengths, index=False)
    assert main(["predict", str(out), "--workload", str(far_lengths), "--drafter-kind", "generic", "--json"]) == 0
    captured = capsys.readouterr()
    far = json.loads(captured.out)
    assert far["extrapolates"] and far["workload_max_position"] == 3999 and "warning: extrapolating" in captured.err
    assert far["speedup_high"] - far["speedup_low"] > near["speedup_high"] - near["speedup_low"]
    assert main(["predict", str(tmp_path / "missing.nc"), "--workload", "mid"]) == 2
    assert main(["fit", str(root), "--out", str(tmp_path / "x.txt")]) == 2
    assert main(["predict", str(out), "--workload", "mid", "--drafter", "nobody"]) == 2


@pytest.mark.integration
def test_zero_sum_effects(recovery_fit):
    # Task effects sum to zero in every draw, drafter effects within each kind (one generic drafter: 0),
    # and a new task's or drafter's effect is widened by the population mean's uncertainty.
    from specsim.model.predict import new_member_scale

    counts, truth, result = recovery_fit
    post = result.idata.posterior
    np.testing.assert_allclose(post["task_effect"].values.sum(axis=-1), 0.0, atol=1e-9)
    drafters = post["drafter_effect"].sel(drafter=["ft-a", "ft-b"]).values.sum(axis=-1)
    np.testing.assert_allclose(drafters, 0.0, atol=1e-9)
    np.testing.assert_allclose(post["drafter_effect"].sel(drafter="generic").values, 0.0, atol=1e-12)
    assert new_member_scale(result.metadata, len(counts.tasks)) == pytest.approx(np.sqrt(1 + 1 / 6))
    assert new_member_scale(result.metadata, 0) == 1.0
    # The drafters' effects within the fine-tuned kind are recovered (99%).
    identified = zero_sum_truth(truth, [result.metadata.drafter_kinds[d] for d in counts.drafters])
    effects = post["drafter_effect"].values.reshape(-1, len(counts.drafters))
    low, high = np.quantile(effects, [0.005, 0.995], axis=0)
    assert np.all((low <= identified["drafter_effect"] + 1e-12) & (identified["drafter_effect"] <= high + 1e-12))


def test_build_model_without_divergence_terms():
    counts, _ = synthetic_counts(rng=0, n_tasks=3)
    from specsim.model import build_model

    model = build_model(counts, ModelOptions(divergence_terms=False, overdispersion=False))
    names = {v.name for v in model.free_RVs}
    assert "b_divergence" not in names and "kappa" not in names and "b_finetuned" in names


@pytest.mark.integration
def test_prediction_reproduces_the_fitted_cell_acceptance(recovery_fit):
    # The one linear predictor: acceptance_draws for a fitted task and drafter must equal the
    # model's own "acceptance" deterministic for that cell, draw by draw.
    from specsim.model.predict import acceptance_draws

    counts, _, result = recovery_fit
    posterior = result.posterior()
    fitted = result.idata.posterior["acceptance"].values.reshape(posterior.n_draws, -1)
    cells = counts.cells
    for row in cells.sample(12, random_state=0).itertuples():
        rates = acceptance_draws(posterior, finetuned=bool(row.finetuned), divergence=row.divergence, task=row.task,
                                 drafter=row.drafter, rng=0)
        np.testing.assert_allclose(rates[:, row.draft_index, row.position_bin], fitted[:, row.Index], rtol=1e-9)


@pytest.mark.integration
def test_posterior_file_round_trip_and_refusals(recovery_fit, tmp_path):
    from specsim.errors import InputError

    _, _, result = recovery_fit
    path = result.save(tmp_path / "p.nc")
    loaded = load_posterior(path)
    assert loaded.metadata == result.metadata
    np.testing.assert_array_equal(loaded.draws["intercept"], result.posterior().draws["intercept"])
    # A NetCDF file from another tool, and a specsim file of another version, are refused clearly.
    import arviz as az

    foreign = az.from_dict(posterior={"x": np.zeros((1, 5))})
    foreign.to_netcdf(str(tmp_path / "foreign.nc"))
    with pytest.raises(InputError, match="no specsim metadata"):
        load_posterior(tmp_path / "foreign.nc")
    (tmp_path / "junk.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(InputError, match="not a readable posterior"):
        load_posterior(tmp_path / "junk.nc")
    old = result.idata.copy()
    old.posterior.attrs["specsim_metadata"] = result.metadata.to_json().replace('"version": 2', '"version": 1')
    old.to_netcdf(str(tmp_path / "old.nc"))
    with pytest.raises(InputError, match="version 1"):
        load_posterior(tmp_path / "old.nc")


@pytest.mark.integration
def test_probe_moves_a_new_domain_prediction_to_the_truth(recovery_fit):
    # A new task far below the task population (effect -2.5 on the logit scale): without a probe the
    # prediction assumes a typical task; a 10-prompt probe of this drafter's agreement pulls it to the truth.
    counts, truth, result = recovery_fit
    posterior = result.posterior()
    rng = np.random.default_rng(5)
    n_index, n_bins = 4, 3
    parameters = {**truth, "task_effect": np.array([-2.5]), "drafter_effect": np.zeros(1)}
    index = np.repeat(np.arange(n_index), n_bins)
    design = {"finetuned": 1, "divergence": 0.3, "draft_index": index, "position_bin": np.tile(np.arange(n_bins),
              n_index), "task": np.zeros(index.size, int), "drafter": np.zeros(index.size, int)}
    rates = expit(linear_predictor(parameters, design, n_index, n_bins)).reshape(n_index, n_bins)
    edges = counts.position_edges
    lengths = np.full(30, 150), np.full(30, 150)
    true = expected_workload(AcceptanceProfile(rates, edges), TRUE_COST, 4, *lengths).speedup
    positions = np.tile(np.arange(150), 10)
    bins = np.searchsorted(edges, positions, side="right")
    probe = pd.DataFrame({"task": "new", "drafter": "ft-a", "prompt_id": np.repeat(np.arange(10), 150).astype(str),
                          "position": positions, "context_len": positions + 150,
                          "agree": rng.random(positions.size) < rates[0, bins]})
    common = dict(finetuned=True, divergence=0.3, rng=0)
    blind = predict_speedup(posterior, TRUE_COST, 4, *lengths, **common)
    probed = predict_speedup(posterior, TRUE_COST, 4, *lengths, probe=probe, **common)
    assert probed.low < true < probed.high, (probed, true)
    assert abs(probed.mean - true) / true < 0.1
    assert abs(probed.mean - true) < abs(blind.mean - true)
    # The costs' spread between collection runs widens the interval around the same centre.
    spread = predict_speedup(posterior, TRUE_COST, 4, *lengths, probe=probe, cost_log_sd=0.05, **common)
    assert spread.high - spread.low > probed.high - probed.low
    assert spread.median == pytest.approx(probed.median, rel=0.03)


def test_probe_from_greedy_traces_is_first_drafted_token_agreement(two_kind_traces):
    # Under greedy decoding the first drafted token of a step is always evaluated, and accepted exactly
    # when the drafter agrees with the target's next token: the probe made from traces is those tokens.
    from specsim.collect.probe import PROBE_COLUMNS
    from specsim.workflow import probe_from_traces

    tokens = two_kind_traces[1]["tokens"]
    cell = tokens[(tokens["task"] == "mid") & (tokens["drafter"] == "generic")]
    prompt_ids = sorted(cell["prompt_id"].unique())[:3]
    probe = probe_from_traces(cell, prompt_ids)
    first = cell[cell["prompt_id"].isin(prompt_ids) & (cell["draft_index"] == 0)]
    assert list(probe.columns) == list(PROBE_COLUMNS) and len(probe) == len(first) > 0
    assert set(probe["prompt_id"]) == set(prompt_ids)
    assert probe["agree"].mean() == first["accepted"].mean()
    assert first["evaluated"].all()

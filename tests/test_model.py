from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from specsim.cli import main
from specsim.model import ModelOptions, fit_baseline, fit_model, load_posterior, model_cells, predict_speedup
from specsim.model.calibration import simulation_based_calibration
from specsim.model.spec import linear_predictor
from specsim.model.synthetic_counts import TRUE_DRAFTING, TYPES, synthetic_counts
from specsim.simulate import AcceptanceProfile
from specsim.simulate.exact import expected_workload
from specsim.workflow import traces_counts
from tests.conftest import TRUE_COST

#: The terms issue 25 asks the model to tell apart, checked together (each at 99.5%: with about a dozen
#: checks at once a calibrated fit misses one of them about 6% of the time, Bonferroni).
RECOVERED = ("b_content", "divergence_slope_finetuned", "b_index_finetuned", "b_position_finetuned")


@pytest.fixture(scope="module")
def recovery_fit():
    counts, truth = synthetic_counts(rng=3, evaluated_per_cell=600, drafting=TRUE_DRAFTING)
    return counts, truth, fit_model(counts, draws=800, tune=700, chains=4, seed=3)


def _interval(result, name: str, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    values = result.idata.posterior[name].values
    values = values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])
    tail = (1 - level) / 2
    return np.quantile(values, tail, axis=0), np.quantile(values, 1 - tail, axis=0)


@pytest.mark.integration
def test_parameter_recovery(recovery_fit):
    # Synthetic counts of two drafter types (a head's acceptance falling with the draft index and past its
    # training window, a lookup's rising), fine-tuned drafters on and off their own task, divergences that do
    # not follow the content match: the index profile of each type, the window (hinge) terms, the content
    # match and the length slope are each recovered, and none is mistaken for another (each true effect away
    # from 0 is resolved with its sign, at 95%). Each task's effect differs between the types (task_type_effect),
    # and each drafter's between the tasks (pair_effect, off every other effect: its fitted pairs as the truth's).
    counts, truth, result = recovery_fit
    assert result.options.content_term and result.options.window_terms and result.options.divergence_terms
    assert result.options.pair_terms and len(result.metadata.pairs) == len(counts.tasks) * len(counts.drafters)
    assert result.metadata.pairs[:2] == [["task0", counts.drafters[0]], ["task0", counts.drafters[1]]]
    assert counts.drafter_types == TYPES
    head, lookup = TYPES.index("feature-head"), TYPES.index("lookup")
    truth = {**truth, "divergence_slope_finetuned": truth["b_divergence"] + truth["b_interaction"]}
    misses = []
    for name in (*RECOVERED, "b_beyond", "b_beyond_finetuned", "index_effect", "task_effect", "task_type_effect",
                 "pair_effect", "sigma_pair"):
        low, high = _interval(result, name, 0.995)
        true = truth[name]
        if name.startswith("b_beyond"):
            low, high, true = low[head], high[head], true[head]  # the lookups have no window: prior only
        if not np.all((low - 1e-12 <= true) & (true <= high + 1e-12)):
            misses.append((name, true, low, high))
    assert not misses, misses
    # Resolved and not confused, at 95%: the content bonus, the generic head's loss per doubling past its
    # window, the fine-tuned drafters' divergence slope, the two index profiles in opposite directions.
    assert _interval(result, "b_content")[0] > 0
    assert _interval(result, "b_beyond")[1][head] < 0
    assert _interval(result, "divergence_slope_finetuned")[1] < 0
    low, high = _interval(result, "index_effect")
    assert high[head, -1] < 0 < low[lookup, -1]
    # Fine-tuned minus generic per type, inside its 99.9% interval. In simulation (12 seeds, before the pair
    # term) its posterior mean sat 0.6 to 0.8 posterior sds below the truth under over-dispersion (not with
    # binomial data), and SBC flagged it for the lookups: a known bias. Its sign is not resolved on this design:
    # it is the contrast at divergence 0 off own content, reached from fine-tuned pairs at divergences 0.2-0.9,
    # and with a pair effect those pairs, not their cells, are its replicates (one generic drafter per type).
    low, high = _interval(result, "b_finetuned", 0.999)
    assert np.all((low <= truth["b_finetuned"]) & (truth["b_finetuned"] <= high)), (low, high)
    low, high = _interval(result, "kappa", 0.995)
    assert low <= truth["kappa"] <= high
    assert result.diagnostics["divergences"] == 0


@pytest.mark.slow
def test_a_model_without_the_window_terms_misreads_the_window():
    # The mutation check of the recovery test: the same counts fitted without window terms put the
    # head's loss past its window somewhere else, and the fit is worse by PSIS-LOO. Two fits of the
    # recovery design (about 2 minutes): `make test-all` runs it, CI's suite does not. Both without the pair
    # term: a drafter's hinge over six tasks is a pattern of its task x drafter pairs, which pair effects
    # partly absorb, and with them PSIS-LOO over cells prefers the window terms by 0.9 elpd (standard
    # error 1.6) on this design: the pair term is what leaves the window's evidence to the pairs.
    import arviz as az

    counts, _ = synthetic_counts(rng=3, evaluated_per_cell=600)
    with_window = fit_model(counts, ModelOptions(pair_terms=False), draws=300, tune=500, chains=2, seed=1)
    without = fit_model(counts, ModelOptions(window_terms=False, pair_terms=False), draws=300, tune=500, chains=2,
                        seed=1)
    comparison = az.compare({"with": with_window.idata, "without": without.idata})
    assert comparison.index[0] == "with"
    assert comparison.loc["without", "elpd_diff"] > 2 * comparison.loc["without", "dse"]


@pytest.mark.integration
def test_baseline_glm_agrees_in_sign(recovery_fit):
    counts, truth, result = recovery_fit
    baseline = fit_baseline(counts, result.options)
    # The GLM pools over tasks and drafters; its fixed effects must agree with the truth in sign.
    assert baseline.loc["b_divergence", "estimate"] + baseline.loc["b_interaction", "estimate"] < 0
    assert baseline.loc["b_content", "estimate"] > 0
    assert baseline.loc["b_beyond[feature-head]", "estimate"] < 0
    assert baseline.loc["b_content", "low"] <= truth["b_content"] <= baseline.loc["b_content", "high"]
    assert set(baseline.columns) == {"estimate", "std_error", "low", "high", "p_value"}


def _true_speedup(truth: dict, counts, prompts: np.ndarray, outputs: np.ndarray, *, drafter: str | None,
                  drafter_type: str, finetuned: bool, divergence: float, window: float | None,
                  task_effect: float = 0.0) -> float:
    """The generating process's speed-up of a workload for a new task (effect ``task_effect``)."""
    from specsim.model.predict import workload_beyond

    n_index, n_bins = truth["index_effect"].shape[-1], len(truth["position_effect"])
    effect = truth["drafter_effect"][counts.drafters.index(drafter)] if drafter else 0.0
    # A new task's pair effect with the drafter is part of ``task_effect``.
    parameters = {**truth, "task_effect": np.array([task_effect]), "drafter_effect": np.array([effect])}
    parameters.pop("pair_effect", None)
    index = np.repeat(np.arange(n_index), n_bins)
    position = np.tile(np.arange(n_bins), n_index)
    beyond = workload_beyond(prompts, outputs, counts.position_edges, window)
    design = {"finetuned": int(finetuned), "drafter_type": np.full(index.size, TYPES.index(drafter_type)),
              "content_match": 0, "divergence": divergence, "beyond": beyond[position], "draft_index": index,
              "position_bin": position, "task": np.zeros(index.size, int), "drafter": np.zeros(index.size, int)}
    rates = expit(linear_predictor(parameters, design, n_index, n_bins)).reshape(n_index, n_bins)
    return expected_workload(AcceptanceProfile(rates, counts.position_edges), TRUE_COST, 4, prompts, outputs).speedup


@pytest.mark.integration
def test_prediction_interval_and_direction(recovery_fit):
    # A new task for the short-window fine-tuned head (window 256) and the generic head (window 512): inside
    # the window, and past it by two to three doublings while the positions stay inside the observed ones.
    # The true speed-up lies in each 90% interval, and the workload past the window is predicted lower where
    # the fit says so: the generic head's loss per doubling (true -0.45) is resolved below 0, and the
    # fine-tuned head's acceptance moves with the sign of its fitted slope (true -0.15, which the pair term
    # leaves to the six tasks' pairs to resolve).
    counts, truth, result = recovery_fit
    posterior = result.posterior()
    head = TYPES.index("feature-head")
    predictions = {}
    for drafter, finetuned, divergence, window in (("head-a", True, 0.5, 256.0), ("head-generic", False, 0.05, 512.0)):
        for name, prompt in (("inside", 100), ("past", 1900)):
            lengths = np.full(30, prompt), np.full(30, 100)
            prediction = predict_speedup(posterior, TRUE_COST, 4, *lengths, finetuned=finetuned, drafter=drafter,
                                         divergence=divergence, rng=0)
            true = _true_speedup(truth, counts, *lengths, drafter=drafter, drafter_type="feature-head",
                                 finetuned=finetuned, divergence=divergence, window=window)
            assert prediction.low < true < prediction.high, (drafter, name, prediction, true)
            assert prediction.extrapolation is None or not prediction.extrapolation.extrapolates
            predictions[drafter, name] = prediction
    assert _interval(result, "b_beyond", 0.9)[1][head] < 0
    generic_inside, generic_past = predictions["head-generic", "inside"], predictions["head-generic", "past"]
    assert generic_past.mean < generic_inside.mean
    assert generic_past.acceptance_index0_mean < generic_inside.acceptance_index0_mean
    slope = float(np.mean(result.idata.posterior["beyond_slope_finetuned"].values[..., head]))
    past, inside = predictions["head-a", "past"], predictions["head-a", "inside"]
    moved = past.acceptance_index0_mean - inside.acceptance_index0_mean
    assert np.sign(moved) == np.sign(slope), (moved, slope)
    assert predictions["head-a", "past"].beyond_window_max == pytest.approx(np.log2((1900 + 99) / 256), abs=0.05)
    # The lookup drafters have no window: the two workloads' acceptance is the same (their speed-ups differ
    # only through the costs of longer contexts).
    lookups = [predict_speedup(posterior, TRUE_COST, 4, np.full(30, prompt), np.full(30, 100), finetuned=True,
                               drafter="lookup-a", divergence=0.5, rng=0) for prompt in (100, 1900)]
    assert lookups[0].acceptance_index0_mean == pytest.approx(lookups[1].acceptance_index0_mean, rel=1e-12)
    assert lookups[0].beyond_window_max == lookups[1].beyond_window_max == 0.0


@pytest.mark.integration
def test_a_fitted_drafter_trained_on_nothing_is_predicted_at_divergence_zero(recovery_fit):
    # Prompt lookup has no training lengths: its cells were fitted at divergence 0, so a prediction for
    # it without a divergence uses 0 (the main report asks this of every fitted drafter); a drafter
    # the fit does not know still needs a divergence or training lengths.
    import dataclasses

    from specsim.errors import InputError

    _, _, result = recovery_fit
    posterior = result.posterior()
    meta = dataclasses.replace(posterior.metadata, reference_lengths={
        d: v for d, v in posterior.metadata.reference_lengths.items() if d != "lookup-a"})
    untrained = dataclasses.replace(posterior, metadata=meta)
    lengths = np.full(30, 300), np.full(30, 100)
    implied = predict_speedup(untrained, TRUE_COST, 4, *lengths, finetuned=True, drafter="lookup-a", rng=0)
    explicit = predict_speedup(untrained, TRUE_COST, 4, *lengths, finetuned=True, drafter="lookup-a",
                               divergence=0.0, rng=0)
    assert implied.divergence == 0.0
    assert implied.mean == pytest.approx(explicit.mean, rel=1e-12)
    with pytest.raises(InputError, match="give a divergence"):
        predict_speedup(untrained, TRUE_COST, 4, *lengths, finetuned=True, drafter="no-such-drafter",
                        drafter_type="lookup", rng=0)


@pytest.mark.integration
def test_simulation_based_calibration():
    # The model build_model returns (every term, per-prompt concentration), on a design of two drafter types.
    # A small configuration (40 fits, about 3 minutes here); `python benchmarks/bench_sbc.py` runs 200.
    result = simulation_based_calibration(40, seed=11)
    assert len(result.ranks) == 40
    checked = set(result.p_values)
    assert {"b_content", "b_beyond[feature-head]", "b_finetuned[lookup]", "type_effect[lookup]", "kappa"} <= checked
    # About 15 rank histograms at alpha = 0.001 each: false failure rate about 1.5%.
    assert all(p > 1e-3 for p in result.p_values.values()), result.p_values


@pytest.mark.integration
def test_simulation_based_calibration_of_the_chance_of_drafting():
    # The chance-of-drafting model build_drafting_model returns, on six tasks x three lookups x gammas 2 and 8
    # x three position bins, its context slopes, gamma slope and position walk included (two gammas keep the
    # test's time; `benchmarks/bench_sbc.py --part drafting` checks the default design of three at 200 draws).
    from specsim.model.calibration import drafting_calibration
    from specsim.model.synthetic_counts import TRUE_DRAFTING, synthetic_counts

    cells = synthetic_counts(rng=5, drafting=TRUE_DRAFTING, drafting_gammas=(2, 8))[0].drafting
    result = drafting_calibration(40, cells=cells, seed=5)
    assert set(result.p_values) == {"draft_intercept", "sigma_draft_task", "sigma_draft_drafter", "sigma_draft_pair",
                                    "draft_b_context", "sigma_draft_context", "draft_b_gamma", "sigma_draft_position",
                                    "draft_kappa"}
    # Nine rank histograms at alpha = 0.001 each: false failure rate about 0.9%.
    assert all(p > 1e-3 for p in result.p_values.values()), result.p_values


def test_the_log_density_digamma_is_scipys_and_can_be_cached():
    # The beta-binomial gradient's digamma: SciPy's own values to the last bit (poles, infinities and NaN
    # included), and a graph that holds it gets a cache key, so Numba can load it from disk next time.
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key
    from scipy.special import psi

    from specsim.model.backend import configure_pytensor

    configure_pytensor()
    x = pt.dvector("x")
    digamma = pytensor.function([x], pt.psi(x), mode="NUMBA")
    values = np.concatenate([np.linspace(-10.5, 60.0, 3001), [1e-300, 1e6, 0.0, -1.0, -np.inf, np.inf, np.nan]])
    assert np.array_equal(digamma(values), psi(values), equal_nan=True)
    graph = digamma.maker.fgraph
    assert any("Psi" in str(node.op) for node in graph.toposort())
    assert numba_funcify_and_cache_key(FunctionGraph(graph.inputs, graph.outputs, clone=True))[1] is not None
    if int(pytensor.__version__.split(".")[0]) < 3:  # a float32 digamma keeps PyTensor's own (uncached) one
        y = pt.fvector("y")
        assert np.allclose(pytensor.function([y], pt.psi(y), mode="NUMBA")(np.float32([0.5, 3.0])),
                           psi(np.float32([0.5, 3.0])))


def test_model_cells_covariates(two_kind_traces):
    from specsim.traces import read_traces

    root, tables = two_kind_traces
    counts, notes = model_cells(*traces_counts(read_traces(root)))
    cells = counts.cells
    assert notes == []
    assert cells["evaluated"].sum() == tables["tokens"]["evaluated"].sum()
    ft = cells[cells["drafter"] == "ft-short"].groupby("task")["divergence"].first()
    assert ft["short"] == 0.0 and ft["long"] > ft["mid"] > 0  # the fine-tuned drafter's own task is its reference
    generic = cells[cells["drafter"] == "generic"].groupby("task")["divergence"].first()
    assert generic.max() < ft["long"]
    # Own content: ft-short on its task only; the generic (mixture) drafter on every task.
    match = cells.groupby(["drafter", "task"])["content_match"].first()
    assert match["ft-short"].to_dict() == {"long": 0, "mid": 0, "short": 1}
    assert set(match["generic"]) == {1}
    # Past the window: ft-short was trained on short sequences, so the long task's contexts lie beyond them.
    window = counts.windows["ft-short"]
    assert window == tables["sequences"].query("task == 'short'").eval("prompt_len + output_len").max()
    beyond = cells[cells["drafter"] == "ft-short"].groupby("task")["beyond"].mean()
    assert beyond["short"] == 0.0 and beyond["long"] > beyond["mid"] > 0
    # Contexts are the mean over evaluated tokens of the steps' contexts; prompts count the sequences behind.
    steps = tables["steps"]
    ft_long = steps[(steps["drafter"] == "ft-short") & (steps["task"] == "long")]
    assert cells.query("drafter == 'ft-short' and task == 'long'")["prompts"].max() == ft_long["prompt_id"].nunique()
    assert cells["drafter_type"].unique().tolist() == ["model"]


@pytest.mark.integration
def test_cli_fit_and_predict(two_kind_traces, two_kind_fit, tmp_path, capsys):
    root, _ = two_kind_traces
    out, payload = two_kind_fit  # `specsim fit --json`, 2 chains x 300 draws, no comparison
    assert payload["sampler"] == "nutpie" and out.exists()
    assert {row["term"] for row in payload["baseline_glm"]} >= {"intercept", "b_finetuned[model]"}
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
    # Task effects sum to zero in every draw, drafter effects within each kind and type (a generic drafter
    # alone in its type: 0), and a new task's or drafter's effect is widened by the population mean's
    # uncertainty.
    from specsim.model.predict import new_member_scale

    counts, truth, result = recovery_fit
    post = result.idata.posterior
    np.testing.assert_allclose(post["task_effect"].values.sum(axis=-1), 0.0, atol=1e-9)
    np.testing.assert_allclose(post["type_effect"].values.sum(axis=-1), 0.0, atol=1e-9)
    for pair in (["head-a", "head-b"], ["lookup-a", "lookup-b"]):
        np.testing.assert_allclose(post["drafter_effect"].sel(drafter=pair).values.sum(axis=-1), 0.0, atol=1e-9)
    for alone in ("head-generic", "lookup-generic"):
        np.testing.assert_allclose(post["drafter_effect"].sel(drafter=alone).values, 0.0, atol=1e-12)
    assert new_member_scale(result.metadata, len(counts.tasks)) == pytest.approx(np.sqrt(1 + 1 / 6))
    assert new_member_scale(result.metadata, 0) == 1.0
    # The drafters' effects within their groups are recovered (99%).
    low, high = _interval(result, "drafter_effect", 0.99)
    assert np.all((low <= truth["drafter_effect"] + 1e-12) & (truth["drafter_effect"] <= high + 1e-12))


def test_build_model_without_divergence_terms():
    counts, _ = synthetic_counts(rng=0, n_tasks=3)
    from specsim.model import build_model

    model = build_model(counts, ModelOptions(divergence_terms=False, overdispersion=False))
    names = {v.name for v in model.free_RVs}
    assert "b_divergence" not in names and "kappa" not in names and "b_finetuned" in names
    assert {"b_content", "b_beyond", "b_beyond_finetuned", "type_effect"} <= names
    assert model.named_vars_to_dims["b_finetuned"] == ("drafter_type",) and len(model.coords["drafter_type"]) == 2


def test_the_centred_form_centres_task_and_drafter_effects():
    # Centred (or auto on millions of tokens): task and drafter effects are sampled directly, each drafter kind
    # and type of two or more its own zero-sum normal; non-centred: both as sigma * z.
    from specsim.model import build_model

    counts, _ = synthetic_counts(rng=0, n_tasks=3)
    names = {v.name for v in build_model(counts, ModelOptions(parameterisation="centred")).free_RVs}
    assert "task_effect_kind0" in names
    assert len([n for n in names if n.startswith("drafter_effect_kind")]) == 2  # the two fine-tuned pairs
    assert not {"drafter_z", "task_z"} & names
    names = {v.name for v in build_model(counts, ModelOptions(parameterisation="noncentred")).free_RVs}
    assert {"drafter_z", "task_z"} <= names and not any(n.startswith("drafter_effect_kind") for n in names)


@pytest.mark.integration
def test_prediction_reproduces_the_fitted_cell_acceptance(recovery_fit):
    # The one linear predictor: acceptance_draws for a fitted task and drafter must equal the
    # model's own "acceptance" deterministic for that cell, draw by draw.
    from specsim.model.predict import acceptance_draws, drafter_spec

    counts, _, result = recovery_fit
    posterior = result.posterior()
    fitted = result.idata.posterior["acceptance"].values.reshape(posterior.n_draws, -1)
    cells = counts.cells
    for row in cells.sample(16, random_state=0).itertuples():
        spec = drafter_spec(posterior.metadata, finetuned=bool(row.finetuned), drafter=row.drafter, task=row.task)
        assert spec.own_content == bool(row.content_match) and spec.drafter_type == row.drafter_type
        beyond = np.zeros(counts.n_position_bins)
        beyond[row.position_bin] = row.beyond
        rates = acceptance_draws(posterior, spec, divergence=row.divergence, task=row.task, beyond=beyond, rng=0)
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
    old.posterior.attrs["specsim_metadata"] = result.metadata.to_json().replace('"version": 3', '"version": 2')
    old.to_netcdf(str(tmp_path / "old.nc"))
    with pytest.raises(InputError, match="version 2"):
        load_posterior(tmp_path / "old.nc")


@pytest.mark.integration
def test_probe_moves_a_new_domain_prediction_to_the_truth(recovery_fit):
    # A new task far below the task population (effect -2.5 on the logit scale): without a probe the
    # prediction assumes a typical task; a 10-prompt probe of this drafter's agreement pulls it to the truth.
    counts, truth, result = recovery_fit
    posterior = result.posterior()
    rng = np.random.default_rng(5)
    n_index, n_bins = truth["index_effect"].shape[-1], len(truth["position_effect"])
    parameters = {**truth, "task_effect": np.array([-2.5]), "drafter_effect": np.zeros(1)}
    parameters.pop("pair_effect")  # a new task's pair effect with the drafter is part of its -2.5
    index = np.repeat(np.arange(n_index), n_bins)
    design = {"finetuned": 1, "drafter_type": np.zeros(index.size, int), "content_match": 0, "divergence": 0.3,
              "beyond": np.zeros(index.size), "draft_index": index, "position_bin": np.tile(np.arange(n_bins), n_index),
              "task": np.zeros(index.size, int), "drafter": np.zeros(index.size, int)}
    rates = expit(linear_predictor(parameters, design, n_index, n_bins)).reshape(n_index, n_bins)
    edges = counts.position_edges
    lengths = np.full(30, 150), np.full(30, 150)
    true = expected_workload(AcceptanceProfile(rates, edges), TRUE_COST, 4, *lengths).speedup
    positions = np.tile(np.arange(150), 10)
    bins = np.searchsorted(edges, positions, side="right")
    probe = pd.DataFrame({"task": "new", "drafter": "head-new", "prompt_id": np.repeat(np.arange(10), 150).astype(str),
                          "position": positions, "context_len": positions + 150,
                          "agree": rng.random(positions.size) < rates[0, bins]})
    # One case checks a 99% interval (a 90% one misses a calibrated truth one time in ten).
    common = dict(finetuned=True, drafter_type="feature-head", divergence=0.3, rng=0, level=0.99)
    blind = predict_speedup(posterior, TRUE_COST, 4, *lengths, **common)
    probed = predict_speedup(posterior, TRUE_COST, 4, *lengths, probe=probe, **common)
    assert probed.low < true < probed.high, (probed, true)
    assert abs(probed.mean - true) / true < 0.1
    assert abs(probed.mean - true) < abs(blind.mean - true)
    # The costs' spread between collection runs widens the interval around the same centre.
    spread = predict_speedup(posterior, TRUE_COST, 4, *lengths, probe=probe, cost_log_sd=0.05, **common)
    assert spread.high - spread.low > probed.high - probed.low
    assert spread.median == pytest.approx(probed.median, rel=0.03)


@pytest.mark.integration
def test_the_chance_of_drafting_is_recovered(recovery_fit):
    # The lookups of the synthetic counts draft nothing at some steps, more often with longer context
    # and later in the output, less often at a longer gamma: the drafting part's intercept, task, drafter and
    # pair effects, context slopes, gamma slope and position walk are each recovered (99.5%: 36 checks at once);
    # kappa is its prior's.
    from specsim.model.drafting import drafting_pairs

    counts, truth, result = recovery_fit
    lookups = sorted(d for d in counts.drafters if d.startswith("lookup"))
    assert result.metadata.drafting_drafters == lookups and result.metadata.drafting_tasks == counts.tasks
    assert result.diagnostics["passed"], result.diagnostics["warnings"]
    assert result.metadata.drafting_pairs == drafting_pairs(counts.drafting)
    for name in ("draft_intercept", "draft_task_effect", "draft_drafter_effect", "draft_pair_effect",
                 "draft_b_context", "draft_context_slope", "draft_b_gamma", "draft_position_effect"):
        low, high = _interval(result, name, 0.995)
        assert np.all((low <= truth[name]) & (truth[name] <= high)), (name, low, truth[name], high)


@pytest.mark.integration
def test_a_lookup_is_predicted_with_its_chance_of_drafting(recovery_fit, tmp_path):
    # A fitted lookup on a fitted task drafts with the fit's own chance, draw by draw; a head always
    # drafts. A new task far below the population (true chance 0.2): a 10-prompt probe with its empty
    # steps moves the chance to the truth, and the speed-up interval covers the generating process's.
    from specsim.model.drafting import draft_hazards, drafting_pairs
    from specsim.model.predict import draft_chance_draws, drafter_spec, workload_context

    counts, truth, result = recovery_fit
    posterior = load_posterior(result.save(tmp_path / "p.nc"))  # the drafting draws travel in the file
    d, meta = posterior.draws, posterior.metadata
    spec = drafter_spec(meta, finetuned=True, drafter="lookup-a", task="task3")
    context = np.array([300.0, 700.0, 2000.0])
    chance = draft_chance_draws(posterior, spec, task="task3", rng=0, context=context)
    column = meta.drafting_drafters.index("lookup-a")
    expected = expit((d["draft_intercept"] + d["draft_drafter_effect"][:, column]
                      + d["draft_task_effect"][:, meta.drafting_tasks.index("task3")]
                      + d["draft_pair_effect"][:, meta.drafting_pairs.index(["task3", "lookup-a"])])[:, None]
                     + d["draft_context_slope"][:, [column]] * np.log2(context / 256.0)[None, :]
                     + d["draft_position_effect"])
    np.testing.assert_allclose(chance, expected, rtol=1e-12)
    # At gamma 8 the fit's gamma slope enters once per doubling from 4, draw by draw.
    at_gamma8 = draft_chance_draws(posterior, spec, task="task3", rng=0, context=context, gamma=8)
    np.testing.assert_allclose(at_gamma8, expit(logit(expected) + d["draft_b_gamma"][:, None]), rtol=1e-10)
    assert at_gamma8.mean() < chance.mean()  # the truth's slope is -0.2 per doubling
    assert draft_chance_draws(posterior, drafter_spec(meta, finetuned=True, drafter="head-a"), task="task3") is None

    rng = np.random.default_rng(11)
    effect = truth["draft_drafter_effect"][meta.drafting_drafters.index("lookup-a")]
    true_chance = 0.2
    prompt_chance = rng.beta(true_chance * truth["draft_kappa"], (1 - true_chance) * truth["draft_kappa"], 10)
    drafted = rng.random((10, 60)) < prompt_chance[:, None]
    probe = pd.DataFrame({"task": "new", "drafter": "lookup-a", "prompt_id": np.repeat(np.arange(10), 60).astype(str),
                          "position": np.tile(np.arange(60), 10), "context_len": np.tile(np.arange(60), 10) + 100,
                          "agree": drafted.reshape(-1) & (rng.random(600) < 0.5), "drafted": drafted.reshape(-1)})
    blind = draft_chance_draws(posterior, spec, probe=None, rng=0)[:, 0]  # the probe's steps are in the first bin
    probed = draft_chance_draws(posterior, spec, probe=probe, rng=0)[:, 0]
    low, high = np.quantile(probed, [0.005, 0.995])
    assert low < true_chance < high and abs(probed.mean() - true_chance) < abs(blind.mean() - true_chance)
    # The speed-up of a fitted task: the generating process's acceptance and chance, inside the interval.
    lengths = np.full(30, 150), np.full(30, 150)
    cell = counts.cells[(counts.cells["drafter"] == "lookup-a") & (counts.cells["task"] == "task3")]
    divergence = float(cell["divergence"].iloc[0])
    prediction = predict_speedup(posterior, TRUE_COST, 4, *lengths, finetuned=True, drafter="lookup-a", task="task3",
                                 divergence=divergence, rng=0, level=0.99)
    pair = drafting_pairs(counts.drafting).index(["task3", "lookup-a"])
    workload_bins, reached = workload_context(*lengths, counts.position_edges)
    true_chance = expit(truth["draft_intercept"] + truth["draft_task_effect"][3] + effect
                        + truth["draft_pair_effect"][pair] + truth["draft_context_slope"][column]
                        * np.log2(workload_bins / 256.0) + truth["draft_position_effect"])
    n_index, n_bins = truth["index_effect"].shape[-1], len(truth["position_effect"])
    index = np.repeat(np.arange(n_index), n_bins)
    design = {"finetuned": 1, "drafter_type": np.full(index.size, TYPES.index("lookup")), "content_match": 0,
              "divergence": divergence,
              "beyond": np.zeros(index.size), "draft_index": index, "position_bin": np.tile(np.arange(n_bins), n_index),
              "task": np.full(index.size, 3), "drafter": np.full(index.size, counts.drafters.index("lookup-a")),
              "pair": np.full(index.size, 3 * len(counts.drafters) + counts.drafters.index("lookup-a"))}
    rates = expit(linear_predictor(truth, design, n_index, n_bins)).reshape(n_index, n_bins)
    hazards = draft_hazards(true_chance, n_bins)
    true = expected_workload(AcceptanceProfile(rates, counts.position_edges, hazards, hazards), TRUE_COST, 4,
                             *lengths).speedup
    always = expected_workload(AcceptanceProfile(rates, counts.position_edges), TRUE_COST, 4, *lengths).speedup
    assert prediction.low < true < prediction.high and not prediction.low < always < prediction.high
    assert prediction.draft_chance_mean == pytest.approx(np.average(true_chance, weights=reached), abs=0.1)


def test_a_probe_from_lookup_traces_carries_the_steps_that_drafted_nothing(tmp_path):
    # Three steps of one sequence: drafted 2 (one accepted), drafted nothing, drafted 1 (accepted). The
    # probe has one row per step at the step's start position; the empty step is drafted 0, agree 0.
    from specsim.collect.probe import read_probe
    from specsim.errors import InputError
    from specsim.workflow import probe_from_traces

    key = {"run_id": "r", "prompt_id": "p0", "task": "t", "drafter": "lookup", "gamma": 2, "schedule": "constant",
           "temperature": 0.0}
    steps = pd.DataFrame([{**key, "step": 0, "context_len": 10, "n_asked": 2, "n_drafted": 2, "n_accepted": 1,
                           "n_emitted": 2},
                          {**key, "step": 1, "context_len": 12, "n_asked": 2, "n_drafted": 0, "n_accepted": 0,
                           "n_emitted": 1},
                          {**key, "step": 2, "context_len": 13, "n_asked": 2, "n_drafted": 1, "n_accepted": 1,
                           "n_emitted": 2}])
    tokens = pd.DataFrame([{**key, "step": s, "draft_index": i, "position": p, "context_len": c, "evaluated": True,
                            "accepted": a} for s, i, p, c, a in ((0, 0, 0, 10, True), (0, 1, 1, 11, False),
                                                                 (2, 0, 3, 13, True))])
    probe = probe_from_traces(tokens, ["p0"], steps)
    assert probe["position"].tolist() == [0, 2, 3] and probe["drafted"].tolist() == [True, False, True]
    assert probe["agree"].tolist() == [True, False, True]
    path = tmp_path / "probe.parquet"
    probe.to_parquet(path)
    assert len(read_probe(path)) == 3
    probe.loc[1, "agree"] = True  # agreement on a step that drafted nothing is refused
    probe.to_parquet(path)
    with pytest.raises(InputError, match="drafted nothing"):
        read_probe(path)


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


@pytest.mark.integration
def test_length_effects_by_type_read_the_window_slopes(recovery_fit):
    # The answer per type: the generic head loses speed-up past its window (the truth: -0.45 logit per
    # doubling), the fine-tuned head less (-0.15); the lookups have no window, so their ratio is no
    # measurement and says so.
    from specsim.workflow import length_effects_by_type
    from specsim.workload import Workload

    _, truth, result = recovery_fit
    workload = Workload(np.full(20, 300), np.full(20, 120), "w", "file")
    effects = length_effects_by_type(result.posterior(), workload=workload, gamma=4, cost=TRUE_COST, n_draws=100)
    rows = effects.set_index(["drafter_type", "drafter_kind"])
    generic, finetuned = rows.loc[("feature-head", "generic")], rows.loc[("feature-head", "finetuned")]
    assert generic["window_measured"] and generic["per_doubling_high"] < 1
    assert generic["per_doubling"] < finetuned["per_doubling"] < 1
    assert generic["beyond_slope"] == pytest.approx(truth["b_beyond"][0], abs=0.1)
    assert not rows.loc[("lookup", "generic"), "window_measured"]
    # Fine-tuned drafters lose more per unit of divergence (truth -1.4 against -0.8 logit).
    assert finetuned["per_divergence_step"] < generic["per_divergence_step"] < 1
    # The lookups draft more often with more context (truth +0.4 logit per doubling): doubling every
    # bin's context moves a new lookup's speed-up (up or down, as its drafts pay or not under these
    # costs); a head always drafts, so its ratio is exactly 1 and says so.
    for kind in ("generic", "finetuned"):
        lookup = rows.loc[("lookup", kind)]
        assert lookup["draft_context_terms"]
        assert lookup["per_context_doubling_high"] - lookup["per_context_doubling_low"] > 0.01
        assert lookup["draft_context_slope"] == pytest.approx(truth["draft_b_context"], abs=0.3)
        head = rows.loc[("feature-head", kind)]
        assert not head["draft_context_terms"] and head["per_context_doubling"] == 1


def test_a_failing_gate_names_its_worst_variable():
    # Four chains of two variables: "stuck" has one chain shifted away (R-hat far above 1.01, low ESS),
    # "fine" mixes. The gate fails, and each failed check names "stuck", not "fine".
    import arviz as az

    from specsim.model.hierarchical import diagnose

    rng = np.random.default_rng(0)
    stuck = rng.normal(size=(4, 500))
    stuck[0] += 3.0
    idata = az.from_dict(posterior={"stuck": stuck, "fine": rng.normal(size=(4, 500))},
                         sample_stats={"diverging": np.zeros((4, 500), dtype=bool)})
    result = diagnose(idata)
    assert not result["passed"] and result["max_r_hat"] > 1.1
    rhat = [w for w in result["warnings"] if w.startswith("R-hat")]
    assert len(rhat) == 1 and rhat[0].endswith("(stuck)")
    assert all("(stuck)" in w for w in result["warnings"] if "ESS" in w)

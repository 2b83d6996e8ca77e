"""Speed-up under load: batch-size cost models, the roofline, break-even concurrency, batch 1 unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import InputError
from specsim.simulate import AcceptanceProfile
from specsim.simulate.cost import COST_PROFILE_FORMAT, CostModel, read_cost_profile, read_cost_profile_batches
from specsim.simulate.exact import expected_workload
from specsim.simulate.load import (
    Roofline,
    break_even_concurrency,
    cost_model_at_concurrency,
    fit_roofline,
    roofline_cost_models,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "data" / "traces" / "reference"


def _write_profile(path: Path, models: dict[int, CostModel]) -> Path:
    path.write_text(json.dumps({"format": COST_PROFILE_FORMAT, "version": 2, "cost_model": models[1].to_dict(False),
                                "cost_models_by_batch": {str(b): m.to_dict(False) for b, m in models.items()}}))
    return path


def test_roofline_fit_recovers_a_known_roofline():
    truth = Roofline(floor_s=0.02, per_token_s=0.0004)  # knee at 50 tokens
    tokens = np.array([1, 2, 4, 8, 16, 20, 40, 64, 80, 128, 160, 320])
    fitted = fit_roofline(tokens, truth.seconds(tokens))
    assert fitted.floor_s == pytest.approx(truth.floor_s, rel=1e-9)
    assert fitted.per_token_s == pytest.approx(truth.per_token_s, rel=1e-9)
    assert fitted.knee_tokens == pytest.approx(50)


def test_known_roofline_gives_the_known_break_even_concurrency():
    """A free drafter with tokens per step tau crosses 1 at B = tau * knee / (gamma + 1)."""
    gamma, alpha = 4, 0.8
    roofline = Roofline(floor_s=0.02, per_token_s=0.0002)  # knee 100 tokens per pass
    concurrencies = np.arange(1, 201)
    models = roofline_cost_models(roofline, None, [gamma], list(concurrencies))
    profile = AcceptanceProfile.constant(alpha)
    prompts, outputs = np.full(50, 100), np.full(50, 4000)  # long outputs: few budget-capped end steps
    speedups, taus = [], []
    for size in concurrencies:
        prediction = expected_workload(profile, models[int(size)], gamma, prompts, outputs)
        speedups.append(prediction.speedup)
        taus.append(prediction.tokens_per_step)
    tau = float(np.mean(taus))
    assert tau == pytest.approx((1 - alpha ** (gamma + 1)) / (1 - alpha), rel=0.01)
    # Memory-bound verification (B (gamma + 1) below the knee): the speed-up is tau itself.
    assert speedups[0] == pytest.approx(tau, rel=5e-3)
    expected = tau * roofline.knee_tokens / (gamma + 1)
    assert break_even_concurrency(concurrencies, np.array(speedups)) == pytest.approx(expected, rel=0.01)
    # Past the knee for plain steps too, the speed-up settles at tau / (gamma + 1).
    assert speedups[-1] == pytest.approx(tau / (gamma + 1), rel=5e-3)


def test_concurrency_picks_measured_interpolates_between_and_refuses_outside():
    models = roofline_cost_models(Roofline(0.02, 0.001), None, [2, 4], [1, 4, 16])
    assert cost_model_at_concurrency(models, 4) is models[4]
    between = cost_model_at_concurrency(models, 10)
    weight = (10 - 4) / (16 - 4)
    assert between.target_base_s == pytest.approx((1 - weight) * models[4].target_base_s
                                                  + weight * models[16].target_base_s)
    assert between.verify_table[4] == pytest.approx((1 - weight) * models[4].verify_table[4]
                                                    + weight * models[16].verify_table[4])
    with pytest.raises(InputError, match=r"outside the measured batch sizes \(1, 4, 16\)"):
        cost_model_at_concurrency(models, 32)
    with pytest.raises(InputError, match="batch size 1 only"):
        cost_model_at_concurrency({1: models[1]}, 2)


def test_profile_versions_read_alike_at_batch_1(tmp_path):
    """A version-1 profile, a bare model and a version-2 profile give batch size 1 the same model."""
    model = CostModel(draft_base_s=0.002, verify_base_s=0.03, target_base_s=0.025, verify_table={4: 0.04})
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({"format": COST_PROFILE_FORMAT, "version": 1, "cost_model": model.to_dict(False)}))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(model.to_dict(False)))
    new = _write_profile(tmp_path / "v2.json", {1: model, 8: CostModel(target_base_s=0.05)})
    assert read_cost_profile(old) == read_cost_profile(bare) == read_cost_profile(new) == model
    assert sorted(read_cost_profile_batches(new)) == [1, 8] and read_cost_profile_batches(old) == {1: model}


def _whatif_json(capsys, *extra: str) -> dict:
    argv = ["simulate", "whatif", "--traces", str(REFERENCE), "--drafter", "generic-4l", "--acceptance-from", "code",
            "--lengths-from", "docsum", "--resamples", "20", "--json", *extra]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_batch_1_answers_are_unchanged_on_the_shipped_traces(tmp_path, capsys):
    """--concurrency 1 is today's answer, number for number, with the traces' costs and with a profile."""
    plain = _whatif_json(capsys)
    at_one = _whatif_json(capsys, "--concurrency", "1")
    assert at_one.pop("concurrency") == plain.pop("concurrency") == 1
    assert at_one == plain
    models = roofline_cost_models(Roofline(0.03, 0.002), Roofline(0.004, 0.0001), [4], [1, 2, 8])  # knee 15
    profile = _write_profile(tmp_path / "profile.json", models)
    single = tmp_path / "single.json"
    single.write_text(json.dumps(models[1].to_dict(False)))
    batched, alone = _whatif_json(capsys, "--cost-profile", str(profile), "--concurrency", "1"), _whatif_json(
        capsys, "--cost-profile", str(single))
    assert batched["speedup"] == alone["speedup"] and batched["speedup_low"] == alone["speedup_low"]
    at_eight = _whatif_json(capsys, "--cost-profile", str(profile), "--concurrency", "8")
    assert at_eight["speedup"] < batched["speedup"]  # verification of 5 tokens per request has passed the knee


def test_load_sweep_on_the_shipped_traces(tmp_path, capsys):
    """simulate load: best gamma per concurrency and the break-even load, from a roofline profile."""
    sizes = [1, 2, 4, 8, 16, 32, 64]
    models = roofline_cost_models(Roofline(0.03, 0.0003), None, list(range(1, 9)), sizes, draft_step_s=1e-4)
    profile = _write_profile(tmp_path / "profile.json", models)
    argv = ["simulate", "load", "--traces", str(REFERENCE), "--drafter", "finetuned-code", "--acceptance-from",
            "code", "--lengths-from", "code", "--cost-profile", str(profile), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    best = result["best_by_concurrency"]
    assert [row["concurrency"] for row in best] == sizes
    speedups = [row["speedup"] for row in best]
    assert speedups[0] > 1 and speedups[-1] < 1 and speedups == sorted(speedups, reverse=True)
    gammas = [row["gamma"] for row in best]
    assert gammas == sorted(gammas, reverse=True) and gammas[0] > gammas[-1]  # shorter drafts under load
    assert sizes[0] < result["break_even_concurrency"] < sizes[-1]
    assert main(argv[:-1]) == 0 and "break-even concurrency" in capsys.readouterr().out
    # A dip below 1 that recovers is not the break-even load: the last crossing is.
    dip = break_even_concurrency(np.array([1, 2, 4, 8]), np.array([0.9, 1.2, 1.1, 0.8]))
    assert dip == pytest.approx(4 + 0.1 / 0.3 * 4)
    assert break_even_concurrency(np.array([1, 2]), np.array([0.9, 0.8])) is None


def test_profile_measures_batch_sizes(tmp_path, smol_tokenizer, capsys):
    """`specsim profile --batch-size 1,2,4` on real (tiny) models: one cost model per size, a roofline, ratios."""
    from tests.models import save_tiny_drafter

    target = save_tiny_drafter(tmp_path / "target", smol_tokenizer, seed=0)
    out = tmp_path / "profile.json"
    assert main(["profile", "--target", str(target), "--drafter", "prompt-lookup", "--out", str(out), "--gamma", "2",
                 "--context", "16", "--context", "64", "--repeats", "2", "--batch-size", "1,2", "--batch-size", "4",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batch_sizes"] == [1, 2, 4] and summary["target_roofline"]["floor_s"] > 0
    models = read_cost_profile_batches(out)
    assert sorted(models) == [1, 2, 4] and models[1] == read_cost_profile(out)
    # A lookup step at batch B is B searches.
    assert all(model.draft_step_s > 0 for model in models.values())
    assert set(summary["verify_over_plain_by_batch"]) == {"1", "2", "4"}

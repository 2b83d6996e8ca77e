"""Importers and counts tables: each source's own summary numbers come back, bad files are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specsim.cli import main
from specsim.engines import import_source
from specsim.errors import InputError
from specsim.glossary import undefined_keys
from specsim.lengths import length_table
from specsim.model import model_cells
from specsim.simulate.acceptance import profile_from_counts_table, profile_from_tokens
from specsim.simulate.exact import expected_workload
from specsim.traces import read_traces
from specsim.traces.counts import counts_from_traces, read_counts, read_counts_lengths, summarize_counts, write_counts
from tests.conftest import TRUE_COST

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = {"task": "chat", "drafter": "d", "drafter_kind": "generic", "trained_on": None, "temperature": 0.0}


def test_vllm_counters_round_trip_exactly():
    counts = import_source("vllm", FIXTURES / "vllm_metrics.txt", gamma=None, **KEYS).counts
    summary = summarize_counts(counts).iloc[0]
    # vLLM's own figures: mean acceptance length 1 + accepted / drafts, rate accepted / draft tokens.
    assert summary["tokens_per_step"] == pytest.approx(1 + 1900 / 1000)
    assert summary["acceptance_rate"] == pytest.approx(1900 / 3000)
    assert counts["gamma"].iloc[0] == 3 and counts["evaluated"].tolist() == [1000, 800, 640]
    # Conditional rates from unconditional per-position counts (prefix acceptance).
    profile, resolved = profile_from_counts_table(counts)
    assert resolved
    np.testing.assert_allclose(profile.rates[:, 0], [(800.5) / 1001, 640.5 / 801, 460.5 / 641])


def test_specbench_accept_lengths_round_trip():
    counts = import_source("specbench", FIXTURES / "specbench_answers.jsonl", gamma=None, **KEYS).counts
    lengths = [1, 3, 5, 1, 1, 2, 4, 1, 2, 2, 3, 2]
    summary = summarize_counts(counts).iloc[0]
    assert summary["tokens_per_step"] == pytest.approx(np.mean(lengths))  # Spec-Bench's "#Mean accepted tokens"
    assert counts["gamma"].iloc[0] == 4 and counts["steps"].iloc[0] == 12
    assert counts["output_tokens"].iloc[0] == 27


def test_sglang_totals_round_trip():
    counts = import_source("sglang", FIXTURES / "sglang_meta_info.jsonl", gamma=4, **KEYS).counts
    summary = summarize_counts(counts).iloc[0]
    assert summary["tokens_per_step"] == pytest.approx((96 + 64) / (40 + 20))  # spec_accept_length, pooled
    assert summary["acceptance_rate"] == pytest.approx((56 + 44) / (160 + 80))
    profile, resolved = profile_from_counts_table(counts)
    assert not resolved
    rate = profile.rates[0, 0]
    assert (1 - rate**5) / (1 - rate) == pytest.approx(summary["tokens_per_step"], rel=1e-6)


def test_traces_aggregated_to_counts_give_the_same_expectation(synthetic_tables):
    tokens, steps, sequences = (synthetic_tables[name] for name in ("tokens", "steps", "sequences"))
    code = [frame[frame["task"] == "code"] for frame in (tokens, steps, sequences)]
    counts = counts_from_traces(*code)
    from_counts, _ = profile_from_counts_table(counts)
    # The counts keep the position ranges, and the profile honours them (not pooled over positions).
    assert counts["position_start"].nunique() > 1 and from_counts.rates.shape[1] == counts["position_start"].nunique()
    edges = np.sort(counts["position_start"].unique())[1:]
    from_tokens = profile_from_tokens(code[0], gamma=4, position_edges=edges, steps=code[1])
    np.testing.assert_allclose(from_counts.rates, from_tokens.rates)
    np.testing.assert_array_equal(from_counts.position_edges, from_tokens.position_edges)
    pooled, _ = profile_from_counts_table(counts.assign(position_start=np.nan, position_stop=np.nan))
    assert pooled.rates.shape[1] == 1
    lengths = code[2]["prompt_len"].to_numpy(), code[2]["output_len"].to_numpy()
    assert expected_workload(from_counts, TRUE_COST, 4, *lengths).speedup == pytest.approx(
        expected_workload(from_tokens, TRUE_COST, 4, *lengths).speedup)


def test_counts_file_round_trip_and_refusals(tmp_path):
    counts = import_source("vllm", FIXTURES / "vllm_metrics.txt", gamma=None, **KEYS).counts
    path = write_counts(counts, tmp_path / "c.parquet")
    back = read_counts(path)
    pd.testing.assert_frame_equal(back[counts.columns.intersection(back.columns)].reset_index(drop=True),
                                  counts[counts.columns.intersection(back.columns)].astype(back[
                                      counts.columns.intersection(back.columns)].dtypes), check_dtype=False)
    broken = counts.copy()
    broken.loc[1, "accepted"] = 900  # more accepted than evaluated at index 1
    with pytest.raises(InputError, match="accepted: row 2: exceeds evaluated"):
        write_counts(broken, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(InputError, match="not a specsim counts file"):
        read_counts(tmp_path / "other.parquet")


@pytest.mark.parametrize(("kind", "name", "extra", "message"), [
    ("vllm", "vllm_metrics_increasing.txt", [], "must not increase with position"),
    ("vllm", "sglang_meta_info.jsonl", [], "not a Prometheus text exposition"),
    ("vllm", "vllm_no_drafts.txt", [], "no vllm:spec_decode_num_drafts counter"),
    ("specbench", "specbench_bad.jsonl", [], "accept_lengths"),
    ("sglang", "sglang_missing_verify.jsonl", ["--gamma", "4"], "no request with speculative fields"),
    ("tgi", "sglang_meta_info.jsonl", [], "must be one of vllm, vllm-requests, vllm-bench"),
    ("specbench", "missing.jsonl", [], "no such file"),
])
def test_malformed_sources_are_one_line(tmp_path, capsys, kind, name, extra, message):
    out = tmp_path / "c.parquet"
    code = main(["import", kind, str(FIXTURES / name), "--out", str(out), "--task", "t", "--drafter", "d", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_import_then_whatif_from_counts(tmp_path, capsys):
    out = tmp_path / "c.parquet"
    assert main(["import", "vllm", str(FIXTURES / "vllm_metrics.txt"), "--out", str(out), "--task", "chat",
                 "--drafter", "eagle", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert not undefined_keys(payload) and payload["tokens_per_step"] == pytest.approx(2.9)
    lengths = tmp_path / "w.csv"
    lengths.write_text("prompt_len,output_len\n200,150\n800,300\n")
    assert main(["simulate", "counts", str(out), "--lengths-from", str(lengths), "--cost-ratio", "0.05",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert not undefined_keys(result)
    assert result["speedup_low"] < result["speedup"] < result["speedup_high"] and result["speedup"] > 1.5
    assert main(["simulate", "counts", str(out), "--lengths-from", str(lengths)]) == 2
    assert "give --cost-ratio" in capsys.readouterr().err


def test_vllm_per_request_metrics_round_trip():
    counts = import_source("vllm-requests", FIXTURES / "vllm_requests.jsonl", gamma=None, **KEYS).counts
    summary = summarize_counts(counts).iloc[0]
    # The responses' own figures, pooled: 40 verify steps, 47 accepted of 120 drafted.
    assert summary["steps"] == 40 and summary["tokens_per_step"] == pytest.approx(1 + 47 / 40)
    assert summary["acceptance_rate"] == pytest.approx(47 / 120)
    # Histogram [14, 12, 7, 7] (steps accepting exactly 0..3 drafts) resolves every draft index.
    assert counts["evaluated"].tolist() == [40, 26, 14] and counts["accepted"].tolist() == [26, 14, 7]
    assert counts["sequences"].iloc[0] == 2 and counts["output_tokens"].iloc[0] == 82
    lengths = import_source("vllm-requests", FIXTURES / "vllm_requests.jsonl", gamma=None, **KEYS).lengths
    assert lengths.to_dict("list") == {"prompt_len": [120, 300], "output_len": [60, 22]}
    assert import_source("sglang", FIXTURES / "sglang_meta_info.jsonl", gamma=None, **KEYS).lengths.to_dict(
        "list") == {"prompt_len": [120, 80], "output_len": [96, 64]}
    assert import_source("vllm", FIXTURES / "vllm_metrics.txt", gamma=None, **KEYS).lengths is None


def test_vllm_request_histogram_that_disagrees_is_one_line(tmp_path, capsys):
    out = tmp_path / "c.parquet"
    code = main(["import", "vllm-requests", str(FIXTURES / "vllm_requests_bad_histogram.jsonl"), "--out", str(out),
                 "--task", "t", "--drafter", "d"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "histogram disagrees" in err and not out.exists()


def test_counts_file_gives_the_model_the_same_cells_as_traces(two_kind_traces, tmp_path):
    # The route's invariant: traces written to a counts file and read back (what an engine's import gives
    # the model) make the same cells, covariates and references as the traces themselves.
    from specsim.workflow import traces_counts

    root, _ = two_kind_traces
    traces = read_traces(root)
    path = write_counts(counts_from_traces(traces.tokens, traces.steps, traces.sequences), tmp_path / "c.parquet",
                        lengths=length_table(traces.sequences))
    from_counts, notes = model_cells(read_counts(path), read_counts_lengths(path))
    from_tokens, token_notes = model_cells(*traces_counts(traces))
    assert notes == token_notes == []
    assert {"content_match", "beyond", "prompts", "context_len_mean", "type_code"} <= set(from_counts.cells.columns)
    pd.testing.assert_frame_equal(from_counts.cells, from_tokens.cells, check_dtype=False, check_categorical=False)
    np.testing.assert_array_equal(from_counts.position_edges, from_tokens.position_edges)
    assert from_counts.observed_positions == from_tokens.observed_positions
    for drafter, reference in from_tokens.reference_lengths.items():
        np.testing.assert_array_equal(np.sort(from_counts.reference_lengths[drafter]), np.sort(reference))
    # Engines' counts without lengths: the model is told to leave the divergence terms out.
    imported = import_source("vllm", FIXTURES / "vllm_metrics.txt", gamma=None, **KEYS).counts
    vllm, notes = model_cells(imported)
    assert (vllm.cells["divergence"] == 0).all() and any("divergence covariate is 0" in n for n in notes)
    assert not any("chance of drafting at all is unknown" in n for n in notes)
    # The same counters said to be a lookup's (vLLM's n-gram drafter): the counts do not say at which
    # steps it drafted nothing, and the model says what it assumes instead.
    lookup, notes = model_cells(imported.assign(drafter_type="lookup"))
    assert lookup.drafting.empty
    assert any("chance of drafting at all is unknown" in n and "upper bound" in n for n in notes), notes


@pytest.mark.model
def test_fit_from_counts_equals_the_fit_from_traces(two_kind_traces, tmp_path, capsys):
    root, _ = two_kind_traces
    counts, lengths = tmp_path / "c.parquet", tmp_path / "w.csv"
    assert main(["traces", "counts", str(root), "--out", str(counts), "--json"]) == 0
    assert not undefined_keys(json.loads(capsys.readouterr().out))
    fits = {}
    for name, source in (("traces", root), ("counts", counts)):
        out = tmp_path / f"{name}.nc"
        assert main(["fit", str(source), "--out", str(out), "--draws", "150", "--tune", "150", "--chains", "2",
                     "--no-compare", "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert not undefined_keys(payload)
        fits[name] = {row["parameter"]: row for row in payload["posterior"]}
    for parameter, row in fits["traces"].items():
        other = fits["counts"][parameter]
        tolerance = 4 * np.hypot(row["mcse_mean"], other["mcse_mean"]) + 1e-9
        assert abs(row["mean"] - other["mean"]) <= tolerance, parameter
    # Counts carry no timings: predict asks for the hardware's costs, then answers.
    lengths.write_text("prompt_len,output_len\n100,60\n300,90\n")
    command = ["predict", str(tmp_path / "counts.nc"), "--workload", str(lengths), "--drafter", "ft-short", "--json"]
    assert main(command) == 2 and "give --cost-ratio or --cost-profile" in capsys.readouterr().err
    assert main([*command, "--cost-ratio", "0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["speedup"] > 0

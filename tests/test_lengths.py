from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsim.cli import main
from specsim.errors import InputError
from specsim.lengths import (
    DIVERGENCES,
    beyond_share,
    bootstrap_divergences,
    divergence_matrix,
    divergences,
    length_table,
    log_bins,
)

samples = st.lists(st.integers(1, 5000), min_size=1, max_size=60)


@given(a=samples, b=samples)
@settings(max_examples=60, deadline=None)
def test_divergence_properties(a, b):
    forward, backward = divergences(a, b), divergences(b, a)
    for name in ("js", "tv", "w1_tokens", "w1_log", "ks"):
        assert forward[name] == pytest.approx(backward[name], abs=1e-9)  # symmetric
        assert forward[name] >= -1e-12
    assert forward["kl_ab"] == pytest.approx(backward["kl_ba"])
    assert 0 <= forward["js"] <= 1 + 1e-12 and 0 <= forward["tv"] <= 1 + 1e-12
    # Pinsker-type bound between the binned measures: JS (bits) <= TV.
    assert forward["js"] <= forward["tv"] + 1e-9
    same = divergences(a, a)
    assert all(same[name] == pytest.approx(0, abs=1e-12) for name in DIVERGENCES if name != "beyond_share")
    assert 0 <= forward["beyond_share"] <= 1
    # beyond_share against its definition, one token position at a time.
    training, workload = np.rint(np.maximum(a, 1)).astype(int), np.rint(np.maximum(b, 1)).astype(int)
    positions = np.concatenate([np.arange(length) for length in workload])
    before = 1 - np.maximum(training[None, :] - positions[:, None], 0).sum(axis=1) / training.sum()
    assert forward["beyond_share"] == pytest.approx(np.mean(before), rel=1e-9)


def test_divergences_against_known_values():
    rng = np.random.default_rng(0)
    short, long_ = rng.integers(10, 20, 500), rng.integers(1000, 2000, 500)
    d = divergences(short, long_)
    assert d["js"] == pytest.approx(1.0) and d["tv"] == pytest.approx(1.0) and d["ks"] == pytest.approx(1.0)
    assert d["w1_tokens"] == pytest.approx(long_.mean() - short.mean())
    # Shifting log-lengths by log(2) moves W1 on log length by exactly log(2).
    assert divergences(short, 2 * short)["w1_log"] == pytest.approx(np.log(2))
    # Workload tokens almost all beyond the longest training sequence: beyond_share near 1 (only the
    # first 10-20 positions of 1000-2000 lie inside); a workload inside the training lengths sits
    # lower, and moving it later moves it up.
    assert 0.98 < beyond_share(short, long_) < 1
    assert beyond_share(long_, short) < beyond_share(long_, long_) < beyond_share(long_, 2 * long_) < 1


def test_log_bins_cover_range():
    edges = log_bins(1000, 4)
    assert edges[0] == 1 and edges[-1] > 1000
    np.testing.assert_allclose(edges[4], 2.0)


def test_bootstrap_and_matrix():
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(4, 0.5, 200), rng.lognormal(4.5, 0.5, 200)
    frame = bootstrap_divergences(a, b, n_resamples=100, rng=2)
    # Known value: the log-normal samples' log-means differ by 0.5, so W1 on log length is 0.5.
    assert frame.loc["w1_log", "low"] < 0.5 < frame.loc["w1_log", "high"]
    assert frame.loc["w1_log", "high"] - frame.loc["w1_log", "low"] < 0.4
    matrix = divergence_matrix({"a": a, "b": b, "c": a * 3}, "ks")
    assert matrix.loc["a", "a"] == 0 and matrix.loc["a", "b"] == matrix.loc["b", "a"]
    with pytest.raises(InputError):
        divergence_matrix({"a": a}, "nope")
    with pytest.raises(InputError, match="empty sample"):
        divergences([], [1])


def test_length_table_counts_each_sequence_once(synthetic_tables):
    table = length_table(synthetic_tables["sequences"])
    assert len(table) == synthetic_tables["sequences"]["prompt_id"].nunique()
    assert (table["total_len"] == table["prompt_len"] + table["output_len"]).all()


def test_cli_lengths(trace_dir, capsys):
    assert main(["lengths", str(trace_dir), "--json", "--bootstrap", "20"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {row["task"] for row in payload["quantiles"]} == {"code", "chat"}
    pair = payload["pairs"][0]
    assert payload["interval_level"] == 0.9 and pair["js"]["estimate"] > 0  # code and chat lengths differ
    assert main(["lengths", str(trace_dir), "--kind", "bogus"]) == 2

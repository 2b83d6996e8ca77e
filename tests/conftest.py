from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from hypothesis import settings

from specsim.simulate import AcceptanceProfile, CostModel, SyntheticWorkload, simulate_traces
from specsim.traces import TraceWriter

# Tests never assert wall time: a shared 2-core machine makes Hypothesis' per-example deadline flaky.
settings.register_profile("specsim", deadline=None)
settings.load_profile("specsim")

TRUE_COST = CostModel(
    draft_base_s=0.006, draft_per_context_s=2e-6, verify_base_s=0.03, verify_per_token_s=0.004,
    verify_per_context_s=1e-5, target_base_s=0.031, target_per_context_s=1e-5,
    spec_prefill_base_s=0.02, spec_prefill_per_token_s=1e-4,
    baseline_prefill_base_s=0.015, baseline_prefill_per_token_s=8e-5,
)


def small_workloads(n_sequences: int = 4, seed: int = 0) -> list[SyntheticWorkload]:
    rng = np.random.default_rng(seed)
    falling = AcceptanceProfile(np.array([[0.8, 0.7], [0.7, 0.6], [0.65, 0.55], [0.6, 0.5]]), np.array([64]))
    return [
        SyntheticWorkload("code", "humaneval", "generic-4l", "generic", falling,
                          rng.integers(50, 200, n_sequences), rng.integers(20, 120, n_sequences), "mixture"),
        SyntheticWorkload("chat", "qa", "generic-4l", "generic", AcceptanceProfile.constant(0.5),
                          rng.integers(10, 40, n_sequences), rng.integers(5, 30, n_sequences), "mixture"),
    ]


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The SmolLM2 tokenizer from the offline GGUF (tiny local models share its vocabulary)."""
    from transformers import AutoTokenizer

    from specsim.collect.models import _dequantised_gguf, smollm2_gguf_path

    folder, _ = _dequantised_gguf(smollm2_gguf_path(), trust_remote_code=False)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture
def synthetic_tables():
    return simulate_traces(small_workloads(), TRUE_COST, gamma=4, rng=1)


@pytest.fixture
def trace_dir(tmp_path, synthetic_tables):
    writer = TraceWriter(tmp_path / "traces")
    tables = synthetic_tables
    for task, group in tables["sequences"].groupby("task"):
        ids = set(group["prompt_id"])
        writer.write_shard(
            f"run-{task}",
            tables["tokens"][tables["tokens"]["prompt_id"].isin(ids)],
            tables["steps"][tables["steps"]["prompt_id"].isin(ids)],
            group,
        )
    writer.write_run_metadata("synthetic", {"seed": 1, "device": "cpu"})
    return tmp_path / "traces"


def write_two_kind_traces(root) -> dict:
    """Three tasks of different lengths, a generic drafter and one fine-tuned on the short task."""
    rng = np.random.default_rng(0)
    cells = []
    for task, (prompt, output, base) in {"short": (20, 20, 0.7), "mid": (120, 60, 0.6), "long": (400, 90, 0.5)}.items():
        for drafter, kind, trained_on, shift in (("generic", "generic", "mixture", 0.0),
                                                 ("ft-short", "finetuned", "short", 0.15 if task == "short" else -0.2)):
            profile = AcceptanceProfile(np.array([[base + shift], [base + shift - 0.1]]), np.array([]))
            prompts, outputs = rng.integers(prompt // 2, prompt * 2, 12), rng.integers(output // 2, output * 2, 12)
            cells.append(SyntheticWorkload(task, task, drafter, kind, profile, prompts, outputs, trained_on))
    tables = simulate_traces(cells, TRUE_COST, gamma=3, timing_noise=0.05, rng=1)
    writer = TraceWriter(root)
    writer.write_shard("all", tables["tokens"], tables["steps"], tables["sequences"])
    writer.write_run_metadata("synthetic", {"seed": 1, "device": "cpu"})
    return tables


@pytest.fixture(scope="session")
def two_kind_traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_kinds")
    return root, write_two_kind_traces(root)


@pytest.fixture(scope="session")
def two_kind_fit(two_kind_traces, tmp_path_factory):
    """One ``specsim fit --json`` of the two-kind traces, shared by the tests that read a posterior.

    Returns the posterior's path and the command's JSON document. Two chains of 300 draws, without
    the LOO comparison: a fit compiles for most of its time, so one fit serves the CLI, glossary and
    report tests. Tests only read the file.
    """
    from specsim.cli import main

    out = tmp_path_factory.mktemp("two_kind_fit") / "posterior.nc"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["fit", str(two_kind_traces[0]), "--out", str(out), "--draws", "300", "--tune", "300",
                     "--chains", "2", "--no-compare", "--json"])
    assert code == 0
    return out, json.loads(printed.getvalue())

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specsim.analysis import summarize
from specsim.analysis.metrics import (
    acceptance_length_with_bonus,
    acceptance_rate,
    conditional_acceptance_by_index,
    unconditional_acceptance_by_index,
)
from specsim.cli import main
from specsim.errors import InputError
from specsim.simulate import AcceptanceProfile, SyntheticWorkload, simulate_traces
from specsim.traces import SCHEMAS, TraceWriter, read_traces
from specsim.traces.schema import METADATA_VERSION_KEY
from specsim.traces.store import atomic_write_table, to_arrow
from tests.conftest import TRUE_COST


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    alpha=st.floats(0.0, 1.0),
    gamma=st.integers(1, 6),
    lengths=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 80)), min_size=1, max_size=4),
    temperature=st.sampled_from([0.0, 0.7]),
    seed=st.integers(0, 2**32 - 1),
)
def test_write_read_round_trip(tmp_path_factory, alpha, gamma, lengths, temperature, seed):
    prompt, output = map(np.array, zip(*lengths, strict=True))
    cell = SyntheticWorkload("t", "d", "dr", "finetuned", AcceptanceProfile.constant(alpha), prompt, output, "d")
    tables = simulate_traces([cell], TRUE_COST, gamma=gamma, temperature=temperature, rng=seed)
    root = tmp_path_factory.mktemp("rt")
    writer = TraceWriter(root)
    writer.write_shard("s", tables["tokens"], tables["steps"], tables["sequences"])
    writer.write_run_metadata("synthetic", {"seed": seed})
    traces = read_traces(root)
    for name, keys in (("tokens", ["prompt_id", "step", "draft_index"]), ("steps", ["prompt_id", "step"]),
                       ("sequences", ["prompt_id"])):
        expected = _sorted(tables[name][SCHEMAS[name].names], keys)
        actual = _sorted(getattr(traces, name), keys)
        assert len(actual) == len(expected)
        for column in SCHEMAS[name].names:
            if column == "output_token_ids":
                assert [list(v) for v in actual[column]] == [list(v) for v in expected[column]]
            else:
                np.testing.assert_array_equal(actual[column].to_numpy(), expected[column].to_numpy(), column)


def test_read_checks_pass_and_metadata(trace_dir):
    traces = read_traces(trace_dir)
    assert traces.runs["synthetic"]["seed"] == 1
    assert set(traces.sequences["task"]) == {"code", "chat"}
    assert traces.incomplete_shards == ()


def test_empty_directory(tmp_path):
    with pytest.raises(InputError, match="no trace shards"):
        read_traces(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(InputError, match="no such trace directory"):
        read_traces(tmp_path / "nope")


def test_truncated_parquet(trace_dir):
    path = trace_dir / "steps" / "run-code.parquet"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(InputError, match="not a readable Parquet file") as error:
        read_traces(trace_dir)
    assert "run-code.parquet" in str(error.value)


def _rewrite(path, transform):
    table = pq.read_table(path)
    table = transform(table)
    pq.write_table(table, path)


def test_wrong_schema_version(trace_dir):
    path = trace_dir / "tokens" / "run-chat.parquet"
    _rewrite(path, lambda t: t.replace_schema_metadata({**t.schema.metadata, METADATA_VERSION_KEY: b"99"}))
    with pytest.raises(InputError, match="schema version '99'") as error:
        read_traces(trace_dir)
    assert str(path) in str(error.value)


def test_missing_column(trace_dir):
    path = trace_dir / "tokens" / "run-chat.parquet"
    _rewrite(path, lambda t: t.drop_columns(["overlap"]))
    with pytest.raises(InputError, match="overlap: missing column"):
        read_traces(trace_dir)


def test_wrong_dtype(trace_dir):
    path = trace_dir / "steps" / "run-chat.parquet"

    def to_float(table):
        index = table.schema.get_field_index("n_accepted")
        return table.set_column(index, "n_accepted", table.column("n_accepted").cast(pa.float64()))

    _rewrite(path, to_float)
    with pytest.raises(InputError, match="n_accepted: dtype double, expected int32"):
        read_traces(trace_dir)


def _break(trace_dir, table_name, shard, mutate):
    path = trace_dir / table_name / f"{shard}.parquet"
    frame = pq.read_table(path).to_pandas()
    mutate(frame)
    atomic_write_table(to_arrow(frame, table_name), path)
    return path


@pytest.mark.parametrize(
    ("table_name", "mutate", "field", "problem"),
    [
        ("tokens", lambda f: f.__setitem__("evaluated", False), "accepted", "accepted but not evaluated"),
        ("tokens", lambda f: f.__setitem__("p_target", 1.5), "p_target", "probability outside"),
        ("steps", lambda f: f.__setitem__("n_accepted", f["n_drafted"] + 1), "n_accepted", "n_drafted"),
        ("steps", lambda f: f.__setitem__("verify_s", -1.0), "verify_s", "must be finite and >= 0"),
        ("steps", lambda f: f.__setitem__("draft_s", np.inf), "draft_s", "must be finite and >= 0"),
        ("sequences", lambda f: f.__setitem__("spec_wall_s", 0.0), "spec_wall_s", "finite number of seconds > 0"),
        ("sequences", lambda f: f.__setitem__("spec_wall_s", np.inf), "spec_wall_s", "finite number of seconds"),
        ("sequences", lambda f: f.__setitem__("baseline_wall_s", np.inf), "baseline_wall_s", "finite number"),
        ("sequences", lambda f: f.__setitem__("baseline_tokens", -3), "baseline_tokens", "must be >= 1"),
        ("sequences", lambda f: f.__setitem__("prompt_len", 2**31 - 1), "prompt_len", "must be in [1, 10000000]"),
        ("tokens", lambda f: f.__setitem__("context_len", -1), "context_len", "must be in [0, 10000000]"),
        ("steps", lambda f: f.__setitem__("temperature", np.inf), "temperature", "finite number >= 0"),
        ("sequences", lambda f: f.__setitem__("output_len", f["output_len"] + 1), "output_token_ids",
         "length differs"),
        ("sequences", lambda f: f.__setitem__("finish_reason", "exploded"), "finish_reason", "must be one of"),
        ("sequences", lambda f: f.__setitem__("n_steps", f["n_steps"] + 1), "n_steps", "number of step rows"),
    ],
)
def test_violated_invariants(trace_dir, table_name, mutate, field, problem):
    path = _break(trace_dir, table_name, "run-code", mutate)
    with pytest.raises(InputError) as error:
        read_traces(trace_dir)
    message = str(error.value)
    assert f"{field}:" in message and problem in message
    assert str(path) in message


def test_tokens_disagree_with_steps(trace_dir):
    path = trace_dir / "tokens" / "run-code.parquet"
    frame = pq.read_table(path).to_pandas().iloc[1:]
    atomic_write_table(to_arrow(frame, "tokens"), path)
    with pytest.raises(InputError, match="n_drafted: differs from the number of token rows"):
        read_traces(trace_dir)


def test_incomplete_shard_is_skipped_and_tmp_removed(trace_dir, synthetic_tables):
    (trace_dir / "sequences" / "run-chat.parquet").unlink()
    (trace_dir / "tokens" / "half.parquet.tmp").write_bytes(b"PAR1garbage")
    traces = read_traces(trace_dir)
    assert traces.incomplete_shards == ("run-chat",)
    assert set(traces.sequences["task"]) == {"code"}
    TraceWriter(trace_dir)
    assert not list(trace_dir.glob("*/*.tmp"))


def test_metric_conventions(synthetic_tables):
    steps = synthetic_tables["steps"]
    tokens = synthetic_tables["tokens"]
    n_acc, n_dr = steps["n_accepted"].to_numpy(), steps["n_drafted"].to_numpy()
    assert acceptance_rate(n_acc, n_dr) == pytest.approx(tokens["accepted"].mean())
    assert acceptance_length_with_bonus(n_acc) == pytest.approx(1 + n_acc.mean())
    conditional = conditional_acceptance_by_index(tokens)
    unconditional = unconditional_acceptance_by_index(tokens)
    # Conditional rates are at least the unconditional ones; index 0 is evaluated in every step.
    assert (conditional["rate"].to_numpy() >= unconditional["rate"].to_numpy() - 1e-12).all()
    assert conditional["rate"].iloc[0] == pytest.approx(unconditional["rate"].iloc[0])
    summary = summarize(steps, synthetic_tables["sequences"])
    assert (summary["acceptance_rate_low"] <= summary["acceptance_rate"]).all()
    assert np.isfinite(summary["measured_speedup"]).all()


def test_cli_check_and_summary(trace_dir, capsys):
    assert main(["traces", "check", str(trace_dir)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["traces", "summary", str(trace_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {g["task"] for g in payload["groups"]} == {"code", "chat"}
    assert payload["speedup_estimator"].startswith("ratio of totals")


def test_cli_bad_input_is_one_line_exit_2(trace_dir, capsys):
    path = trace_dir / "steps" / "run-code.parquet"
    path.write_bytes(path.read_bytes()[:100])
    assert main(["traces", "summary", str(trace_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "run-code.parquet" in err
    assert "Traceback" not in err
    assert main(["traces", "check", str(trace_dir / "missing")]) == 2
    with pytest.raises(InputError):
        main(["--debug", "traces", "check", str(trace_dir / "missing")])


def test_nan_baseline_is_refused_not_read_as_missing(trace_dir):
    # A NaN would read back as "no baseline" and silently drop the sequence from speed-ups.
    path = trace_dir / "sequences" / "run-code.parquet"
    table = pq.read_table(path)
    column = table.schema.get_field_index("baseline_wall_s")
    values = pa.array([float("nan")] * table.num_rows, type=pa.float64(), from_pandas=False)
    pq.write_table(table.set_column(column, table.schema.field(column), values), path)
    with pytest.raises(InputError, match="baseline_wall_s: NaN value"):
        read_traces(trace_dir)


def test_shards_without_run_metadata_are_refused(trace_dir):
    (trace_dir / "runs" / "synthetic.json").unlink()
    with pytest.raises(InputError, match=r"run 'synthetic' has shards but no runs/synthetic.json"):
        read_traces(trace_dir)


def test_zero_row_shard_is_read(trace_dir):
    # A valid shard of zero rows (a prompt that produced nothing) must not crash the reader.
    for name in ("tokens", "steps", "sequences"):
        empty = pq.read_table(trace_dir / name / "run-code.parquet").slice(0, 0)
        atomic_write_table(empty, trace_dir / name / "empty.parquet")
    traces = read_traces(trace_dir)
    assert len(traces.sequences) == 8


def test_run_lock_refuses_a_second_writer_and_live_temporaries_survive(tmp_path):
    import os
    import subprocess
    import sys

    writer = TraceWriter(tmp_path / "t")
    with writer.lock("run-x", 0):
        with pytest.raises(InputError, match=r"run-x \(rank 0\) is being collected .* by pid"):
            with TraceWriter(tmp_path / "t").lock("run-x", 0):
                pass
        with TraceWriter(tmp_path / "t").lock("run-x", 1):  # another rank writes beside it
            pass
    with writer.lock("run-x", 0):  # released on exit
        pass
    # A temporary file of a live writer is not a crash left-over: a new writer must not delete it.
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        live = tmp_path / "t" / "tokens" / f"a.parquet.{sleeper.pid}.tmp"
        live.write_bytes(b"in flight")
        dead = tmp_path / "t" / "tokens" / "b.parquet.tmp"
        dead.write_bytes(b"left over")
        TraceWriter(tmp_path / "t")
        assert live.exists() and not dead.exists()
    finally:
        sleeper.communicate(b"")
    assert os.path.exists(live)
    TraceWriter(tmp_path / "t")
    assert not live.exists()


def _breaking_mutations():
    """Mutations that break a documented invariant (the validator must reject each)."""
    def set_at(table, column, value):
        def mutate(tables, row):
            frame = tables[table]
            frame.loc[frame.index[row % len(frame)], column] = value
        return mutate

    def accepted_not_evaluated(tables, row):
        tokens = tables["tokens"]
        rejected = tokens.index[~tokens["evaluated"]]
        if len(rejected):
            tokens.loc[rejected[row % len(rejected)], "accepted"] = True
        else:  # every token evaluated: break the prefix rule on the step count instead
            steps = tables["steps"]
            steps.loc[steps.index[row % len(steps)], "n_accepted"] = steps["n_drafted"].iloc[row % len(steps)] + 1

    def duplicate_step(tables, row):
        steps = tables["steps"]
        tables["steps"] = pd.concat([steps, steps.iloc[[row % len(steps)]]], ignore_index=True)

    def drop_token(tables, row):
        tables["tokens"] = tables["tokens"].drop(tables["tokens"].index[row % len(tables["tokens"])])

    return {
        "accepted but not evaluated": accepted_not_evaluated,
        "n_accepted above n_drafted": lambda t, r: set_at("steps", "n_accepted", 99)(t, r),
        "zero speculative time": set_at("sequences", "spec_wall_s", 0.0),
        "infinite speculative time": set_at("sequences", "spec_wall_s", np.inf),
        "negative baseline": set_at("sequences", "baseline_wall_s", -1.0),
        "infinite draft time": set_at("steps", "draft_s", np.inf),
        "negative context": set_at("tokens", "context_len", -5),
        "huge prompt": set_at("sequences", "prompt_len", 2**31 - 1),
        "probability above 1": set_at("tokens", "q_draft", 1.5),
        "unknown drafter kind": set_at("sequences", "drafter_kind", "oracle"),
        "duplicate step": duplicate_step,
        "missing token row": drop_token,
    }


def _keeping_mutations():
    """Mutations that keep every invariant (the validator must accept each)."""
    def scale_times(tables, row):
        factor = 0.5 + (row % 7) / 3
        for table, columns in (("steps", ("draft_s", "verify_s")), ("sequences", ("spec_wall_s", "baseline_wall_s"))):
            for column in columns:
                tables[table][column] = tables[table][column] * factor

    def shuffle_rows(tables, row):
        for name in tables:
            tables[name] = tables[name].sample(frac=1.0, random_state=row).reset_index(drop=True)

    def rename_task(tables, row):
        for name in tables:
            tables[name]["task"] = tables[name]["task"].map(lambda t: f"{t}-{row}")

    def no_baseline(tables, row):
        tables["sequences"]["baseline_wall_s"] = np.nan
        tables["sequences"]["baseline_tokens"] = pd.NA

    return {"scale every timing": scale_times, "shuffle rows": shuffle_rows, "rename a task everywhere": rename_task,
            "no baseline timings": no_baseline}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(breaking=st.booleans(), choice=st.integers(0, 1000), row=st.integers(0, 10_000))
def test_validator_rejects_exactly_the_mutations_that_break_invariants(tmp_path_factory, synthetic_tables, breaking,
                                                                      choice, row):
    mutations = _breaking_mutations() if breaking else _keeping_mutations()
    name = sorted(mutations)[choice % len(mutations)]
    tables = {key: frame.copy() for key, frame in synthetic_tables.items()}
    mutations[name](tables, row)
    root = tmp_path_factory.mktemp("mutated")
    writer = TraceWriter(root)
    writer.write_shard("s", tables["tokens"], tables["steps"], tables["sequences"])
    writer.write_run_metadata("synthetic", {"seed": 1})
    if breaking:
        with pytest.raises(InputError):
            read_traces(root)
    else:
        read_traces(root)


def test_combine_traces_refuses_one_name_for_two_drafters(two_kind_traces):
    from specsim.traces.store import combine_traces

    root, _ = two_kind_traces
    one = read_traces(root)
    both = combine_traces([one, one])
    assert len(both.tokens) == 2 * len(one.tokens) and set(both.runs) == set(one.runs)
    other = one.sequences.assign(drafter_kind=one.sequences["drafter_kind"].map(
        {"generic": "finetuned", "finetuned": "generic"}))
    renamed = type(one)(root.parent / "other", one.tokens, one.steps, other, one.runs)
    with pytest.raises(InputError, match="means different drafters"):
        combine_traces([one, renamed])

"""Importers on the variations engines really emit, each file written from the engine's code and each
answer computed by hand here (not read back from specsim): label-aware scrapes, scrape windows, short
drafts, SGLang's renamed keys and histograms, streams, Spec-Bench's draft shapes, bench results, log lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specsim.cli import main
from specsim.traces.counts import read_counts, read_counts_lengths

COMMON = ["--task", "chat", "--drafter", "d"]


def vllm_series(model: str, engine: str, drafts: int, tokens: int, accepted: int, per_pos: list[int],
                prefix: str = "vllm:", created: bool = True) -> str:
    """Sample lines as vLLM's SpecDecodingProm writes them (labels sorted), with _created timestamps."""
    labels = f'engine="{engine}",model_name="{model}"'
    lines = []
    for name, value in (("num_drafts", drafts), ("num_draft_tokens", tokens), ("num_accepted_tokens", accepted)):
        lines.append(f"{prefix}spec_decode_{name}_total{{{labels}}} {float(value)}")
        if created:
            lines.append(f"{prefix}spec_decode_{name}_created{{{labels}}} 1.7962485890975761e+09")
    for position, value in enumerate(per_pos):
        lines.append(f'{prefix}spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{position}"}} '
                     f"{float(value)}")
    return "\n".join(lines) + "\n"


def run_import(tmp_path: Path, capsys, kind: str, name: str, text: str, *options: str):
    """(exit code, JSON payload or the error line, counts read back or None)."""
    source, out = tmp_path / name, tmp_path / f"{name}.parquet"
    source.write_text(text)
    code = main(["import", kind, str(source), "--out", str(out), *COMMON, *options, "--json"])
    captured = capsys.readouterr()
    if code != 0:
        assert captured.err.count("\n") == 1 and not out.exists(), captured.err
        return code, captured.err, None
    return code, json.loads(captured.out), read_counts(out)


def by_index(counts, column):
    return counts.sort_values("draft_index")[column].tolist()


# --- vLLM /metrics ---------------------------------------------------------------------------------

def test_vllm_scrape_with_two_models_is_refused_or_selected(tmp_path, capsys):
    text = (vllm_series("big", "0", 1000, 3000, 1200, [600, 400, 200])
            + vllm_series("small", "0", 500, 1000, 159, [120, 39]))
    code, err, _ = run_import(tmp_path, capsys, "vllm", "m.txt", text)
    assert code == 2 and "2 models" in err and "'big'" in err and "'small'" in err and "--model" in err
    code, payload, counts = run_import(tmp_path, capsys, "vllm", "m.txt", text, "--model", "small")
    assert code == 0 and counts["gamma"].iloc[0] == 2
    assert payload["acceptance_rate"] == pytest.approx(159 / 1000)
    assert by_index(counts, "evaluated") == [500, 120] and by_index(counts, "accepted") == [120, 39]
    code, err, _ = run_import(tmp_path, capsys, "vllm", "m2.txt", text, "--model", "tiny")
    assert code == 2 and "no model 'tiny'" in err


def test_vllm_data_parallel_engines_of_one_model_are_summed(tmp_path, capsys):
    text = vllm_series("m", "0", 600, 1800, 900, [480, 300, 120]) + vllm_series("m", "1", 400, 1200, 600,
                                                                                [320, 200, 80])
    code, payload, counts = run_import(tmp_path, capsys, "vllm", "dp.txt", text)
    assert code == 0 and by_index(counts, "evaluated") == [1000, 800, 500]
    assert by_index(counts, "accepted") == [800, 500, 200]
    assert payload["tokens_per_step"] == pytest.approx(1 + 1500 / 1000)
    assert any("engines 0, 1 summed" in note for note in payload["notes"])


def test_two_scrapes_give_the_window_between_them(tmp_path, capsys):
    before = vllm_series("m", "0", 100, 300, 150, [80, 50, 20])
    after = vllm_series("m", "0", 1100, 3300, 1650, [880, 550, 220])
    code, payload, counts = run_import(tmp_path, capsys, "vllm", "w.txt", before + after)
    # The window: 1000 drafts, 3000 draft tokens, 1500 accepted, per position 800 / 500 / 200.
    assert code == 0 and counts["steps"].iloc[0] == 1000
    assert payload["tokens_per_step"] == pytest.approx(2.5) and payload["acceptance_rate"] == pytest.approx(0.5)
    assert by_index(counts, "evaluated") == [1000, 800, 500] and by_index(counts, "accepted") == [800, 500, 200]
    assert any("window" in note for note in payload["notes"])
    code, err, _ = run_import(tmp_path, capsys, "vllm", "r.txt", after + before)
    assert code == 2 and "restarted" in err


def test_openmetrics_names_read_like_the_text_format(tmp_path, capsys):
    # prometheus_client >= 0.23 OpenMetrics: HELP/TYPE keep the colon, samples use underscores, ends in # EOF.
    text = ("# HELP vllm:spec_decode_num_drafts Number of spec decoding drafts.\n"
            "# TYPE vllm:spec_decode_num_drafts counter\n"
            + vllm_series("m", "0", 1000, 3000, 1900, [800, 640, 460], prefix="vllm_") + "# EOF\n")
    code, payload, counts = run_import(tmp_path, capsys, "vllm", "om.txt", text)
    assert code == 0 and payload["tokens_per_step"] == pytest.approx(2.9)
    assert by_index(counts, "evaluated") == [1000, 800, 640]


def test_v0_and_all_zero_scrapes_say_what_they_are(tmp_path, capsys):
    v0 = ('vllm:spec_decode_draft_acceptance_rate{model_name="m"} 0.61\n'
          'vllm:spec_decode_efficiency{model_name="m"} 0.4\n'
          'vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 12345.0\n'
          'vllm:spec_decode_num_draft_tokens_total{model_name="m"} 20000.0\n'
          'vllm:spec_decode_num_emitted_tokens_total{model_name="m"} 15000.0\n')
    code, err, _ = run_import(tmp_path, capsys, "vllm", "v0.txt", v0)
    assert code == 2 and "V0-engine" in err and "0.610" in err and "speculative decoding on" not in err
    code, err, _ = run_import(tmp_path, capsys, "vllm", "zero.txt", vllm_series("m", "0", 0, 0, 0, [0, 0, 0]))
    assert code == 2 and "num_drafts is 0" in err and "no request served" in err


def test_short_drafts_import_the_true_drafted_count(tmp_path, capsys):
    # 1000 drafts at num_speculative_tokens 4, 40% of them cut to 1 token: 600 x 4 + 400 x 1 = 2800 drafted.
    text = vllm_series("m", "0", 1000, 2800, 1397, [700, 400, 200, 97])
    code, payload, counts = run_import(tmp_path, capsys, "vllm", "short.txt", text)
    assert code == 0 and payload["acceptance_rate"] == pytest.approx(1397 / 2800)  # not 1397 / 4000
    assert payload["positions_resolved"] is False and counts["drafted"].iloc[0] == 2800
    assert any("cut short" in note for note in payload["notes"])


def test_fractional_and_negative_counters_are_refused(tmp_path, capsys):
    code, err, _ = run_import(tmp_path, capsys, "vllm", "f.txt", vllm_series("m", "0", 1000, 3000, 1900.5, []),
                              "--gamma", "3")
    assert code == 2 and "whole number" in err
    code, err, _ = run_import(tmp_path, capsys, "vllm", "n.txt", vllm_series("m", "0", -5, 3000, 1900, []),
                              "--gamma", "3")
    assert code == 2 and "finite count >= 0" in err


def test_llamacpp_scrape_totals(tmp_path, capsys):
    text = ("llamacpp:spec_decode_num_drafts_total 200\nllamacpp:spec_decode_num_draft_tokens_total 640\n"
            "llamacpp:spec_decode_num_accepted_tokens_total 320\n")
    code, err, _ = run_import(tmp_path, capsys, "llamacpp", "l.txt", text)
    assert code == 2 and "give --gamma" in err
    code, payload, counts = run_import(tmp_path, capsys, "llamacpp", "l.txt", text, "--gamma", "4")
    assert code == 0 and payload["tokens_per_step"] == pytest.approx(1 + 320 / 200)
    assert payload["acceptance_rate"] == pytest.approx(0.5) and counts["draft_index"].tolist() == [-1]


# --- vLLM per-request, bench and log -----------------------------------------------------------------

def request_line(spec: dict, prompt: int = 100, completion: int = 20) -> str:
    return json.dumps({"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "x"}],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
                       "metrics": {"speculative_decoding": spec}})


def test_vllm_detailed_per_step_drafted_resolves_short_drafts(tmp_path, capsys):
    spec = {"mean_acceptance_length": 2.5, "draft_acceptance_rate": 6 / 11, "acceptance_histogram": [1, 1, 1, 1, 0],
            "num_spec_steps": 4, "num_accepted_draft_tokens": 6, "num_draft_tokens": 11, "num_spec_tokens": 4,
            "per_step_accepted": [2, 0, 1, 3], "per_step_drafted": [4, 2, 1, 4]}
    code, payload, counts = run_import(tmp_path, capsys, "vllm-requests", "r.jsonl", request_line(spec) + "\n")
    # By hand: index i is drafted by steps drafting > i, evaluated by those that also accepted >= i.
    assert code == 0 and by_index(counts, "drafted") == [4, 3, 2, 2]
    assert by_index(counts, "evaluated") == [4, 2, 2, 1] and by_index(counts, "accepted") == [3, 2, 1, 0]
    assert payload["acceptance_rate"] == pytest.approx(6 / 11)
    # Summary mode of the same request: the histogram cannot say which drafts were short.
    summary = {k: v for k, v in spec.items() if not k.startswith("per_step")}
    code, payload, counts = run_import(tmp_path, capsys, "vllm-requests", "s.jsonl", request_line(summary))
    assert code == 0 and payload["positions_resolved"] is False and payload["acceptance_rate"] == pytest.approx(6 / 11)
    assert any("detailed" in note for note in payload["notes"])


def test_vllm_requests_from_a_captured_stream(tmp_path, capsys):
    spec = {"acceptance_histogram": [1, 2, 1], "num_spec_steps": 4, "num_accepted_draft_tokens": 4,
            "num_draft_tokens": 8, "num_spec_tokens": 2}
    chunk = json.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
    final = json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9},
                        "metrics": {"speculative_decoding": spec}})
    text = f"data: {chunk}\n\ndata: {chunk}\n\ndata: {final}\n\ndata: [DONE]\n\n"
    code, payload, counts = run_import(tmp_path, capsys, "vllm-requests", "stream.txt", text)
    assert code == 0 and by_index(counts, "evaluated") == [4, 3] and by_index(counts, "accepted") == [3, 1]
    assert read_counts_lengths(tmp_path / "stream.txt.parquet")["output_len"].tolist() == [9]


def test_vllm_bench_result(tmp_path, capsys):
    result = {"backend": "vllm", "completed": 3, "spec_decode_acceptance_rate": 50.0,
              "spec_decode_acceptance_length": 2.5, "spec_decode_num_drafts": 1000, "spec_decode_draft_tokens": 3000,
              "spec_decode_accepted_tokens": 1500, "spec_decode_per_position_acceptance_rates": [0.8, 0.5, 0.2],
              "input_lens": [100, 200, 300], "output_lens": [50, 0, 70]}
    code, payload, counts = run_import(tmp_path, capsys, "vllm-bench", "bench.json", json.dumps(result, indent=2))
    assert code == 0 and payload["tokens_per_step"] == pytest.approx(2.5)
    assert by_index(counts, "evaluated") == [1000, 800, 500] and by_index(counts, "accepted") == [800, 500, 200]
    lengths = read_counts_lengths(tmp_path / "bench.json.parquet")
    assert lengths["prompt_len"].tolist() == [100, 300]  # the failed request (output 0) left out
    assert any("server-wide" in note for note in payload["notes"])
    del result["spec_decode_num_drafts"]
    code, err, _ = run_import(tmp_path, capsys, "vllm-bench", "nobench.json", json.dumps(result))
    assert code == 2 and "spec_decode_num_drafts" in err


def log_line(length: float, accepted: int, drafted: int, rates: list[float]) -> str:
    body = (f"SpecDecoding metrics: Mean acceptance length: {length:.2f}, Accepted throughput: 12.30 tokens/s, "
            f"Drafted throughput: 30.00 tokens/s, Accepted: {accepted} tokens, Drafted: {drafted} tokens, "
            f"Per-position acceptance rate: {', '.join(f'{r:.3f}' for r in rates)}, Avg Draft acceptance rate: "
            f"{100 * accepted / drafted:.1f}%")
    return f"(APIServer pid=1234) INFO 12-02 10:00:00 [metrics.py:200] {body}"


def test_vllm_log_lines_are_summed_over_intervals(tmp_path, capsys):
    # Interval 1: 100 drafts of 3 (accepted 80 / 50 / 20); interval 2: 200 drafts (140 / 80 / 20).
    text = "\n".join(["INFO starting", log_line(2.50, 150, 300, [0.8, 0.5, 0.2]), "INFO noise",
                      log_line(2.20, 240, 600, [0.7, 0.4, 0.1])]) + "\n"
    code, payload, counts = run_import(tmp_path, capsys, "vllm-log", "v.log", text)
    assert code == 0 and counts["steps"].iloc[0] == 300
    assert by_index(counts, "accepted") == [220, 130, 40] and by_index(counts, "evaluated") == [300, 220, 130]
    assert payload["tokens_per_step"] == pytest.approx(1 + 390 / 300)
    code, err, _ = run_import(tmp_path, capsys, "vllm-log", "v0.log",
                              "INFO Speculative metrics: Draft acceptance rate: 0.512, System efficiency: 0.4\n")
    assert code == 2 and "V0-engine" in err


# --- SGLang ------------------------------------------------------------------------------------------

def sglang_meta(version: str, verify: int, correct: int, gamma: int, histogram: list[int] | None) -> dict:
    names = {"0.5.23": ("spec_num_correct_drafts", "spec_num_proposed_drafts", "spec_correct_drafts_histogram"),
             "0.5.11": ("spec_accepted_drafts", "spec_proposed_drafts", "spec_accept_histogram"),
             "0.5.9": ("spec_accept_token_num", "spec_draft_token_num", "spec_accept_histogram")}[version]
    completion = 1 + verify + correct
    meta = {"id": "r", "prompt_tokens": 50, "completion_tokens": completion, "spec_verify_ct": verify,
            "spec_accept_length": completion / verify, "spec_accept_rate": correct / (verify * gamma),
            names[0]: correct, names[1]: verify * gamma}
    if histogram is not None:
        meta[names[2]] = histogram
    return meta


@pytest.mark.parametrize("version", ["0.5.23", "0.5.11", "0.5.9"])
def test_sglang_every_key_generation_and_its_histogram(tmp_path, capsys, version):
    lines = [json.dumps({"text": "a", "meta_info": sglang_meta(version, 10, 12, 3, [3, 3, 3, 1])}),
             json.dumps({"text": "b", "meta_info": {"id": "z", "prompt_tokens": 5, "completion_tokens": 1}})]
    code, payload, counts = run_import(tmp_path, capsys, "sglang", "s.jsonl", "\n".join(lines))
    # Histogram [3, 3, 3, 1]: 7 steps accepted >= 1, 4 accepted >= 2, 1 accepted 3; gamma 12 + 18 = 30 / 10.
    assert code == 0 and counts["gamma"].iloc[0] == 3
    assert by_index(counts, "evaluated") == [10, 7, 4] and by_index(counts, "accepted") == [7, 4, 1]
    assert payload["tokens_per_step"] == pytest.approx(2.2) and payload["acceptance_rate"] == pytest.approx(12 / 30)
    assert any(version[:4] in note or "0.5.12+" in note for note in payload["notes"])


def test_sglang_openai_forms_streams_and_zero_verify_requests(tmp_path, capsys):
    meta = sglang_meta("0.5.23", 10, 12, 3, [3, 3, 3, 1])
    details = {k: meta[k] for k in meta if k.startswith("spec_")}
    chat = {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {}, "meta_info": meta}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 23}}
    sglext = {"id": "c", "choices": [{"index": 0}], "sglext": {"spec_tokens_details": details},
              "usage": {"prompt_tokens": 50, "completion_tokens": 23}}
    listed = {"id": "c", "choices": [{"index": 0}, {"index": 1}], "sglext": {"spec_tokens_details": [details,
                                                                                                   details]}}
    for name, text in (("chat.jsonl", json.dumps(chat)), ("ext.jsonl", json.dumps(sglext))):
        code, payload, counts = run_import(tmp_path, capsys, "sglang", name, text)
        assert code == 0 and by_index(counts, "accepted") == [7, 4, 1], name
    code, payload, counts = run_import(tmp_path, capsys, "sglang", "list.jsonl", json.dumps(listed))
    assert code == 0 and by_index(counts, "accepted") == [14, 8, 2] and counts["sequences"].iloc[0] == 2
    stream = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in (
        {"text": "a", "meta_info": {"id": "r", "completion_tokens": 5}}, {"text": "ab", "meta_info": meta},
        {"text": "", "meta_info": {"id": "q", "completion_tokens": 1, "prompt_tokens": 9, "spec_verify_ct": 0}}))
    code, payload, counts = run_import(tmp_path, capsys, "sglang", "stream.txt", stream + "data: [DONE]\n\n")
    assert code == 0 and by_index(counts, "accepted") == [7, 4, 1]
    assert any("1 requests with no verify step" in note for note in payload["notes"])


def test_sglang_trees_are_refused_with_the_line(tmp_path, capsys):
    tree = sglang_meta("0.5.23", 10, 12, 3, [3, 3, 3, 1])
    tree["spec_num_proposed_drafts"] = 70  # topk 4: eight tree nodes minus the root, 7 a step
    text = json.dumps({"meta_info": sglang_meta("0.5.23", 10, 12, 3, None)}) + "\n" + json.dumps({"meta_info": tree})
    code, err, _ = run_import(tmp_path, capsys, "sglang", "tree.jsonl", text, "--gamma", "3")
    assert code == 2 and "line 2" in err and "trees are not supported" in err


def test_sglang_without_histogram_is_totals(tmp_path, capsys):
    text = json.dumps({"meta_info": sglang_meta("0.5.23", 40, 56, 4, None)})
    code, payload, counts = run_import(tmp_path, capsys, "sglang", "t.jsonl", text)
    assert code == 0 and payload["positions_resolved"] is False and counts["gamma"].iloc[0] == 4
    assert payload["acceptance_rate"] == pytest.approx(56 / 160) and payload["tokens_per_step"] == pytest.approx(2.4)


# --- Spec-Bench --------------------------------------------------------------------------------------

def specbench_line(model_id: str, accept_lengths: list[int]) -> str:
    return json.dumps({"question_id": 1, "category": "qa", "answer_id": "a", "model_id": model_id,
                       "choices": [{"index": 0, "turns": ["x"], "decoding_steps": [len(accept_lengths)],
                                    "new_tokens": [sum(accept_lengths)], "wall_time": [0.1],
                                    "accept_lengths": accept_lengths}], "tstamp": 1.0})


def test_specbench_gamma_given_or_warned_and_draft_shapes(tmp_path, capsys):
    steps = [1, 3, 2, 4, 1]  # 6 accepted drafts in 5 steps; the longest step accepted 3
    code, payload, counts = run_import(tmp_path, capsys, "specbench", "a.jsonl", specbench_line("vicuna-7b", steps),
                                       "--gamma", "5")
    assert code == 0 and payload["acceptance_rate"] == pytest.approx(6 / 25) and payload["notes"] == []
    code, payload, counts = run_import(tmp_path, capsys, "specbench", "b.jsonl", specbench_line("vicuna-7b", steps))
    assert code == 0 and counts["gamma"].iloc[0] == 3 and any("inferred" in note for note in payload["notes"])
    code, err, _ = run_import(tmp_path, capsys, "specbench", "c.jsonl", specbench_line("vicuna-7b-v1.3-eagle2", steps))
    assert code == 2 and "trees are not supported" in err
    code, err, _ = run_import(tmp_path, capsys, "specbench", "d.jsonl", specbench_line("vicuna-7b-v1.3-pld", steps))
    assert code == 2 and "variable number" in err and "2.200" in err
    code, err, _ = run_import(tmp_path, capsys, "specbench", "e.jsonl",
                              specbench_line("vicuna-7b", [2.7, 1.5, 3.9]))  # type: ignore[list-item]
    assert code == 2 and "whole number" in err
    code, err, _ = run_import(tmp_path, capsys, "specbench", "f.jsonl", specbench_line("vicuna-7b", [3, 1000000001]))
    assert code == 2 and "not one an engine drafts" in err


# --- outputs that would destroy data ---------------------------------------------------------------------

def test_outputs_inside_a_trace_folder_are_refused(tmp_path, capsys, two_kind_traces):
    root, _ = two_kind_traces
    shard = next((root / "sequences").glob("*.parquet"))
    before = shard.read_bytes()
    assert main(["traces", "counts", str(root), "--out", str(shard)]) == 2
    assert "inside the trace folder" in capsys.readouterr().err
    source = tmp_path / "m.txt"
    source.write_text(vllm_series("m", "0", 10, 30, 15, [8, 5, 2]))
    assert main(["import", "vllm", str(source), "--out", str(shard), *COMMON]) == 2
    assert "inside the trace folder" in capsys.readouterr().err
    assert shard.read_bytes() == before


def test_run_metadata_that_is_not_an_object_is_refused(tmp_path, capsys, two_kind_traces):
    import shutil

    root, _ = two_kind_traces
    copy = tmp_path / "traces"
    shutil.copytree(root, copy)
    run = next((copy / "runs").glob("*.json"))
    run.write_text(json.dumps([{"run_id": run.stem}]))
    assert main(["traces", "check", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a JSON object, got a list" in err


def test_aiperf_records_with_sparse_histograms(tmp_path, capsys):
    # aiperf 0.13 MetricRecordInfo lines; the histogram's zero buckets dropped and its keys strings.
    acceptance = {"engine": "vllm", "mean_acceptance_length": 2.0, "draft_acceptance_rate": 1 / 3,
                  "acceptance_histogram": {"0": 2, "3": 2}, "num_accepted_draft_tokens": 6, "num_draft_tokens": 12,
                  "num_spec_steps": 4, "num_spec_tokens": 3, "completion_tokens": 11}
    lengths = {"input_sequence_length": {"value": 40, "unit": "tokens"}}
    records = [{"metadata": {"x_request_id": "a"}, "metrics": lengths,
                "spec_decode_acceptance": acceptance},
               {"metadata": {"x_request_id": "b"}, "metrics": {}, "spec_decode_acceptance": None}]
    code, payload, counts = run_import(tmp_path, capsys, "aiperf", "p.jsonl", "\n".join(map(json.dumps, records)))
    # Steps accepting 0, 0, 3, 3: index 0 evaluated 4 accepted 2; indices 1, 2 evaluated 2 accepted 2.
    assert code == 0 and by_index(counts, "evaluated") == [4, 2, 2] and by_index(counts, "accepted") == [2, 2, 2]
    assert read_counts_lengths(tmp_path / "p.jsonl.parquet")[["prompt_len", "output_len"]].values.tolist() == [[40, 11]]


def test_counts_of_many_groups_are_selected_by_task_and_drafter(tmp_path, capsys, two_kind_traces):
    root, _ = two_kind_traces
    counts = tmp_path / "all.parquet"
    assert main(["traces", "counts", str(root), "--out", str(counts)]) == 0
    capsys.readouterr()
    table = read_counts(counts)
    first = table.iloc[0]
    lengths = tmp_path / "w.csv"
    lengths.write_text("prompt_len,output_len\n50,40\n90,60\n")
    command = ["simulate", "counts", str(counts), "--lengths-from", str(lengths), "--cost-ratio", "0.05", "--json"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{first['task']}/{first['drafter']}/" in err and "--task" in err
    assert main([*command, "--task", str(first["task"]), "--drafter", str(first["drafter"]),
                 "--temperature", str(first["temperature"])]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["speedup_low"] <= payload["speedup"] <= payload["speedup_high"]
    assert main([*command, "--task", "nosuch"]) == 2
    assert "no group of the counts matches" in capsys.readouterr().err


def test_a_fit_from_every_importer_that_resolves_positions(tmp_path, capsys):
    import pandas as pd

    from specsim.traces.counts import write_counts

    meta = sglang_meta("0.5.23", 40, 56, 3, [10, 12, 10, 8])
    vllm_request = {"acceptance_histogram": [12, 10, 10, 8], "num_spec_steps": 40, "num_accepted_draft_tokens": 54,
                    "num_draft_tokens": 120, "num_spec_tokens": 3}
    bench = {"spec_decode_num_drafts": 400, "spec_decode_draft_tokens": 1200, "spec_decode_accepted_tokens": 500,
             "spec_decode_per_position_acceptance_rates": [0.6, 0.4, 0.25]}
    sources = {
        "vllm": ("m.txt", vllm_series("m", "0", 500, 1500, 700, [320, 230, 150])),
        "vllm-requests": ("r.jsonl", request_line(vllm_request)),
        "vllm-bench": ("b.json", json.dumps(bench)),
        "vllm-log": ("v.log", log_line(2.2, 360, 900, [0.6, 0.4, 0.2])),
        "sglang": ("s.jsonl", json.dumps({"meta_info": meta})),
        "specbench": ("a.jsonl", specbench_line("vicuna-7b", [1, 2, 4, 3, 1, 2, 4, 4, 1, 2] * 4)),
        "aiperf": ("p.jsonl", json.dumps({"metrics": {}, "spec_decode_acceptance": {
            **vllm_request, "acceptance_histogram": {"0": 12, "1": 10, "2": 10, "3": 8}}})),
    }
    frames = []
    for index, (kind, (name, text)) in enumerate(sources.items()):
        source, out = tmp_path / name, tmp_path / f"{kind}.parquet"
        source.write_text(text)
        assert main(["import", kind, str(source), "--out", str(out), "--task", f"task-{index}", "--drafter", "d",
                     "--temperature", "0", "--gamma", "3"]) == 0, kind
        frames.append(read_counts(out))
        assert (frames[-1]["draft_index"] >= 0).all(), kind
    combined = write_counts(pd.concat(frames, ignore_index=True), tmp_path / "all.parquet")
    capsys.readouterr()
    assert main(["fit", str(combined), "--out", str(tmp_path / "fit.nc"), "--draws", "200", "--tune", "200",
                 "--chains", "2", "--no-compare", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {row["parameter"] for row in payload["posterior"]} and (tmp_path / "fit.nc").exists()


def test_engine_files_nested_deep_or_with_impossible_values_are_one_line(tmp_path, capsys):
    code, err, _ = run_import(tmp_path, capsys, "sglang", "deep.jsonl", "[" * 100_000 + "]" * 100_000)
    assert code == 2 and "nested too deeply" in err
    for name, value in (("nan", float("nan")), ("string", "12"), ("null", None)):
        meta = sglang_meta("0.5.23", 10, 12, 3, None)
        meta["spec_num_correct_drafts"] = value
        code, err, _ = run_import(tmp_path, capsys, "sglang", f"{name}.jsonl", json.dumps({"meta_info": meta}))
        assert code == 2 and "whole number" in err and "spec_num_correct_drafts" in err, name
    code, err, _ = run_import(tmp_path, capsys, "vllm", "inf.txt", vllm_series("m", "0", 10, float("inf"), 5, []),
                              "--gamma", "3")
    assert code == 2 and "finite count" in err and "--gamma" not in err


def test_a_counts_file_with_an_impossible_gamma_is_refused_before_work(tmp_path, capsys):
    import pyarrow.parquet as pq

    source = tmp_path / "m.txt"
    source.write_text(vllm_series("m", "0", 100, 300, 150, [80, 50, 20]))
    out = tmp_path / "c.parquet"
    assert main(["import", "vllm", str(source), "--out", str(out), *COMMON]) == 0
    import pyarrow as pa

    table = pq.read_table(out)
    frame = table.to_pandas().assign(gamma=10**9)
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), tmp_path / "huge.parquet")
    lengths = tmp_path / "w.csv"
    lengths.write_text("prompt_len,output_len\n10,20\n")
    capsys.readouterr()
    assert main(["simulate", "counts", str(tmp_path / "huge.parquet"), "--lengths-from", str(lengths),
                 "--cost-ratio", "0.05"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gamma" in err and "<= 64" in err

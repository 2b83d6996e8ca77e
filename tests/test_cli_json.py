"""Every command takes --json and prints one JSON document whose keys are all in the glossary."""

from __future__ import annotations

import json

import pytest

from specsim.cli import main
from specsim.glossary import GLOSSARY, undefined_keys


def _json_of(argv, capsys) -> dict:
    assert main([*argv, "--json"]) == 0, argv
    out = capsys.readouterr().out
    payload = json.loads(out)  # exactly one document: json.loads refuses trailing data
    assert isinstance(payload, dict)
    return payload


def _fast_commands(trace_dir):
    traces = str(trace_dir)
    whatif = ["--traces", traces, "--drafter", "generic-4l", "--acceptance-from", "code", "--lengths-from", "chat"]
    return {
        "traces check": ["traces", "check", traces],
        "traces summary": ["traces", "summary", traces],
        "traces compact": ["traces", "compact", traces],
        "lengths": ["lengths", traces, "--bootstrap", "5"],
        "simulate analytic": ["simulate", "analytic", "--alpha", "0.7", "--gamma", "3", "--cost-ratio", "0.1"],
        "simulate whatif": ["simulate", "whatif", *whatif, "--resamples", "5"],
        "simulate best-gamma": ["simulate", "best-gamma", *whatif],
        "simulate validate": ["simulate", "validate", traces],
    }


@pytest.mark.parametrize("command", list(_fast_commands("t")))
def test_fast_commands_print_one_glossary_document(command, trace_dir, capsys):
    payload = _json_of(_fast_commands(trace_dir)[command], capsys)
    assert not undefined_keys(payload), undefined_keys(payload)


def test_same_quantity_same_key(trace_dir, capsys):
    summary = _json_of(["traces", "summary", str(trace_dir)], capsys)
    per_index = summary["groups"][0]["acceptance_by_draft_index"]
    assert {"acceptance_rate_conditional", "acceptance_rate_unconditional"} <= set(per_index[0])
    # Unconditional <= conditional at every index; equal at index 0 (every step drafts it).
    assert per_index[0]["acceptance_rate_conditional"] == per_index[0]["acceptance_rate_unconditional"]
    assert all(r["acceptance_rate_unconditional"] <= r["acceptance_rate_conditional"] for r in per_index)
    whatif = _json_of(_fast_commands(trace_dir)["simulate whatif"], capsys)
    assert whatif["interval_level"] == 0.9 and "tokens_per_step" in whatif
    for synonym in ("speedup_mean", "tokens_per_step_mean", "mean_speedup"):
        assert synonym not in GLOSSARY


@pytest.mark.integration
def test_model_commands_print_one_glossary_document(two_kind_traces, two_kind_fit, tmp_path, capsys):
    root = str(two_kind_traces[0])
    posterior, fitted = two_kind_fit  # the shared `specsim fit --json` (tests/conftest.py)
    assert not undefined_keys(fitted), ("fit", undefined_keys(fitted))
    documents = {
        "predict": ["predict", str(posterior), "--workload", "mid", "--drafter", "generic", "--drafter-kind",
                    "generic", "--gamma", "3"],
        "report": ["report", "whatif", "--out", str(tmp_path), "--param", f"traces={root}", "--param",
                   "drafter=generic", "--param", "acceptance_from=short", "--param", "lengths_from=long",
                   "--param", "gamma=3"],
        # One fold (--task) writes every key of the document; three would only repeat them.
        # --refits 0: a refit of a fold that fails the gate at 100 draws would add a fit and no key.
        "loto": ["loto", root, "--draws", "100", "--gamma", "3", "--length-measure", "beyond_share",
                 "--probe-prompts", "2", "--task", "long", "--refits", "0"],
    }
    for name, argv in documents.items():
        payload = _json_of(argv, capsys)
        assert not undefined_keys(payload), (name, undefined_keys(payload))


@pytest.mark.slow
def test_demo_prints_one_glossary_document(two_kind_traces, tmp_path, capsys):
    # The main job end to end (three fits for the LOO comparison, the main report): about 2.5 minutes
    # here, so `make test-all` runs it and CI's suite does not; its fit's keys are the `fit` document's.
    payload = _json_of(["demo", "--traces", str(two_kind_traces[0]), "--out", str(tmp_path / "demo"), "--draws",
                        "100"], capsys)
    assert not undefined_keys(payload), undefined_keys(payload)
    assert payload["report"].endswith("main.html")


def test_tables_fit_80_columns_and_cut_no_cell(trace_dir, monkeypatch):
    import io

    from rich.console import Console

    import specsim.cli as cli
    from specsim.cli import common

    for width in (80, 120):
        screen = io.StringIO()
        monkeypatch.setattr(common, "stdout", Console(width=width, file=screen))
        assert cli.main(["traces", "summary", str(trace_dir)]) == 0
        assert cli.main(["simulate", "best-gamma", "--traces", str(trace_dir), "--drafter", "generic-4l",
                         "--acceptance-from", "code", "--lengths-from", "code"]) == 0
        cli.print_table("wide", [{"task": "explain-short", "drafter": "finetuned-docsum",
                                  **{f"a_long_measure_name_{i}": 1000.5 + i for i in range(9)}}])
        text = screen.getvalue()
        assert "…" not in text
        lines = [line for line in text.splitlines() if line.strip()]
        assert max(len(line) for line in lines) <= width
        # every cell whole: each drafter name and each number appears as written
        assert "finetuned-docsum" in text and "1008.500" in text and "generic-4l" in text


def test_table_cells_share_one_format():
    from specsim.tables import format_column

    assert format_column("ess_bulk", [959.0, 1200.0]) == ["959", "1200"]
    assert format_column("temperature", [0.0, 0.7]) == ["0", "0.7"]
    assert format_column("speedup", [1.5, 1.6, 1.76]) == ["1.500", "1.600", "1.760"]
    assert format_column("passed", [True, False]) == ["yes", "no"]
    assert format_column("x", [float("nan"), None, "text"]) == ["-", "-", "text"]


def _command_paths():
    from typer.main import get_command

    from specsim.cli import app

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(get_command(app), []))


def test_help_fits_80_columns_and_cuts_no_option(monkeypatch, capsys):
    """Every command's --help on an 80-column terminal: no line wider, no name or cell cut with an ellipsis."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    paths = _command_paths()
    assert len(paths) > 15 and ["fit"] in paths and ["simulate", "whatif"] in paths
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        assert "Usage:" in text, path
        assert "…" not in text, (path, [line for line in text.splitlines() if "…" in line])
        assert max(len(line) for line in text.splitlines()) <= 80, path

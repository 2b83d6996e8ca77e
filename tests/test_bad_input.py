"""Bad input, class by class: every case exits 2 with one line on stderr, no traceback, and leaves
files that existed before untouched (byte for byte).

Classes (issue "every bad input one clear line"): outputs (1), impossible values in traces (2,
with the validator's own tests in test_traces.py), numbers out of range (3), files of the wrong
shape (4), unbounded work (5), noise around errors (7). Concurrent writers (6) are tested in
test_traces.py (run lock, live temporaries) and test_collect.py (two ranks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specsim.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted(two_kind_fit):
    """The shared real fit of the two-kind traces (``tests/conftest.py``), read back: the posterior the cases break."""
    from specsim.model import load_posterior

    return load_posterior(two_kind_fit[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory, two_kind_traces, fitted):
    import dataclasses

    from specsim.model.artifact import save_posterior

    root, tables = two_kind_traces
    folder = tmp_path_factory.mktemp("bad")
    idata, metadata = fitted.idata, fitted.metadata
    real = save_posterior(idata, metadata, folder / "real.nc")
    for name, change in {"meta_sd_text.nc": {"cost_run_log_sd": "high"}, "meta_tasks_number.nc": {"tasks": 5},
                         "meta_kind_unknown.nc": {"drafter_kinds": {"generic": "sideways"}}}.items():
        save_posterior(idata, dataclasses.replace(metadata, **change), folder / name)
    from specsim.traces.counts import counts_from_traces, write_counts

    counts = counts_from_traces(tables["tokens"], tables["steps"], tables["sequences"], source="synthetic")
    unmeasured = counts[(counts["task"] == "mid") & (counts["drafter"] == "generic")].copy()
    unmeasured[["evaluated", "accepted"]] = 0
    write_counts(unmeasured, folder / "unmeasured.parquet")
    write_counts(pd.concat([counts[counts["task"] != "mid"], unmeasured]), folder / "unmeasured_cell.parquet")
    (folder / "alias_bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\n"
                                            "target: smollm2\nprompts: *b\n")
    existing = folder / "existing.nc"
    existing.write_bytes(b"an earlier posterior")
    paths = {"traces": root, "folder": folder, "existing": existing, "a_file": folder / "a_file", "real": real}
    paths["a_file"].write_text("not a folder")
    for name, content in {
        "nan.csv": "prompt_len,output_len\n10,nan\n", "inf.csv": "prompt_len,output_len\n10,inf\n",
        "text.csv": "prompt_len,output_len\n10,many\n", "fraction.csv": "prompt_len,output_len\n10,2.5\n",
        "huge.csv": "prompt_len,output_len\n10,1000000000\n", "empty.csv": "prompt_len,output_len\n",
        "negative.csv": "prompt_len,output_len\n-1,10\n", "foreign.nc": "CDF\x01 not really netcdf",
        "profile_bad.json": '{"draft_base_s": -1, "target_base_s": 1}', "profile_text.json": "c = 0.1",
        "lengths.dat": "1,2\n", "list_bad.txt": "120\n1,2\n",
        "profile_single.json": '{"target_base_s": 0.03, "verify_base_s": 0.03}',
        "profile_nan_table.json": '{"target_base_s": 1, "verify_table": {"4": NaN}}',
        "profile_list_table.json": '{"target_base_s": 1, "verify_table": [0.1, 0.2]}',
        "wrong_headers.csv": "a,b\n1,2\n", "two.csv": "output_len\n50\n60\n",
        "profile_deep.json": "[" * 100_000 + "]" * 100_000,
    }.items():
        (folder / name).write_text(content)
    probe = pd.DataFrame({"task": ["t"] * 2, "drafter": ["d"] * 2, "prompt_id": ["p"] * 2, "position": [0, 1],
                          "context_len": [10, 11], "agree": [1, 5]})
    probe.to_parquet(folder / "probe_agree5.parquet")
    probe.assign(agree=[True, False], position=[0.0, np.nan]).to_parquet(folder / "probe_nan.parquet")
    from specsim.simulate.cost import COST_PROFILE_FORMAT
    from specsim.simulate.load import Roofline, roofline_cost_models

    models = roofline_cost_models(Roofline(0.02, 0.001), None, [1, 2, 4], [1, 2, 4])
    (folder / "profile_batches.json").write_text(json.dumps({
        "format": COST_PROFILE_FORMAT, "version": 2, "cost_model": models[1].to_dict(False),
        "cost_models_by_batch": {str(b): m.to_dict(False) for b, m in models.items()}}))
    return paths


def _cases(p):
    traces, folder = str(p["traces"]), p["folder"]
    whatif = ["simulate", "whatif", "--traces", traces, "--drafter", "generic", "--acceptance-from", "short",
              "--resamples", "5"]
    return {
        # (1) outputs checked before the work starts
        "fit --out under a file": (["fit", traces, "--out", str(p["a_file"] / "p.nc")], "not a folder"),
        "fit --out not .nc": (["fit", traces, "--out", str(folder / "p.txt")], "must end in .nc"),
        "report --out a file": (["report", "main", "--out", str(p["a_file"])], "exists and is not a folder"),
        "demo --out a file": (["demo", "--traces", traces, "--out", str(p["a_file"])], "exists and is not a folder"),
        "report unknown": (["report", "nosuch"], "no report 'nosuch'"),
        # (3) numbers out of range, refused at parse time
        "fit --draws 0": (["fit", traces, "--out", str(p["existing"]), "--draws", "0"], "--draws"),
        "fit --draws -5": (["fit", traces, "--out", str(p["existing"]), "--draws", "-5"], "--draws"),
        "fit --chains 0": (["fit", traces, "--out", str(p["existing"]), "--chains", "0"], "--chains"),
        "fit --target-accept 1": (["fit", traces, "--out", str(p["existing"]), "--target-accept", "1"],
                                  "--target-accept"),
        "fit --mass-matrix dense": (["fit", traces, "--out", str(folder / "m.nc"), "--mass-matrix", "dense"],
                                    "--mass-matrix"),
        "fit --parameterisation sideways": (["fit", traces, "--out", str(folder / "m.nc"), "--parameterisation",
                                             "sideways"], "--parameterisation"),
        "demo --draws 0": (["demo", "--traces", traces, "--draws", "0"], "--draws"),
        "loto --probe-prompts at temperature 0.7": (["loto", traces, "--temperature", "0.7", "--probe-prompts", "3"],
                                                    "--probe-prompts"),
        "whatif --resamples 0": ([*whatif, "--lengths-from", "mid", "--resamples", "0"], "--resamples"),
        "whatif --temperature inf": ([*whatif, "--lengths-from", "mid", "--temperature", "inf"], "--temperature"),
        "whatif --cost-ratio -1": ([*whatif, "--lengths-from", "mid", "--cost-ratio", "-1"], "--cost-ratio"),
        "whatif --gamma 0": ([*whatif, "--lengths-from", "mid", "--gamma", "0"], "--gamma"),
        "predict --level 1.5": (["predict", str(p["existing"]), "--workload", "mid", "--level", "1.5"], "--level"),
        "predict --level -1": (["predict", str(p["existing"]), "--workload", "mid", "--level", "-1"], "--level"),
        "predict --gamma 0": (["predict", str(p["existing"]), "--workload", "mid", "--gamma", "0"], "--gamma"),
        "analytic --cost-ratio nan": (["simulate", "analytic", "--alpha", "0.5", "--gamma", "2", "--cost-ratio",
                                       "nan"], "--cost-ratio"),
        "analytic --alpha text": (["simulate", "analytic", "--alpha", "x", "--gamma", "2", "--cost-ratio", "0"],
                                  "--alpha"),
        "lengths --bootstrap 1e9": (["lengths", traces, "--bootstrap", "1000000000"], "--bootstrap"),
        # (4) files of the wrong shape
        **{f"workload {name}": ([*whatif, "--lengths-from", str(folder / name)], message) for name, message in (
            ("nan.csv", "not a whole number"), ("inf.csv", "not a whole number"),
            ("text.csv", "not a whole number"), ("fraction.csv", "not a whole number"),
            ("empty.csv", "no rows"), ("negative.csv", "prompt_len >= 0"))},
        "workload not a lengths file": ([*whatif, "--lengths-from", str(folder / "lengths.dat")], "no task"),
        "workload list not numbers": ([*whatif, "--lengths-from", str(folder / "list_bad.txt")],
                                      "line 2: '1,2' is not a whole number"),
        "posterior from another tool": (["predict", str(folder / "foreign.nc"), "--workload", "mid"],
                                        "not a readable posterior"),
        "posterior missing": (["predict", str(folder / "missing.nc"), "--workload", "mid"], "no such posterior"),
        "cost profile negative": ([*whatif, "--lengths-from", "mid", "--cost-profile",
                                   str(folder / "profile_bad.json")], "draft_base_s"),
        "cost profile not JSON": ([*whatif, "--lengths-from", "mid", "--cost-profile",
                                   str(folder / "profile_text.json")], "not a JSON cost profile"),
        "both cost options": ([*whatif, "--lengths-from", "mid", "--cost-ratio", "0.1", "--cost-profile",
                               str(folder / "profile_bad.json")], "not both"),
        "traces missing": (["traces", "summary", str(folder / "nothing")], "no such trace directory"),
        "compact missing": (["traces", "compact", str(folder / "nothing")], "no such trace directory"),
        "cost profile NaN verify entry": ([*whatif, "--lengths-from", "mid", "--cost-profile",
                                           str(folder / "profile_nan_table.json")], "verify_table"),
        "cost profile nested 100000 deep": ([*whatif, "--lengths-from", "mid", "--cost-profile",
                                             str(folder / "profile_deep.json")], "not a JSON cost profile"),
        # speed-up under load
        "whatif --concurrency 0": ([*whatif, "--lengths-from", "mid", "--concurrency", "0"], "--concurrency"),
        "whatif --concurrency with fitted costs": ([*whatif, "--lengths-from", "mid", "--concurrency", "4"],
                                                   "fitted costs are at batch size 1"),
        "whatif --concurrency past the profile": ([*whatif, "--lengths-from", "mid", "--concurrency", "64",
                                                   "--cost-profile", str(folder / "profile_batches.json")],
                                                  "outside the measured batch sizes (1, 2, 4)"),
        "load on a batch-1 profile": (["simulate", "load", *whatif[2:8], "--lengths-from", "mid", "--cost-profile",
                                       str(folder / "profile_single.json")], "batch size 1 only"),
        "profile --batch-size 0": (["profile", "--target", "smollm2", "--drafter", "prompt-lookup", "--out",
                                    str(folder / "p.json"), "--batch-size", "1,0"], "--batch-size"),
        "probe agreement 5": (["predict", str(p["existing"]), "--workload", "mid", "--drafter", "d", "--probe",
                               str(folder / "probe_agree5.parquet")], "agree: row 2: must be 0 or 1"),
        "probe NaN position": (["predict", str(p["existing"]), "--workload", "mid", "--drafter", "d", "--probe",
                                str(folder / "probe_nan.parquet")], "position: row 2: must be a finite number"),
        "loto --gamma not in the traces": (["loto", traces, "--gamma", "7"], "no traces at gamma 7"),
        "loto --temperature not in the traces": (["loto", traces, "--temperature", "0.5"],
                                                 "no traces at temperature 0.5"),
        "loto --task not in the traces": (["loto", traces, "--gamma", "3", "--task", "nosuch"],
                                          "--task: no task nosuch"),
        "cost profile verify_table a list": ([*whatif, "--lengths-from", "mid", "--cost-profile",
                                              str(folder / "profile_list_table.json")], "verify_table: must map"),
        "workload without output_len": ([*whatif, "--lengths-from", str(folder / "wrong_headers.csv")],
                                        "no output_len column (columns: a, b)"),
        "whatif --acceptance-from unknown lists tasks": ([*whatif[:7], "chat", *whatif[8:], "--lengths-from", "mid"],
                                                         "its tasks at temperature 0: long, mid, short"),
        "whatif --lengths-from at a temperature it lacks": ([*whatif, "--lengths-from", "mid", "--temperature",
                                                             "0.3"], "task 'mid' has no sequences at temperature 0.3"),
        # posteriors: metadata of the wrong type or meaning, values beyond the fit's measure
        "posterior metadata text for a number": (["predict", str(folder / "meta_sd_text.nc"), "--workload", "mid"],
                                                 "meta_sd_text.nc: cost_run_log_sd: posterior metadata must be a "
                                                 "number, got 'high'"),
        "posterior metadata number for a list": (["predict", str(folder / "meta_tasks_number.nc"), "--workload",
                                                  "mid"], "meta_tasks_number.nc: tasks: posterior metadata must be "
                                                          "a list"),
        "posterior metadata unknown kind": (["predict", str(folder / "meta_kind_unknown.nc"), "--workload", "mid"],
                                            "drafter_kinds: posterior metadata 'generic': 'sideways'"),
        "predict --divergence 1e300": (["predict", str(p["real"]), "--workload", "mid", "--drafter", "generic",
                                        "--divergence", "1e300"], "--divergence: must be a finite js divergence in "
                                                                  "[0, 1]"),
        "predict --level 0": (["predict", str(p["real"]), "--workload", "mid", "--level", "0"],
                              "--level: must be a number > 0 and < 1"),
        # counts in which nothing was measured
        "simulate counts of an unmeasured group": (["simulate", "counts", str(folder / "unmeasured.parquet"),
                                                    "--lengths-from", str(folder / "two.csv"), "--cost-ratio",
                                                    "0.05"], "0 drafted tokens were evaluated"),
        "fit counts with an unmeasured cell": (["fit", str(folder / "unmeasured_cell.parquet"), "--out",
                                                str(folder / "never.nc"), "--draws", "10"],
                                               "task mid, drafter generic: 0 drafted tokens were evaluated"),
        # report parameters go through the checks of the options they mirror
        "report --param cost_ratio=-0.5": (["report", "whatif", "--param", "cost_ratio=-0.5", "--out",
                                            str(folder / "pages")], "--param cost_ratio: must be a finite number >= 0"),
        "report --param cost_ratio=NaN": (["report", "whatif", "--param", "cost_ratio=NaN", "--out",
                                           str(folder / "pages")], "--param cost_ratio: must be finite"),
        "report --param traces missing": (["report", "whatif", "--param", f"traces={folder / 'nothing'}", "--out",
                                           str(folder / "pages")], "--param traces: no such folder"),
        "report --param unknown": (["report", "counts", "--param", "colour=1", "--out", str(folder / "pages")],
                                   "unknown parameter 'colour'; report counts takes"),
        "report cell refuses in specsim's words": (["report", "counts", "--out", str(folder / "pages")],
                                                   "error: report counts: give the counts file"),
        # (5) unbounded work
        "workload output 1e9": ([*whatif, "--lengths-from", str(folder / "huge.csv")], "not supported"),
        "loto --draws 1e9": (["loto", traces, "--draws", "1000000000"], "--draws"),
        "loto --refits 3": (["loto", traces, "--refits", "3"], "--refits"),
        "report --param max_gamma=1e8": (["report", "counts", "--param", "max_gamma=100000000", "--out",
                                          str(folder / "pages")], "--param max_gamma: must be a finite whole number"),
        "collect config with YAML aliases": (["collect", "--config", str(folder / "alias_bomb.yaml")],
                                             "line 2: aliases (*name) are not supported"),
        # (7) messages name the option the user typed
        "whatif unknown task": ([*whatif, "--lengths-from", "nosuchtask"], "--lengths-from: no task"),
        "whatif unknown drafter": ([*whatif[:5], "nobody", *whatif[6:], "--lengths-from", "mid"], "--drafter"),
        "unknown option": (["simulate", "whatif", "--nosuch"], "No such option"),
    }


_PLACEHOLDERS = {"traces": Path("t"), "folder": Path("f"), "existing": Path("e"), "a_file": Path("a"),
                 "real": Path("r")}
CASE_NAMES = list(_cases(_PLACEHOLDERS))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(files, case, capsys):
    argv, message = _cases(files)[case]
    before = {p: p.read_bytes() for p in files["folder"].iterdir() if p.is_file()}
    assert main(argv) == 2, case
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and message in err, err
    after = {p: p.read_bytes() for p in files["folder"].iterdir() if p.is_file()}
    assert after == before


def test_case_count_by_class():
    # The issue asks for a note of how many cases the suite tries, by class; this keeps the count honest.
    cases = _cases(_PLACEHOLDERS)
    assert len(cases) == len(CASE_NAMES) >= 35


SAVER = """
import sys
from specsim.model import load_posterior
from specsim.model.artifact import save_posterior
posterior = load_posterior(sys.argv[1])
print("ready", flush=True)
for _ in range(1000):
    save_posterior(posterior.idata, posterior.metadata, sys.argv[1])
"""


def _kill_mid_save(saver: str, path, replacements: int) -> None:
    """Run a saver script that keeps replacing ``path``; SIGKILL it once the file changed a few times.

    Waits on the file itself, never on a clock: the kill lands mid-save most of the time.
    """
    process = subprocess.Popen([sys.executable, "-c", saver, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == b"ready"
    seen = {path.stat().st_mtime_ns}
    while len(seen) < replacements and process.poll() is None:
        seen.add(path.stat().st_mtime_ns)
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.integration
def test_posterior_save_killed_midway_leaves_a_readable_file(tmp_path, fitted):
    from specsim.model import load_posterior
    from specsim.model.artifact import save_posterior

    path = save_posterior(fitted.idata, fitted.metadata, tmp_path / "p.nc")
    _kill_mid_save(SAVER, path, replacements=4)
    loaded = load_posterior(path)
    assert loaded.metadata.to_json() == fitted.metadata.to_json()
    np.testing.assert_array_equal(loaded.draws["intercept"], fitted.draws["intercept"])


REPORT_SAVER = """
import sys
from pathlib import Path
from specsim.traces.store import atomic_write_bytes
path = Path(sys.argv[1])
pages = [path.read_bytes(), b"<html>" + b"n" * 6_000_000 + b"</html>"]
print("ready", flush=True)
for number in range(1000):
    atomic_write_bytes(path, pages[number % 2])  # what render_report does with the exported HTML
"""


@pytest.mark.integration
def test_report_save_killed_midway_leaves_a_whole_page(tmp_path):
    path = tmp_path / "main.html"
    old = b"<html>" + b"o" * 6_000_000 + b"</html>"
    path.write_bytes(old)
    _kill_mid_save(REPORT_SAVER, path, replacements=6)
    # The page is one of the two whole pages, never a torn or empty one.
    assert path.read_bytes() in (old, b"<html>" + b"n" * 6_000_000 + b"</html>")


def test_lengths_file_shapes_are_validated(tmp_path):
    from specsim.errors import InputError
    from specsim.workload import read_lengths_file

    path = tmp_path / "ok.jsonl"
    path.write_text("\n".join(json.dumps({"prompt_len": p, "output_len": o}) for p, o in ((10, 5), (20, 7))))
    frame = read_lengths_file(path)
    assert frame["output_len"].tolist() == [5, 7] and frame["output_len"].dtype == np.int64
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"prompt_len": [1.0], "output_len": [np.inf]}).to_parquet(bad)
    with pytest.raises(InputError, match="output_len: row 1: inf is not a whole number"):
        read_lengths_file(bad)


def test_workloads_in_the_shapes_users_have(tmp_path, trace_dir, capsys):
    from specsim.workload import NO_PROMPT_ASSUMPTION, resolve_workload

    listing = tmp_path / "outputs.txt"
    listing.write_text("120\n80\n\n300\n")
    workload = resolve_workload(str(listing))
    assert workload.output_lengths.tolist() == [120, 80, 300] and workload.prompt_lengths.tolist() == [0, 0, 0]
    assert workload.assumption == NO_PROMPT_ASSUMPTION
    only_outputs = tmp_path / "outputs.csv"
    only_outputs.write_text("output_len\n50\n60\n")
    assert resolve_workload(str(only_outputs)).assumption == NO_PROMPT_ASSUMPTION
    assert main(["simulate", "whatif", "--traces", str(trace_dir), "--drafter", "generic-4l", "--acceptance-from",
                 "code", "--lengths-from", str(listing), "--resamples", "5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["workload_assumption"] == NO_PROMPT_ASSUMPTION and payload["n_sequences"] == 3


def test_debug_works_after_the_subcommand_too(tmp_path):
    from specsim.errors import InputError

    assert main(["traces", "summary", str(tmp_path / "none")]) == 2
    for argv in (["--debug", "traces", "summary", str(tmp_path / "none")],
                 ["traces", "summary", str(tmp_path / "none"), "--debug"]):
        with pytest.raises(InputError, match="no such trace directory"):
            main(argv)


def test_a_shard_with_zero_rows_reads(tmp_path, trace_dir, capsys):
    import shutil

    import pyarrow.parquet as pq

    folder = tmp_path / "copy"
    shutil.copytree(trace_dir, folder)
    for table in ("tokens", "steps", "sequences"):
        shard = sorted((folder / table).glob("*.parquet"))[0]
        empty = pq.read_table(shard).slice(0, 0)
        pq.write_table(empty, folder / table / "run-empty-00000.parquet")
    assert main(["traces", "check", str(folder)]) == 0
    assert main(["traces", "summary", str(folder), "--json"]) == 0
    assert main(["simulate", "validate", str(folder), "--json"]) == 0
    assert main(["lengths", str(folder), "--json"]) == 0
    assert main(["traces", "compact", str(folder), "--json"]) == 0
    assert main(["traces", "check", str(folder)]) == 0
    capsys.readouterr()


def test_workload_size_bound_names_itself(tmp_path, monkeypatch):
    import specsim.workload as workload
    from specsim.errors import InputError

    monkeypatch.setattr(workload, "MAX_WORKLOAD_SEQUENCES", 3)
    path = tmp_path / "four.csv"
    path.write_text("output_len\n1\n2\n3\n4\n")
    with pytest.raises(InputError, match="4 sequences; at most 3 are supported"):
        workload.read_lengths_file(path)


PREDICT_UNDER_A_MEMORY_CAP = """
import resource, sys
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
n = 600_000  # nearly every (prompt, output) pair distinct: no collapse helps
pd.DataFrame({"prompt_len": rng.integers(0, 1_000_000, n), "output_len": rng.integers(1, 512, n)}).to_parquet(
    sys.argv[2])
resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[3]), int(sys.argv[3])))
from specsim.cli import main
sys.exit(main(["predict", sys.argv[1], "--workload", sys.argv[2], "--drafter", "generic", "--json"]))
"""


@pytest.mark.integration
def test_predict_memory_stays_one_workload_whatever_the_draws(files, tmp_path):
    # 400 draws each kept three per-sequence arrays: 6e5 sequences needed about 6 GB (2e6: 19 GB
    # resident, measured). Now a draw keeps two numbers; the child runs under a 2.5 GB data cap.
    completed = subprocess.run([sys.executable, "-c", PREDICT_UNDER_A_MEMORY_CAP, str(files["real"]),
                                str(tmp_path / "big.parquet"), str(5 * 2**29)], cwd=REPO, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["n_sequences"] == 600_000


def test_report_parameter_checks_cover_each_report_exactly():
    import jupytext

    from specsim.report import report_sources
    from specsim.report.params import REPORT_PARAMETERS

    for source in sorted(report_sources().glob("*.py")):
        notebook = jupytext.read(source)
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        names = {line.split("=")[0].split(":")[0].strip() for line in cell.source.splitlines()
                 if "=" in line and not line.lstrip().startswith("#")}
        assert set(REPORT_PARAMETERS[source.stem]) == names, source.stem


@pytest.mark.integration
def test_fit_speaks_in_specsim_lines_only(two_kind_traces, tmp_path):
    # ArviZ's refactor FutureWarning, its Pareto-k UserWarnings and "Shape validation failed" log,
    # PyMC's short-chain line and statsmodels' warnings each came with a path and a source line.
    completed = subprocess.run([sys.executable, "-m", "specsim.cli", "fit", str(two_kind_traces[0]), "--out",
                                str(tmp_path / "p.nc"), "--draws", "10", "--tune", "30", "--chains", "1",
                                "--no-compare"],
                               cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    err = completed.stderr
    assert "Warning:" not in err and ".py:" not in err and "arviz" not in err.lower() and "samples per chain" not in err
    assert err == "" or err.startswith(("note: ", "warning: ")), err

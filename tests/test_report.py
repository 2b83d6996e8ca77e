from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import InputError
from specsim.report import execute_notebook, notebook_errors, parse_params, render_report

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def rendered(two_kind_traces, two_kind_fit, tmp_path_factory):
    root, _ = two_kind_traces
    out = tmp_path_factory.mktemp("reports")
    posterior, _ = two_kind_fit
    main_html = render_report("main", {"traces": str(root), "posterior": str(posterior), "gamma": 3, "cost_ratio": 0.05,
                                       "lengths_traces": str(REPO / "data" / "traces" / "lengths")}, out)
    whatif_html = render_report("whatif", {"traces": str(root), "drafter": "ft-short", "acceptance_from": "short",
                                           "lengths_from": "long", "gamma": 3}, out)
    return main_html, whatif_html


def _screenshot(html: Path, png: Path) -> np.ndarray:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={png.parent / 'chromium-profile'}", "--window-size=1280,3000",
                    f"--screenshot={png}", html.resolve().as_uri()], check=True, capture_output=True)
    return plt.imread(png)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
@pytest.mark.parametrize("which", [0, 1])
def test_reports_render_in_a_real_browser(rendered, tmp_path, which):
    html = rendered[which]
    text = html.read_text()
    figures = len(re.findall(r'<img[^>]*src="data:image/png;base64', text))
    assert figures >= (6 if which == 0 else 1)
    assert "Traceback" not in text and 'class="ansi-red-fg"' not in text
    title = re.search(r"<title>(.*?)</title>", text, flags=re.S).group(1).strip()
    assert title and title != "Notebook", title  # the report's own title, as Quarto gives it
    assert "vnd.jupyter.stderr" not in re.sub(r"<style.*?</style>", "", text, flags=re.S)
    image = _screenshot(html, tmp_path / "shot.png")
    assert image.shape[0] >= 3000 and image.shape[1] >= 1280
    # A real page: not blank, with dark text on a light background and coloured figures.
    assert image[..., :3].std() > 0.05
    assert (image[..., :3].mean(axis=2) < 0.3).mean() > 0.002


WIDTH_PROBE = """<script>
window.addEventListener("load", () => {
  const page = document.documentElement.clientWidth;
  const widest = Math.max(0, ...[...document.querySelectorAll("table")].map(t => t.getBoundingClientRect().right));
  document.body.setAttribute("data-probe", JSON.stringify({page: page, widest_table_right: widest}));
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
@pytest.mark.parametrize("which", [0, 1])
def test_tables_fit_the_page_and_are_rounded(rendered, tmp_path, which):
    html = rendered[which].read_text()
    # Laid out by the real browser at the width a reader uses: no table runs past the page.
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", WIDTH_PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,2000",
                          "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()],
                         check=True, capture_output=True, text=True).stdout
    measured = json.loads(html_lib.unescape(re.search(r'data-probe="([^"]+)"', dom).group(1)))
    assert 0 < measured["widest_table_right"] <= measured["page"], measured
    # No raw float with more than 4 significant digits in any table cell.
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html, flags=re.S)
    assert cells
    for cell in cells:
        for number in re.findall(r"\d+\.\d+", re.sub(r"<[^>]+>", "", cell)):
            assert len(number.replace(".", "").lstrip("0")) <= 4, cell
    # A verdict block a practitioner can act on, first thing after the title.
    text = re.sub(r"<[^>]+>", " ", html)
    assert re.search(r"is expected (to be|at) [0-9.]+x", text)
    assert "Where the data end" in text or "measured (up to" in text


def test_figures_need_axis_labels():
    from specsim.report.present import show

    figure, axes = plt.subplots()
    axes.plot([0, 1], [0, 1])
    axes.set_xlabel("x")
    with pytest.raises(ValueError, match="lacks an axis label"):
        show(figure)
    plt.close(figure)


def test_main_report_answers_in_numbers(rendered):
    text = re.sub(r"<[^>]+>", " ", rendered[0].read_text())
    assert "The answer, in numbers" in text
    assert re.search(r"fine-tuned\s+drafters, \+0.1 of length divergence moves logit acceptance by [+-]\d", text)
    assert "Sampler diagnostics" in text
    # The length-controlled experiment beside the content effect, in numbers with intervals.
    assert re.search(r"Length effect for\s+ft-long\s+\(ctx-2048 minus ctx-128\): [+-]\d\.\d{3} acceptance \(90%", text)
    # Lengths that move, and the chosen hardware's costs beside the traces' own.
    assert "Speed-up as the workload's lengths move" in text and "constant cost ratio c = 0.05" in text


def test_quickstart_notebook_executes(two_kind_traces, tmp_path):
    root, _ = two_kind_traces
    notebook = execute_notebook(REPO / "notebooks" / "quickstart.py", {"traces": str(root), "gamma": 3}, tmp_path)
    assert notebook_errors(notebook) == []
    outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "acceptance on" in outputs


def test_report_bad_input(two_kind_traces, tmp_path, capsys):
    root, _ = two_kind_traces
    assert main(["report", "nosuchreport", "--out", str(tmp_path)]) == 2
    assert "no report 'nosuchreport'" in capsys.readouterr().err
    assert main(["report", "whatif", "--param", "colour=blue", "--out", str(tmp_path)]) == 2
    assert "unknown parameter" in capsys.readouterr().err
    assert main(["report", "whatif", "--param", f"traces={root}", "--param", "drafter=nobody",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: report whatif: ") and "nobody" in err and "sources/" not in err, err
    assert not (tmp_path / "whatif.html").exists()
    with pytest.raises(InputError):
        parse_params(["novalue"])
    assert parse_params(["gamma=4", "traces=a/b"]) == {"gamma": 4, "traces": "a/b"}


def test_counts_report_from_an_engines_counts(tmp_path):
    counts, lengths = tmp_path / "c.parquet", tmp_path / "w.csv"
    assert main(["import", "vllm", str(REPO / "tests" / "fixtures" / "vllm_metrics.txt"), "--out", str(counts),
                 "--task", "chat", "--drafter", "eagle"]) == 0
    lengths.write_text("prompt_len,output_len\n200,150\n800,300\n")
    html = render_report("counts", {"counts": str(counts), "lengths_from": str(lengths), "cost_ratio": 0.05},
                         tmp_path)
    text = re.sub(r"<[^>]+>", " ", html.read_text())
    # vLLM's counters give 2.9 tokens per step: at c = 0.05 the verdict is "faster", with the best gamma.
    assert "is expected to be" in text and "faster than plain decoding" in text
    assert "best draft length here is gamma" in text
    assert "per-position counts are over drafts" in text


def test_figures_keep_legends_outside_plain_log_ticks_and_whole_draft_indices():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specsim.report.present import show

    figure, (left, right) = plt.subplots(1, 2)
    for name in ("generic-4l", "finetuned-code"):
        left.plot([0, 1, 2, 3], [0.8, 0.6, 0.5, 0.4], label=name)
        right.plot([10, 100, 1000], [0.6, 4.0, 40.0], label=name)
    left.set(xlabel="draft index", ylabel="conditional acceptance")
    right.set(xlabel="context length", ylabel="seconds", xscale="log", yscale="log")
    left.legend()
    right.legend()
    show(figure)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axes in (left, right):
        legend_box = axes.get_legend().get_window_extent(renderer)
        assert legend_box.x0 >= axes.get_window_extent(renderer).x1  # beside the axes, over no data mark
    for axis in (right.xaxis, right.yaxis):  # plain numbers, not mathtext powers of ten
        labels = [tick.get_text() for tick in axis.get_ticklabels() if tick.get_text()]
        assert labels and all("$" not in label for label in labels) and all(float(label) > 0 for label in labels)
    ticks = [tick for tick in left.get_xticks() if left.get_xlim()[0] <= tick <= left.get_xlim()[1]]
    assert all(float(tick).is_integer() for tick in ticks)
    plt.close(figure)


def test_the_quarto_project_renders_the_package_sources():
    import yaml

    from specsim.report import report_sources

    project = yaml.safe_load((REPO / "reports" / "_quarto.yml").read_text())
    assert project["project"]["output-dir"] == "_output"
    for page in project["project"]["render"]:
        assert (REPO / "reports" / page).resolve() == (report_sources() / page).resolve()
    # every shipped report has its page there (counts rendered with -P, as the project file says)
    assert {p.name for p in report_sources().glob("*.py")} == {p.name for p in (REPO / "reports").glob("*.py")}
    assert "reports:" in (REPO / "Makefile").read_text()

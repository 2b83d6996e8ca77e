"""Render the Quarto reports: with ``quarto render`` where Quarto is installed, else by
executing the percent script in a Jupyter kernel (jupytext + nbclient) and exporting one
self-contained HTML file (nbconvert, images embedded).

Reports are Jupyter percent scripts shipped inside the package (``specsim/report/sources/``,
found with :mod:`importlib.resources`, so ``specsim report`` works from any directory after
``pip install``); a path to another percent script renders that one. Parameters are the
assignments of the cell tagged ``parameters`` (``# %% tags=["parameters"]``), overridden by a
cell injected after it, as papermill and Quarto do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from specsim.errors import InputError

__all__ = ["report_sources", "find_report", "parse_params", "render_report", "execute_notebook", "notebook_errors"]


def report_sources() -> Path:
    """The folder of the shipped report sources (package data)."""
    from importlib.resources import files

    return Path(str(files("specsim.report") / "sources"))


def find_report(name: str) -> Path:
    """Source file of a report by name (``main``, ``whatif``) or path to a percent script."""
    path = Path(name)
    if path.suffix in (".py", ".qmd"):
        if path.is_file():
            return path
        raise InputError("no such report file", path=path, field="report")
    candidate = report_sources() / f"{name}.py"
    if candidate.is_file():
        return candidate
    available = sorted(p.stem for p in report_sources().glob("*.py"))
    raise InputError(f"no report {name!r} (available: {', '.join(available) or 'none'})", field="report")


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parsed as JSON where they are JSON (numbers, true), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"expected KEY=VALUE, got {pair!r}", field="--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def notebook_errors(notebook) -> list[str]:
    """Error outputs of an executed notebook, one line each."""
    errors = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"{output.get('ename')}: {output.get('evalue')}")
    return errors


def _front_matter_to_title(notebook) -> None:
    """Replace Quarto's raw YAML front matter by a Markdown title (Quarto itself reads the YAML)."""
    import nbformat
    import yaml

    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "raw" and cell.source.strip().startswith("---"):
            header = yaml.safe_load(cell.source.strip().strip("-")) or {}
            notebook.cells[index] = nbformat.v4.new_markdown_cell(f"# {header.get('title', '')}")
            if header.get("title"):
                notebook.metadata["title"] = str(header["title"])  # the page's <title>, as Quarto sets it
            return


def _cell_failure(error: Any) -> str:
    """One line for a failed cell: specsim's own bad-input message as it is; anything else named."""
    name, value = getattr(error, "ename", ""), getattr(error, "evalue", "")
    if name in ("InputError", "ValueError") and value:
        return str(value).splitlines()[0]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line for line in plain.splitlines() if line.strip()]
    return f"a cell failed: {name}: {value}" if name else f"a cell failed: {lines[-1] if lines else error}"


def execute_notebook(source: Path, params: Mapping[str, Any], workdir: Path, timeout: int = 1800):
    """Execute a percent script as a notebook with injected parameters; return the notebook."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = jupytext.read(source)
    _front_matter_to_title(notebook)
    if params:
        index = next((i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])),
                     None)
        if index is None:
            raise InputError("the report has no cell tagged 'parameters' to override", path=source)
        known = set()
        for line in notebook.cells[index].source.splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                known.add(line.split("=")[0].split(":")[0].strip())
        unknown = set(params) - known
        if unknown:
            raise InputError(f"unknown parameter(s) {sorted(unknown)}; the report takes {sorted(known)}",
                             field="--param")
        injected = "\n".join(f"{key} = {value!r}" for key, value in params.items())
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
            "# Injected parameters\n" + injected, metadata={"tags": ["injected-parameters"]}))
    from jupyter_client.manager import KernelManager

    # IPC sockets: a local kernel needs no TCP ports (and ipykernel warns about unencrypted TCP). Their
    # path is absolute: the kernel runs in ``workdir``, the client here.
    sockets = Path(tempfile.mkdtemp(prefix="specsim-kernel-"))
    manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "ipc"))
    client = NotebookClient(notebook, km=manager, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    try:
        # The kernel's own log goes nowhere: cell output and errors come back as messages.
        client.execute(stderr=subprocess.DEVNULL)
    except CellExecutionError as error:
        raise InputError(_cell_failure(error), field=f"report {source.stem}") from None
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return notebook


def render_report(name: str, params: Mapping[str, Any] | None = None, out_dir: str | Path = "out/reports",
                  *, use_quarto: bool | None = None) -> Path:
    """Render a report to one HTML file and return its path.

    Parameters
    ----------
    name : str
        Report name (``main``, ``whatif``) or path to a percent script.
    params : mapping, optional
        Parameter overrides.
    out_dir : str or Path
        Folder of the HTML file.
    use_quarto : bool, optional
        Force or forbid Quarto; default: use it when ``quarto`` is on the PATH.
    """
    from specsim.report.params import check_report_params
    from specsim.traces.store import atomic_write_bytes

    source = find_report(name)
    shipped = source.resolve().parent == report_sources().resolve()
    params = check_report_params(source.stem if shipped else None, dict(params or {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}.html"
    quarto = shutil.which("quarto") if use_quarto is not False else None
    if use_quarto and not quarto:
        raise InputError("quarto is not installed", field="--quarto")
    workdir = Path.cwd()
    params = {k: (str(Path(v).resolve()) if isinstance(v, str) and Path(v).exists() else v) for k, v in params.items()}
    if quarto:
        command = [quarto, "render", str(source), "--to", "html", "--output-dir", str(out_dir.resolve()),
                   "-M", "embed-resources:true"]
        for key, value in params.items():
            command += ["-P", f"{key}:{json.dumps(value) if not isinstance(value, str) else value}"]
        completed = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=os.environ.copy())
        if completed.returncode != 0:
            tail = (completed.stderr or completed.stdout).strip().splitlines()
            raise InputError(f"quarto render failed: {tail[-1] if tail else completed.returncode}", path=source)
        return target
    from nbconvert import HTMLExporter

    notebook = execute_notebook(source, params, workdir)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    exporter.exclude_input = True  # as Quarto's ``echo: false``: the report shows results, not code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    html, _ = exporter.from_notebook_node(notebook)
    atomic_write_bytes(target, html.encode("utf-8"))
    return target

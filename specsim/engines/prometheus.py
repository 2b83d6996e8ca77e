"""Speculative-decoding counters from a Prometheus ``/metrics`` scrape: vLLM's v1 engine and llama.cpp's server.

vLLM (``vllm/v1/spec_decode/metrics.py``, ``SpecDecodingProm``; labels from
``vllm/v1/metrics/loggers.py``, read at vLLM 0.34.0): counters ``vllm:spec_decode_num_drafts``
(one per request and step that scheduled draft tokens), ``vllm:spec_decode_num_draft_tokens``
(the tokens drafted, net of grammar-invalidated ones), ``vllm:spec_decode_num_accepted_tokens``
(bonus excluded) and ``vllm:spec_decode_num_accepted_tokens_per_pos{position="i"}`` (steps that
accepted indices ``0 .. i``, prefix acceptance), each with labels ``model_name`` and ``engine``.
The text exposition names them ``..._total`` (``..._created`` samples are timestamps, left out);
OpenMetrics with prometheus_client >= 0.23 and Ray's exporter write ``vllm_spec_decode_...``.
Both spellings are read.

llama.cpp's server (``/metrics``, pull request 26389): ``llamacpp:spec_decode_num_drafts``,
``..._num_draft_tokens`` and ``..._num_accepted_tokens``, totals only.

Conventions:

- **Models.** Series are grouped by ``model_name``: a scrape holding several models is refused
  unless one is selected, since they draft different lengths; the ``engine`` series of one model
  (data-parallel engines) are summed, and the import says so.
- **Windows.** A file holding two or more scrapes of one server (a series repeats) is read as
  the window between the first and the last: the counters' differences, as ``vllm bench serve``
  computes them. A counter that falls between them (a restart) is refused.
- **Short drafts.** With every draft of full length (``num_draft_tokens == num_drafts x
  gamma``) the per-position counters resolve every draft index exactly:
  ``evaluated[i] = accepted[i - 1]``. When drafts were cut short (near ``max_model_len``,
  dynamic speculative decoding, structured output, ngram drafters of vLLM <= 0.8) the counters do
  not say which drafts were short, so only the totals are imported, with the true drafted count.
- **vLLM V0** scrapes (``vllm/engine/metrics.py``, vLLM <= 0.8 with the V0 engine) are refused:
  their counters add running totals (vLLM pull request 15415) and count accepted tokens whether
  or not the prefix was accepted.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.engines.common import ImportResult, chain_rows, count_keys, pooled_rows
from specsim.errors import InputError

__all__ = ["import_scrape", "read_scrapes"]

_PREFIX = {"vllm": re.compile(r"^vllm[:_]spec_decode_"), "llamacpp": re.compile(r"^llamacpp[:_]spec_decode_")}
_COUNTERS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens", "num_accepted_tokens_per_pos")
_V0_ONLY = ("num_emitted_tokens", "draft_acceptance_rate", "efficiency")

Series = tuple[str, str, str, int]  # (counter, model_name, engine, position or -1)


def read_scrapes(path: Path, engine: str) -> tuple[list[dict[Series, float]], dict[str, float]]:
    """The speculative-decoding series of every scrape in the file, in order, and any V0-only samples.

    A new scrape starts where a series repeats. Returns the scrapes (series to value) and the
    V0 engine's samples seen (name to value of the last one).
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
        families = list(text_string_to_metric_families(text))
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text (byte {error.start}: {error.reason})", path=path) from None
    except ValueError as error:
        raise InputError(f"not a Prometheus text exposition ({str(error)[:100]})", path=path) from None
    prefix = _PREFIX[engine]
    scrapes: list[dict[Series, float]] = [{}]
    legacy: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            match = prefix.match(sample.name)
            if not match:
                continue
            name = sample.name[match.end():]
            if name.endswith("_created"):
                continue
            base = name[: -len("_total")] if name.endswith("_total") else name
            if base in _V0_ONLY:
                legacy[base] = sample.value
                continue
            if base not in _COUNTERS or not name.endswith("_total"):
                continue
            if not math.isfinite(sample.value) or sample.value < 0:
                raise InputError(f"must be a finite count >= 0, got {sample.value}", path=path, field=sample.name)
            position = -1
            if base == "num_accepted_tokens_per_pos":
                label = sample.labels.get("position", "")
                if not label.isdigit():
                    raise InputError("per-position sample without a numeric position label", path=path,
                                     field="position")
                position = int(label)
            key = (base, sample.labels.get("model_name", ""), sample.labels.get("engine", ""), position)
            if key in scrapes[-1]:
                scrapes.append({})
            scrapes[-1][key] = sample.value
    return [scrape for scrape in scrapes if scrape], legacy


def _window(scrapes: list[dict[Series, float]], path: Path) -> dict[Series, float]:
    if len(scrapes) == 1:
        return scrapes[0]
    first, last = scrapes[0], scrapes[-1]
    window = {}
    for key, value in last.items():
        before = first.get(key, 0.0)
        if value < before:
            raise InputError(f"counter {key[0]} (model {key[1]!r}, engine {key[2]!r}) fell from {before:g} to "
                             f"{value:g} between the first and the last scrape: the server restarted; import "
                             "scrapes of one run", path=path, field=key[0])
        window[key] = value - before
    return window


def _model(window: dict[Series, float], model: str | None, path: Path, label: str) -> tuple[str, list[str]]:
    drafts: dict[str, float] = {}
    for (name, model_name, _, _), value in window.items():
        if name == "num_drafts":
            drafts[model_name] = drafts.get(model_name, 0.0) + value
    if model is not None:
        if model not in drafts:
            raise InputError(f"no model {model!r} in the scrape; it holds {', '.join(map(repr, sorted(drafts)))}",
                             path=path, field="--model")
        return model, sorted({engine for (name, m, engine, _) in window if m == model and name == "num_drafts"})
    if not drafts:
        raise InputError(f"no {label}num_drafts counter in the scrape (was speculative decoding on?)", path=path,
                         field=f"{label}num_drafts")
    active = sorted(name for name, value in drafts.items() if value > 0) or sorted(drafts)
    if len(active) > 1:
        listed = ", ".join(f"{name!r} ({drafts[name]:.0f} drafts)" for name in active)
        raise InputError(f"the scrape holds {len(active)} models with speculative steps: {listed}; select one "
                         "with --model (their draft lengths and rates differ, so they are not summed)",
                         path=path, field="model_name")
    chosen = active[0]
    return chosen, sorted({engine for (name, m, engine, _) in window if m == chosen and name == "num_drafts"})


def import_scrape(path: Path, *, engine: str = "vllm", model: str | None = None, gamma: int | None = None,
                  **keys: Any) -> ImportResult:
    """Counts from a vLLM or llama.cpp ``/metrics`` scrape (see the module docstring).

    Parameters
    ----------
    path : pathlib.Path
    engine : {"vllm", "llamacpp"}
    model : str, optional
        The ``model_name`` label to import, where the scrape holds several.
    gamma : int, optional
        Draft length; default the number of per-position series (vLLM), else refused.
    **keys
        ``task``, ``drafter``, ``drafter_kind``, ``trained_on``, ``temperature``.
    """
    label = {"vllm": "vllm:spec_decode_", "llamacpp": "llamacpp:spec_decode_"}[engine]
    scrapes, legacy = read_scrapes(path, engine)
    if not any(key[0] == "num_drafts" for scrape in scrapes for key in scrape):
        if legacy:
            rate = legacy.get("draft_acceptance_rate")
            said = f"; its gauge gives an acceptance rate of {rate:.3f} (accepted/drafted) only" if rate is not None \
                else ""
            raise InputError("a vLLM V0-engine scrape (vllm/engine/metrics.py, vLLM <= 0.8): its counters add "
                             "running totals (vLLM pull request 15415) and count accepted tokens whatever the "
                             f"prefix, so they give no counts{said}; scrape a V1-engine server", path=path,
                             field="vllm:spec_decode_num_emitted_tokens")
        what = "no" if not scrapes else "other speculative counters but no"
        raise InputError(f"{what} {label}num_drafts counter (was speculative decoding on? is this the {engine} "
                         "server's /metrics?)", path=path, field=f"{label}num_drafts")
    notes = []
    window = _window(scrapes, path)
    if len(scrapes) > 1:
        notes.append(f"{len(scrapes)} scrapes in the file: the counts are the window between the first and the "
                     "last (their differences)")
    chosen, engines = _model(window, model, path, label)
    if not engines:
        raise InputError(f"no {label}num_drafts counter for model {chosen!r}", path=path, field=f"{label}num_drafts")
    if len(engines) > 1:
        notes.append(f"model {chosen!r}: engines {', '.join(engines)} summed (data-parallel engines of one model)")

    def total(name: str) -> float:
        return sum(v for (n, m, _, _), v in window.items() if n == name and m == chosen)

    per_position: dict[int, float] = {}
    for (name, m, _, position), value in window.items():
        if name == "num_accepted_tokens_per_pos" and m == chosen:
            per_position[position] = per_position.get(position, 0.0) + value
    drafts, draft_tokens, accepted_total = (total(name) for name in _COUNTERS[:3])
    for name, value in (("num_drafts", drafts), ("num_draft_tokens", draft_tokens),
                        ("num_accepted_tokens", accepted_total), *((f"per_pos {p}", v) for p, v in
                                                                   per_position.items())):
        if value != int(value):
            raise InputError(f"{label}{name}: a count must be a whole number, got {value:g}", path=path,
                             field=f"{label}{name}")
    if drafts == 0:
        raise InputError(f"{label}num_drafts is 0{' in the window' if len(scrapes) > 1 else ''}: the server "
                         "recorded no speculative step (no request served, or speculative decoding off)", path=path,
                         field=f"{label}num_drafts")
    if accepted_total > draft_tokens:
        raise InputError(f"more accepted ({accepted_total:.0f}) than drafted ({draft_tokens:.0f}) tokens", path=path,
                         field=f"{label}num_accepted_tokens")
    if gamma is None:
        if per_position:
            gamma = max(per_position) + 1
        else:
            raise InputError("give --gamma (the draft length): the scrape has no per-position counters to show it",
                             path=path, field="--gamma")
    base = count_keys(gamma=int(gamma), source=engine, **keys)
    if draft_tokens > drafts * base["gamma"]:
        raise InputError(f"{draft_tokens:.0f} draft tokens in {drafts:.0f} drafts is more than gamma = "
                         f"{base['gamma']} a draft: give the server's num_speculative_tokens as --gamma", path=path,
                         field="--gamma")
    full = draft_tokens == drafts * base["gamma"]
    if not per_position or not full:
        if per_position:
            notes.append(f"drafts were cut short ({draft_tokens / drafts:.2f} tokens a draft on average, gamma "
                         f"{base['gamma']}): the per-position counters do not say which, so draft indices are not "
                         "resolved; imported as totals with the true drafted count (i.i.d. acceptance assumed "
                         "downstream)")
        else:
            notes.append("totals only (no per-position counters): draft indices not resolved, i.i.d. acceptance "
                         "assumed downstream")
        rows = pooled_rows(base, int(drafts), int(draft_tokens), int(accepted_total))
        return ImportResult(pd.DataFrame(rows), None, notes)
    if sorted(per_position) != list(range(base["gamma"])):
        raise InputError(f"per-position counters cover positions {sorted(per_position)}, expected "
                         f"0..{base['gamma'] - 1}",
                         path=path, field="position")
    accepted = np.array([per_position[i] for i in range(base["gamma"])], dtype=np.int64)
    if np.any(np.diff(accepted) > 0) or accepted[0] > drafts:
        raise InputError("per-position accepted counts must not increase with position", path=path,
                         field=f"{label}num_accepted_tokens_per_pos")
    if int(accepted.sum()) != int(accepted_total):
        notes.append(f"the per-position counters sum to {int(accepted.sum())} accepted tokens, "
                     f"num_accepted_tokens says {accepted_total:.0f}: the per-position counts are used")
    # Steps accepting exactly k drafts: accepted[k - 1] - accepted[k] (prefix acceptance).
    exactly = -np.diff(np.concatenate([[int(drafts)], accepted, [0]]))
    rows = chain_rows(base, np.repeat(np.arange(base["gamma"] + 1), exactly))
    return ImportResult(pd.DataFrame(rows), None, notes)



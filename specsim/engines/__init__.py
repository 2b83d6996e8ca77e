"""Serving engines' and benchmarks' acceptance data read into a counts table (``specsim import``).

Each source kind has one reader, written from the engine's own code (the version read is named
in its module), and returns an :class:`ImportResult`: the counts, the per-request lengths where
the source has them, and a note for every convention assumed or thing left out.
:data:`SOURCES` holds the one-line statement of each kind's conventions.

========================  ================================================================  ==========================
kind                      source                                                            module
========================  ================================================================  ==========================
``vllm``                  a ``/metrics`` scrape (one, or several: the window between them)  :mod:`.prometheus`
``vllm-requests``         OpenAI responses with per-request ``speculative_decoding`` metrics  :mod:`.vllm`
``vllm-bench``            ``vllm bench serve --save-result`` JSON                           :mod:`.vllm`
``vllm-log``              logged ``SpecDecoding metrics:`` lines                            :mod:`.vllm`
``sglang``                responses, ``meta_info`` lines or streams (0.5.5 - 0.5.23 names)  :mod:`.sglang`
``specbench``             Spec-Bench answer JSONL                                           :mod:`.specbench`
``llamacpp``              llama.cpp server ``/metrics`` scrape                              :mod:`.prometheus`
``aiperf``                AIPerf ``profile_export.jsonl`` (vLLM's per-request metrics)      :mod:`.vllm`
========================  ================================================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from specsim.engines.common import ImportResult
from specsim.engines.prometheus import import_scrape
from specsim.engines.sglang import import_sglang
from specsim.engines.specbench import import_specbench
from specsim.engines.vllm import import_aiperf, import_vllm_bench, import_vllm_log, import_vllm_requests
from specsim.errors import InputError
from specsim.traces.counts import check_counts

__all__ = ["SOURCES", "ImportResult", "import_source", "import_scrape", "import_vllm_requests", "import_vllm_bench",
           "import_vllm_log", "import_aiperf", "import_specbench", "import_sglang"]

SOURCES = {
    "vllm": "vLLM v1 /metrics counters (vllm/v1/spec_decode/metrics.py, vLLM 0.34): per-position counts are over "
            "drafts; conditional rates exact under prefix acceptance when every draft is full; one model_name, "
            "engines summed; lengths and timings are not in the source",
    "vllm-requests": "vLLM per-request speculative_decoding metrics (pull request 48915): the acceptance histogram "
                     "(steps accepting exactly j drafts) resolves every draft index under prefix acceptance, "
                     "per_step_drafted resolves short drafts; lengths from usage; no timings",
    "vllm-bench": "vllm bench serve --save-result: server-wide counter differences over the run; per-position rates "
                  "over drafts; lengths only with --save-detailed; no timings per step",
    "vllm-log": "vLLM's logged SpecDecoding metrics lines, intervals summed; per-position counts from rates printed "
                "to three decimals; no lengths or timings",
    "specbench": "Spec-Bench accept_lengths count the bonus token; accepted drafts = accept_length - 1 per step; "
                 "chain drafters only; timings only per turn",
    "sglang": "SGLang per-request speculative fields (0.5.5-0.5.23 names): the histogram resolves draft indices, "
              "else totals (i.i.d. acceptance assumed); chains only; lengths from prompt/completion tokens",
    "llamacpp": "llama.cpp server /metrics counters (pull request 26389): totals only; give --gamma",
    "aiperf": "AIPerf 0.13 profile_export.jsonl spec_decode_acceptance records (vLLM's per-request metrics): the "
              "sparse histogram resolves every draft index; no timings per step",
}

_IMPORTERS: dict[str, Callable[..., ImportResult]] = {
    "vllm": partial(import_scrape, engine="vllm"), "vllm-requests": import_vllm_requests,
    "vllm-bench": import_vllm_bench, "vllm-log": import_vllm_log, "specbench": import_specbench,
    "sglang": import_sglang, "llamacpp": partial(import_scrape, engine="llamacpp"), "aiperf": import_aiperf,
}


def import_source(source_kind: str, path: str | Path, *, model: str | None = None, **keys: Any) -> ImportResult:
    """Read one source file of a kind in :data:`SOURCES` into counts, lengths and notes.

    Parameters
    ----------
    source_kind : str
    path : str or pathlib.Path
    model : str, optional
        The model to import from a scrape that serves several (``vllm``, ``llamacpp``).
    **keys
        ``task``, ``drafter``, ``drafter_kind``, ``trained_on``, ``temperature``, ``gamma``
        (None: inferred where the source shows it).

    Raises
    ------
    specsim.errors.InputError
        An unknown kind, a missing file, or a file the reader cannot take (one line: the file,
        the field and what is wrong).
    """
    if source_kind not in _IMPORTERS:
        raise InputError(f"must be one of {', '.join(_IMPORTERS)}", field="source kind")
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    if model is not None and source_kind not in ("vllm", "llamacpp"):
        raise InputError(f"--model selects a model of a /metrics scrape, not of a {source_kind} file", field="--model")
    if source_kind in ("vllm", "llamacpp"):
        keys["model"] = model
    try:
        result = _IMPORTERS[source_kind](path, **keys)
        # The contract's own checks, naming the source (not the output) where a reader let something through.
        result.counts = check_counts(result.counts, path)
        return result
    except InputError as error:
        if error.path is not None or (error.field or "").startswith("--"):
            raise
        raise InputError(error.problem, path=path, field=error.field) from None

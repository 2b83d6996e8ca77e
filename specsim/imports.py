"""Importers: serving engines' and benchmarks' acceptance data as a counts table.

Each importer maps its source's conventions explicitly and says what is lost
(:data:`SOURCES` holds the statement printed with every import):

- ``vllm``: the Prometheus text exposition of vLLM's ``/metrics`` (v1 engine,
  ``vllm/v1/spec_decode/metrics.py``): counters ``vllm:spec_decode_num_drafts``,
  ``vllm:spec_decode_num_draft_tokens``, ``vllm:spec_decode_num_accepted_tokens`` and
  ``vllm:spec_decode_num_accepted_tokens_per_pos{position="i"}``, parsed with
  ``prometheus_client``'s parser. Per-position counts are unconditional (accepted at ``i`` over
  drafts); with prefix acceptance the tokens evaluated at ``i`` are those accepted at ``i - 1``,
  so conditional rates are exact. Samples of every label set (engine, model) are summed.
  Lost: prompt and output lengths, timings, sequence boundaries.
- ``specbench``: Spec-Bench answer JSONL (``evaluation/eval.py``: per question ``choices`` with
  ``new_tokens``, ``decoding_steps`` and ``accept_lengths``, the tokens each step added, bonus
  included). Each step's accepted drafts are ``accept_length - 1``, which resolves every draft
  index of a chain drafter. Lost: positions inside tree drafts (Medusa, EAGLE trees are counted as
  if the accepted path were a chain), per-step timings (only per-turn ``wall_time``).
- ``vllm-requests``: JSONL of vLLM OpenAI-API responses served with
  ``--per-request-spec-decode-metrics summary`` or ``detailed`` (vLLM pull request 48915,
  ``metrics.speculative_decoding``): per request ``num_spec_steps``, ``num_draft_tokens``,
  ``num_accepted_draft_tokens``, ``num_spec_tokens`` and ``acceptance_histogram`` (a dense list:
  entry ``j`` counts the verify steps that accepted exactly ``j`` drafts), or ``per_step_accepted``
  (``detailed``). Lines may be a response, or a capture wrapping it in ``data``; lines without
  ``metrics.speculative_decoding`` (stream chunks before the last) are skipped. The histogram
  resolves every draft index (prefix acceptance: index ``i`` is reached by steps accepting ``i`` or
  more); without it only totals remain. ``usage.prompt_tokens`` and ``usage.completion_tokens``
  give each request's lengths. Lost: per-step timings, positions of the steps in the sequence.
- ``sglang``: JSONL of SGLang responses or their ``meta_info`` (``spec_verify_ct``,
  ``completion_tokens``, optional ``spec_accept_token_num`` and ``spec_draft_token_num``). SGLang's
  ``spec_accept_length`` is completion tokens per verify step (bonus included). Only totals: the
  draft index is not resolved (``draft_index = -1``), and the simulator assumes i.i.d.
  acceptance for it. ``prompt_tokens`` and ``completion_tokens`` give each request's lengths.
  Lost: per-position rates, timings.

:func:`import_lengths` returns the per-request lengths of the sources that have them, stored with
the counts as their length summaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.jsonl import read_jsonl_objects

__all__ = ["SOURCES", "import_source", "import_lengths", "import_vllm_metrics", "import_vllm_requests",
           "import_specbench", "import_sglang"]

SOURCES = {
    "vllm": "vLLM Prometheus counters: per-position counts are unconditional (over drafts); conditional rates "
            "derived exactly under prefix acceptance; lengths and timings are not in the source",
    "vllm-requests": "vLLM per-request speculative_decoding metrics: the acceptance histogram (steps accepting "
                     "exactly j drafts) resolves every draft index under prefix acceptance; lengths from usage; "
                     "no timings",
    "specbench": "Spec-Bench accept_lengths count the bonus token; accepted drafts = accept_length - 1 per step; "
                 "tree drafts are counted as chains; timings only per turn",
    "sglang": "SGLang meta_info totals (spec_accept_length counts the bonus token); draft positions not resolved, "
              "the simulator assumes i.i.d. acceptance",
}


def _keys(task: str, drafter: str, drafter_kind: str, trained_on: str | None, temperature: float | None,
          gamma: int, source: str) -> dict[str, Any]:
    if drafter_kind not in ("generic", "finetuned", "untrained"):
        raise InputError("must be generic, finetuned or untrained", field="--drafter-kind")
    if gamma < 1:
        raise InputError(f"must be >= 1, got {gamma}", field="--gamma")
    return {"source": source, "task": task, "drafter": drafter, "drafter_kind": drafter_kind,
            "drafter_trained_on": trained_on, "temperature": temperature, "gamma": int(gamma)}


def _resolved_rows(keys: dict, steps: int, accepted_per_step: np.ndarray) -> list[dict]:
    """Counts per draft index from the accepted drafts of each step (prefix acceptance)."""
    gamma = keys["gamma"]
    if np.any(accepted_per_step < 0) or np.any(accepted_per_step > gamma):
        raise InputError(f"a step accepted more than gamma = {gamma} drafts (or fewer than 0)", field="--gamma")
    return [{**keys, "draft_index": i, "steps": steps, "drafted": steps,
             "evaluated": int(np.sum(accepted_per_step >= i)), "accepted": int(np.sum(accepted_per_step >= i + 1))}
            for i in range(gamma)]


def import_vllm_metrics(path: Path, **keys: Any) -> pd.DataFrame:
    """Counts from a vLLM ``/metrics`` text exposition (see the module docstring)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
        families = list(text_string_to_metric_families(text))
    except (UnicodeDecodeError, ValueError) as error:
        raise InputError(f"not a Prometheus text exposition ({str(error)[:100]})", path=path) from None
    totals: dict[str, float] = {}
    per_position: dict[int, float] = {}
    for family in families:
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            name = sample.name[: -len("_total")]
            if name == "vllm:spec_decode_num_accepted_tokens_per_pos":
                if "position" not in sample.labels or not sample.labels["position"].isdigit():
                    raise InputError("per-position sample without a numeric position label", path=path,
                                     field="position")
                position = int(sample.labels["position"])
                per_position[position] = per_position.get(position, 0.0) + sample.value
            elif name.startswith("vllm:spec_decode_"):
                totals[name] = totals.get(name, 0.0) + sample.value
    drafts = totals.get("vllm:spec_decode_num_drafts")
    if not drafts:
        raise InputError("no vllm:spec_decode_num_drafts counter (was speculative decoding on?)", path=path,
                         field="vllm:spec_decode_num_drafts")
    draft_tokens = totals.get("vllm:spec_decode_num_draft_tokens", 0.0)
    accepted_total = totals.get("vllm:spec_decode_num_accepted_tokens", 0.0)
    gamma = keys.pop("gamma", None) or (max(per_position) + 1 if per_position else int(round(draft_tokens / drafts)))
    base = _keys(gamma=int(gamma), source="vllm", **keys)
    if not per_position:
        return pd.DataFrame([{**base, "draft_index": -1, "steps": int(drafts), "drafted": int(draft_tokens),
                              "accepted": int(accepted_total)}])
    if sorted(per_position) != list(range(len(per_position))) or len(per_position) != base["gamma"]:
        raise InputError(f"per-position counters cover positions {sorted(per_position)}, expected 0..{gamma - 1}",
                         path=path, field="position")
    accepted = np.array([per_position[i] for i in range(len(per_position))])
    if np.any(np.diff(accepted) > 0) or accepted[0] > drafts:
        raise InputError("per-position accepted counts must not increase with position", path=path,
                         field="vllm:spec_decode_num_accepted_tokens_per_pos")
    evaluated = np.concatenate([[drafts], accepted[:-1]])
    return pd.DataFrame([{**base, "draft_index": i, "steps": int(drafts), "drafted": int(drafts),
                          "evaluated": int(evaluated[i]), "accepted": int(accepted[i])} for i in range(len(accepted))])


def _jsonl(path: Path) -> list[dict]:
    rows = [row for _, row in read_jsonl_objects(path)]
    if not rows:
        raise InputError("no rows", path=path)
    return rows


def import_specbench(path: Path, **keys: Any) -> pd.DataFrame:
    """Counts from a Spec-Bench answer JSONL (see the module docstring)."""
    lengths: list[int] = []
    outputs, sequences = 0, 0
    for number, row in enumerate(_jsonl(path), start=1):
        choices = row.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InputError(f"line {number}: no choices", path=path, field="choices")
        for choice in choices:
            accept = choice.get("accept_lengths")
            new_tokens = choice.get("new_tokens")
            if not isinstance(accept, list) or not all(isinstance(a, (int, float)) and a >= 1 for a in accept):
                raise InputError(f"line {number}: accept_lengths must be a list of numbers >= 1", path=path,
                                 field="accept_lengths")
            lengths.extend(int(a) for a in accept)
            if isinstance(new_tokens, list):
                outputs += int(sum(new_tokens))
                sequences += len(new_tokens)
    steps = np.asarray(lengths)
    gamma = keys.pop("gamma", None) or int(steps.max()) - 1
    if gamma < 1:
        raise InputError("every step added one token: give --gamma (the draft length used)", path=path,
                         field="--gamma")
    base = _keys(gamma=int(gamma), source="specbench", **keys)
    rows = _resolved_rows(base, len(steps), steps - 1)
    for row in rows:
        row.update(output_tokens=outputs or None, sequences=sequences or None)
    return pd.DataFrame(rows)


def import_sglang(path: Path, *, num_draft_tokens: int | None = None, **keys: Any) -> pd.DataFrame:
    """Counts from SGLang responses or meta_info JSONL (see the module docstring)."""
    verify, completion, accepted, drafted, have_drafted = 0, 0, 0, 0, True
    for number, row in enumerate(_jsonl(path), start=1):
        meta = row.get("meta_info", row)
        if not isinstance(meta, dict) or "spec_verify_ct" not in meta or "completion_tokens" not in meta:
            raise InputError(f"line {number}: needs meta_info with spec_verify_ct and completion_tokens", path=path,
                             field="spec_verify_ct")
        count, tokens = meta["spec_verify_ct"], meta["completion_tokens"]
        if not (isinstance(count, int) and isinstance(tokens, int) and 0 <= count <= tokens):
            raise InputError(f"line {number}: spec_verify_ct and completion_tokens must be whole numbers with "
                             "spec_verify_ct <= completion_tokens", path=path, field="spec_verify_ct")
        verify += count
        completion += tokens
        accepted += int(meta.get("spec_accept_token_num", tokens - count))
        if "spec_draft_token_num" in meta:
            drafted += int(meta["spec_draft_token_num"])
        else:
            have_drafted = False
    gamma = keys.pop("gamma", None) or num_draft_tokens
    if not gamma:
        raise InputError("give --gamma (SGLang's speculative_num_draft_tokens minus one for a chain drafter)",
                         field="--gamma")
    if verify == 0:
        raise InputError("no verify steps (spec_verify_ct is 0 everywhere: was speculative decoding on?)", path=path,
                         field="spec_verify_ct")
    base = _keys(gamma=int(gamma), source="sglang", **keys)
    return pd.DataFrame([{**base, "draft_index": -1, "steps": verify,
                          "drafted": drafted if have_drafted else verify * int(gamma), "accepted": accepted,
                          "output_tokens": completion}])


def _vllm_responses(path: Path) -> list[tuple[int, dict, dict]]:
    """(line, speculative_decoding, usage) of every response line that has the metrics."""
    found = []
    for number, row in enumerate(_jsonl(path), start=1):
        response = row.get("data", row) if isinstance(row.get("data"), dict) else row
        metrics = response.get("metrics")
        spec = metrics.get("speculative_decoding") if isinstance(metrics, dict) else None
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise InputError(f"line {number}: metrics.speculative_decoding must be an object", path=path,
                             field="speculative_decoding")
        usage = response.get("usage")
        found.append((number, spec, usage if isinstance(usage, dict) else {}))
    if not found:
        raise InputError("no response with metrics.speculative_decoding (serve with "
                         "--per-request-spec-decode-metrics summary)", path=path, field="speculative_decoding")
    return found


def _whole(value: Any, number: int, name: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"line {number}: must be a whole number >= 0, got {value!r}", path=path, field=name)
    return value


def import_vllm_requests(path: Path, **keys: Any) -> pd.DataFrame:
    """Counts from vLLM per-request speculative-decoding metrics (see the module docstring)."""
    histogram = np.zeros(0, dtype=np.int64)
    steps = drafted = accepted = outputs = 0
    resolved, sizes = True, set()
    responses = _vllm_responses(path)
    for number, spec, usage in responses:
        step_count = _whole(spec.get("num_spec_steps"), number, "num_spec_steps", path)
        draft_tokens = _whole(spec.get("num_draft_tokens"), number, "num_draft_tokens", path)
        accepted_tokens = _whole(spec.get("num_accepted_draft_tokens"), number, "num_accepted_draft_tokens", path)
        if accepted_tokens > draft_tokens:
            raise InputError(f"line {number}: more accepted than drafted tokens", path=path,
                             field="num_accepted_draft_tokens")
        if "num_spec_tokens" in spec:
            sizes.add(_whole(spec["num_spec_tokens"], number, "num_spec_tokens", path))
        counts = spec.get("acceptance_histogram")
        if counts is None and isinstance(spec.get("per_step_accepted"), list):
            per_step = [_whole(v, number, "per_step_accepted", path) for v in spec["per_step_accepted"]]
            counts = np.bincount(per_step).tolist() if per_step else []
        if counts is None:
            resolved = False
        else:
            if not isinstance(counts, list):
                raise InputError(f"line {number}: must be a list of step counts", path=path,
                                 field="acceptance_histogram")
            row = np.array([_whole(v, number, "acceptance_histogram", path) for v in counts], dtype=np.int64)
            if row.sum() != step_count or int(np.dot(np.arange(len(row)), row)) != accepted_tokens:
                raise InputError(f"line {number}: the histogram disagrees with num_spec_steps or "
                                 "num_accepted_draft_tokens", path=path, field="acceptance_histogram")
            size = max(len(histogram), len(row))
            histogram = np.pad(histogram, (0, size - len(histogram))) + np.pad(row, (0, size - len(row)))
        steps, drafted, accepted = steps + step_count, drafted + draft_tokens, accepted + accepted_tokens
        if isinstance(usage.get("completion_tokens"), int):
            outputs += usage["completion_tokens"]
    if len(sizes) > 1:
        raise InputError(f"requests with different num_spec_tokens {sorted(sizes)}: import each draft length "
                         "separately", path=path, field="num_spec_tokens")
    gamma = keys.pop("gamma", None) or (sizes.pop() if sizes else None)
    if not gamma:
        raise InputError("give --gamma (no num_spec_tokens in the metrics)", path=path, field="--gamma")
    if steps == 0:
        raise InputError("no verify steps (num_spec_steps is 0 everywhere)", path=path, field="num_spec_steps")
    base = _keys(gamma=int(gamma), source="vllm-requests", **keys)
    extra = {"output_tokens": outputs or None, "sequences": len(responses)}
    if not resolved:
        return pd.DataFrame([{**base, "draft_index": -1, "steps": steps, "drafted": drafted, "accepted": accepted,
                              **extra}])
    if len(histogram) > base["gamma"] + 1:
        raise InputError(f"steps accepted up to {len(histogram) - 1} drafts, more than gamma = {base['gamma']}",
                         path=path, field="acceptance_histogram")
    rows = _resolved_rows(base, steps, np.repeat(np.arange(len(histogram)), histogram))
    return pd.DataFrame([{**row, **extra} for row in rows])


def import_lengths(source_kind: str, path: str | Path) -> pd.DataFrame | None:
    """Per-request lengths (``prompt_len``, ``output_len``) of sources that report them, else None.

    SGLang's ``meta_info`` and vLLM's ``usage`` carry ``prompt_tokens`` and
    ``completion_tokens``; requests without both are left out, and a source where none has
    them gives None.
    """
    path = Path(path)
    if source_kind == "sglang":
        pairs = [row.get("meta_info", row) for _, row in read_jsonl_objects(path)]
    elif source_kind == "vllm-requests":
        pairs = [usage for _, _, usage in _vllm_responses(path)]
    else:
        return None
    rows = [(p["prompt_tokens"], p["completion_tokens"]) for p in pairs if isinstance(p, dict)
            and isinstance(p.get("prompt_tokens"), int) and isinstance(p.get("completion_tokens"), int)
            and p["prompt_tokens"] >= 0 and p["completion_tokens"] >= 1]
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["prompt_len", "output_len"])


_IMPORTERS = {"vllm": import_vllm_metrics, "vllm-requests": import_vllm_requests, "specbench": import_specbench,
              "sglang": import_sglang}


def import_source(source_kind: str, path: str | Path, **keys: Any) -> pd.DataFrame:
    """Counts table of a ``vllm``, ``vllm-requests``, ``specbench`` or ``sglang`` source file.

    ``keys``: ``task``, ``drafter``, ``drafter_kind``, ``trained_on``, ``temperature``, ``gamma``.
    """
    if source_kind not in _IMPORTERS:
        raise InputError(f"must be one of {', '.join(_IMPORTERS)}", field="source kind")
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    return _IMPORTERS[source_kind](path, **keys)

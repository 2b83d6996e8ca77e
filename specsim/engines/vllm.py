"""vLLM's other speculative-decoding outputs: per-request metrics, ``vllm bench serve`` results, logged lines.

Read at vLLM 0.34.0:

- ``vllm-requests``: JSONL of OpenAI-API responses (or a captured stream) served with
  ``--per-request-spec-decode-metrics summary|detailed`` (pull request 48915;
  ``vllm/v1/metrics/stats.py`` ``RequestSpecDecodeMetrics``): ``metrics.speculative_decoding``
  holds ``num_spec_steps``, ``num_draft_tokens`` (net of grammar-invalidated tokens),
  ``num_accepted_draft_tokens``, ``num_spec_tokens`` and ``acceptance_histogram`` (dense: entry
  ``j`` counts the verify steps that accepted exactly ``j`` drafts, bonus excluded), and in
  ``detailed`` mode ``per_step_accepted`` and ``per_step_drafted``. The histogram resolves every
  draft index when every step drafted ``num_spec_tokens`` tokens; ``per_step_drafted`` resolves
  short drafts too. Streams carry the metrics on the final usage chunk only; other lines are
  skipped. ``usage`` gives each request's lengths.
- ``vllm-bench``: the JSON of ``vllm bench serve --save-result`` (``vllm/benchmarks/serve.py``):
  ``spec_decode_num_drafts``, ``spec_decode_draft_tokens``, ``spec_decode_accepted_tokens`` and
  ``spec_decode_per_position_acceptance_rates`` (per-position accepted over drafts), the
  difference of two ``/metrics`` scrapes around the run, summed over every model and engine of
  the server. ``input_lens``/``output_lens`` (kept with ``--save-detailed``) give the lengths.
- ``vllm-log``: lines of vLLM's log holding ``SpecDecoding metrics:``
  (``vllm/v1/spec_decode/metrics.py`` ``SpecDecodingLogging``), one per logging interval, each
  with ``Accepted``/``Drafted`` token counts, the mean acceptance length (1 + accepted / drafts,
  two decimals; vLLM <= 0.8 printed accepted / drafts) and per-position acceptance rates (three
  decimals). Intervals are summed. The number of drafts is ``Drafted / gamma`` when that matches
  the printed mean acceptance length; per-position counts are recovered from the rounded rates.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.engines.common import (
    ImportResult,
    chain_rows,
    count_keys,
    lengths_frame,
    pooled_rows,
    read_records,
    whole_number,
)
from specsim.errors import InputError

__all__ = ["import_vllm_requests", "import_vllm_bench", "import_vllm_log", "import_aiperf", "request_counts"]


def _speculative(record: Any) -> tuple[dict, dict] | None:
    """(speculative_decoding, usage) of a response or a capture wrapping one in ``data``; None without metrics."""
    if not isinstance(record, dict):
        return None
    response = record["data"] if isinstance(record.get("data"), dict) else record
    metrics = response.get("metrics")
    spec = metrics.get("speculative_decoding") if isinstance(metrics, dict) else None
    if spec is None:
        return None
    usage = response.get("usage")
    return spec, usage if isinstance(usage, dict) else {}


def _steps_of(request: dict[str, Any], gamma: int, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """One request's (accepted, drafted) per step, where its metrics say; None where they cannot."""
    if request["per_step_accepted"] is not None:
        accepted = np.asarray(request["per_step_accepted"], dtype=np.int64)
        if request["per_step_drafted"] is not None:
            return accepted, np.asarray(request["per_step_drafted"], dtype=np.int64)
        if request["drafted"] == request["steps"] * gamma:
            return accepted, np.full(len(accepted), gamma)
        return None
    histogram = request["histogram"]
    if histogram is None or request["drafted"] != request["steps"] * gamma:
        return None
    if len(histogram) > gamma + 1 and histogram[gamma + 1:].any():
        raise InputError(f"line {request['number']}: steps accepted up to {int(np.flatnonzero(histogram).max())} "
                         f"drafts, more than gamma = {gamma}", path=path, field="acceptance_histogram")
    accepted = np.repeat(np.arange(len(histogram)), histogram)
    return accepted, np.full(len(accepted), gamma)


def import_vllm_requests(path: Path, *, gamma: int | None = None, **keys: Any) -> ImportResult:
    """Counts from vLLM per-request speculative-decoding metrics (see the module docstring)."""
    responses = []
    for number, record in read_records(path):
        found = _speculative(record)
        if found is None:
            continue
        if not isinstance(found[0], dict):
            raise InputError(f"line {number}: metrics.speculative_decoding must be an object", path=path,
                             field="speculative_decoding")
        responses.append((number, *found))
    if not responses:
        raise InputError("no response with metrics.speculative_decoding (serve with "
                         "--per-request-spec-decode-metrics summary; streams carry it on the final usage chunk, "
                         "with stream_options.include_usage)", path=path, field="speculative_decoding")
    return request_counts(path, responses, "vllm-requests", gamma, keys)


def import_aiperf(path: Path, *, gamma: int | None = None, **keys: Any) -> ImportResult:
    """Counts from NVIDIA AIPerf's ``profile_export.jsonl`` (aiperf 0.13, ``SpecDecodeAcceptanceRecord``).

    Each record's ``spec_decode_acceptance`` carries vLLM's per-request fields (AIPerf's only
    adapter reads vLLM's ``metrics.speculative_decoding``), with the histogram as a sparse map
    ``{"j": steps}``; the input length is the record's ``input_sequence_length`` metric.
    """
    responses = []
    for number, record in read_records(path):
        spec = record.get("spec_decode_acceptance") if isinstance(record, dict) else None
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise InputError(f"line {number}: spec_decode_acceptance must be an object", path=path,
                             field="spec_decode_acceptance")
        spec = dict(spec)
        histogram = spec.get("acceptance_histogram")
        if isinstance(histogram, dict):
            try:
                sparse = {int(j): count for j, count in histogram.items()}
            except ValueError:
                raise InputError(f"line {number}: histogram keys must be whole numbers of accepted drafts", path=path,
                                 field="acceptance_histogram") from None
            if any(j < 0 or j > 64 for j in sparse):
                raise InputError(f"line {number}: histogram keys must be in 0..64", path=path,
                                 field="acceptance_histogram")
            spec["acceptance_histogram"] = [sparse.get(j, 0) for j in range(max(sparse, default=-1) + 1)]
        metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
        prompt = metrics.get("input_sequence_length", {})
        usage = {"prompt_tokens": prompt.get("value") if isinstance(prompt, dict) else None,
                 "completion_tokens": spec.get("completion_tokens")}
        if spec.get("num_spec_tokens") is None:
            spec.pop("num_spec_tokens", None)
        responses.append((number, spec, usage))
    if not responses:
        raise InputError("no record with spec_decode_acceptance (aiperf >= 0.13 against a vLLM server with "
                         "--per-request-spec-decode-metrics)", path=path, field="spec_decode_acceptance")
    return request_counts(path, responses, "aiperf", gamma, keys)


def request_counts(path: Path, responses: list[tuple[int, dict, dict]], source: str, gamma: int | None,
                   keys: dict[str, Any]) -> ImportResult:
    """Counts from per-request (speculative metrics, usage) in vLLM's per-request form."""
    sizes: set[int] = set()
    per_request: list[dict[str, Any]] = []
    for number, spec, usage in responses:
        where = f"line {number}"
        steps = whole_number(spec.get("num_spec_steps"), where, "num_spec_steps", path)
        drafted = whole_number(spec.get("num_draft_tokens"), where, "num_draft_tokens", path)
        accepted = whole_number(spec.get("num_accepted_draft_tokens"), where, "num_accepted_draft_tokens", path)
        if accepted > drafted:
            raise InputError(f"{where}: more accepted than drafted tokens", path=path,
                             field="num_accepted_draft_tokens")
        if "num_spec_tokens" in spec:
            size = whole_number(spec["num_spec_tokens"], where, "num_spec_tokens", path)
            if size < 1:
                raise InputError(f"{where}: must be >= 1", path=path, field="num_spec_tokens")
            sizes.add(size)
        per_step_accepted = per_step_drafted = None
        if isinstance(spec.get("per_step_accepted"), list):
            per_step_accepted = [whole_number(v, where, "per_step_accepted", path) for v in spec["per_step_accepted"]]
            if isinstance(spec.get("per_step_drafted"), list):
                per_step_drafted = [whole_number(v, where, "per_step_drafted", path) for v in spec["per_step_drafted"]]
                if len(per_step_drafted) != len(per_step_accepted):
                    raise InputError(f"{where}: per_step_drafted and per_step_accepted differ in length", path=path,
                                     field="per_step_drafted")
            if len(per_step_accepted) != steps or sum(per_step_accepted) != accepted or (
                    per_step_drafted is not None and sum(per_step_drafted) != drafted):
                raise InputError(f"{where}: the per-step lists disagree with num_spec_steps, "
                                 "num_accepted_draft_tokens or num_draft_tokens", path=path, field="per_step_accepted")
        histogram = spec.get("acceptance_histogram")
        if histogram is not None:
            if not isinstance(histogram, list):
                raise InputError(f"{where}: must be a list of step counts", path=path, field="acceptance_histogram")
            histogram = np.array([whole_number(v, where, "acceptance_histogram", path) for v in histogram],
                                 dtype=np.int64)
            if histogram.sum() != steps or int(np.dot(np.arange(len(histogram)), histogram)) != accepted:
                raise InputError(f"{where}: the histogram disagrees with num_spec_steps or num_accepted_draft_tokens",
                                 path=path, field="acceptance_histogram")
        per_request.append({"number": number, "steps": steps, "drafted": drafted, "accepted": accepted,
                            "histogram": histogram, "per_step_accepted": per_step_accepted,
                            "per_step_drafted": per_step_drafted, "usage": usage})
    if len(sizes) > 1:
        raise InputError(f"requests with different num_spec_tokens {sorted(sizes)}: import each draft length "
                         "separately", path=path, field="num_spec_tokens")
    gamma = gamma or (sizes.pop() if sizes else None)
    if not gamma:
        raise InputError("give --gamma (no num_spec_tokens in the metrics)", path=path, field="--gamma")
    steps = sum(r["steps"] for r in per_request)
    if steps == 0:
        raise InputError("no verify steps (num_spec_steps is 0 everywhere)", path=path, field="num_spec_steps")
    base = count_keys(gamma=int(gamma), source=source, **keys)
    extra = {"output_tokens": sum(r["usage"].get("completion_tokens", 0) for r in per_request
                                  if isinstance(r["usage"].get("completion_tokens"), int)) or None,
             "sequences": len(per_request)}
    lengths = lengths_frame([(r["usage"].get("prompt_tokens"), r["usage"].get("completion_tokens"))
                             for r in per_request])
    drafted_total = sum(r["drafted"] for r in per_request)
    accepted_total = sum(r["accepted"] for r in per_request)
    notes: list[str] = []
    if drafted_total > steps * base["gamma"]:
        raise InputError(f"{drafted_total} draft tokens in {steps} steps is more than gamma = {base['gamma']} a "
                         "step", path=path, field="--gamma")
    full = drafted_total == steps * base["gamma"]
    per_step = [_steps_of(r, base["gamma"], path) for r in per_request]
    if all(arrays is not None for arrays in per_step):
        step_accepted = np.concatenate([arrays[0] for arrays in per_step if arrays is not None])
        step_drafted = np.concatenate([arrays[1] for arrays in per_step if arrays is not None])
        if np.all(step_drafted == base["gamma"]):
            return ImportResult(pd.DataFrame(chain_rows(base, step_accepted, extra=extra)), lengths, notes)
        notes.append(f"per_step_drafted resolves short drafts ({np.mean(step_drafted < base['gamma']):.0%} of steps "
                     f"drafted fewer than {base['gamma']})")
        return ImportResult(pd.DataFrame(chain_rows(base, step_accepted, step_drafted, extra=extra)), lengths, notes)
    if not full:
        notes.append(f"drafts were cut short ({drafted_total / steps:.2f} tokens a step on average, gamma "
                     f"{base['gamma']}) and the summary histogram does not say which: draft indices not resolved, "
                     "totals imported with the true drafted count (serve with --per-request-spec-decode-metrics "
                     "detailed to resolve them)")
    else:
        notes.append("some responses have no acceptance_histogram: draft indices not resolved, totals imported")
    return ImportResult(pd.DataFrame(pooled_rows(base, steps, drafted_total, accepted_total, extra=extra)), lengths,
                        notes)


def import_vllm_bench(path: Path, *, gamma: int | None = None, **keys: Any) -> ImportResult:
    """Counts from a ``vllm bench serve --save-result`` JSON file (see the module docstring)."""
    records = read_records(path)
    if len(records) != 1 or not isinstance(records[0][1], dict):
        raise InputError("expected one JSON object (the file vllm bench serve --save-result writes)", path=path)
    result = records[0][1]
    fields = ("spec_decode_num_drafts", "spec_decode_draft_tokens", "spec_decode_accepted_tokens")
    if not all(name in result for name in fields):
        missing = next(name for name in fields if name not in result)
        raise InputError(f"no {missing}: the bench writes speculative fields only when the server's /metrics showed "
                         "draft tokens during the run (was speculative decoding on?)", path=path, field=missing)
    drafts, drafted, accepted_total = (whole_number(result[name], name, name, path) for name in fields)
    rates = result.get("spec_decode_per_position_acceptance_rates")
    if rates is not None and (not isinstance(rates, list) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and 0 <= r <= 1
            for r in rates)):
        raise InputError("must be a list of fractions in [0, 1]", path=path,
                         field="spec_decode_per_position_acceptance_rates")
    if drafts == 0:
        raise InputError("0 drafts in the run", path=path, field="spec_decode_num_drafts")
    gamma = gamma or (len(rates) if rates else None)
    if not gamma:
        raise InputError("give --gamma (no per-position rates to show the draft length)", path=path, field="--gamma")
    base = count_keys(gamma=int(gamma), source="vllm-bench", **keys)
    notes = ["server-wide counters over the run (vllm bench serve's before/after /metrics difference): any other "
             "traffic to the server in that time and every model it serves are included"]
    inputs, outputs = result.get("input_lens"), result.get("output_lens")
    lengths = None
    if isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs):
        lengths = lengths_frame(list(zip(inputs, outputs, strict=True)))
        failed = len(inputs) - (0 if lengths is None else len(lengths))
        if failed:
            notes.append(f"{failed} requests without an output (failed) left out of the lengths")
    else:
        notes.append("no input_lens/output_lens (saved only with --save-detailed): no lengths")
    extra = {"output_tokens": int(lengths["output_len"].sum()) if lengths is not None else None,
             "sequences": len(lengths) if lengths is not None else None}
    if drafted > drafts * base["gamma"]:
        raise InputError(f"{drafted} draft tokens in {drafts} drafts is more than gamma = {base['gamma']} a draft",
                         path=path, field="--gamma")
    if not rates or drafted != drafts * base["gamma"]:
        if rates:
            notes.append(f"drafts were cut short ({drafted / drafts:.2f} tokens a draft, gamma {base['gamma']}): draft "
                         "indices not resolved, totals imported with the true drafted count")
        rows = pooled_rows(base, drafts, drafted, accepted_total, extra=extra)
        return ImportResult(pd.DataFrame(rows), lengths, notes)
    if len(rates) != base["gamma"]:
        raise InputError(f"{len(rates)} per-position rates, expected gamma = {base['gamma']}", path=path,
                         field="spec_decode_per_position_acceptance_rates")
    per_position = np.array(rates) * drafts
    accepted = np.rint(per_position).astype(np.int64)
    if np.any(np.abs(per_position - accepted) > 1e-6 * max(drafts, 1)) or np.any(np.diff(accepted) > 0):
        raise InputError("the per-position rates times the drafts are not whole counts that fall with position",
                         path=path, field="spec_decode_per_position_acceptance_rates")
    exactly = -np.diff(np.concatenate([[drafts], accepted, [0]]))
    rows = chain_rows(base, np.repeat(np.arange(base["gamma"] + 1), exactly), extra=extra)
    if int(accepted.sum()) != accepted_total:
        notes.append(f"the per-position rates give {int(accepted.sum())} accepted tokens, spec_decode_accepted_tokens "
                     f"{accepted_total}: the per-position counts are used")
    return ImportResult(pd.DataFrame(rows), lengths, notes)


_LOG = re.compile(r"SpecDecoding metrics: (?P<body>.*)$")
_FIELDS = {
    "mean": re.compile(r"Mean acceptance length: (?P<v>[-+0-9.eE]+|nan)"),
    "accepted": re.compile(r"Accepted: (?P<v>\d+) tokens"),
    "drafted": re.compile(r"Drafted: (?P<v>\d+) tokens"),
    "rates": re.compile(r"Per-position acceptance rate: (?P<v>[0-9., ]*?)(?:, Avg|, Draft|$)"),
}


def import_vllm_log(path: Path, *, gamma: int | None = None, **keys: Any) -> ImportResult:
    """Counts from vLLM's logged ``SpecDecoding metrics`` lines (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InputError(f"cannot read ({error.strerror})", path=path) from None
    intervals: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LOG.search(line)
        if not match:
            if "Speculative metrics: Draft acceptance rate" in line:
                raise InputError(f"line {number}: a vLLM V0-engine line: its numbers are totals since start-up and "
                                 "count accepted tokens whatever the prefix; they give no counts", path=path)
            continue
        body = match.group("body")
        found = {name: pattern.search(body) for name, pattern in _FIELDS.items()}
        absent = [name for name in ("mean", "accepted", "drafted", "rates") if found[name] is None]
        if absent:
            raise InputError(f"line {number}: a SpecDecoding metrics line without its {absent[0]} field", path=path)
        rates_text = found["rates"].group("v").strip().rstrip(",")  # type: ignore[union-attr]
        try:
            rates = [float(v) for v in rates_text.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"line {number}: per-position rates are not numbers", path=path) from None
        intervals.append({"number": number, "mean": float(found["mean"].group("v")),  # type: ignore[union-attr]
                          "accepted": int(found["accepted"].group("v")),  # type: ignore[union-attr]
                          "drafted": int(found["drafted"].group("v")),  # type: ignore[union-attr]
                          "rates": rates, "plus_one": "throughput" in body})
    if not intervals:
        raise InputError("no 'SpecDecoding metrics:' line (vLLM logs one per logging interval while it drafts)",
                         path=path)
    sizes = {len(i["rates"]) for i in intervals}
    if len(sizes) > 1:
        raise InputError(f"lines with {sorted(sizes)} per-position rates: import each draft length separately",
                         path=path)
    gamma = gamma or sizes.pop()
    if not gamma:
        raise InputError("give --gamma (the lines carry no per-position rates)", path=path, field="--gamma")
    base = count_keys(gamma=int(gamma), source="vllm-log", **keys)
    notes = [f"{len(intervals)} logged intervals summed"]
    drafts_total = 0
    per_position = np.zeros(base["gamma"])
    estimated = False
    for interval in intervals:
        full_drafts = interval["drafted"] / base["gamma"]
        length = 1 + interval["accepted"] / full_drafts if full_drafts else float("nan")
        printed = interval["mean"] if interval["plus_one"] else 1 + interval["mean"]
        if full_drafts == int(full_drafts) and abs(length - printed) <= 0.0051:
            drafts = int(full_drafts)
        elif printed > 1:
            drafts, estimated = int(round(interval["accepted"] / (printed - 1))), True
        else:
            raise InputError(f"line {interval['number']}: drafts cut short and nothing accepted: the number of drafts "
                             "cannot be recovered", path=path)
        drafts_total += drafts
        if len(interval["rates"]) == base["gamma"]:
            per_position += np.array(interval["rates"]) * drafts
    drafted = sum(i["drafted"] for i in intervals)
    accepted_total = sum(i["accepted"] for i in intervals)
    if estimated:
        notes.append("drafts were cut short in some intervals: their number of drafts is estimated from the printed "
                     "mean acceptance length (two decimals); draft indices not resolved, totals imported")
        drafted = min(drafted, drafts_total * base["gamma"])
        return ImportResult(pd.DataFrame(pooled_rows(base, drafts_total, drafted, accepted_total)), None, notes)
    accepted = np.minimum.accumulate(np.minimum(np.rint(per_position).astype(np.int64), drafts_total))
    notes.append("per-position counts recovered from rates printed to three decimals (within 0.0005 x drafts each)")
    exactly = -np.diff(np.concatenate([[drafts_total], accepted, [0]]))
    return ImportResult(pd.DataFrame(chain_rows(base, np.repeat(np.arange(base["gamma"] + 1), exactly))), None, notes)

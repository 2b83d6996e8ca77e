"""SGLang's per-request speculative-decoding fields (``tokenizer_manager.py``,
``_calculate_spec_decoding_metrics``), read at SGLang 0.5.5 to 0.5.23.

Where they come from: the native ``/generate`` response's ``meta_info`` (or a bare
``meta_info`` per line), the OpenAI-compatible response's ``choices[].meta_info``
(``return_meta_info``, chat, not streamed) or ``sglext.spec_tokens_details`` (an object, or a
list with one per choice; ``return_spec_tokens_details``, 0.5.19 on), one per JSON line, or a
captured stream of ``data: {...}`` lines, where only the finished request's last chunk has them.

The names changed (the import says which it read):

====================  ==========================  ==========================  ==================================
SGLang                accepted drafts             proposed drafts             histogram
====================  ==========================  ==========================  ==================================
0.5.8 - 0.5.10        ``spec_accept_token_num``   ``spec_draft_token_num``    ``spec_accept_histogram`` (0.5.9)
0.5.11                ``spec_accepted_drafts``    ``spec_proposed_drafts``    ``spec_accept_histogram``
0.5.12 on (PR 24081)  ``spec_num_correct_drafts``  ``spec_num_proposed_drafts``  ``spec_correct_drafts_histogram``
====================  ==========================  ==========================  ==================================

Conventions: ``spec_verify_ct`` counts verify passes; accepted drafts exclude the bonus token;
proposed drafts are ``spec_verify_ct x (speculative_num_draft_tokens - 1)``, which for a chain
(``speculative_eagle_topk`` 1) is gamma a step, so gamma is read from it. The histogram's entry
``j`` counts the steps that accepted exactly ``j`` drafts and resolves every draft index. A tree
(topk > 1) counts its nodes as proposed drafts: trees are not supported, and a proposed count that
is not gamma a step, or a step accepting more than gamma, is refused as one. Requests with no
verify step (``max_new_tokens`` 1, a stop on the first token, an abort) carry no speculative
fields from 0.5.8 on, or zeros before: they are left out and counted. Without an accepted-drafts
field (before 0.5.8) accepted drafts are ``completion_tokens - spec_verify_ct - 1`` (the first
token comes from prefill).
"""

from __future__ import annotations

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

__all__ = ["import_sglang"]

NAMES = {  # version label: (accepted, proposed, histogram)
    "0.5.12+": ("spec_num_correct_drafts", "spec_num_proposed_drafts", "spec_correct_drafts_histogram"),
    "0.5.11": ("spec_accepted_drafts", "spec_proposed_drafts", "spec_accept_histogram"),
    "0.5.8-0.5.10": ("spec_accept_token_num", "spec_draft_token_num", "spec_accept_histogram"),
}


def _spec_dicts(record: Any) -> list[tuple[dict, dict]]:
    """(speculative fields, lengths source) of every request in one record."""
    if not isinstance(record, dict):
        return []
    found: list[tuple[dict, dict]] = []
    details = record.get("sglext", {}).get("spec_tokens_details") if isinstance(record.get("sglext"), dict) else None
    usage: dict = record["usage"] if isinstance(record.get("usage"), dict) else {}
    if isinstance(details, dict):
        found.append((details, usage))
    elif isinstance(details, list):
        found.extend((item, {}) for item in details if isinstance(item, dict))
    choices = record.get("choices")
    if isinstance(choices, list):
        metas = [c["meta_info"] for c in choices if isinstance(c, dict) and isinstance(c.get("meta_info"), dict)]
        if not details:
            found.extend((meta, meta if "prompt_tokens" in meta else usage if len(metas) == 1 else {})
                         for meta in metas)
    if isinstance(record.get("meta_info"), dict):
        found.append((record["meta_info"], record["meta_info"]))
    elif "spec_verify_ct" in record:
        found.append((record, record))
    return found


def import_sglang(path: Path, *, gamma: int | None = None, **keys: Any) -> ImportResult:
    """Counts from SGLang responses, meta_info lines or captured streams (see the module docstring)."""
    requests: list[dict[str, Any]] = []
    skipped = 0
    versions = set()
    for number, record in read_records(path):
        for spec, source in _spec_dicts(record):
            where = f"line {number}"
            if "spec_verify_ct" not in spec:
                continue  # a stream's chunk before the last, or a request with no verify step (0.5.8 on)
            verify = whole_number(spec["spec_verify_ct"], where, "spec_verify_ct", path)
            if verify == 0:
                skipped += 1
                continue
            version = next((label for label, names in NAMES.items() if names[0] in spec), None)
            accepted = proposed = None
            histogram = None
            if version is not None:
                accepted_name, proposed_name, histogram_name = NAMES[version]
                accepted = whole_number(spec[accepted_name], where, accepted_name, path)
                if proposed_name in spec:
                    proposed = whole_number(spec[proposed_name], where, proposed_name, path)
                raw = spec.get(histogram_name)
                if raw:
                    if not isinstance(raw, list):
                        raise InputError(f"{where}: must be a list of step counts", path=path, field=histogram_name)
                    histogram = np.array([whole_number(v, where, histogram_name, path) for v in raw], dtype=np.int64)
                    if histogram.sum() != verify or int(np.dot(np.arange(len(histogram)), histogram)) != accepted:
                        raise InputError(f"{where}: the histogram disagrees with spec_verify_ct or {accepted_name}",
                                         path=path, field=histogram_name)
            else:
                version = "before 0.5.8"
                if "completion_tokens" not in spec:
                    names = ", ".join(n[0] for n in NAMES.values())
                    raise InputError(f"{where}: needs an accepted-drafts field ({names}) or completion_tokens",
                                     path=path, field="spec_num_correct_drafts")
                tokens = whole_number(spec["completion_tokens"], where, "completion_tokens", path)
                if tokens < verify:
                    raise InputError(f"{where}: fewer completion_tokens than spec_verify_ct", path=path,
                                     field="completion_tokens")
                accepted = max(tokens - verify - 1, 0)
            versions.add(version)
            requests.append({"number": number, "verify": verify, "accepted": accepted, "proposed": proposed,
                             "histogram": histogram, "prompt": source.get("prompt_tokens"),
                             "completion": source.get("completion_tokens")})
    if not requests:
        said = f" ({skipped} requests had no verify step)" if skipped else ""
        raise InputError(f"no request with speculative fields (spec_verify_ct > 0){said}: was speculative decoding on? "
                         "Give responses, meta_info lines, or a captured stream", path=path, field="spec_verify_ct")
    if gamma is None:
        ratios = {r["proposed"] // r["verify"] for r in requests if r["proposed"] is not None}
        if len(ratios) > 1:
            raise InputError(f"requests with different proposed drafts per step {sorted(ratios)}: import each draft "
                             "length separately", path=path, field="spec_num_proposed_drafts")
        gamma = ratios.pop() if ratios else None
    if not gamma:
        raise InputError("give --gamma (SGLang's speculative_num_draft_tokens minus one for a chain drafter; these "
                         "responses carry no proposed-drafts field)", path=path, field="--gamma")
    for r in requests:
        if r["proposed"] is not None and r["proposed"] != r["verify"] * gamma:
            raise InputError(f"line {r['number']}: {r['proposed']} proposed drafts in {r['verify']} verify steps is "
                             f"not gamma = {gamma} a step: a tree (speculative_eagle_topk > 1) counts its nodes; "
                             "trees are "
                             "not supported, only chains", path=path, field="spec_num_proposed_drafts")
        if r["accepted"] > r["verify"] * gamma or (r["histogram"] is not None and len(r["histogram"]) > gamma + 1):
            raise InputError(f"line {r['number']}: a step accepted more than gamma = {gamma} drafts: a tree "
                             "(speculative_eagle_topk > 1)? trees are not supported, only chains", path=path,
                             field="spec_verify_ct")
    base = count_keys(gamma=int(gamma), source="sglang", **keys)
    notes = [f"SGLang field names of {', '.join(sorted(versions))}"]
    if skipped:
        notes.append(f"{skipped} requests with no verify step left out")
    if "before 0.5.8" in versions:
        notes.append("accepted drafts taken as completion_tokens - spec_verify_ct - 1 (no accepted-drafts field)")
    completions = [r["completion"] for r in requests if isinstance(r["completion"], int)]
    extra = {"output_tokens": sum(completions) or None, "sequences": len(requests)}
    lengths = lengths_frame([(r["prompt"], r["completion"]) for r in requests])
    steps = sum(r["verify"] for r in requests)
    if all(r["histogram"] is not None for r in requests):
        step_accepted = np.concatenate([np.repeat(np.arange(len(r["histogram"])), r["histogram"]) for r in requests])
        return ImportResult(pd.DataFrame(chain_rows(base, step_accepted, extra=extra)), lengths, notes)
    notes.append("no per-request histogram on every request: draft indices not resolved, totals imported (i.i.d. "
                 "acceptance assumed downstream)")
    rows = pooled_rows(base, steps, steps * int(gamma), sum(r["accepted"] for r in requests), extra=extra)
    return ImportResult(pd.DataFrame(rows), lengths, notes)

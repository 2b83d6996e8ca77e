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
- ``sglang``: JSONL of SGLang responses or their ``meta_info`` (``spec_verify_ct``,
  ``completion_tokens``, optional ``spec_accept_token_num`` and ``spec_draft_token_num``). SGLang's
  ``spec_accept_length`` is completion tokens per verify step (bonus included). Only totals: the
  draft index is not resolved (``draft_index = -1``), and the simulator assumes i.i.d.
  acceptance for it. Lost: per-position rates, lengths beyond the output token count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.jsonl import read_jsonl_objects

__all__ = ["SOURCES", "import_source", "import_vllm_metrics", "import_specbench", "import_sglang"]

SOURCES = {
    "vllm": "vLLM Prometheus counters: per-position counts are unconditional (over drafts); conditional rates "
            "derived exactly under prefix acceptance; lengths and timings are not in the source",
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


_IMPORTERS = {"vllm": import_vllm_metrics, "specbench": import_specbench, "sglang": import_sglang}


def import_source(source_kind: str, path: str | Path, **keys: Any) -> pd.DataFrame:
    """Counts table of a ``vllm``, ``specbench`` or ``sglang`` source file.

    ``keys``: ``task``, ``drafter``, ``drafter_kind``, ``trained_on``, ``temperature``, ``gamma``.
    """
    if source_kind not in _IMPORTERS:
        raise InputError(f"must be one of {', '.join(_IMPORTERS)}", field="source kind")
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    return _IMPORTERS[source_kind](path, **keys)

"""Spec-Bench answer JSONL (``evaluation/eval.py``, hemingkx/Spec-Bench ``main`` at fd2c1cd).

One line per question: ``model_id`` and ``choices``, each with per-turn ``new_tokens`` and
``decoding_steps`` and one flat ``accept_lengths`` list (every verify step's committed tokens,
bonus included, turns concatenated). A step's accepted drafts are ``accept_length - 1``, which
resolves every draft index of a chain drafter that drafts gamma tokens every step.

Not every method does, and the file does not say how many tokens were drafted:

- tree methods (Medusa, Hydra, EAGLE 1-3, REST, Lookahead, Recycling, named in ``model_id``)
  verify many candidates a step: refused, trees are not supported;
- SpS (transformers' assisted generation, heuristic schedule: the draft length moves between
  steps) and PLD (up to 10 tokens, none without a match) draft a variable number: refused unless
  ``--gamma`` is given, which asserts a fixed draft length (SpS with a constant schedule);
- otherwise gamma is ``--gamma``, or inferred as the longest step's accepted drafts, with a
  warning: short answers may never accept a whole draft.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.engines.common import ImportResult, chain_rows, count_keys, read_records, whole_number
from specsim.errors import InputError

__all__ = ["import_specbench", "TREE_METHODS", "VARIABLE_METHODS"]

TREE_METHODS = {"medusa", "hydra", "eagle", "eagle2", "eagle3", "rest", "lookahead", "lade", "recycling"}
VARIABLE_METHODS = {"sps", "pld"}


def _method(model_id: Any) -> str | None:
    words = set(re.split(r"[^a-z0-9]+", str(model_id).lower()))
    return next((w for w in sorted(words) if w in TREE_METHODS | VARIABLE_METHODS), None)


def import_specbench(path: Path, *, gamma: int | None = None, **keys: Any) -> ImportResult:
    """Counts from a Spec-Bench answer JSONL (see the module docstring)."""
    lengths: list[int] = []
    outputs, sequences = 0, 0
    methods = set()
    for number, row in read_records(path):
        if not isinstance(row, dict):
            raise InputError(f"line {number}: expected a JSON object", path=path)
        method = _method(row.get("model_id", ""))
        if method is not None:
            methods.add(method)
        choices = row.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InputError(f"line {number}: no choices", path=path, field="choices")
        for choice in choices:
            accept = choice.get("accept_lengths") if isinstance(choice, dict) else None
            if not isinstance(accept, list) or not accept:
                raise InputError(f"line {number}: accept_lengths must be a list of whole numbers >= 1", path=path,
                                 field="accept_lengths")
            steps = [whole_number(a, f"line {number}", "accept_lengths", path) for a in accept]
            if min(steps) < 1:
                raise InputError(f"line {number}: accept_lengths must be a list of whole numbers >= 1", path=path,
                                 field="accept_lengths")
            lengths.extend(steps)
            new_tokens = choice.get("new_tokens")
            if isinstance(new_tokens, list):
                outputs += sum(whole_number(n, f"line {number}", "new_tokens", path) for n in new_tokens)
                sequences += len(new_tokens)
    trees = sorted(methods & TREE_METHODS)
    if trees:
        raise InputError(f"answers of {', '.join(trees)} (model_id): a tree method verifies many candidates a step, "
                         "and trees are not supported (only chain drafters)", path=path, field="model_id")
    step_lengths = np.asarray(lengths, dtype=np.int64)
    tokens_per_step = float(step_lengths.mean())
    variable = sorted(methods & VARIABLE_METHODS)
    if variable and gamma is None:
        raise InputError(f"answers of {', '.join(variable)} (model_id) draft a variable number of tokens a step and "
                         f"Spec-Bench does not record how many, so acceptance per drafted token cannot be recovered "
                         f"(tokens per step {tokens_per_step:.3f}); give --gamma only if every step drafted that many",
                         path=path, field="--gamma")
    notes = []
    if gamma is None:
        gamma = int(step_lengths.max()) - 1
        if gamma < 1:
            raise InputError("every step added one token: give --gamma (the draft length used)", path=path,
                             field="--gamma")
        notes.append(f"gamma {gamma} inferred from the longest step (accept length {gamma + 1}); if no step accepted "
                     "a whole draft it is too small: give --gamma")
    base = count_keys(gamma=int(gamma), source="specbench", **keys)
    if int(step_lengths.max()) - 1 > base["gamma"]:
        raise InputError(f"a step accepted {int(step_lengths.max()) - 1} drafts, more than gamma = {base['gamma']}",
                         path=path,
                         field="--gamma")
    rows = chain_rows(base, step_lengths - 1, extra={"output_tokens": outputs or None, "sequences": sequences or None})
    return ImportResult(pd.DataFrame(rows), None, notes)

"""Datastores of a lookup drafter: a task's completions as target token ids, in one Parquet file.

A datastore is to :class:`specsim.collect.drafters.DatastoreDrafter` what fine-tuning data
is to a draft model: its tasks and lengths are the drafter's card (what it was "trained on"),
which the model's length-divergence covariate reads. Built by ``specsim datastore build``
from a completions file (text or token ids) or from the target's own greedy outputs on a
prompt set (:func:`build_datastore`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import InputError

__all__ = ["Datastore", "read_datastore", "write_datastore", "build_datastore", "DATASTORE_FORMAT",
           "DATASTORE_VERSION"]

DATASTORE_FORMAT = "specsim-datastore"
DATASTORE_VERSION = 1


@dataclass(frozen=True)
class Datastore:
    """Token sequences a datastore drafter retrieves from, and where they came from.

    Attributes
    ----------
    sequences : list of list of int
        The completions (target token ids).
    prompt_lengths : numpy.ndarray, shape (n_sequences,)
        Prompt length behind each completion (the datastore's training lengths).
    tasks : list of str
        Task of each completion.
    metadata : dict
        ``format``, ``version``, ``target``, ``max_ngram``, ``source`` and whatever the builder recorded.
    """

    sequences: list[list[int]]
    prompt_lengths: np.ndarray
    tasks: list[str]
    metadata: dict[str, Any]

    @property
    def max_ngram(self) -> int:
        """Longest suffix matched."""
        return int(self.metadata.get("max_ngram", 4))

    def card(self) -> dict[str, Any]:
        """The drafter card: training data and its lengths, as every drafter card has."""
        output = np.array([len(s) for s in self.sequences])
        return {**self.metadata, "tasks": sorted(set(self.tasks)), "train_sequences": len(self.sequences),
                "train_tokens": int(output.sum()),
                "lengths": {"prompt_len": self.prompt_lengths.astype(int).tolist(),
                            "output_len": output.astype(int).tolist()}}


def write_datastore(path: str | Path, sequences: list[list[int]], prompt_lengths: np.ndarray, tasks: list[str],
                    metadata: dict[str, Any]) -> Path:
    """Write a datastore as one Parquet file (atomically), its metadata in the file's schema metadata."""
    import pyarrow as pa

    from specsim.traces.store import atomic_write_table

    if not sequences:
        raise InputError("a datastore needs at least one completion", path=path)
    table = pa.table({"task": pa.array(tasks, pa.string()),
                      "prompt_len": pa.array(np.asarray(prompt_lengths, dtype=np.int32)),
                      "token_ids": pa.array(sequences, pa.list_(pa.int32()))})
    meta = {"format": DATASTORE_FORMAT, "version": DATASTORE_VERSION, **metadata}
    table = table.replace_schema_metadata({b"specsim.datastore": json.dumps(meta).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_table(table, path)
    return path


def read_datastore(path: str | Path) -> Datastore:
    """Read a datastore written by :func:`write_datastore`; one clear error otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError("no such datastore file", path=path, field="--drafter datastore")
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[b"specsim.datastore"])
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"not a readable Parquet file ({error})", path=path, field="--drafter datastore") from None
    except (KeyError, ValueError):
        raise InputError("not a specsim datastore (no specsim.datastore metadata)", path=path,
                         field="--drafter datastore") from None
    if not isinstance(meta, dict) or meta.get("format") != DATASTORE_FORMAT or meta.get(
            "version") != DATASTORE_VERSION:
        raise InputError(f"expected format {DATASTORE_FORMAT} version {DATASTORE_VERSION}", path=path,
                         field="--drafter datastore")
    max_ngram = meta.get("max_ngram", 4)
    if not isinstance(max_ngram, int) or isinstance(max_ngram, bool) or not 1 <= max_ngram <= 16:
        raise InputError(f"max_ngram must be a whole number in [1, 16], got {max_ngram!r}", path=path,
                         field="max_ngram")
    if missing := {"task", "prompt_len", "token_ids"} - set(table.column_names):
        raise InputError("missing column", path=path, field=sorted(missing)[0])
    sequences = [list(map(int, ids or [])) for ids in table.column("token_ids").to_pylist()]
    if not sequences or any(token < 0 for ids in sequences for token in ids):
        raise InputError("needs at least one completion of non-negative token ids", path=path, field="token_ids")
    return Datastore(sequences, np.asarray(table.column("prompt_len").to_pylist(), dtype=np.int64),
                     [str(t) for t in table.column("task").to_pylist()], meta)


def _completions(path: Path, tasks: list[str] | None, tokenizer: Any) -> tuple[list[list[int]], list[int], list[str]]:
    """Token ids, prompt lengths and tasks of a completions file (``completion`` text or ``token_ids``)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
    except (OSError, ValueError) as error:
        raise InputError(f"not a readable completions file ({error})", path=path, field="--completions") from None
    if "completion" not in frame.columns and "token_ids" not in frame.columns:
        raise InputError("needs a completion (text) or token_ids column", path=path, field="completion")
    if "task" not in frame.columns:
        raise InputError("missing column", path=path, field="task")
    if tasks:
        if unknown := sorted(set(tasks) - set(frame["task"])):
            raise InputError(f"no completions of task {unknown[0]!r} (tasks: {', '.join(sorted(set(frame['task'])))})",
                             path=path, field="--task")
        frame = frame[frame["task"].isin(tasks)]
    column = "token_ids" if "token_ids" in frame.columns else "completion"
    sequences = []
    for row, value in enumerate(frame[column]):
        if isinstance(value, str):  # text: the target's tokenizer makes it token ids
            if tokenizer is None:
                raise InputError("text completions need --tokenizer (the target's)", path=path, field="--tokenizer")
            sequences.append(list(tokenizer(value, add_special_tokens=False)["input_ids"]))
        elif hasattr(value, "__len__") and all(isinstance(token, (int, np.integer)) for token in value):
            sequences.append([int(token) for token in value])
        else:
            raise InputError(f"row {row}: neither text nor a list of token ids ({type(value).__name__})",
                             path=path, field=column)
    prompt_lengths = (frame["prompt_len"].astype(int).tolist() if "prompt_len" in frame.columns
                      else [0] * len(frame))
    return sequences, prompt_lengths, frame["task"].astype(str).tolist()


def build_datastore(
    out: str | Path, *, completions: str | Path | None = None, prompts: str | None = None, target: str | None = None,
    tokenizer: str | None = None, tasks: list[str] | None = None, max_ngram: int = 4, max_new_tokens: int = 128,
    trained_on: str | None = None, progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Build a datastore from completions, or from the target's greedy outputs on prompts.

    Parameters
    ----------
    out : path-like
        Datastore file to write (Parquet).
    completions : path-like, optional
        Parquet or JSONL with ``task``, ``completion`` (text; tokenised with ``tokenizer``) or
        ``token_ids``, and optionally ``prompt_len``.
    prompts, target : str, optional
        Instead: a prompt set and the target model, decoded greedily (``max_new_tokens``).
    tokenizer : str, optional
        The target's tokenizer for text completions.
    tasks : list of str, optional
        Keep these tasks only.
    max_ngram : int
        Longest suffix the drafter matches.
    trained_on : str, optional
        Name of what the datastore holds (default: its tasks joined by ``+``).
    progress : callable, optional
        ``progress(done, total)`` while decoding prompts.

    Returns
    -------
    dict
        The datastore's card (``path`` added).
    """
    if not 1 <= max_ngram <= 16:
        raise InputError(f"must be in [1, 16], got {max_ngram}", field="--max-ngram")
    if (completions is None) == (prompts is None):
        raise InputError("give --completions, or --prompts with --target", field="--completions")
    source: dict[str, Any]
    if completions is not None:
        from specsim.collect.models import load_tokenizer

        path = Path(completions)
        if not path.is_file():
            raise InputError("no such completions file", path=path, field="--completions")
        sequences, prompt_lengths, names = _completions(path, tasks, load_tokenizer(tokenizer) if tokenizer else None)
        source = {"source": "completions", "completions": str(path), "tokenizer": tokenizer}
    else:
        if target is None:
            raise InputError("--prompts needs --target (whose greedy outputs fill the datastore)", field="--target")
        from specsim.collect.decoding import CachedLM, Warp, autoregressive_decode
        from specsim.collect.models import load_model
        from specsim.collect.prompts import encode_prompt, load_prompts
        from specsim.collect.runner import _eos_ids

        chosen = [p for p in load_prompts(str(prompts)) if not tasks or p.task in tasks]
        if not chosen:
            raise InputError(f"no prompts of task(s) {', '.join(tasks or [])}", field="--task")
        loaded = load_model(target)
        lm, eos = CachedLM(loaded.model), _eos_ids(loaded)
        sequences, prompt_lengths, names = [], [], []
        for done, prompt in enumerate(chosen, start=1):
            ids = encode_prompt(loaded.tokenizer, prompt)
            output = autoregressive_decode(lm, ids, warp=Warp(), max_new_tokens=max_new_tokens, eos_ids=eos)
            sequences.append([t for t in output.output_ids if t not in eos])
            prompt_lengths.append(len(ids))
            names.append(prompt.task)
            if progress is not None:
                progress(done, len(chosen))
        source = {"source": "target greedy outputs", "prompts": str(prompts), "target": target,
                  "max_new_tokens": max_new_tokens}
    if not sequences:
        raise InputError("no completions to store", field="--task")
    metadata = {**source, "max_ngram": max_ngram,
                "trained_on": trained_on or "+".join(sorted(set(names)))}
    written = write_datastore(out, sequences, np.asarray(prompt_lengths), names, metadata)
    card = read_datastore(written).card()
    card.pop("lengths")
    return {**card, "path": str(written)}

"""Workloads given as text: prompt and response lengths counted with the target's tokenizer.

Sources (:func:`is_text_workload` tells them from lengths files):

- a ``.jsonl`` file whose rows hold ``prompt`` and ``response`` (or ``completion``) strings, or a
  chat ``messages`` list whose last message is the assistant's response (every earlier message is
  the prompt, through the chat template as ``collect`` encodes it);
- ``hf:NAME?split=S&prompt=COLUMN|messages=COLUMN&response=COLUMN`` (as ``collect`` reads
  datasets, plus the response column; a chat column whose last message is the assistant's needs
  no response column).

A prompt's length is the number of tokens ``collect`` would feed the target
(:func:`specsim.collect.prompts.encode_prompt`); a response's is its tokens without special
tokens. Sources with prompts but no responses are refused: the target's own output lengths come
from ``specsim collect --baseline`` without a drafter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from specsim.collect.prompts import HF_PREFIX, Prompt, encode_prompt, load_hf_dataset, parse_hf_source
from specsim.errors import InputError
from specsim.jsonl import read_jsonl_objects

__all__ = ["is_text_workload", "text_workload_lengths"]

_RESPONSE_KEYS = ("response", "completion")
NO_RESPONSE = "no response text: give one, or run `specsim collect --baseline` (no drafter) for the target's own " \
              "output lengths"


def is_text_workload(source: str | Path) -> bool:
    """Whether ``source`` is an ``hf:`` source or a JSONL of text (not of lengths)."""
    source = str(source)
    if source.startswith(HF_PREFIX):
        return True
    path = Path(source)
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    for _, row in read_jsonl_objects(path):
        return "output_len" not in row and ("prompt" in row or "messages" in row)
    return False


def _split_row(row: dict[str, Any], where: str, path: str) -> tuple[Prompt, str]:
    """The prompt (text or chat) and the response text of one row."""
    response = next((row[k] for k in _RESPONSE_KEYS if k in row), None)
    messages: Any = row.get("messages")
    if messages is not None and hasattr(messages, "tolist"):
        messages = messages.tolist()
    if messages is not None:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise InputError(f"{where}: must be a list of {{role, content}} strings", path=path, field="messages")
        if response is None and messages[-1]["role"] == "assistant":
            messages, response = messages[:-1], messages[-1]["content"]
        if not messages:
            raise InputError(f"{where}: no prompt messages before the response", path=path, field="messages")
        prompt = Prompt("row", "workload", "text", messages=tuple(
            {"role": m["role"], "content": m["content"]} for m in messages))
    else:
        text = row.get("prompt")
        if not isinstance(text, str) or not text:
            raise InputError(f"{where}: give a non-empty prompt string or a messages list", path=path,
                             field="prompt")
        prompt = Prompt("row", "workload", "text", prompt=text)
    if response is None:
        raise InputError(f"{where}: {NO_RESPONSE}", path=path, field="response")
    if not isinstance(response, str) or not response:
        raise InputError(f"{where}: must be a non-empty string", path=path, field="response")
    return prompt, response


def _rows(source: str) -> Iterable[tuple[str, dict[str, Any]]]:
    if source.startswith(HF_PREFIX):
        spec = parse_hf_source(source)
        loaded = load_hf_dataset(spec)
        text_column = spec.prompt or spec.messages
        for index, row in enumerate(loaded):
            mapped = {("prompt" if spec.prompt else "messages"): row[text_column]}
            if spec.response:
                mapped["response"] = row[spec.response]
            yield f"row {index}", mapped
        return
    path = Path(source)
    if not path.is_file():
        raise InputError("no such workload file", path=path)
    for number, row in read_jsonl_objects(path):
        yield f"line {number}", row


def text_workload_lengths(source: str | Path, tokenizer: Any | Callable[[], Any]) -> pd.DataFrame:
    """Prompt and output lengths of a text workload, in the target's tokens.

    Parameters
    ----------
    source : str or Path
        A ``.jsonl`` file or an ``hf:`` source (see the module docstring).
    tokenizer : tokenizer or callable
        The target's tokenizer, or a function returning it (called once, after the source is
        found readable).

    Returns
    -------
    pandas.DataFrame
        ``prompt_len`` and ``output_len``, one row per example.
    """
    source = str(source)
    rows = [(where, _split_row(row, where, source)) for where, row in _rows(source)]
    if not rows:
        raise InputError("no rows", path=source)
    if callable(tokenizer) and not hasattr(tokenizer, "encode"):
        tokenizer = tokenizer()
    lengths = []
    for where, (prompt, response) in rows:
        output = tokenizer(response, add_special_tokens=False)["input_ids"]
        if not output:
            raise InputError(f"{where}: the response encodes to no tokens", path=source, field="response")
        lengths.append((len(encode_prompt(tokenizer, prompt)), len(output)))
    return pd.DataFrame(lengths, columns=["prompt_len", "output_len"])

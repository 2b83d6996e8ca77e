"""Prompt sets: JSONL or Parquet files with one prompt per row.

Each row has ``prompt_id``, ``task``, ``dataset`` and either ``prompt`` (plain text, fed as
is) or ``messages`` (a chat, ``[{"role": ..., "content": ...}, ...]``, rendered with the
tokenizer's chat template, or joined by blank lines where the tokenizer has none). Other
columns are kept (for example ``split``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specsim.errors import InputError

__all__ = ["Prompt", "read_prompts", "write_prompts", "encode_prompt"]

_REQUIRED = ("prompt_id", "task", "dataset")


@dataclass(frozen=True)
class Prompt:
    """One prompt of a prompt set."""

    prompt_id: str
    task: str
    dataset: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Row for a prompt file."""
        row: dict[str, Any] = {"prompt_id": self.prompt_id, "task": self.task, "dataset": self.dataset}
        if self.prompt is not None:
            row["prompt"] = self.prompt
        if self.messages is not None:
            row["messages"] = [dict(m) for m in self.messages]
        return {**row, **self.extra}


def _prompt_from_row(row: dict[str, Any], path: Path, where: str) -> Prompt:
    for name in _REQUIRED:
        value = row.get(name)
        if not isinstance(value, str) or not value:
            raise InputError(f"{where}: missing or empty (a non-empty string is required)", path=path, field=name)
    prompt, messages = row.get("prompt"), row.get("messages")
    if (prompt is None) == (messages is None):
        raise InputError(f"{where}: give exactly one of 'prompt' and 'messages'", path=path, field="prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise InputError(f"{where}: must be a non-empty string", path=path, field="prompt")
    if messages is not None:
        if hasattr(messages, "tolist"):
            messages = messages.tolist()
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
        if not ok:
            raise InputError(f"{where}: must be a list of {{role, content}} strings", path=path, field="messages")
        messages = tuple({"role": m["role"], "content": m["content"]} for m in messages)
    extra = {k: v for k, v in row.items() if k not in (*_REQUIRED, "prompt", "messages")}
    return Prompt(row["prompt_id"], row["task"], row["dataset"], prompt, messages, extra)


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read and validate a prompt file (``.jsonl`` or ``.parquet``).

    Raises
    ------
    specsim.errors.InputError
        Unreadable file, bad row (line number given), or duplicate ``prompt_id``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such prompt file", path=path)
    prompts: list[Prompt] = []
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"not a readable Parquet file ({error})", path=path) from None
        prompts = [_prompt_from_row(row, path, f"row {i}") for i, row in enumerate(rows)]
    elif path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"line {number}: not valid JSON ({error.msg})", path=path) from None
                if not isinstance(row, dict):
                    raise InputError(f"line {number}: expected a JSON object", path=path)
                prompts.append(_prompt_from_row(row, path, f"line {number}"))
    else:
        raise InputError("prompt files must be .jsonl or .parquet", path=path)
    if not prompts:
        raise InputError("no prompts in the file", path=path)
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.prompt_id in seen:
            raise InputError(f"duplicate prompt_id {prompt.prompt_id!r}", path=path, field="prompt_id")
        seen.add(prompt.prompt_id)
    return prompts


def write_prompts(prompts: list[Prompt], path: str | Path) -> None:
    """Write prompts as JSONL, atomically."""
    from specsim.traces.store import atomic_write_bytes

    lines = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in prompts)
    atomic_write_bytes(path, lines.encode("utf-8"))


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: plain text as is, chats through the chat template."""
    if prompt.messages is not None:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(list(prompt.messages), add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return list(ids)
        text = "\n\n".join(m["content"] for m in prompt.messages)
    else:
        text = prompt.prompt
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise InputError("prompt encodes to no tokens", field=f"prompt {prompt.prompt_id}")
    return ids

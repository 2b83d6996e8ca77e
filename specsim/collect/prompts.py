"""Prompt sets: JSONL or Parquet files with one prompt per row, or a Hugging Face dataset.

Each row has ``prompt_id``, ``task``, ``dataset`` and either ``prompt`` (plain text, fed as
is) or ``messages`` (a chat, ``[{"role": ..., "content": ...}, ...]``, rendered with the
tokenizer's chat template, or joined by blank lines where the tokenizer has none). Other
columns are kept (for example ``split``).

A Hugging Face dataset is named by a source string (see :func:`parse_hf_source`)::

    hf:openai/openai_humaneval?split=test&prompt=prompt&id=task_id&task=code

loaded with :func:`datasets.load_dataset` (the hub where it is reachable, or a local dataset
directory or data-file folder) and mapped onto the same rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from specsim.errors import InputError

__all__ = [
    "Prompt",
    "HFSource",
    "read_prompts",
    "load_prompts",
    "prompts_digest",
    "parse_hf_source",
    "read_hf_prompts",
    "write_prompts",
    "encode_prompt",
]

HF_PREFIX = "hf:"

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
        from specsim.jsonl import read_jsonl_objects

        prompts = [_prompt_from_row(row, path, f"line {number}") for number, row in read_jsonl_objects(path)]
    else:
        raise InputError("prompt files must be .jsonl or .parquet", path=path)
    if not prompts:
        raise InputError("no prompts in the file", path=path)
    _check_unique(prompts, path)
    return prompts


@dataclass(frozen=True)
class HFSource:
    """Where and how to read prompts from a Hugging Face dataset.

    Attributes
    ----------
    name : str
        Hub id (``owner/name``), or a local directory (``save_to_disk`` output or a folder of
        data files that :func:`datasets.load_dataset` reads).
    split : str
        Split to read (default ``train``).
    prompt : str, optional
        Column holding plain-text prompts.
    messages : str, optional
        Column holding chats (lists of ``{role, content}``); exactly one of ``prompt`` and
        ``messages`` is given.
    id : str, optional
        Column of prompt ids; ``<split>-<row>`` when absent.
    task : str, optional
        Task label of every prompt (default: the dataset's last path component).
    config : str, optional
        Dataset configuration (subset) name.
    revision : str, optional
        Hub revision (commit, tag or branch) to pin.
    response : str, optional
        Column holding each prompt's response text (read by text workloads,
        :mod:`specsim.collect.text_workload`; ignored by ``collect``).
    """

    name: str
    split: str = "train"
    prompt: str | None = None
    messages: str | None = None
    id: str | None = None
    task: str | None = None
    config: str | None = None
    revision: str | None = None
    response: str | None = None


def parse_hf_source(source: str) -> HFSource:
    """Parse ``hf:NAME?split=S&prompt=COL|messages=COL[&id=COL][&task=T][&config=C][&revision=R]``.

    Raises
    ------
    specsim.errors.InputError
        Not an ``hf:`` source, unknown or repeated option, or not exactly one of ``prompt`` and
        ``messages``.
    """
    if not source.startswith(HF_PREFIX):
        raise InputError(f"a Hugging Face source starts with {HF_PREFIX!r}", field="prompts")
    name, _, query = source[len(HF_PREFIX) :].partition("?")
    if not name:
        raise InputError("no dataset name after 'hf:'", field="prompts")
    options: dict[str, str] = {}
    allowed = set(HFSource.__dataclass_fields__) - {"name"}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []:
        if key not in allowed:
            raise InputError(f"unknown option {key!r} in {source!r}; use {', '.join(sorted(allowed))}",
                             field="prompts")
        if key in options:
            raise InputError(f"option {key!r} given twice in {source!r}", field="prompts")
        if not value:
            raise InputError(f"option {key!r} is empty in {source!r}", field="prompts")
        options[key] = value
    if ("prompt" in options) == ("messages" in options):
        raise InputError(f"give exactly one of prompt=COLUMN and messages=COLUMN in {source!r}", field="prompts")
    return HFSource(name=name, **options)


def read_hf_prompts(source: HFSource | str) -> list[Prompt]:
    """Read prompts from a Hugging Face dataset (hub, local dataset directory or data folder).

    Raises
    ------
    specsim.errors.InputError
        ``datasets`` not installed, the dataset or split cannot be loaded (hub unreachable,
        unknown name), a named column is missing, or a row is not a valid prompt.
    """
    if isinstance(source, str):
        source = parse_hf_source(source)
    return _read_hf_prompts_rows(source, load_hf_dataset(source))


def load_hf_dataset(source: HFSource) -> Any:
    """The split of a Hugging Face dataset that ``source`` names, its named columns checked."""
    where = f"hf:{source.name}"
    try:
        import datasets
    except ImportError:
        raise InputError("reading Hugging Face datasets needs `pip install 'specsim[collect]'`",
                         path=where) from None
    local = Path(source.name)
    # The hub client logs every retry of an unreachable host; the one error line below says it.
    quiet = [logging.getLogger(name) for name in ("huggingface_hub", "datasets")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():  # save_to_disk output
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise InputError(f"no split {source.split!r} (has {', '.join(loaded)})", path=where,
                                     field="split")
                loaded = loaded[source.split]
        else:
            loaded = datasets.load_dataset(source.name, source.config, split=source.split, revision=source.revision)
    except InputError:
        raise
    except Exception as error:  # datasets raises many types (hub, network, builder, split errors)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot load the dataset ({type(error).__name__}: {message})", path=where) from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    for column, option in ((source.prompt or source.messages, "prompt" if source.prompt else "messages"),
                           (source.id, "id"), (source.response, "response")):
        if column is not None and column not in loaded.column_names:
            raise InputError(f"no column {column!r} (columns: {', '.join(loaded.column_names)})", path=where,
                             field=option)
    return loaded


def _read_hf_prompts_rows(source: HFSource, loaded: Any) -> list[Prompt]:
    where = f"hf:{source.name}"
    text_column = source.prompt or source.messages
    task = source.task or source.name.rstrip("/").split("/")[-1]
    prompts = []
    for index, row in enumerate(loaded):
        prompt_id = str(row[source.id]) if source.id else f"{source.split}-{index}"
        mapped = {"prompt_id": prompt_id, "task": task, "dataset": source.name,
                  ("prompt" if source.prompt else "messages"): row[text_column], "split": source.split}
        prompts.append(_prompt_from_row(mapped, Path(where), f"row {index}"))
    if not prompts:
        raise InputError(f"split {source.split!r} has no rows", path=where)
    _check_unique(prompts, Path(where))
    return prompts


def load_prompts(source: str | Path) -> list[Prompt]:
    """Prompts from a file (``.jsonl``/``.parquet``) or an ``hf:`` dataset source."""
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        return read_hf_prompts(source)
    return read_prompts(source)


def prompts_digest(source: str | Path) -> str:
    """SHA-256 of a prompt set: of the file's bytes, or of the rows read from an ``hf:`` source."""
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        rows = [p.to_dict() for p in read_hf_prompts(source)]
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    if not Path(source).is_file():
        raise InputError("no such prompt file", path=source)
    with open(source, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_unique(prompts: list[Prompt], path: Path) -> None:
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.prompt_id in seen:
            raise InputError(f"duplicate prompt_id {prompt.prompt_id!r}", path=path, field="prompt_id")
        seen.add(prompt.prompt_id)


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
        text = prompt.prompt or ""
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise InputError("prompt encodes to no tokens", field=f"prompt {prompt.prompt_id}")
    return ids

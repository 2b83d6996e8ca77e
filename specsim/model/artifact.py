"""The posterior file: a typed, versioned artifact saved once and loaded once.

A posterior file is ArviZ ``InferenceData`` in NetCDF (``arviz.from_netcdf`` opens it) whose
posterior group carries the attribute ``specsim_metadata``: the JSON of
:class:`PosteriorMetadata`, with ``format`` and ``version`` fields. Everything prediction needs
besides the draws travels in it (model layout, the drafters' training lengths, the fitted
tasks' lengths, the cost models), so ``specsim predict`` never has to find the traces again.
The file is written to a temporary sibling and renamed, so an interrupted save leaves the
previous file intact.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import InputError
from specsim.simulate.cost import CostModel

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_VERSION", "PosteriorMetadata", "Posterior", "posterior_from_idata",
           "save_posterior", "load_posterior", "REQUIRED_VARIABLES"]

ARTIFACT_FORMAT = "specsim-posterior"
ARTIFACT_VERSION = 3
#: Posterior variables prediction reads.
REQUIRED_VARIABLES = ("intercept", "type_effect", "b_finetuned", "b_index_finetuned", "b_position_finetuned",
                      "index_effect", "position_effect", "task_effect", "drafter_effect", "sigma_task",
                      "sigma_drafter")


@dataclass(frozen=True)
class PosteriorMetadata:
    """Everything stored beside the draws (see the module docstring).

    Attributes
    ----------
    tasks, drafters : list of str
        Names behind the model's task and drafter codes.
    drafter_kinds : dict of str to str
        ``generic`` or ``finetuned`` per drafter.
    position_edges : list of float
        Interior edges of the position bins.
    n_draft_index : int
    divergence_measure, length_kind : str
        How the divergence covariate was computed.
    reference_lengths : dict of str to list of float
        Each drafter's training-data lengths (``length_kind``).
    options : dict
        :class:`specsim.model.hierarchical.ModelOptions` fields.
    sampler : str
    diagnostics : dict
        The sampler's diagnostics and the gate's verdict.
    draws, tune, chains, seed : int
    target_accept : float
    temperature : float
        Temperature of the fitted traces.
    traces : str
        Absolute path of the fitted trace directory (informative only).
    task_lengths : dict
        Per fitted task, ``{"prompt_len": [...], "output_len": [...]}`` (workloads by task name).
    cost_models : dict of str to dict
        :meth:`CostModel.to_dict` per drafter, fitted at ``temperature``.
    loo_comparison : list of dict, optional
        PSIS-LOO comparison with the model without divergence terms.
    observed_positions : dict of str to int
        Per drafter, the largest generated-token position its traces decoded.
    cost_run_log_sd : float
        How much the stored costs move between collection runs: root mean square over runs x
        drafters of the mean log error of a run's speed-ups under costs fitted on the other runs
        (:func:`specsim.simulate.validation.cost_transfer_errors`); when fewer than two runs
        could be compared, :data:`specsim.workflow.DEFAULT_COST_RUN_LOG_SD` (``cost_transfer``
        is then empty). Predictions under the stored costs carry it.
    cost_transfer : list of dict
        The per-run figures behind ``cost_run_log_sd`` (empty: the default was used).
    drafter_types : list of str
        The fitted drafter types, in the order of the model's type axis.
    drafter_type_of : dict of str to str
        Each fitted drafter's type.
    windows : dict of str to float
        Training window (tokens) of each drafter that has one (a drafter trained on nothing
        has none and is absent).
    own_tasks : dict of str to list of str
        The fitted tasks each drafter was trained on.
    types_past_window : list of str
        The drafter types with measured cells past a drafter's training window (the others' window
        slopes are their priors').
    notes : list of str
        What the fit left out or assumed (terms the data cannot identify, estimated covariates).
    drafting_tasks, drafting_drafters : list of str
        The tasks and drafters of the chance-of-drafting part (:mod:`specsim.model.drafting`):
        the drafters that drafted nothing at some step; empty when every drafter drafts at every
        step.
    drafting_pairs : list of [str, str]
        The fitted task x drafter pairs of that part, in the order of ``draft_pair_effect``.
    pairs : list of [str, str]
        The fitted task x drafter pairs of the acceptance model, in the order of ``pair_effect``
        (empty without the pair term).
    """

    tasks: list[str]
    drafters: list[str]
    drafter_kinds: dict[str, str]
    position_edges: list[float]
    n_draft_index: int
    divergence_measure: str
    length_kind: str
    reference_lengths: dict[str, list[float]]
    options: dict[str, Any]
    sampler: str
    diagnostics: dict[str, Any]
    draws: int
    tune: int
    chains: int
    seed: int
    target_accept: float
    temperature: float = 0.0
    traces: str = ""
    task_lengths: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    cost_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    loo_comparison: list[dict[str, Any]] | None = None
    observed_positions: dict[str, int] = field(default_factory=dict)
    cost_run_log_sd: float = 0.0
    cost_transfer: list[dict[str, Any]] = field(default_factory=list)
    drafter_types: list[str] = field(default_factory=lambda: ["model"])
    drafter_type_of: dict[str, str] = field(default_factory=dict)
    windows: dict[str, float] = field(default_factory=dict)
    own_tasks: dict[str, list[str]] = field(default_factory=dict)
    types_past_window: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drafting_tasks: list[str] = field(default_factory=list)
    drafting_drafters: list[str] = field(default_factory=list)
    drafting_pairs: list[list[str]] = field(default_factory=list)
    pairs: list[list[str]] = field(default_factory=list)
    format: str = ARTIFACT_FORMAT
    version: int = ARTIFACT_VERSION

    def cost_model(self, drafter: str) -> CostModel:
        """The stored cost model of ``drafter``."""
        if not self.cost_models:
            raise InputError("the fit stored no cost model (a counts table carries no timings): give --cost-ratio "
                             "or --cost-profile", field="--cost-from")
        if drafter not in self.cost_models:
            raise InputError(f"no cost model for {drafter!r} (stored: {', '.join(self.cost_models) or 'none'})",
                             field="--cost-from")
        return CostModel.from_dict(self.cost_models[drafter])

    def to_json(self) -> str:
        """JSON text (NumPy values as plain numbers)."""
        return json.dumps(asdict(self), default=_jsonable)

    @classmethod
    def from_json(cls, text: str, path: str | Path | None = None) -> PosteriorMetadata:
        """Parse and check the stored JSON (format, version, fields)."""
        try:
            values = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise InputError(f"broken specsim metadata ({error})", path=path) from None
        if not isinstance(values, dict) or values.get("format") != ARTIFACT_FORMAT:
            raise InputError("not a specsim posterior (no 'format: specsim-posterior' in its metadata)", path=path)
        if values.get("version") != ARTIFACT_VERSION:
            raise InputError(f"posterior format version {values.get('version')!r}; this specsim reads version "
                             f"{ARTIFACT_VERSION}: fit again with this version", path=path)
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing or set(values) - names:
            raise InputError(f"posterior metadata fields missing {sorted(missing)} or unknown "
                             f"{sorted(set(values) - names)}", path=path)
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            problem = _type_problem(value, hints[name])
            if problem:
                raise InputError(f"posterior metadata {problem}", path=path, field=name)
        try:
            metadata = cls(**values)
        except TypeError as error:
            raise InputError(f"broken specsim metadata ({error})", path=path) from None
        metadata.check(path)
        return metadata

    def check(self, path: str | Path | None = None) -> None:
        """The invariants between fields (names, kinds, bins, spreads); :class:`InputError` if broken."""
        def fail(field_name: str, problem: str) -> None:
            raise InputError(f"posterior metadata {problem}", path=path, field=field_name)

        for name in ("tasks", "drafters"):
            names = getattr(self, name)
            if not names or len(set(names)) != len(names):
                fail(name, f"must be a non-empty list of distinct names, got {names!r}")
        for drafter, kind in self.drafter_kinds.items():
            if drafter not in self.drafters or kind not in ("generic", "finetuned", "untrained"):
                fail("drafter_kinds", f"{drafter!r}: {kind!r} is not a fitted drafter's generic, finetuned or "
                     "untrained")
        if self.n_draft_index < 1:
            fail("n_draft_index", f"must be >= 1, got {self.n_draft_index}")
        if not self.drafter_types or len(set(self.drafter_types)) != len(self.drafter_types):
            fail("drafter_types", f"must be a non-empty list of distinct names, got {self.drafter_types!r}")
        for drafter, kind in self.drafter_type_of.items():
            if drafter not in self.drafters or kind not in self.drafter_types:
                fail("drafter_type_of", f"{drafter!r}: {kind!r} is not a fitted drafter's fitted type")
        for drafter, window in self.windows.items():
            if drafter not in self.drafters or not (math.isfinite(window) and window > 0):
                fail("windows", f"{drafter!r}: {window!r} is not a fitted drafter's finite window > 0")
        for drafter in self.drafting_drafters:
            if drafter not in self.drafters:
                fail("drafting_drafters", f"{drafter!r} is not a fitted drafter")
        for pair in self.drafting_pairs:
            if len(pair) != 2 or pair[0] not in self.drafting_tasks or pair[1] not in self.drafting_drafters:
                fail("drafting_pairs", f"{pair!r} is not a [task, drafter] pair of the drafting part")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] not in self.tasks or pair[1] not in self.drafters:
                fail("pairs", f"{pair!r} is not a fitted [task, drafter] pair")
        edges = self.position_edges
        if any(not math.isfinite(e) for e in edges) or list(edges) != sorted(set(edges)):
            fail("position_edges", "must be finite and increasing")
        for name in ("cost_run_log_sd", "temperature", "target_accept"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                fail(name, f"must be a finite number >= 0, got {value}")


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` (parsed JSON) does not fit the type ``hint``, or None.

    Follows the forms the metadata uses: ``str``, ``int``, ``float`` (an int is a float),
    ``list[T]``, ``dict[str, T]``, ``T | None`` and ``Any``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, arg) for arg in args]
        return None if any(p is None for p in problems) else problems[0]
    if hint is type(None):
        return None if value is None else f"must be null, got {value!r}"[:120]
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list, got {type(value).__name__} {value!r}"[:120]
        for item in value:
            problem = _type_problem(item, args[0]) if args else None
            if problem:
                return f"item {problem}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"must be an object, got {type(value).__name__} {value!r}"[:120]
        for key, item in value.items():
            problem = _type_problem(item, args[1]) if args else None
            if problem:
                return f"{key!r}: {problem}"
        return None
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"must be a number, got {value!r}"[:120]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"must be a whole number, got {value!r}"[:120]
    if hint is str:
        return None if isinstance(value, str) else f"must be text, got {value!r}"[:120]
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


@dataclass
class Posterior:
    """Posterior draws of the model's parameters (chains flattened) and their metadata."""

    draws: dict[str, np.ndarray]
    metadata: PosteriorMetadata
    idata: Any = None

    @property
    def n_draws(self) -> int:
        """Number of posterior draws (chains x draws)."""
        return len(self.draws["intercept"])


def posterior_from_idata(idata: Any, metadata: PosteriorMetadata) -> Posterior:
    """Flatten chains x draws of every parameter."""
    draws = {}
    for name, values in idata.posterior.data_vars.items():
        if name == "acceptance":
            continue
        array = values.values
        draws[name] = array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])
    return Posterior(draws, metadata, idata)


def save_posterior(idata: Any, metadata: PosteriorMetadata, path: str | Path) -> Path:
    """Write ``idata`` with ``metadata`` to ``path`` atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.posterior.attrs["specsim_metadata"] = metadata.to_json()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        idata.to_netcdf(str(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_posterior(path: str | Path) -> Posterior:
    """Read a posterior written by ``specsim fit``; one clear error for anything else."""
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise InputError("no such posterior file", path=path)
    try:
        idata = az.from_netcdf(str(path))
    except Exception as error:  # noqa: BLE001 - netCDF/HDF5 raise many types for a foreign file
        raise InputError(f"not a readable posterior file ({str(error).splitlines()[0] if str(error) else error!r})",
                         path=path) from None
    if "posterior" not in idata.groups():
        raise InputError("no posterior group (was it written by specsim fit?)", path=path)
    raw = idata.posterior.attrs.get("specsim_metadata")
    if raw is None:
        raise InputError("no specsim metadata in the posterior (was it written by specsim fit?)", path=path)
    metadata = PosteriorMetadata.from_json(raw, path)
    from specsim.model.drafting import DRAFTING_VARIABLES

    required = (*REQUIRED_VARIABLES, *(DRAFTING_VARIABLES if metadata.drafting_drafters else ()))
    missing = [name for name in required if name not in idata.posterior]
    if missing:
        raise InputError(f"posterior variables missing: {', '.join(missing)}", path=path)
    return posterior_from_idata(idata, metadata)

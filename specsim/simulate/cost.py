"""Cost model of speculative and plain decoding, linear in draft length and context.

Seconds per draft-verify step at context length ``x`` (prompt plus generated tokens) with
``g`` drafted tokens::

    draft_s  = draft_step_s + g * (draft_base_s + draft_per_context_s * x)
    verify_s = verify_base_s + verify_per_token_s * g + verify_per_context_s * x

Where the traces hold steps that drafted exactly ``g`` tokens, ``verify_table[g]`` replaces
``verify_base_s + verify_per_token_s * g``: on CPUs (and at small batch on GPUs) the time of a
verify pass is not linear in the tokens it checks (matrix-kernel shapes; on the reference CPU,
checking 3 tokens cost 0.079 s and 5 tokens 0.058 s), so a measured table, as inference-lab
keeps, predicts measured draft lengths exactly and the linear terms extrapolate to others.

and seconds per token of the plain autoregressive target at context ``x``::

    target_s = target_base_s + target_per_context_s * x

Fixed per-sequence overheads (prefill of the prompt) enter as ``*_prefill_*`` terms that
grow with the prompt length. :func:`fit_cost_model` fits every coefficient by least squares
from the steps and sequences tables and keeps the fit diagnostics; :func:`fit_cost_models` is
the one grouping every stage uses: one model per drafter and temperature, with each run's
timings first scaled to the plain-decoding time's trend over all runs (:func:`normalise_run_timings`),
so that a stage collected while the machine ran faster or slower does not bias another stage's
predictions, and what the context costs is kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.traces.schema import SEQUENCE_KEY

__all__ = ["CostModel", "fit_cost_model", "fit_cost_models", "normalise_run_timings", "leviathan_cost_model",
           "CostKey", "read_cost_profile", "read_cost_profile_batches", "COST_PROFILE_FORMAT", "COST_PROFILE_VERSION",
           "fit_nonnegative", "plain_time_design"]

COST_PROFILE_FORMAT = "specsim-cost-profile"
COST_PROFILE_VERSION = 2
#: Profile versions this specsim reads (1: batch size 1 only; 2: ``cost_models_by_batch`` added).
COST_PROFILE_READS = (1, 2)

#: Key of a cost model in :func:`fit_cost_models`: (drafter, temperature).
CostKey = tuple[str, float]


@dataclass(frozen=True)
class CostModel:
    """Linear cost model; all coefficients in seconds (see the module docstring).

    Examples
    --------
    >>> cost = CostModel(draft_base_s=0.001, verify_base_s=0.01, target_base_s=0.01)
    >>> round(float(cost.step_seconds(4, 100)), 4)
    0.014
    """

    draft_base_s: float = 0.0
    draft_per_context_s: float = 0.0
    draft_step_s: float = 0.0
    verify_base_s: float = 1.0
    verify_per_token_s: float = 0.0
    verify_per_context_s: float = 0.0
    target_base_s: float = 1.0
    target_per_context_s: float = 0.0
    spec_prefill_base_s: float = 0.0
    spec_prefill_per_token_s: float = 0.0
    baseline_prefill_base_s: float = 0.0
    baseline_prefill_per_token_s: float = 0.0
    verify_table: dict[int, float] = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict, compare=False, repr=False)

    def verify_base(self, gamma: np.ndarray | int) -> np.ndarray:
        """Seconds of verifying ``gamma`` drafted tokens at context 0 (the table where measured)."""
        gamma = np.asarray(gamma, dtype=float)
        linear = self.verify_base_s + self.verify_per_token_s * gamma
        if not self.verify_table:
            return linear
        measured = np.vectorize(lambda g: self.verify_table.get(int(g), np.nan), otypes=[float])(gamma)
        return np.where(np.isnan(measured), linear, measured)

    def step_seconds(self, gamma: np.ndarray | int, context: np.ndarray | float) -> np.ndarray:
        """Seconds of one draft-verify step drafting ``gamma`` tokens at ``context``."""
        gamma = np.asarray(gamma, dtype=float)
        context = np.asarray(context, dtype=float)
        draft = self.draft_step_s + gamma * (self.draft_base_s + self.draft_per_context_s * context)
        return draft + self.verify_base(gamma) + self.verify_per_context_s * context

    def step_coefficients(self, gamma: int) -> tuple[float, float]:
        """``(base, per_context)`` with ``step_seconds(gamma, x) = base + per_context * x``."""
        base = self.draft_step_s + gamma * self.draft_base_s + float(self.verify_base(gamma))
        per_context = gamma * self.draft_per_context_s + self.verify_per_context_s
        return base, per_context

    def target_token_seconds(self, context: np.ndarray | float) -> np.ndarray:
        """Seconds of one plain autoregressive target token at ``context``."""
        return self.target_base_s + self.target_per_context_s * np.asarray(context, dtype=float)

    def baseline_seconds(self, prompt_len: np.ndarray, output_len: np.ndarray) -> np.ndarray:
        """Plain decoding time of sequences: prefill plus the sum of per-token costs."""
        prompt_len = np.asarray(prompt_len, dtype=float)
        output_len = np.asarray(output_len, dtype=float)
        tokens = output_len * self.target_base_s + self.target_per_context_s * (
            output_len * prompt_len + output_len * (output_len - 1) / 2
        )
        return self.baseline_prefill_base_s + self.baseline_prefill_per_token_s * prompt_len + tokens

    def spec_overhead_seconds(self, prompt_len: np.ndarray) -> np.ndarray:
        """Per-sequence speculative overhead outside the steps (prefill of both models)."""
        return self.spec_prefill_base_s + self.spec_prefill_per_token_s * np.asarray(prompt_len, dtype=float)

    @property
    def cost_ratio(self) -> float:
        """Drafter over target cost per token at zero context (Leviathan et al.'s ``c``)."""
        return self.draft_base_s / self.target_base_s if self.target_base_s else float("nan")

    def to_dict(self, diagnostics: bool = True) -> dict:
        """Coefficients (and diagnostics) as plain Python values; the table's keys as strings (JSON)."""
        values = asdict(self)
        values["verify_table"] = {str(k): float(v) for k, v in self.verify_table.items()}
        if not diagnostics:
            values.pop("diagnostics")
        return values

    @classmethod
    def from_dict(cls, values: dict) -> CostModel:
        """Inverse of :meth:`to_dict` (unknown keys refused with :class:`InputError`)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown cost-model field(s) {sorted(unknown)}", field="cost model")
        values = dict(values)
        table = values.get("verify_table") or {}
        if not isinstance(table, dict):
            raise InputError(f"must map draft lengths to seconds (a JSON object), got a {type(table).__name__}",
                             field="verify_table")
        try:
            values["verify_table"] = {int(k): float(v) for k, v in table.items()}
            numbers = {k: float(v) for k, v in values.items() if k not in ("verify_table", "diagnostics")}
        except (TypeError, ValueError) as error:
            raise InputError(f"cost-model values must be numbers ({error})", field="cost model") from None
        for name, number in numbers.items():
            if not (np.isfinite(number) or name.startswith(("target_", "baseline_"))) or number < 0:
                raise InputError(f"must be a finite number >= 0, got {number}", field=f"cost model {name}")
        return cls(**{**values, **numbers})


#: Steps a drafted-token count needs before the verify table keeps its own cost for it.
_MIN_TABLE_STEPS = 20


def _cost_model_from(values: Any, path: Path, where: str) -> CostModel:
    if not isinstance(values, dict):
        raise InputError(f"expected a JSON object of cost-model coefficients{where}", path=path, field="--cost-profile")
    try:
        model = CostModel.from_dict({k: v for k, v in values.items() if k != "diagnostics"})
    except InputError as error:
        raise InputError(error.problem + where, path=path, field=error.field) from None
    if not (np.isfinite(model.target_base_s) and model.target_base_s > 0):
        raise InputError(f"a cost profile needs target_base_s > 0 (the plain-decoding token time){where}", path=path,
                         field="--cost-profile")
    # A profile is hardware's measured costs: every one finite (a fitted model may lack the plain terms).
    for name, value in model.to_dict(diagnostics=False).items():
        if name != "verify_table" and not np.isfinite(value):
            raise InputError(f"must be a finite number >= 0, got {value}{where}", path=path, field=name)
    for draft, value in model.verify_table.items():
        if not (np.isfinite(value) and value >= 0) or not 0 <= draft <= 1024:
            raise InputError(f"entry {draft}: {value} must be a finite time >= 0 at a draft length in [0, 1024]"
                             f"{where}", path=path, field="verify_table")
    return model


def read_cost_profile_batches(path: str | Path) -> dict[int, CostModel]:
    """Every batch size's cost model of a cost profile (``{1: model}`` for a version-1 profile or a bare model).

    A profile file is ``{"format": "specsim-cost-profile", "version": 2, "cost_model": {...},
    "cost_models_by_batch": {"1": {...}, "4": {...}}, ...}``: each model's times are of passes
    over the whole batch (``specsim profile --batch-size``); ``cost_model`` is batch size 1.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such cost profile", path=path, field="--cost-profile")
    try:
        values = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"not a JSON cost profile ({str(error)[:200]})", path=path, field="--cost-profile") from None
    if isinstance(values, dict) and "cost_model" in values:
        if values.get("format") != COST_PROFILE_FORMAT or values.get("version") not in COST_PROFILE_READS:
            raise InputError(f"expected format {COST_PROFILE_FORMAT} version "
                             f"{' or '.join(map(str, COST_PROFILE_READS))}", path=path, field="--cost-profile")
        batches = values.get("cost_models_by_batch") or {"1": values["cost_model"]}
        if not isinstance(batches, dict):
            raise InputError("cost_models_by_batch must map batch sizes to cost models", path=path,
                             field="cost_models_by_batch")
        models = {}
        for key, model in batches.items():
            if not (isinstance(key, str) and key.isdigit() and 1 <= int(key) <= 1_000_000):
                raise InputError(f"batch size {key!r} must be a whole number in [1, 1000000]", path=path,
                                 field="cost_models_by_batch")
            models[int(key)] = _cost_model_from(model, path, f" (batch size {key})")
        if 1 not in models:
            models[1] = _cost_model_from(values["cost_model"], path, "")
        return dict(sorted(models.items()))
    return {1: _cost_model_from(values, path, "")}


def read_cost_profile(path: str | Path) -> CostModel:
    """Read a cost model at batch size 1 from JSON: a ``specsim profile`` file or a bare :meth:`CostModel.to_dict`.

    See :func:`read_cost_profile_batches` for the format and the other batch sizes.
    """
    return read_cost_profile_batches(path)[1]


def leviathan_cost_model(cost_ratio: float) -> CostModel:
    """The cost model behind Leviathan et al. (2023): target step 1, draft token ``c``.

    Verification of ``gamma`` tokens costs as much as one target token, and context is free.
    """
    return CostModel(draft_base_s=cost_ratio, verify_base_s=1.0, target_base_s=1.0)


def fit_nonnegative(response: np.ndarray, design: np.ndarray, names: list[str], *, exact: bool = False
                    ) -> tuple[np.ndarray, dict]:
    """Non-negative least squares of ``response`` on ``design``: coefficients and fit diagnostics.

    Every cost coefficient is a time and cannot be negative.

    Plain OLS on short or collinear timing data returns negative per-context costs that fit
    the sample but extrapolate to negative times; NNLS drops such terms to zero instead.
    ``exact`` allows as many rows as coefficients (a cost profile's medians: one per timed pass),
    where a fit from traces asks for one row more.
    """
    from scipy.optimize import nnls

    if len(response) < design.shape[1] + (0 if exact else 1):
        raise InputError(
            f"too few rows ({len(response)}) to fit {len(names)} cost coefficients", field="steps"
        )
    scale = np.where(design.std(axis=0) > 0, np.abs(design).max(axis=0), 1.0)
    params, _ = nnls(design / scale, response)
    params = params / scale
    residual = response - design @ params
    total = np.sum((response - response.mean()) ** 2)
    diagnostics = {
        "n": int(len(response)),
        "method": "non-negative least squares",
        "r_squared": float(1 - np.sum(residual**2) / total) if total > 0 else float("nan"),
        "residual_std_s": float(np.sqrt(np.sum(residual**2) / max(len(response) - design.shape[1], 1))),
        "coefficients": dict(zip(names, map(float, params), strict=True)),
    }
    return params, diagnostics


def fit_cost_model(steps: pd.DataFrame, sequences: pd.DataFrame) -> CostModel:
    """Fit the linear cost model from measured step and sequence timings.

    Parameters
    ----------
    steps : pandas.DataFrame
        Steps table (``n_drafted``, ``context_len``, ``draft_s``, ``verify_s``).
    sequences : pandas.DataFrame
        Sequences table; rows with ``baseline_wall_s`` fit the plain-decoding costs.

    Returns
    -------
    CostModel
        With ``diagnostics`` holding n, R^2, residual standard deviation and coefficients of
        each of the four regressions.

    Notes
    -----
    Every regression is non-negative least squares (costs are times). Draft time is
    regressed on ``[g, g*x]``, verify time on ``[1, g, x]`` (``g`` drafted
    tokens, ``x`` context at the step's start); the baseline's total time on
    ``[1, p, L, L*p + L(L-1)/2]`` (``p`` prompt, ``L`` output length), which integrates the
    per-token cost over the sequence; the speculative overhead (wall time minus summed step
    time) on ``[1, p]``. A single gamma cannot separate ``verify_base_s`` from
    ``verify_per_token_s``; then the per-token term is set to 0 and its cost is in the base.
    """
    if steps.empty:
        raise InputError("no steps to fit the cost model from", field="steps")
    g = steps["n_drafted"].to_numpy(float)
    x = steps["context_len"].to_numpy(float)
    # A fixed cost per step (a lookup's search, a call's overhead) is told apart from the per-token
    # cost only where steps drafted several counts, each often enough.
    draft_counts = pd.Series(g).value_counts()
    per_step = int((draft_counts >= _MIN_TABLE_STEPS).sum()) >= 2
    draft_params, draft_diag = fit_nonnegative(
        steps["draft_s"].to_numpy(float), np.column_stack([g, g * x] + ([np.ones_like(g)] if per_step else [])),
        ["per_token", "per_token_context"] + (["per_step"] if per_step else [])
    )
    several_gammas = np.unique(g).size > 1
    verify_design = np.column_stack([np.ones_like(g), g, x] if several_gammas else [np.ones_like(g), x])
    verify_names = ["base", "per_token", "per_context"] if several_gammas else ["base", "per_context"]
    verify_params, verify_diag = fit_nonnegative(steps["verify_s"].to_numpy(float), verify_design, verify_names)
    if not several_gammas:
        verify_params = np.array([verify_params[0], 0.0, verify_params[1]])
    # Measured verify cost per drafted-token count (at context 0), where a count has enough steps.
    counts = pd.Series(g).value_counts()
    table_sizes = sorted(int(k) for k, n in counts.items() if n >= _MIN_TABLE_STEPS)
    verify_table: dict[int, float] = {}
    if table_sizes:
        frequent = np.isin(g, table_sizes)
        indicators = np.column_stack([g[frequent] == k for k in table_sizes] + [x[frequent]]).astype(float)
        table_params, table_diag = fit_nonnegative(steps["verify_s"].to_numpy(float)[frequent], indicators,
                                        [f"tokens_{k}" for k in table_sizes] + ["per_context"])
        verify_table = dict(zip(table_sizes, map(float, table_params[:-1]), strict=True))
        verify_params[2] = table_params[-1]
        verify_diag["table"] = table_diag

    step_time = steps.groupby(SEQUENCE_KEY, observed=True)[["draft_s", "verify_s"]].sum().sum(axis=1)
    keyed = sequences.set_index(SEQUENCE_KEY)
    overhead = (keyed["spec_wall_s"] - step_time.reindex(keyed.index).fillna(0.0)).to_numpy(float)
    p_spec = keyed["prompt_len"].to_numpy(float)
    spec_params, spec_diag = fit_nonnegative(overhead, np.column_stack([np.ones_like(p_spec), p_spec]),
                                             ["base", "per_token"])

    with_baseline = sequences[sequences["baseline_wall_s"].notna()]
    diagnostics = {"draft": draft_diag, "verify": verify_diag, "spec_overhead": spec_diag}
    baseline_values = dict(target_base_s=float("nan"), target_per_context_s=float("nan"),
                           baseline_prefill_base_s=float("nan"), baseline_prefill_per_token_s=float("nan"))
    if len(with_baseline):
        design = plain_time_design(with_baseline["prompt_len"].to_numpy(float),
                                   with_baseline["baseline_tokens"].fillna(with_baseline["output_len"]).to_numpy(float))
        base_params, base_diag = fit_nonnegative(
            with_baseline["baseline_wall_s"].to_numpy(float), design,
            ["prefill_base", "prefill_per_token", "per_token", "per_token_context"],
        )
        diagnostics["baseline"] = base_diag
        baseline_values = dict(
            baseline_prefill_base_s=base_params[0], baseline_prefill_per_token_s=base_params[1],
            target_base_s=base_params[2], target_per_context_s=base_params[3],
        )
    return CostModel(
        draft_base_s=draft_params[0],
        draft_per_context_s=draft_params[1],
        draft_step_s=draft_params[2] if per_step else 0.0,
        verify_base_s=verify_params[0],
        verify_per_token_s=verify_params[1],
        verify_per_context_s=verify_params[2],
        spec_prefill_base_s=spec_params[0],
        spec_prefill_per_token_s=spec_params[1],
        verify_table=verify_table,
        diagnostics=diagnostics,
        **baseline_values,
    )


def plain_time_design(prompt_len: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Regressors of a sequence's plain-decoding time: ``[1, p, L, L p + L (L - 1) / 2]``.

    The last column integrates the per-token cost ``target_base_s + target_per_context_s * x`` over
    the ``L`` generated tokens after a prompt of ``p`` (the :meth:`CostModel.baseline_seconds` form).
    """
    p = np.asarray(prompt_len, dtype=float)
    length = np.asarray(tokens, dtype=float)
    return np.column_stack([np.ones_like(p), p, length, length * p + length * (length - 1) / 2])


def normalise_run_timings(steps: pd.DataFrame, sequences: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Put every run's timings on one time scale: the plain-decoding time's trend over all runs.

    A run (``run_id`` x ``temperature``) collected while the machine ran faster or slower would
    bias another run's predictions. The plain-decoding time of every timed sequence of every run
    is fitted as one linear cost model of its lengths (:func:`plain_time_design`, non-negative
    least squares); each run's timings (draft, verify, speculative and plain wall time) are then
    multiplied by the fitted over the measured plain time of its sequences (ratio of totals).
    Runs without baseline timings are left as they are, and so is a single timed run.

    Scaling to the trend, rather than to one pooled time per token, keeps what the context costs:
    where each run holds one context range (the length experiment: one run per regime), one time
    per token made every run's plain tokens equally dear, the target's context cost vanished, and
    a drafter whose share of a step falls with the context (a small drafter under the target's
    LM head) looked dearer at long contexts than it is. Speed-ups are ratios of one run's timings
    and do not change. A slow spell that falls on one context range alone cannot be told from what
    that range costs; runs that share lengths tell them apart. Where the trend cannot be fitted
    (fewer timed sequences than five), every run is scaled to the pooled time per generated token
    instead.

    Returns
    -------
    steps, sequences : pandas.DataFrame
        Copies with scaled ``draft_s``, ``verify_s``, ``spec_wall_s`` and ``baseline_wall_s``.
    """
    timed = sequences[sequences["baseline_wall_s"].notna()]
    run = ["run_id", "temperature"]
    if timed.empty or len(timed.groupby(run, observed=True)) < 2:
        return steps, sequences
    tokens = timed["baseline_tokens"].fillna(timed["output_len"])
    keys = [timed[c] for c in run]
    measured = timed["baseline_wall_s"].astype(float)
    pooled_rate = tokens * float(measured.sum() / tokens.sum())  # one pooled time per token: the fallback
    fitted = pooled_rate
    design = plain_time_design(timed["prompt_len"].to_numpy(float), tokens.to_numpy(float))
    if len(timed) >= design.shape[1] + 1:
        params, _ = fit_nonnegative(measured.to_numpy(), design, ["base", "per_prompt_token", "per_token",
                                                                  "per_token_context"])
        fitted = pd.Series(design @ params, index=timed.index)
    measured_by_run = measured.groupby(keys, observed=True).sum()
    factor = fitted.groupby(keys, observed=True).sum() / measured_by_run
    if not np.all(np.isfinite(factor) & (factor > 0)):
        factor = pooled_rate.groupby(keys, observed=True).sum() / measured_by_run
    factor = factor.rename("factor")

    def scaled(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
        scale = frame[run].merge(factor, left_on=run, right_index=True, how="left")["factor"].fillna(1.0)
        frame = frame.copy()
        for column in columns:
            frame[column] = frame[column].to_numpy(float) * scale.to_numpy()
        return frame

    return (scaled(steps, ("draft_s", "verify_s")),
            scaled(sequences, ("spec_wall_s", "baseline_wall_s")))


def fit_cost_models(steps: pd.DataFrame, sequences: pd.DataFrame) -> dict[CostKey, CostModel]:
    """One cost model per drafter and temperature: the grouping every stage of specsim uses.

    Timings are first put on one scale across runs (:func:`normalise_run_timings`); each
    drafter x temperature then gets :func:`fit_cost_model` over all its runs and draft lengths
    (sampling adds the warping and the draws to every step, so temperatures are not pooled).

    Returns
    -------
    dict of (drafter, temperature) to CostModel
    """
    steps, sequences = normalise_run_timings(steps, sequences)
    models = {}
    for (drafter, temperature), group in sequences.groupby(["drafter", "temperature"], observed=True):
        chosen = (steps["drafter"] == drafter) & (steps["temperature"] == temperature)
        models[(str(drafter), float(temperature))] = fit_cost_model(steps[chosen], group)
    return models

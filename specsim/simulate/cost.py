"""Cost model of speculative and plain decoding, linear in draft length and context.

Seconds per draft-verify step at context length ``x`` (prompt plus generated tokens) with
``g`` drafted tokens::

    draft_s  = g * (draft_base_s + draft_per_context_s * x)
    verify_s = verify_base_s + verify_per_token_s * g + verify_per_context_s * x

and seconds per token of the plain autoregressive target at context ``x``::

    target_s = target_base_s + target_per_context_s * x

Fixed per-sequence overheads (prefill of the prompt) enter as ``*_prefill_*`` terms that
grow with the prompt length. :func:`fit_cost_model` fits every coefficient by least squares
from the steps and sequences tables and keeps the fit diagnostics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from specsim.errors import InputError
from specsim.traces.schema import SEQUENCE_KEY

__all__ = ["CostModel", "fit_cost_model", "leviathan_cost_model"]


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
    verify_base_s: float = 1.0
    verify_per_token_s: float = 0.0
    verify_per_context_s: float = 0.0
    target_base_s: float = 1.0
    target_per_context_s: float = 0.0
    spec_prefill_base_s: float = 0.0
    spec_prefill_per_token_s: float = 0.0
    baseline_prefill_base_s: float = 0.0
    baseline_prefill_per_token_s: float = 0.0
    diagnostics: dict = field(default_factory=dict, compare=False, repr=False)

    def step_seconds(self, gamma: np.ndarray | int, context: np.ndarray | float) -> np.ndarray:
        """Seconds of one draft-verify step drafting ``gamma`` tokens at ``context``."""
        gamma = np.asarray(gamma, dtype=float)
        context = np.asarray(context, dtype=float)
        draft = gamma * (self.draft_base_s + self.draft_per_context_s * context)
        verify = self.verify_base_s + self.verify_per_token_s * gamma + self.verify_per_context_s * context
        return draft + verify

    def step_coefficients(self, gamma: int) -> tuple[float, float]:
        """``(base, per_context)`` with ``step_seconds(gamma, x) = base + per_context * x``."""
        base = gamma * self.draft_base_s + self.verify_base_s + self.verify_per_token_s * gamma
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

    def to_dict(self) -> dict:
        """Coefficients and diagnostics as plain Python values."""
        return asdict(self)


def leviathan_cost_model(cost_ratio: float) -> CostModel:
    """The cost model behind Leviathan et al. (2023): target step 1, draft token ``c``.

    Verification of ``gamma`` tokens costs as much as one target token, and context is free.
    """
    return CostModel(draft_base_s=cost_ratio, verify_base_s=1.0, target_base_s=1.0)


def _ols(response: np.ndarray, design: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict]:
    """Non-negative least squares: every cost coefficient is a time and cannot be negative.

    Plain OLS on short or collinear timing data returns negative per-context costs that fit
    the sample but extrapolate to negative times; NNLS drops such terms to zero instead.
    """
    from scipy.optimize import nnls

    if len(response) < design.shape[1] + 1:
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
    draft_params, draft_diag = _ols(
        steps["draft_s"].to_numpy(float), np.column_stack([g, g * x]), ["per_token", "per_token_context"]
    )
    several_gammas = np.unique(g).size > 1
    verify_design = np.column_stack([np.ones_like(g), g, x] if several_gammas else [np.ones_like(g), x])
    verify_names = ["base", "per_token", "per_context"] if several_gammas else ["base", "per_context"]
    verify_params, verify_diag = _ols(steps["verify_s"].to_numpy(float), verify_design, verify_names)
    if not several_gammas:
        verify_params = np.array([verify_params[0], 0.0, verify_params[1]])

    step_time = steps.groupby(SEQUENCE_KEY, observed=True)[["draft_s", "verify_s"]].sum().sum(axis=1)
    keyed = sequences.set_index(SEQUENCE_KEY)
    overhead = (keyed["spec_wall_s"] - step_time.reindex(keyed.index).fillna(0.0)).to_numpy(float)
    p_spec = keyed["prompt_len"].to_numpy(float)
    spec_params, spec_diag = _ols(overhead, np.column_stack([np.ones_like(p_spec), p_spec]), ["base", "per_token"])

    with_baseline = sequences[sequences["baseline_wall_s"].notna()]
    diagnostics = {"draft": draft_diag, "verify": verify_diag, "spec_overhead": spec_diag}
    baseline_values = dict(target_base_s=float("nan"), target_per_context_s=float("nan"),
                           baseline_prefill_base_s=float("nan"), baseline_prefill_per_token_s=float("nan"))
    if len(with_baseline):
        p = with_baseline["prompt_len"].to_numpy(float)
        length = with_baseline["baseline_tokens"].fillna(with_baseline["output_len"]).to_numpy(float)
        design = np.column_stack([np.ones_like(p), p, length, length * p + length * (length - 1) / 2])
        base_params, base_diag = _ols(
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
        verify_base_s=verify_params[0],
        verify_per_token_s=verify_params[1],
        verify_per_context_s=verify_params[2],
        spec_prefill_base_s=spec_params[0],
        spec_prefill_per_token_s=spec_params[1],
        diagnostics=diagnostics,
        **baseline_values,
    )

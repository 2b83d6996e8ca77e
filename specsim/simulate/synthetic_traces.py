"""Traces simulated from known acceptance and costs, in the trace contract.

Used to develop and test the analysis stages before real traces exist, and for parameter
recovery: every table satisfies the contract's invariants, and the true acceptance profile
and cost model are known. Timings follow the cost model with optional log-normal noise.
Greedy runs (temperature 0) record ``accept_prob`` as 0/1; sampling runs record the
acceptance probability the profile implies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from specsim.simulate.acceptance import AcceptanceProfile
from specsim.simulate.cost import CostModel

__all__ = ["SyntheticWorkload", "simulate_traces"]


@dataclass(frozen=True)
class SyntheticWorkload:
    """One task x drafter cell of a synthetic trace.

    Parameters
    ----------
    task, dataset, drafter : str
        Names written into the key columns.
    drafter_kind : str
        ``generic``, ``finetuned`` or ``untrained``.
    profile : AcceptanceProfile
        True conditional acceptance.
    prompt_lengths, output_lengths : numpy.ndarray, shape (n_sequences,)
        Lengths of each sequence.
    drafter_trained_on : str, optional
        Dataset the drafter was trained on.
    after_rejection : float, optional
        For a drafter that may draft less than asked (``profile.continuation`` below 1): the
        chance it drafts one more token after an earlier one was rejected (default: the
        profile's continuation). ``profile.extension`` is ignored: the drafted-count law follows.
    drafter_type : str, default "model"
        Written into the key columns.
    """

    task: str
    dataset: str
    drafter: str
    drafter_kind: str
    profile: AcceptanceProfile
    prompt_lengths: np.ndarray
    output_lengths: np.ndarray
    drafter_trained_on: str | None = None
    after_rejection: float | None = None
    drafter_type: str = "model"


def _variable_step(cell: SyntheticWorkload, position: int, asked: int, gamma: int, rng: np.random.Generator
                   ) -> tuple[int, int, np.ndarray]:
    """One step of a drafter that may stop early: (drafted, accepted, rates of the drafted indices)."""
    rates = cell.profile.rates_at(np.array([position]), gamma)[0]
    assert cell.profile.continuation is not None
    rows = np.minimum(np.arange(gamma), cell.profile.continuation.shape[0] - 1)
    continuation = cell.profile.continuation[rows, cell.profile.position_bin(np.array([position]))[0]]
    drafted, accepted, chain = 0, 0, True
    for index in range(asked):
        go_on = continuation[index] if chain else (
            continuation[index] if cell.after_rejection is None else cell.after_rejection)
        if rng.random() >= go_on:
            break
        drafted += 1
        if chain and rng.random() < rates[index]:
            accepted += 1
        else:
            chain = False
    return drafted, accepted, rates[:drafted]


def simulate_traces(
    workloads: Sequence[SyntheticWorkload],
    cost: CostModel,
    *,
    gamma: int = 4,
    temperature: float = 0.0,
    timing_noise: float = 0.0,
    run_id: str = "synthetic",
    target: str = "synthetic-target",
    rng: np.random.Generator | int | None = None,
) -> dict[str, pd.DataFrame]:
    """Simulate speculative decoding of every sequence and return the three tables.

    Parameters
    ----------
    workloads : sequence of SyntheticWorkload
        Cells to simulate.
    cost : CostModel
        True costs of steps and of plain decoding.
    gamma : int, default 4
        Draft length; every step drafts ``gamma`` tokens, or, for a profile with continuation
        below 1, asks for ``min(gamma, tokens left)`` and drafts some of them.
    temperature : float, default 0
        Written into the key columns; 0 means greedy.
    timing_noise : float, default 0
        Standard deviation of multiplicative log-normal noise on each timing.
    run_id, target : str
        Key columns.
    rng : numpy.random.Generator or int, optional
        Random source.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``tokens``, ``steps`` and ``sequences``.
    """
    rng = np.random.default_rng(rng)

    def noisy(seconds: np.ndarray) -> np.ndarray:
        if timing_noise <= 0:
            return seconds
        return seconds * rng.lognormal(-timing_noise**2 / 2, timing_noise, size=np.shape(seconds))

    token_parts, step_parts, sequence_rows = [], [], []
    for cell in workloads:
        keys = {
            "run_id": run_id, "task": cell.task, "dataset": cell.dataset, "target": target,
            "drafter": cell.drafter, "drafter_kind": cell.drafter_kind,
            "drafter_trained_on": cell.drafter_trained_on, "drafter_type": cell.drafter_type,
            "temperature": float(temperature),
            "gamma": int(gamma), "schedule": "constant",
        }
        for index, (prompt_len, output_len) in enumerate(
            zip(cell.prompt_lengths, cell.output_lengths, strict=True)
        ):
            prompt_id = f"{cell.task}-{index}"
            position, step = 0, 0
            step_rows = []
            token_chunks: list[dict[str, Any]] = []  # one per drafting step; one frame per sequence
            variable = not cell.profile.full_drafts
            while position < output_len:
                context = int(prompt_len) + position
                if variable:
                    asked = min(gamma, int(output_len) - position)
                    n_drafted, n_accepted, rates = _variable_step(cell, position, asked, gamma, rng)
                else:
                    asked = n_drafted = gamma
                    rates = cell.profile.rates_at(np.array([position]), gamma)[0]
                    draws = rng.random(gamma) < rates
                    n_accepted = int(np.argmin(draws)) if not draws.all() else gamma
                n_emitted = min(n_accepted + 1, int(output_len) - position)
                draft_index = np.arange(n_drafted)
                evaluated = draft_index <= n_accepted
                accepted = draft_index < n_accepted
                accept_prob = accepted.astype(float) if temperature == 0 else rates
                if n_drafted:
                    token_chunks.append({
                        "step": np.full(n_drafted, step), "draft_index": draft_index,
                        "position": position + draft_index, "context_len": context + draft_index,
                        "token_id": rng.integers(0, 49152, n_drafted),
                        "evaluated": evaluated, "accepted": accepted,
                        "p_target": accept_prob * 0.9, "q_draft": np.full(n_drafted, 0.9),
                        "accept_prob": accept_prob, "overlap": rates,
                        "overlap_t1": rates if temperature == 0 else np.full(n_drafted, np.nan),
                    })
                if variable:
                    draft_s = cost.draft_step_s + n_drafted * (cost.draft_base_s + cost.draft_per_context_s * context)
                    verify_s = float(cost.verify_base(n_drafted)) + cost.verify_per_context_s * context
                else:
                    draft_s, verify_s = (
                        gamma * (cost.draft_base_s + cost.draft_per_context_s * context),
                        cost.verify_base_s + cost.verify_per_token_s * gamma + cost.verify_per_context_s * context,
                    )
                step_rows.append((step, context, asked, n_drafted, n_accepted, n_emitted, draft_s, verify_s))
                position += n_emitted
                step += 1
            steps = pd.DataFrame(step_rows, columns=[
                "step", "context_len", "n_asked", "n_drafted", "n_accepted", "n_emitted", "draft_s", "verify_s"])
            steps["draft_s"] = noisy(steps["draft_s"].to_numpy())
            steps["verify_s"] = noisy(steps["verify_s"].to_numpy())
            overhead = float(cost.spec_overhead_seconds(prompt_len))
            baseline = float(noisy(cost.baseline_seconds(prompt_len, output_len)))
            # Columns built once per sequence: a column set per step cost most of the run time.
            step_parts.append(steps.assign(prompt_id=prompt_id, **keys))
            if token_chunks:
                token_parts.append(pd.DataFrame({
                    **{name: np.concatenate([chunk[name] for chunk in token_chunks]) for name in token_chunks[0]},
                    "prompt_id": prompt_id, **keys}))
            sequence_rows.append({
                **keys, "prompt_id": prompt_id, "prompt_len": int(prompt_len), "output_len": int(output_len),
                "n_steps": step, "finish_reason": "length",
                "spec_wall_s": overhead + float(steps["draft_s"].sum() + steps["verify_s"].sum()),
                "baseline_wall_s": baseline, "baseline_tokens": int(output_len),
                "output_token_ids": rng.integers(0, 49152, int(output_len)).tolist(),
            })
    return {
        "tokens": pd.concat(token_parts, ignore_index=True),
        "steps": pd.concat(step_parts, ignore_index=True),
        "sequences": pd.DataFrame(sequence_rows),
    }

"""Cost profiles: time a target and a drafter's forward passes on the hardware you will deploy on.

No decoding: at each context length the models are prefilled once, then single forward passes are
timed (device-synchronised, ``repeats`` times after a warm-up) and the KV cache rolled back after each:

- the target's one-token step (plain decoding) and its verify pass of ``g + 1`` tokens per
  draft length ``g``;
- the drafter's one-token step;
- both prefills (their sum is the speculative run's per-sequence overhead).

The timings are fitted into the same :class:`specsim.simulate.cost.CostModel` that the traces'
own costs use (non-negative least squares, a measured verify table), so ``--cost-profile FILE``
predicts acceptance measured anywhere at this hardware's costs. Token identities do not change
timings; the inputs are seeded random token ids.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from specsim.errors import InputError
from specsim.simulate.cost import COST_PROFILE_FORMAT, COST_PROFILE_VERSION, CostModel, fit_nonnegative

__all__ = ["measure_cost_profile", "fit_profile"]


def _timed(device: Any, call: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> list[float]:
    """Seconds of each of ``repeats`` device-synchronised calls (after one untimed warm-up call).

    ``setup`` runs untimed before every call (e.g. rolling a KV cache back to where the call starts).
    """
    from specsim.collect.decoding import _sync

    if setup is not None:
        setup()
    call()
    seconds = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def fit_profile(rows: list[dict]) -> CostModel:
    """Fit a cost model to timing rows (``kind``, ``context``, ``gamma``, ``seconds``; one row per timed call)."""
    def part(kind: str) -> list[dict]:
        return [r for r in rows if r["kind"] == kind]

    def linear(kind: str) -> tuple[float, float]:
        chosen = part(kind)
        x = np.array([r["context"] for r in chosen], dtype=float)
        params, _ = fit_nonnegative(np.array([r["seconds"] for r in chosen]), np.column_stack([np.ones_like(x), x]),
                                    ["base", "per_context"])
        return float(params[0]), float(params[1])

    draft_base, draft_context = linear("draft")
    target_base, target_context = linear("target")
    spec_prefill = linear("spec_prefill")
    base_prefill = linear("baseline_prefill")
    verify = part("verify")
    gammas = sorted({r["gamma"] for r in verify})
    design = np.column_stack([[float(r["gamma"] == g) for r in verify] for g in gammas]
                             + [[float(r["context"]) for r in verify]])
    params, _ = fit_nonnegative(np.array([r["seconds"] for r in verify]), design,
                                [f"tokens_{g}" for g in gammas] + ["per_context"])
    table = dict(zip(gammas, map(float, params[:-1]), strict=True))
    # The linear terms extrapolate to draft lengths not measured.
    g = np.array(gammas, dtype=float)
    slope, intercept = np.polyfit(g, params[:-1], 1) if len(gammas) > 1 else (0.0, float(params[0]))
    return CostModel(draft_base_s=draft_base, draft_per_context_s=draft_context, verify_base_s=max(float(intercept), 0),
                     verify_per_token_s=max(float(slope), 0), verify_per_context_s=float(params[-1]),
                     target_base_s=target_base, target_per_context_s=target_context,
                     spec_prefill_base_s=spec_prefill[0], spec_prefill_per_token_s=spec_prefill[1],
                     baseline_prefill_base_s=base_prefill[0], baseline_prefill_per_token_s=base_prefill[1],
                     verify_table=table)


def measure_cost_profile(
    target: str, drafter: str, *, device: str = "cpu", dtype: str = "float32", gammas: Sequence[int] = (1, 2, 4, 6, 8),
    contexts: Sequence[int] = (64, 256, 1024), repeats: int = 5, seed: int = 0, trust_remote_code: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Time forward passes and fit a cost model; returns the cost-profile document (JSON-ready)."""
    import torch

    from specsim.collect.decoding import CachedLM
    from specsim.collect.models import check_same_vocabulary, load_model
    from specsim.collect.runner import library_versions

    if not gammas or min(gammas) < 1 or not contexts or min(contexts) < 2 or repeats < 1:
        raise InputError("need gammas >= 1, contexts >= 2 and repeats >= 1", field="--gamma")
    target_model = load_model(target, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    drafter_model = load_model(drafter, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    check_same_vocabulary(target_model, drafter_model, "drafter")
    max_positions = getattr(target_model.model.config, "max_position_embeddings", None)
    if max_positions and max(contexts) + max(gammas) + 1 > max_positions:
        raise InputError(f"contexts up to {max(contexts)} exceed the target's {max_positions} positions",
                         field="--context")
    target_lm, drafter_lm = CachedLM(target_model.model), CachedLM(drafter_model.model)
    vocabulary = int(target_model.model.config.vocab_size)
    tokens = np.random.default_rng(seed).integers(0, vocabulary, max(contexts) + max(gammas) + 2).tolist()
    rows: list[dict] = []
    total = len(contexts)
    for number, context in enumerate(sorted(contexts)):
        prefix = tokens[:context]

        def prefill(lm: CachedLM, ids: list[int] = prefix) -> None:
            lm.reset()
            lm.forward(ids, keep=1)

        target_prefill = _timed(target_lm.device, lambda: prefill(target_lm), repeats)
        drafter_prefill = _timed(drafter_lm.device, lambda: prefill(drafter_lm), repeats)
        for t, d in zip(target_prefill, drafter_prefill, strict=True):
            rows.append({"kind": "baseline_prefill", "context": context, "gamma": 0, "seconds": t})
            rows.append({"kind": "spec_prefill", "context": context, "gamma": 0, "seconds": t + d})

        def step(lm: CachedLM, count: int, length: int = context) -> None:
            lm.forward(tokens[length:length + count], keep=count)
            lm.rollback(length)

        def forward_one(lm: CachedLM, length: int = context) -> None:
            lm.forward(tokens[length:length + 1], keep=1)

        # A plain-decoding token and a drafted token are one forward pass each (the decoding loop rolls
        # no cache back per token): the rollback to the context runs untimed before each call. A verify
        # pass includes the rollback of the target's cache, as in the loop.
        rows += [{"kind": "target", "context": context, "gamma": 0, "seconds": s}
                 for s in _timed(target_lm.device, lambda: forward_one(target_lm), repeats,
                                 setup=functools.partial(target_lm.rollback, context))]
        rows += [{"kind": "draft", "context": context, "gamma": 1, "seconds": s}
                 for s in _timed(drafter_lm.device, lambda: forward_one(drafter_lm), repeats,
                                 setup=functools.partial(drafter_lm.rollback, context))]
        for gamma in gammas:
            verify = functools.partial(step, target_lm, int(gamma) + 1)
            rows += [{"kind": "verify", "context": context, "gamma": int(gamma), "seconds": s}
                     for s in _timed(target_lm.device, verify, repeats)]
        if progress is not None:
            progress(number + 1, total, f"context {context}")
    model = fit_profile(rows)
    device_name = (torch.cuda.get_device_name(target_lm.device) if target_lm.device.type == "cuda"
                   else platform.processor() or platform.machine())
    return {"format": COST_PROFILE_FORMAT, "version": COST_PROFILE_VERSION,
            "cost_model": model.to_dict(diagnostics=False), "measurements": rows,
            "target": target_model.info.to_dict(), "drafter": drafter_model.info.to_dict(), "device": str(device),
            "device_name": device_name, "dtype": dtype, "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "versions": library_versions()}

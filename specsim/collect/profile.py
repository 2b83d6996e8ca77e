"""Cost profiles: time a target and a drafter's forward passes on the hardware you will deploy on.

No decoding: at each context length the models are prefilled once, then single forward passes are
timed (device-synchronised, ``repeats`` times after a warm-up) and the KV cache rolled back after each:

- the target's one-token step (plain decoding) and its verify pass of ``g + 1`` tokens per
  draft length ``g``;
- the drafter's one-token step, or for a lookup drafter (``prompt-lookup[:N]``,
  ``datastore:PATH``) its whole step: the search and a draft of the longest draft length asked,
  on a context that repeats a random motif so that every search finds a match. Its time is real
  and small, never taken as 0;
- both prefills (their sum is the speculative run's per-sequence overhead; a lookup drafter's is
  its first search over the prompt).

The timings are fitted into the same :class:`specsim.simulate.cost.CostModel` that the traces'
own costs use (non-negative least squares, a measured verify table), so ``--cost-profile FILE``
predicts acceptance measured anywhere at this hardware's costs. Token identities do not change
a model's timings; the inputs are seeded random token ids.
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

__all__ = ["measure_cost_profile", "fit_profile", "batch_summary"]


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


#: Length of the random motif a lookup drafter's timing context repeats.
_LOOKUP_MOTIF = 32


def _lookup_prefill(drafter: Any, context: list[int]) -> None:
    """A lookup drafter's start of a sequence: reset, see the prompt, search it once."""
    drafter.reset()
    drafter.prefill(context)
    drafter.propose(context, 1, None, None)


def _lookup_step(drafter: Any, context: list[int], gamma: int) -> None:
    """One lookup step: the committed sequence grew by a token; draft up to ``gamma``."""
    drafter.propose(context, gamma, None, None)


def _head_prefill(drafter: Any, context: list[int], features: Any) -> None:
    """A feature head's start of a sequence: the prompt's target features, every pair encoded (one draft)."""
    from specsim.collect.decoding import Warp

    drafter.reset()
    drafter.prefill(context, features[: len(context) - 1])
    drafter.propose(context, 1, Warp(0.0, 1.0), None)


def _head_step(drafter: Any, context: list[int], features: Any) -> None:
    """One drafted token: the verified token's feature taken, its pair encoded, one token drafted."""
    from specsim.collect.decoding import Warp

    drafter.accept(context[-1:], features[len(context) - 2: len(context) - 1])
    drafter.propose(context, 1, Warp(0.0, 1.0), None)


def _batch_rows(target_lm: Any, drafter_lm: Any, lookup: Any, tokens: list[int], repeating: list[int], context: int,
                size: int, gammas: Sequence[int], repeats: int) -> list[dict]:
    """Timing rows of ``size`` requests decoded together at ``context`` (prefill untimed)."""
    def prefill(lm: Any) -> None:
        lm.reset()
        lm.forward_rows([tokens[:context]] * size, keep=1)

    def step(lm: Any, count: int) -> None:
        lm.forward_rows([tokens[context:context + count]] * size, keep=count)
        lm.rollback(context)

    def forward_one(lm: Any) -> None:
        lm.forward_rows([tokens[context:context + 1]] * size, keep=1)

    rows = []
    prefill(target_lm)
    rows += [{"kind": "target", "context": context, "gamma": 0, "batch": size, "seconds": s}
             for s in _timed(target_lm.device, functools.partial(forward_one, target_lm), repeats,
                             setup=functools.partial(target_lm.rollback, context))]
    for gamma in gammas:
        rows += [{"kind": "verify", "context": context, "gamma": int(gamma), "batch": size, "seconds": s}
                 for s in _timed(target_lm.device, functools.partial(step, target_lm, int(gamma) + 1), repeats)]
    target_lm.reset()  # free the batch's cache
    if lookup is None:
        prefill(drafter_lm)
        rows += [{"kind": "draft", "context": context, "gamma": 1, "batch": size, "seconds": s}
                 for s in _timed(drafter_lm.device, functools.partial(forward_one, drafter_lm), repeats,
                                 setup=functools.partial(drafter_lm.rollback, context))]
        drafter_lm.reset()
    else:
        # A lookup runs per request on the host: one search for each of the batch's requests.
        def lookups() -> None:
            for _ in range(size):
                _lookup_step(lookup, repeating[:context + 1], max(gammas))

        rows += [{"kind": "draft_step", "context": context, "gamma": max(gammas), "batch": size, "seconds": s}
                 for s in _timed(target_lm.device, lookups, repeats,
                                 setup=functools.partial(_lookup_prefill, lookup, repeating[:context]))]
    return rows


def batch_summary(models: dict[int, CostModel]) -> dict[str, Any]:
    """The target's roofline through its plain and verify passes, and the verify/plain ratios, by batch size."""
    from specsim.simulate.load import fit_roofline

    tokens, seconds = [], []
    for size, model in models.items():
        tokens.append(size)
        seconds.append(model.target_base_s)
        for gamma, value in model.verify_table.items():
            tokens.append(size * (gamma + 1))
            seconds.append(value)
    roofline = fit_roofline(np.array(tokens), np.array(seconds))
    ratios = {str(size): {str(g): v / model.target_base_s for g, v in sorted(model.verify_table.items())}
              for size, model in models.items()}
    return {"target_roofline": roofline.to_dict(), "verify_over_plain_by_batch": ratios}


def fit_profile(rows: list[dict]) -> CostModel:
    """Fit a cost model to timing rows (``kind``, ``context``, ``gamma``, ``seconds``; one row per timed call).

    Kinds: ``target``, ``verify``, ``baseline_prefill``, ``spec_prefill``, and ``draft`` (a model
    drafter's token) or ``draft_step`` (a lookup drafter's whole step, kept as ``draft_step_s``:
    its mean over the contexts timed). The repeats of each pass are first reduced to their median
    (one timing disturbed by the machine does not move the fit).
    """
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["kind"], row["context"], row["gamma"]), []).append(row["seconds"])
    medians = [{"kind": kind, "context": context, "gamma": gamma, "seconds": float(np.median(seconds))}
               for (kind, context, gamma), seconds in groups.items()]

    def part(kind: str) -> list[dict]:
        return [r for r in medians if r["kind"] == kind]

    def nonnegative(response: list[float], design: np.ndarray) -> np.ndarray:
        """A profile may time as few passes as it has coefficients: an exact fit is allowed."""
        names = [f"coefficient_{i}" for i in range(design.shape[1])]
        return fit_nonnegative(np.asarray(response, dtype=float), design, names, exact=True)[0]

    def linear(kind: str) -> tuple[float, float]:
        chosen = part(kind)
        x = np.array([r["context"] for r in chosen], dtype=float)
        seconds = [r["seconds"] for r in chosen]
        if len(set(x)) < 2:  # one context: no per-context term to tell from the base
            return float(np.mean(seconds)), 0.0
        params = nonnegative(seconds, np.column_stack([np.ones_like(x), x]))
        return float(params[0]), float(params[1])

    # A model drafter costs per drafted token; a lookup drafter per step (its search), measured.
    draft_base, draft_context = linear("draft") if part("draft") else (0.0, 0.0)
    draft_step = float(np.mean([r["seconds"] for r in part("draft_step")])) if part("draft_step") else 0.0
    target_base, target_context = linear("target")
    spec_prefill = linear("spec_prefill")
    base_prefill = linear("baseline_prefill")
    verify = part("verify")
    gammas = sorted({r["gamma"] for r in verify})
    several_contexts = len({r["context"] for r in verify}) > 1
    # One context timed: no per-context term to tell from the per-gamma bases (it is 0).
    design = np.column_stack([[float(r["gamma"] == g) for r in verify] for g in gammas]
                             + ([[float(r["context"]) for r in verify]] if several_contexts else []))
    params = nonnegative([r["seconds"] for r in verify], design)
    if not several_contexts:
        params = np.append(params, 0.0)
    table = dict(zip(gammas, map(float, params[:-1]), strict=True))
    # The linear terms extrapolate to draft lengths not measured.
    g = np.array(gammas, dtype=float)
    slope, intercept = np.polyfit(g, params[:-1], 1) if len(gammas) > 1 else (0.0, float(params[0]))
    return CostModel(draft_base_s=draft_base, draft_per_context_s=draft_context, draft_step_s=draft_step,
                     verify_base_s=max(float(intercept), 0),
                     verify_per_token_s=max(float(slope), 0), verify_per_context_s=float(params[-1]),
                     target_base_s=target_base, target_per_context_s=target_context,
                     spec_prefill_base_s=spec_prefill[0], spec_prefill_per_token_s=spec_prefill[1],
                     baseline_prefill_base_s=base_prefill[0], baseline_prefill_per_token_s=base_prefill[1],
                     verify_table=table)


def measure_cost_profile(
    target: str, drafter: str, *, device: str = "cpu", dtype: str = "float32", gammas: Sequence[int] = (1, 2, 4, 6, 8),
    contexts: Sequence[int] = (64, 256, 1024), repeats: int = 5, seed: int = 0, trust_remote_code: bool = False,
    batch_sizes: Sequence[int] = (1,), progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Time forward passes and fit a cost model; returns the cost-profile document (JSON-ready).

    With ``batch_sizes`` beyond 1 each size's passes are timed too (``B`` rows of plain and
    drafter steps, ``B`` rows of ``g + 1`` verified tokens) and fitted into one cost model per
    size (``cost_models_by_batch``; times of whole-batch passes), with the target's roofline
    (:func:`specsim.simulate.load.fit_roofline`) and the measured verify/plain ratios. Those sizes
    are timed in ``repeats`` rounds, each of one repeat of every size and context, and each pass's
    repeats are reduced to their median: a slow spell of a shared machine then falls on every size
    alike (in one round) rather than on the one size being timed.
    """
    import torch

    from specsim.collect.decoding import CachedLM
    from specsim.collect.models import load_model
    from specsim.collect.runner import DrafterSpec, _eos_ids, build_drafter, library_versions

    if not gammas or min(gammas) < 1 or not contexts or min(contexts) < 2 or repeats < 1:
        raise InputError("need gammas >= 1, contexts >= 2 and repeats >= 1", field="--gamma")
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > 4096:
        raise InputError(f"batch sizes must lie in [1, 4096], got {sorted(batch_sizes)}", field="--batch-size")
    target_model = load_model(target, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    spec = DrafterSpec("drafter", drafter)
    built, drafter_info = build_drafter(spec, target_model, _eos_ids(target_model), dtype=dtype, device=device,
                                        trust_remote_code=trust_remote_code)
    head = built if spec.method == "feature-head" else None
    lookup = built if spec.method in ("prompt-lookup", "datastore") else None
    if head is not None and set(batch_sizes) - {1}:
        raise InputError("a feature head is timed at batch size 1 only (it drafts one sequence at a time)",
                         field="--batch-size")
    max_positions = getattr(target_model.model.config, "max_position_embeddings", None)
    if max_positions and max(contexts) + max(gammas) + 1 > max_positions:
        raise InputError(f"contexts up to {max(contexts)} exceed the target's {max_positions} positions",
                         field="--context")
    target_lm = CachedLM(target_model.model)
    drafter_lm = built.lm if lookup is None and head is None else None  # a ModelDrafter's own cached LM
    vocabulary = int(target_model.model.config.vocab_size)
    tokens = np.random.default_rng(seed).integers(0, vocabulary, max(contexts) + max(gammas) + 2).tolist()
    # A lookup drafter's time depends on what it finds: it searches a context that repeats a random
    # motif, so every step drafts the longest draft asked (its costliest step).
    motif = tokens[:_LOOKUP_MOTIF]
    repeating = (motif * (len(tokens) // len(motif) + 1))[:len(tokens)]
    rows: list[dict] = []
    total = len(contexts) * (1 + repeats * len(set(batch_sizes) - {1}))
    number = 0
    for number, context in enumerate(sorted(contexts)):
        prefix = tokens[:context]

        def prefill(lm: CachedLM, ids: list[int] = prefix) -> None:
            lm.reset()
            lm.forward(ids, keep=1)

        target_prefill = _timed(target_lm.device, lambda: prefill(target_lm), repeats)
        if head is not None:
            # The head's prefill: encode the context's (feature, next token) pairs; the features are the
            # target's own hidden states in the loop, random ones here (the cost does not depend on them).
            features = torch.randn(context, head.head.hidden_size, device=head.device, dtype=head.dtype)
            drafter_prefill = _timed(target_lm.device, functools.partial(_head_prefill, head, prefix, features),
                                     repeats)
        elif lookup is None:
            assert drafter_lm is not None
            drafter_prefill = _timed(drafter_lm.device, lambda: prefill(drafter_lm), repeats)
        else:
            drafter_prefill = _timed(target_lm.device, functools.partial(_lookup_prefill, lookup, repeating[:context]),
                                     repeats)
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
        if head is not None:
            # A drafted token is one pass of the head's layer (the step's first one also encodes the last
            # verified pair): the context's pairs are encoded untimed first.
            rows += [{"kind": "draft", "context": context, "gamma": 1, "seconds": s}
                     for s in _timed(target_lm.device,
                                     functools.partial(_head_step, head, tokens[:context + 1], features),
                                     repeats, setup=functools.partial(_head_prefill, head, prefix, features))]
        elif lookup is None:
            assert drafter_lm is not None
            rows += [{"kind": "draft", "context": context, "gamma": 1, "seconds": s}
                     for s in _timed(drafter_lm.device, lambda: forward_one(drafter_lm), repeats,
                                     setup=functools.partial(drafter_lm.rollback, context))]
        else:
            rows += [{"kind": "draft_step", "context": context, "gamma": max(gammas), "seconds": s}
                     for s in _timed(target_lm.device,
                                     functools.partial(_lookup_step, lookup, repeating[:context + 1], max(gammas)),
                                     repeats, setup=functools.partial(_lookup_prefill, lookup, repeating[:context]))]
        for gamma in gammas:
            verify = functools.partial(step, target_lm, int(gamma) + 1)
            rows += [{"kind": "verify", "context": context, "gamma": int(gamma), "seconds": s}
                     for s in _timed(target_lm.device, verify, repeats)]
        if progress is not None:
            progress(number + 1, total, f"context {context}")
    # Batch sizes are timed in rounds of one repeat each (sizes and contexts inside a round), so that a
    # slow spell of a shared machine falls on every batch size alike instead of on one of them.
    sizes = sorted(set(batch_sizes) - {1})
    for round_number in range(repeats if sizes else 0):
        for size in sizes:
            for context in sorted(contexts):
                rows += _batch_rows(target_lm, drafter_lm, lookup, tokens, repeating, context, size, gammas, 1)
                number += 1
                if progress is not None:
                    progress(number + 1, total, f"round {round_number + 1} of {repeats}, batch {size}, "
                                                f"context {context}")
    for row in rows:
        row.setdefault("batch", 1)
    single = [row for row in rows if row["batch"] == 1]
    model = fit_profile(single)
    # Prefill is per request, timed at batch size 1 and kept at every batch size.
    prefills = [row for row in single if row["kind"].endswith("prefill")]
    by_batch = {1: model} | {size: fit_profile([row for row in rows if row["batch"] == size] + prefills)
                             for size in sorted(set(batch_sizes) - {1})}
    extra: dict[str, Any] = {}
    if len(by_batch) > 1:
        extra = {"cost_models_by_batch": {str(size): m.to_dict(diagnostics=False) for size, m in by_batch.items()},
                 **batch_summary(by_batch)}
    device_name = (torch.cuda.get_device_name(target_lm.device) if target_lm.device.type == "cuda"
                   else platform.processor() or platform.machine())
    return {"format": COST_PROFILE_FORMAT, "version": COST_PROFILE_VERSION,
            "cost_model": model.to_dict(diagnostics=False), "measurements": rows,
            "target": target_model.info.to_dict(), "drafter": drafter_info, "device": str(device),
            "device_name": device_name, "dtype": dtype, "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "versions": library_versions(), "batch_sizes": sorted(by_batch), **extra}

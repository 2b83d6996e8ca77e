"""Posterior predictive speed-up of a workload through the simulator.

For each posterior draw, the model gives conditional acceptance by draft index and position
bin for a drafter kind and a length divergence; a new task draws its effect from the task
population (``sigma_task``, and ``sigma_task_type`` for its effect on the drafter's type), a known
drafter keeps its effect, an unknown one draws from the
drafter population (each widened by the uncertainty of the population mean under zero-sum effects,
:func:`new_member_scale`). A fitted task x drafter pair keeps its pair effect; any other pair (a new
task, a new drafter, or a known drafter on a known task it was not measured on) draws one from
``sigma_pair``, and for a new task that draw joins the task's effect, which a probe of the task
with this drafter measures as one. The exact simulator then turns each draw's acceptance profile, the
workload's lengths, a cost model and the draft length into an expected speed-up: the
spread over draws is the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL, TOKENS_PER_STEP_CONVENTION, central_quantiles
from specsim.lengths import DIVERGENCE_UPPER, divergences
from specsim.model.artifact import Posterior, PosteriorMetadata
from specsim.model.drafting import draft_hazards
from specsim.model.spec import FIXED_EFFECTS, TYPED_EFFECTS, linear_predictor
from specsim.simulate.acceptance import AcceptanceProfile, Extrapolation, extrapolation
from specsim.simulate.cost import CostModel
from specsim.simulate.exact import expected_workload

__all__ = ["SpeedupPrediction", "predict_speedup", "acceptance_draws", "new_member_scale", "DrafterSpec",
           "drafter_spec", "workload_beyond", "workload_context", "draft_chance_draws", "drafts_partially"]


def _probe_task_effect(base_eta: np.ndarray, sigma_task: np.ndarray, kappa: np.ndarray | None,
                       agreed: np.ndarray, probed: np.ndarray, rng: np.random.Generator,
                       grid: np.ndarray = np.linspace(-8.0, 8.0, 641)) -> np.ndarray:
    """A new task's effect per draw, from its posterior given probe counts (a grid over the effect).

    For draw ``s`` the task effect's prior is N(0, sigma_task[s]); on a grid of effects (step
    0.025 logit) the prior density times the model's own likelihood of the probe's agreement counts
    at draft index 0 per position bin (beta-binomial with the draw's ``kappa``, binomial without)
    gives the posterior, from which one effect is drawn per draw (jittered within its grid cell).
    A grid, not samples from the prior: a new domain can sit many prior standard deviations away
    from the measured tasks, where prior samples never reach. ``base_eta``: (n_draws, n_bins)
    logit acceptance without the task effect.
    """
    from scipy.special import betaln, expit

    n = len(base_eta)
    effects = np.broadcast_to(grid, (n, len(grid)))
    rate = np.clip(expit(base_eta[:, None, :] + effects[:, :, None]), 1e-9, 1 - 1e-9)  # (n, m, bins)
    k, total = agreed[None, None, :], probed[None, None, :]
    if kappa is None:
        loglik = (k * np.log(rate) + (total - k) * np.log1p(-rate)).sum(axis=2)
    else:
        a, b = rate * kappa[:, None, None], (1 - rate) * kappa[:, None, None]
        loglik = (betaln(k + a, total - k + b) - betaln(a, b)).sum(axis=2)
    logpost = loglik - 0.5 * (effects / sigma_task[:, None]) ** 2
    weights = np.exp(logpost - logpost.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    chosen = (weights.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    step = grid[1] - grid[0]
    return effects[np.arange(n), chosen] + rng.uniform(-step / 2, step / 2, n)


def new_member_scale(metadata: PosteriorMetadata, n_members: int) -> float:
    """Factor on ``sigma`` for a new task's or drafter's effect: ``sqrt(1 + 1/n)``.

    Effects sum to zero over the ``n`` fitted members of their group
    (:class:`specsim.model.ModelOptions`), so the intercept is their mean and a new member differs
    from it by its own effect and by the mean's uncertainty, ``sigma / sqrt(n)``; 1 for ``n = 0``.
    """
    return float(np.sqrt(1.0 + 1.0 / n_members)) if n_members else 1.0


@dataclass(frozen=True)
class DrafterSpec:
    """What the model needs to know of the drafter a prediction is for.

    Parameters
    ----------
    finetuned : bool
    drafter_type : str
        One of the fitted drafter types.
    name : str, optional
        A fitted drafter (its effect is used), or None for a new one (drawn from its kind and
        type's population).
    window : float, optional
        Training window in tokens (None: trained on nothing, no window).
    own_content : bool
        The workload is content the drafter was trained on.
    """

    finetuned: bool
    drafter_type: str
    name: str | None = None
    window: float | None = None
    own_content: bool = False


def drafter_spec(meta: PosteriorMetadata, *, finetuned: bool, drafter: str | None = None,
                 drafter_type: str | None = None, task: str | None = None, own_content: bool | None = None,
                 reference_lengths: np.ndarray | None = None) -> DrafterSpec:
    """The :class:`DrafterSpec` of a fitted drafter (from the fit) or of a new one (from the arguments).

    A fitted drafter's type, window and own tasks come from the fit (a contradicting
    ``drafter_type`` is refused); a new drafter needs its type unless the fit holds one type, and
    its window is the longest of ``reference_lengths`` when given. ``own_content`` defaults to
    whether ``task`` is one of the drafter's fitted own tasks (False for a new task).
    """
    known = drafter is not None and drafter in meta.drafters
    if drafter is not None and known:
        fitted_type = meta.drafter_type_of.get(drafter, meta.drafter_types[0])
        if drafter_type is not None and drafter_type != fitted_type:
            raise InputError(f"drafter {drafter!r} was fitted as a {fitted_type!r} drafter, not {drafter_type!r}",
                             field="--drafter-type")
        drafter_type = fitted_type
        window = meta.windows.get(drafter)
    else:
        if drafter_type is None:
            if len(meta.drafter_types) > 1:
                raise InputError(f"a new drafter needs its type: the fit holds {', '.join(meta.drafter_types)}",
                                 field="--drafter-type")
            drafter_type = meta.drafter_types[0]
        window = float(np.max(reference_lengths)) if reference_lengths is not None and len(reference_lengths) else None
    if drafter_type not in meta.drafter_types:
        raise InputError(f"{drafter_type!r} is no fitted drafter type (fitted: {', '.join(meta.drafter_types)})",
                         field="--drafter-type")
    if own_content is None:
        own_content = bool(known and task is not None and task in meta.own_tasks.get(drafter or "", []))
    return DrafterSpec(finetuned, drafter_type, drafter if known else None, window, own_content)


def _typed_parameters(posterior: Posterior) -> dict[str, np.ndarray]:
    """The fixed effects per draw, shaped for :func:`specsim.model.spec.linear_predictor`."""
    d = posterior.draws
    params = {name: (d[name] if name in TYPED_EFFECTS else d[name][:, None]) for name in FIXED_EFFECTS if name in d}
    for name in ("type_effect", "index_effect", "position_effect"):
        params[name] = d[name]
    return params


def acceptance_draws(
    posterior: Posterior, spec: DrafterSpec, *, divergence: float, task: str | None = None,
    beyond: np.ndarray | None = None, rng: np.random.Generator | int | None = None, extra_bins: int = 0,
    probe: pd.DataFrame | None = None,
) -> np.ndarray:
    """Conditional acceptance per draw, draft index and position bin.

    Parameters
    ----------
    spec : DrafterSpec
        The drafter (:func:`drafter_spec`).
    beyond : numpy.ndarray, optional
        Doublings of context past the drafter's training window in each position bin (fitted and
        extra bins; 0 when not given).
    extra_bins : int
        Position bins beyond the fitted ones (extrapolation): their effects continue the
        position random walk with steps drawn from its fitted scale, so the spread of the
        prediction grows with every bin past the data.
    probe : pandas.DataFrame, optional
        A probe of a new task (:mod:`specsim.collect.probe`, one drafter's rows): the new
        task's effect is drawn from its posterior given the probe's agreement counts instead
        of from the task population alone.

    Returns
    -------
    numpy.ndarray, shape (n_draws, n_draft_index, n_position_bins + extra_bins)
    """
    rng = np.random.default_rng(rng)
    d = posterior.draws
    n = posterior.n_draws
    meta = posterior.metadata
    params = _typed_parameters(posterior)
    n_bins = d["position_effect"].shape[1]
    if extra_bins:
        scale = d.get("sigma_position_effect", np.zeros(n))[:, None]
        steps = rng.normal(0, 1, (n, extra_bins)) * scale
        params["position_effect"] = np.concatenate(
            [d["position_effect"], d["position_effect"][:, -1:] + np.cumsum(steps, axis=1)], axis=1)
    # A known task or drafter keeps its effect; a new one draws from its population (drafters: its
    # kind and type).
    kind = "finetuned" if spec.finetuned else "generic"
    type_code = meta.drafter_types.index(spec.drafter_type)
    task_scale = d["sigma_task"] * new_member_scale(meta, len(meta.tasks))
    if "task_type_effect" in d:
        # A new task's effect for this type adds its own deviation from the task's mean over types
        # (double-centred effects: variance sigma_task_type^2 (1 - 1/types), widened for the mean over tasks).
        share = 1.0 - 1.0 / len(meta.drafter_types)
        type_scale = d["sigma_task_type"] * new_member_scale(meta, len(meta.tasks))
        task_scale = np.sqrt(task_scale**2 + share * type_scale**2)
    peers = [r for r in meta.drafters if meta.drafter_kinds.get(r) == kind
             and meta.drafter_type_of.get(r, meta.drafter_types[0]) == spec.drafter_type]
    drafter_scale = d["sigma_drafter"] * new_member_scale(meta, len(peers))
    fitted_task = task if task is not None and task in meta.tasks else None
    known_task = fitted_task is not None
    pair_draw = np.zeros(n)
    if "pair_effect" in d:
        pairs = [(pair[0], pair[1]) for pair in meta.pairs]
        fitted_pair = (fitted_task or "", spec.name or "")
        if fitted_pair in pairs:
            pair_draw = d["pair_effect"][:, pairs.index(fitted_pair)]
        elif known_task:  # a new drafter, or a known one not measured on this task
            pair_draw = rng.normal(0, 1, n) * d["sigma_pair"] * new_member_scale(meta, len(meta.tasks))
        else:  # a new task: the pair's effect is part of the task's effect for this drafter
            task_scale = np.sqrt(task_scale**2 + (d["sigma_pair"] * new_member_scale(meta, len(meta.tasks)))**2)
    if fitted_task is not None:
        params["task_effect"] = d["task_effect"][:, [meta.tasks.index(fitted_task)]]
        if "task_type_effect" in d:
            own_type = d["task_type_effect"][:, [meta.tasks.index(fitted_task)], type_code]
            params["task_effect"] = params["task_effect"] + own_type
    else:
        params["task_effect"] = (rng.normal(0, 1, n) * task_scale)[:, None]
    if spec.name is not None:
        params["drafter_effect"] = d["drafter_effect"][:, [meta.drafters.index(spec.name)]] + pair_draw[:, None]
    else:
        params["drafter_effect"] = (rng.normal(0, 1, n) * drafter_scale + pair_draw)[:, None]
    n_index = d["index_effect"].shape[-1]
    total_bins = n_bins + extra_bins
    beyond = np.zeros(total_bins) if beyond is None else np.asarray(beyond, dtype=float)
    index, position = np.meshgrid(np.arange(n_index), np.arange(total_bins), indexing="ij")
    zeros = np.zeros(index.size, dtype=int)
    design = {"finetuned": float(spec.finetuned), "drafter_type": zeros + type_code,
              "content_match": float(spec.own_content), "divergence": divergence,
              "beyond": beyond[position.reshape(-1)], "draft_index": index.reshape(-1),
              "position_bin": position.reshape(-1), "task": zeros, "drafter": zeros}
    if probe is not None and "drafted" in probe:
        probe = probe[probe["drafted"].astype(bool)]  # a step that drafted nothing has no agreement to count
    if probe is not None and len(probe) and (task is None or task not in meta.tasks):
        edges = np.asarray(meta.position_edges, dtype=float)
        bins = np.searchsorted(edges, probe["position"].to_numpy(), side="right")
        bins = np.minimum(bins, total_bins - 1)
        agreed = np.bincount(bins, weights=probe["agree"].to_numpy(float), minlength=total_bins)
        probed = np.bincount(bins, minlength=total_bins).astype(float)
        without_task = {**params, "task_effect": np.zeros((n, 1))}
        first = np.zeros(total_bins, dtype=int)
        index0 = {**design, "draft_index": first, "position_bin": np.arange(total_bins), "task": first,
                  "drafter": first, "drafter_type": first + type_code,
                  "beyond": beyond}
        base = linear_predictor(without_task, index0, n_index, n_bins)
        kappa = d.get("kappa")
        if kappa is not None and meta.options.get("prompt_dispersion", False):
            kappa = kappa * max(int(probe["prompt_id"].nunique()) if "prompt_id" in probe else 1, 1)
        params["task_effect"] = _probe_task_effect(base, task_scale, kappa, agreed, probed, rng)[:, None]
    eta = linear_predictor(params, design, n_index, n_bins)
    return expit(eta).reshape(n, n_index, total_bins)


def drafts_partially(meta: PosteriorMetadata, spec: DrafterSpec) -> bool:
    """Whether the fit models the drafter's chance of drafting at all (:mod:`specsim.model.drafting`).

    A fitted drafter: it drafted nothing at some step. A new one: a fitted drafter of its type did.
    """
    if spec.name is not None:
        return spec.name in meta.drafting_drafters
    return any(meta.drafter_type_of.get(d) == spec.drafter_type for d in meta.drafting_drafters)


def draft_chance_draws(posterior: Posterior, spec: DrafterSpec, *, task: str | None = None,
                       probe: pd.DataFrame | None = None, rng: np.random.Generator | int | None = None,
                       context: np.ndarray | None = None, gamma: int | None = None) -> np.ndarray | None:
    """The chance that the drafter drafts anything at a step, per draw and position bin (None: it always drafts).

    A fitted task or drafter keeps its effect; a new one draws from its population, widened for
    the population mean (:func:`new_member_scale`); a task x drafter pair not fitted draws its own
    effect, and a new drafter its context slope. With a probe of a new task (rows of this drafter,
    one per step, ``drafted`` 0 or 1; without the column every row drafted), the new task's and
    pair's effect is drawn from its posterior given the probe's drafted and empty steps per
    position bin, as :func:`_probe_task_effect` does for acceptance.

    Parameters
    ----------
    context : numpy.ndarray, optional
        Mean tokens of context in each position bin of the workload (:func:`workload_context`);
        bins past the fitted ones continue the position walk with steps of its fitted scale.
        Default: the fitted bins at the reference context (256 tokens).
    gamma : int, optional
        The draft length predicted for: its doublings from 4 times the fitted ``draft_b_gamma``
        (0 in a fit of one gamma). Default: gamma 4.

    Returns
    -------
    numpy.ndarray or None
        Shape (n_draws, n_position_bins).
    """
    from specsim.model.drafting import DRAFT_CONTEXT_REFERENCE, context_doublings, gamma_doublings

    meta = posterior.metadata
    if not drafts_partially(meta, spec):
        return None
    rng = np.random.default_rng(rng)
    d = posterior.draws
    n = posterior.n_draws
    tasks, drafters = meta.drafting_tasks, meta.drafting_drafters
    walk = np.asarray(d["draft_position_effect"], dtype=float)
    fitted_bins = walk.shape[1]
    context = np.full(fitted_bins, DRAFT_CONTEXT_REFERENCE) if context is None else np.asarray(context, dtype=float)
    extra = len(context) - fitted_bins
    if extra > 0:
        steps = rng.normal(0, 1, (n, extra)) * np.asarray(d["sigma_draft_position"], dtype=float)[:, None]
        walk = np.concatenate([walk, walk[:, -1:] + np.cumsum(steps, axis=1)], axis=1)
    walk = walk[:, :len(context)]
    eta = np.array(d["draft_intercept"], dtype=float)
    if spec.name in drafters:
        column = drafters.index(spec.name)
        eta = eta + d["draft_drafter_effect"][:, column]
        slope = np.asarray(d["draft_context_slope"], dtype=float)[:, column]
    else:
        eta = eta + rng.normal(0, 1, n) * d["sigma_draft_drafter"] * new_member_scale(meta, len(drafters))
        slope = d["draft_b_context"] + rng.normal(0, 1, n) * d["sigma_draft_context"] * new_member_scale(
            meta, len(drafters))
    if gamma is not None:
        eta = eta + np.asarray(d["draft_b_gamma"], dtype=float) * float(gamma_doublings(float(gamma)))
    base = eta[:, None] + slope[:, None] * context_doublings(context)[None, :] + walk  # (n, bins)
    pair = [str(task), str(spec.name)]
    if task is not None and task in tasks:
        own = (d["draft_pair_effect"][:, meta.drafting_pairs.index(pair)] if pair in meta.drafting_pairs
               else rng.normal(0, 1, n) * d["sigma_draft_pair"])
        return expit(base + (d["draft_task_effect"][:, tasks.index(task)] + own)[:, None])
    scale = np.sqrt((d["sigma_draft_task"] * new_member_scale(meta, len(tasks))) ** 2 + d["sigma_draft_pair"] ** 2)
    if probe is None or probe.empty:
        return expit(base + (rng.normal(0, 1, n) * scale)[:, None])
    drafted = probe["drafted"].to_numpy(float) if "drafted" in probe else np.ones(len(probe))
    edges = np.asarray(meta.position_edges, dtype=float)
    bins = np.minimum(np.searchsorted(edges, probe["position"].to_numpy(), side="right"), base.shape[1] - 1) \
        if "position" in probe else np.zeros(len(probe), dtype=int)
    kappa = d["draft_kappa"] * max(int(probe["prompt_id"].nunique()) if "prompt_id" in probe else 1, 1)
    effect = _probe_task_effect(base, scale, kappa, np.bincount(bins, weights=drafted, minlength=base.shape[1]),
                                np.bincount(bins, minlength=base.shape[1]).astype(float), rng)
    return expit(base + effect[:, None])


def workload_context(prompt_lengths: np.ndarray, output_lengths: np.ndarray, edges: np.ndarray,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The workload's mean context and its generated tokens in each position bin (as the fit's cells).

    A bin's mean context is the mean, over the generated tokens of every sequence that reaches
    the bin, of prompt length plus position; a bin no sequence reaches takes its first position
    after the mean prompt (and 0 tokens).
    """
    prompt = np.asarray(prompt_lengths, dtype=float)
    output = np.asarray(output_lengths, dtype=float)
    weights = np.ones_like(prompt) if weights is None else np.asarray(weights, dtype=float)
    bounds = np.concatenate([[0.0], np.asarray(edges, dtype=float), [np.inf]])
    context = np.empty(len(bounds) - 1)
    reached = np.empty(len(bounds) - 1)
    for b in range(len(context)):
        start, stop = bounds[b], np.minimum(bounds[b + 1], output)
        tokens = np.clip(stop - start, 0, None) * weights
        middle = (start + np.maximum(stop, start) - 1) / 2
        reached[b] = tokens.sum()
        context[b] = (((prompt + middle) * tokens).sum() / reached[b] if reached[b]
                      else np.average(prompt, weights=weights) + start)
    return np.maximum(context, 1.0), reached


def workload_beyond(prompt_lengths: np.ndarray, output_lengths: np.ndarray, edges: np.ndarray,
                    window: float | None, weights: np.ndarray | None = None) -> np.ndarray:
    """Doublings past ``window`` of the workload's mean context in each position bin (:func:`workload_context`)."""
    from specsim.model.data import beyond_window

    context, _ = workload_context(prompt_lengths, output_lengths, edges, weights)
    return beyond_window(context, np.inf if window is None else window)


@dataclass(frozen=True)
class SpeedupPrediction:
    """Posterior predictive speed-up of one workload."""

    mean: float
    median: float
    low: float
    high: float
    level: float
    tokens_per_step_mean: float
    acceptance_index0_mean: float
    divergence: float
    draws: np.ndarray
    extrapolation: Extrapolation | None = None
    drafter: DrafterSpec | None = None
    beyond_window_max: float = 0.0
    draft_chance_mean: float = 1.0

    def to_dict(self) -> dict:
        """Plain dictionary for JSON (without the draws)."""
        return {"speedup": self.mean, "speedup_median": self.median, "speedup_low": self.low,
                "speedup_high": self.high, "interval_level": self.level,
                "speedup_estimator": "ratio of totals, posterior predictive mean",
                "tokens_per_step": self.tokens_per_step_mean,
                "tokens_per_step_convention": TOKENS_PER_STEP_CONVENTION,
                "acceptance_first_index": self.acceptance_index0_mean, "draft_chance": self.draft_chance_mean,
                "divergence": self.divergence,
                **({"drafter_type": self.drafter.drafter_type, "own_content": self.drafter.own_content,
                    "training_window": self.drafter.window, "beyond_window_max": self.beyond_window_max}
                   if self.drafter else {}),
                **(self.extrapolation.to_dict() if self.extrapolation else {})}


def predict_speedup(
    posterior: Posterior,
    cost: CostModel,
    gamma: int,
    prompt_lengths: np.ndarray,
    output_lengths: np.ndarray,
    *,
    finetuned: bool,
    divergence: float | None = None,
    reference_lengths: np.ndarray | None = None,
    task: str | None = None,
    drafter: str | None = None,
    drafter_type: str | None = None,
    own_content: bool | None = None,
    probe: pd.DataFrame | None = None,
    n_draws: int = 400,
    level: float = INTERVAL_LEVEL,
    rng: np.random.Generator | int | None = None,
    cost_log_sd: float = 0.0,
) -> SpeedupPrediction:
    """Posterior predictive expected speed-up of a workload.

    Parameters
    ----------
    posterior : Posterior
    cost : CostModel
        Costs of the drafter and target on the deployment hardware.
    gamma : int
        Draft length.
    prompt_lengths, output_lengths : numpy.ndarray, shape (n_sequences,)
        The workload.
    finetuned : bool
        Drafter kind.
    divergence : float, optional
        Length divergence between the drafter's training data and the workload; computed
        from ``reference_lengths`` (or the stored lengths of ``drafter``) when not given.
    reference_lengths : numpy.ndarray, optional
        Training-data lengths of the drafter.
    task, drafter : str, optional
        Known task or drafter of the fit (their effects are used); otherwise new ones.
    drafter_type : str, optional
        A new drafter's type (``model``, ``feature-head``, ``lookup``); a fitted drafter's comes
        from the fit.
    own_content : bool, optional
        The workload is the drafter's own training content (default: the fitted task is one of
        the drafter's own tasks; False for a new task).
    probe : pandas.DataFrame, optional
        Probe rows of this drafter on the new workload (see :func:`acceptance_draws`).
    n_draws : int
        Posterior draws used.
    level : float
        Central interval probability.
    rng : numpy.random.Generator or int, optional
    cost_log_sd : float
        Spread of the costs between collection runs (log scale; the fit's
        ``cost_run_log_sd`` when the costs are the fitted ones): each draw's speed-up is
        multiplied by ``exp(N(0, cost_log_sd))``, so the interval carries the cost model's
        transfer to the run being predicted, not only the acceptance uncertainty.
    """
    rng = np.random.default_rng(rng)
    if not (np.isfinite(cost_log_sd) and cost_log_sd >= 0):
        raise InputError(f"must be a finite number >= 0, got {cost_log_sd}", field="cost_log_sd")
    prompt_lengths = np.asarray(prompt_lengths, dtype=float)
    output_lengths = np.asarray(output_lengths)
    meta = posterior.metadata
    spec = drafter_spec(meta, finetuned=finetuned, drafter=drafter, drafter_type=drafter_type, task=task,
                        own_content=own_content, reference_lengths=reference_lengths)
    if divergence is not None:
        upper = DIVERGENCE_UPPER.get(meta.divergence_measure, np.inf)
        if not (np.isfinite(divergence) and 0 <= divergence <= upper):
            raise InputError(f"must be a finite {meta.divergence_measure} divergence in [0, {upper:g}] (the fit's "
                             f"measure), got {divergence:g}", field="--divergence")
    fitted_without_lengths = drafter in meta.drafters and not len(meta.reference_lengths.get(drafter, ()))
    if divergence is None and (not meta.options.get("divergence_terms", True)
                               or (reference_lengths is None and fitted_without_lengths)):
        # As fitted: a fit without divergence terms (counts without length summaries), or a fitted
        # drafter trained on nothing (prompt lookup), whose cells' covariate was 0.
        divergence = 0.0
    if divergence is None:
        if reference_lengths is None:
            if drafter is None or drafter not in meta.reference_lengths:
                raise InputError("give a divergence, reference lengths, or a drafter known to the fit",
                                 field="divergence")
            reference_lengths = np.asarray(meta.reference_lengths[drafter])
        kind = meta.length_kind
        workload = {"prompt_len": prompt_lengths, "output_len": output_lengths,
                    "total_len": prompt_lengths + output_lengths}[kind]
        divergence = divergences(reference_lengths, workload)[meta.divergence_measure]
    # Past the last measured position the position random walk continues from its prior scale:
    # one more bin per doubling of position, so intervals widen with the distance from the data.
    observed = (meta.observed_positions.get(drafter) if drafter in meta.observed_positions
                else max(meta.observed_positions.values(), default=None))
    reach = extrapolation(observed, output_lengths) if observed is not None else None
    edges = np.asarray(meta.position_edges, dtype=float)
    if reach is not None and reach.extrapolates:
        start = max(edges[-1] if len(edges) else 1.0, float(reach.max_observed_position))
        new = 2.0 ** np.arange(np.ceil(np.log2(start + 1)), np.floor(np.log2(max(reach.workload_max_position, 1))) + 1)
        edges = np.concatenate([edges, new[new > start]])
    extra_bins = len(edges) - len(meta.position_edges)
    # Each draw needs only the workload's distinct (prompt, output) pairs, weighted by their counts,
    # and keeps two numbers: memory stays one workload's size, whatever the number of draws.
    pairs, counts = np.unique(np.column_stack([prompt_lengths, output_lengths]), axis=0, return_counts=True)
    from specsim.model.data import beyond_window

    context, reached = workload_context(pairs[:, 0], pairs[:, 1], edges, counts)
    beyond = (beyond_window(context, np.inf if spec.window is None else spec.window)
              if meta.options.get("window_terms", False) else None)
    rates = acceptance_draws(posterior, spec, divergence=divergence, task=task, beyond=beyond, rng=rng,
                             extra_bins=extra_bins, probe=probe)
    chances = draft_chance_draws(posterior, spec, task=task, probe=probe, rng=rng, context=context, gamma=gamma)
    chosen = rng.choice(len(rates), size=min(n_draws, len(rates)), replace=False)
    predictions = []
    for i in chosen:
        # A step that drafts nothing is a plain step (the simulator's hazards; :mod:`specsim.model.drafting`).
        hazards = None if chances is None else draft_hazards(chances[i], len(edges) + 1)
        profile = AcceptanceProfile(rates[i], edges, hazards, hazards)
        draw = expected_workload(profile, cost, gamma, pairs[:, 0], pairs[:, 1].astype(int), weights=counts)
        predictions.append((draw.speedup, draw.tokens_per_step))
    speedups = np.array([p[0] for p in predictions])
    if cost_log_sd > 0:
        speedups = speedups * np.exp(rng.normal(0.0, cost_log_sd, len(speedups)))
    tokens = np.array([p[1] for p in predictions])
    low, high = np.quantile(speedups, central_quantiles(level))
    return SpeedupPrediction(float(speedups.mean()), float(np.median(speedups)), float(low), float(high), level,
                             float(np.mean(tokens)), float(rates[chosen, 0, :].mean()), float(divergence), speedups,
                             reach, spec, float(np.max(beyond)) if beyond is not None else 0.0,
                             1.0 if chances is None else float(np.average(chances[chosen].mean(axis=0),
                                                                          weights=reached if reached.sum() else None)))

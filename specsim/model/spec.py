"""The acceptance model written once: its priors and its linear predictor.

For cell ``c`` (task ``t``, drafter ``r`` of type ``y`` -- a separate model, a feature head or a
lookup -- draft index ``i``, position bin ``b``)::

    logit a_c = intercept + type_effect[y]
              + b_finetuned[y] * f_r                                   fine-tuned vs generic, within the type
              + b_content * f_r * m_tr                                 own-content match
              + b_divergence * d_tr + b_interaction * f_r * d_tr       length divergence (optional)
              + (b_beyond[y] + b_beyond_finetuned[y] * f_r) * h_c      context beyond the training window
              + index_effect[y, i] + b_index_finetuned * f_r * (i - mean i)
              + position_effect[b] + b_position_finetuned * f_r * (b - mean b)
              + task_effect[t] + task_type_effect[t, y] + drafter_effect[r] + pair_effect[t, r]

``f_r`` is 1 for a fine-tuned drafter; ``m_tr`` is 1 where task ``t`` is one the drafter was
trained on (its own content: a fine-tuned drafter's bonus there is ``b_content``, apart from any
length term); ``d_tr`` the length divergence between the drafter's training data and the task;
``h_c = max(0, log2(context_c / window_r))`` the doublings of the cell's mean context length
beyond the longest sequence the drafter was trained on (0 inside it, and for a drafter trained on
nothing), so ``b_beyond[y]`` is the change of logit acceptance per doubling of context beyond the
window for a generic drafter of type ``y`` and ``b_beyond[y] + b_beyond_finetuned[y]`` for a
fine-tuned one. ``task_type_effect[t, y]`` (optional, with several types) is how far task ``t``
is from its own effect for drafters of type ``y``: an unseen domain can leave a lookup drafter
untouched (it copies from the prompt) while a trained head loses most of its acceptance, which one
task effect shared by every type cannot say. ``pair_effect[t, r]`` (optional) is how far drafter ``r``
is from the sum of the other terms on task ``t``: on the length experiment two fine-tuned separate
models gain on one context regime where the generic one loses, which no task or drafter effect,
each shared, can say, and which otherwise leaves a new task's interval too narrow for such a
drafter. Pair effects sum to zero over each task's and each drafter's fitted pairs (and over each
task's pairs within a drafter type), so that every other effect keeps its meaning. Each drafter
type has its own draft-index random walk (a head's acceptance falls with the draft index,
lookup's rises). :func:`linear_predictor` is the one implementation of this line: model building
(PyTensor tensors), posterior prediction, synthetic data and simulation-based calibration (NumPy
arrays with a leading draw axis) all call
it, and :data:`PRIORS` is the one table of priors they share.

Priors (logit scale), chosen so that prior predictive acceptance spreads over (0, 1) without
piling up at the ends (the main report plots the prior predictive): see :data:`PRIORS`.
``sigma_drafter`` has a boundary-avoiding Gamma(2, 10) prior (mean 0.2, zero density at 0) so
that a handful of drafters does not trap NUTS in the funnel at 0. The random walks' step scales
have the same prior: three draft-index steps and two position steps cannot identify a scale, and a
half-normal's mass at 0 made a funnel in which NUTS diverged on 10M drafted tokens. ``sigma_task``
has Gamma(2, 5) (mean 0.4, sd 0.28, the moments of the HalfNormal(0.5) it replaces): four context
regimes of the same content have nearly equal effects, and the half-normal's long left tail of
``log sigma_task`` left a leave-one-regime-out fold short of tail ESS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prior", "PRIORS", "FIXED_EFFECTS", "TYPED_EFFECTS", "SCALE_PARAMETERS", "linear_predictor", "centred"]


@dataclass(frozen=True)
class Prior:
    """A prior distribution by name and parameters (PyMC's parameterisation).

    Parameters
    ----------
    family : {"normal", "halfnormal", "gamma"}
        ``normal(mu, sigma)``, ``halfnormal(sigma)``, ``gamma(alpha, beta)`` (rate ``beta``).
    parameters : tuple of float
    meaning : str
        What the parameter is, for summaries and reports.
    """

    family: str
    parameters: tuple[float, ...]
    meaning: str

    def pymc(self, name: str, **kwargs: Any) -> Any:
        """Create the PyMC random variable ``name`` with this prior (inside a model context)."""
        import pymc as pm

        distribution = {"normal": pm.Normal, "halfnormal": pm.HalfNormal, "gamma": pm.Gamma}[self.family]
        return distribution(name, *self.parameters, **kwargs)

    def draw(self, rng: np.random.Generator, size: int | tuple[int, ...] | None = None) -> Any:
        """Draws from the prior with NumPy."""
        if self.family == "normal":
            return rng.normal(self.parameters[0], self.parameters[1], size)
        if self.family == "halfnormal":
            return np.abs(rng.normal(0.0, self.parameters[0], size))
        alpha, rate = self.parameters
        return rng.gamma(alpha, 1.0 / rate, size)

    def describe(self) -> str:
        """Readable form, e.g. ``Normal(0, 1.5)``."""
        names = {"normal": "Normal", "halfnormal": "HalfNormal", "gamma": "Gamma"}
        return f"{names[self.family]}({', '.join(f'{p:g}' for p in self.parameters)})"


#: The priors of every model parameter (random-walk steps and standardised effects are N(0, 1)).
PRIORS: dict[str, Prior] = {
    "intercept": Prior("normal", (0.0, 1.5), "logit acceptance, measured generic drafters, mean type and task, "
                                             "divergence 0, inside the training window"),
    "type_effect": Prior("normal", (0.0, 1.0), "a drafter type against the types' mean (effects sum to zero)"),
    "b_finetuned": Prior("normal", (0.0, 1.0), "fine-tuned minus generic drafters of a type, off their own "
                                               "content, at divergence 0"),
    "b_content": Prior("normal", (0.0, 1.0), "a fine-tuned drafter on its own training task against other tasks"),
    "b_divergence": Prior("normal", (0.0, 2.0), "slope in length divergence (generic drafters)"),
    "b_interaction": Prior("normal", (0.0, 2.0), "extra slope in divergence for fine-tuned drafters"),
    "b_beyond": Prior("normal", (0.0, 0.5), "change per doubling of context beyond the training window, generic "
                                            "drafters of a type"),
    "b_beyond_finetuned": Prior("normal", (0.0, 0.5), "extra change per doubling beyond the window for fine-tuned "
                                                      "drafters of a type"),
    "sigma_index_effect": Prior("gamma", (2.0, 10.0), "step scale of the draft-index random walks"),
    "sigma_position_effect": Prior("gamma", (2.0, 10.0), "step scale of the position random walk"),
    "b_index_finetuned": Prior("normal", (0.0, 0.5), "fine-tuned change of the draft-index trend"),
    "b_position_finetuned": Prior("normal", (0.0, 0.5), "fine-tuned change of the position trend"),
    "sigma_task": Prior("gamma", (2.0, 5.0), "spread of task effects"),
    "sigma_drafter": Prior("gamma", (2.0, 10.0), "spread of drafter effects"),
    "sigma_task_type": Prior("gamma", (2.0, 5.0), "spread of a task's effect between drafter types"),
    "sigma_pair": Prior("gamma", (2.0, 5.0), "spread of a drafter's effect between tasks (task x drafter pairs)"),
    "kappa": Prior("gamma", (2.0, 0.04), "beta-binomial concentration per prompt behind a cell (over-dispersion)"),
}

#: Coefficients of the linear predictor that are one number (or one per drafter type), in the
#: order summaries list them. ``TYPED_EFFECTS`` are vectors over drafter types.
FIXED_EFFECTS = ("intercept", "b_finetuned", "b_content", "b_divergence", "b_interaction", "b_beyond",
                 "b_beyond_finetuned", "b_index_finetuned", "b_position_finetuned")
TYPED_EFFECTS = ("type_effect", "b_finetuned", "b_beyond", "b_beyond_finetuned")
#: Scale parameters reported beside the fixed effects.
SCALE_PARAMETERS = ("sigma_task", "sigma_task_type", "sigma_drafter", "sigma_pair", "kappa")


def centred(values: Any, size: int) -> Any:
    """``values - (size - 1) / 2``: an index centred on the middle of ``0 .. size - 1``."""
    return values - (size - 1) / 2


def linear_predictor(parameters: Mapping[str, Any], design: Mapping[str, Any], n_index: int, n_bins: int) -> Any:
    """Logit acceptance of each cell (the model's one linear predictor).

    Works on NumPy arrays and on PyTensor tensors alike.

    Parameters
    ----------
    parameters : mapping
        Scalars ``intercept``, ``b_index_finetuned``, ``b_position_finetuned`` and the optional
        ``b_content``, ``b_divergence``, ``b_interaction``; vectors over drafter types
        ``type_effect``, ``b_finetuned`` and the optional ``b_beyond``, ``b_beyond_finetuned``;
        ``index_effect`` over drafter types x draft indices; vectors ``position_effect`` over
        position bins, ``task_effect`` over tasks, ``drafter_effect`` over drafters, the optional
        ``task_type_effect`` over tasks x drafter types, the optional ``pair_effect`` over the fitted
        task x drafter pairs. For draws,
        give scalars the shape ``(n_draws, 1)``, vectors ``(n_draws, K)`` and ``index_effect``
        ``(n_draws, n_types, n_index)``. An optional term whose parameters are absent is left out.
    design : mapping
        Per-cell arrays of shape ``(n_cells,)``: ``finetuned`` (0/1), ``drafter_type``,
        ``draft_index``, ``position_bin``, ``task`` and ``drafter`` (integer codes into the
        effect vectors), and for the optional terms ``content_match`` (0/1), ``divergence``,
        ``beyond`` (doublings of context beyond the training window) and ``pair`` (integer codes
        into ``pair_effect``).
    n_index, n_bins : int
        Number of draft indices and position bins (centres of the fine-tuned trends).

    Returns
    -------
    array, shape (n_cells,) or (n_draws, n_cells)
    """
    p = parameters
    f = design["finetuned"]
    kind = design["drafter_type"]
    index, position = design["draft_index"], design["position_bin"]
    eta = p["intercept"] + p["type_effect"][..., kind] + p["b_finetuned"][..., kind] * f
    if "b_content" in p:
        eta = eta + p["b_content"] * f * design["content_match"]
    if "b_divergence" in p:
        d = design["divergence"]
        eta = eta + p["b_divergence"] * d + p["b_interaction"] * f * d
    if "b_beyond" in p:
        eta = eta + (p["b_beyond"][..., kind] + p["b_beyond_finetuned"][..., kind] * f) * design["beyond"]
    if "task_type_effect" in p:
        eta = eta + p["task_type_effect"][..., design["task"], kind]
    if "pair_effect" in p:
        eta = eta + p["pair_effect"][..., design["pair"]]
    return (eta
            + p["index_effect"][..., kind, index] + p["b_index_finetuned"] * f * centred(index, n_index)
            + p["position_effect"][..., position] + p["b_position_finetuned"] * f * centred(position, n_bins)
            + p["task_effect"][..., design["task"]] + p["drafter_effect"][..., design["drafter"]])

"""Bayesian hierarchical model of acceptance, its frequentist baseline, and prediction.

Importing this package does not import PyMC; :func:`fit_model` and :func:`build_model` do.
"""

from specsim.model.artifact import Posterior, PosteriorMetadata, load_posterior, save_posterior
from specsim.model.baseline import fit_baseline
from specsim.model.data import AcceptanceCounts, model_cells
from specsim.model.hierarchical import FitResult, ModelOptions, build_model, diagnose, fit_model
from specsim.model.predict import SpeedupPrediction, predict_speedup

__all__ = [
    "AcceptanceCounts",
    "model_cells",
    "fit_baseline",
    "FitResult",
    "ModelOptions",
    "build_model",
    "diagnose",
    "fit_model",
    "Posterior",
    "PosteriorMetadata",
    "save_posterior",
    "SpeedupPrediction",
    "load_posterior",
    "predict_speedup",
]


"""Sequence-length distributions and the divergences between them.

Lengths come from the sequences table (``prompt_len``, ``output_len`` and their sum,
``total_len``) or from any table with those columns (a lengths file). Divergences between
two samples of lengths:

- ``js``: Jensen-Shannon divergence, base 2 (in [0, 1]), of histograms on shared
  logarithmic bins (:func:`log_bins`: ``bins_per_octave`` bins per doubling of length,
  from 1 token to the largest length seen in either sample);
- ``kl_ab`` and ``kl_ba``: Kullback-Leibler both ways on the same bins, with additive
  smoothing (``smoothing`` pseudo-counts per bin) so empty bins stay finite;
- ``tv``: total variation distance on the same bins;
- ``w1_tokens`` and ``w1_log``: Wasserstein-1 distance on lengths in tokens and on
  natural-log lengths (``scipy.stats.wasserstein_distance``);
- ``ks``: the two-sample Kolmogorov-Smirnov statistic (``scipy.stats.ks_2samp``);
- ``beyond_share``: how far the second sample's token positions reach past the first's, in [0,
  1] and not symmetric: with ``S(c)`` the share of the first sample's tokens (a drafter's training
  data) at position ``c`` or beyond, the mean of ``1 - S(c)`` over every token position ``c`` of
  the second sample (the workload). It grows as the workload's tokens sit later in (or past) the
  training data's positions, and approaches 1 as the workload's sequences grow far past the
  longest training sequence (:func:`beyond_share`).

Bootstrap intervals resample both samples with replacement. Pure NumPy/SciPy; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from specsim.errors import InputError
from specsim.glossary import INTERVAL_LEVEL, central_quantiles

__all__ = [
    "LENGTH_KINDS",
    "DIVERGENCES",
    "DIVERGENCE_UPPER",
    "length_table",
    "log_bins",
    "divergences",
    "beyond_share",
    "bootstrap_divergences",
    "divergence_matrix",
    "length_quantiles",
]

LENGTH_KINDS = ("prompt_len", "output_len", "total_len")
DIVERGENCES = ("js", "kl_ab", "kl_ba", "tv", "w1_tokens", "w1_log", "ks", "beyond_share")
#: The largest value each measure can take on lengths specsim reads (at most about 10^7 tokens
#: a sequence): shares and distances between distributions are at most 1; the smoothed KL is
#: at most about log(2n) for n lengths; the Wasserstein distances are at most the longest length
#: (in tokens, or its log). A given divergence above its measure's bound is not a divergence.
DIVERGENCE_UPPER = {"js": 1.0, "tv": 1.0, "ks": 1.0, "beyond_share": 1.0, "kl_ab": 50.0, "kl_ba": 50.0,
                    "w1_log": 17.0, "w1_tokens": 1.1e7}


def length_table(frame: pd.DataFrame, by: str = "task") -> pd.DataFrame:
    """One row per sequence: the grouping column and prompt, output and total length.

    Parameters
    ----------
    frame : pandas.DataFrame
        A sequences table or a lengths table with ``prompt_len`` and ``output_len``.
    by : str
        Grouping column kept (``task`` or ``dataset``).
    """
    for column in (by, "prompt_len", "output_len"):
        if column not in frame.columns:
            raise InputError("missing column", field=column)
    # Each sequence once: traces hold one row per drafter x gamma x temperature.
    keys = [c for c in ("prompt_id", by, "prompt_len", "output_len") if c in frame.columns]
    if "temperature" in frame.columns and "prompt_id" in frame.columns:
        # Output lengths differ across temperatures; keep one row per prompt and temperature.
        keys.append("temperature")
    table = frame[keys].drop_duplicates() if "prompt_id" in frame.columns else frame[keys]
    table = table.assign(total_len=table["prompt_len"] + table["output_len"])
    return table.reset_index(drop=True)


def log_bins(max_length: float, bins_per_octave: int = 4) -> np.ndarray:
    """Bin edges from 1 token to past ``max_length``, ``bins_per_octave`` per doubling."""
    octaves = max(np.log2(max(max_length, 1.0)), 0.0)
    n_edges = int(np.ceil(octaves * bins_per_octave)) + 2
    return 2.0 ** (np.arange(n_edges) / bins_per_octave)


def _histograms(a: np.ndarray, b: np.ndarray, bins_per_octave: int) -> tuple[np.ndarray, np.ndarray]:
    edges = log_bins(max(a.max(), b.max()), bins_per_octave)
    edges[0] = 0.0  # lengths of 0 (empty outputs) fall in the first bin
    return np.histogram(a, edges)[0].astype(float), np.histogram(b, edges)[0].astype(float)


def _validated(sample: np.ndarray, name: str) -> np.ndarray:
    sample = np.asarray(sample, dtype=float).reshape(-1)
    if sample.size == 0:
        raise InputError("empty sample of lengths", field=name)
    if np.any(~np.isfinite(sample)) or np.any(sample < 0):
        raise InputError("lengths must be finite and >= 0", field=name)
    return sample


def beyond_share(training: np.ndarray, workload: np.ndarray) -> float:
    """Mean over the workload's token positions of the share of training tokens *before* them.

    Parameters
    ----------
    training, workload : numpy.ndarray
        Sequence lengths in tokens; a sequence of length ``L`` has tokens at positions
        ``0 .. L-1``.

    Examples
    --------
    >>> beyond_share([4, 4], [4])      # same lengths: positions 0-3 have 4/8, 6/8, ... of tokens before them
    0.375
    >>> beyond_share([2], [4])         # positions 2 and 3 lie beyond all training data
    0.625
    """
    training = np.sort(np.maximum(np.rint(np.asarray(training, dtype=float)), 1).astype(np.int64))
    workload = np.maximum(np.rint(np.asarray(workload, dtype=float)), 1).astype(np.int64)
    longest = int(workload.max())
    positions = np.arange(longest)
    # Training tokens at positions >= c: sum over sequences of max(L - c, 0).
    at_or_beyond = _tokens_at_or_beyond(training, positions)
    before = 1.0 - at_or_beyond / training.sum()
    # Workload tokens at each position: the sequences longer than it.
    tokens_at = len(workload) - np.searchsorted(np.sort(workload), positions, side="right")
    return float(np.dot(tokens_at, before) / tokens_at.sum())


def _tokens_at_or_beyond(sorted_lengths: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``sum(max(L - c, 0))`` for every ``c`` of ``positions`` from sorted lengths, in O(n + m log n)."""
    suffix = np.concatenate([np.cumsum(sorted_lengths[::-1])[::-1], [0]])
    first = np.searchsorted(sorted_lengths, positions, side="right")
    count = len(sorted_lengths) - first
    return (suffix[first] - count * positions).astype(float)


def divergences(
    a: np.ndarray, b: np.ndarray, *, bins_per_octave: int = 4, smoothing: float = 0.5
) -> dict[str, float]:
    """All divergences between two samples of lengths (see the module docstring).

    Parameters
    ----------
    a, b : numpy.ndarray, shape (n_a,), (n_b,)
        Lengths in tokens.
    bins_per_octave : int
        Resolution of the shared logarithmic bins.
    smoothing : float
        Pseudo-count per bin for the KL divergences.

    Returns
    -------
    dict of str to float
        Keys :data:`DIVERGENCES`.

    Examples
    --------
    >>> d = divergences([10, 20, 30], [10, 20, 30])
    >>> d["js"], d["ks"]
    (0.0, 0.0)
    """
    a, b = _validated(a, "a"), _validated(b, "b")
    count_a, count_b = _histograms(a, b, bins_per_octave)
    p, q = count_a / count_a.sum(), count_b / count_b.sum()
    smooth_p = (count_a + smoothing) / (count_a.sum() + smoothing * len(count_a))
    smooth_q = (count_b + smoothing) / (count_b.sum() + smoothing * len(count_b))
    return {
        "js": float(jensenshannon(p, q, base=2) ** 2),
        "kl_ab": float(stats.entropy(smooth_p, smooth_q)),
        "kl_ba": float(stats.entropy(smooth_q, smooth_p)),
        "tv": float(0.5 * np.abs(p - q).sum()),
        "w1_tokens": float(stats.wasserstein_distance(a, b)),
        "w1_log": float(stats.wasserstein_distance(np.log(np.maximum(a, 1)), np.log(np.maximum(b, 1)))),
        "ks": float(stats.ks_2samp(a, b).statistic),
        "beyond_share": beyond_share(a, b),
    }


def bootstrap_divergences(
    a: np.ndarray, b: np.ndarray, *, n_resamples: int = 500, level: float = INTERVAL_LEVEL,
    rng: np.random.Generator | int | None = None, progress: Callable[[], None] | None = None, **options,
) -> pd.DataFrame:
    """Divergences with percentile bootstrap intervals (both samples resampled).

    ``progress``, if given, is called after each resample.

    Returns
    -------
    pandas.DataFrame
        Index :data:`DIVERGENCES`; columns ``estimate``, ``low``, ``high``.
    """
    a, b = _validated(a, "a"), _validated(b, "b")
    rng = np.random.default_rng(rng)
    estimate = divergences(a, b, **options)
    resampled = []
    for _ in range(n_resamples):
        resampled.append(divergences(rng.choice(a, a.size), rng.choice(b, b.size), **options))
        if progress is not None:
            progress()
    draws = pd.DataFrame(resampled)
    low_q, high_q = central_quantiles(level)
    return pd.DataFrame({
        "estimate": pd.Series(estimate),
        "low": draws.quantile(low_q),
        "high": draws.quantile(high_q),
    }).loc[list(DIVERGENCES)]


def divergence_matrix(samples: Mapping[str, np.ndarray], measure: str = "js", **options) -> pd.DataFrame:
    """Pairwise divergence ``measure`` between every pair of named samples.

    Returns
    -------
    pandas.DataFrame
        Rows ``a``, columns ``b`` (asymmetric for ``kl_ab``/``kl_ba``).
    """
    if measure not in DIVERGENCES:
        raise InputError(f"unknown divergence {measure!r}; choose one of {', '.join(DIVERGENCES)}",
                         field="measure")
    names = list(samples)
    matrix = pd.DataFrame(0.0, index=names, columns=names)
    for row in names:
        for column in names:
            if row != column:
                matrix.loc[row, column] = divergences(samples[row], samples[column], **options)[measure]
    return matrix


def length_quantiles(table: pd.DataFrame, by: str = "task", quantiles=(0.1, 0.5, 0.9)) -> pd.DataFrame:
    """Quantiles of prompt, output and total length per group."""
    parts = []
    for kind in LENGTH_KINDS:
        q = table.groupby(by)[kind].quantile(list(quantiles)).unstack()
        q.columns = [f"{kind}_q{int(100 * c):02d}" for c in q.columns]
        parts.append(q)
    counts = table.groupby(by).size().rename("sequences")
    return pd.concat([counts, *parts], axis=1).reset_index()

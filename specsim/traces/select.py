"""Row selection on trace tables by key-column values."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["select"]


def select(frame: pd.DataFrame, **conditions) -> pd.DataFrame:
    """Rows where every given column equals its value (``None`` values are ignored).

    Examples
    --------
    >>> table = pd.DataFrame({"task": ["a", "b"], "gamma": [4, 2]})
    >>> select(table, task="b", gamma=None)["gamma"].tolist()
    [2]
    """
    mask = np.ones(len(frame), dtype=bool)
    for column, value in conditions.items():
        if value is not None:
            mask &= (frame[column] == value).to_numpy()
    return frame[mask]

"""The one error type for bad input, shared by every stage.

The CLI turns an :class:`InputError` into one line on stderr and exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from a user: a file, a field in it, and what is wrong.

    Parameters
    ----------
    problem : str
        What is wrong, in words a user can act on.
    path : str or Path, optional
        The file or directory the problem was found in.
    field : str, optional
        The column, option or key that is wrong.

    Examples
    --------
    >>> str(InputError("must be >= 1", path="run.yaml", field="gamma"))
    'run.yaml: gamma: must be >= 1'
    """

    def __init__(self, problem: str, *, path: str | Path | None = None, field: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.field = field
        super().__init__(self._line())

    def _line(self) -> str:
        parts = [p for p in (self.path, self.field) if p]
        return ": ".join([*parts, self.problem])

"""Report parameters, checked as the command-line options they mirror, before any cell runs.

Each shipped report declares its parameters here with the same bounds as the option that
means the same thing (``cost_ratio`` as ``--cost-ratio``, ``gamma`` as ``--gamma``, ...), so
``specsim report NAME --param KEY=VALUE`` and :func:`specsim.report.render_report` refuse a bad
value in one line, naming the parameter, instead of rendering an impossible answer or failing
inside a cell. A report given as a path to its own percent script has no declaration; its
values are only checked to be finite (a NaN or an infinity is never a parameter).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from specsim.errors import InputError

__all__ = ["REPORT_PARAMETERS", "check_report_params"]

Check = Callable[[str, Any], Any]


def _number(low: float | None = None, high: float | None = None, *, whole: bool = False,
            optional: bool = False) -> Check:
    """A finite number (a whole one if ``whole``) within [low, high]; None allowed if ``optional``."""
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return value
        kind = "whole number" if whole else "number"
        bounds = " and ".join(part for part in (f">= {low:g}" if low is not None else "",
                                                 f"<= {high:g}" if high is not None else "") if part)
        wanted = f"a finite {kind}" + (f" {bounds}" if bounds else "") + (" (or null)" if optional else "")
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (not is_number or not math.isfinite(value) or (whole and value != int(value))
                or (low is not None and value < low) or (high is not None and value > high)):
            raise InputError(f"must be {wanted}, got {value!r}", field=f"--param {name}")
        return int(value) if whole else value
    return check


def _text(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise InputError(f"must be text, got {value!r}", field=f"--param {name}")
    return value


def _path(kind: str) -> Check:
    """An existing file or folder (``kind``), or '' where the report makes it optional."""
    def check(name: str, value: Any) -> Any:
        _text(name, value)
        if value and not (Path(value).is_dir() if kind == "folder" else Path(value).is_file()):
            raise InputError(f"no such {kind}: {value}", field=f"--param {name}")
        return value
    return check


def _paths(kind: str) -> Check:
    """One or more existing files or folders (``kind``), comma-separated."""
    single = _path(kind)

    def check(name: str, value: Any) -> Any:
        _text(name, value)
        if not value:
            return value  # optional where the report makes it so
        parts = [part.strip() for part in value.split(",")]
        if not all(parts):
            raise InputError(f"an empty entry in the comma-separated list {value!r}", field=f"--param {name}")
        for part in parts:
            single(name, part)
        return value
    return check


_GAMMA = _number(1, 64, whole=True)
_TEMPERATURE = _number(0, 100)
_COST_RATIO = _number(0, None, optional=True)
_SEED = _number(0, 2**32 - 1, whole=True)

#: Per shipped report, each parameter's check (the bounds of the option it mirrors).
REPORT_PARAMETERS: dict[str, dict[str, Check]] = {
    "main": {"traces": _paths("folder"), "lengths_traces": _path("folder"), "posterior": _path("file"),
             "temperature": _TEMPERATURE, "gamma": _GAMMA, "draws": _number(1, 100_000, whole=True),
             "cost_ratio": _COST_RATIO, "cost_profile": _path("file"), "load_profile": _paths("file"),
             "seed": _SEED},
    "whatif": {"traces": _path("folder"), "drafter": _text, "acceptance_from": _text, "lengths_from": _text,
               "gamma": _GAMMA, "temperature": _TEMPERATURE, "cost_ratio": _COST_RATIO,
               "cost_profile": _path("file"), "concurrency": _number(1, 65536, optional=True), "seed": _SEED},
    "counts": {"counts": _path("file"), "lengths_from": _text, "cost_ratio": _COST_RATIO,
               "cost_profile": _path("file"), "tokenizer": _text, "gamma": _number(0, 64, whole=True),
               "max_gamma": _GAMMA, "seed": _SEED, "task": _text, "drafter": _text,
               "temperature": _number(0, 100, optional=True)},
}


def _finite_everywhere(name: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"must be finite, got {value!r}", field=f"--param {name}")
    if isinstance(value, (list, tuple)):
        for item in value:
            _finite_everywhere(name, item)
    if isinstance(value, dict):
        for item in value.values():
            _finite_everywhere(name, item)


def check_report_params(report: str | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``report`` (a shipped report's name, or None for another script), checked.

    Raises
    ------
    InputError
        For an unknown parameter of a shipped report, or a value its check refuses.

    Examples
    --------
    >>> check_report_params("whatif", {"gamma": 3})
    {'gamma': 3}
    >>> check_report_params("whatif", {"cost_ratio": -0.5})
    Traceback (most recent call last):
    ...
    specsim.errors.InputError: --param cost_ratio: must be a finite number >= 0 (or null), got -0.5
    """
    checks = REPORT_PARAMETERS.get(report) if report is not None else None
    checked = {}
    for name, value in params.items():
        _finite_everywhere(name, value)
        if checks is None:
            checked[name] = value
            continue
        if name not in checks:
            raise InputError(f"unknown parameter {name!r}; report {report} takes {', '.join(sorted(checks))}",
                             field="--param")
        checked[name] = checks[name](name, value)
    return checked

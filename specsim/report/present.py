"""One way to show tables, figures and verdicts in the reports and the notebook.

- :func:`table`: no index, units in headers, three significant digits, intervals as
  ``0.62 (0.58 to 0.66)``, missing values as an explained dash, wide tables transposed; a pandas
  Styler, so every report and the notebook look the same.
- :func:`show`: refuses a figure with an unlabelled axis (the check runs on the figure objects
  before anything is rendered), then shows it.
- :func:`drafter_colours`: the same colour for a drafter in every figure.
- :func:`verdict`: the sentence a practitioner acts on, for a speed-up with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["table", "format_number", "format_numbers", "shipped_path", "show", "drafter_colours", "verdict",
           "plot_acceptance_by_context", "MISSING", "MAX_COLUMNS"]

#: How a missing value appears in a table (the caption says why).
MISSING = "–"
#: Tables with more columns than this are transposed so that they fit the page.
MAX_COLUMNS = 8


def format_number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (integers as they are, missing as :data:`MISSING`)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value)}"
    if isinstance(value, (float, np.floating)):
        if value == 0:
            return "0"
        return f"{float(value):.{digits}g}"
    return str(value)


def table(
    frame: pd.DataFrame,
    *,
    intervals: Mapping[str, tuple[str, str, str]] | None = None,
    rename: Mapping[str, str] | None = None,
    caption: str | None = None,
    digits: int = 3,
) -> Any:
    """A formatted table (pandas Styler) of ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
    intervals : mapping, optional
        New column name -> (estimate, low, high) columns, shown as ``estimate (low-high)``; the
        three columns are dropped.
    rename : mapping, optional
        Column headers, with units (e.g. ``{"measured_speedup": "measured speed-up (x)"}``).
    caption : str, optional
        Shown above the table; says what a dash means when a value is missing.
    digits : int
        Significant digits of floats.
    """
    shown = frame.copy()
    for name, (estimate, low, high) in (intervals or {}).items():
        shown[name] = [
            MISSING if not np.isfinite(e) else f"{format_number(e, digits)} ({format_number(lo, digits)} to "
                                             f"{format_number(hi, digits)})"
            for e, lo, hi in zip(shown[estimate].astype(float), shown[low].astype(float), shown[high].astype(float),
                                 strict=True)]
        shown = shown.drop(columns=[estimate, low, high])
    shown = shown.rename(columns=dict(rename or {}))
    text = pd.DataFrame({column: format_numbers(shown[column].tolist(), digits) for column in shown.columns},
                        columns=shown.columns)
    if text.shape[1] > MAX_COLUMNS and text.shape[0] <= MAX_COLUMNS:
        text = text.T.reset_index(names="")
    styler = text.style.hide(axis="index").set_table_styles([
        {"selector": "", "props": "border-collapse: collapse; font-size: 0.85em; max-width: 100%;"},
        {"selector": "th", "props": "text-align: left; padding: 2px 8px; border-bottom: 1px solid #999;"},
        {"selector": "td", "props": "padding: 2px 8px; text-align: right;"},
    ])
    if caption:
        styler = styler.set_caption(caption)
    return styler


def show(figure: Any) -> None:
    """Show ``figure`` after checking and tidying its axes (the rules every report's figure keeps).

    - Every axis with data has both axis labels (refused otherwise).
    - Legends sit outside the axes, to their right, so that no legend covers a data mark.
    - Log axes are labelled in plain numbers (0.6, 40), not powers of ten.
    - Axes labelled in draft indices, draft lengths or gamma have whole-number ticks only.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    def plain(value: float, _position: Any) -> str:
        return f"{value:g}"

    for axes in figure.axes:
        if not axes.has_data() or not axes.axison or getattr(axes, "_colorbar", None) is not None:
            continue  # empty panels and colour bars (labelled through their own label) need no axis labels
        if not axes.get_xlabel() or not axes.get_ylabel():
            raise ValueError(f"figure axes {axes.get_title()!r} lacks an axis label")
        for axis, label in ((axes.xaxis, axes.get_xlabel()), (axes.yaxis, axes.get_ylabel())):
            if axis.get_scale() == "log":
                axis.set_major_formatter(FuncFormatter(plain))
                axis.set_minor_formatter(NullFormatter())
            if any(word in label.lower() for word in ("draft index", "draft length", "gamma")) and \
                    axis.get_scale() == "linear" and _numeric_ticks(axis):
                axis.set_major_locator(MaxNLocator(integer=True))
        legend = axes.get_legend()
        if legend is not None:
            handles, labels = axes.get_legend_handles_labels()
            axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                        fontsize=legend.get_texts()[0].get_fontsize() if legend.get_texts() else 8,
                        title=legend.get_title().get_text() or None)
    figure.tight_layout()
    plt.show()


def _numeric_ticks(axis: Any) -> bool:
    """Whether an axis shows numbers (not category names set with ``set_xticks(..., labels)``)."""
    labels = [tick.get_text() for tick in axis.get_ticklabels() if tick.get_text()]
    return all(label.replace("−", "-").replace(".", "", 1).lstrip("-").isdigit() for label in labels)


def format_numbers(values: Sequence[Any], digits: int = 3) -> list[str]:
    """A column's values in one format: whole numbers bare, other floats to the same decimals.

    The decimals give ``digits`` significant digits to the column's largest magnitude, so that
    1.5, 1.6 and 1.76 read 1.50, 1.60 and 1.76, and ESS 959.0 reads 959; text, yes/no and missing
    values as :func:`format_number` writes them.

    Examples
    --------
    >>> format_numbers([1.5, 1.6, 1.76])
    ['1.50', '1.60', '1.76']
    >>> format_numbers([959.0, 1203.0, float("nan")])
    ['959', '1203', '–']
    """
    def finite_number(value: Any) -> bool:
        return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
                and math.isfinite(float(value)))

    numbers = [float(v) for v in values if finite_number(v)]
    if not numbers:
        return [format_number(v, digits) for v in values]
    if all(n == round(n) for n in numbers):
        decimals = 0
    else:
        largest = max(abs(n) for n in numbers)
        decimals = max(0, digits - 1 - math.floor(math.log10(largest)))
    return [f"{float(v):.{decimals}f}" if finite_number(v) else format_number(v, digits) for v in values]


def shipped_path(path: str) -> str:
    """``path`` as given where it exists; else, for a relative path, the same path under the parent folder.

    The shipped sources name the shipped data relative to the repository (``data/traces/reference``);
    ``quarto render reports/`` runs them from ``reports/``, one folder down.
    """
    from pathlib import Path

    if not path or Path(path).exists() or Path(path).is_absolute():
        return path
    parent = Path("..") / path
    return str(parent) if parent.exists() else path


def drafter_colours(drafters: Sequence[str]) -> dict[str, Any]:
    """One colour per drafter (sorted names), the same in every figure of a report."""
    import matplotlib.pyplot as plt

    return {name: plt.cm.tab10(index % 10) for index, name in enumerate(sorted(drafters))}


def verdict(name: str, speedup: float, low: float, high: float, level: float, gamma: int,
            cost_label: str, best_gamma: int | None = None, best_speedup: float | None = None,
            break_even_cost_ratio: float | None = None) -> str:
    """One or two sentences a practitioner can act on (Markdown)."""
    interval = f"{100 * level:.0f}% interval {low:.2f} to {high:.2f}"
    if low >= 1:
        lead = f"**{name} is expected to be {speedup:.2f}x faster than plain decoding** ({interval}) at gamma {gamma}"
    elif high < 1:
        lead = (f"**{name} is expected to be slower than plain decoding: {speedup:.2f}x** ({interval}) at gamma "
                f"{gamma}")
    else:
        lead = (f"**{name} is expected at {speedup:.2f}x, not clearly faster or slower than plain decoding** "
                f"({interval}) at gamma {gamma}")
    text = f"{lead}; costs: {cost_label}."
    if best_gamma is not None and best_speedup is not None and best_gamma != gamma:
        text += f" The best draft length here is gamma {best_gamma} ({best_speedup:.2f}x)."
    if break_even_cost_ratio is not None and speedup < 1:
        text += (f" On hardware where a drafter token costs less than {break_even_cost_ratio:.3f} of a target step "
                 "(Leviathan's c), the same acceptance would pay off.")
    return text


def plot_acceptance_by_context(ax: Any, by_context: Any, colours: Mapping[str, Any] | None = None) -> None:
    """Conditional acceptance against context position (log scale), one line per drafter with its interval.

    ``by_context`` is :func:`specsim.analysis.length_effects.acceptance_by_context`'s table.
    """
    for drafter, group in by_context.groupby("drafter"):
        ax.errorbar(group["context_start"] + 1, group["acceptance"],
                    yerr=np.clip([group["acceptance"] - group["acceptance_low"],
                                  group["acceptance_high"] - group["acceptance"]], 0, None),
                    marker="o", capsize=2, label=drafter, color=(colours or {}).get(drafter))
    ax.set(xscale="log", xlabel="context position of the drafted token (tokens, log scale; bin start)",
           ylabel="conditional acceptance", ylim=(0, 1))
    ax.legend(fontsize=8)

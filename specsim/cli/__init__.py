"""The ``specsim`` command line.

Conventions for every command: bad input exits with code 2 and one line on stderr
(``--debug`` shows the traceback); ``--json`` prints machine-readable results on stdout;
long work shows a progress bar on stderr. Heavy libraries (torch, PyMC) are imported inside
the commands that need them, so ``specsim --help`` stays fast.
"""

from __future__ import annotations

import sys

from specsim.cli import common, data, model, report, simulate  # noqa: F401 - importing a module registers its commands
from specsim.cli.common import _state, app, print_json, print_table
from specsim.errors import InputError

__all__ = ["app", "main", "run", "print_json", "print_table"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``specsim`` console script; returns the exit code."""
    try:  # typer >= 0.20 vendors click as typer._click; older releases use click itself
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as click_errors  # type: ignore[no-redef]

    args = list(sys.argv[1:] if argv is None else argv)
    # --debug is the root's option, but users type it anywhere: taken out wherever it is.
    _state["debug"] = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    try:
        code = app(args=args, prog_name="specsim", standalone_mode=False)
        return int(code) if isinstance(code, int) else 0
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except click_errors.NoArgsIsHelpError as error:
        common.stdout.print(error.format_message(), markup=False, highlight=False)
        return 2
    except click_errors.ClickException as error:
        # Usage errors in one line (click's own output is a usage block plus a hint).
        message = " ".join(error.format_message().split())
        common.stderr.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except InputError as error:
        if _state["debug"]:
            raise
        common.stderr.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        common.stderr.print("interrupted", markup=False)
        return 130
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    raise SystemExit(main())

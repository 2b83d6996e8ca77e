"""PyTensor set-up shared by every model function (imported before PyMC compiles anything).

PyTensor looks for a system BLAS to link its C operations against and, when pip installed it
without one, warns on every process ("could not link to a BLAS installation"). specsim's model
is elementwise over cells (no matrix products): nutpie compiles the log density with Numba and
the remaining C operations need no BLAS, so the BLAS flags are set empty on purpose, unless the
user configured them (``PYTENSOR_FLAGS`` or ``~/.pytensorrc``). Measured on the reference fit:
see the README's performance table.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["configure_pytensor"]


def configure_pytensor() -> None:
    """Set PyTensor's BLAS flags to empty unless the user set them; idempotent."""
    import pytensor

    user_flags = os.environ.get("PYTENSOR_FLAGS", "")
    rc_file = Path(os.environ.get("PYTENSORRC", Path.home() / ".pytensorrc"))
    if "blas__ldflags" in user_flags or "ldflags" in user_flags:
        return
    if rc_file.is_file() and "ldflags" in rc_file.read_text(errors="ignore"):
        return
    pytensor.config.blas__ldflags = ""

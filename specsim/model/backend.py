"""PyTensor set-up shared by every model function (imported before PyMC compiles anything).

PyTensor looks for a system BLAS to link its C operations against and, when pip installed it
without one, warns on every process ("could not link to a BLAS installation"). specsim's model
is elementwise over cells (no matrix products): nutpie compiles the log density with Numba and
the remaining C operations need no BLAS, so the BLAS flags are set empty on purpose, unless the
user configured them (``PYTENSOR_FLAGS`` or ``~/.pytensorrc``). Measured on the reference fit:
see the README's performance table.

Numba caches each compiled piece of a log density on disk, and a whole log density whose every
piece can be cached. The beta-binomial likelihood's gradient calls the
digamma function, which PyTensor 2.38 calls through a pointer to SciPy's Cython function, and a
function that holds a raw pointer cannot be cached: so no log density of specsim's was, and every
fit compiled its largest pieces again. PyTensor 3 looks the pointer up at run time instead
(pymc-devs/pytensor#2212), but PyMC 5 requires PyTensor 2. :func:`configure_pytensor` registers the
same look-up for the digamma function while PyTensor is older than 3: the same SciPy function, so
the same values to the last bit. Measured in the README's performance section.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["configure_pytensor"]


def configure_pytensor() -> None:
    """Set PyTensor's BLAS flags to empty unless the user set them; idempotent."""
    import pytensor

    _register_cacheable_digamma()
    user_flags = os.environ.get("PYTENSOR_FLAGS", "")
    rc_file = Path(os.environ.get("PYTENSORRC", Path.home() / ".pytensorrc"))
    if "blas__ldflags" in user_flags or "ldflags" in user_flags:
        return
    if rc_file.is_file() and "ldflags" in rc_file.read_text(errors="ignore"):
        return
    pytensor.config.blas__ldflags = ""


_DIGAMMA_CAPI = ("scipy.special.cython_special", "__pyx_fuse_1psi")  # double psi(double, int skip_dispatch)


def _register_cacheable_digamma() -> None:
    """Numba's digamma for PyTensor's ``Psi`` through a pointer looked up at run time (so it can be cached).

    Only with PyTensor older than 3, and only for float64 in and out; other dtypes keep PyTensor's own
    (uncached) translation. Idempotent.
    """
    import pytensor

    if int(pytensor.__version__.split(".")[0]) >= 3:
        return
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key
    from pytensor.scalar.math import Psi

    if Psi in numba_funcify_and_cache_key.registry:
        return
    import numba
    import numpy as np
    from numba import types
    from numba.core.extending import get_cython_function_address
    from pytensor.link.numba.cache import _call_cached_ptr
    from pytensor.link.numba.dispatch import basic as numba_basic
    from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
    from pytensor.link.numba.dispatch.scalar import numba_funcify_ScalarOp, scalar_op_cache_key

    digamma_type = types.FunctionType(types.float64(types.float64, types.intc))
    module, name = _DIGAMMA_CAPI

    @numba_basic.numba_njit
    def digamma_pointer():
        with numba.objmode(pointer=types.intp):
            pointer = get_cython_function_address(module, name)
        return pointer

    @register_funcify_and_cache_key(Psi)
    def numba_funcify_psi(op, node, **kwargs):
        dtypes = {variable.type.dtype for variable in (*node.inputs, *node.outputs)}
        if dtypes != {"float64"}:
            return numba_funcify_ScalarOp(op, node=node, **kwargs)

        @numba_basic.numba_njit
        def psi(x):
            digamma = _call_cached_ptr(digamma_pointer, digamma_type, "specsim_scipy_special_psi_float64")
            return digamma(x, np.intc(1))

        return psi, scalar_op_cache_key(op, implementation="scipy.special.cython_special psi via cached pointer")

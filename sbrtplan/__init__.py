"""sbrtplan: automatic stereotactic body radiotherapy (SBRT) treatment planning.

Layers (lower never imports higher)::

    case  <-  beams  <-  io, dose_engine  <-  optimizer  <-  workflow / cli
    case  <-  protocols, evaluation

See README.md for the command line and ``sbrtplan.plan`` for the Python API.
"""

from __future__ import annotations

from ._version import __version__

from .errors import (GeometryError, InputError, OptimizationError, ProtocolError, SbrtplanError,
                     StructureError)

__all__ = ["__version__", "SbrtplanError", "InputError", "StructureError", "ProtocolError",
           "GeometryError", "OptimizationError"]


def __getattr__(name: str):
    # ``sbrtplan.plan`` without importing numba kernels and cvxpy on ``import sbrtplan``.
    if name in ("plan", "Plan", "PlanOptions", "PlanTechnique"):
        from . import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module 'sbrtplan' has no attribute {name!r}")

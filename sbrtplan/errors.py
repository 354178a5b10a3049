"""Project exceptions.

Every error a user can provoke with bad input is a :class:`SbrtplanError`; its
message names the file, structure or parameter and what was expected.  The CLI
prints such errors as one line and exits with status 2, never a traceback.
"""

from __future__ import annotations


class SbrtplanError(Exception):
    """Base class of all errors raised deliberately by sbrtplan."""


class InputError(SbrtplanError):
    """A file, folder or parameter given by the user is invalid."""


class StructureError(SbrtplanError):
    """A structure is missing, empty or inconsistent with the case."""


class ProtocolError(SbrtplanError):
    """A protocol template, scheme or goal is invalid or not applicable."""


class GeometryError(SbrtplanError):
    """A beam, grid or machine geometry is impossible (e.g. a collision)."""


class OptimizationError(SbrtplanError):
    """The optimiser could not produce a plan (infeasible, diverged)."""


class ConsistencyError(InputError):
    """Two inputs that must describe the same patient disagree (frame of reference, patient ID, grids)."""


class ResourceError(SbrtplanError):
    """A computation would need more memory (or another resource) than is available or allowed."""

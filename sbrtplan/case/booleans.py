"""Boolean operations on structures, and the spine "PTV!" (PTV minus cord PRV).

Masks combine exactly, voxel centre by voxel centre (or, and, and-not).  When an
input carries a sub-voxel occupancy (``fraction``, e.g. after resampling to a
dose grid) the result's occupancy follows one rule for all three operations:
inside a voxel the smaller part lies within the larger one (nested partial
volumes).  Union = max(a, b), intersection = min(a, b), difference =
a - min(a, b) = max(a - b, 0); so volumes add up, vol(A - B) + vol(A and B) =
vol(A), and a difference never counts a part of the voxel twice.  The rule is
exact where one surface crosses a voxel (one structure's edge inside the
other's interior) and where one structure's part of the voxel lies inside the
other's (a target inside an organ or the body: External minus GTV, Liver minus
GTV, PTV minus a PRV that reaches into it).  Where both surfaces cross the same
voxel independently, the true difference lies between max(a - b, 0) and
min(a, 1 - b); the rule takes the lower bound.

:func:`subtract` is the one difference of the package: the planner's regions
(PTV!, the hot-spot region "External minus GTV/ITV") and the evaluation's
``minus`` goals (``evaluation.matching.goal_structures``) both use it, so the
optimiser limits the voxels the evaluation measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._log import get_logger
from ..errors import InputError, StructureError
from .margins import expand
from .structure import Structure, StructureRole

log = get_logger(__name__)


def _check_same_grid(op: str, structures) -> None:
    if not structures:
        raise InputError(f"{op}: needs at least one structure")
    g = structures[0].grid
    for s in structures[1:]:
        if not s.grid.same_as(g):
            raise StructureError(f"{op}: structure '{s.name}' is not on the grid of '{structures[0].name}' "
                                 f"(resample it first)")


def _fractions(structures) -> list[np.ndarray] | None:
    if all(s.fraction is None for s in structures):
        return None
    return [s.weights for s in structures]


def union(*structures: Structure, name: str, role: StructureRole | None = None) -> Structure:
    """Voxels in any of ``structures`` (same grid).

    ``role`` defaults to the inputs' common role, else CONTROL.
    """
    _check_same_grid(f"union '{name}'", structures)
    mask = np.logical_or.reduce([s.mask for s in structures])
    fr = _fractions(structures)
    roles = {s.role for s in structures}
    role = role or (roles.pop() if len(roles) == 1 else StructureRole.CONTROL)
    return Structure(name=name, grid=structures[0].grid, mask=mask, role=role,
                     fraction=None if fr is None else np.maximum.reduce(fr),
                     metadata={"operation": "union of " + ", ".join(s.name for s in structures)})


def intersect(a: Structure, b: Structure, name: str, role: StructureRole | None = None) -> Structure:
    """Voxels in both ``a`` and ``b`` (role CONTROL unless given)."""
    _check_same_grid(f"intersect '{name}'", (a, b))
    fr = _fractions((a, b))
    return Structure(name=name, grid=a.grid, mask=a.mask & b.mask, role=role or StructureRole.CONTROL,
                     fraction=None if fr is None else np.minimum(fr[0], fr[1]),
                     metadata={"operation": f"{a.name} and {b.name}"})


def subtract(a: Structure, b: Structure | Sequence[Structure], name: str,
             role: StructureRole | None = None) -> Structure:
    """Voxels of ``a`` outside ``b`` (one structure, or the union of a sequence of them).

    Mask: centres inside ``a`` and inside none of ``b``.  Occupancy (when any input has one):
    ``max(w_a - max_i w_b_i, 0)`` (nested partial volumes, see the module docstring); ``None``
    when every input is a plain mask (the mask is then exact).  An empty sequence gives a copy
    of ``a``.  Role CONTROL unless given.
    """
    parts = [b] if isinstance(b, Structure) else list(b)
    _check_same_grid(f"subtract '{name}'", (a, *parts))
    cut_mask = np.logical_or.reduce([p.mask for p in parts]) if parts else np.zeros(a.grid.shape, bool)
    fr = _fractions((a, *parts))
    fraction = None
    if fr is not None:
        fraction = fr[0].astype(np.float32, copy=True)
        if parts:
            fraction = np.maximum(fraction - np.maximum.reduce(fr[1:]), 0.0, dtype=np.float32)
    label = " + ".join(p.name for p in parts) if parts else "nothing"
    return Structure(name=name, grid=a.grid, mask=a.mask & ~cut_mask, role=role or StructureRole.CONTROL,
                     fraction=fraction, metadata={"operation": f"{a.name} minus {label}"})


def ptv_minus(ptv: Structure, avoid: Structure, name: str = "PTV!", gap_mm: float = 0.0) -> Structure:
    """The spine standard's optimisation target: ``PTV - avoid`` (role CONTROL).

    ``avoid`` is the canal or cord PRV.  The bone-metastasis standard defines
    PTV! as PTV minus the (canal or cord) PRV, optimised on, while the plan is
    approved on the full PTV.  By default the PRV itself is subtracted
    (``gap_mm = 0``): the PRV already carries the CTV->PTV margin, and the
    steep fall-off from the prescription to the cord limit has to happen
    outside it anyway, because the cord limits apply to the PRV.  A positive
    ``gap_mm`` also removes the PTV voxels within ``gap_mm`` of the PRV,
    leaving the optimiser a band for the gradient (e.g. 2 mm, one dose
    voxel) at the price of a PTV! that under-represents the PTV near the cord;
    coverage there is still reported on the full PTV.

    An empty ``avoid`` intersection is legitimate (PTV away from the cord):
    PTV! is then a copy of the PTV.
    """
    if not np.isfinite(gap_mm) or gap_mm < 0:
        raise InputError(f"ptv_minus: gap_mm must be a non-negative number in mm, got {gap_mm!r}")
    _check_same_grid(f"ptv_minus '{name}'", (ptv, avoid))
    cut = avoid
    if gap_mm > 0 and avoid.mask.any():
        cut = expand(avoid, gap_mm, name=f"{avoid.name}+{gap_mm:g}mm")
    out = subtract(ptv, cut, name=name, role=StructureRole.CONTROL)
    out.metadata.update({"derived_from": ptv.name, "avoid": avoid.name, "gap_mm": float(gap_mm),
                         "operation": f"{ptv.name} minus {avoid.name}" + (f" + {gap_mm:g} mm" if gap_mm else "")})
    if not out.mask.any():
        log.warning("'%s' (%s minus %s) is empty", name, ptv.name, avoid.name)
    return out

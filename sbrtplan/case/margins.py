"""Margins in true millimetres: expansions, contractions, PRVs and rings.

Every operation measures Euclidean distances from the structure's surface in
mm (``scipy.ndimage.distance_transform_edt`` with the grid spacing, plus a
sub-voxel correction described in :mod:`sbrtplan.case.distance`), never a
number of voxels, so the same margin gives the same physical volume on any
grid, anisotropic ones included.  The result is a new :class:`Structure` on
the same grid whose ``mask`` holds the voxel centres inside the new surface;
its ``fraction`` is None (the mask is the structure).
"""

from __future__ import annotations

import numpy as np

from .._log import get_logger
from ..errors import InputError, StructureError
from .distance import _margin_vector_zyx, inside_depth_mm, outside_distance_mm
from .structure import Structure, StructureRole

log = get_logger(__name__)

# Distances equal to the margin (up to float32 rounding) are inside.
_TIE_TOLERANCE = 1e-5


def _require_nonempty(structure: Structure, op: str) -> None:
    if not structure.mask.any():
        raise StructureError(f"{op}: structure '{structure.name}' is empty")


def _format_mm(value: float) -> str:
    return f"{value:g}"


def expand(structure: Structure, margin_mm, name: str | None = None,
           role: StructureRole | None = None) -> Structure:
    """Grow ``structure`` by ``margin_mm`` (true Euclidean distance).

    Parameters
    ----------
    structure : Structure
    margin_mm : float or (mx, my, mz)
        Margin in mm, isotropic or per patient axis (x = left-right, y =
        anterior-posterior, z = superior-inferior).  An anisotropic margin
        grows the structure by an ellipsoid of those semi-axes (Minkowski
        sum), e.g. ``(2, 2, 5)`` for an ITV with 5 mm breathing motion.
    name : str, optional
        Default ``"<name>+<margin>mm"``.
    role : StructureRole, optional
        Default: the role of ``structure``.

    Returns
    -------
    Structure
        Voxels whose centre lies within the margin of the surface, plus the
        original voxels.
    """
    _require_nonempty(structure, "expand")
    m = _margin_vector_zyx(margin_mm, f"expand '{structure.name}'")
    label = _format_mm(m[0]) if np.all(m == m[0]) else "x".join(_format_mm(v) for v in m[::-1])
    name = name or f"{structure.name}+{label}mm"
    if not np.any(m > 0):
        return structure.copy(name=name, role=role or structure.role)
    d, sl = outside_distance_mm(structure, m, reach=1.0)
    mask = structure.mask.copy()
    mask[sl] |= d <= 1.0 + _TIE_TOLERANCE
    return Structure(name=name, grid=structure.grid, mask=mask, role=role or structure.role,
                     metadata={"derived_from": structure.name, "operation": f"expand {label} mm"})


def contract(structure: Structure, margin_mm: float, name: str | None = None,
             role: StructureRole | None = None) -> Structure:
    """Shrink ``structure`` by ``margin_mm`` (true Euclidean distance, isotropic).

    Keeps the voxels whose centre lies deeper than ``margin_mm`` below the
    surface.  The edge of the grid is not a surface: a body cut by the end of
    the CT is not eroded from the cut.  The result may be empty (a margin
    larger than the structure's half-thickness); that is logged, not raised.
    """
    _require_nonempty(structure, "contract")
    m = float(margin_mm)
    if not np.isfinite(m) or m < 0:
        raise InputError(f"contract '{structure.name}': margin_mm must be a non-negative number in mm, "
                         f"got {margin_mm!r}")
    name = name or f"{structure.name}-{_format_mm(m)}mm"
    if m == 0:
        return structure.copy(name=name, role=role or structure.role)
    depth, sl = inside_depth_mm(structure)
    mask = np.zeros_like(structure.mask)
    mask[sl] = structure.mask[sl] & (depth > m + _TIE_TOLERANCE)
    out = Structure(name=name, grid=structure.grid, mask=mask, role=role or structure.role,
                    metadata={"derived_from": structure.name, "operation": f"contract {_format_mm(m)} mm"})
    if not mask.any():
        log.warning("contracting '%s' by %g mm leaves nothing", structure.name, m)
    return out


def prv_name(organ_name: str, margin_mm: float) -> str:
    """TG-263 PRV name: the organ's name, ``_PRV`` and the margin in mm on two
    digits (``SpinalCord_PRV02``; ``Esophagus_PRV2.5`` for a fractional margin)."""
    m = float(margin_mm)
    if abs(m - round(m)) < 1e-6:
        return f"{organ_name}_PRV{int(round(m)):02d}"
    return f"{organ_name}_PRV{m:g}"


def prv(organ: Structure, margin_mm: float, name: str | None = None) -> Structure:
    """Planning organ-at-risk volume: ``organ`` grown by ``margin_mm``.

    Named per TG-263 (``SpinalCord_PRV02`` for a 2 mm cord PRV) with role
    ``PRV``.  The bone-metastasis standard gives neural structures and the
    oesophagus a PRV margin equal to the CTV->PTV margin.
    """
    m = float(margin_mm)
    if not np.isfinite(m) or m < 0:
        raise InputError(f"PRV of '{organ.name}': margin_mm must be a non-negative number in mm, got {margin_mm!r}")
    out = expand(organ, m, name=name or prv_name(organ.name, m), role=StructureRole.PRV)
    out.metadata["prv_margin_mm"] = m
    return out


def ring(target: Structure, inner_mm: float, outer_mm: float, within: Structure | None = None,
         name: str | None = None) -> Structure:
    """Shell of voxels whose distance from the target surface is in [inner, outer).

    Distances are measured from the target itself (not from an expansion of
    it), so a ring ``(5, 20)`` holds the voxels between 5 mm and 20 mm from
    the target.  Target voxels are never part of a ring.

    Parameters
    ----------
    target : Structure
    inner_mm, outer_mm : float
        0 <= inner_mm < outer_mm.
    within : Structure, optional
        Keep only voxels of this structure (usually the External), on the same grid.
    name : str, optional
        Default ``"zRing_<target>_<inner>-<outer>mm"`` (TG-263 puts a ``z``
        in front of non-clinical optimisation structures).

    Returns
    -------
    Structure with role CONTROL.
    """
    _require_nonempty(target, "ring")
    inner, outer = float(inner_mm), float(outer_mm)
    if not (np.isfinite(inner) and np.isfinite(outer) and 0 <= inner < outer):
        raise InputError(f"ring around '{target.name}': need 0 <= inner_mm < outer_mm, got {inner_mm!r}, {outer_mm!r}")
    if within is not None and not within.grid.same_as(target.grid):
        raise StructureError(f"ring around '{target.name}': structure '{within.name}' is on another grid")
    name = name or f"zRing_{target.name}_{_format_mm(inner)}-{_format_mm(outer)}mm"
    d, sl = outside_distance_mm(target, np.ones(3), reach=outer)
    mask = np.zeros_like(target.mask)
    mask[sl] = (~target.mask[sl]) & (d >= inner - _TIE_TOLERANCE) & (d < outer - _TIE_TOLERANCE)
    if within is not None:
        mask &= within.mask
    return Structure(name=name, grid=target.grid, mask=mask, role=StructureRole.CONTROL,
                     metadata={"derived_from": target.name, "operation": f"ring {inner:g}-{outer:g} mm",
                               "band_mm": (float(inner), float(outer))})

"""Which dose-grid voxels the optimiser sees, and the structures restricted to them.

The final dose is always computed on every body voxel of the dose grid; the
optimiser only needs enough voxels to control every goal.  Close to the
target (where the dose gradient is steepest and coverage and conformity are
decided) and in organs at risk near the target, all voxels of the dose grid
are kept; in the shell that decides R50% and D2cm (up to 30 mm) and in the
rest of the organs one voxel in 2^3; beyond, where the low-dose bath varies
slowly, one in 4^3.  Each kept voxel carries the weight of the voxels it
stands for.  This is the same idea as matRad's and PortPy's voxel
sampling, with the weights kept so that mean doses and DVH volumes stay
unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..case import Case, Structure, StructureRole, distance_map_mm
from .._log import get_logger
from ..optimizer import VoxelRegion

log = get_logger(__name__)


@dataclass
class OptimizationVoxels:
    """Flat voxel indices (sorted, C order on the case grid) and their sampling weights."""

    indices: np.ndarray
    weights: np.ndarray
    near_mm: float
    stride: int

    @property
    def n(self) -> int:
        return int(self.indices.size)

    def rows_of(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the voxels ``flat`` that are in the set, and which of ``flat`` they are."""
        pos = np.searchsorted(self.indices, flat)
        pos = np.minimum(pos, max(self.indices.size - 1, 0))
        hit = self.indices[pos] == flat
        return pos[hit], np.nonzero(hit)[0]


def optimization_voxels(case: Case, target: Structure, organs: list[Structure], *, near_mm: float = 8.0,
                        mid_mm: float = 30.0, organ_mm: float = 20.0,
                        organ_far_mm: float = 60.0) -> OptimizationVoxels:
    """Select the voxels of the optimisation problem (three sampling levels).

    Parameters
    ----------
    case : Case
        On the dose grid.
    target : Structure
        The PTV (distances are measured from its surface).
    organs : list of Structure
        Organs at risk and PRVs: every voxel within ``organ_mm`` of the PTV is
        kept, up to ``organ_far_mm`` one in 2^3, beyond one in 4^3.
    near_mm : float
        Every body voxel within this distance of the PTV is kept (the
        prescription isodose and the steepest gradient).
    mid_mm : float
        Up to this distance (the 50 % isodose and the D2cm shell), one voxel
        in 2^3; beyond, one in 4^3.

    Returns
    -------
    OptimizationVoxels
    """
    body = case.body.mask if case.body is not None else (case.density > 0.05)
    dist = distance_map_mm(target, max_distance_mm=max(mid_mm, organ_far_mm) + 5.0)
    full = body & (dist <= near_mm)
    full |= target.weights > 0
    any_organ = np.zeros_like(body)
    for o in organs:
        occ = o.weights > 0
        full |= occ & (dist <= organ_mm)
        any_organ |= occ & (dist <= organ_far_mm)
    lattice2 = np.zeros_like(body)
    lattice2[::2, ::2, ::2] = True
    lattice4 = np.zeros_like(body)
    lattice4[::4, ::4, ::4] = True
    mid = body & ~full & lattice2 & ((dist <= mid_mm) | any_organ)
    far = body & ~full & ~mid & lattice4 & ~((dist <= mid_mm) | any_organ)
    idx = np.concatenate([np.flatnonzero(full), np.flatnonzero(mid), np.flatnonzero(far)])
    w = np.concatenate([np.ones(int(full.sum())), np.full(int(mid.sum()), 8.0), np.full(int(far.sum()), 64.0)])
    order = np.argsort(idx, kind="stable")
    log.info("optimisation voxels: %d full, %d at 1/8, %d at 1/64", int(full.sum()), int(mid.sum()), int(far.sum()))
    return OptimizationVoxels(idx[order].astype(np.int64), w[order], near_mm, 2)


def region_for(structure: Structure, voxels: OptimizationVoxels) -> VoxelRegion | None:
    """``structure`` restricted to the optimisation voxels (None when none of it is there).

    Row weights are the sub-voxel occupancy times the sampling weight, so that
    the region's volume and mean dose stay those of the full structure.
    """
    flat = np.flatnonzero(structure.weights.ravel() > 0)
    if flat.size == 0:
        return None
    rows, which = voxels.rows_of(flat)
    if rows.size == 0:
        return None
    occ = structure.weights.ravel()[flat[which]]
    w = occ * voxels.weights[rows]
    keep = w > 0
    return VoxelRegion(name=structure.name, rows=rows[keep].astype(np.int64), weights=w[keep],
                       volume_cc=float(structure.volume_cc))


def organ_structures(case: Case) -> list[Structure]:
    """Organs at risk and PRVs of the case (what must be kept at full resolution)."""
    return [s for s in case.structures.values()
            if s.role in (StructureRole.OAR, StructureRole.PRV) and s.mask.any()]

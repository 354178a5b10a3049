"""Which dose-grid voxels the optimiser sees, and the structures restricted to them.

The final dose is always computed on every body voxel of the dose grid; the
optimiser only needs enough voxels to control every goal.  Close to the
target (where the dose gradient is steep and the coverage, conformity and
R50% are decided) and inside every organ at risk near the target, all voxels
of the 2 mm grid are kept.  Far from the target, the low-dose bath varies
slowly, so one voxel in ``stride**3`` is kept and carries the weight of the
voxels it stands for.  This is the same idea as matRad's and PortPy's voxel
sampling, with the weights kept so that mean doses and DVH volumes stay
unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..case import Case, Structure, StructureRole, distance_map_mm
from ..optimizer import VoxelRegion


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


def optimization_voxels(case: Case, target: Structure, organs: list[Structure], *, near_mm: float = 30.0,
                        organ_mm: float = 60.0, stride: int = 2) -> OptimizationVoxels:
    """Select the voxels of the optimisation problem.

    Parameters
    ----------
    case : Case
        On the dose grid.
    target : Structure
        The PTV (distances are measured from its surface).
    organs : list of Structure
        Organs at risk and PRVs: kept at full resolution within ``organ_mm`` of the PTV.
    near_mm : float
        Every body voxel within this distance of the PTV is kept.
    organ_mm : float
    stride : int
        Far voxels are sampled every ``stride`` voxels along each axis.

    Returns
    -------
    OptimizationVoxels
    """
    body = case.body.mask if case.body is not None else (case.density > 0.05)
    dist = distance_map_mm(target, max_distance_mm=max(near_mm, organ_mm) + 5.0)
    full = body & (dist <= near_mm)
    full |= target.mask
    for o in organs:
        full |= o.mask & (dist <= organ_mm)
    sampled = np.zeros_like(body)
    sampled[::stride, ::stride, ::stride] = True
    far = body & ~full & sampled
    idx = np.concatenate([np.flatnonzero(full), np.flatnonzero(far)])
    w = np.concatenate([np.ones(int(full.sum())), np.full(int(far.sum()), float(stride ** 3))])
    order = np.argsort(idx, kind="stable")
    return OptimizationVoxels(idx[order].astype(np.int64), w[order], near_mm, stride)


def region_for(structure: Structure, voxels: OptimizationVoxels) -> VoxelRegion | None:
    """``structure`` restricted to the optimisation voxels (None when none of it is there).

    Row weights are the sub-voxel occupancy times the sampling weight, so that
    the region's volume and mean dose stay those of the full structure.
    """
    flat = structure.flat_indices()
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

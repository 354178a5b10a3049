"""The optimisation problem of one plan: voxels, regions and prioritised stages.

Shared by the IMRT and VMAT paths: both optimise the same goal model on the
same voxels; they differ only in the columns of the dose matrix (beamlets of
static beams, or apertures of arc control points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._log import get_logger
from ..case import Case
from ..optimizer import VoxelRegion, stages_from_goals
from .goals import ResolvedGoals
from .structures import PlanningStructures
from .voxels import OptimizationVoxels, organ_structures, optimization_voxels, region_for

log = get_logger(__name__)


@dataclass
class PlanProblem:
    """Everything the optimiser needs except the dose matrix."""

    voxels: OptimizationVoxels
    stages: list
    target: VoxelRegion
    regions: dict[str, VoxelRegion]
    prescription_gy: float
    n_fractions: int
    goal_regions: list = None  # (Goal, VoxelRegion | None) pairs


def build_problem(case: Case, ps: PlanningStructures, resolved: ResolvedGoals, prescription_gy: float,
                  n_fractions: int) -> PlanProblem:
    """Voxels, regions and stages of the plan's optimisation problem."""
    voxels = optimization_voxels(case, ps.target, organ_structures(case))
    log.info("optimisation voxels: %d (all within %.0f mm of %s)",
             voxels.n, voxels.near_mm, ps.target.name)
    regions: dict[str, VoxelRegion] = {}

    def reg(structure):
        if structure is None:
            return None
        if structure.name not in regions:
            r = region_for(structure, voxels)
            if r is None:
                return None
            regions[structure.name] = r
        return regions[structure.name]

    pairs = [(g, reg(s)) for g, s in resolved.pairs]
    target = reg(ps.optimization_target)
    rings = []
    for r in ps.rings:
        rr = reg(r)
        if rr is not None:
            inner, outer = r.metadata["band_mm"]
            rings.append((rr, float(inner), float(outer)))
    stages = stages_from_goals(pairs, prescription_gy=prescription_gy, n_fractions=n_fractions, target=target,
                               boost=reg(ps.boost), hotspot_free=reg(ps.hotspot_free), rings=rings,
                               body=reg(case.body))
    return PlanProblem(voxels, stages, target, regions, prescription_gy, n_fractions, pairs)

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
from ..optimizer import VoxelRegion
from .goal_stages import stages_from_goals
from .goals import ResolvedGoals
from .recipe import PlanningRecipe, default_recipe
from .structures import PlanningStructures
from .targets import merge_stages, part_goal_pairs
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
    #: the tuning values every optimisation of this problem uses (``workflow.recipe``)
    recipe: PlanningRecipe = None
    #: a plan of several targets: one problem per target (its region, prescription and goals) on the
    #: same voxels and regions, in the order of ``PlanningStructures.parts`` (``workflow.targets``)
    parts: list = None

    def __post_init__(self) -> None:
        if self.recipe is None:
            self.recipe = default_recipe()


def build_problem(case: Case, ps: PlanningStructures, resolved: ResolvedGoals, prescription_gy: float,
                  n_fractions: int, recipe: PlanningRecipe | None = None) -> PlanProblem:
    """Voxels, regions and stages of the plan's optimisation problem (``recipe``: default the shipped one)."""
    recipe = recipe or default_recipe()
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

    def stages_of(part, pairs, rx, body):
        rings = []
        for r in part.rings:
            rr = reg(r)
            if rr is not None:
                inner, outer = r.metadata["band_mm"]
                rings.append((rr, float(inner), float(outer)))
        return stages_from_goals(pairs, prescription_gy=rx, n_fractions=n_fractions,
                                 target=reg(part.optimization_target), boost=reg(part.boost),
                                 hotspot_free=reg(part.hotspot_free), rings=rings, body=body, recipe=recipe)

    target = reg(ps.optimization_target)
    if ps.parts:
        # several targets: each its own goals, prescription and stages on the shared voxels
        subs, stage_lists = [], []
        for i, part in enumerate(ps.parts):
            sp = part_goal_pairs(resolved.pairs, ps.protocol, part, primary=i == 0)
            pairs_i = [(g, reg(s)) for g, s in sp]
            stage_lists.append(stages_of(part, pairs_i, part.rx_gy, reg(case.body) if i == 0 else None))
            subs.append(PlanProblem(voxels, stage_lists[-1], reg(part.optimization_target), regions, part.rx_gy,
                                    n_fractions, pairs_i, recipe))
        pairs = [pr for sub in subs for pr in sub.goal_regions]
        return PlanProblem(voxels, merge_stages(stage_lists), target, regions, prescription_gy, n_fractions, pairs,
                           recipe, parts=subs)
    pairs = [(g, reg(s)) for g, s in resolved.pairs]
    stages = stages_of(ps, pairs, prescription_gy, reg(case.body))
    return PlanProblem(voxels, stages, target, regions, prescription_gy, n_fractions, pairs, recipe)


def dose_difference_pct_rx(dose_rows: np.ndarray, model_rows: np.ndarray, problem: PlanProblem) -> dict:
    """``dose_rows - model_rows`` at the optimisation voxels where either exceeds 10 % Rx, in % Rx.

    Mean and 95th percentile of the absolute difference there, and the mean difference over the
    target rows (the optimiser's dose against the delivered one, or two dose models).
    """
    rx = problem.prescription_gy
    d = np.asarray(dose_rows, float)
    m = np.asarray(model_rows, float)
    sel = np.maximum(d, m) > 0.1 * rx
    if not sel.any():
        return {}
    diff = (d[sel] - m[sel]) / rx * 100.0
    t = problem.target.rows
    return {"mean_abs_diff_pct_rx": round(float(np.mean(np.abs(diff))), 2),
            "p95_abs_diff_pct_rx": round(float(np.percentile(np.abs(diff), 95)), 2),
            "target_mean_diff_pct_rx": round(float(np.mean((d[t] - m[t]) / rx * 100.0)), 2)}

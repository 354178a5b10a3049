"""The plan's goals as weighted penalties (the fast optimisation path), with their exact limits.

Priorities become weights and adaptive limits:

* hard organ limits (``Priority.HARD_OAR``, mandatory): over-dose penalty at
  95 % of the limit on the goal's structure, leaving free the hottest volume
  the limit allows (``D_xcc < L``: 80 % of x cc), measured exactly after every
  round and re-weighted until met (:func:`optimizer.penalty_solve`);
* target minimum and coverage: under-dose penalty below Rx on the
  optimisation target (PTV, or PTV! for the spine), the heaviest weight;
* target maximum and hot spots: over-dose above 112 % Rx in the target
  outside the GTV/ITV, above 135 % Rx in the GTV/ITV (PTV Dmax <= 140 %);
* conformity and gradient (CI, R50%, D2cm): a normal-tissue fall-off outside
  the PTV, ``optimizer.ring_dose_fraction`` of Rx at each distance from its
  surface (Rx at the surface, half of Rx where the RTOG R50% limit puts the
  50 % isodose, below the D2cm limit from 2 cm on);
* optional (non-mandatory) organ limits: light over-dose penalties.
"""

from __future__ import annotations

import numpy as np

from ..case import distance_map_mm
from ..optimizer import ring_dose_fraction
from ..optimizer.penalty import Limit, Penalty
from ..protocols.model import Metric, Priority
from .problem import PlanProblem
from .structures import PlanningStructures

# Weights are per unit of relative volume of each penalty's region; the fall-off term is scaled by
# the volume of its region relative to the target's, so that one voxel outside the PTV counts
# W_FALLOFF / W_TARGET_UNDER as much as one voxel of the target.
W_TARGET_UNDER = 100.0
W_TARGET_HOT = 40.0
W_BOOST_HOT = 10.0
W_FALLOFF = 5.0
W_HARD = 10.0
W_OPTIONAL = 1.0


def _rows_minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.setdiff1d(a, b, assume_unique=False)


def plan_penalties(ps: PlanningStructures, problem: PlanProblem) -> tuple[list[Penalty], list[Limit]]:
    """Penalties and exact limits of a plan's optimisation problem (see the module docstring)."""
    rx = problem.prescription_gy
    vox = problem.voxels
    T = problem.target
    pens: list[Penalty] = [Penalty("target under Rx", T.rows, rx, W_TARGET_UNDER, over=False, row_weights=T.weights)]
    boost_rows = np.array([], dtype=np.int64)
    if ps.boost is not None and ps.boost.name in problem.regions:
        b = problem.regions[ps.boost.name]
        boost_rows = b.rows
        pens.append(Penalty("boost above 135% Rx", b.rows, 1.35 * rx, W_BOOST_HOT, over=True, row_weights=b.weights))
    hot = _rows_minus(T.rows, boost_rows)
    pens.append(Penalty("target outside GTV above 112% Rx", hot, 1.12 * rx, W_TARGET_HOT, over=True,
                        row_weights=vox.weights[hot]))
    # normal-tissue fall-off outside the PTV
    dist = distance_map_mm(ps.target, max_distance_mm=250.0).ravel()[vox.indices]
    outside = np.flatnonzero(~ps.target.mask.ravel()[vox.indices])
    d_mm = np.minimum(dist[outside], 250.0)
    grid_mm = np.round(d_mm).astype(int)
    table = np.array([ring_dose_fraction(float(m), ptv_volume_cc=ps.target.volume_cc)
                      for m in range(int(grid_mm.max(initial=0)) + 1)])
    # a little above the profile, so that it shapes the fall-off without fighting the coverage
    ref = np.minimum(1.05, 1.1 * table[grid_mm]) * rx
    volume_ratio = float(vox.weights[outside].sum()) / max(float(T.weights.sum()), 1e-9)
    pens.append(Penalty("normal-tissue fall-off", outside, ref, W_FALLOFF * volume_ratio, over=True,
                        row_weights=vox.weights[outside]))
    limits: list[Limit] = []
    for goal, region in problem.goal_regions:
        if region is None or not goal.comparator.is_upper_bound:
            continue
        if goal.metric not in (Metric.DMAX, Metric.D_CC, Metric.D_PCT, Metric.DMEAN):
            continue
        if goal.structure in ("ptv", "gtv", "itv", "ctv", "body"):
            continue  # target bounds and hot spots are shaped above
        L = goal.limit_in_gy(rx)
        hard = goal.mandatory and goal.priority is Priority.HARD_OAR
        p = Penalty(f"{region.name} {goal.metric_label}", region.rows, 0.95 * L if hard else L,
                    W_HARD if hard else W_OPTIONAL, over=True, row_weights=region.weights)
        pens.append(p)
        if not hard:
            continue
        vol = max(region.volume_cc, 1e-6)
        if goal.metric is Metric.DMAX:
            frac = min(0.035 / vol, 1.0)          # ICRU 91 near-maximum
        elif goal.metric is Metric.D_CC:
            frac = min(goal.parameter.value / vol, 1.0)
        elif goal.metric is Metric.D_PCT:
            frac = goal.parameter.value / 100.0
        else:
            limits.append(Limit(p, L, mean=True, label=p.name))
            continue
        # the volume the limit allows above L stays free (less a margin, so the limit holds exactly)
        p.allowed_fraction = 0.8 * frac
        limits.append(Limit(p, L, frac, label=p.name))
    return pens, limits

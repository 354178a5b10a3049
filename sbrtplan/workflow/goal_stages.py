"""Optimisation stages from protocol goals.

How each goal becomes a convex term (``L`` the limit in Gy, ``x`` the goal's parameter):

==========================================  ==================================================
goal                                        term
==========================================  ==================================================
Dmax <= L                                   MaxDose(L) at every row
D_x cc <= L, D_x % <= L                     UpperDVH(L, x): mean of the hottest x <= L
V_x Gy <= v (cc or %)                       UpperDVH(x Gy, v): mean of the hottest v <= x Gy
Dmean <= L                                  MeanDose(L)
volume below x Gy >= V cc (spared volume)   UpperDVH(x Gy, structure volume - V cc)
D_v % >= L (GTV D98 >= 21 Gy)               LowerDVH(L, v): mean of the coldest (100-v) % >= L
coverage V_x%Rx >= v %                      LowerDVH(x % Rx, v) on the optimisation target
==========================================  ==================================================

Every surrogate is conservative: meeting it meets the goal (a tail mean is
beyond the quantile it bounds).

Stages (the priorities of :class:`sbrtplan.protocols.Priority`):

1. **coverage**: minimise the target underdose (mean squared dose below Rx)
   plus the coverage surrogates, subject to every hard organ limit
   (``Priority.HARD_OAR``, relaxed last: ``relax_cost`` 1000) and the target
   bounds (PTV Dmax <= 140 %, GTV D98 minimum; relaxed first: ``relax_cost`` 1).
   Where the organ limits prevent full coverage (spine cord), the optimum is
   the best coverage they allow: the protocol's fallback (V100 >= 90 %) is then
   checked on the result; the GTV minimum stays a constraint.
2. **conformity**: keep stage 1 within the slack (plus an RMS underdose
   allowance of 0.5 % Rx) and minimise the dose in rings around the target above
   a fall-off profile (:func:`ring_dose_fraction`: Rx at the PTV surface, half
   of Rx at the distance where the 50 % isodose volume equals the RTOG R50 %
   limit, below the D2cm limit at 2 cm), hot spots outside the GTV/ITV
   (mean squared dose above 105 % Rx, and the protocol's D0.035cc < 110 %), and
   the non-mandatory organ limits.
3. **alara**: keep stages 1 and 2 and minimise the mean dose of every organ
   named by a goal and of the body (and the fluence roughness when neighbour
   pairs are given).
"""

from __future__ import annotations

import math

import numpy as np

from .._log import get_logger
from ..errors import ProtocolError
from ..protocols import Comparator, Goal, Metric, Priority, Stage, rtog_goal, rtog_limits
from .recipe import PlanningRecipe, StageRecipe, default_recipe
from ..optimizer import (KeepMode, LinearMean, LowerDVH, MaxDose, MeanDose, OptimizationStage, QuadOverdose,
                         QuadUnderdose, Smoothness, Term, UpperDVH, VoxelRegion)

log = get_logger(__name__)

# The relaxation costs (organ limits 1000, target bounds 1), the hot-spot reference (105 % Rx), the
# allowance with which a stage is kept, the fluence-smoothness and body ALARA weights are the planning
# recipe's ``stages`` section (``workflow.recipe``, ``recipes/default.yaml``).


def ring_dose_fraction(inner_mm: float, *, ptv_volume_cc: float, r50: float | None = None,
                       d2cm_pct: float | None = None) -> float:
    """Allowed dose (fraction of Rx) at ``inner_mm`` from the PTV surface.

    An exponential fall-off that halves at the distance ``r50_mm`` at which a
    sphere of the PTV's volume, expanded by it, holds ``0.9 R50`` times the PTV
    volume (the 50 % isodose then encloses less than the RTOG limit), capped at
    95 % of the D2cm limit from 20 mm on, floored at 5 % Rx.
    """
    if not (ptv_volume_cc > 0):
        raise ProtocolError(f"ring_dose_fraction: PTV volume must be > 0 cc, got {ptv_volume_cc!r}")
    lim = rtog_limits(ptv_volume_cc)
    r50 = float(r50 if r50 is not None else lim.r50_none)
    d2cm = float(d2cm_pct if d2cm_pct is not None else lim.d2cm_none_pct) / 100.0
    radius_mm = 10.0 * (3.0 * ptv_volume_cc / (4.0 * math.pi)) ** (1.0 / 3.0)
    r50_mm = radius_mm * (max(0.9 * r50, 1.05) ** (1.0 / 3.0) - 1.0)
    r50_mm = max(r50_mm, 3.0)
    f = math.exp(-math.log(2.0) * max(inner_mm, 0.0) / r50_mm)
    if inner_mm >= 20.0:
        f = min(f, 0.95 * d2cm)
    return float(min(max(f, 0.05), 1.0))


def goal_term(goal: Goal, region: VoxelRegion, prescription_gy: float,
              costs: StageRecipe | None = None) -> Term | None:
    """The convex surrogate of one dose-volume goal (None for plan indices and reports).

    ``costs``: the recipe's relaxation costs (default: the shipped recipe's).
    """
    costs = costs or default_recipe().stages
    m = goal.metric
    rx = prescription_gy
    upper = goal.comparator.is_upper_bound
    if m.is_plan_index or m is Metric.BED_RX or goal.stage is Stage.REPORT:
        return None
    cost = costs.hard_relax_cost if goal.priority is Priority.HARD_OAR else costs.target_relax_cost
    vol = region.volume_cc

    def lower_pct(v_pct: float) -> float:
        return float(min(max(v_pct, 0.0), 99.9))

    if m is Metric.DMAX:
        L = goal.limit_in_gy(rx)
        return MaxDose(region, L, relax_cost=cost) if upper else LowerDVH(region, L, 99.9, relax_cost=cost)
    if m is Metric.D_CC:
        L, x = goal.limit_in_gy(rx), goal.parameter.value
        if upper:
            return UpperDVH(region, L, volume_cc=x, relax_cost=cost)
        return LowerDVH(region, L, lower_pct(100.0 * x / vol), relax_cost=cost)
    if m is Metric.D_PCT:
        L, x = goal.limit_in_gy(rx), goal.parameter.value
        if upper:
            return UpperDVH(region, L, volume_pct=max(x, 1e-3), relax_cost=cost)
        return LowerDVH(region, L, lower_pct(x), relax_cost=cost)
    if m in (Metric.V_GY_CC, Metric.V_GY_PCT):
        dose = goal.parameter_in_gy(rx)
        v = goal.limit.value
        pct = v if m is Metric.V_GY_PCT else 100.0 * v / vol
        if upper:
            if m is Metric.V_GY_CC:
                return UpperDVH(region, dose, volume_cc=max(v, 1e-3), relax_cost=cost)
            return UpperDVH(region, dose, volume_pct=max(v, 1e-3), relax_cost=cost)
        return LowerDVH(region, dose, lower_pct(pct), relax_cost=cost)
    if m is Metric.DMEAN:
        L = goal.limit_in_gy(rx)
        return MeanDose(region, L, relax_cost=cost) if upper else LowerDVH(region, L, 0.0, relax_cost=cost)
    if m is Metric.CRITICAL_VOLUME_SPARED:
        dose = goal.parameter_in_gy(rx)
        spared = goal.limit.value
        above = vol - spared
        if above <= 1e-3:
            log.warning("goal '%s': %s is %.1f cc, not more than the %.1f cc to spare; the whole structure is "
                        "kept below %.4g Gy instead", goal.label, region.name, vol, spared, dose)
            return MaxDose(region, dose, relax_cost=cost)
        return UpperDVH(region, dose, volume_cc=above, relax_cost=cost)
    if m is Metric.COVERAGE:
        return LowerDVH(region, goal.parameter_in_gy(rx), lower_pct(goal.limit.value), relax_cost=cost)
    log.warning("goal '%s': metric %s has no optimisation term; only evaluated", goal.label, m.value)
    return None


def stages_from_goals(goals: list[tuple[Goal, VoxelRegion | None]], *, prescription_gy: float, n_fractions: int,
                      target: VoxelRegion, boost: VoxelRegion | None, hotspot_free: VoxelRegion | None,
                      rings: list[tuple[VoxelRegion, float, float]], body: VoxelRegion | None,
                      smoothness_pairs: np.ndarray | None = None,
                      recipe: PlanningRecipe | None = None) -> list[OptimizationStage]:
    """The three prioritised stages (coverage, conformity, ALARA) for a protocol's goals.

    Parameters
    ----------
    goals : list of (Goal, VoxelRegion or None)
        Goals resolved for the scheme, each with the region it is evaluated on
        (``None``: plan indices, or a structure the case lacks: skipped).
    prescription_gy, n_fractions : float, int
        Total prescription dose and number of fractions (limits are totals).
    target : VoxelRegion
        Optimisation target (PTV, or PTV minus cord PRV for spine).
    boost : VoxelRegion, optional
        GTV/ITV: hot spots are allowed only there.
    hotspot_free : VoxelRegion, optional
        Body minus GTV/ITV: dose above ~105 % Rx is penalised there.
    rings : list of (VoxelRegion, inner_mm, outer_mm)
        Shells around the PTV for conformity and gradient.
    body : VoxelRegion, optional
    smoothness_pairs : ndarray (k, 2), optional
        Neighbouring beamlet pairs for the fluence smoothness term.
    recipe : PlanningRecipe, optional
        Relaxation costs and hot-spot reference (``stages`` section); default: the shipped recipe.

    Returns
    -------
    list of OptimizationStage
    """
    costs = (recipe or default_recipe()).stages
    rx = float(prescription_gy)
    if not (np.isfinite(rx) and rx > 0):
        raise ProtocolError(f"stages_from_goals: prescription_gy must be > 0, got {prescription_gy!r}")
    if not isinstance(target, VoxelRegion):
        raise ProtocolError("stages_from_goals: target must be a VoxelRegion (the optimisation target)")
    if int(n_fractions) < 1:
        raise ProtocolError(f"stages_from_goals: n_fractions must be >= 1, got {n_fractions!r}")

    hard: list[Term] = []
    coverage: list[tuple[Term, float]] = []
    soft: list[tuple[Term, float]] = []
    organs: dict[int, VoxelRegion] = {}
    r50 = d2cm = None
    for goal, region in goals:
        st = goal.stage
        if st is Stage.REPORT:
            continue
        if goal.metric.is_plan_index:
            g = rtog_goal(goal, target.volume_cc) if goal.limit is None else goal
            if g.metric is Metric.R50 and g.limit is not None:
                r50 = g.limit.value if r50 is None else min(r50, g.limit.value)
            if g.metric is Metric.D2CM and g.limit is not None:
                d2cm = g.limit.value if d2cm is None else min(d2cm, g.limit.value)
            continue
        if st is Stage.COVERAGE:
            term = goal_term(goal, target, rx, costs)
            if term is not None:
                coverage.append((term, 1.0))
            continue
        if st is Stage.COVERAGE_FALLBACK and goal.metric is Metric.COVERAGE:
            continue  # the relaxed coverage is what stage 1 reaches when the organ limits bind
        if region is None:
            log.info("goal '%s': no region in the optimisation voxels; not optimised", goal.label)
            continue
        term = goal_term(goal, region, rx, costs)
        if term is None:
            continue
        if goal.priority is Priority.HARD_OAR:
            organs.setdefault(id(region), region)
        if st in (Stage.CONSTRAINT, Stage.COVERAGE_FALLBACK):
            hard.append(term)
        else:
            soft.append((term, 1.0))

    s1_obj: list[tuple[Term, float]] = [(QuadUnderdose(target, rx), 1.0)] + coverage
    stage1 = OptimizationStage("coverage", s1_obj, list(hard), keep=KeepMode.OBJECTIVE,
                               keep_abs=(costs.keep_rms_underdose * rx) ** 2)

    s2_obj: list[tuple[Term, float]] = []
    for region, inner_mm, _outer_mm in rings:
        f = ring_dose_fraction(float(inner_mm), ptv_volume_cc=target.volume_cc, r50=r50, d2cm_pct=d2cm)
        s2_obj.append((QuadOverdose(region, f * rx), 1.0))
    if hotspot_free is not None:
        s2_obj.append((QuadOverdose(hotspot_free, costs.hotspot_fraction * rx), 1.0))
    s2_obj += soft
    smooth = None
    if smoothness_pairs is not None and len(smoothness_pairs):
        smooth = Smoothness(np.asarray(smoothness_pairs, dtype=np.int64))
        s2_obj.append((smooth, costs.smoothness_weight))
    if not s2_obj and body is not None:
        s2_obj.append((QuadOverdose(body, costs.body_fallback_fraction * rx), 1.0))
    stages = [stage1]
    if s2_obj:
        stages.append(OptimizationStage("conformity", s2_obj, list(hard), keep=KeepMode.OBJECTIVE,
                                        keep_abs=(costs.keep_rms_underdose * rx) ** 2))
    s3_obj: list[tuple[Term, float]] = []
    n_org = max(len(organs), 1)
    for region in organs.values():
        s3_obj.append((LinearMean(region), 1.0 / n_org))
    if body is not None:
        s3_obj.append((LinearMean(body), costs.body_alara_weight))
    if smooth is not None:
        s3_obj.append((smooth, costs.smoothness_weight))
    if s3_obj:
        stages.append(OptimizationStage("alara", s3_obj, list(hard), keep=KeepMode.NONE))
    if boost is not None:
        log.debug("hot spots allowed in %s (%d rows): not penalised", boost.name, boost.n)
    return stages

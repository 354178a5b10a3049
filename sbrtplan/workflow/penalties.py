"""The plan's goals as weighted penalties (the fast optimisation path), with their exact limits.

The model a physicist would set up: coverage first under hard organ limits,
hot spots only in the GTV/ITV, fall-off rings.  Priorities become weights and
*measured* limits; :func:`optimizer.penalty_solve` re-weights, after each
round, the violated limits of the most important violated priority only:

0. hard organ limits (``Priority.HARD_OAR``, mandatory) and the PTV maximum
   (``Dmax <= 140 %``): over-dose penalty at ``penalties.hard_ref`` of the limit on the goal's
   structure, leaving free the hottest volume the limit allows (``D_xcc < L``:
   ``penalties.allowed_volume_factor`` of x cc), weight x ``penalties.hard_growth`` and reference
   lowered (never under ``penalties.hard_ref_floor`` of the limit) while violated;
1. coverage (the protocol's ``V100%Rx >= v``, aimed 0.5 % higher): under-dose
   penalty at ``penalties.target_under_ref`` x Rx on the optimisation target (PTV! for
   the spine), graded down to ``penalties.band_low_ref`` x Rx over the ``penalties.band_mm`` next
   to the removed organ PRV (the gradient into the cord needs a few mm); its
   limit measures the dose reached by all but the cold volume the goal allows
   (less the part of the PTV that PTV! leaves out), so the cold volume goes
   next to the cord instead of cooling the whole target (which the final
   normalisation would then lift, hot spots and organ doses with it); on
   request (``d2cm_rows``: the VMAT MU re-solve) the RTOG D2cm (maximum 2 cm
   from the PTV) is a limit of the same priority, so that a growing coverage
   weight cannot push the gradient out of the "none" band;
2. hot spots outside the GTV/ITV: over-dose above ``penalties.target_hot_ref`` x Rx in
   the PTV outside the GTV/ITV, with the protocol's D0.035cc < 110 % as a
   limit (aimed at ``penalties.hotspot_aim`` of it, measured on the dose normalised to the
   coverage goal as the final normalisation will scale it, unless a hard
   organ limit stops that scaling) whose reference never drops below the
   coverage reference; re-weighted once the coverage weight is capped; inside the
   GTV/ITV only above ``penalties.boost_hot_ref`` x Rx (with an under-dose term at the
   coverage reference);
* conformity and gradient (CI, R50%): a normal-tissue fall-off outside the
  PTV, ``goal_stages.ring_dose_fraction`` of Rx shifted out by the penumbra
  (``penalties.falloff_shift_mm``), at most ``penalties.falloff_max`` x Rx;
* optional (non-mandatory) organ limits: light over-dose penalties;
* the protocol's dose-volume upper limits on the target (TG-119: PTV D10 <=
  110 % Rx): over-dose penalties that leave the allowed hottest volume free,
  limits of the coverage's priority, measured normalised like the hot spot;
* beyond 2 cm (the RTOG D2cm region) the fall-off reference is ``penalties.d2cm_ref_factor``
  lower, at the fall-off's weight; the D2cm maximum itself is a limit only on
  request (``d2cm_rows``).

The IMRT path adds a fluence regulariser (smoothness of neighbouring
beamlets, see :class:`optimizer.penalty.FluenceRegularizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..case import Structure, StructureRole, distance_map_mm
from .goal_stages import ring_dose_fraction
from ..optimizer.penalty import Limit, Penalty
from ..protocols import rtog_limits
from ..protocols.model import Metric, Priority, Unit
from .problem import PlanProblem
from .structures import PlanningStructures
from .targets import is_per_target_goal

# Tuning values: the planning recipe's ``penalties`` section (``workflow.recipe``; shipped values and
# one-line meanings in ``workflow/recipes/default.yaml``).  How they were measured:
# Weights are per unit of relative volume of each penalty's region (a region's weight is spread
# over its voxels); the fall-off term and the parts of the target are scaled by their volume
# relative to the target's, so that one voxel counts the same wherever the target is split.
#   -> penalties.w_target_under
#   -> penalties.w_gtv_under
#   -> penalties.w_target_hot
#   -> penalties.w_boost_hot
#   -> penalties.w_falloff
#   -> penalties.w_hard
#   -> penalties.w_optional
# Hard organ limits are met on the optimiser's dose with this margin: the delivered dose of the
# segments differs from the fluence dose by a few per cent near the steep gradients, and the final
# normalisation scales the plan down (losing coverage) for any organ limit the delivery breaks.
#   -> penalties.hard_limit_margin
# The target's under-dose reference (x Rx): a little above Rx, so that the final normalisation
# to the coverage goal scales the dose up by a few per cent at most.
#   -> penalties.target_under_ref
# Width (mm) of the band of PTV! next to the removed organ PRV where the coverage reference falls
# linearly from Rx (at the band's inner edge) to BAND_LOW_REF x Rx (at the PRV): the dose
# gradient into the organ needs a few millimetres, and insisting on Rx up to the PRV only
# cools the rest of the target (the normalisation to V100 then lifts every hot spot).
#   -> penalties.band_mm
#   -> penalties.band_low_ref
#   -> penalties.band_weight
# Hot spots outside the GTV/ITV: over-dose reference in the target outside the GTV, and the
# protocol's near-maximum limit (D0.035cc < 110 % Rx) measured and re-weighted like an organ limit.
#   -> penalties.target_hot_ref
# Aimed 2 % under the protocols' 110 %: the limit is measured on the optimiser's dose normalised to
# the coverage goal, the evaluation on the final dose (measured on the liver phantom: 1.10 gave
# External-GTV-ITV D0.035cc 109.6-110.4 %, 1.08 gives 108.5 %).
#   -> penalties.hotspot_aim
# Weight factor of the hot-spot limit per violated round: the hot spot acts once the coverage
# weight is capped; x4 cost the spine phantom its conformity (CI_rtog 1.00 -> 1.20), x2 keeps it
# (1.19) with V100 92.2 -> 93.8 % and External-GTV D0.035cc 123 -> 116 %.
#   -> penalties.hotspot_growth
#   -> penalties.boost_hot_ref
# The fall-off profile (``goal_stages.ring_dose_fraction``) starts this far outside the PTV
# surface (up to 2 cm; the D2cm cap applies from 2 cm on), at most FALLOFF_MAX x Rx: a 6 MV
# penumbra cannot fall from Rx at the surface, and a profile that asks for it fights the
# coverage of the PTV's edge.
#   -> penalties.falloff_shift_mm
# Measured with the default beam model (PTV V100 / RTOG CI / V105% outside / hot spot outside the
# GTV): spine IMRT (limits on the normalised dose) 1.05: 95.4 % / 1.31 / 19 % / 123 %, 1.0: 95.0 % /
# 1.24 / < 15 % / 117 %; spine VMAT 1.05: 94.9 % / 1.16 / 9 % / 125 % (D2cm 54.3 %), 1.0: 95.2 % /
# 1.19 / < 15 % / 128 % (D2cm 56.9 %); liver VMAT 1.05: R50 3.47, D2cm 52.8 %, hot spot 109.3 %,
# 1.0: R50 3.35, D2cm 50.0 %, hot spot 111.0 %.
#   -> penalties.falloff_max
#   -> penalties.d2cm_ref_factor
# The D2cm limit (``plan_penalties(d2cm_rows=...)``): penalty reference and measured limit as
# fractions of the RTOG "none" value (normalisation and sampling margin), and the penalty's weight.
# Not used by the IMRT path: measured on the spine phantom, as a limit on the optimisation voxels
# it cost more coverage than it gained gradient (V100 91.5 % -> 50-80 %).  In the VMAT MU re-solve
# (spine phantom): the DAO's own far maximum was 51-53 % Rx, the delivered one at the DAO's MU
# 55 %, and the re-solve without this limit raised it to 61 % (63.8 % on every voxel); with it,
# 55.3 % at the same coverage (weight 3000; 1000: 57.6 %, 10000: 54.0 %).
#   -> penalties.d2cm_limit_ref
#   -> penalties.d2cm_limit_factor
#   -> penalties.w_d2cm_limit
# The coverage goal is aimed at this much above the protocol's level (the normalisation's margin).
#   -> penalties.coverage_margin_pct
# Weight factor of the coverage goal per violated round (the organ limits grow by 4): a smaller
# step keeps coverage from overshooting into the organ limits it has to respect.
#   -> penalties.coverage_growth
# ... and at most this factor in all, so that fall-off and hot-spot terms keep their say (measured
# on the liver phantom: unbounded growth reached V100 96 % with D2cm 129 % and a 178 % hot spot in
# normal tissue).
#   -> penalties.coverage_max_factor

# Target dose-volume upper limits (TG-119's PTV D10 <= 110 % Rx): penalty reference and the
# measured limit, both under the protocol's value so that the normalisation keeps it.
# Target hot-spot and dose-volume upper limits measured on the dose normalised to the coverage goal
# (``optimizer.Limit.normalized_by``).
#   -> penalties.target_dv_ref
#   -> penalties.target_dv_margin


def _coverage_goal_pct(problem: PlanProblem) -> float | None:
    """The protocol's primary coverage level (``V100%Rx >= v``: v in %), None when there is none."""
    best = None
    for goal, region in problem.goal_regions or []:
        if goal.metric is not Metric.COVERAGE or goal.limit is None or goal.comparator.is_upper_bound:
            continue
        par = goal.parameter
        if par is not None and not (par.unit is Unit.PCT_RX and par.value >= 100.0):
            continue
        best = max(best or 0.0, float(goal.limit.value))
    return best


def _target_dmax_pct(problem: PlanProblem) -> float | None:
    """The protocol's PTV maximum in % Rx (``Dmax <= 140 %Rx``), None when there is none."""
    out = None
    for goal, region in problem.goal_regions or []:
        if goal.metric is Metric.DMAX and goal.comparator.is_upper_bound and goal.structure == "ptv" and goal.limit:
            if goal.limit.unit is Unit.PCT_RX:
                out = min(out or 1e9, float(goal.limit.value))
            elif goal.limit.unit is Unit.GY:
                out = min(out or 1e9, 100.0 * float(goal.limit.value) / problem.prescription_gy)
    return out


def _rows_minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.setdiff1d(a, b, assume_unique=False)


@dataclass
class FalloffProfile:
    """The dose each optimisation voxel outside the PTV may receive (the conformity and gradient goals).

    ``rows``: optimisation-voxel rows outside the PTV; ``reference_gy``: their allowed dose;
    ``far``: which of them lie 2 cm or more from the PTV (the RTOG D2cm region).
    """

    rows: np.ndarray
    reference_gy: np.ndarray
    far: np.ndarray


def falloff_profile(ps: PlanningStructures, problem: PlanProblem) -> FalloffProfile:
    """``goal_stages.ring_dose_fraction`` at each voxel's distance from the PTV (see the module docstring).

    Shifted out by ``penalties.falloff_shift_mm`` inside 2 cm, at most ``penalties.falloff_max`` x Rx, and
    ``penalties.d2cm_ref_factor`` lower from 2 cm on: D2cm is the maximum there, so the bulk must stay
    clearly below it.
    """
    if ps.parts:  # several targets: each one's profile on its own share (workflow.targets)
        return multi_target_falloff(ps, problem)
    r = problem.recipe.penalties
    vox = problem.voxels
    dist = distance_map_mm(ps.target, max_distance_mm=250.0).ravel()[vox.indices]
    outside = np.flatnonzero(~ps.target.mask.ravel()[vox.indices])
    if ps.falloff_mask is not None:  # one of several targets: its share only (workflow.targets)
        outside = outside[ps.falloff_mask.ravel()[vox.indices[outside]]]
    grid_mm = np.round(np.minimum(dist[outside], 250.0)).astype(int)
    table = np.array([ring_dose_fraction(float(m) if m >= 20 else max(float(m) - r.falloff_shift_mm, 0.0),
                                         ptv_volume_cc=ps.target.volume_cc)
                      for m in range(int(grid_mm.max(initial=0)) + 1)])
    ref = np.minimum(r.falloff_max, r.falloff_max * table[grid_mm]) * problem.prescription_gy
    far = grid_mm >= 20
    ref[far] *= r.d2cm_ref_factor
    return FalloffProfile(outside, ref, far)


def plan_penalties(ps: PlanningStructures, problem: PlanProblem, *,
                   d2cm_rows: np.ndarray | None = None) -> tuple[list[Penalty], list[Limit]]:
    """Penalties and exact limits of a plan's optimisation problem (see the module docstring).

    ``d2cm_rows``: rows of the dose matrix (voxels 2 cm or more from the PTV, possibly beyond the
    problem's voxels) on which the RTOG D2cm maximum is a limit of the coverage's priority, with
    a penalty of weight ``penalties.w_d2cm_limit`` (0: none).  The tuning values are
    ``problem.recipe.penalties``.
    """
    if ps.parts:  # several targets: each one's penalties at its prescription, merged (workflow.targets)
        return multi_target_penalties(ps, problem, d2cm_rows=d2cm_rows)
    r = problem.recipe.penalties
    rx = problem.prescription_gy
    vox = problem.voxels
    T = problem.target
    tw = T.weights
    limits: list[Limit] = []
    # coverage: PTV! (PTV when nothing is removed), graded in the band next to the removed PRV
    removed = ps.target.mask & ~ps.optimization_target.mask
    core = np.ones(T.rows.size, bool)
    d_band = None
    if removed.any() and r.band_mm > 0:
        rem = Structure("zRemoved", ps.target.grid, removed, StructureRole.CONTROL)
        d_band = distance_map_mm(rem, max_distance_mm=r.band_mm + 10.0).ravel()[vox.indices][T.rows]
        core = d_band > r.band_mm
    ref = np.full(T.rows.size, r.target_under_ref * rx)
    row_w = np.asarray(tw, float).copy()
    if not core.all():
        frac = np.clip(d_band[~core] / r.band_mm, 0.0, 1.0)
        ref[~core] = rx * (r.band_low_ref + (r.target_under_ref - r.band_low_ref) * frac)
        row_w[~core] *= r.band_weight
    cover = Penalty("target under Rx", T.rows, ref, r.w_target_under, over=False, row_weights=row_w)
    pens: list[Penalty] = [cover]
    boost_rows = np.array([], dtype=np.int64)
    if ps.boost is not None and ps.boost.name in problem.regions:
        b = problem.regions[ps.boost.name]
        # hot spots are allowed where the evaluation allows them: voxels whose centre is in the
        # GTV/ITV (External-GTV excludes those); a voxel the GTV only partly occupies counts as outside
        boost_rows, _ = vox.rows_of(np.flatnonzero(ps.boost.mask.ravel()))
        pens.append(Penalty("GTV under Rx", b.rows, r.target_under_ref * rx, r.w_gtv_under, over=False,
                            row_weights=b.weights))
        pens.append(Penalty(f"boost above {100 * r.boost_hot_ref:g}% Rx", b.rows, r.boost_hot_ref * rx, r.w_boost_hot,
                            over=True, row_weights=b.weights))
    ptv_rows, _ = vox.rows_of(np.flatnonzero(ps.target.weights.ravel() > 0))
    hot = _rows_minus(ptv_rows, boost_rows)
    hot_pen = Penalty(f"target outside GTV above {100 * r.target_hot_ref:g}% Rx", hot, r.target_hot_ref * rx,
                      r.w_target_hot, over=True, row_weights=vox.weights[hot])
    pens.append(hot_pen)
    # normal-tissue fall-off outside the PTV
    fall = falloff_profile(ps, problem)
    outside, ref, far = fall.rows, fall.reference_gy, fall.far
    for name, sel in (("normal-tissue fall-off", ~far), ("beyond 2 cm (D2cm)", far)):
        if not sel.any():
            continue
        rows = outside[sel]
        volume_ratio = float(vox.weights[rows].sum()) / max(float(T.weights.sum()), 1e-9)
        pens.append(Penalty(name, rows, ref[sel], r.w_falloff * volume_ratio, over=True, row_weights=vox.weights[rows]))
    if d2cm_rows is not None and len(d2cm_rows) and r.w_d2cm_limit > 0:
        # D2cm (RTOG) is a maximum: the limit's rows are the caller's (every final-dose voxel there,
        # not the optimisation lattice, which misses the peak of a beam-entry lobe by 1-3 % Rx)
        d2cm_gy = rtog_limits(ps.target.volume_cc).d2cm_none_pct / 100.0 * rx
        pen = Penalty("D2cm (RTOG none)", d2cm_rows, r.d2cm_limit_ref * d2cm_gy, r.w_d2cm_limit, over=True)
        pens.append(pen)
        limits.append(Limit(pen, r.d2cm_limit_factor * d2cm_gy, 0.0, label="D2cm (RTOG none)", priority=1,
                            growth=r.coverage_growth))
    for goal, region in problem.goal_regions:
        if region is None or not goal.comparator.is_upper_bound:
            continue
        if goal.metric not in (Metric.DMAX, Metric.D_CC, Metric.D_PCT, Metric.DMEAN):
            continue
        if goal.structure in ("ptv", "gtv", "itv", "ctv", "body"):
            continue  # target bounds and hot spots are shaped above
        L = goal.limit_in_gy(rx)
        hard = goal.mandatory and goal.priority is Priority.HARD_OAR
        p = Penalty(f"{region.name} {goal.metric_label}", region.rows, r.hard_ref * L if hard else L,
                    r.w_hard if hard else r.w_optional, over=True, row_weights=region.weights)
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
            limits.append(Limit(p, r.hard_limit_margin * L, mean=True, label=p.name, growth=r.hard_growth,
                                floor_gy=r.hard_ref_floor * L))
            continue
        # the volume the limit allows above L stays free (less a margin, so the limit holds exactly)
        p.allowed_fraction = r.allowed_volume_factor * frac
        limits.append(Limit(p, r.hard_limit_margin * L, frac, label=p.name, growth=r.hard_growth,
                            floor_gy=r.hard_ref_floor * L))
    # coverage goal of the protocol (V100%Rx >= v % of the PTV) on the optimisation target: the
    # cold volume it allows, less the part of the PTV that the optimisation target leaves out
    level = _coverage_goal_pct(problem)
    if level is not None:
        ptv_cc, opt_cc = ps.target.volume_cc, max(ps.optimization_target.volume_cc, 1e-9)
        cold = ((100.0 - min(level + r.coverage_margin_pct, 99.9)) / 100.0 * ptv_cc - max(ptv_cc - opt_cc, 0.0)) / opt_cc
        limits.append(Limit(cover, rx, max(cold, 0.002), lower=True, label=f"coverage V100%Rx >= {level:g}%",
                            measure_weights=tw, priority=1, growth=r.coverage_growth,
                            max_weight_factor=r.coverage_max_factor, normalizes=True))
    # the PTV maximum of the protocol (spine: 140 % Rx), measured on the hottest voxel and re-weighted
    # like an organ limit, so that the normalisation is never capped by it
    dmax = _target_dmax_pct(problem)
    if dmax is not None and ptv_rows.size:
        top = Penalty(f"target above {r.target_max_ref * dmax:.4g}% Rx", ptv_rows, r.target_max_ref * dmax / 100.0 * rx,
                      r.w_boost_hot, over=True, row_weights=vox.weights[ptv_rows])
        pens.append(top)
        limits.append(Limit(top, r.target_max_aim * dmax / 100.0 * rx, 0.0, label=f"PTV Dmax <= {dmax:g}% Rx",
                            floor_gy=(r.target_under_ref + r.target_max_floor) * rx, growth=r.hard_growth))
    # dose-volume upper limits of the protocol on the target (TG-119: PTV D10 <= 110 % Rx): an
    # over-dose penalty on the target outside the GTV that leaves the allowed hottest volume free,
    # measured and re-weighted with the coverage (same priority: the normalisation to the coverage
    # goal is capped by it, so coverage and this limit must be met together)
    for goal, region in problem.goal_regions or []:
        if (goal.structure != "ptv" or not goal.comparator.is_upper_bound or goal.limit is None
                or goal.metric not in (Metric.D_PCT, Metric.D_CC) or not hot.size):
            continue
        L = goal.limit_in_gy(rx)
        if goal.metric is Metric.D_PCT:
            frac = goal.parameter.value / 100.0
        else:
            hot_cc = float(vox.weights[hot].sum()) * float(np.prod(ps.target.grid.spacing_mm)) / 1000.0
            frac = min(goal.parameter.value / max(hot_cc, 1e-6), 1.0)
        p = Penalty(f"target {goal.metric_label} <= {100 * L / rx:g}% Rx", hot, r.target_dv_ref * L, r.w_target_hot,
                    over=True, row_weights=vox.weights[hot], allowed_fraction=r.allowed_volume_factor * frac)
        pens.append(p)
        limits.append(Limit(p, r.target_dv_margin * L, frac, label=f"target {goal.metric_label}", priority=1,
                            growth=r.coverage_growth, floor_gy=(r.target_under_ref + r.hot_floor_margin) * rx))
    hs = _hotspot_goal(problem)
    if hot.size and hs is not None:
        # hot spots outside the GTV/ITV: the protocol's near-maximum limit (External-GTV D0.035cc <
        # 110 % Rx, conformity: below coverage), aimed under it, on the target outside the GTV
        L, hs_cc = hs
        hot_cc = float(vox.weights[hot].sum()) * float(np.prod(ps.target.grid.spacing_mm)) / 1000.0
        limits.append(Limit(hot_pen, r.hotspot_aim * L, min(hs_cc / max(hot_cc, 1e-6), 1.0),
                            label=f"hot spot outside GTV D{hs_cc:g}cc",
                            floor_gy=(r.target_under_ref + r.hot_floor_margin) * rx, priority=2,
                            growth=r.hotspot_growth))
    # target hot spots and dose-volume upper limits are measured on the dose normalised to the
    # coverage goal: the final normalisation scales them with it
    cover_lim = next((lim for lim in limits if lim.lower), None)
    if cover_lim is not None:
        from ..optimizer.penalty import normalisation_caps

        organ_caps = normalisation_caps(limits, cover_lim)
        for lim in limits:
            if lim is not cover_lim and lim.priority >= 1 and not lim.mean:
                lim.normalized_by = cover_lim
                lim.scale_caps = organ_caps
    return pens, limits


def _hotspot_goal(problem: PlanProblem) -> tuple[float, float] | None:
    """The protocol's hot-spot limit outside the GTV/ITV: (limit Gy, volume cc), None when it has none."""
    for goal, region in problem.goal_regions or []:
        if (goal.structure == "body" and goal.comparator.is_upper_bound and goal.limit is not None
                and goal.metric in (Metric.D_CC, Metric.DMAX)):
            cc = goal.parameter.value if goal.metric is Metric.D_CC else 0.035
            return goal.limit_in_gy(problem.prescription_gy), float(cc)
    return None


# --------------------------------------------------------------------- several targets
def multi_target_penalties(ps, problem, *, d2cm_rows=None):
    """Penalties and limits of a plan of several targets: each target's at its prescription, merged.

    The organ limits come with the primary (highest dose) target.  Inside the optimiser the dose is
    normalised to the primary target's coverage goal (``optimizer.penalty_solve(normalize=True)``);
    every other target's coverage goal, hot spots and dose-volume bounds are measured on that dose
    (capped by the organ limits), so a target that lags behind the primary is re-weighted with the
    coverage's priority (normalised to the least covered target instead, that target always meets
    its goal exactly and the imbalance is never seen).  The plan's final normalisation
    (``workflow.target_eval``) meets every target's goal where the hard limits allow.  The RTOG D2cm limit rows
    (``d2cm_rows``: final-dose voxels 2 cm or more from every target, whose share is not known here)
    are limited at the primary target's D2cm, the most lenient of the targets' values (the others'
    D2cm is evaluated, not constrained).
    """
    pens, lims, covers = [], [], []
    organs = {r.name for g, r in problem.parts[0].goal_regions
              if r is not None and not is_per_target_goal(g, ps.protocol)}
    for i, (part, sub) in enumerate(zip(ps.parts, problem.parts)):
        p, lm = plan_penalties(part, sub, d2cm_rows=d2cm_rows if i == 0 else None)
        # the target's own terms carry its name (the organ limits of the sum come with the first target)
        for x in p:
            if not any(x.name.startswith(o + " ") for o in organs):
                x.name = f"{part.target.name}: {x.name}"
        for x in lm:
            if not any((x.label or "").startswith(o + " ") for o in organs):
                x.label = f"{part.target.name}: {x.label or x.penalty.name}"
        pens += p
        lims += lm
        covers += [x for x in lm if x.lower]
    if not covers:
        return pens, lims
    primary = covers[0]
    organ_caps = [x for x in lims if x.priority == 0 and not x.lower and not x.mean]
    for x in lims:
        if x is primary:
            continue
        x.normalizes = False
        if x.lower or x.normalized_by is not None:
            x.normalized_by = primary
            x.scale_caps = organ_caps
    return pens, lims


@dataclass
class FalloffParts:
    """The fall-off profiles of several targets, concatenated (rows of each target's share)."""

    rows: np.ndarray
    reference_gy: np.ndarray
    far: np.ndarray
    owner: list = field(default_factory=list)


def multi_target_falloff(ps, problem):
    """Each target's fall-off profile (``penalties.falloff_profile``) on its own share, concatenated."""
    fs = [falloff_profile(part, sub) for part, sub in zip(ps.parts, problem.parts)]
    return FalloffParts(np.concatenate([f.rows for f in fs]), np.concatenate([f.reference_gy for f in fs]),
                        np.concatenate([f.far for f in fs]), [p.target.name for p in ps.parts])

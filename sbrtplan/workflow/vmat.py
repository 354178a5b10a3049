"""VMAT path: arc sectors, direct aperture optimisation, control points.

1. Each arc is divided into optimisation sectors of ``sector_deg`` (6 deg);
   the influence matrix is computed at every sector centre, on beamlet grids
   that share one row/column layout per arc (rows = MLC leaf pairs).
2. Direct aperture optimisation (``optimizer.vmat_dao``) gives one aperture
   and one MU weight per sector, with the leaf travel between neighbouring
   sectors bounded by the machine limits (leaf speed x time the gantry needs
   for one sector) and the MU per degree within the QA range.  The DAO's dose
   of a sector is that of its delivery
   (the apertures interpolated towards the neighbouring sectors at 1-degree
   steps).  Its objective (:func:`_dao_stages`) is the plan's stages summed,
   with the rings replaced by the penalty model's fall-off profile (the dose
   allowed at each voxel's distance from the PTV, below the RTOG D2cm limit
   from 2 cm on).
3. Control points every ``cp_spacing_deg`` (2 deg, so three per sector): each
   control point carries the aperture interpolated linearly (in leaf
   position) between the two nearest sector centres, so leaves move linearly
   through the optimised shapes, and the sector's MU is spread evenly over
   its control-point intervals.
4. The dose of every sector is computed from its own control points with the
   forward engine (apertures interpolated at <= 1 deg), the sector MU are
   re-solved on it (:func:`_resolve_mu`: the plan's penalty model plus the
   RTOG D2cm maximum on every final-dose voxel 2-4 cm from the PTV, its limits
   measured on the dose normalised to the coverage goal), and the final dose is
   that matrix times the MU.
5. ``info["deliverable_mu_scale_range"]``: the range of one common MU scale
   factor (the final normalisation) that keeps every control-point interval
   within the machine's MU-per-degree range; the DAO keeps MU per degree 20 %
   inside that range, so the range always contains [0.83, 1.25].

Arcs: the arc model of ``beams.arcs`` (:func:`~sbrtplan.beams.vmat_arcs`):
arc 1 clockwise 181 -> 179 deg with collimator 30 deg, arc 2 counter-clockwise
with collimator 330 deg (the usual pair, which spreads interleaf leakage), each
checked against the collision model with the case's body and cut to its
collision-free run when the gantry would hit the couch or the patient; sectors
of one common width (:func:`~sbrtplan.beams.arc_sectors`), sector apertures
and control points from ``beams`` (:func:`~sbrtplan.beams.sector_aperture`,
:func:`~sbrtplan.beams.arc_beam`); jaws fixed per arc to the union of its
openings plus 5 mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._log import Timings, get_logger, timed
from ..beams import (Aperture, Beam, BeamGeometry, BeamletGrid, BeamSet, DeliveryLimits, MLCModel, arc_beam,
                     arc_sectors, beamlet_grid_for_target, isocenter_for, max_leaf_travel_mm, sector_aperture,
                     sector_beams, vmat_arcs)
from ..case import Case, distance_map_mm
from ..dose_engine import forward_dose_by_beam, influence_matrix
from ..optimizer import ArcSector, ProfileOverdose, VoxelRegion, penalty_solve, vmat_dao
from .final_dose import FINAL_GANTRY_STEP_DEG, FINAL_LEAF_STEP_MM, final_dose_voxels
from .penalties import falloff_profile, plan_penalties
from .problem import PlanProblem, dose_difference_pct_rx
from .recipe import VmatRecipe
from .structures import PlanningStructures

log = get_logger(__name__)


@dataclass
class VmatResult:
    beam_set: BeamSet
    optimizer_dose_rows: np.ndarray
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: final dose (Gy, on the case grid) from the control points, when already computed
    final_dose_gy: np.ndarray | None = None


def _common_grid(grids: list[BeamletGrid], mlc: MLCModel, beamlet_mm: float) -> list[BeamletGrid]:
    """Re-embed per-sector beamlet grids in one row/column layout (the union of their extents)."""
    x0 = min(g.x_edges_mm[0] for g in grids)
    x1 = max(g.x_edges_mm[-1] for g in grids)
    y0 = min(g.y_edges_mm[0] for g in grids)
    y1 = max(g.y_edges_mm[-1] for g in grids)
    nx = int(round((x1 - x0) / beamlet_mm))
    x_edges = x0 + beamlet_mm * np.arange(nx + 1)
    b = mlc.leaf_boundaries_mm
    y_edges = b[(b >= y0 - 1e-6) & (b <= y1 + 1e-6)]
    out = []
    for g in grids:
        act = np.zeros((y_edges.size - 1, x_edges.size - 1), bool)
        r0 = int(np.argmin(np.abs(y_edges - g.y_edges_mm[0])))
        c0 = int(round((g.x_edges_mm[0] - x0) / beamlet_mm))
        act[r0:r0 + g.shape[0], c0:c0 + g.shape[1]] = g.active
        out.append(BeamletGrid(x_edges, y_edges, act))
    return out


def plan_vmat(case: Case, ps: PlanningStructures, problem: PlanProblem, *, n_arcs: int, cp_spacing_deg: float,
              beamlet_mm: float, model, mlc: MLCModel, limits: DeliveryLimits, prescription_gy: float,
              n_fractions: int, timings: Timings, sector_deg: float = 6.0, optimizer=None,
              progress=None) -> VmatResult:
    """Arc sectors, influence matrix, DAO and control points (see the module docstring)."""
    iso = tuple(float(v) for v in isocenter_for(ps.target))
    # the case's patient position for the collision check, the sector beamlets and the arcs alike
    position = case.patient_position or "HFS"
    with timed("vmat: arcs (collision check)", log, timings):
        arcs = vmat_arcs(n_arcs, iso, case.body, cp_spacing_deg=cp_spacing_deg, patient_position=position)
        width, arcs, n_sectors = arc_sectors(arcs, sector_deg)
    sectors_all: list[ArcSector] = []
    geoms, grids, arc_of = [], [], []
    with timed("vmat: sector beamlet grids", log, timings):
        for a, (arc, n_sec) in enumerate(zip(arcs, n_sectors)):
            centres = arc.angle((np.arange(n_sec) + 0.5) * arc.span_deg / n_sec)
            g_arc = [BeamGeometry(float(g), arc.collimator_deg, arc.couch_deg, iso, patient_position=position)
                     for g in centres]
            gr = [beamlet_grid_for_target(ps.target, g, mlc, beamlet_mm=beamlet_mm, margin_mm=3.0) for g in g_arc]
            geoms += g_arc
            grids += gr
            arc_of += [a] * n_sec
        # One row/column layout for every sector (the union of their extents): the DAO needs it.
        grids = _common_grid(grids, mlc, beamlet_mm)
    with timed("vmat: influence matrix", log, timings):
        im = influence_matrix(case.density, case.grid, geoms, grids, problem.voxels.indices, model=model)
    log.info("VMAT influence matrix: %d sectors, %d x %d, %.1f M non-zeros", len(geoms), im.matrix.shape[0],
             im.matrix.shape[1], im.nnz / 1e6)
    D = sp.csc_matrix(im.matrix)
    travel = float(max_leaf_travel_mm(limits, width))
    dose_rows = np.zeros(D.shape[0])
    beams: list[Beam] = []
    info = {"sector_deg": width, "max_leaf_travel_mm_per_sector": travel, "arcs": []}
    # Arcs are optimised together: one DAO over all sectors, each arc a contiguous block.
    for s in range(len(geoms)):
        sectors_all.append(ArcSector(geoms[s].gantry_deg, grids[s], slice(int(im.beam_offsets[s]),
                                                                          int(im.beam_offsets[s + 1])),
                                     arc=arc_of[s]))
    with timed("vmat: direct aperture optimisation", log, timings):
        by_arc = {a: [s for s in range(len(geoms)) if arc_of[s] == a] for a in range(len(arcs))}
        # The DAO prices apertures on the gradient of the prioritised stages' terms (hard limits as
        # heavy penalties): measured on the spine phantom this gives far better apertures than the
        # IMRT penalty set, whose adaptive re-weighting the column generation cannot run.
        objective = _dao_stages(problem.stages, ps, problem)
        res = _dao_all_arcs(D, sectors_all, objective, n_fractions, width, travel, mlc, limits, progress,
                            problem.recipe.vmat)
    dose_rows = res["dose"]
    apertures_of: list[list[Aperture]] = []
    for a, arc in enumerate(arcs):
        idx = by_arc[a]
        lefts = [res["left"][s] for s in idx]
        rights = [res["right"][s] for s in idx]
        g0 = grids[idx[0]]
        open_rows = [r for s in range(len(idx)) for r in np.nonzero(rights[s] - lefts[s] > mlc.min_gap_mm)[0]]
        if open_rows:
            lo = min(float(np.min(np.where(rights[s] - lefts[s] > mlc.min_gap_mm, lefts[s], np.inf))) for s in range(len(idx)))
            hi = max(float(np.max(np.where(rights[s] - lefts[s] > mlc.min_gap_mm, rights[s], -np.inf))) for s in range(len(idx)))
            jaw_x = (lo - 5.0, hi + 5.0)
            jaw_y = (float(g0.y_edges_mm[min(open_rows)]) - 5.0, float(g0.y_edges_mm[max(open_rows) + 1]) + 5.0)
        else:
            jaw_x, jaw_y = (-5.0, 5.0), (-5.0, 5.0)
        aps = [sector_aperture(grids[s], res["left"][s], res["right"][s], mlc, jaw_x, jaw_y) for s in idx]
        apertures_of.append(aps)
        mu = np.asarray([res["mu"][s] for s in idx])
        beams.append(arc_beam(f"Arc{a + 1} {arc.direction} {arc.start_deg:.0f}-{arc.stop_deg:.0f}", arc, iso, mlc,
                              aps, mu, patient_position=position))
        info["arcs"].append({"name": beams[-1].name, "sectors": len(idx), "mu": round(float(mu.sum()), 1),
                             "control_points": len(beams[-1].control_points)})
    info["iterations"] = res["iterations"]
    old_beams = beams
    mu_all, final_gy, dose_rows, stats = _resolve_on_delivered(case, ps, problem, beams, width, cp_spacing_deg,
                                                             np.asarray(res["mu"], float), res["dose"], model,
                                                             limits, prescription_gy, n_fractions, timings,
                                                             progress)
    info["dao_model_vs_delivered"] = stats
    res["mu"] = mu_all
    beams = []
    for a, arc in enumerate(arcs):
        idx = by_arc[a]
        beams.append(arc_beam(old_beams[a].name, arc, iso, mlc, apertures_of[a], mu_all[idx],
                              patient_position=position))
        info["arcs"][a]["mu"] = round(float(mu_all[idx].sum()), 1)
    # MU per degree of every control-point interval is the sector's MU over its width; the final
    # normalisation multiplies all MU by one factor, which keeps the plan deliverable within:
    mu_deg = np.asarray(res["mu"], float) / width
    lo, hi = limits.mu_per_deg_range
    info["mu_per_deg_range"] = [round(float(mu_deg.min()), 3), round(float(mu_deg.max()), 3)]
    info["deliverable_mu_scale_range"] = [round(float(lo / mu_deg.min()), 4) if mu_deg.min() > 0 else 0.0,
                                          round(float(hi / mu_deg.max()), 4) if mu_deg.max() > 0 else float("inf")]
    beam_set = BeamSet(beams, n_fractions=n_fractions, prescription_gy=prescription_gy)
    notes = [f"VMAT: {len(beams)} arcs, {sum(len(b.control_points) for b in beams)} control points, "
             f"{len(geoms)} optimisation sectors of {width:.2f} deg",
             "VMAT: sector MU re-optimised on the delivered dose of each sector's control points "
             f"(DAO model vs delivered before: target mean {stats.get('target_mean_diff_pct_rx', 0.0):+.1f} % Rx, "
             f"p95 {stats.get('p95_abs_diff_pct_rx', 0.0):.1f} % Rx)"]
    return VmatResult(beam_set, dose_rows, info, notes, final_gy)


def _resolve_on_delivered(case, ps, problem, beams, width, cp_spacing_deg, mu, dao_rows, model, limits,
                          prescription_gy, n_fractions, timings, progress=None):
    """Final dose of every sector from its control points, then the sector MU re-optimised on it.

    The DAO's dose model (beamlet matrix at the sector centre, 30 mm lateral cut-off, leaf
    transmission only over the optimised beamlets) differs from what the control points deliver:
    measured on the spine phantom the delivered target dose was 7.5 % Rx higher on average (p95
    of the difference 9 % Rx), and the normalisation then met an organ or hot-spot limit before
    the coverage.  The delivered dose is linear in the sector MU for fixed apertures, so computing
    each sector's dose once with the forward engine (fluence maps of at most 4 degrees of the
    sector's control points, leaf motion integrated exactly; formerly sub-fields every 1 degree and 5 mm of
    leaf travel) and re-solving the MU on it makes the optimiser's dose the delivered one; the
    final dose is then that matrix times the MU, at no further cost.
    """
    per = max(1, int(round(width / cp_spacing_deg)))
    subs = [sb for b in beams for sb in sector_beams(b, per)]
    vox = final_dose_voxels(case, ps.target, extra_indices=problem.voxels.indices)
    with timed("vmat: final dose of each sector (fluence maps, forward engine)", log, timings):
        g = forward_dose_by_beam(case.density, case.grid, BeamSet(subs, n_fractions, prescription_gy),
                                 vox.indices, model=model, max_gantry_step_deg=FINAL_GANTRY_STEP_DEG,
                                 max_leaf_step_mm=FINAL_LEAF_STEP_MM, arc_bin_deg=min(width, 4.0) + 1e-6,
                                 progress=progress)
        g = g.astype(np.float32)
    with timed("vmat: sector MU on the delivered dose", log, timings):
        w, rows_gy, before = _resolve_mu(g, vox, ps, problem, mu, limits, width, progress)
        final = vox.to_grid(w.astype(np.float32) @ g, case.grid.shape)
    stats = dose_difference_pct_rx(before, dao_rows, problem)
    log.info("VMAT: DAO model vs delivered (target mean %+.2f %% Rx, p95 %.2f %% Rx); MU %.0f -> %.0f",
             stats.get("target_mean_diff_pct_rx", 0.0), stats.get("p95_abs_diff_pct_rx", 0.0), mu.sum(), w.sum())
    return w, final, rows_gy, stats


def _resolve_mu(g, vox, ps, problem, mu, limits, width, progress=None):
    """Sector MU re-solved on the sectors' delivered dose ``g`` (sub-beams x final-dose voxels).

    Returns the MU, the dose at the optimisation voxels, and the dose there at the DAO's MU.
    """
    n_opt = problem.voxels.n
    rows = np.searchsorted(vox.indices, problem.voxels.indices)
    # The plan's prioritised penalty model (the one the IMRT path solves), whose violated limits
    # are re-weighted between rounds: the column generation cannot run those rounds, this small
    # problem (one variable per sector) can.  Measured on the spine phantom (27/3, the apertures of
    # the DAO before its fall-off profile): PTV V100 91.8 % / R50 4.45 / D2cm 74.8 % / CI 0.82 after
    # normalisation, against 90.0 % / 5.00 / 73.9 % / 0.78 with the DAO's own summed-stage objective.
    # D2cm is a maximum: a limit on every final-dose voxel 2 cm or more from the PTV (full
    # resolution within 3 cm), appended below the optimisation voxels' rows.  Only voxels within
    # the recipe's ``vmat.resolve_d2cm_outer_mm`` count: apertures that follow the PTV put their lobes within a few cm
    # of it, and the dose falls further out.
    rec = problem.recipe.vmat
    dist = distance_map_mm(ps.target, max_distance_mm=rec.resolve_d2cm_outer_mm).ravel()[vox.indices]
    far = np.flatnonzero((dist >= 20.0) & np.isfinite(dist))
    a = np.ascontiguousarray(np.concatenate([g[:, rows], g[:, far]], axis=1).T, dtype=np.float64)
    pens, lims = plan_penalties(ps, problem, d2cm_rows=n_opt + np.arange(far.size))
    lo, hi = _sector_mu_per_deg(limits)
    lb = np.full(mu.size, lo * width)
    ub = np.full(mu.size, hi * width)
    w = penalty_solve(a, pens, lims, x0=mu, x_lb=lb, x_ub=ub, rounds=rec.resolve_rounds, normalize=True,
                      progress=progress).x
    return w, a[:n_opt] @ w, a[:n_opt] @ mu


# Tuning values: the planning recipe's ``vmat`` section (``workflow.recipe``, ``recipes/default.yaml``),
# read from ``problem.recipe``.  The DAO models each sector's delivery (apertures interpolated between
# sector centres every ``vmat.dose_step_deg``), the sector MU are always re-solved on the delivered
# dose, and that re-solve measures its limits on the dose normalised to the coverage goal.  How the
# values were measured:
# After the DAO, re-optimise the sector MU on the dose the control points deliver (see
# :func:`_resolve_on_delivered`); the final dose comes from the same computation.
#   (always on; the switch and its alternative path were removed)


# Column-generation budget: apertures added per iteration and iterations.  Each iteration re-solves
# the master problem, so fewer, larger iterations are much cheaper; sectors left without a priced
# aperture receive the interpolation of their neighbours and their MU from the master.
#   -> vmat.dao_apertures_per_iteration
#   -> vmat.dao_max_iterations
# Leaf-refinement sweeps: each still lowers the objective by 2-10 % after four (spine phantom:
# 273, 245, 232, 219, 211, 206, 202, 198), about 5 s each; PTV V100 after normalisation was 69.7 % with
# 2 passes and 93.4 % with 4 (old objective), and 8 passes turned a 90.6 % into 93.4 %.
#   -> vmat.dao_refine_passes
# Gantry step of the DAO's delivery model: the DAO models each sector's delivery
# with as many samples of the interpolated apertures (leaves moving linearly between sector centres,
# as in :func:`arc_beam`), so that its dose is the delivered one.  Measured on the spine phantom
# (27/3): the sector-aperture model's delivered dose differs from its own by up to +10.7 % Rx (p95
# 5 %); modelling the delivery lowers the objective on the delivered dose from 151 to 110 and the
# optimiser/delivered difference (p95 8.3 -> 5.0 % Rx), and PTV V100 rises 86.5 -> 87.5 %, but D2cm
# rose 58.7 -> 69.0 %.  With the sector MU re-solved on the delivered dose afterwards
# (:func:`_resolve_on_delivered`) it is on: the apertures it yields deliver what it modelled (with
# coverage weight 5: PTV V100 90.4 % off, 92.4 % on, at R50 5.08 / 5.04 and D2cm 81.8 / 80.2 %).
#   -> vmat.dose_step_deg
#   (always on; the switch and its alternative path were removed)
# Weight of the coverage stage's objectives (target under-dose, coverage surrogates) in the DAO's
# summed objective, relative to the fall-off rings, hot-spot and organ terms (weight 1).  Measured
# on the spine phantom (27/3), PTV V100 of the DAO's own dose: 80.9 % at 1, 90.3 % at 3, 93.6 % at
# 5; the delivered plan's R50 / D2cm rise with it (4.3 / 66 % at 1, 5.0 / 80 % at 5), so 3.
#   -> vmat.dao_coverage_weight
# Weights of the fall-off profile in the DAO's objective within and beyond 2 cm of the PTV (see
# :func:`_dao_stages`), and the factor of the conformity stage's other objectives (hot spots
# outside the GTV/ITV, optional organ limits).  Measured on the spine phantom (27/3, 8 refinement
# passes, the D2cm re-solve below), PTV V100 / R50 / D2cm / External-GTV D0.035cc after
# normalisation: rings of the conformity stage at weight 1: 93.4 % / 4.61 / 75.8 % / 123 %
# (4 passes, no D2cm re-solve); rings x10: 91.9 % / 3.88 / 54.9 %; rings x30: 93.4 % / 3.90 / 56.6 %;
# this profile at 10 / 10: 93.7 % / 3.70 / 54.4 % / 128 %; with hot spots x10: 94.0 % / 3.73 /
# 54.2 % / 123 %.  A CVaR term on the hottest 0.5 cc beyond 2 cm (weight 30 or 100) gave no
# lower D2cm than the re-solve below and cost coverage (88-93 %).
#   -> vmat.dao_falloff_weight
#   -> vmat.dao_d2cm_weight
#   -> vmat.dao_hotspot_weight
# The sector-MU re-solve's RTOG D2cm limit (:func:`_resolve_mu`, ``penalties.w_d2cm_limit``) covers
# the final-dose voxels from 2 cm to this distance from the PTV.
#   -> vmat.resolve_d2cm_outer_mm
# The re-solve measures its limits on the dose normalised to the coverage goal (``penalty_solve(
# normalize=True)``), as the plan's final normalisation will scale it.  Without it a round trades
# cord dose for coverage up to the cord limit on a dose that still lacks 6-11 % of the coverage,
# and the normalisation then stops at the cord.  Spine phantom 27/3, PTV V100 / R50 / D2cm /
# RTOG CI after normalisation, default model ``generic-6MV-sf``: off 82.1 % / 3.33 / 52.2 % / 0.85
# (cord PRV D1.2cc binding), on 94.9 % / 3.80 / 54.2 % / 1.17; scans-only ``generic-6MV``: off
# 94.0 % / 3.73 / 54.2 % / 1.07, on 95.2 % / 4.06 / 56.8 % / 1.24.  Liver 45/3, default model,
# on: V100 96.2 %, V90 100 %, R50 3.52, D2cm 54.0 %.
#   (always on; the switch and its alternative path were removed)
#   -> vmat.dao_time_limit_s
# The DAO master keeps hard limits as heavy penalties (the stages' terms); the final
# normalisation then caps the dose scale at every hard organ limit, which is cheaper than a
# prioritised re-solve in the aperture weights and meets the same limits.


def _sector_mu_per_deg(limits: DeliveryLimits) -> tuple[float, float]:
    """MU per degree allowed to a sector: 20 % inside the machine's range, so that the final
    normalisation (a few per cent either way) leaves every control point deliverable."""
    lo, hi = limits.mu_per_deg_range
    return 1.2 * lo, 0.8 * hi


def _dao_stages(stages, ps: PlanningStructures, problem: PlanProblem):
    """The plan's stages as the DAO's summed objective.

    The coverage objectives are weighted by the recipe's ``vmat.dao_coverage_weight``.  The conformity stage's
    rings (one reference per ring, shaped for the prioritised solve, where stage 2 runs under the
    stage-1 result) are replaced by the fall-off profile of the penalty model
    (:func:`~sbrtplan.workflow.penalties.falloff_profile`: the allowed dose at each voxel's
    distance from the PTV), weighted ``vmat.dao_falloff_weight`` inside 2 cm and
    ``vmat.dao_d2cm_weight`` beyond: in one summed objective the rings' single references let a
    beam-entry lobe of 65 % Rx at 19 mm go unpenalised (spine phantom, 5-20 mm ring reference
    74 % Rx), and that lobe is the plan's D2cm.
    """
    from dataclasses import replace

    rec = problem.recipe.vmat
    vox = problem.voxels
    fall = falloff_profile(ps, problem)
    ring_names = {r.name for r in ps.rings}
    profile_terms = []
    for name, sel, weight in (("fall-off within 2 cm", ~fall.far, rec.dao_falloff_weight),
                              ("beyond 2 cm (D2cm)", fall.far, rec.dao_d2cm_weight)):
        rows = fall.rows[sel]
        if rows.size:
            w = vox.weights[rows]
            cc = float(w.sum()) * float(np.prod(ps.target.grid.spacing_mm)) / 1000.0
            region = VoxelRegion(name, rows, w, cc)
            profile_terms.append((ProfileOverdose(region, fall.reference_gy[sel]), weight))
    out = []
    for st in stages:
        if st.name == "coverage":
            st = replace(st, objectives=[(t, w * rec.dao_coverage_weight) for t, w in st.objectives])
        elif st.name == "conformity":
            kept = [(t, w * rec.dao_hotspot_weight) for t, w in st.objectives
                    if getattr(getattr(t, "region", None), "name", None) not in ring_names]
            st = replace(st, objectives=kept + profile_terms)
        out.append(st)
    return out


def _dao_all_arcs(D, sectors, objective, n_fractions, width, travel, mlc, limits, progress, rec: VmatRecipe):
    """DAO over all arcs at once (sectors carry their arc); budgets from the recipe's ``vmat`` section."""
    r = vmat_dao(D, sectors, objective, n_fractions=n_fractions, mu_per_deg_range=_sector_mu_per_deg(limits),
                 sector_width_deg=width, max_leaf_travel_mm=travel, leaf_transmission=mlc.transmission,
                 apertures_per_iteration=rec.dao_apertures_per_iteration, max_iterations=rec.dao_max_iterations,
                 refine_passes=rec.dao_refine_passes, time_limit_s=rec.dao_time_limit_s,
                 prioritized_master=False,
                 delivery_samples=max(2, int(round(width / rec.dose_step_deg))),
                 progress=progress)
    return {"left": r.left_mm, "right": r.right_mm, "mu": r.mu, "dose": r.dose_gy, "iterations": len(r.history)}

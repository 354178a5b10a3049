"""IMRT path: beam-angle selection, fluence optimisation, leaf sequencing, segment weights.

1. Candidate directions that do not collide (gantry x couch) are scored on a
   coarse problem by group-sparse selection (``optimizer.select_beams``); the
   ``n_beams`` chosen directions (or a site template) are kept.
2. The fluence of the chosen beams is optimised on the plan's voxels with the
   prioritised convex model (``optimizer.prioritized_solve``).
3. Each fluence map is sequenced into step-and-shoot segments (bounded count,
   minimum MU, leaf-gap limits).
4. The segment MU are re-optimised with the same prioritised model on the
   dose of each segment computed by the forward engine from its MLC shape
   (leaf transmission included), which removes most of the loss of step 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._log import Timings, get_logger, timed
from ..beams import (BeamGeometry, BeamSet, MLCModel, Site, beam_template, beamlet_grid_for_target,
                     candidate_directions, isocenter_for, segments_to_beam, sequence_fluence)
from ..case import Case, distance_map_mm
from ..dose_engine import forward_dose, influence_matrix
from ..optimizer import QuadraticPenalty, prioritized_solve, select_beams
from ..protocols.model import Comparator, Metric
from ..optimizer.dao import stage_objective
from ..optimizer.penalty import FluenceRegularizer, beamlet_neighbour_pairs, objective_solve, penalty_solve
from .penalties import plan_penalties
from .plan import OptimizerPath
from .problem import PlanProblem
from .structures import PlanningStructures

log = get_logger(__name__)

#: Wall-clock budgets (s) of the first-order solver: the fluence stages and the segment-weight
#: re-optimisation.  The solver returns its best feasible point at the limit; the final dose is
#: always recomputed and evaluated, so a budget trades plan quality for time, never correctness.
FLUENCE_TIME_LIMIT_S = 45.0
SEGMENT_TIME_LIMIT_S = 25.0
#: Fluence regularisation of the penalty path (``optimizer.FluenceRegularizer``): smoothness of
#: neighbouring beamlets and a linear MU penalty, in the dose penalties' units (Gy^2).
FLUENCE_SMOOTH_WEIGHT = 5.0
FLUENCE_MU_WEIGHT = 0.0
#: Re-weighting rounds of the penalty path (hard organ limits first, then coverage, then hot spots).
FLUENCE_ROUNDS = 6


@dataclass
class ImrtResult:
    beam_set: BeamSet
    optimizer_dose_rows: np.ndarray       # fluence-optimiser dose at the problem rows (total Gy)
    segment_dose_rows: np.ndarray         # dose of the re-weighted segments at the problem rows
    selection: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _site(protocol_site: str) -> Site:
    s = protocol_site.lower()
    if "spine" in s:
        return Site.SPINE
    if "liver" in s or "hepat" in s or "chol" in s:
        return Site.LIVER
    return Site.GENERIC


def _selection_penalties(case: Case, ps: PlanningStructures, problem: PlanProblem, rows: np.ndarray,
                         row_w: np.ndarray) -> list[QuadraticPenalty]:
    """Quadratic penalties of the coarse beam-selection problem (on a subset of rows)."""
    rx = problem.prescription_gy
    flat = problem.voxels.indices[rows]
    out: list[QuadraticPenalty] = []
    tmask = ps.optimization_target.mask.ravel()[flat]
    sel = np.nonzero(tmask)[0]
    out.append(QuadraticPenalty(sel, np.full(sel.size, rx), 10.0, over=False, row_weights=row_w[sel]))
    out.append(QuadraticPenalty(sel, np.full(sel.size, 1.15 * rx), 1.0, over=True, row_weights=row_w[sel]))
    # Normal-tissue fall-off: dose above Rx * exp(-r / 12 mm) outside the PTV costs (r from the PTV surface).
    dist = distance_map_mm(ps.target, max_distance_mm=200.0).ravel()[flat]
    out_t = np.nonzero(~ps.target.mask.ravel()[flat])[0]
    ref = rx * (0.05 + 1.0 * np.exp(-np.minimum(dist[out_t], 300.0) / 12.0))
    out.append(QuadraticPenalty(out_t, ref, 3.0, over=True, row_weights=row_w[out_t]))
    # Organ limits (hard limits of the protocol) as over-dose penalties on their structures.
    for goal, region in problem.goal_regions:
        if region is None or not goal.comparator.is_upper_bound or not goal.mandatory:
            continue
        if goal.metric not in (Metric.DMAX, Metric.D_CC, Metric.D_PCT, Metric.DMEAN):
            continue
        lim = goal.limit_in_gy(rx)
        pos = np.searchsorted(rows, region.rows)
        pos = np.minimum(pos, rows.size - 1)
        hit = rows[pos] == region.rows
        if not hit.any():
            continue
        out.append(QuadraticPenalty(pos[hit], np.full(int(hit.sum()), 0.9 * lim), 5.0, over=True,
                                    row_weights=row_w[pos[hit]]))
    return out


def choose_directions(case: Case, ps: PlanningStructures, problem: PlanProblem, iso, mlc: MLCModel, n_beams: int,
                      site: Site, select: bool, model, timings: Timings, progress=None) -> tuple[list[BeamGeometry], dict]:
    """The plan's beam directions: automatic group-sparse selection or the site template."""
    if not select:
        tpl = beam_template(site, n_beams)
        return [BeamGeometry(g, c, t, iso) for g, t, c in tpl], {"method": "template"}
    with timed("beam selection: candidates", log, timings):
        cands = candidate_directions(case.body, iso, gantry_step_deg=20.0, couches_deg=(0.0, 20.0, 40.0, 320.0, 340.0))
    log.info("beam selection: %d non-colliding candidate directions", len(cands))
    rng = np.random.default_rng(0)
    n_rows = problem.voxels.n
    keep = np.sort(rng.choice(n_rows, size=min(n_rows, 6000), replace=False))
    row_w = problem.voxels.weights[keep] * (n_rows / keep.size)
    with timed("beam selection: coarse influence matrix", log, timings):
        grids = [beamlet_grid_for_target(ps.target, g, mlc, beamlet_mm=10.0, margin_mm=5.0) for g in cands]
        im = influence_matrix(case.density, case.grid, cands, grids, problem.voxels.indices[keep], model=model)
    D = im.matrix.tocsr() * float(problem.n_fractions)
    pens = _selection_penalties(case, ps, problem, keep, row_w)
    with timed("beam selection: group lasso", log, timings):
        res = select_beams(D, im.beam_offsets, pens, n_beams, progress=progress)
    chosen = [cands[i] for i in res.chosen]
    info = {"method": "group lasso", "n_candidates": len(cands), "lambda": res.lam,
            "chosen": [c.label() if hasattr(c, "label") else str(c) for c in chosen]}
    log.info("beam selection chose: %s", ", ".join(info["chosen"]))
    return chosen, info


def plan_imrt(case: Case, ps: PlanningStructures, problem: PlanProblem, *, site: str, n_beams: int, select: bool,
              beamlet_mm: float, max_segments: int, min_segment_mu: float, model, mlc: MLCModel,
              prescription_gy: float, n_fractions: int, timings: Timings,
              optimizer: "OptimizerPath" = None, progress=None) -> ImrtResult:
    """Optimise, sequence and re-weight an IMRT plan (see the module docstring)."""
    optimizer = OptimizerPath(optimizer or OptimizerPath.PENALTY)
    iso = tuple(float(v) for v in isocenter_for(ps.target))
    geoms, sel_info = choose_directions(case, ps, problem, iso, mlc, n_beams, _site(site), select, model, timings,
                                        progress)
    with timed("influence matrix", log, timings):
        grids = [beamlet_grid_for_target(ps.target, g, mlc, beamlet_mm=beamlet_mm, margin_mm=5.0) for g in geoms]
        im = influence_matrix(case.density, case.grid, geoms, grids, problem.voxels.indices, model=model)
    log.info("influence matrix: %d x %d, %.1f M non-zeros", im.matrix.shape[0], im.matrix.shape[1], im.nnz / 1e6)
    D = sp.csr_matrix(im.matrix, dtype=np.float32) * np.float32(n_fractions)
    penalties = None
    with timed("fluence optimisation", log, timings):
        if optimizer is OptimizerPath.PENALTY:
            penalties = plan_penalties(ps, problem)
            gy_per_mu = float(np.median(D.max(axis=0).toarray())) if D.shape[1] else 1.0
            reg = FluenceRegularizer(beamlet_neighbour_pairs(grids, im.beam_offsets), gy_per_mu,
                                     FLUENCE_SMOOTH_WEIGHT, FLUENCE_MU_WEIGHT)
            res = penalty_solve(D, *penalties, regularizer=reg, rounds=FLUENCE_ROUNDS)
        elif optimizer is OptimizerPath.STAGES:
            res = objective_solve(D, stage_objective(problem.stages))
        else:
            res = prioritized_solve(D, problem.stages, time_limit_s=FLUENCE_TIME_LIMIT_S)
    x = np.asarray(res.x, float)

    beams = []
    with timed("leaf sequencing", log, timings):
        for b, (g, grid) in enumerate(zip(geoms, grids)):
            xb = x[im.beam_offsets[b]:im.beam_offsets[b + 1]]
            segs = sequence_fluence(grid.to_map(xb), grid, mlc, max_segments=max_segments,
                                    min_segment_mu=min_segment_mu)
            if not segs:
                log.info("beam %d: no segment above %.1f MU, dropped", b + 1, min_segment_mu)
                continue
            name = f"B{len(beams) + 1} G{g.gantry_deg:.0f} T{g.couch_deg:.0f}"
            beams.append(segments_to_beam(name, g, segs, mlc))
    beam_set = BeamSet(beams, n_fractions=n_fractions, prescription_gy=prescription_gy)

    with timed("segment weight optimisation", log, timings):
        beam_set, seg_dose = reweight_segments(case, beam_set, problem, model, min_segment_mu, penalties,
                                               optimizer)
    notes = [f"{len(beams)} beams, {sum(len(b.control_points) // 2 for b in beams)} segments"]
    return ImrtResult(beam_set, np.asarray(res.dose_gy), seg_dose, sel_info, notes)


def _single_segment_sets(beam_set: BeamSet):
    """(beam index, segment index, one-segment BeamSet of 1 MU per fraction) for every segment."""
    from ..beams import Beam, ControlPoint

    for bi, beam in enumerate(beam_set.beams):
        mu = beam.segment_mu()
        cps = beam.control_points
        for si in range(len(cps) - 1):
            if mu[si] <= 0:
                continue
            ap = cps[si].aperture
            one = Beam(beam.name, [ControlPoint(cps[si].gantry_deg, ap, 0.0), ControlPoint(cps[si].gantry_deg, ap, 1.0)],
                       1.0, beam.mlc, beam.isocenter_mm, beam.collimator_deg, beam.couch_deg, beam.sad_mm,
                       beam.technique)
            yield bi, si, BeamSet([one], beam_set.n_fractions, beam_set.prescription_gy)


def reweight_segments(case: Case, beam_set: BeamSet, problem: PlanProblem, model,
                      min_segment_mu: float, penalties=None, optimizer=None) -> tuple[BeamSet, np.ndarray]:
    """Re-optimise the MU of every segment on its forward-computed dose."""
    from ..beams import Beam, ControlPoint

    cols, keys = [], []
    for bi, si, one in _single_segment_sets(beam_set):
        d = forward_dose(case.density, case.grid, one, model=model, voxel_indices=problem.voxels.indices)
        cols.append(np.asarray(d, np.float32).ravel()[problem.voxels.indices])
        keys.append((bi, si))
    Dseg = sp.csr_matrix(np.column_stack(cols))
    # 15 % above the machine minimum, so that the final normalisation keeps every segment deliverable
    lb = np.full(len(keys), 1.15 * min_segment_mu)
    if optimizer is OptimizerPath.STAGES:
        res = objective_solve(Dseg, stage_objective(problem.stages), x_lb=lb,
                              x0=np.maximum([beam_set.beams[b].segment_mu()[s] for b, s in keys], lb))
    elif penalties is not None:
        # the weights the fluence optimisation adapted carry over to the segment weights
        res = penalty_solve(Dseg, *penalties, x_lb=lb,
                            x0=np.array([beam_set.beams[b].segment_mu()[s] for b, s in keys]))
    else:
        res = prioritized_solve(Dseg, problem.stages, x_lb=lb,
                                time_limit_s=SEGMENT_TIME_LIMIT_S)
    w = np.asarray(res.x, float)
    new_beams = []
    for bi, beam in enumerate(beam_set.beams):
        seg_mu = np.array([w[k] for k, (b, s) in enumerate(keys) if b == bi])
        if seg_mu.size == 0 or seg_mu.sum() <= 0:
            continue
        cps = beam.control_points
        cum = np.concatenate([[0.0], np.cumsum(seg_mu)]) / seg_mu.sum()
        # Step-and-shoot control points come in pairs (segment start, segment end) with the same aperture.
        segs = [cps[s].aperture for (b, s) in keys if b == bi]
        new_cps = []
        for j, ap in enumerate(segs):
            new_cps.append(ControlPoint(beam.control_points[0].gantry_deg, ap, float(cum[j])))
            new_cps.append(ControlPoint(beam.control_points[0].gantry_deg, ap, float(cum[j + 1])))
        new_beams.append(Beam(beam.name, new_cps, float(seg_mu.sum()), beam.mlc, beam.isocenter_mm, beam.collimator_deg,
                              beam.couch_deg, beam.sad_mm, beam.technique, metadata=dict(beam.metadata)))
    return BeamSet(new_beams, beam_set.n_fractions, beam_set.prescription_gy), np.asarray(res.dose_gy)

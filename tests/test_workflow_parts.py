"""Pieces of the planning workflow that do not need an optimisation: voxels, regions, arcs."""

import numpy as np
import pytest

from sbrtplan.beams import Aperture, BeamGeometry, MLCModel, beamlet_grid_for_target, isocenter_for, sample_delivery
from sbrtplan.case import distance_map_mm
from sbrtplan.phantoms import make_phantom
from sbrtplan.protocols import load_protocol
from sbrtplan.workflow.structures import build_planning_structures
from sbrtplan.beams import ArcSpec, arc_beam, sector_beams
from sbrtplan.workflow.vmat import _common_grid
from sbrtplan.workflow.voxels import optimization_voxels, organ_structures, region_for


@pytest.fixture(scope="module")
def spine():
    case = make_phantom("spine")
    ps = build_planning_structures(case, load_protocol("bone_spine"))
    return case, ps


def test_target_is_kept_at_full_resolution(spine):
    case, ps = spine
    vox = optimization_voxels(case, ps.target, organ_structures(case))
    r = region_for(ps.target, vox)
    # Every PTV voxel is in the problem with its own occupancy: the region's weighted volume is the
    # PTV volume to float precision.
    assert r.weights.sum() * case.grid.voxel_volume_cc == pytest.approx(ps.target.volume_cc, rel=1e-6)
    assert vox.n < 0.1 * int(case.body.mask.sum())  # far fewer voxels than the body


def test_sampled_regions_keep_their_volume(spine):
    case, ps = spine
    vox = optimization_voxels(case, ps.target, organ_structures(case))
    body = region_for(case.body, vox)
    # 1-in-8 and 1-in-64 lattices carry weights 8 and 64: the body volume (about 9.5 litres) is
    # reproduced within 5 %; the error is lattice aliasing at the outline, of the order of
    # (surface area x half the 8 mm lattice step) / volume, i.e. a few per cent for this body.
    assert body.weights.sum() * case.grid.voxel_volume_cc == pytest.approx(case.body.volume_cc, rel=0.05)


def test_common_grid_keeps_active_beamlets(spine):
    case, ps = spine
    mlc = MLCModel.millennium120()
    iso = isocenter_for(ps.target)
    geoms = [BeamGeometry(g, 30.0, 0.0, iso) for g in (0.0, 90.0, 180.0, 270.0)]
    grids = [beamlet_grid_for_target(ps.target, g, mlc, beamlet_mm=5.0) for g in geoms]
    common = _common_grid(grids, mlc, 5.0)
    assert len({c.shape for c in common}) == 1
    for g, c in zip(grids, common):
        assert c.n_beamlets == g.n_beamlets
        # the same beamlet centres (mm at the isocentre plane), in the same row-major order
        np.testing.assert_allclose(np.sort(c.centers_mm(), axis=0), np.sort(g.centers_mm(), axis=0))


def test_arc_control_points_follow_sectors():
    mlc = MLCModel.millennium120()
    # A 358-deg arc in 90 sectors of 3.98 deg, control points every 1.99 deg (2 per sector).
    arc = ArcSpec(181.0, 179.0, "CW", collimator_deg=30.0, cp_spacing_deg=2.0)
    n_sec = 90
    aps = [Aperture.rectangle(mlc, (-10.0 - s % 9, 10.0 + s % 7), (-20.0, 20.0)) for s in range(n_sec)]
    mu = np.linspace(5.0, 14.0, n_sec)
    beam = arc_beam("A", arc, (0.0, 0.0, 0.0), mlc, aps, mu)
    assert beam.arc_direction == "CW" and beam.collimator_deg == 30.0
    assert len(beam.control_points) == 2 * n_sec + 1
    assert beam.mu == pytest.approx(mu.sum())
    # each half sector delivers half of the sector's MU
    np.testing.assert_allclose(beam.segment_mu(), np.repeat(mu / 2, 2), rtol=1e-9)
    # the control point at each sector centre carries the sector's aperture
    for s in range(n_sec):
        np.testing.assert_allclose(beam.control_points[2 * s + 1].aperture.leaf_x2_mm, aps[s].leaf_x2_mm)
    # clockwise from 181 deg, ending at 179 deg
    g = [cp.gantry_deg for cp in beam.control_points]
    assert g[0] == pytest.approx(181.0) and g[-1] == pytest.approx(179.0)
    # dose sampling at <= 1 deg covers every MU exactly once
    samples = sample_delivery(beam, max_gantry_step_deg=1.0)
    assert sum(s.mu for s in samples) == pytest.approx(beam.mu)


def _open_arc_on_spine(spacing_mm: float):
    """The spine phantom at ``spacing_mm`` and a 120-degree arc of one open 4 x 4 cm field on its PTV."""
    from sbrtplan.beams import Beam, BeamSet, ControlPoint, Technique

    case = make_phantom("spine", spacing_mm=spacing_mm)
    ps = build_planning_structures(case, load_protocol("bone_spine"))
    mlc = MLCModel.millennium120()
    ap = Aperture.rectangle(mlc, (-20.0, 20.0), (-20.0, 20.0))
    gantry = np.arange(120.0, 241.0, 10.0)
    cps = [ControlPoint(float(g), ap, k / (gantry.size - 1)) for k, g in enumerate(gantry)]
    arc = Beam("A", cps, 300.0, mlc, isocenter_for(ps.target), technique=Technique.VMAT, arc_direction="CW")
    return case, ps, BeamSet([arc], n_fractions=3, prescription_gy=27.0)


def test_final_dose_lattice_matches_full_computation_for_arcs():
    from sbrtplan.dose_engine import forward_dose
    from sbrtplan.workflow.final_dose import final_dose

    case, ps, bs = _open_arc_on_spine(4.0)
    full = forward_dose(case.density, case.grid, bs, voxel_indices=case.body.flat_indices()).reshape(case.grid.shape)
    fast = final_dose(case, ps.target, bs, full_mm=20.0)
    body = case.body.mask
    # Beyond 20 mm from the PTV an arc's dose is interpolated in-plane from every second voxel
    # (8 mm apart on this 4 mm grid, twice the spacing of a 2 mm plan grid): the arc spreads the
    # in-plane field edges over many angles, so the error stays within 5 % of the maximum dose at
    # worst (a short 120-degree arc with one open field, the least smearing case) and within 1 % for
    # 99 % of the body; within 20 mm of the PTV and in organs the dose is computed exactly.
    err = np.abs(fast[body] - full[body])
    assert err.max() <= 0.05 * full.max()
    assert np.percentile(err, 99) <= 0.01 * full.max()
    near = ps.target.mask | (case.structure("SpinalCord").mask & (distance_map_mm(ps.target) <= 60.0))
    # computed, not interpolated: equal up to the engine's tabulation of broad kernel terms (< 0.1 %)
    np.testing.assert_allclose(fast[near], full[near], rtol=1e-3, atol=1e-4)


def test_plan_penalties_encode_the_spine_protocol(spine):
    """The penalty model of the spine plan: coverage goal, graded band at the cord, hot-spot and Dmax limits.

    Figures from the protocol (bone standard, 27 Gy / 3 fx): V100%Rx >= 95 % of the PTV, PTV Dmax
    <= 140 % Rx, hot spots outside the GTV D0.035cc < 110 % Rx; cord PRV D0.35cc < 18 Gy.
    """
    from sbrtplan.workflow import penalties as P
    from sbrtplan.workflow.goals import resolve_goals
    from sbrtplan.workflow.problem import build_problem

    case, ps = spine
    protocol = load_protocol("bone_spine")
    sch = protocol.scheme("27/3")
    resolved = resolve_goals(protocol.goals_for(sch), protocol, ps.match)
    problem = build_problem(case, ps, resolved, sch.total_gy, sch.fractions)
    pens, limits = P.plan_penalties(ps, problem)
    R = problem.recipe.penalties   # the shipped recipe's values (workflow/recipes/default.yaml)
    rx = sch.total_gy
    by = {lim.label: lim for lim in limits}
    cover = next(lim for lim in limits if lim.normalizes)
    # the cold volume the coverage goal allows: 4.5 % of the PTV (95 % + 0.5 % margin) less the part of
    # the PTV inside the cord PRV, which PTV! leaves out; both volumes are the phantom's own
    ptv_cc, opt_cc = ps.target.volume_cc, ps.optimization_target.volume_cc
    assert opt_cc < ptv_cc
    assert cover.volume_fraction == pytest.approx((0.045 * ptv_cc - (ptv_cc - opt_cc)) / opt_cc, rel=1e-9)
    assert cover.limit_gy == pytest.approx(rx) and cover.priority > 0
    # coverage reference: TARGET_UNDER_REF x Rx in the core, graded down to BAND_LOW_REF x Rx at the PRV
    ref = cover.penalty.reference_gy / rx
    assert ref.max() == pytest.approx(R.target_under_ref) and ref.min() >= R.band_low_ref - 1e-9
    assert 0 < np.mean(ref < R.target_under_ref - 1e-9) < 0.2    # the band is a thin part of PTV!
    # hard organ limits are priority 0, hot spots and the PTV maximum are measured limits too
    cord = [lim for lim in limits if "SpinalCord" in lim.label]
    assert cord and all(lim.priority == 0 for lim in cord)
    # met on the optimiser's dose with the delivery margin
    assert any(lim.limit_gy == pytest.approx(R.hard_limit_margin * 18.0) for lim in cord)
    assert 0.9 <= R.hard_limit_margin <= 1.0
    # hot spots: the protocol's External-GTV D0.035cc < 110 % Rx, aimed under it, ranked below coverage
    hot = by["hot spot outside GTV D0.035cc"]
    assert rx < hot.limit_gy < 1.10 * rx and hot.priority > cover.priority
    assert not ps.boost.mask.ravel()[problem.voxels.indices[hot.penalty.rows]].any()
    assert hot.floor_gy > R.target_under_ref * rx                 # never pulls the target under Rx
    dmax = next(lim for lim in limits if lim.label.startswith("PTV Dmax"))
    assert rx < dmax.limit_gy <= 1.40 * rx
    # the organ limits and the PTV maximum rank above coverage: the optimiser's normalisation never
    # scales past them (coverage yields), as the plan's final normalisation
    from sbrtplan.optimizer.penalty import normalisation_caps
    caps = normalisation_caps(limits, cover)
    assert dmax in caps and all(lim in caps for lim in cord) and hot not in caps


def test_sector_beams_split_an_arc_into_parts_that_add_up_linearly():
    """The VMAT MU re-solve rests on the arc dose being ``sum_s MU_s x dose(sector s at 1 MU)``:
    each sector beam spans its own control points, and the sectors' doses at their MU add up to
    the arc's forward dose (the same sub-fields, split at the sector edges: within 0.5 % of the
    maximum, the arc-sampling tolerance of tests/test_forward_fast.py)."""
    from sbrtplan.beams import BeamSet
    from sbrtplan.dose_engine import forward_dose, forward_dose_by_beam

    case = make_phantom("spine", spacing_mm=5.0)
    ps = build_planning_structures(case, load_protocol("bone_spine"))
    mlc = MLCModel.millennium120()
    iso = tuple(float(v) for v in isocenter_for(ps.target))
    arc = ArcSpec(150.0, 210.0, "CW", collimator_deg=30.0, cp_spacing_deg=10.0 / 3)
    n_sec, per = 6, 3
    aps = [Aperture.rectangle(mlc, (-15.0 - 2 * s, 10.0 + s), (-15.0, 15.0 + s)) for s in range(n_sec)]
    mu = np.linspace(20.0, 45.0, n_sec)
    beam = arc_beam("A", arc, iso, mlc, aps, mu)
    subs = sector_beams(beam, per)
    assert len(subs) == n_sec and all(sb.mu == 1.0 for sb in subs)
    assert subs[2].control_points[0].gantry_deg == pytest.approx(170.0)
    idx = case.body.flat_indices()[::3]
    g = forward_dose_by_beam(case.density, case.grid, BeamSet(subs, 3, 27.0), idx)
    whole = forward_dose(case.density, case.grid, BeamSet([beam], 3, 27.0), voxel_indices=idx).ravel()[idx]
    assert np.max(np.abs(mu @ g - whole)) <= 5e-3 * whole.max()
    with pytest.raises(Exception, match="control points"):
        sector_beams(beam, 4)


def test_final_dose_two_lattices_on_a_2mm_grid():
    """On a plan's 2 mm grid the final dose is computed every 4 mm in-plane up to 60 mm from the
    PTV and every 8 mm beyond (the spacing the 4 mm test above validates): against the forward
    dose at a sample of all body voxels the error stays within 5 % of the maximum at worst and
    1 % for 99 % of them, as there, with about half the computed voxels of a single 4 mm lattice."""
    from sbrtplan.dose_engine import forward_dose
    from sbrtplan.workflow.final_dose import final_dose, final_dose_voxels

    case, ps, bs = _open_arc_on_spine(2.0)
    two = final_dose_voxels(case, ps.target)
    one = final_dose_voxels(case, ps.target, lattice_mm=4.0)
    assert (two.step, two.far_step, one.far_step) == (2, 4, 2)
    assert two.indices.size < 0.65 * one.indices.size
    fast = final_dose(case, ps.target, bs)
    sample = case.body.flat_indices()[::5]
    ref = forward_dose(case.density, case.grid, bs, voxel_indices=sample).ravel()[sample]
    err = np.abs(fast.ravel()[sample] - ref)
    assert err.max() <= 0.05 * ref.max()
    assert np.percentile(err, 99) <= 0.01 * ref.max()


def test_dao_objective_holds_the_rtog_falloff_of_the_spine_ptv(spine):
    """The VMAT DAO sees a fall-off profile instead of single-reference rings.

    RTOG 0813/0915 for the phantom's PTV (about 33 cc): D2cm "none" is 57.8 % Rx at 33 cc; the
    profile allows at most that much anywhere 2 cm or more from the PTV, falls with distance, and
    allows at most the recipe's ``penalties.falloff_max`` x Rx next to the PTV.
    """
    from sbrtplan.optimizer import ProfileOverdose
    from sbrtplan.protocols import rtog_limits
    from sbrtplan.workflow.goals import resolve_goals
    from sbrtplan.workflow.problem import build_problem
    from sbrtplan.workflow.vmat import _dao_stages

    case, ps = spine
    protocol = load_protocol("bone_spine")
    sch = protocol.scheme("27/3")
    problem = build_problem(case, ps, resolve_goals(protocol.goals_for(sch), protocol, ps.match), sch.total_gy,
                            sch.fractions)
    rx = sch.total_gy
    stages = _dao_stages(problem.stages, ps, problem)
    conformity = next(st for st in stages if st.name == "conformity")
    ring_names = {r.name for r in ps.rings}
    assert not any(getattr(getattr(t, "region", None), "name", None) in ring_names for t, _ in conformity.objectives)
    profiles = {t.region.name: t for t, _ in conformity.objectives if isinstance(t, ProfileOverdose)}
    near, far = profiles["fall-off within 2 cm"], profiles["beyond 2 cm (D2cm)"]
    d2cm_none = rtog_limits(ps.target.volume_cc).d2cm_none_pct / 100.0
    assert 0.5 < d2cm_none < 0.65
    assert far.profile_gy.max() <= d2cm_none * rx
    assert near.profile_gy.max() <= problem.recipe.penalties.falloff_max * rx + 1e-9
    # the allowed dose falls with the distance from the PTV
    dist = distance_map_mm(ps.target, max_distance_mm=60.0).ravel()[problem.voxels.indices[near.region.rows]]
    close, out = near.profile_gy[dist <= 3.0], near.profile_gy[dist >= 15.0]
    assert close.min() > out.max()


def test_mu_resolve_holds_the_rtog_d2cm_maximum(spine):
    """The sector-MU re-solve keeps a beam-entry lobe 2-3 cm from the PTV under D2cm "none".

    Two synthetic sectors cover the PTV alike; sector A is twice as efficient but also puts
    90 % of its target dose on 25 voxels 20-30 mm from the PTV, between the optimisation voxels'
    lattice points (the fall-off penalty, on the lattice, cannot see them).  RTOG 0813/0915 for the phantom's ~33 cc PTV:
    D2cm "none" 57.8 % Rx.  With the D2cm limit the lobe, relative to the dose covering 95 % of
    the PTV, stays under it; without it (weight 0) it does not, so the limit is what holds it.
    """
    from sbrtplan.beams import DeliveryLimits
    from sbrtplan.protocols import rtog_limits
    from sbrtplan.workflow import vmat as V
    from sbrtplan.workflow.final_dose import final_dose_voxels
    from sbrtplan.workflow.goals import resolve_goals
    from sbrtplan.workflow.problem import build_problem

    case, ps = spine
    protocol = load_protocol("bone_spine")
    sch = protocol.scheme("27/3")
    problem = build_problem(case, ps, resolve_goals(protocol.goals_for(sch), protocol, ps.match), sch.total_gy,
                            sch.fractions)
    vox = final_dose_voxels(case, ps.target, extra_indices=problem.voxels.indices)
    in_ptv = ps.target.mask.ravel()[vox.indices]
    dist = distance_map_mm(ps.target, max_distance_mm=40.0).ravel()[vox.indices]
    # between the optimisation voxels' lattice points, where the lattice misses a lobe's peak
    off_lattice = ~np.isin(vox.indices, problem.voxels.indices)
    lobe = np.flatnonzero((dist >= 20.0) & (dist <= 30.0) & off_lattice)[:25]
    assert lobe.size == 25
    width = 6.0
    g = np.zeros((2, vox.indices.size), np.float32)
    g[0, in_ptv] = 27.0 / 20.0          # Gy per MU: 20 MU of sector A alone give Rx
    g[1, in_ptv] = 27.0 / 40.0
    g[0, lobe] = 0.9 * 27.0 / 20.0
    mu0 = np.array([20.0, 4.0])      # the DAO's MU: sector A does the work (both give the same coverage)
    rows = np.flatnonzero(in_ptv)

    def lobe_over_d95(weight):
        from dataclasses import replace

        rec = replace(problem.recipe, penalties=replace(problem.recipe.penalties, w_d2cm_limit=weight))
        w, _, _ = V._resolve_mu(g, vox, ps, replace(problem, recipe=rec), mu0, DeliveryLimits(), width)
        d = w @ g
        return float(d[lobe].max() / np.percentile(d[rows], 5))

    none = rtog_limits(ps.target.volume_cc).d2cm_none_pct / 100.0
    assert 0.5 < none < 0.65
    assert lobe_over_d95(problem.recipe.penalties.w_d2cm_limit) <= none
    assert lobe_over_d95(0.0) > none


def test_normalisation_follows_the_protocol_priorities_and_names_what_binds(spine):
    """The plan's normalisation (bone standard, 27 Gy / 3 fx) on a dose built to the standard's numbers.

    A uniform 26 Gy over the PTV (96.3 % Rx) needs a scale of 27/26 for V100 >= 95 %.  The cord
    PRV is given 12.5 Gy everywhere, over its D1.2cc < 12.3 Gy limit already at scale 1: the
    hard organ limit (priority 1) outranks coverage (priority 3), so the scale stops at 0.995 x
    12.3 / 12.5 (the recipe's margin) and the cord limit is named with its excess at the coverage
    scale).  The coverage scale is the larger of the two coverage goals' (V90%Rx >= 99 % reaches into
    the PRV here, so it needs more than V100).
    """
    from sbrtplan.workflow.normalisation import normalisation
    from sbrtplan.workflow.recipe import default_recipe

    case, ps = spine
    protocol = load_protocol("bone_spine")
    sch = protocol.scheme("27/3")
    dose = np.zeros(case.grid.shape, np.float32)
    dose[ps.target.weights > 0] = 26.0
    dose[case.structures["SpinalCord_PRV02"].mask] = 12.5
    info = normalisation(dose, case, ps, protocol, sch, (), default_recipe()).as_dict()
    b = info["binding"]
    assert b is not None and "SpinalCord_PRV02" in b["goal"] and "D1.2cc" in b["goal"] and b["priority"] == 1
    assert b["excess_pct"] == pytest.approx(100 * (12.5 * info["coverage_scale"] / 12.3 - 1), abs=0.1)
    assert info["scale"] == pytest.approx(0.995 * 12.3 / 12.5, rel=1e-3)
    assert info["scale"] < info["coverage_scale"]                  # coverage yields
    assert info["set_by"].startswith(ps.target.name)

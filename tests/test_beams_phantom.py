"""Beams on the built-in phantoms: isocentre, collision-free templates, beamlet grids, deliverable segments."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import (BeamSet, CollisionModel, DeliveryLimits, MLCModel, Site, beamlet_grid_for_target,
                            candidate_directions, check_deliverability, collision_free_template,
                            estimate_plan_time, isocenter_for, segments_to_beam, sequence_fluence)
from sbrtplan.phantoms import make_phantom


@pytest.fixture(scope="module", params=[("spine", Site.SPINE), ("liver", Site.LIVER)])
def phantom(request):
    name, site = request.param
    return make_phantom(name, 3.0), site


def test_templates_are_collision_free_and_grids_cover_the_ptv(phantom):
    case, site = phantom
    ptv = case.structure("PTV")
    iso = isocenter_for(ptv)
    # the isocentre is the PTV centre: inside the PTV's bounding box
    lo, hi = ptv.grid.patient_from_index(np.array(ptv.bounding_box()))
    assert np.all(np.asarray(iso) >= np.minimum(lo, hi)) and np.all(np.asarray(iso) <= np.maximum(lo, hi))
    model = CollisionModel.default()
    beams = collision_free_template(site, 9, case, iso, model=model)
    assert len(beams) == 9
    assert len({(b.gantry_deg, b.couch_deg) for b in beams}) == 9
    assert all(model.check(b.gantry_deg, b.couch_deg, iso, case.body).ok for b in beams)
    assert any(b.couch_deg != 0 for b in beams)  # still non-coplanar
    mlc = MLCModel.millennium120()
    limits = DeliveryLimits()
    rng = np.random.default_rng(0)
    out = []
    for k, geo in enumerate(beams):
        grid = beamlet_grid_for_target(ptv, geo, mlc, beamlet_mm=5.0, margin_mm=5.0)
        # a PTV of 33-68 cc (diameter ~4-5 cm) plus 2 x 5 mm margin: 40-100 mm wide beam's-eye view
        w = grid.x_edges_mm[-1] - grid.x_edges_mm[0]
        assert 40.0 <= w <= 110.0
        f = grid.to_map(20.0 + 30.0 * rng.random(grid.n_beamlets))
        segs = sequence_fluence(f, grid, mlc, max_segments=8, min_segment_mu=limits.min_segment_mu)
        assert 1 <= len(segs) <= 8
        out.append(segments_to_beam(f"B{k + 1}", geo, segs, mlc))
    plan = BeamSet(out, n_fractions=3, prescription_gy=27.0)
    assert check_deliverability(plan, limits) == []
    # 9 beams: at least 9 x 15 s overhead plus the beam-on time at 600 MU/min
    t = estimate_plan_time(plan, limits)
    assert t >= 9 * limits.beam_overhead_s + plan.total_mu_per_fraction / 10.0


def test_candidate_directions_on_phantom(phantom):
    case, _ = phantom
    iso = isocenter_for(case.structure("PTV"))
    cands = candidate_directions(case, iso, gantry_step_deg=30, couches_deg=(0, 30, 330))
    # couch 0 posterior and anterior beams are always possible; 30-deg kicks lose lateral gantries
    pairs = {(b.gantry_deg, b.couch_deg) for b in cands}
    assert (0.0, 0.0) in pairs and (180.0, 0.0) in pairs
    assert sum(1 for b in cands if b.couch_deg == 30.0) < sum(1 for b in cands if b.couch_deg == 0.0)
    assert all(b.isocenter_mm == pytest.approx(iso) for b in cands)


def test_deliverability_survives_rtplan_round_trip(tmp_path):
    """The checker gives the same (empty) verdict on a plan read back from its RTPLAN."""
    rtplan = pytest.importorskip("sbrtplan.io.rtplan")
    from sbrtplan.beams import ArcSpec, BeamGeometry, aperture_from_columns, make_arc

    case = make_phantom("spine", 5.0)
    ptv = case.structure("PTV")
    iso = isocenter_for(ptv)
    mlc = MLCModel.millennium120()
    limits = DeliveryLimits()
    rng = np.random.default_rng(1)
    beams = []
    for k, (g, c) in enumerate(((160.0, 0.0), (200.0, 15.0))):
        geo = BeamGeometry(g, 0.0, c, iso)
        grid = beamlet_grid_for_target(ptv, geo, mlc)
        segs = sequence_fluence(grid.to_map(10 + 20 * rng.random(grid.n_beamlets)), grid, mlc, max_segments=6)
        beams.append(segments_to_beam(f"S{k + 1}", geo, segs, mlc))
    # a legal arc: the opening grows by one 5 mm column every 3 control points (<= 8.3 mm per 2 deg)
    spec = ArcSpec(181.0, 221.0, "CW")
    gantry = spec.gantry_angles_deg()
    grid = beamlet_grid_for_target(ptv, BeamGeometry(181.0, 0.0, 0.0, iso), mlc)
    n_rows, n_cols = grid.shape
    aps = []
    for k in range(gantry.size):
        half = min(n_cols // 2, 1 + k // 3)
        left = np.full(n_rows, n_cols // 2 - half)
        aps.append(aperture_from_columns(left, np.minimum(left + 2 * half, n_cols), grid, mlc,
                                         jaws_mm=(grid.x_edges_mm[0], grid.x_edges_mm[-1], grid.y_edges_mm[0],
                                                  grid.y_edges_mm[-1])))
    beams.append(make_arc("A1", gantry, aps, np.full(gantry.size, 4.0), direction="CW", isocenter_mm=iso, mlc=mlc))
    plan = BeamSet(beams, n_fractions=3, prescription_gy=27.0)
    assert check_deliverability(plan, limits) == []
    path = tmp_path / "plan.dcm"
    rtplan.write_rtplan(plan, path, case=case)
    back = rtplan.read_rtplan(path)
    assert len(back.beams) == 3
    assert check_deliverability(back, limits) == []
    assert back.total_mu_per_fraction == pytest.approx(plan.total_mu_per_fraction, rel=1e-4)

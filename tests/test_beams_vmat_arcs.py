"""The one arc model of VMAT planning (``beams.arcs``): collision-checked arcs, common sectors,
sector apertures with rounded leaf ends, and arcs built from sector apertures and MU."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import (Aperture, ArcSpec, BeamletGrid, CollisionModel, MLCModel, arc_beam, arc_collisions,
                            arc_sectors, arc_template, sector_aperture, sector_beams, vmat_arcs)
from sbrtplan.errors import GeometryError

from conftest import elliptic_body


@pytest.fixture(scope="module")
def body():
    return elliptic_body()


def test_centred_patient_keeps_the_full_arc_pair(body):
    # couch 0, isocentre in the body centre: every gantry angle clears (tests/test_beams_collision.py),
    # so the plan gets the template itself: 181 -> 179 CW at collimator 30, back CC at 330
    arcs = vmat_arcs(2, (0.0, 0.0, 0.0), body)
    assert arcs == arc_template(2)
    assert [(a.direction, a.collimator_deg) for a in arcs] == [("CW", 30.0), ("CC", 330.0)]
    assert all(a.span_deg == pytest.approx(358.0) for a in arcs)


def test_lateral_isocentre_cuts_the_arcs_to_their_clear_run(body):
    # isocentre 130 mm to the patient's left: the head meets the couch near gantry 250 (HFS), the
    # near-side obliques clear; each arc keeps its direction and collimator and loses the blocked part
    iso = (130.0, 0.0, 0.0)
    m = CollisionModel()
    assert arc_collisions(arc_template(1)[0], iso, body, m)  # the full arc would collide
    arcs = vmat_arcs(2, iso, body, model=m)
    assert [(a.direction, a.collimator_deg) for a in arcs] == [("CW", 30.0), ("CC", 330.0)]
    for a in arcs:
        assert arc_collisions(a, iso, body, m) == []
        assert 180.0 < a.span_deg < 358.0
        assert not np.any(np.isclose(a.gantry_angles_deg(), 250.0, atol=2.0))
    # sectors of one width over arcs of different spans: whole sectors inside each clear arc
    width, cut, n = arc_sectors(arcs, 6.0)
    for a, c, k in zip(arcs, cut, n):
        assert c.start_deg == a.start_deg and c.span_deg == pytest.approx(k * width, abs=1e-6)
        assert a.span_deg - width < c.span_deg <= a.span_deg + 1e-9
        assert arc_collisions(c, iso, body, m) == []


def test_arc_sectors_common_width():
    full = ArcSpec(181.0, 179.0, "CW")
    short = ArcSpec(200.0, 100.0, "CC")        # 100 deg
    width, arcs, n = arc_sectors([full, short], 6.0)
    assert width == pytest.approx(358.0 / 60) and n == [60, 16]
    assert arcs[0] is full                       # the longest arc is not touched
    assert arcs[1].span_deg == pytest.approx(16 * width) and arcs[1].stop_deg == pytest.approx(200.0 - 16 * width)
    with pytest.raises(GeometryError, match="shorter than one"):
        arc_sectors([full, ArcSpec(10.0, 13.0, "CW")], 6.0)


def test_sector_aperture_places_rounded_leaf_ends_inside_the_optimised_edges():
    mlc = MLCModel.millennium120().with_leakage(0.015, 1.4, 0.0)   # DLG of the shipped 6 MV machine file
    b = mlc.leaf_boundaries_mm
    y = b[(b >= -20.0) & (b <= 20.0)]                # 8 central 5 mm leaf pairs
    grid = BeamletGrid(np.arange(-30.0, 30.1, 5.0), y, np.ones((y.size - 1, 12), bool))
    left = np.full(y.size - 1, -10.0)
    right = np.full(y.size - 1, 15.0)
    right[3] = -9.0                                  # a 1 mm opening: narrower than the DLG
    ap = sector_aperture(grid, left, right, mlc, (-12.0, 17.0), (-20.0, 20.0))
    pairs = np.searchsorted(b, 0.5 * (y[1:] + y[:-1])) - 1
    h = 0.5 * mlc.dlg_mm
    # a rounded leaf end transmits as if its tip stood DLG/2 further out (LoSasso et al., Med Phys
    # 1998): the tips go DLG/2 inside the edges so that the delivered fluence has the optimised ones
    open_pairs = np.delete(pairs, 3)
    np.testing.assert_allclose(ap.leaf_x1_mm[open_pairs], -10.0 + h)
    np.testing.assert_allclose(ap.leaf_x2_mm[open_pairs], 15.0 - h)
    # the 1 mm opening closes to the minimum leaf gap about its centre
    assert ap.leaf_x2_mm[pairs[3]] - ap.leaf_x1_mm[pairs[3]] == pytest.approx(mlc.min_gap_mm)
    assert 0.5 * (ap.leaf_x1_mm[pairs[3]] + ap.leaf_x2_mm[pairs[3]]) == pytest.approx(-9.5)
    # pairs outside the grid closed (minimum gap) at the jaws' centre, under the Y jaws
    outside = np.setdiff1d(np.arange(mlc.n_pairs), pairs)
    np.testing.assert_allclose(ap.leaf_x2_mm[outside] - ap.leaf_x1_mm[outside], mlc.min_gap_mm)
    np.testing.assert_allclose(0.5 * (ap.leaf_x1_mm[outside] + ap.leaf_x2_mm[outside]), 2.5)
    assert ap.jaw_x_mm == (-12.0, 17.0) and ap.jaw_y_mm == (-20.0, 20.0)


def test_arc_beam_and_sector_beams_keep_every_sector_mu():
    mlc = MLCModel.millennium120()
    arc = ArcSpec(179.0, 181.0, "CC", collimator_deg=330.0, cp_spacing_deg=2.0)   # full arc back
    n_sec = 60
    aps = [Aperture.rectangle(mlc, (-10.0, 10.0 + s % 5), (-15.0, 15.0)) for s in range(n_sec)]
    mu = 2.0 + (np.arange(n_sec) % 7)
    beam = arc_beam("A", arc, (0.0, 0.0, 0.0), mlc, aps, mu)
    assert beam.arc_direction == "CC" and beam.collimator_deg == 330.0
    # 358 deg in 60 sectors of 5.97 deg, 3 control-point intervals each (<= 2 deg apart)
    g = np.array([cp.gantry_deg for cp in beam.control_points])
    assert g.size == 3 * n_sec + 1 and g[0] == pytest.approx(179.0) and g[-1] == pytest.approx(181.0)
    assert np.all(((g[:-1] - g[1:]) % 360.0) <= 2.0)
    assert beam.mu == pytest.approx(mu.sum())
    subs = sector_beams(beam, 3)
    assert len(subs) == n_sec and all(s.mu == 1.0 for s in subs)
    # each sector's MU is spread evenly over its own three intervals
    np.testing.assert_allclose(beam.segment_mu().reshape(n_sec, 3).sum(axis=1), mu, rtol=1e-9)
    assert subs[10].control_points[0].gantry_deg == pytest.approx(g[30])

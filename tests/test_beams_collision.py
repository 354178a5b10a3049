"""Collision model: known-colliding and known-safe gantry/couch pairs, candidate directions."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import ArcSpec, CollisionModel, arc_collisions, candidate_directions
from sbrtplan.beams.collision import body_surface_points
from sbrtplan.errors import InputError

from conftest import elliptic_body


@pytest.fixture(scope="module")
def body():
    return elliptic_body()


def test_default_yaml_matches_dataclass():
    assert CollisionModel.default() == CollisionModel()


def test_couch_zero_centred_isocentre_is_safe_at_every_gantry(body):
    # Isocentre in the body centre, couch 0: the farthest couch corner is
    # sqrt(265^2 + 160^2) = 310 mm from the isocentre and the body edge 150 mm,
    # both well inside the 400 mm head clearance minus 10/20 mm margins.
    m = CollisionModel()
    for g in range(0, 360, 10):
        r = m.check(g, 0.0, (0.0, 0.0, 0.0), body)
        assert r.ok, r.reason
        assert r.clearance_mm > 50.0


@pytest.mark.parametrize("gantry", [90.0, 270.0])
def test_couch_90_lateral_gantry_collides(body, gantry):
    # At couch 90 the couch long axis lies in the gantry rotation plane: a lateral
    # head (face 400 mm out, 330 mm radius) sweeps through the couch slab 100 mm below.
    r = CollisionModel().check(gantry, 90.0, (0.0, 0.0, 0.0), body)
    assert not r.ok
    assert "couch" in r.reason and r.clearance_mm < -100


def test_couch_90_gantry_0_is_safe(body):
    # Head above the patient: the anterior surface is 100 mm above the isocentre.
    assert CollisionModel().check(0.0, 90.0, (0.0, 0.0, 0.0), body).ok


def test_lateral_isocentre_blocks_far_posterior_oblique(body):
    # Isocentre 130 mm to the patient's left: the couch's right edge is 395 mm from it,
    # so the head at right-posterior obliques (gantry ~230-270 for HFS) meets the couch;
    # the mirror obliques on the near side stay clear.
    iso = (130.0, 0.0, 0.0)
    m = CollisionModel()
    assert not m.check(250.0, 0.0, iso, body).ok
    assert m.check(110.0, 0.0, iso, body).ok
    assert m.check(250.0, 0.0, (0.0, 0.0, 0.0), body).ok


def test_head_hits_wide_patient():
    # A 390 mm wide patient reaches 195 mm from the isocentre: a head 200 mm out
    # leaves 5 mm, less than the 20 mm body clearance (couch narrowed out of the way).
    wide = elliptic_body(half_width_mm=195.0)
    m = CollisionModel(head_radius_mm=200.0, head_face_radius_mm=150.0, couch_width_mm=300.0)
    r = m.check(90.0, 0.0, (0.0, 0.0, 0.0), wide)
    assert not r.ok and "patient" in r.reason
    assert -20.0 < r.clearance_mm < -5.0  # 5 mm gap - 20 mm clearance = -15 mm, +-5 mm sampling
    assert m.check(0.0, 0.0, (0.0, 0.0, 0.0), wide).ok  # 100 mm thick: head above clears


def test_candidate_directions_exclude_collisions(body):
    m = CollisionModel()
    couches = (0, 15, 30, 45, 315, 330, 345)
    cands = candidate_directions(body, (0.0, 0.0, 0.0), model=m, gantry_step_deg=20, couches_deg=couches)
    pairs = {(b.gantry_deg, b.couch_deg) for b in cands}
    # every coplanar direction is possible, every returned one is clear
    assert all((float(g), 0.0) in pairs for g in range(0, 360, 20))
    assert all(m.check(g, c, (0, 0, 0), body).ok for g, c in pairs)
    # at 45 deg couch the lateral gantry angles are lost, the vertical ones kept
    assert (0.0, 45.0) in pairs and (180.0, 45.0) in pairs
    assert (100.0, 45.0) not in pairs and (260.0, 45.0) not in pairs
    assert len(cands) < 7 * 18


def test_couch_rotated_partial_arc():
    body = elliptic_body()
    # an anterior partial arc at couch 45 clears; a full arc at couch 45 does not
    ok_arc = ArcSpec(300.0, 60.0, "CW", couch_deg=45.0)
    assert arc_collisions(ok_arc, (0.0, 0.0, 0.0), body) == []
    bad = arc_collisions(ArcSpec(181.0, 179.0, "CW", couch_deg=45.0), (0.0, 0.0, 0.0), body)
    assert bad and all(60.0 < a < 300.0 for a in bad)


def test_body_surface_extends_beyond_scan():
    body = elliptic_body()
    pts = body_surface_points(body, sampling_mm=5.0, extension_mm=100.0)
    lo, hi = body.grid.bounds_mm()
    assert pts[:, 2].min() < lo[2] - 90 and pts[:, 2].max() > hi[2] + 90


def test_bad_yaml(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("head_radius_mm: 400\nlaser_mm: 3\n")
    with pytest.raises(InputError, match="laser_mm"):
        CollisionModel.from_yaml(p)
    p.write_text("head_radius_mm: far\n")
    with pytest.raises(InputError, match="head_radius_mm"):
        CollisionModel.from_yaml(p)
    with pytest.raises(InputError, match="does not exist"):
        CollisionModel.from_yaml(tmp_path / "missing.yaml")


def test_collision_free_arc(body):
    from sbrtplan.beams import collision_free_arc

    full = collision_free_arc(0.0, (0.0, 0.0, 0.0), body)
    assert full.span_deg == pytest.approx(358.0)  # couch 0, centred: the full arc
    part = collision_free_arc(45.0, (0.0, 0.0, 0.0), body, direction="CC")
    # couch 45: the lateral angles are blocked (see the candidate test); the anterior or
    # posterior sector remains, checked at every control point
    assert part is not None and part.direction == "CC" and 60.0 <= part.span_deg < 180.0
    assert arc_collisions(part, (0.0, 0.0, 0.0), body) == []
    # couch 90: the longest clear sector is shorter than at couch 45
    side = collision_free_arc(90.0, (0.0, 0.0, 0.0), body)
    assert side is None or side.span_deg <= part.span_deg
    # a posterior arc at couch 15 (spine): the clear run around gantry 180
    post = collision_free_arc(15.0, (0.0, 0.0, 0.0), body, containing_deg=180.0)
    g = post.gantry_angles_deg()
    assert np.any(np.isclose(g, 180.0, atol=1.0)) and np.all(np.cos(np.deg2rad(g)) < 0.5)
    assert arc_collisions(post, (0.0, 0.0, 0.0), body) == []

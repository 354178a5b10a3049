"""Arcs, delivery limits, the deliverability checker and delivery-time estimates."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import (Aperture, ArcSpec, BeamGeometry, BeamletGrid, BeamSet, DeliveryLimits, MLCModel,
                            Technique, ViolationKind, arc_mu_bounds, arc_template, check_deliverability,
                            estimate_delivery_time, make_arc, max_leaf_travel_mm, sample_delivery, segments_to_beam,
                            sequence_fluence, with_fixed_jaws)
from sbrtplan.errors import GeometryError, InputError

MLC = MLCModel.millennium120()
ISO = (0.0, 0.0, 0.0)


def test_arc_spec_angles():
    a = ArcSpec(181.0, 179.0, "CW", cp_spacing_deg=2.0)
    g = a.gantry_angles_deg()
    assert a.span_deg == pytest.approx(358.0)
    assert g[0] == pytest.approx(181.0) and g[-1] == pytest.approx(179.0)
    steps = np.diff(g) % 360.0
    assert np.all(steps <= 2.0 + 1e-9) and np.all(steps > 0)
    cc = a.reversed()
    assert cc.direction == "CC" and cc.gantry_angles_deg()[1] == pytest.approx(177.0)
    with pytest.raises(GeometryError, match="cp_spacing_deg"):
        ArcSpec(181.0, 179.0, "CW", cp_spacing_deg=5.0)
    with pytest.raises(GeometryError, match="direction"):
        ArcSpec(181.0, 179.0, "UP")


def test_arc_template():
    arcs = arc_template(2)
    assert [a.direction for a in arcs] == ["CW", "CC"]
    assert arcs[1].start_deg == pytest.approx(179.0) and arcs[1].stop_deg == pytest.approx(181.0)
    assert arcs[0].collimator_deg != arcs[1].collimator_deg
    right = arc_template(1, partial="right")[0]
    g = right.gantry_angles_deg()
    # patient's right for HFS: source at -Xf, i.e. sin(gantry) <= 0 (ends at 181 and 1 deg)
    assert right.span_deg == pytest.approx(180.0)
    assert np.all(np.sin(np.deg2rad(g)) <= np.sin(np.deg2rad(1.0)) + 1e-9)
    with pytest.raises(InputError, match="n_arcs"):
        arc_template(0)


def _arc(leaf_x1, leaf_x2, mu_intervals, spacing=2.0, start=181.0, direction="CW"):
    n = len(leaf_x1)
    sign = 1 if direction == "CW" else -1
    g = (start + sign * spacing * np.arange(n)) % 360.0
    aps = []
    for a, b in zip(leaf_x1, leaf_x2):
        ap = Aperture.rectangle(MLC, (-10.0, 10.0), (-10.0, 10.0))
        x1 = ap.leaf_x1_mm.copy()
        x2 = ap.leaf_x2_mm.copy()
        x1[38:42] = a
        x2[38:42] = b
        aps.append(Aperture(x1, x2, (-40.0, 40.0), (-10.0, 10.0)))
    return make_arc("Arc1", g, aps, np.asarray(mu_intervals, float), direction=direction, isocenter_mm=ISO, mlc=MLC)


def test_max_leaf_travel():
    lim = DeliveryLimits()
    # 2 deg at 6 deg/s = 1/3 s -> 25 mm/s * 1/3 s = 8.3 mm
    assert max_leaf_travel_mm(lim, 2.0) == pytest.approx(25.0 / 3.0)
    # 20 MU at 600 MU/min = 2 s: the dose rate is the slower -> 50 mm
    assert max_leaf_travel_mm(lim, 2.0, mu=20.0) == pytest.approx(50.0)


def test_legal_arc_passes_and_leaf_jump_is_flagged_with_its_control_point():
    lim = DeliveryLimits()
    n = 11
    x1 = -10.0 + 5.0 * np.arange(n) / 2  # 2.5 mm per CP: within 8.3 mm per 2 deg
    x2 = x1 + 20.0
    mu = np.full(n - 1, 2.0)  # 1 MU/deg, inside 0.5..10
    assert check_deliverability(_arc(x1, x2, mu), lim) == []
    # jump of 20 mm into CP 6 and back at CP 7: 20 mm > 8.3 mm allowed in 2 deg
    y1, y2 = x1.copy(), x2.copy()
    y1[6] += 20.0
    y2[6] += 20.0
    v = check_deliverability(BeamSet([_arc(y1, y2, mu)], 3, 27.0), lim)
    assert [(x.kind, x.control_point) for x in v] == [(ViolationKind.LEAF_SPEED, 6), (ViolationKind.LEAF_SPEED, 7)]
    assert v[0].value == pytest.approx(22.5) and v[1].value == pytest.approx(17.5)
    assert v[0].limit == pytest.approx(25.0 / 3.0)
    assert "Arc1" in v[0].message and "5->6" in v[0].message
    # the same jump is legal when the interval carries 24 MU (2.4 s at 600 MU/min -> 60 mm),
    # but 24 MU in 2 deg (12 MU/deg) exceeds 10 MU/deg
    mu2 = mu.copy()
    mu2[5] = 24.0
    mu2[6] = 24.0
    v2 = check_deliverability(_arc(y1, y2, mu2), lim)
    assert {(x.kind, x.control_point) for x in v2} == {(ViolationKind.MU_PER_DEGREE, 6),
                                                      (ViolationKind.MU_PER_DEGREE, 7)}


def test_mu_per_degree_low_and_cp_spacing():
    lim = DeliveryLimits()
    n = 5
    x1 = np.full(n, -10.0)
    mu = np.array([2.0, 0.5, 2.0, 2.0])  # 0.25 MU/deg in interval 1->2
    v = check_deliverability(_arc(x1, x1 + 20, mu), lim)
    assert [(x.kind, x.control_point) for x in v] == [(ViolationKind.MU_PER_DEGREE, 2)]
    v = check_deliverability(_arc(x1, x1 + 20, 5 * mu.clip(2.0), spacing=5.0), lim)
    assert {x.kind for x in v} == {ViolationKind.CP_SPACING}


def test_gap_and_fixed_jaws():
    lim = DeliveryLimits(jaw_tracking=False)
    grid = BeamletGrid(np.arange(-20, 25, 5.0), np.arange(-20, 25, 5.0), np.ones((8, 8), bool))
    rng = np.random.default_rng(3)
    f = 10 + 30 * rng.random((8, 8))
    beam = segments_to_beam("F1", BeamGeometry(0.0), sequence_fluence(f, grid, MLC, max_segments=6), MLC)
    assert check_deliverability(beam, DeliveryLimits()) == []
    # jaws fitted per segment (as sequencing does) move between segments: not deliverable
    # with fixed jaws until the jaws are unified
    nested = segments_to_beam("F0", BeamGeometry(0.0), [(Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0)), 10.0),
                                                         (Aperture.rectangle(MLC, (-10.0, 10.0), (-10.0, 10.0)), 10.0)],
                              MLC)
    assert check_deliverability(nested, DeliveryLimits()) == []
    assert [(v.kind, v.control_point) for v in check_deliverability(nested, lim)] == \
        [(ViolationKind.JAW_MOTION, 2), (ViolationKind.JAW_MOTION, 3)]
    assert check_deliverability(with_fixed_jaws(nested), lim) == []
    assert check_deliverability(with_fixed_jaws(beam), lim) == []
    # a closed pair at 0.2 mm is below the 0.5 mm minimum gap (both CPs of segment 0)
    for cp in beam.control_points[:2]:
        cp.aperture.leaf_x2_mm[0] = cp.aperture.leaf_x1_mm[0] + 0.2
    v = check_deliverability(beam, DeliveryLimits())
    assert [(x.kind, x.control_point) for x in v] == [(ViolationKind.LEAF_GAP, 0), (ViolationKind.LEAF_GAP, 1)]
    # changing the aperture of one CP only moves leaves while the segment is on
    beam.control_points[0].aperture.leaf_x2_mm[0] += 0.3
    v = check_deliverability(beam, DeliveryLimits())
    assert (ViolationKind.SEGMENT_MOTION, 1) in [(x.kind, x.control_point) for x in v]


def test_small_segment_flagged():
    grid = BeamletGrid(np.arange(-10, 15, 5.0), np.arange(-10, 15, 5.0), np.ones((4, 4), bool))
    segs = sequence_fluence(np.full((4, 4), 10.0), grid, MLC)
    segs = segs + [(segs[0][0], 1.0)]
    beam = segments_to_beam("F2", BeamGeometry(0.0), segs, MLC)
    v = check_deliverability(beam, DeliveryLimits())
    assert [(x.kind, x.control_point) for x in v] == [(ViolationKind.SEGMENT_MU, 3)]


def test_arc_delivery_time():
    lim, fff = DeliveryLimits.flattened(), DeliveryLimits.fff()
    assert lim.max_dose_rate_mu_min == 600 and fff.max_dose_rate_mu_min == 1400
    spec = ArcSpec(181.0, 179.0, "CW")
    g = spec.gantry_angles_deg()
    aps = [Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0))] * g.size
    low = make_arc("A", g, aps, np.full(g.size - 1, 2.0), direction="CW", isocenter_mm=ISO, mlc=MLC)
    # 1 MU/deg: 358 MU take 35.8 s at 600 MU/min, the gantry 358/6 = 59.7 s -> gantry-limited
    assert estimate_delivery_time(low, lim) == pytest.approx(358 / 6 + lim.beam_overhead_s)
    high = make_arc("B", g, aps, np.full(g.size - 1, 6.0), direction="CW", isocenter_mm=ISO, mlc=MLC)
    # 3 MU/deg: 1074 MU at 10 MU/s = 107.4 s (dose-rate limited); FFF 1400 MU/min: 46 s < 59.7 s
    assert estimate_delivery_time(high, lim) == pytest.approx(1074 / 10 + lim.beam_overhead_s)
    assert estimate_delivery_time(high, fff) == pytest.approx(358 / 6 + fff.beam_overhead_s)


def test_step_and_shoot_delivery_time():
    lim = DeliveryLimits()
    a = Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0))
    b = Aperture.rectangle(MLC, (0.0, 20.0), (-20.0, 20.0))
    beam = segments_to_beam("S", BeamGeometry(0.0), [(a, 30.0), (b, 20.0)], MLC)
    # 50 MU at 10 MU/s = 5 s; leaves move 20 mm at 25 mm/s = 0.8 s (jaw 20 mm at 20 mm/s = 1 s,
    # the slower); 2 segments x 1 s; 15 s per beam
    assert estimate_delivery_time(beam, lim) == pytest.approx(5.0 + 1.0 + 2 * 1.0 + 15.0)


def test_make_arc_mu_and_sampling():
    spec = ArcSpec(0.0, 20.0, "CW", cp_spacing_deg=4.0)
    g = spec.gantry_angles_deg()
    aps = [Aperture.rectangle(MLC, (-10.0 - k, 10.0 + k), (-10.0, 10.0)) for k in range(g.size)]
    mu_cp = np.array([2.0, 4.0, 4.0, 4.0, 4.0, 2.0])
    beam = make_arc("A", g, aps, mu_cp, direction="CW", isocenter_mm=ISO, mlc=MLC)
    assert beam.technique is Technique.VMAT and beam.arc_direction == "CW"
    assert beam.mu == pytest.approx(mu_cp.sum())  # MU conserved
    s = sample_delivery(beam)
    assert sum(x.mu for x in s) == pytest.approx(beam.mu)
    gs = np.array([x.geometry.gantry_deg for x in s])
    assert np.all(np.diff(gs) <= 1.0 + 1e-9) and gs.min() > 0 and gs.max() < 20
    with pytest.raises(GeometryError, match="does not advance CC"):
        make_arc("A", g, aps, mu_cp, direction="CC", isocenter_mm=ISO, mlc=MLC)
    with pytest.raises(GeometryError, match="MU values"):
        make_arc("A", g, aps, mu_cp[:3], direction="CW", isocenter_mm=ISO, mlc=MLC)


def test_limits_yaml(tmp_path):
    p = tmp_path / "l.yaml"
    p.write_text("max_dose_rate_mu_min: 1000\nmu_per_deg_range: [0.3, 20]\njaw_tracking: false\n")
    lim = DeliveryLimits.from_yaml(p)
    assert lim.max_dose_rate_mu_min == 1000 and lim.mu_per_deg_range == (0.3, 20.0) and not lim.jaw_tracking
    p.write_text("max_dose_rate: 1000\n")
    with pytest.raises(InputError, match="max_dose_rate"):
        DeliveryLimits.from_yaml(p)
    with pytest.raises(InputError, match="section 'vhee'"):
        DeliveryLimits.from_yaml(p, "vhee")
    with pytest.raises(InputError, match="max_leaf_speed_mm_s"):
        DeliveryLimits(max_leaf_speed_mm_s=0)
    assert DeliveryLimits.flattened() == DeliveryLimits()


def test_arc_mu_bounds_match_make_arc_and_checker():
    lim = DeliveryLimits()
    spec = ArcSpec(181.0, 201.0, "CW", cp_spacing_deg=2.0)
    g = spec.gantry_angles_deg()
    a, lo, hi = arc_mu_bounds(g, "CW", lim)
    rng = np.random.default_rng(5)
    m = 4.0 * rng.random(g.size)
    aps = [Aperture.rectangle(MLC, (-10.0, 10.0), (-10.0, 10.0))] * g.size
    beam = make_arc("A", g, aps, m, direction="CW", isocenter_mm=ISO, mlc=MLC)
    # the matrix reproduces the interval MU that make_arc stores (DICOM meterset weights)
    assert np.allclose(a @ m, beam.segment_mu())
    assert np.allclose(lo, 0.5 * 2.0) and np.allclose(hi, 10.0 * 2.0)
    inside = (a @ m >= lo - 1e-9) & (a @ m <= hi + 1e-9)
    flagged = {v.control_point for v in check_deliverability(beam, lim) if v.kind is ViolationKind.MU_PER_DEGREE}
    assert flagged == {i + 1 for i in np.flatnonzero(~inside)}


def test_leaf_span():
    ap = Aperture.rectangle(MLC, (-10.0, 10.0), (-10.0, 10.0))
    x1, x2 = ap.leaf_x1_mm.copy(), ap.leaf_x2_mm.copy()
    x1[30], x2[30] = -170.0, -160.0  # one pair far out on the X1 side: 170 mm from the others' tips
    far = Aperture(x1, x2, (-170.0, 10.0), (-30.0, 10.0))
    beam = segments_to_beam("W", BeamGeometry(0.0), [(far, 10.0)], MLC)
    v = check_deliverability(beam, DeliveryLimits())
    assert {(x.kind, x.control_point) for x in v} == {(ViolationKind.LEAF_SPAN, 0), (ViolationKind.LEAF_SPAN, 1)}


def test_sliding_window_leaf_speed():
    # 10 MU at 600 MU/min take 1 s: a sliding leaf may travel 25 mm, not 40 mm
    from sbrtplan.beams import Beam, ControlPoint

    a = Aperture.rectangle(MLC, (-20.0, -10.0), (-10.0, 10.0))
    b_ok = Aperture.rectangle(MLC, (5.0, 15.0), (-10.0, 10.0))
    b_far = Aperture.rectangle(MLC, (20.0, 30.0), (-10.0, 10.0))
    for end, n_viol in ((b_ok, 0), (b_far, 1)):
        beam = Beam("SW", [ControlPoint(0.0, a, 0.0), ControlPoint(0.0, end, 1.0)], 10.0, MLC, ISO,
                    technique=Technique.SLIDING_WINDOW)
        v = check_deliverability(beam, DeliveryLimits())
        assert len(v) == n_viol and all(x.kind is ViolationKind.LEAF_SPEED and x.control_point == 1 for x in v)


def test_plan_time_adds_gantry_and_couch_moves():
    from sbrtplan.beams import estimate_plan_time

    lim = DeliveryLimits()
    ap = Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0))
    b1 = segments_to_beam("B1", BeamGeometry(180.0, 0.0, 0.0), [(ap, 60.0)], MLC)
    b2 = segments_to_beam("B2", BeamGeometry(150.0, 0.0, 30.0), [(ap, 60.0)], MLC)
    plan = BeamSet([b1, b2], 3, 27.0)
    each = 60.0 / 10.0 + lim.segment_overhead_s + lim.beam_overhead_s
    # gantry 30 deg at 6 deg/s = 5 s; couch 30 deg at 3 deg/s = 10 s (the slower)
    assert estimate_plan_time(plan, lim) == pytest.approx(2 * each + 10.0)


def test_vmat_mu_headroom_survives_normalisation():
    """The VMAT path keeps every sector's MU per degree 20 % inside the machine range (DAO bounds
    [1.2 lo, 0.8 hi]) so that the final normalisation (one MU scale for the plan) keeps the arcs
    deliverable for any scale in [1/1.2, 1/0.8] = [0.83, 1.25]; beyond that the checker flags it."""
    from sbrtplan.beams import arc_beam

    lim = DeliveryLimits()
    lo, hi = lim.mu_per_deg_range
    n_sec, width = 60, 358.0 / 60
    aps = [Aperture.rectangle(MLC, (-15.0, 15.0), (-15.0, 15.0)) for _ in range(n_sec)]
    # sectors at the DAO's extreme bounds, alternating
    mu = np.where(np.arange(n_sec) % 2 == 0, 1.2 * lo, 0.8 * hi) * width
    arc = ArcSpec(181.0, 179.0, "CW", collimator_deg=30.0, cp_spacing_deg=2.0)
    beam = arc_beam("A", arc, ISO, MLC, aps, mu)

    def scaled(s):
        return BeamSet([with_mu_scale(beam, s)], n_fractions=3, prescription_gy=27.0)

    for s in (1.0, 1 / 1.2 + 1e-6, 1 / 0.8 - 1e-6):
        v = check_deliverability(scaled(s), lim)
        assert not [x for x in v if x.kind is ViolationKind.MU_PER_DEGREE], (s, v[:2])
    for s in (0.8, 1.3):
        v = check_deliverability(scaled(s), lim)
        assert any(x.kind is ViolationKind.MU_PER_DEGREE for x in v)


def with_mu_scale(beam, s):
    from sbrtplan.beams import with_mu
    return with_mu(beam, beam.mu * s)

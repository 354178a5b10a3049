"""Verification plans on the QA phantoms: geometry, beam transfer, chamber dose, RTPLAN + RTDOSE."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel, Technique
from sbrtplan.errors import InputError
from sbrtplan.phantoms import make_phantom
from sbrtplan.qa import (AxisMode, PlaneOrientation, chamber_samples, load_criteria, plane_from_volume,
                         read_plane_csv, transfer_beams, verify_on_phantom, write_verification)

MLC = MLCModel.millennium120()
PATIENT_ISO = (10.0, 20.0, -5.0)


def _small_plan() -> BeamSet:
    """A short arc (4 control points, 30 degrees, leaves moving, couch 10) and a static field (collimator 15)."""
    cps = [ControlPoint(g, Aperture.rectangle(MLC, (-20.0 + 2 * k, 20.0), (-20.0, 20.0)), k / 3)
           for k, g in enumerate([345.0, 355.0, 5.0, 15.0])]
    arc = Beam("arc", cps, 200.0, MLC, PATIENT_ISO, couch_deg=10.0, technique=Technique.VMAT, arc_direction="CW")
    field = Beam("f90", [ControlPoint(90.0, Aperture.rectangle(MLC, (-20.0, 25.0), (-20.0, 20.0)), 1.0)], 100.0,
                 MLC, PATIENT_ISO, collimator_deg=15.0)
    return BeamSet([arc, field], n_fractions=3, prescription_gy=27.0, label="test")


@pytest.fixture(scope="module")
def slab():
    return make_phantom("qa_slab", 2.0)


@pytest.fixture(scope="module")
def verification(slab):
    # 10-degree arc sampling keeps the test short; the dose is still the engine's forward dose
    crit = replace(load_criteria(), max_gantry_step_deg=10.0)
    return verify_on_phantom(slab, _small_plan(), region_half_mm=36.0, criteria=crit)


def test_phantom_dimensions(slab):
    # analytic volumes: 30 x 30 x 20 cm = 18000 cc; cylinder pi * 15^2 * 18 = 12723 cc.  Sub-voxel
    # occupancy (2 x 2 x 2 points) makes the boundary exact for the box and within 0.5 % for the circle.
    assert slab.structures["External"].volume_cc == pytest.approx(18000.0, rel=1e-3)
    cyl = make_phantom("qa_cylinder", 4.0)
    assert cyl.structures["External"].volume_cc == pytest.approx(math.pi * 150.0 ** 2 * 180.0 / 1000.0, rel=5e-3)
    for case in (slab, cyl):
        k = case.grid.index_from_patient(case.metadata["reference_point_mm"])
        assert np.allclose(k, np.rint(k))          # chamber centre on a voxel centre
        kk = tuple(int(v) for v in np.rint(k))
        assert case.density[kk] == pytest.approx(1.0)
        assert case.density[0, 0, 0] < 0.01        # air around the phantom
    # 20 cm stack: the anterior surface 100 mm above the reference point
    assert slab.metadata["anterior_surface_y_mm"] == -100.0


def test_transfer_keeps_mu_and_control_points():
    plan = _small_plan()
    v = transfer_beams(plan, (0.0, 0.0, 0.0), gantry=AxisMode.PLANNED, couch=AxisMode.ZERO)
    assert v.n_fractions == 1 and v.prescription_gy == pytest.approx(9.0)
    for a, b in zip(plan.beams, v.beams):
        assert b.mu == a.mu and b.isocenter_mm == (0.0, 0.0, 0.0) and b.couch_deg == 0.0
        assert b.collimator_deg == a.collimator_deg
        assert [c.gantry_deg for c in b.control_points] == [c.gantry_deg for c in a.control_points]
        assert [c.cumulative_weight for c in b.control_points] == [c.cumulative_weight for c in a.control_points]
        for ca, cb in zip(a.control_points, b.control_points):
            assert np.array_equal(ca.aperture.leaf_x1_mm, cb.aperture.leaf_x1_mm)
    z = transfer_beams(plan, (0.0, 0.0, 0.0), gantry=AxisMode.ZERO, couch=AxisMode.PLANNED)
    assert all(c.gantry_deg == 0.0 for b in z.beams for c in b.control_points)
    assert z.beams[0].couch_deg == 10.0 and z.beams[0].arc_direction == "NONE"


def test_plan_without_mu_is_refused():
    plan = _small_plan()
    plan.beams[1] = replace(plan.beams[1], mu=0.0)
    with pytest.raises(InputError) as exc:
        transfer_beams(plan, (0.0, 0.0, 0.0), source="plan.dcm")
    assert "no MU" in str(exc.value) and "\n" not in str(exc.value)


def test_chamber_samples_volume():
    ch = load_criteria().chamber("semiflex")
    pts = chamber_samples(ch, (0.0, 0.0, 0.0), "z", 0.25)
    # lattice points x cell volume approximates the cylinder volume pi r^2 L (0.154 cc) within 3 %
    assert pts.shape[0] * 0.25 ** 3 / 1000.0 == pytest.approx(ch.volume_cc, rel=0.03)
    assert np.max(np.abs(pts[:, 2])) <= 0.5 * ch.length_mm + 1e-9
    assert np.max(np.hypot(pts[:, 0], pts[:, 1])) <= ch.radius_mm + 1e-9


def test_chamber_dose_matches_independent_engine_point_dose(verification):
    """Chamber dose (volume average over the 0.016 cc PinPoint of the full 3D dose on the 2 mm grid) against the
    engine evaluated at the point itself on another phantom grid (2.5 mm, a separate few-point computation)."""
    from sbrtplan.dose_engine import engine_point_dose

    fine = make_phantom("qa_slab", 2.5)
    direct = sum(engine_point_dose(b, fine.density, fine.grid, verification.reference_point_mm)
                 for b in verification.beam_set.beams)
    # 0.5 %: the requirement; the fields are 4 x 4 cm or larger, flat within 1.5 mm of the centre,
    # so volume averaging over the PinPoint changes the dose by far less
    assert verification.chamber_dose_gy == pytest.approx(direct, rel=5e-3)
    assert verification.point_dose_gy == pytest.approx(direct, rel=5e-3)
    # 300 MU at about 10 cm depth of a 4-5 cm field: about 0.6-0.7 cGy/MU, i.e. 1.5-2.5 Gy in total
    assert 1.5 < direct < 2.5


def test_rtdose_plane_equals_engine_plane(verification, tmp_path):
    from sbrtplan.dose_engine import forward_dose
    from sbrtplan.io import read_rtdose, read_rtplan

    summary = write_verification(verification, tmp_path, write_ct=False, source_rtplan="test")
    rd = read_rtdose(tmp_path / "RTDOSE.dcm")
    plane = plane_from_volume(rd.dose_gy, rd.grid, verification.reference_point_mm, PlaneOrientation.CORONAL)
    # the engine on the plane's voxels alone (a separate computation from the verification's whole region)
    case = verification.case
    g = case.grid
    k = np.rint(g.index_from_patient(verification.reference_point_mm)).astype(int)
    x, y, z = g.axis_coordinates_mm()
    sel = np.zeros(g.shape, bool)
    near_x, near_z = np.abs(x) <= 36.0, np.abs(z) <= 36.0
    sel[:, k[1], :] = near_z[:, None] & near_x[None, :]
    crit = load_criteria()
    engine = forward_dose(case.density, g, verification.beam_set, voxel_indices=np.flatnonzero(sel),
                          max_gantry_step_deg=10.0, max_leaf_step_mm=crit.max_leaf_step_mm)[:, k[1], :]
    ju = np.abs(plane.u_mm) <= 36.0
    jv = np.abs(plane.v_mm) <= 36.0
    got = plane.dose_gy[np.ix_(jv, ju)]
    want = engine[np.ix_(near_z, near_x)]
    # RTDOSE stores 32-bit integers x scaling (max / 4e9); the two computations differ only in float rounding
    assert np.max(np.abs(got - want)) <= 1e-4 * want.max()
    # an RTDOSE given as a measurement is read back as the same plane in the registration frame
    from sbrtplan.qa import read_measured_plane

    as_meas = read_measured_plane(tmp_path / "RTDOSE.dcm", reference_point_mm=verification.reference_point_mm)
    assert np.allclose(as_meas.u_mm, verification.plane.u_mm) and np.allclose(as_meas.v_mm, verification.plane.v_mm)
    assert np.max(np.abs(as_meas.dose_gy - verification.plane.dose_gy)) <= 1e-6 * verification.plane.max_gy
    csv_plane = read_plane_csv(tmp_path / "calculated_plane.csv")
    assert np.allclose(csv_plane.dose_gy, verification.plane.dose_gy, rtol=1e-5, atol=1e-6)
    # the verification RTPLAN holds the transferred beams: same MU, isocentre on the chamber, one fraction
    back = read_rtplan(tmp_path / "RTPLAN.dcm")
    assert back.n_fractions == 1
    assert [round(b.mu, 3) for b in back.beams] == [200.0, 100.0]
    assert np.allclose(back.beams[0].isocenter_mm, verification.reference_point_mm)
    assert summary["chamber"]["volume_averaged_dose_gy"] == pytest.approx(verification.chamber_dose_gy, abs=1e-5)

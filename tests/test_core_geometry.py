"""Grid transforms and IEC 61217 beam geometry."""

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, BeamGeometry, ControlPoint, MLCModel, sample_delivery
from sbrtplan.case import Case, DensityCalibration, Grid
from sbrtplan.errors import InputError


def test_grid_roundtrip_oblique():
    # A grid whose columns run along -x and rows along +z (a sagittal-ish orientation).
    d = np.column_stack([[-1, 0, 0], [0, 0, 1], [0, 1, 0]]).astype(float)
    g = Grid((4, 5, 6), (1.0, 2.0, 3.0), (10.0, -5.0, 7.0), d)
    idx = np.array([[3, 4, 5], [0, 0, 0], [1.5, 2.25, 0.5]])
    pts = g.patient_from_index(idx)
    np.testing.assert_allclose(g.index_from_patient(pts), idx, atol=1e-12)
    # voxel [0, 0, 1] is one column step along -x of 1 mm
    np.testing.assert_allclose(g.patient_from_index([0, 0, 1]), [9.0, -5.0, 7.0])
    # one slice step (k) is 3 mm along +y
    np.testing.assert_allclose(g.patient_from_index([1, 0, 0]), [10.0, -2.0, 7.0])


def test_grid_rejects_bad_input():
    with pytest.raises(InputError, match="spacing_mm"):
        Grid((2, 2, 2), (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="orthonormal"):
        Grid((2, 2, 2), (1, 1, 1), direction=np.ones((3, 3)))


def test_with_spacing_covers_same_box():
    g = Grid((10, 20, 30), (3.0, 3.0, 2.5), (0, 0, 0))
    f = g.with_spacing(2.0)
    lo, hi = g.bounds_mm()
    flo, fhi = f.bounds_mm()
    assert np.all(flo >= lo - 1e-9) and np.all(fhi <= hi + 1e-9)
    assert np.all((hi - lo) - (fhi - flo) < 2.0 + 1e-9)


def test_default_density_table_water_and_air():
    cal = DensityCalibration.default()
    assert cal(np.array([0.0]))[0] == pytest.approx(1.0)
    assert cal(np.array([-1000.0]))[0] == pytest.approx(0.001, abs=1e-4)
    # monotone over the clinical range
    hu = np.linspace(-1000, 3000, 200)
    assert np.all(np.diff(cal(hu)) >= 0)


def test_case_unknown_structure_names_available():
    g = Grid((2, 2, 2), (1, 1, 1))
    c = Case("x", g, np.zeros(g.shape))
    with pytest.raises(Exception, match="available: none"):
        c.structure("PTV")


# ----------------------------------------------------------------- IEC 61217
@pytest.mark.parametrize("gantry, source_dir", [
    (0, (0, -1, 0)),     # HFS, gantry 0: source above the patient = anterior (-y)
    (90, (1, 0, 0)),     # gantry 90: source at the patient's left (+x)
    (180, (0, 1, 0)),    # posterior
    (270, (-1, 0, 0)),   # patient's right
])
def test_source_position_hfs(gantry, source_dir):
    b = BeamGeometry(gantry, isocenter_mm=(10, 20, 30), sad_mm=1000)
    np.testing.assert_allclose(b.source_mm, np.array([10, 20, 30]) + 1000 * np.array(source_dir), atol=1e-9)


def test_couch_rotation_moves_source_along_patient_axis():
    # Couch 90 (counter-clockwise seen from above) with gantry 90: the source,
    # at IEC +X in the room, lies towards the patient's feet (-z) for HFS.
    b = BeamGeometry(90, couch_deg=90)
    np.testing.assert_allclose(b.source_mm / 1000, [0, 0, -1], atol=1e-12)


def test_ffs_flips_left_right():
    b = BeamGeometry(90, patient_position="FFS")
    np.testing.assert_allclose(b.source_mm / 1000, [-1, 0, 0], atol=1e-12)


def test_collimator_rotates_leaf_direction():
    # gantry 0: Xb = patient left; collimator 90 turns Xb onto IEC +Y = superior (HFS)
    r0 = BeamGeometry(0).rotation
    r90 = BeamGeometry(0, collimator_deg=90).rotation
    np.testing.assert_allclose(r0[:, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(r90[:, 0], [0, 0, 1], atol=1e-12)


def test_projection_magnifies_with_distance():
    b = BeamGeometry(0, sad_mm=1000)
    # a point 100 mm upstream (towards the source) and 10 mm to the left projects to 10*1000/900
    uv, dist = b.project_to_isocenter_plane(np.array([[10.0, -100.0, 0.0]]))
    assert dist[0] == pytest.approx(900.0)
    assert uv[0, 0] == pytest.approx(10 * 1000 / 900)


def test_sample_delivery_arc_steps_at_most_one_degree():
    mlc = MLCModel.millennium120()
    ap = Aperture.rectangle(mlc, (-20, 20), (-20, 20))
    cps = [ControlPoint(g, ap, w) for g, w in ((180, 0.0), (184, 0.5), (188, 1.0))]
    beam = Beam("arc", cps, mu=200, mlc=mlc, isocenter_mm=(0, 0, 0), arc_direction="CW")
    s = sample_delivery(beam)
    assert len(s) == 8
    assert sum(x.mu for x in s) == pytest.approx(200)
    assert s[0].geometry.gantry_deg == pytest.approx(180.5)
    # counter-clockwise from 2 to 358 passes 0
    cps = [ControlPoint(2, ap, 0.0), ControlPoint(358, ap, 1.0)]
    beam = Beam("arc", cps, mu=10, mlc=mlc, isocenter_mm=(0, 0, 0), arc_direction="CC")
    g = [x.geometry.gantry_deg for x in sample_delivery(beam)]
    assert len(g) == 4 and g[0] == pytest.approx(1.5)

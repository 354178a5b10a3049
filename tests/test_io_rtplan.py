"""RTPLAN writing and reading: round trips for every delivery technique, DICOM validity
(dciodvfy) and the clinical plans in the reference data."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel, Technique, sample_delivery
from sbrtplan.errors import InputError
from sbrtplan.io.rtplan import read_rtplan, write_rtplan
from sbrtplan.phantoms import make_phantom


@pytest.fixture(scope="module")
def case():
    # 4 mm keeps the phantom small; the plan geometry does not depend on the grid.
    return make_phantom("spine", spacing_mm=4.0)


def _iso(case):
    return tuple(float(v) for v in case.structure("PTV").centroid_mm())


def _static(case, mlc):
    ap = Aperture.rectangle(mlc, (-22.5, 31.0), (-27.3, 33.1))
    return Beam("G40 static", [ControlPoint(40.0, ap, 0.0), ControlPoint(40.0, ap.copy(), 1.0)], 123.456, mlc,
                _iso(case), collimator_deg=15.0, couch_deg=350.0, technique=Technique.STATIC)


def _step_and_shoot(case, mlc):
    # three segments; the MLC moves between them while the beam is off (zero-MU intervals)
    shapes = [Aperture.rectangle(mlc, (-30.0 + 7 * s, 25.0 - 4 * s), (-25.0, 25.0)) for s in range(3)]
    w = [0.0, 0.5, 0.5, 0.8, 0.8, 1.0]
    aps = [shapes[0], shapes[0], shapes[1], shapes[1], shapes[2], shapes[2]]
    cps = [ControlPoint(300.0, a.copy(), wi) for a, wi in zip(aps, w)]
    return Beam("SS 300", cps, 201.25, mlc, _iso(case), technique=Technique.STEP_AND_SHOOT)


def _sliding_window(case, mlc, n=21):
    # both banks sweep from -40 to +40 mm with a leaf-dependent gap: unidirectional leaf motion
    rng = np.random.default_rng(7)
    gap = 5.0 + 10.0 * rng.random(mlc.n_pairs)
    cps = []
    for i in range(n):
        t = i / (n - 1)
        x1 = -40.0 + 80.0 * t - gap * (1 - t)
        x2 = x1 + gap
        cps.append(ControlPoint(90.0, Aperture(x1, x2, (-45.0, 45.0), (-30.0, 30.0)), t))
    return Beam("SW 90", cps, 333.333, mlc, _iso(case), collimator_deg=90.0, technique=Technique.SLIDING_WINDOW)


def _vmat(case, mlc, direction="CC", n=37):
    cps = []
    for i in range(n):
        g = (179.0 - 10.0 * i) % 360.0 if direction == "CC" else (181.0 + 10.0 * i) % 360.0
        half = 15.0 + 5.0 * np.sin(i / 4.0)
        ap = Aperture.rectangle(mlc, (-half, half + 2.0), (-20.0, 20.0))
        cps.append(ControlPoint(g, ap, i / (n - 1)))
    return Beam("Arc " + direction, cps, 456.789, mlc, _iso(case), collimator_deg=30.0,
                technique=Technique.VMAT, arc_direction=direction)


def _assert_same_beam(a: Beam, b: Beam):
    assert b.technique == a.technique
    assert b.name == a.name
    # MU are written with 5 decimals: 1e-5 MU is far below a linac's 0.01-0.1 MU resolution.
    assert b.mu == pytest.approx(a.mu, abs=1e-5)
    assert b.collimator_deg == pytest.approx(a.collimator_deg % 360, abs=1e-4)
    assert b.couch_deg == pytest.approx(a.couch_deg % 360, abs=1e-4)
    assert np.allclose(b.isocenter_mm, a.isocenter_mm, atol=1e-3)
    assert b.energy_mv == pytest.approx(a.energy_mv)
    assert b.sad_mm == pytest.approx(a.sad_mm)
    assert np.allclose(b.mlc.leaf_boundaries_mm, a.mlc.leaf_boundaries_mm, atol=1e-3)
    assert len(b.control_points) == len(a.control_points)
    for ca, cb in zip(a.control_points, b.control_points):
        # positions are written to 1 um, ten times finer than any MLC's positioning resolution
        assert np.allclose(cb.aperture.leaf_x1_mm, ca.aperture.leaf_x1_mm, atol=1e-3)
        assert np.allclose(cb.aperture.leaf_x2_mm, ca.aperture.leaf_x2_mm, atol=1e-3)
        assert np.allclose(cb.aperture.jaw_x_mm, ca.aperture.jaw_x_mm, atol=1e-3)
        assert np.allclose(cb.aperture.jaw_y_mm, ca.aperture.jaw_y_mm, atol=1e-3)
        assert cb.gantry_deg == pytest.approx(ca.gantry_deg % 360, abs=1e-4)
        assert cb.cumulative_weight == pytest.approx(ca.cumulative_weight, abs=1e-7)
    # MU per segment (what the dose engine integrates) survive too
    assert np.allclose(b.segment_mu(), a.segment_mu(), atol=1e-3)


@pytest.mark.parametrize("kind", ["static", "step_and_shoot", "sliding_window", "vmat_cc", "vmat_cw"])
def test_round_trip_every_technique(case, tmp_path, kind):
    mlc = MLCModel.hd120() if kind == "sliding_window" else MLCModel.millennium120()
    beam = {"static": _static, "step_and_shoot": _step_and_shoot, "sliding_window": _sliding_window,
            "vmat_cc": lambda c, m: _vmat(c, m, "CC"), "vmat_cw": lambda c, m: _vmat(c, m, "CW")}[kind](case, mlc)
    bs = BeamSet([beam], n_fractions=3, prescription_gy=27.0, machine_name="TrueBeam1")
    uid = write_rtplan(bs, tmp_path / "plan.dcm", case=case, target_name="PTV")
    back = read_rtplan(tmp_path / "plan.dcm")
    assert back.n_fractions == 3 and back.prescription_gy == pytest.approx(27.0)
    assert back.machine_name == "TrueBeam1"
    assert back.total_mu_per_fraction == pytest.approx(bs.total_mu_per_fraction, abs=1e-5)
    _assert_same_beam(beam, back.beams[0])
    if beam.is_arc:
        assert back.beams[0].arc_direction == beam.arc_direction
        # the sampled delivery follows the same gantry path (a CC arc must not be read back as CW)
        g_in = [s.geometry.gantry_deg for s in sample_delivery(beam)]
        g_out = [s.geometry.gantry_deg for s in sample_delivery(back.beams[0])]
        assert np.allclose(g_in, g_out, atol=1e-3)
    ds = pydicom.dcmread(tmp_path / "plan.dcm")
    assert ds.SOPInstanceUID == uid == back.beams[0].metadata["rtplan_uid"]
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.StudyInstanceUID == case.patient.study_instance_uid
    assert ds.FrameOfReferenceUID == case.patient.frame_of_reference_uid
    assert ds.PatientID == case.patient.patient_id


def test_multi_beam_plan_contents(case, tmp_path):
    mlc = MLCModel.millennium120()
    beams = [_static(case, mlc), _vmat(case, mlc, "CW"), _step_and_shoot(case, mlc)]
    bs = BeamSet(beams, n_fractions=5, prescription_gy=35.0)
    case.metadata["rtstruct_roi_numbers"] = {"PTV": 7}
    try:
        write_rtplan(bs, tmp_path / "plan.dcm", case=case, rtstruct_uid="1.2.3.4", target_name="PTV")
    finally:
        case.metadata.pop("rtstruct_roi_numbers")
    ds = pydicom.dcmread(tmp_path / "plan.dcm")
    fg = ds.FractionGroupSequence[0]
    assert int(fg.NumberOfFractionsPlanned) == 5 and int(fg.NumberOfBeams) == 3
    mu = {int(r.ReferencedBeamNumber): float(r.BeamMeterset) for r in fg.ReferencedBeamSequence}
    assert mu == pytest.approx({i + 1: b.mu for i, b in enumerate(beams)}, abs=1e-5)
    dref = ds.DoseReferenceSequence[0]
    assert dref.DoseReferenceType == "TARGET" and float(dref.TargetPrescriptionDose) == pytest.approx(35.0)
    assert dref.DoseReferenceStructureType == "VOLUME" and int(dref.ReferencedROINumber) == 7
    assert ds.RTPlanGeometry == "PATIENT"
    assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    for b_ds, beam in zip(ds.BeamSequence, beams):
        cps = b_ds.ControlPointSequence
        assert int(b_ds.NumberOfControlPoints) == len(cps) == len(beam.control_points)
        w = [float(c.CumulativeMetersetWeight) for c in cps]
        assert w[0] == 0.0 and w[-1] == float(b_ds.FinalCumulativeMetersetWeight) and np.all(np.diff(w) >= 0)
        kinds = [p.RTBeamLimitingDeviceType for p in cps[0].BeamLimitingDevicePositionSequence]
        assert kinds == ["ASYMX", "ASYMY", "MLCX"]
        assert b_ds.BeamType == ("STATIC" if beam.technique == Technique.STATIC else "DYNAMIC")
    back = read_rtplan(tmp_path / "plan.dcm")
    assert [b.technique for b in back.beams] == [b.technique for b in beams]


def test_dciodvfy_reports_no_errors(case, tmp_path):
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    mlc = MLCModel.millennium120()
    bs = BeamSet([_static(case, mlc), _vmat(case, mlc), _sliding_window(case, mlc)], 3, 24.0)
    write_rtplan(bs, tmp_path / "plan.dcm", case=case, target_name="PTV")
    out = subprocess.run([exe, str(tmp_path / "plan.dcm")], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("Error")]
    assert errors == [], text
    assert "RTPlan" in text  # dciodvfy recognised the IOD


def test_thorax_sliding_window_plan(shared_data):
    path = shared_data / "dicom" / "thorax-rt02" / "RTPLAN_Hashed.dcm"
    if not path.exists():
        pytest.skip(f"{path} not available")
    bs = read_rtplan(path)
    ds = pydicom.dcmread(path)
    fg = ds.FractionGroupSequence[0]
    file_mu = sum(float(r.BeamMeterset) for r in fg.ReferencedBeamSequence if "BeamMeterset" in r)
    # 7 treatment fields; the set-up, CBCT and port-film beams carry no treatment MU and are skipped
    assert len(bs.beams) == 7
    assert all(b.technique == Technique.SLIDING_WINDOW for b in bs.beams)
    assert bs.total_mu_per_fraction == pytest.approx(file_mu, abs=1e-6)
    assert bs.total_mu_per_fraction == pytest.approx(1105.0, abs=1.0)  # 1105 MU per fraction (the plan's report)
    assert bs.n_fractions == 23 and bs.prescription_gy == pytest.approx(41.4)
    n_cp = {int(b.BeamNumber): int(b.NumberOfControlPoints) for b in ds.BeamSequence}
    for beam in bs.beams:
        assert len(beam.control_points) == n_cp[beam.metadata["beam_number"]]
        assert beam.mlc.name == "HD120" and beam.energy_mv == 6.0
        # the two material-less "compensators" per field are Eclipse's fluence maps, not devices
        assert beam.metadata["accessories"] == []
        # sliding window: while the beam is on, every leaf sweeps one way (a split field jumps back
        # only in a zero-MU interval), and no pair crosses.  Closed pairs parked under the jaws may
        # shuffle, so allow 2 % of the beam-on leaf travel to go backwards.
        x1 = np.array([cp.aperture.leaf_x1_mm for cp in beam.control_points])
        x2 = np.array([cp.aperture.leaf_x2_mm for cp in beam.control_points])
        assert np.all(x2 - x1 >= -1e-6)
        w = np.array([cp.cumulative_weight for cp in beam.control_points])
        on = np.diff(w) > 1e-9
        for bank in (x1, x2):
            d = np.diff(bank, axis=0)[on]
            sign = np.sign(d.sum(axis=0))
            backwards = np.clip(-d * sign[None, :], 0, None).sum()
            assert backwards <= 0.02 * np.abs(d).sum()
    # the gantry angles of a 7-field equi-spaced plan: 0, 51, ..., 306 degrees
    assert [b.control_points[0].gantry_deg for b in bs.beams] == pytest.approx([0, 51, 102, 153, 204, 255, 306])


def test_breast_boost_plan(shared_data):
    path = shared_data / "dicom" / "breast-boost" / "rtplan.dcm"
    if not path.exists():
        pytest.skip(f"{path} not available")
    bs = read_rtplan(path)
    ds = pydicom.dcmread(path)
    fg = ds.FractionGroupSequence[0]
    file_mu = {int(r.ReferencedBeamNumber): float(r.BeamMeterset) for r in fg.ReferencedBeamSequence}
    n_cp = {int(b.BeamNumber): int(b.NumberOfControlPoints) for b in ds.BeamSequence}
    assert len(bs.beams) == len(file_mu)
    for beam in bs.beams:
        num = beam.metadata["beam_number"]
        assert beam.mu == pytest.approx(file_mu[num])
        assert len(beam.control_points) == n_cp[num]
        assert beam.mlc.name == "Millennium120"
    # mixed energies are kept per beam (two 10 MV and two 6 MV fields)
    assert sorted(b.energy_mv for b in bs.beams) == [6.0, 6.0, 10.0, 10.0]
    assert bs.n_fractions == int(fg.NumberOfFractionsPlanned)
    # the SITE dose reference (14 Gy), not the calculation point, is the prescription
    assert bs.prescription_gy == pytest.approx(14.0)


def test_bad_input_is_reported(tmp_path, case):
    with pytest.raises(InputError, match="not found"):
        read_rtplan(tmp_path / "missing.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(InputError, match="junk.dcm"):
        read_rtplan(tmp_path / "junk.dcm")
    with pytest.raises(InputError, match="no beams"):
        write_rtplan(BeamSet([], 1, 10.0), tmp_path / "x.dcm", case=case)


def test_read_back_plan_reproduces_the_dose(case, tmp_path):
    """Issue item: the RTPLAN read back and recomputed reproduces the plan dose (1 % / 1 mm).
    Leaves, angles and weights come back to 1 um / 1e-4 deg / 1e-7, so the recomputed dose
    must agree voxel by voxel to far better than 1 %: allow 0.1 % of the maximum."""
    forward_dose = pytest.importorskip("sbrtplan.dose_engine").forward_dose
    mlc = MLCModel.millennium120()
    sweep = _sliding_window(case, mlc, n=3)
    for cp in sweep.control_points:  # a short 20 mm sweep keeps the number of sub-fields small
        cp.aperture.leaf_x1_mm = 0.25 * cp.aperture.leaf_x1_mm
        cp.aperture.leaf_x2_mm = cp.aperture.leaf_x1_mm + 10.0
    bs = BeamSet([_vmat(case, mlc, "CC", n=5), sweep], n_fractions=3, prescription_gy=27.0)
    write_rtplan(bs, tmp_path / "plan.dcm", case=case)
    back = read_rtplan(tmp_path / "plan.dcm")
    iso = np.asarray(bs.beams[0].isocenter_mm)
    vi = np.flatnonzero(np.all(np.abs(case.grid.voxel_centers_mm() - iso) <= 40.0, axis=1))
    d0 = forward_dose(case.density, case.grid, bs, voxel_indices=vi, max_gantry_step_deg=10.0)
    d1 = forward_dose(case.density, case.grid, back, voxel_indices=vi, max_gantry_step_deg=10.0)
    assert d0.max() > 1.0  # a real dose, not an empty comparison
    assert np.max(np.abs(d1 - d0)) <= 1e-3 * d0.max()


def test_reader_follows_dicom_conventions(case, tmp_path):
    """Weights in MU (FinalCumulativeMetersetWeight != 1), attributes given only when they change,
    symmetric X/Y jaws and an FFF fluence mode are all read as DICOM defines them."""
    mlc = MLCModel.millennium120()
    beam = _vmat(case, mlc, "CW", n=5)
    for cp in beam.control_points:  # fixed jaws, so later control points need not repeat them
        cp.aperture.jaw_x_mm, cp.aperture.jaw_y_mm = (-30.0, 30.0), (-25.0, 25.0)
    write_rtplan(BeamSet([beam], 1, 20.0), tmp_path / "plan.dcm", case=case)
    ds = pydicom.dcmread(tmp_path / "plan.dcm")
    b = ds.BeamSequence[0]
    b.FinalCumulativeMetersetWeight = "400"
    for i, c in enumerate(b.ControlPointSequence):
        c.CumulativeMetersetWeight = ds_w = float(c.CumulativeMetersetWeight) * 400.0
        assert ds_w >= 0
        if i > 0:  # jaws unchanged: only the MLC is repeated
            c.BeamLimitingDevicePositionSequence = pydicom.Sequence(
                [p for p in c.BeamLimitingDevicePositionSequence if p.RTBeamLimitingDeviceType == "MLCX"])
    for d in list(b.BeamLimitingDeviceSequence) + list(b.ControlPointSequence[0].BeamLimitingDevicePositionSequence):
        d.RTBeamLimitingDeviceType = {"ASYMX": "X", "ASYMY": "Y"}.get(d.RTBeamLimitingDeviceType,
                                                                       d.RTBeamLimitingDeviceType)
    fm = pydicom.Dataset()
    fm.FluenceMode = "NON_STANDARD"
    fm.FluenceModeID = "FFF"
    b.PrimaryFluenceModeSequence = pydicom.Sequence([fm])
    b.NumberOfWedges = 1  # a physical wedge: refused for a dose, listed when read with allow_unmodelled
    ds.save_as(tmp_path / "edited.dcm")
    with pytest.raises(InputError, match="wedge"):
        read_rtplan(tmp_path / "edited.dcm")
    back = read_rtplan(tmp_path / "edited.dcm", allow_unmodelled=True).beams[0]
    assert back.metadata["fluence_mode"] == "FFF"
    assert back.metadata["accessories"] == ["1 wedges"]
    for ca, cb in zip(beam.control_points, back.control_points):
        assert cb.cumulative_weight == pytest.approx(ca.cumulative_weight, abs=1e-6)
        assert cb.aperture.jaw_x_mm == pytest.approx(ca.aperture.jaw_x_mm, abs=1e-3)
        assert cb.aperture.jaw_y_mm == pytest.approx(ca.aperture.jaw_y_mm, abs=1e-3)
    assert back.mu == pytest.approx(beam.mu, abs=1e-5)


def test_plan_without_meterset_or_photons_is_rejected(case, tmp_path):
    mlc = MLCModel.millennium120()
    write_rtplan(BeamSet([_static(case, mlc)], 1, 20.0), tmp_path / "plan.dcm", case=case)
    ds = pydicom.dcmread(tmp_path / "plan.dcm")
    del ds.FractionGroupSequence[0].ReferencedBeamSequence[0].BeamMeterset
    ds.save_as(tmp_path / "nomu.dcm")
    with pytest.raises(InputError, match="no treatment beam with a BeamMeterset"):
        read_rtplan(tmp_path / "nomu.dcm")
    ds = pydicom.dcmread(tmp_path / "plan.dcm")
    ds.BeamSequence[0].RadiationType = "ELECTRON"
    ds.save_as(tmp_path / "electron.dcm")
    with pytest.raises(InputError, match="photons only"):
        read_rtplan(tmp_path / "electron.dcm")


def test_several_targets_get_one_dose_reference_each(tmp_path):
    """A course of two dose levels (PTV 27 Gy with a GTV boost to 30 Gy, 3 fx): the RTPLAN
    holds one TARGET dose reference per target on its ROI, all in the fraction group, and the reader
    the recompute uses returns both levels, highest first; a bad level is refused before writing."""
    from _bad_input_factory import _beam_set
    from sbrtplan.io import read_prescription, write_rtstruct

    case = make_phantom("spine", spacing_mm=4.0)
    write_rtstruct(case, tmp_path / "rs.dcm")
    bs = _beam_set(case)
    write_rtplan(bs, tmp_path / "rp.dcm", case=case, target_name="PTV", targets=[("PTV", 27.0), ("GTV", 30.0)])
    ds = pydicom.dcmread(tmp_path / "rp.dcm")
    assert [str(d.DoseReferenceStructureType) for d in ds.DoseReferenceSequence] == ["VOLUME", "VOLUME"]
    assert [int(r.ReferencedDoseReferenceNumber)
            for r in ds.FractionGroupSequence[0].ReferencedDoseReferenceSequence] == [1, 2]
    rx = read_prescription(tmp_path / "rp.dcm", tmp_path / "rs.dcm")
    assert [(lv.roi_name, lv.dose_gy) for lv in rx.levels] == [("GTV", 30.0), ("PTV", 27.0)]
    for bad in ([("PTV", float("nan"))], [("PTV", 0.0)], [("PTV",)], [(3, 27.0)]):
        with pytest.raises(InputError, match="targets"):
            write_rtplan(bs, tmp_path / "bad.dcm", case=case, targets=bad)
        assert not (tmp_path / "bad.dcm").exists()

"""Bad-input corpus, part 1: malformed DICOM files (RTDOSE, RTSTRUCT, RTPLAN, CT) given to the commands.

Every case builds its file at test time from a small phantom patient (``_bad_input_factory``), runs the
command in-process through ``sbrtplan.cli.main`` and asserts: exit status 2 (an input error, never 1 =
internal error, never 0 = a silently wrong result), a fragment of the one-line message that names what is
wrong, no traceback on the terminal, and no output folder left behind.  Most cases stop at validation,
before any dose is computed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from _bad_input_factory import build_patient, edit, edit_ct_folder

# pydicom warns about the invalid values these tests write on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

OTHER_UID = "1.2.826.0.1.3680043.8.498.999999999"


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    return build_patient(tmp_path_factory.mktemp("bad-inputs") / "patient")


def assert_refused(rc: int, err: str, fragment: str, out: Path | None = None) -> None:
    assert "Traceback" not in err, err
    assert rc == 2, f"exit {rc}, expected 2 (input error); stderr: {err[-800:]}"
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert lines, err
    assert fragment.lower() in lines[-1].lower(), f"{fragment!r} not in {lines[-1]!r}"
    if out is not None:
        assert not out.exists(), f"{out} was left behind"
        assert not list(out.parent.glob(".sbrtplan-staging-*")), "a staging folder was left behind"


# ----------------------------------------------------------------------------------------- RTDOSE

def _negative_pixels(ds):
    arr = ds.pixel_array.astype(np.int32) // 2
    arr.flat[: arr.size // 10] = -1000
    ds.PixelRepresentation = 1
    ds.PixelData = arr.astype(np.int16).tobytes()
    ds.DoseGridScaling = f"{float(ds.DoseGridScaling) * 2:.6g}"


def _set(keyword, value):
    def fn(ds):
        setattr(ds, keyword, value)
    return fn


def _delete(keyword):
    def fn(ds):
        delattr(ds, keyword)
    return fn


def _shift_dose(ds):
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 5000.0]


def _offsets_zero(ds):
    ds.GridFrameOffsetVector = [0.0] * int(ds.NumberOfFrames)


def _offsets_short(ds):
    ds.GridFrameOffsetVector = list(ds.GridFrameOffsetVector)[:-2]


RTDOSE_CASES = {
    "scaling-missing": (_delete("DoseGridScaling"), "DoseGridScaling"),
    "scaling-zero": (_set("DoseGridScaling", "0"), "DoseGridScaling"),
    "scaling-negative": (_set("DoseGridScaling", "-0.001"), "DoseGridScaling"),
    "scaling-nan": (_set("DoseGridScaling", "NaN"), "DoseGridScaling"),
    "scaling-inf": (_set("DoseGridScaling", "inf"), "DoseGridScaling"),
    "negative-doses": (_negative_pixels, "negative"),
    "modality-ct": (_set("Modality", "CT"), "expected RTDOSE"),
    "units-relative": (_set("DoseUnits", "RELATIVE"), "DoseUnits"),
    "no-position": (_delete("ImagePositionPatient"), "ImagePositionPatient"),
    "no-spacing": (_delete("PixelSpacing"), "PixelSpacing"),
    "no-orientation": (_delete("ImageOrientationPatient"), "ImageOrientationPatient"),
    "no-frame-offsets": (_delete("GridFrameOffsetVector"), "GridFrameOffsetVector"),
    "frame-offsets-short": (_offsets_short, "GridFrameOffsetVector"),
    "frames-same-position": (_offsets_zero, "same position"),
    "other-frame-of-reference": (_set("FrameOfReferenceUID", OTHER_UID), "frame of reference"),
    "other-patient": (_set("PatientID", "SOMEONE-ELSE"), "patient"),
    "grid-far-away": (_shift_dose, "does not overlap"),
}


@pytest.mark.parametrize("case", sorted(RTDOSE_CASES))
def test_evaluate_refuses_bad_rtdose(case, patient, tmp_path, capsys):
    fn, fragment = RTDOSE_CASES[case]
    bad = edit(Path(shutil.copy(patient.rtdose, tmp_path / "rd.dcm")), fn)
    out = tmp_path / "metrics.json"
    rc, err = run_cli(["evaluate", "--rtdose", bad, "--rtstruct", patient.rtstruct, "--json", out], capsys)
    assert_refused(rc, err, fragment, out)


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


FILE_CASES = {
    "truncated": lambda src, dst: _truncate(src, dst),
    "empty": lambda src, dst: (dst.write_bytes(b""), dst)[1],
    "text": lambda src, dst: (dst.write_text("this is not DICOM\n"), dst)[1],
    "folder": lambda src, dst: (dst.mkdir(), dst)[1],
    "missing": lambda src, dst: dst,
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
@pytest.mark.parametrize("which", ["rtdose", "rtstruct"])
def test_evaluate_refuses_unreadable_files(case, which, patient, tmp_path, capsys):
    bad = FILE_CASES[case](getattr(patient, which), tmp_path / f"bad-{which}.dcm")
    files = {"rtdose": patient.rtdose, "rtstruct": patient.rtstruct, which: bad}
    out = tmp_path / "dvh.csv"
    rc, err = run_cli(["evaluate", "--rtdose", files["rtdose"], "--rtstruct", files["rtstruct"],
                       "--dvh-csv", out], capsys)
    assert_refused(rc, err, str(bad.name), out)


# ----------------------------------------------------------------------------------------- RTSTRUCT

def _roi(ds, name):
    num = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == name)
    return next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == num)


def _contour_value(name, fn):
    def edit_fn(ds):
        c = _roi(ds, name).ContourSequence[0]
        pts = [float(v) for v in c.ContourData]
        c.ContourData = fn(pts)
    return edit_fn


def _rename(old, new):
    def fn(ds):
        for r in ds.StructureSetROISequence:
            if r.ROIName == old:
                r.ROIName = new
    return fn


def _rename_all(ds):
    """Names no protocol knows, and no DICOM type that would give a role (a PTV type alone makes a target)."""
    for i, r in enumerate(ds.StructureSetROISequence):
        r.ROIName = f"Thing{i}"
    for o in ds.get("RTROIObservationsSequence", []):
        o.RTROIInterpretedType = "CONTROL"


def _rtss_frame(ds):
    for r in ds.StructureSetROISequence:
        r.ReferencedFrameOfReferenceUID = OTHER_UID
    for f in ds.ReferencedFrameOfReferenceSequence:
        f.FrameOfReferenceUID = OTHER_UID


def _shift_all_contours(ds):
    for c in ds.ROIContourSequence:
        for cc in c.ContourSequence:
            pts = np.asarray([float(v) for v in cc.ContourData]).reshape(-1, 3)
            pts[:, 2] += 5000.0
            cc.ContourData = [f"{v:.2f}" for v in pts.ravel()]


def _tilt_contour(ds):
    c = _roi(ds, "PTV").ContourSequence[0]
    pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
    pts[0, 2] += 30.0
    c.ContourData = [f"{v:.2f}" for v in pts.ravel()]


RTSTRUCT_CASES = {
    "nan-vertex": (_contour_value("PTV", lambda p: ["NaN"] + [f"{v:.2f}" for v in p[1:]]), "non-finite"),
    "inf-vertex": (_contour_value("SpinalCord", lambda p: [f"{v:.2f}" for v in p[:-1]] + ["inf"]), "non-finite"),
    "length-not-3n": (_contour_value("Heart", lambda p: [f"{v:.2f}" for v in p[:-1]]), "ContourData values"),
    "duplicate-name": (_rename("Heart", "PTV"), "two ROIs are named"),
    "duplicate-name-case": (_rename("Heart", " ptv"), "two ROIs are named"),
    "modality-rtdose": (_set("Modality", "RTDOSE"), "expected RTSTRUCT"),
    "other-frame-of-reference": (_rtss_frame, "frame of reference"),
    "other-patient": (_set("PatientID", "SOMEONE-ELSE"), "patient"),
    "contours-far-away": (_shift_all_contours, "does not overlap"),
    "non-planar-contour": (_tilt_contour, "across the grid's slices"),
}


@pytest.mark.parametrize("case", sorted(RTSTRUCT_CASES))
def test_evaluate_refuses_bad_rtstruct(case, patient, tmp_path, capsys):
    fn, fragment = RTSTRUCT_CASES[case]
    bad = edit(Path(shutil.copy(patient.rtstruct, tmp_path / "rs.dcm")), fn)
    out = tmp_path / "metrics.json"
    rc, err = run_cli(["evaluate", "--rtdose", patient.rtdose, "--rtstruct", bad, "--json", out], capsys)
    assert_refused(rc, err, fragment, out)


def test_evaluate_with_nothing_evaluable_is_an_error(patient, tmp_path, capsys):
    """Every ROI renamed to something no protocol knows: no goal can be evaluated -> not a pass."""
    bad = edit(Path(shutil.copy(patient.rtstruct, tmp_path / "rs.dcm")), _rename_all)
    out = tmp_path / "metrics.json"
    rc, err = run_cli(["evaluate", "--rtdose", patient.rtdose, "--rtstruct", bad, "--protocol", "bone_spine",
                       "--scheme", "27/3", "--json", out], capsys)
    assert "Traceback" not in err
    assert rc == 2 and not out.exists(), err[-500:]


# ----------------------------------------------------------------------------------------- RTPLAN

def _cp_value(keyword, value, beam=0, cp=0):
    def fn(ds):
        setattr(ds.BeamSequence[beam].ControlPointSequence[cp], keyword, value)
    return fn


def _fg_value(keyword, value):
    def fn(ds):
        if value is None:
            delattr(ds.FractionGroupSequence[0], keyword)
        else:
            setattr(ds.FractionGroupSequence[0], keyword, value)
    return fn


def _mu(value):
    def fn(ds):
        ds.FractionGroupSequence[0].ReferencedBeamSequence[1].BeamMeterset = value
    return fn


def _device(kind, fn_pos, cp=0):
    def fn(ds):
        for p in ds.BeamSequence[0].ControlPointSequence[cp].BeamLimitingDevicePositionSequence:
            if str(p.RTBeamLimitingDeviceType).upper() in kind:
                p.LeafJawPositions = fn_pos([float(v) for v in p.LeafJawPositions])
    return fn


def _cross_leaves(pos):
    n = len(pos) // 2
    k = n // 2
    pos[k], pos[n + k] = 30.0, -20.0
    return [f"{v:g}" for v in pos]


def _beam_value(keyword, value):
    def fn(ds):
        setattr(ds.BeamSequence[0], keyword, value)
    return fn


def _unknown_device(ds):
    ds.BeamSequence[0].BeamLimitingDeviceSequence[0].RTBeamLimitingDeviceType = "MLCZ"


def _boundaries_nan(ds):
    for d in ds.BeamSequence[0].BeamLimitingDeviceSequence:
        if d.RTBeamLimitingDeviceType == "MLCX":
            b = [f"{float(v):g}" for v in d.LeafPositionBoundaries]
            b[3] = "NaN"
            d.LeafPositionBoundaries = b


def _iso(value):
    def fn(ds):
        for b in ds.BeamSequence:
            b.ControlPointSequence[0].IsocenterPosition = value
    return fn


def _drop_mlc_leaves(pos):
    return [f"{v:g}" for v in pos[:-4]]


def _no_weight(ds):
    del ds.BeamSequence[0].ControlPointSequence[1].CumulativeMetersetWeight


def _wedge(kind, wedge_id, angle="60"):
    """A wedge as the planning systems export it: WedgeSequence item, NumberOfWedges, IN at the control points."""
    def fn(ds):
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        b = ds.BeamSequence[0]
        w = Dataset()
        w.WedgeNumber, w.WedgeType, w.WedgeID, w.WedgeAngle = 1, kind, wedge_id, angle
        w.WedgeFactor, w.WedgeOrientation = "0.5", "0"
        b.WedgeSequence = Sequence([w])
        b.NumberOfWedges = 1
        for cp in b.ControlPointSequence:
            pos = Dataset()
            pos.ReferencedWedgeNumber, pos.WedgePosition = 1, "IN"
            cp.WedgePositionSequence = Sequence([pos])
    return fn


def _item(sequence, count_keyword, **values):
    def fn(ds):
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        it = Dataset()
        for k, v in values.items():
            setattr(it, k, v)
        setattr(ds.BeamSequence[0], sequence, Sequence([it]))
        if count_keyword:
            setattr(ds.BeamSequence[0], count_keyword, 1)
    return fn


RTPLAN_CASES = {
    "gantry-nan": (_cp_value("GantryAngle", "NaN"), "GantryAngle"),
    "gantry-inf": (_cp_value("GantryAngle", "inf"), "GantryAngle"),
    "gantry-720": (_cp_value("GantryAngle", "720"), "GantryAngle"),
    "couch-nan": (_cp_value("PatientSupportAngle", "NaN"), "PatientSupportAngle"),
    "collimator-nan": (_cp_value("BeamLimitingDeviceAngle", "nan"), "BeamLimitingDeviceAngle"),
    "fractions-zero": (_fg_value("NumberOfFractionsPlanned", 0), "NumberOfFractionsPlanned"),
    "fractions-missing": (_fg_value("NumberOfFractionsPlanned", None), "NumberOfFractionsPlanned"),
    "fractions-negative": (_fg_value("NumberOfFractionsPlanned", -3), "NumberOfFractionsPlanned"),
    "fractions-1000": (_fg_value("NumberOfFractionsPlanned", 1000), "NumberOfFractionsPlanned"),
    "mu-zero": (_mu("0"), "BeamMeterset"),
    "mu-negative": (_mu("-10"), "BeamMeterset"),
    "mu-nan": (_mu("NaN"), "BeamMeterset"),
    "mu-absurd": (_mu("1e9"), "BeamMeterset"),
    "leaves-crossed": (_device(("MLCX",), _cross_leaves), "crossed"),
    "leaf-5000mm": (_device(("MLCX",), lambda p: [f"{v:g}" for v in [5000.0] + p[1:]]), "leaf at"),
    "leaf-nan": (_device(("MLCX",), lambda p: ["NaN"] + [f"{v:g}" for v in p[1:]]), "non-finite"),
    "leaf-count": (_device(("MLCX",), _drop_mlc_leaves), "MLCX positions"),
    "jaw-5000mm": (_device(("ASYMX", "X"), lambda p: ["-5000", f"{p[1]:g}"]), "jaw at"),
    "jaws-crossed": (_device(("ASYMY", "Y"), lambda p: ["40", "-40"]), "crossed"),
    "electrons": (_beam_value("RadiationType", "ELECTRON"), "photons only"),
    "protons": (_beam_value("RadiationType", "PROTON"), "photons only"),
    "wedge": (_beam_value("NumberOfWedges", 1), "wedge"),
    "wedge-physical": (_wedge("STANDARD", "W60R"), "physical wedge W60R"),
    "wedge-enhanced-dynamic": (_wedge("DYNAMIC", "EDW60OUT"), "enhanced dynamic wedge EDW60OUT"),
    "wedge-motorized": (_wedge("MOTORIZED", "MW60"), "motorized wedge"),
    "block-shielding": (_item("BlockSequence", "NumberOfBlocks", BlockType="SHIELDING", BlockName="LUNG"),
                        "shielding block"),
    "block-aperture": (_item("BlockSequence", "NumberOfBlocks", BlockType="APERTURE", BlockName="CERROBEND"),
                       "aperture block"),
    "compensator-physical": (_item("CompensatorSequence", "NumberOfCompensators", MaterialID="BRASS",
                                   CompensatorType="STANDARD"), "physical compensator"),
    "applicator-cone": (_item("ApplicatorSequence", None, ApplicatorID="CONE10", ApplicatorType="STEREOTACTIC"),
                        "applicator CONE10"),
    "bolus": (_item("ReferencedBolusSequence", "NumberOfBoli", ReferencedROINumber=1), "bolus"),
    "dosimeter-minutes": (_beam_value("PrimaryDosimeterUnit", "MINUTE"), "dosimeter unit MINUTE"),
    "wedges-negative": (_beam_value("NumberOfWedges", -1), "NumberOfWedges"),
    "unknown-mlc": (_unknown_device, "not supported"),
    "boundaries-nan": (_boundaries_nan, "LeafPositionBoundaries"),
    "energy-18MV": (_cp_value("NominalBeamEnergy", "18"), "18 MV"),
    "energy-zero": (_cp_value("NominalBeamEnergy", "0"), "NominalBeamEnergy"),
    "sad-zero": (_beam_value("SourceAxisDistance", "0"), "SourceAxisDistance"),
    "isocentre-outside-ct": (_iso(["0", "0", "2000"]), "outside"),
    "isocentre-nan": (_iso(["NaN", "0", "0"]), "IsocenterPosition"),
    "no-weight": (_no_weight, "CumulativeMetersetWeight"),
    "other-frame-of-reference": (_set("FrameOfReferenceUID", OTHER_UID), "frame of reference"),
    "other-patient": (_set("PatientID", "SOMEONE-ELSE"), "patient"),
    "modality-rtdose": (_set("Modality", "RTDOSE"), "not an RTPLAN"),
    "no-beams": (_delete("BeamSequence"), "BeamSequence"),
    "no-fraction-group": (_delete("FractionGroupSequence"), "FractionGroupSequence"),
}


@pytest.mark.parametrize("case", sorted(RTPLAN_CASES))
@pytest.mark.parametrize("command", ["mucheck", "recompute"])
def test_plan_commands_refuse_bad_rtplan(command, case, patient, tmp_path, capsys):
    fn, fragment = RTPLAN_CASES[case]
    bad = edit(Path(shutil.copy(patient.rtplan, tmp_path / "rp.dcm")), fn)
    out = tmp_path / ("check.json" if command == "mucheck" else "recomputed")
    rc, err = run_cli([command, "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", bad, "--out", out],
                      capsys)
    assert_refused(rc, err, fragment, out)


#: what the dose engine does not model: refused by the RTPLAN reader itself, so every command that computes a
#: dose from an RTPLAN refuses it (qa-plan too; recompute and mucheck run every RTPLAN case above)
UNMODELLED_CASES = sorted(k for k in RTPLAN_CASES if k.startswith(("wedge-", "block-", "compensator-", "applicator-",
                                                                   "bolus", "dosimeter-", "electrons", "protons",
                                                                   "energy-18MV")))


@pytest.mark.parametrize("case", UNMODELLED_CASES)
def test_qa_plan_refuses_unmodelled_beams(case, patient, tmp_path, capsys):
    fn, fragment = RTPLAN_CASES[case]
    bad = edit(Path(shutil.copy(patient.rtplan, tmp_path / "rp.dcm")), fn)
    out = tmp_path / "qa"
    rc, err = run_cli(["qa-plan", "--rtplan", bad, "--out", out], capsys)
    assert_refused(rc, err, fragment, out)
    assert "beam 1 'F1'" in err or "beam 'F1'" in err  # the beam is named


def test_unmodelled_plan_is_read_when_allowed(patient, tmp_path):
    """The refusal is the reader's: with allow_unmodelled the same wedged beam is read and its wedge listed."""
    from sbrtplan.errors import InputError
    from sbrtplan.io import read_rtplan

    bad = edit(Path(shutil.copy(patient.rtplan, tmp_path / "rp.dcm")), _wedge("DYNAMIC", "EDW60OUT"))
    with pytest.raises(InputError, match="enhanced dynamic wedge"):
        read_rtplan(bad)
    bs = read_rtplan(bad, allow_unmodelled=True)
    assert bs.beams[0].metadata["accessories"] == ["1 wedges"]


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_recompute_refuses_unreadable_rtplan(case, patient, tmp_path, capsys):
    bad = FILE_CASES[case](patient.rtplan, tmp_path / "bad-rtplan.dcm")
    out = tmp_path / "recomputed"
    rc, err = run_cli(["recompute", "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", bad,
                       "--out", out], capsys)
    assert_refused(rc, err, bad.name, out)


# ----------------------------------------------------------------------------------------- CT, reference

CT_CASES = {
    "other-frame-of-reference": (_set("FrameOfReferenceUID", OTHER_UID), "frame of reference"),
    "other-patient": (_set("PatientID", "SOMEONE-ELSE"), "patient"),
}


@pytest.mark.parametrize("case", sorted(CT_CASES))
@pytest.mark.parametrize("command", ["mucheck", "recompute"])
def test_plan_commands_refuse_foreign_ct(command, case, patient, tmp_path, capsys):
    fn, fragment = CT_CASES[case]
    ct = Path(shutil.copytree(patient.ct, tmp_path / "CT"))
    edit_ct_folder(ct, fn)
    out = tmp_path / ("check.json" if command == "mucheck" else "recomputed")
    rc, err = run_cli([command, "--ct", ct, "--rtstruct", patient.rtstruct, "--rtplan", patient.rtplan,
                       "--out", out], capsys)
    assert_refused(rc, err, fragment, out)


@pytest.mark.parametrize("case", ["other-frame-of-reference", "other-patient"])
def test_recompute_refuses_foreign_reference_dose(case, patient, tmp_path, capsys):
    """Another patient's dose as --reference-rtdose would give a meaningless gamma pass rate."""
    fn, fragment = RTDOSE_CASES[case]
    ref = edit(Path(shutil.copy(patient.rtdose, tmp_path / "ref.dcm")), fn)
    out = tmp_path / "recomputed"
    rc, err = run_cli(["recompute", "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", patient.rtplan,
                       "--out", out, "--reference-rtdose", ref], capsys)
    assert_refused(rc, err, fragment, out)


def _zero_dose(ds):
    ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()


#: a broken --reference-rtdose / --clinical-rtdose: refused before any dose is computed
REFERENCE_CASES = {
    "scaling-zero": (_set("DoseGridScaling", "0"), "DoseGridScaling"),
    "scaling-missing": (_delete("DoseGridScaling"), "DoseGridScaling"),
    "scaling-negative": (_set("DoseGridScaling", "-0.001"), "DoseGridScaling"),
    "negative-doses": (_negative_pixels, "negative"),
    "no-overlap": (_shift_dose, "does not overlap the targets"),
    "zero-dose": (_zero_dose, "zero everywhere"),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_recompute_checks_reference_dose_before_the_dose(case, patient, tmp_path, capsys, monkeypatch):
    """The reference dose is checked at the boundary: the dose computation is never reached (it is replaced by
    a function that fails the test)."""
    import sbrtplan.cli.recompute as rc_mod

    def no_dose(*a, **k):
        raise AssertionError("the dose was computed before the reference dose was checked")

    monkeypatch.setattr(rc_mod, "recompute_dose", no_dose)
    fn, fragment = REFERENCE_CASES[case]
    ref = edit(Path(shutil.copy(patient.rtdose, tmp_path / "ref.dcm")), fn)
    out = tmp_path / "recomputed"
    rc, err = run_cli(["recompute", "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", patient.rtplan,
                       "--out", out, "--reference-rtdose", ref], capsys)
    assert_refused(rc, err, fragment, out)


@pytest.mark.parametrize("case", ["no-overlap", "zero-dose"])
def test_benchmark_checks_clinical_dose_overlap_before_planning(case, patient, tmp_path, capsys, monkeypatch):
    import sbrtplan.workflow as wf

    def no_plan(*a, **k):
        raise AssertionError("planning started before the clinical dose was checked")

    monkeypatch.setattr(wf, "plan", no_plan)
    fn, fragment = REFERENCE_CASES[case]
    ref = edit(Path(shutil.copy(patient.rtdose, tmp_path / "clinical.dcm")), fn)
    out = tmp_path / "bench"
    rc, err = run_cli(["benchmark", "--case", patient.ct, "--rtstruct", patient.rtstruct, "--scheme", "27/3",
                       "--clinical-rtdose", ref, "--out", out, "--allow-missing"], capsys)
    assert_refused(rc, err, fragment, out)


def test_benchmark_checks_clinical_dose_before_planning(patient, tmp_path, capsys):
    """A broken --clinical-rtdose is refused in a second, not after minutes of planning."""
    import time

    ref = edit(Path(shutil.copy(patient.rtdose, tmp_path / "clinical.dcm")), _set("DoseGridScaling", "0"))
    out = tmp_path / "bench"
    t0 = time.perf_counter()
    rc, err = run_cli(["benchmark", "--case", patient.ct.parent, "--scheme", "27/3", "--clinical-rtdose", ref,
                       "--out", out], capsys)
    assert_refused(rc, err, "DoseGridScaling", out)
    # bound: reading one RTDOSE (< 1 s); a plan of this case would take tens of seconds
    assert time.perf_counter() - t0 < 10.0


def test_evaluate_valid_patient_passes(patient, tmp_path, capsys):
    """The uncorrupted files pass every check (the checks refuse nonsense, not valid data)."""
    out = tmp_path / "metrics.json"
    rc, err = run_cli(["evaluate", "--rtdose", patient.rtdose, "--rtstruct", patient.rtstruct, "--json", out],
                      capsys)
    assert rc == 0, err[-800:]
    assert out.is_file()


# ----------------------------------------------------------------------------------------- shared clinical data

def _thorax_rtstruct(thorax: Path) -> Path:
    return next(p for p in sorted(thorax.iterdir()) if p.is_file() and p.name.endswith("_m.dcm"))


def test_evaluate_refuses_breast_dose_on_thorax_structures(shared_data, tmp_path, capsys):
    """The issue's example: thorax structures scored against a breast dose (two patients)."""
    breast, thorax = shared_data / "dicom" / "breast-boost", shared_data / "dicom" / "thorax-rt02"
    if not (breast.is_dir() and thorax.is_dir()):
        pytest.skip("clinical DICOM data not available")
    out = tmp_path / "metrics.json"
    rc, err = run_cli(["evaluate", "--rtdose", breast / "rtdose.dcm", "--rtstruct", _thorax_rtstruct(thorax),
                       "--json", out], capsys)
    assert_refused(rc, err, "patient", out)


@pytest.mark.parametrize("command", ["mucheck", "recompute"])
def test_plan_commands_refuse_another_patients_rtplan(command, shared_data, tmp_path, capsys):
    """The issue's example: recompute running another patient's RTPLAN on the thorax CT."""
    breast, thorax = shared_data / "dicom" / "breast-boost", shared_data / "dicom" / "thorax-rt02"
    if not (breast.is_dir() and thorax.is_dir()):
        pytest.skip("clinical DICOM data not available")
    out = tmp_path / ("check.json" if command == "mucheck" else "out")
    rc, err = run_cli([command, "--ct", thorax, "--rtstruct", _thorax_rtstruct(thorax), "--rtplan",
                       breast / "rtplan.dcm", "--out", out], capsys)
    assert_refused(rc, err, "patient", out)


def test_contours_half_a_slice_off_warn_and_keep_their_volume(patient, tmp_path, caplog):
    """Contours shifted by half a CT slice (2.5 mm of 5 mm) along z: a rigid shift does not change a
    volume, so the compact PTV and GTV keep theirs (1 %: only the end slabs' occupancy can move), and the
    reader says the planes lie between slices instead of keeping silent."""
    import logging

    from sbrtplan.io import read_ct_series, read_rtstruct

    def shift(ds):
        for c in ds.ROIContourSequence:
            for cc in c.ContourSequence:
                pts = np.asarray([float(v) for v in cc.ContourData]).reshape(-1, 3)
                pts[:, 2] += 2.5
                cc.ContourData = [f"{v:.2f}" for v in pts.ravel()]

    case = read_ct_series(patient.ct)
    shifted = edit(Path(shutil.copy(patient.rtstruct, tmp_path / "rs.dcm")), shift)
    ref = {s.name: s for s in read_rtstruct(patient.rtstruct, case)}
    with caplog.at_level(logging.WARNING, logger="sbrtplan"):
        got = {s.name: s for s in read_rtstruct(shifted, case)}
    assert any("between CT slices" in r.getMessage() for r in caplog.records)
    for name in ("PTV", "GTV"):
        v_ref, v_got = float(ref[name].fraction.sum()), float(got[name].fraction.sum())
        assert v_got == pytest.approx(v_ref, rel=0.01), name
        assert got[name].mask.any()

"""Structure roles from the DICOM RTROIInterpretedType first, names only when it is empty.

Clinical structure sets type their ROIs; names of helpers look like targets
(``PTV1_WALL`` rings typed ORGAN, ``PTV 1 AND 2`` boolean unions) and made the
evaluation refuse to choose among a dozen "targets".  The RTSTRUCT used here is
the shared breast-boost one with pydicom edits: a ring typed ORGAN named like a
PTV, an untyped boolean helper, a PTV-typed target without a target name, and an
isocentre marker (a POINT ROI typed MARKER).
"""

import logging

import pytest

from sbrtplan.case import StructureRole
from sbrtplan.case.names import infer_role, is_helper_name
from sbrtplan.cli import main


@pytest.mark.parametrize("name,dicom_type,role", [
    ("PTV1_WALL", "ORGAN", StructureRole.OAR),          # the type wins over the name
    ("PTV 1 AND 2", "CONTROL", StructureRole.CONTROL),
    ("Tumor Bed", "PTV", StructureRole.PTV),            # a typed target needs no target name
    ("ITV", "CTV", StructureRole.ITV),
    ("Cord PRV", "AVOIDANCE", StructureRole.PRV),
    ("PTV_27Gy", "", StructureRole.PTV),                # empty type: the name decides
    ("PTV1_WALL", "", StructureRole.CONTROL),           # ... and helpers are not targets
    ("PTV 1 AND 2", None, StructureRole.CONTROL),
    ("PTV-Cord", None, StructureRole.CONTROL),
    ("PTVopt", None, StructureRole.CONTROL),
    ("PTV+5mm", None, StructureRole.CONTROL),
    ("PTV_ring", None, StructureRole.CONTROL),
    ("PTV 41.4", None, StructureRole.PTV),
    ("SpinalCord", None, StructureRole.OAR),
    ("Iso", "MARKER", StructureRole.OTHER),
])
def test_role_inference(name, dicom_type, role):
    assert infer_role(name, dicom_type) is role


def test_helper_names():
    assert is_helper_name("PTVn_WALL") and is_helper_name("PTV 1 OR 2") and not is_helper_name("PTV2")


@pytest.fixture
def edited_rtss(shared_data, tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    src = shared_data / "dicom" / "breast-boost" / "rtss.dcm"
    if not src.is_file():
        pytest.skip(f"reference data not available: {src}")
    ds = pydicom.dcmread(str(src))
    rename = {3: ("PTV1_WALL", "ORGAN"), 10: ("PTV 1 AND 2", ""), 9: ("Tumor Bed", "PTV")}
    for r in ds.StructureSetROISequence:
        if int(r.ROINumber) in rename:
            r.ROIName = rename[int(r.ROINumber)][0]
    for o in ds.RTROIObservationsSequence:
        if int(o.ReferencedROINumber) in rename:
            o.RTROIInterpretedType = rename[int(o.ReferencedROINumber)][1]
    # an isocentre marker: one POINT contour, typed MARKER
    roi = Dataset()
    roi.ROINumber = 11
    roi.ROIName = "Iso"
    roi.ReferencedFrameOfReferenceUID = ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
    ds.StructureSetROISequence.append(roi)
    obs = Dataset()
    obs.ObservationNumber = 11
    obs.ReferencedROINumber = 11
    obs.RTROIInterpretedType = "MARKER"
    ds.RTROIObservationsSequence.append(obs)
    c = Dataset()
    c.ContourGeometricType = "POINT"
    c.NumberOfContourPoints = 1
    c.ContourData = list(ds.ROIContourSequence[0].ContourSequence[0].ContourData[:3])
    rc = Dataset()
    rc.ReferencedROINumber = 11
    rc.ContourSequence = pydicom.sequence.Sequence([c])
    ds.ROIContourSequence.append(rc)
    out = tmp_path / "rtss.dcm"
    ds.save_as(str(out))
    return out


def test_roles_read_from_the_rtstruct_and_marker_is_silent(edited_rtss, shared_data, caplog):
    from sbrtplan.io import read_rtdose, read_rtstruct

    dose = read_rtdose(shared_data / "dicom" / "breast-boost" / "rtdose.dcm")
    with caplog.at_level(logging.WARNING, logger="sbrtplan"):
        structures = {s.original_name: s for s in read_rtstruct(edited_rtss, dose.grid)}
    assert structures["PTV1_WALL"].role is StructureRole.OAR
    assert structures["PTV 1 AND 2"].role is StructureRole.CONTROL
    assert structures["Tumor Bed"].role is StructureRole.PTV
    assert "Iso" not in structures
    assert not [r for r in caplog.records if "Iso" in r.getMessage()]


def test_protocol_picks_the_typed_target_and_target_accepts_dicom_names(edited_rtss, shared_data, capsys, tmp_path):
    import json

    bb = shared_data / "dicom" / "breast-boost"
    out = tmp_path / "m.json"
    # without --target: the ring and the union are not targets, the PTV-typed "Tumor Bed" is the only one
    rc = main(["-q", "evaluate", "--rtdose", str(bb / "rtdose.dcm"), "--rtstruct", str(edited_rtss),
               "--protocol", "bone_nonspine", "--scheme", "30/5", "--json", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    data = json.loads(out.read_text())
    assert data["targets"]["Tumor Bed"]["CI_rtog"] is not None and data["targets"]["Tumor Bed"]["R50"] is not None
    # --target takes the DICOM name ("Lt Lung") as well as the normalised one (Lung_L)
    for name in ("Lt Lung", "Lung_L"):
        rc = main(["-q", "evaluate", "--rtdose", str(bb / "rtdose.dcm"), "--rtstruct", str(edited_rtss),
                   "--scheme", "14/7", "--target", name, "--json", str(out)])
        assert rc == 0, capsys.readouterr().err
        assert "Lung_L" in json.loads(out.read_text())["targets"]

"""TG-263 name normalisation and role inference."""

from __future__ import annotations

import pytest

from sbrtplan.case import StructureRole, infer_role, normalize_name


@pytest.mark.parametrize("raw, tg263", [
    ("cord", "SpinalCord"), ("SPINALCORD", "SpinalCord"), ("Spinal Cord", "SpinalCord"),
    ("spinal_cord", "SpinalCord"), ("lt lung", "Lung_L"), ("Left Lung", "Lung_L"), ("LUNG_R", "Lung_R"),
    ("Rt Lung", "Lung_R"), ("oesophagus", "Esophagus"), ("BODY", "External"), ("Kidney Lt", "Kidney_L"),
    ("great vessels", "GreatVes"), ("thecal sac", "SpinalCanal"),
])
def test_aliases_map_to_tg263(raw, tg263):
    assert normalize_name(raw) == tg263


def test_targets_prvs_and_unknown_names():
    assert normalize_name("ptv_41.4") == "PTV_41.4"
    assert normalize_name("gtv") == "GTV"
    assert normalize_name("cord PRV 5mm") == "SpinalCord_PRV05"
    assert normalize_name("heart-ptv") == "Heart-PTV"
    # A name the table does not know is kept (never guessed).
    assert normalize_name("  Fiducial_3 ") == "Fiducial_3"


def test_roles_from_names_and_dicom_types():
    assert infer_role("PTV") is StructureRole.PTV
    assert infer_role("SpinalCord_PRV02") is StructureRole.PRV
    assert infer_role("PTV!") is StructureRole.CONTROL
    assert infer_role("SpinalCord") is StructureRole.OAR
    assert infer_role("whatever", "EXTERNAL") is StructureRole.EXTERNAL


def test_thorax_rt02_roi_names_normalise(shared_data):
    import pydicom

    path = shared_data / "dicom" / "thorax-rt02" / "20191031-215249_m.dcm"
    if not path.exists():
        pytest.skip(f"reference RTSTRUCT not available: {path}")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    names = {roi.ROIName: normalize_name(roi.ROIName) for roi in ds.StructureSetROISequence}
    assert names["SPINALCORD"] == "SpinalCord"
    assert names["LUNG_L"] == "Lung_L" and names["LUNG_R"] == "Lung_R"
    assert names["LUNGS"] == "Lungs" and names["HEART"] == "Heart" and names["LIVER"] == "Liver"
    # Every organ name of the set is in the TG-263 table (role OAR); the targets keep their suffixes.
    types = {o.ReferencedROINumber: getattr(o, "RTROIInterpretedType", "") for o in ds.RTROIObservationsSequence}
    for roi in ds.StructureSetROISequence:
        role = infer_role(names[roi.ROIName], types.get(roi.ROINumber))
        if roi.ROIName.upper().startswith(("GTV", "CTV", "PTV")):
            assert role.is_target
        else:
            assert role is StructureRole.OAR

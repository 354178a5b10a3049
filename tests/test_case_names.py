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


@pytest.mark.parametrize("raw, tg263", [
    # head and neck (TG-263 table: paired organs end in _L / _R, glands are Glnd_*, bones Bone_*)
    ("Parotid_L", "Parotid_L"), ("parotid l", "Parotid_L"), ("L Parotid", "Parotid_L"), ("LeftParotid", "Parotid_L"),
    ("PAROTID_LT", "Parotid_L"), ("Rt Parotid", "Parotid_R"), ("RightParotid", "Parotid_R"), ("parotid-r", "Parotid_R"),
    ("Parotids", "Parotids"), ("mandible", "Bone_Mandible"), ("Bone Mandible", "Bone_Mandible"),
    ("BONE_MANDIBLE", "Bone_Mandible"), ("Larynx", "Larynx"), ("supraglottic larynx", "Larynx_SG"),
    ("Submandibular Gland L", "Glnd_Submand_L"), ("glnd_submand_r", "Glnd_Submand_R"), ("oral cavity", "Cavity_Oral"),
    ("Cavity_Oral", "Cavity_Oral"), ("Thyroid", "Glnd_Thyroid"), ("constrictors", "Musc_Constrict"),
    ("Eye_L", "Eye_L"), ("rt lens", "Lens_R"), ("Cochlea Left", "Cochlea_L"), ("TMJ R", "Joint_TM_R"),
    ("Hippocampus_Lt", "Hippocampus_L"), ("temporal lobe l", "Lobe_Temporal_L"), ("pituitary", "Pituitary"),
    # the re-irradiation table lists OpticChiasm and Retina_L/R: clinical names must reach them
    ("Optic Chiasm", "OpticChiasm"), ("chiasm", "OpticChiasm"), ("Retina R", "Retina_R"),
    # thorax, abdomen and pelvis
    ("SVC", "V_Venacava_S"), ("inferior vena cava", "V_Venacava_I"), ("pulmonary artery", "A_Pulmonary"),
    ("Breast L", "Breast_L"), ("LT BREAST", "Breast_L"), ("left main bronchus", "Bronchus_Main_L"),
    ("adrenal_r", "Glnd_Adrenal_R"), ("Sigmoid Colon", "Colon_Sigmoid"), ("penile bulb", "PenileBulb"),
    ("urethra", "Urethra"), ("Sacrum", "Sacrum"),
])
def test_head_neck_and_trunk_aliases(raw, tg263):
    assert normalize_name(raw) == tg263
    # every organ of the table is an organ at risk, also when the file calls it an ORGAN or gives no type;
    # its PRV is a PRV
    assert infer_role(tg263) is StructureRole.OAR
    assert infer_role(normalize_name(raw), "ORGAN") is StructureRole.OAR
    assert infer_role(normalize_name(raw + " PRV 3mm")) is StructureRole.PRV


def test_openkbp_head_neck_names_normalise():
    # the OpenKBP file stems (a head-and-neck data set) all have TG-263 names in the table
    stems = {"LeftParotid": "Parotid_L", "RightParotid": "Parotid_R", "Mandible": "Bone_Mandible",
             "SpinalCord": "SpinalCord", "Brainstem": "Brainstem", "Esophagus": "Esophagus", "Larynx": "Larynx"}
    for stem, tg263 in stems.items():
        assert normalize_name(stem) == tg263 and infer_role(tg263) is StructureRole.OAR


def test_targets_prvs_and_unknown_names():
    assert normalize_name("ptv_41.4") == "PTV_41.4"
    assert normalize_name("gtv") == "GTV"
    assert normalize_name("cord PRV 5mm") == "SpinalCord_PRV05"
    assert normalize_name("heart-ptv") == "Heart-PTV"
    # A name the table does not know is kept (never guessed).
    assert normalize_name("  Fiducial_3 ") == "Fiducial_3"
    # a paired organ without a side is not guessed to be left or right
    assert normalize_name("breast") == "breast" and infer_role("breast") is StructureRole.OTHER
    # target names that contain an organ word stay targets
    assert normalize_name("PTV_parotid") == "PTV_parotid" and infer_role("PTV_parotid") is StructureRole.PTV


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

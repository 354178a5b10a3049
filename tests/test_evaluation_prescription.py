"""Prescriptions from the RTPLAN (DoseReferenceSequence, FractionGroupSequence) and ``evaluate --rtplan``.

The RTPLANs are built at test time from the shared breast-boost plan with
pydicom edits: two target dose levels on ROIs of its structure set (Tumor Bed
14 Gy, Borders 10 Gy, 7 fractions) plus a calculation point, and the malformed
variants of issue 19 (a dose reference naming an ROI the RTSTRUCT lacks, a plan
without fractions, one ROI prescribed twice).
"""

import json

import pytest

from sbrtplan.cli import main
from sbrtplan.errors import InputError
from sbrtplan.io import read_prescription


@pytest.fixture
def bb(shared_data):
    d = shared_data / "dicom" / "breast-boost"
    if not (d / "rtplan.dcm").is_file():
        pytest.skip(f"reference data not available: {d}")
    return d


def _plan(bb, tmp_path, levels=((9, 14.0), (3, 10.0)), fractions=7, name="plan.dcm", drop_fractions=False):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(str(bb / "rtplan.dcm"))
    refs = []
    for k, (roi, gy) in enumerate(levels, start=1):
        d = Dataset()
        d.DoseReferenceNumber = k
        d.DoseReferenceStructureType = "VOLUME"
        d.ReferencedROINumber = roi
        d.DoseReferenceType = "TARGET"
        d.DoseReferenceDescription = f"level {k}"
        d.TargetPrescriptionDose = f"{gy:g}"
        refs.append(d)
    pt = Dataset()  # a calculation point: not a target volume
    pt.DoseReferenceNumber = len(levels) + 1
    pt.DoseReferenceStructureType = "COORDINATES"
    pt.DoseReferencePointCoordinates = [0.0, 0.0, 0.0]
    pt.DoseReferenceType = "TARGET"
    pt.TargetPrescriptionDose = "11.3"
    refs.append(pt)
    ds.DoseReferenceSequence = Sequence(refs)
    if drop_fractions:
        del ds.FractionGroupSequence
    else:
        ds.FractionGroupSequence[0].NumberOfFractionsPlanned = fractions
    out = tmp_path / name
    ds.save_as(str(out))
    return out


def test_reads_every_target_dose_level_and_the_fractions(bb, tmp_path):
    rx = read_prescription(_plan(bb, tmp_path), bb / "rtss.dcm")
    assert rx.fractions == 7
    assert [(lv.roi_name, lv.dose_gy, lv.roi_number) for lv in rx.levels] == [("Tumor Bed", 14.0, 9),
                                                                              ("Borders", 10.0, 3)]
    assert rx.scheme_text() == "14/7"


def test_the_shared_plan_site_reference_is_matched_by_its_description(bb):
    # the clinical export names its target by a SITE description ("Breast"), an ROI of the structure set
    rx = read_prescription(bb / "rtplan.dcm", bb / "rtss.dcm")
    assert [(lv.roi_name, lv.dose_gy) for lv in rx.levels] == [("Breast", 14.0)] and rx.fractions == 7


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(levels=((42, 14.0),)), "ROI number 42"),
    (dict(drop_fractions=True), "no FractionGroupSequence"),
    (dict(fractions=0), "NumberOfFractionsPlanned is 0"),
    (dict(levels=((9, 14.0), (9, 12.0))), "prescribed twice"),
    (dict(levels=((9, -3.0),)), "expected a positive dose"),
])
def test_bad_plans_are_one_line_errors(bb, tmp_path, kwargs, fragment):
    with pytest.raises(InputError) as exc:
        read_prescription(_plan(bb, tmp_path, **kwargs), bb / "rtss.dcm")
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_evaluate_rtplan_gives_each_target_its_own_prescription(bb, tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["-q", "evaluate", "--rtdose", str(bb / "rtdose.dcm"), "--rtstruct", str(bb / "rtss.dcm"),
               "--rtplan", str(_plan(bb, tmp_path)), "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "Per-lesion indices" in text
    data = json.loads(out.read_text())
    les = {x["name"]: x for x in data["lesions"]["lesions"]}
    assert les["Tumor Bed"]["rx_gy"] == 14.0 and les["Borders"]["rx_gy"] == 10.0
    # the union adds the shares: its target volume is the sum of the two targets'
    assert data["lesions"]["union"]["ptv_cc"] == pytest.approx(les["Tumor Bed"]["ptv_cc"] + les["Borders"]["ptv_cc"])


@pytest.mark.parametrize("extra,fragment", [
    (["--lesion", "Tumor Bed=14", "--lesion", "tumor bed=12"], "given twice"),
    (["--lesion", "Tumor Bed"], "expected NAME=GY"),
])
def test_evaluate_bad_lesion_arguments(bb, capsys, extra, fragment):
    rc = main(["-q", "evaluate", "--rtdose", str(bb / "rtdose.dcm"), "--rtstruct", str(bb / "rtss.dcm"),
               "--scheme", "14/7"] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_rtplan_with_a_missing_roi_is_a_one_line_error(bb, tmp_path, capsys):
    rc = main(["-q", "evaluate", "--rtdose", str(bb / "rtdose.dcm"), "--rtstruct", str(bb / "rtss.dcm"),
               "--rtplan", str(_plan(bb, tmp_path, levels=((42, 14.0),)))])
    err = capsys.readouterr().err
    assert rc == 2 and "ROI number 42" in err and len(err.strip().splitlines()) == 1, err

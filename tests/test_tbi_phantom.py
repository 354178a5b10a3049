"""phantom:tbi end to end through ``sbrtplan tbi``: the numbers issue 21 asks for, the outputs, the
RTPLAN (dciodvfy when installed), and the partial thorax CT."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from sbrtplan.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tbi_phantom")
    rc = main(["tbi", "--case", "phantom:tbi", "--rx", "12/6", "--technique", "ap-pa", "--distance-cm", "400",
               "--out", str(out)])
    return rc, out, json.loads((out / "metrics.json").read_text())


def test_every_rule_passes_and_regions_are_within_5_percent(run):
    rc, _, m = run
    assert rc == 0 and m["all_rules_passed"]
    names = [r["region"] for r in m["regions"]]
    for region in ("head", "neck", "chest", "abdomen", "pelvis", "thighs", "knees", "calves", "ankles"):
        assert region in names
    for r in m["regions"]:
        # issue 21: every region within +-5 % after compensation (+-10 % required)
        assert -5.0 <= r["deviation_percent"]["min"] and r["deviation_percent"]["max"] <= 5.0, r
    # thin regions are hot without compensation: the knees (9 cm) get > 15 % more than the 23 cm abdomen
    by = {r["region"]: r for r in m["regions"]}
    assert by["knees"]["midline_dose_uncompensated_gy"]["min"] > 1.15 * 12.0
    assert by["knees"]["compensator_mm"]["min"] > by["abdomen"]["compensator_mm"]["max"]


def test_lung_dose_dose_rate_and_time(run):
    _, _, m = run
    assert m["lung"]["mean_dose_without_blocks_gy"] > 8.0      # blocks are needed ...
    assert m["lung"]["mean_dose_gy"] < 7.0                     # ... and sufficient
    assert {b["field"] for b in m["blocks"] if b["name"] == "lung"} == {"AP", "PA"}
    assert 6.0 <= m["dose_rate"]["midline_cgy_per_min"] <= 10.0
    for f in m["fields"]:
        assert f["beam_on_time_min"] == pytest.approx(f["mu_per_fraction"] / m["dose_rate"]["machine_mu_per_min"],
                                                      rel=1e-3)
    assert m["quality_indicators"] == {"midline_dose_control_passed": True, "lung_block_placement_passed": True}


def test_outputs_and_rtplan(run):
    _, out, m = run
    html = (out / "report.html").read_text()
    assert "Midline dose by region" in html and "data:image/png;base64" in html
    assert len((out / "compensator.csv").read_text().splitlines()) == len(m["sampling_points"]) + 1
    ds = pydicom.dcmread(out / "rtplan.dcm")
    assert ds.Modality == "RTPLAN" and len(ds.BeamSequence) == 2
    mu = [float(r.BeamMeterset) for r in ds.FractionGroupSequence[0].ReferencedBeamSequence]
    assert mu == pytest.approx([m["fields"][0]["mu_per_fraction"]] * 2, rel=1e-3)
    # the isocentre is 100 cm from the 400 cm source: 300 cm in front of the patient's midline
    iso = np.array([float(v) for v in ds.BeamSequence[0].ControlPointSequence[0].IsocenterPosition])
    src = np.array(m["fields"][0]["source_mm"])
    assert np.linalg.norm(iso - src) == pytest.approx(1000.0, abs=0.5)
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    res = subprocess.run([exe, str(out / "rtplan.dcm")], capture_output=True, text=True, timeout=120)
    text = res.stdout + res.stderr
    assert [ln for ln in text.splitlines() if ln.startswith("Error")] == [], text
    assert "RTPlan" in text


def test_partial_thorax_ct(shared_data, tmp_path):
    """thorax-rt02 (42 cm of a thorax): the plan runs with the regions the CT covers."""
    from sbrtplan.io import read_ct_series, read_rtstruct
    from sbrtplan.tbi import TbiRequest, plan_tbi

    folder = shared_data / "dicom" / "thorax-rt02"
    case = read_ct_series(folder)
    rs = next(p for p in folder.glob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT")
    for s in read_rtstruct(rs, case, names=["Lung_L", "Lung_R"]):
        case.add_structure(s, replace=True)
    plan = plan_tbi(case, TbiRequest(2.0, 1))
    regions = {s.sample.region for s in plan.samples}
    assert "chest" in regions and regions <= {"chest", "neck/shoulders", "abdomen"}
    doses = np.array([s.final_gy_per_fx for s in plan.samples])
    assert np.all(np.abs(doses / 2.0 - 1.0) <= 0.10)
    assert plan.mld_gy is not None and plan.mld_gy < 2.5


def test_cli_refuses_a_short_distance_with_the_rule_named(tmp_path, capsys):
    rc = main(["tbi", "--case", "phantom:tbi", "--rx", "12/6", "--distance-cm", "350", "--out", str(tmp_path)])
    assert rc == 2
    assert "extended distance" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()

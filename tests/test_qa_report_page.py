"""The QA page as a page of the plan's report.html: ``qa-plan --plan-dir`` on a plan output folder,
then ``qa-compare --report`` with a measurement, replacing (not duplicating) the page."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml


@pytest.fixture()
def plan_dir(tmp_path):
    """A plan output folder: RTPLAN.dcm (three static 5 x 5 cm fields) and a report.html of render_report."""
    from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
    from sbrtplan.case import Dose
    from sbrtplan.io import write_rtplan
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.report import render_report

    mlc = MLCModel.millennium120()
    beams = [Beam(f"f{g:g}", [ControlPoint(g, Aperture.rectangle(mlc, (-25.0, 25.0), (-25.0, 25.0)), 1.0)], 150.0,
                  mlc, (0.0, 30.0, 0.0)) for g in (0.0, 120.0, 240.0)]
    case = make_phantom("spine", 5.0)
    d = tmp_path / "plan"
    d.mkdir()
    write_rtplan(BeamSet(beams, 3, 27.0), d / "RTPLAN.dcm", case=case)
    dose = Dose(case.grid, np.where(case.density > 0.05, 20.0, 0.0).astype(np.float32))
    render_report(d / "report.html", case=case, dose=dose, metrics={}, prescription_gy=27.0, n_fractions=3,
                  dvh_structures=[])
    return d


@pytest.fixture()
def criteria_file(tmp_path):
    from importlib import resources

    crit = yaml.safe_load((resources.files("sbrtplan") / "qa" / "data" / "qa_criteria.yaml").read_text())
    crit["calculation"]["max_grid_mm"] = 5.0      # a coarse grid keeps the test short
    f = tmp_path / "crit.yaml"
    f.write_text(yaml.safe_dump(crit))
    return f


def _qa_section(html: str) -> str:
    sections = re.findall(r'<section id="patient-specific-qa">.*?</section>', html, flags=re.S)
    assert len(sections) == 1, f"expected one QA page, found {len(sections)}"
    return sections[0]


def test_qa_plan_on_plan_folder_adds_the_qa_page_to_the_report(plan_dir, criteria_file, tmp_path, capsys):
    from sbrtplan.cli import main
    from sbrtplan.qa import DosePlane, read_plane_csv, write_plane_csv

    before = (plan_dir / "report.html").read_text()
    rc = main(["qa-plan", "--plan-dir", str(plan_dir), "--phantom", "qa_cylinder", "--grid-mm", "5", "--no-ct",
               "--criteria", str(criteria_file)])
    assert rc == 0
    qa = plan_dir / "qa"
    assert (qa / "verification.json").is_file() and (qa / "RTDOSE.dcm").is_file()
    html = (plan_dir / "report.html").read_text()
    page = _qa_section(html)
    # no measurement yet: the verdict is INCOMPLETE and the calculated plane is shown (one inline PNG)
    assert "<b>INCOMPLETE</b>" in page and page.count("data:image/png;base64,") == 1
    ver = json.loads((qa / "verification.json").read_text())
    assert f"{ver['chamber']['volume_averaged_dose_gy']:.4f}" in page
    # the plan report keeps everything it had; the QA page sits before the timings (the last section)
    assert "Dose-volume histograms" in html and "Protocol compliance" in html
    assert html.index('id="patient-specific-qa"') < html.index("<h2>Timings</h2>")
    assert len(html) > len(before)

    # a measurement 1.5 % above the calculated plane and a chamber reading 1 % low: PASS on the same page
    calc = read_plane_csv(qa / "calculated_plane.csv")
    write_plane_csv(DosePlane(calc.dose_gy * 1.015, calc.u_mm, calc.v_mm, calc.orientation), tmp_path / "m.csv")
    point = 0.99 * ver["chamber"]["volume_averaged_dose_gy"]
    rc = main(["qa-compare", "--qa-dir", str(qa), "--measured", str(tmp_path / "m.csv"), "--measured-point-gy",
               f"{point:.6f}", "--criteria", str(criteria_file), "--report", str(plan_dir / "report.html")])
    assert rc == 0
    html = (plan_dir / "report.html").read_text()
    page = _qa_section(html)                     # replaced, not a second page
    assert "<b>INCOMPLETE</b>" not in page and "<b>PASS</b>" in page
    # measured / calculated planes and gamma map in one figure, the two profiles in another
    assert page.count("data:image/png;base64,") == 2
    # 2 %/2 mm global 100 % (a uniform 1.5 % change is within 2 % of the maximum everywhere); point -1.00 %
    assert re.search(r"2%/2mm global</td><td class='PASS'>100\.0", page)
    assert "-1.00" in page


def test_plan_dir_without_rtplan_is_one_line_error(tmp_path, capsys):
    from sbrtplan.cli import main

    d = tmp_path / "empty"
    d.mkdir()
    capsys.readouterr()
    rc = main(["qa-plan", "--plan-dir", str(d)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "RTPLAN.dcm" in err[0]


def test_report_section_rejects_a_non_report(tmp_path):
    from sbrtplan.errors import InputError
    from sbrtplan.report import set_report_section

    f = tmp_path / "x.html"
    f.write_text("not a report")
    with pytest.raises(InputError, match="not an HTML report"):
        set_report_section(f, "patient-specific-qa", "<h2>QA</h2>")


def test_cohort_qa_of_a_plan_folder_and_pass_rate_summary(plan_dir, criteria_file, tmp_path):
    """What `sbrtplan batch` runs after each plan when the cohort file has `qa:`: the verification of the
    folder's RTPLAN, the comparison with the case's measurement, the QA page in its report, and the cohort's
    qa_summary.  The 'measurement' is the calculated plane 1 % high with the chamber 2 % high: PASS."""
    from sbrtplan.batch.cohort import Cohort, CohortTask
    from sbrtplan.batch.run import write_job_summaries
    from sbrtplan.errors import InputError
    from sbrtplan.qa import DosePlane, cohort_qa_options, qa_plan_folder, read_plane_csv, write_plane_csv

    opts = cohort_qa_options({"phantom": "qa_cylinder", "grid_mm": 5, "criteria": str(criteria_file)}, "case",
                             tmp_path)
    first = qa_plan_folder(plan_dir, opts)
    assert first["verdict"] == "INCOMPLETE" and first["chamber_dose_gy"] > 0
    calc = read_plane_csv(plan_dir / "qa" / "calculated_plane.csv")
    write_plane_csv(DosePlane(calc.dose_gy * 1.01, calc.u_mm, calc.v_mm), tmp_path / "m.csv")
    opts = cohort_qa_options({"phantom": "qa_cylinder", "grid_mm": 5, "criteria": str(criteria_file),
                              "measured": "m.csv", "measured_point_gy": 1.02 * first["chamber_dose_gy"]},
                             "case", tmp_path)
    row = qa_plan_folder(plan_dir, opts)
    assert row["verdict"] == "PASS" and row["point_diff_pct"] == pytest.approx(2.0, abs=0.01)
    assert row["gamma_2pct_2mm_global"] == 100.0
    assert "<b>PASS</b>" in _qa_section((plan_dir / "report.html").read_text())
    task = CohortTask("p1", "phantom:spine", "27/3", "bone_spine", qa=opts)
    cohort = Cohort(path=tmp_path / "c.yaml", output_dir=tmp_path / "cohort", tasks=[task])
    stats = write_job_summaries(cohort, [{"qa_verdict": row["verdict"], "qa_chamber_dose_gy": row["chamber_dose_gy"],
                                          "qa_point_diff_pct": row["point_diff_pct"],
                                          "qa_gamma_2pct_2mm_global": row["gamma_2pct_2mm_global"], "status": "done"}])
    assert stats["qa"]["n_plans"] == 1 and stats["qa"]["plans_passing_pct"] == 100.0
    summary = json.loads((tmp_path / "cohort" / "qa_summary.json").read_text())
    assert summary["plans"][0]["name"] == "p1/27-3"
    for bad, match in (({"phantm": "qa_slab"}, "phantm"), ({"gantry": "sideways"}, "gantry"),
                       ({"shift_mm": [1]}, "shift_mm")):
        with pytest.raises(InputError, match=match):
            cohort_qa_options(bad, "case", tmp_path)

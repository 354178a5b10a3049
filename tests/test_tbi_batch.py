"""TBI plans in `sbrtplan batch`: the cohort file's tbi options, one TBI plan per case, and the
standard's two quality indicators (midline-dose control pass rate, lung-block placement accuracy
rate) over the cohort, in tbi_quality_indicators.json and the cohort summary."""

from __future__ import annotations

import csv
import json

import pytest

from sbrtplan.batch import load_cohort
from sbrtplan.errors import InputError

COHORT = """
technique: tbi
schemes: [12/6]
tbi: {technique: ap-pa, distance_cm: 400}
output: out
cases:
  - {name: designed, case: "phantom:tbi"}
  - {name: thin_block, case: "phantom:tbi", tbi: {lung_block_mm: 3}}
"""


def test_tbi_cohort_file_is_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(COHORT)
    c = load_cohort(f)
    assert [t.key for t in c.tasks] == ["designed/12-6", "thin_block/12-6"]
    # the case's tbi mapping is laid over the top level's, not instead of it
    assert dict(c.tasks[1].tbi) == {"technique": "ap-pa", "distance_cm": 400.0, "lung_block_mm": 3.0}
    assert c.tasks[0].protocol == "tbi" and c.tasks[0].qa == ()
    f.write_text(COHORT.replace("distance_cm: 400", "distanse_cm: 400"))
    with pytest.raises(InputError, match="distanse_cm"):
        load_cohort(f)
    f.write_text("protocol: bone_spine\nschemes: [27/3]\ntbi: {technique: ap-pa}\n"
                 "cases:\n  - {case: 'phantom:spine'}\n")
    with pytest.raises(InputError, match="technique: tbi"):
        load_cohort(f)


@pytest.mark.slow
def test_tbi_cohort_reports_the_two_quality_indicators(tmp_path):
    """Two 12 Gy / 6 fx AP/PA plans of phantom:tbi: one with the lung block designed for the MLD (6.5 Gy
    design, below the 8 Gy limit), one with a 3 mm lead block forced (transmission exp(-0.49 x 0.3) = 0.86
    under the block: the open-field MLD of about 12 Gy cannot fall below 8 Gy).  Both plans keep their
    midline within 10 % (compensators), so the midline-dose control pass rate is 100 % and the
    lung-block placement accuracy rate 1 of 2 = 50 %."""
    from sbrtplan.batch.run import run_task, write_job_summaries, write_summary

    f = tmp_path / "cohort.yaml"
    f.write_text(COHORT)
    cohort = load_cohort(f)
    rows = [run_task(t, str(cohort.output_dir)) for t in cohort.tasks]
    assert [r["status"] for r in rows] == ["done", "done"], [r.get("error") for r in rows]
    assert rows[0]["tbi_mld_gy"] < 8.0 < rows[1]["tbi_mld_gy"]
    assert rows[0]["tbi_lung_block_placement_passed"] is True and rows[1]["tbi_lung_block_placement_passed"] is False
    write_summary(cohort.output_dir / "summary.csv", rows)
    out = write_job_summaries(cohort, rows)
    qi = json.loads((cohort.output_dir / "tbi_quality_indicators.json").read_text())
    assert qi == out["tbi"]
    assert qi["patients"] == 2 and qi["lung_block_patients"] == 2
    assert qi["midline_dose_control_pass_rate_percent"] == 100.0
    assert qi["lung_block_placement_accuracy_rate_percent"] == 50.0
    with open(cohort.output_dir / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert [s["tbi_lung_block_placement_passed"] for s in summary] == ["True", "False"]
    for t in cohort.tasks:     # each task wrote the outputs of `sbrtplan tbi`
        m = json.loads((cohort.output_dir / t.key / "metrics.json").read_text())
        assert m["prescription"]["total_gy"] == 12.0 and m["prescription"]["fractions"] == 6
        assert (cohort.output_dir / t.key / "report.html").is_file()

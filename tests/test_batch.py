"""Cohorts on Dask: a 3-case x 2-scheme cohort on a 2-worker LocalCluster, resumable, failures isolated."""

import csv
import json

import pytest

from sbrtplan.batch import load_cohort, run_cohort
from sbrtplan.errors import InputError

COHORT = """
protocol: bone_spine
schemes: [27/3, 30/3]
technique: imrt
beams: 5
select_beams: false
grid_mm: 4.0          # coarse grid: this test checks the cohort machinery, not plan quality
allow_missing: true
output: out
cases:
  - {name: spine_a, case: "phantom:spine"}
  - {name: spine_b, case: "phantom:spine"}
  - {name: liver, case: "phantom:liver", protocol: liver_hcc, schemes: [45/3, 50/5]}
"""


def test_cohort_file_is_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("protocol: bone_spine\nschemes: [27/3]\ncases:\n  - {case: 'phantom:spine', bemas: 5}\n")
    with pytest.raises(InputError, match="bemas"):
        load_cohort(f)


@pytest.mark.slow
def test_cohort_runs_resumes_and_isolates_failures(tmp_path):
    f = tmp_path / "cohort.yaml"
    f.write_text(COHORT)
    cohort = load_cohort(f)
    assert [t.key for t in cohort.tasks] == ["spine_a/27-3", "spine_a/30-3", "spine_b/27-3", "spine_b/30-3",
                                             "liver/45-3", "liver/50-5"]
    rows = run_cohort(cohort, n_workers=2)
    assert [r["status"] for r in rows] == ["done"] * 6, [r.get("error") for r in rows]
    for t in cohort.tasks:
        m = json.loads((cohort.output_dir / t.key / "metrics.json").read_text())
        # each task planned its own case and scheme, and no hard organ limit is exceeded (the final
        # normalisation never crosses one); plan quality itself is tested by the planning tests
        assert m["prescription"]["dose_gy"] == float(t.scheme.split("/")[0])
        assert m["prescription"]["fractions"] == int(t.scheme.split("/")[1])
        assert m["summary"]["hard_failures"] == []
        assert (cohort.output_dir / t.key / "RTPLAN.dcm").exists()
    with open(cohort.output_dir / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert len(summary) == 6 and all(float(r["total_mu"]) > 0 for r in summary)

    # Interruption: one task lost its marker (as if killed before finishing), and a broken case is added.
    (cohort.output_dir / "spine_b" / "30-3" / "done.json").unlink()
    f.write_text(COHORT + '  - {name: broken, case: "phantom:no_such_phantom"}\n')
    rows2 = run_cohort(load_cohort(f), n_workers=2)
    status = {(r["case"], r["scheme"]): r["status"] for r in rows2}
    assert status[("spine_b", "30/3")] == "done"          # recomputed
    assert sum(s == "skipped" for s in status.values()) == 5  # finished earlier: not recomputed
    assert status[("broken", "27/3")] == "failed" and status[("broken", "30/3")] == "failed"
    assert "no_such_phantom" in (cohort.output_dir / "broken" / "27-3" / "error.txt").read_text()

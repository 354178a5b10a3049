"""Time the input validation adds to a command (issue 20 target: < 1 s on any command).

Run: ``.venv/bin/python benchmarks/bench_validation.py [DICOM_ROOT]`` (default ``../shared/data/dicom``).

Measures, on the shared clinical files, each check that a command runs before (or beside) its reader:
frame-of-reference / patient agreement of CT + RTSTRUCT + RTPLAN + RTDOSE headers, the RTPLAN value
checks, the RTSTRUCT structure checks, the RTDOSE scaling and value checks, the option checks and the
output-folder check.  Prints the median of 5 repeats (wall and CPU seconds) and the total per command.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int = 5) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    import numpy as np
    import pydicom

    from sbrtplan.cli._validate import check_output_dir, check_plan_options
    from sbrtplan.io.validate import (check_dose_values, check_rtplan_dataset, check_rtstruct_dataset,
                                      check_same_patient, dose_grid_scaling)

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "dicom"
    thorax, breast = root / "thorax-rt02", root / "breast-boost"
    if not thorax.is_dir():
        sys.exit(f"no data at {root}")
    rs_t = next(p for p in thorax.iterdir() if p.name.endswith("_m.dcm"))
    rp_t = thorax / "RTPLAN_Hashed.dcm"
    rows = []
    rows.append(("same patient/frame: CT folder + RTSTRUCT + RTPLAN (thorax)",
                 _time(lambda: check_same_patient([("ct", thorax), ("rs", rs_t), ("rp", rp_t)]))))
    rows.append(("same patient/frame: RTDOSE + RTSTRUCT (breast)",
                 _time(lambda: check_same_patient([("rd", breast / "rtdose.dcm"), ("rs", breast / "rtss.dcm")]))))
    ds_p = pydicom.dcmread(str(rp_t))
    rows.append(("RTPLAN value checks (thorax, 7 IMRT fields)", _time(lambda: check_rtplan_dataset(ds_p, rp_t))))
    ds_s = pydicom.dcmread(str(breast / "rtss.dcm"))
    rows.append(("RTSTRUCT structure checks (breast)", _time(lambda: check_rtstruct_dataset(ds_s, "rtss"))))
    ds_d = pydicom.dcmread(str(breast / "rtdose.dcm"))
    dose = ds_d.pixel_array.astype(np.float64) * dose_grid_scaling(ds_d, "rtdose")
    rows.append(("RTDOSE scaling + value checks (breast, 2.5 M voxels)", _time(lambda: check_dose_values(dose, "rd"))))
    args = Namespace(grid_mm=2.0, beams=7, technique="imrt", max_memory_gib=None)
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("option + output-folder checks", _time(lambda: (check_plan_options(args),
                                                                     check_output_dir(Path(tmp) / "out")))))
    # the plan's memory guard: dose grid + influence matrix estimated from the case as read (plan, demo,
    # benchmark, compare-*, batch run it after reading the case, before anything is built)
    from sbrtplan._resources import check_plan_memory, plan_targets
    from sbrtplan.io import load_case, read_rtdose
    from sbrtplan.io.validate import check_reference_dose
    from sbrtplan.phantoms import make_phantom

    spine = make_phantom("spine")
    tgt = plan_targets(spine, [], "bone_spine")
    rows.append(("plan memory estimate: spine phantom, VMAT (120 sectors)",
                 _time(lambda: check_plan_memory(spine, tgt, techniques=("vmat",)))))
    thorax_case = load_case(thorax)
    tgt_t = plan_targets(thorax_case, ["PTV4140"])
    rows.append(("plan memory estimate: thorax CT 512^2 x 105, PTV 751 cc, VMAT + IMRT",
                 _time(lambda: _estimate_only(thorax_case, tgt_t, ("vmat", "imrt")))))
    ref = read_rtdose(breast / "rtdose.dcm")
    rows.append(("reference RTDOSE read + checks (breast, 2.5 M voxels)",
                 _time(lambda: read_rtdose(breast / "rtdose.dcm"))))
    on_ct = _on_grid(ref, thorax_case)
    rows.append(("reference RTDOSE overlap check (a dose on the thorax CT grid)",
                 _time(lambda: check_reference_dose(on_ct, thorax_case, "ref"))))
    for name, (wall, cpu) in rows:
        print(f"{name:60s} {wall * 1000:8.1f} ms wall  {cpu * 1000:8.1f} ms CPU")
    print(f"{'recompute/mucheck total (frame + RTPLAN + options)':60s} "
          f"{(rows[0][1][0] + rows[2][1][0] + rows[5][1][0]) * 1000:8.1f} ms wall")
    print(f"{'evaluate total (frame + RTSTRUCT + RTDOSE + options)':60s} "
          f"{(rows[1][1][0] + rows[3][1][0] + rows[4][1][0] + rows[5][1][0]) * 1000:8.1f} ms wall")
    print(f"{'plan total (options + output folder + memory estimate, thorax)':60s} "
          f"{(rows[5][1][0] + rows[7][1][0] / 2) * 1000:8.1f} ms wall")
    print(f"{'recompute with --reference-rtdose (+ reference read + overlap)':60s} "
          f"{(rows[0][1][0] + rows[2][1][0] + rows[5][1][0] + rows[8][1][0] + rows[9][1][0]) * 1000:8.1f} ms wall")
    import os

    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}" if os.path.exists("/proc/loadavg")
          else "")


def _estimate_only(case, targets, techniques):
    """The estimate without the refusal (the thorax VMAT plan at 2 mm exceeds a small machine's memory)."""
    from sbrtplan._resources import estimate_plan_influences

    return estimate_plan_influences(case, targets, techniques=techniques)


def _on_grid(dose, case):
    """A dose on ``case``'s grid (the overlap check's cost does not depend on the values)."""
    import numpy as np

    from sbrtplan.case import Dose

    return Dose(case.grid, np.ones(case.grid.shape, np.float32))


if __name__ == "__main__":
    main()

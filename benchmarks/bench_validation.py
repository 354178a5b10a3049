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
    for name, (wall, cpu) in rows:
        print(f"{name:60s} {wall * 1000:8.1f} ms wall  {cpu * 1000:8.1f} ms CPU")
    print(f"{'recompute/mucheck total (frame + RTPLAN + options)':60s} "
          f"{(rows[0][1][0] + rows[2][1][0] + rows[5][1][0]) * 1000:8.1f} ms wall")
    print(f"{'evaluate total (frame + RTSTRUCT + RTDOSE + options)':60s} "
          f"{(rows[1][1][0] + rows[3][1][0] + rows[4][1][0] + rows[5][1][0]) * 1000:8.1f} ms wall")


if __name__ == "__main__":
    main()

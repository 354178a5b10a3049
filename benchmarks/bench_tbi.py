"""TBI planning time and memory on phantom:tbi (issue 21: planning < 30 s).

Run: ``.venv/bin/python benchmarks/bench_tbi.py [--repeat 2] [--technique ap-pa|lateral]``.

Builds the whole-body phantom (5 mm) and plans 12 Gy / 6 fx at 400 cm: midline sampling,
compensators, 3D broad-beam dose, lung blocks, DVHs.  The first run includes loading (or, on a
cold cache, compiling) the numba ray tracer; later runs are the warm figure.  Prints the phantom
build time, the planning time per run, the outputs' write time and the peak resident memory.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sbrtplan._log import peak_memory_mib
from sbrtplan.phantoms import make_phantom
from sbrtplan.tbi import TbiRequest, parse_technique, plan_tbi, write_outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--technique", default="ap-pa")
    args = ap.parse_args()
    t0 = time.perf_counter()
    case = make_phantom("tbi")
    build_s = time.perf_counter() - t0
    print(f"phantom:tbi {case.grid.nx}x{case.grid.ny}x{case.grid.nz} @ 5 mm built in {build_s:.2f} s")
    request = TbiRequest(12.0, 6, technique=parse_technique(args.technique))
    plan = None
    for k in range(args.repeat):
        t0 = time.perf_counter()
        plan = plan_tbi(case, request)
        print(f"run {k + 1}: planning {time.perf_counter() - t0:.2f} s "
              f"(build + planning {build_s + time.perf_counter() - t0:.2f} s; target < 30 s)")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        write_outputs(plan, out)
        print(f"outputs (metrics.json, compensator.csv, report.html, rtplan.dcm) written in "
              f"{time.perf_counter() - t0:.2f} s")
    worst = max(abs(s.final_gy_per_fx * 6 / 12.0 - 1.0) for s in plan.samples) * 100
    print(f"worst midline deviation {worst:.2f} %, MLD {plan.mld_gy:.2f} Gy, midline dose rate "
          f"{plan.midline_dose_rate_cgy_min:.2f} cGy/min, all rules passed: {plan.passed}")
    print(f"peak memory {peak_memory_mib():.0f} MiB")


if __name__ == "__main__":
    main()

"""Load time and memory of the shared thorax case (CT + RTSTRUCT + all masks + body).

Run: ``.venv/bin/python benchmarks/bench_load_thorax.py [DICOM_FOLDER]``
(default ``../shared/data/dicom/thorax-rt02``).  The load runs in a fresh
process per repeat so that numba cache loading is counted and the peak
resident memory is the load's own.  Target (issue 2): <= 10 s on 2 cores.
The CPU time of the load is printed beside the wall time: on a shared
machine the wall time also counts waiting for the cores.
Also prints the matRad TG119 and OpenKBP pt_1 load times when present.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from sbrtplan._log import Timings, peak_memory_mib
from sbrtplan.io import load_case
t_import = time.perf_counter() - t0
timings = Timings()
t1, c1 = time.perf_counter(), time.process_time()
case = load_case(sys.argv[1], timings=timings)
t_load, c_load = time.perf_counter() - t1, time.process_time() - c1
mask_mib = sum(s.mask.nbytes + (s.fraction.nbytes if s.fraction is not None else 0)
               for s in case.structures.values()) / 2**20
print(json.dumps({"import_s": t_import, "load_s": t_load, "cpu_s": c_load, "steps": timings.as_dict(),
                  "peak_rss_mib": peak_memory_mib(), "grid": list(case.grid.shape),
                  "n_structures": len(case.structures), "ct_mib": case.hu.nbytes / 2**20,
                  "structures_mib": mask_mib}))
"""


def run_once(spec: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, spec], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "load failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(label: str, spec: Path, repeats: int, target_s: float | None = None) -> None:
    if not spec.exists():
        print(f"{label}: {spec} not available, skipped")
        return
    runs = [run_once(str(spec)) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["load_s"])
    loads = ", ".join(f"{r['load_s']:.2f}" for r in runs)
    print(f"{label}: grid {tuple(best['grid'])} (z,y,x), {best['n_structures']} structures")
    print(f"  load_case: {loads} s (best {best['load_s']:.2f} s"
          + (f", target <= {target_s:g} s, ratio {best['load_s'] / target_s:.2f})" if target_s else ")"))
    print(f"  CPU time of the best run: {best['cpu_s']:.2f} s (wall above CPU means other processes "
          "competed for the cores)")
    print(f"  import sbrtplan.io: {best['import_s']:.2f} s; peak RSS {best['peak_rss_mib']:.0f} MiB "
          f"(CT {best['ct_mib']:.0f} MiB, structures {best['structures_mib']:.0f} MiB)")
    steps = {k: v for k, v in best["steps"].items() if k != "total"}
    print("  steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))


def main() -> None:
    thorax = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED / "dicom" / "thorax-rt02"
    report("thorax-rt02 (CT + RTSTRUCT + occupancy + body)", thorax, repeats=3, target_s=10.0)
    report("matRad TG119.mat", SHARED / "matrad" / "TG119.mat", repeats=2)
    report("OpenKBP pt_1", SHARED / "openkbp" / "train-pats" / "pt_1", repeats=2)


if __name__ == "__main__":
    main()

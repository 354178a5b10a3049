"""Time of a full ``evaluate_plan`` (every DVH, CI/GI/R50/D2cm, every protocol goal).

Run: ``.venv/bin/python benchmarks/bench_evaluate.py``.  Two cases:

* the built-in spine phantom at 2 mm (190 x 130 x 70 voxels) with planning
  structures added to reach 20 structures (PRVs, rings, lungs), against
  ``bone_spine`` 27 Gy / 3 fx;
* ``../shared/data/dicom/thorax-rt02`` (CT 512 x 512 x 105, 9 ROIs) with the
  RTSTRUCT rasterised onto a 2 mm grid over the ROIs plus 30 mm (the extent of a dose grid), prescription 41.4 Gy / 23 fx
  to PTV4140, metrics only (no lung protocol ships); skipped when the data or
  the DICOM readers are absent.

The dose is synthetic (the evaluator does not care where a dose comes from):
Rx at the PTV surface rising smoothly to ~118 % inside it, ``Rx exp(-d / 15 mm)`` at a distance ``d`` outside it,
a typical SBRT fall-off (R50 ~ 4-5).  Each evaluation runs twice; the first
run includes numba compilation or cache loading.  Target (issue 4): <= 2 s for
a 2 mm dose and a 20-structure case.  The figures are wall-clock seconds on a
shared machine and are noisy: the CPU time (all threads) and the load average are printed too, so a
run on a busy machine can be judged (wall ~ CPU / cores on an idle machine).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from sbrtplan._log import Timings
from sbrtplan.case import Dose, Structure, distance_map_mm, prv, ring, union
from sbrtplan.evaluation import evaluate_plan
from sbrtplan.phantoms import make_phantom

TARGET_S = 2.0
SHARED = Path(os.environ.get("SBRTPLAN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def synthetic_dose(ptv: Structure, rx_gy: float, falloff_mm: float = 15.0) -> Dose:
    """Smooth SBRT-like dose: Rx at the PTV surface rising to ~118 % inside, ``exp(-d / falloff)`` outside.

    No plateau (a clinical dose has none), so the sub-voxel refinement works as hard as on a real dose.
    """
    d = distance_map_mm(ptv, signed=True).astype(np.float64)
    inside = rx_gy * (1.0 + 0.18 * (1.0 - np.exp(np.minimum(d, 0.0) / 8.0)))
    outside = rx_gy * np.exp(-np.maximum(d, 0.0) / falloff_mm)
    dose = np.where(d <= 0, inside, outside)
    return Dose(ptv.grid, dose.astype(np.float32), "synthetic SBRT fall-off")


def timed_evaluations(label: str, dose: Dose, structures: dict, n_runs: int = 2, **kw) -> None:
    for run in range(n_runs):
        t = Timings()
        t0, c0 = time.perf_counter(), time.process_time()
        rep = evaluate_plan(dose, structures, timings=t, **kw)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        steps = ", ".join(f"{k} {v:.2f}" for k, v in t.as_dict().items() if k != "total")
        print(f"{label} run {run + 1}: {dt:.2f} s wall, {dc:.2f} s CPU ({len(structures)} structures, "
              f"{len(rep.goals)} goals, {dose.grid.size / 1e6:.2f} M voxels); wall / {TARGET_S:g} s target "
              f"{dt / TARGET_S:.2f}; load average {os.getloadavg()[0]:.1f}")
        print(f"    steps (s): {steps}")
    tgt = rep.targets.get(rep.target) if rep.target else None
    if tgt is not None and tgt.indices is not None:
        ix = tgt.indices
        print(f"    {rep.target}: {tgt.volume_cc:.1f} cc, D95 {tgt.d95_gy:.2f} Gy, CI {ix.ci_rtog:.2f}, "
              f"GI {ix.gi:.2f}, R50 {ix.r50:.2f}, D2cm {ix.d2cm_pct:.1f} %")


def spine_case_20() -> tuple[Dose, dict]:
    case = make_phantom("spine", 2.0)
    s = dict(case.structures)
    ptv = s["PTV"]
    extra = [prv(s["Heart"], 3.0), prv(s["GreatVes"], 3.0), prv(s["SpinalCanal"], 2.0),
             ring(ptv, 0.0, 5.0, within=s["External"], name="Ring_0_5"),
             ring(ptv, 5.0, 15.0, within=s["External"], name="Ring_5_15"),
             ring(ptv, 15.0, 30.0, within=s["External"], name="Ring_15_30"),
             union(s["Lung_L"], s["Lung_R"], name="Lungs")]
    for e in extra:
        s[e.name] = e
    return synthetic_dose(ptv, 27.0), s


def thorax_case() -> tuple[Dose, dict] | None:
    root = SHARED / "dicom" / "thorax-rt02"
    if not root.is_dir():
        print(f"thorax-rt02: skipped (no data at {root})")
        return None
    try:
        from sbrtplan.io.dicom_ct import read_ct_series
        from sbrtplan.io.rtstruct import read_rtstruct
    except ImportError as exc:
        print(f"thorax-rt02: skipped (DICOM readers not available: {exc})")
        return None
    t0 = time.perf_counter()
    ct = read_ct_series(root)
    rtss = next(p for p in sorted(root.glob("*.dcm")) if not p.name.startswith(("CT_", "RTPLAN")))
    for_uid = ct.patient.frame_of_reference_uid
    # a dose grid covers the patient, not the CT's field of view: the ROIs' box plus 30 mm, 2 mm voxels
    coarse = ct.grid.with_spacing(6.0)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for x in read_rtstruct(rtss, coarse, frame_of_reference_uid=for_uid, occupancy=False):
        if x.mask.any():
            b0, b1 = x.bounding_box()
            pts = coarse.patient_from_index(np.array([b0, b1], dtype=float))
            lo, hi = np.minimum(lo, pts.min(axis=0)), np.maximum(hi, pts.max(axis=0))
    grid = ct.grid.with_spacing(2.0, lo - 30.0, hi + 30.0)
    structures = {x.name: x for x in read_rtstruct(rtss, grid, frame_of_reference_uid=for_uid)}
    print(f"thorax-rt02: CT {ct.grid.shape} read and {len(structures)} ROIs rasterised on a 2 mm grid "
          f"{grid.shape} in {time.perf_counter() - t0:.1f} s (not part of the evaluation time)")
    ptv = next(v for k, v in structures.items() if k.upper().startswith("PTV"))
    return synthetic_dose(ptv, 41.4), structures


def main() -> int:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    dose, s = spine_case_20()
    timed_evaluations("spine phantom 2 mm, bone_spine 27/3", dose, s, protocol="bone_spine", scheme="27/3")
    th = thorax_case()
    if th is not None:
        dose, s = th
        ptv = next(k for k in s if k.upper().startswith("PTV"))
        timed_evaluations("thorax-rt02 2 mm, metrics at 41.4/23", dose, s, scheme="41.4/23", target=ptv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

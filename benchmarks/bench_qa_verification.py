"""Verification plan of the demo VMAT plan on the slab phantom (issue 24): chamber dose and plane
against the engine's own dose there.

Run::

    .venv/bin/python benchmarks/bench_qa_verification.py                     # plans the demo first
    .venv/bin/python benchmarks/bench_qa_verification.py --plan-dir DEMO_OUT # a `sbrtplan demo` folder
    .venv/bin/python benchmarks/bench_qa_verification.py --rtplan RTPLAN.dcm [--region-half-mm 30]

The plan (``sbrtplan demo``: spine phantom, bone_spine, 27 Gy / 3 fx, two arcs, full recipe, 2 mm
grid, unless an RTPLAN or a demo folder is given) is transferred onto ``qa_slab`` (2 mm grid, gantry
and couch as planned) and its verification dose computed on the whole phantom (or within
``--region-half-mm`` of the chamber).  Printed:

* the chamber dose (PinPoint 3D volume average) and the dose at its centre, against the engine's
  dose at that point computed separately (``engine_point_dose`` on the slab built at 2.5 mm):
  target within 0.5 %;
* the coronal plane of the written RTDOSE against the engine run on that plane's voxels alone
  (largest difference, in Gy and in % of the plane's maximum);
* the time of each step and the load average (the figures are only comparable on an idle machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def demo_rtplan(work: Path) -> Path:
    from sbrtplan.io import write_rtplan
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow import plan

    t = time.perf_counter()
    p = plan(make_phantom("spine"), "bone_spine", "27/3", "vmat", allow_missing=True)
    print(f"demo VMAT plan: {time.perf_counter() - t:.1f} s, {p.total_mu:.1f} MU per fraction")
    path = work / "RTPLAN.dcm"
    write_rtplan(p.beam_set, path, case=p.case)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--rtplan")
    src.add_argument("--plan-dir", help="output folder of `sbrtplan demo` (its RTPLAN.dcm)")
    ap.add_argument("--region-half-mm", type=float, default=None,
                    help="compute the verification dose only this close to the chamber (default: whole phantom)")
    args = ap.parse_args()

    from sbrtplan._log import peak_memory_mib
    from sbrtplan.dose_engine import engine_point_dose, forward_dose
    from sbrtplan.io import read_rtdose, read_rtplan
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.qa import (PlaneOrientation, load_criteria, plane_from_volume, verify_on_phantom,
                             write_verification)

    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="qa_ver_") as tmp:
        work = Path(tmp)
        rtplan = Path(args.rtplan) if args.rtplan else (Path(args.plan_dir) / "RTPLAN.dcm" if args.plan_dir
                                                        else demo_rtplan(work))
        bs = read_rtplan(rtplan)
        print(f"plan {rtplan}: {len(bs.beams)} beams "
              f"({', '.join(f'{b.name} {len(b.control_points)} CP' for b in bs.beams)}), "
              f"{bs.total_mu_per_fraction:.1f} MU per fraction")
        slab = make_phantom("qa_slab", 2.0)
        t = time.perf_counter()
        res = verify_on_phantom(slab, bs, region_half_mm=args.region_half_mm)
        t_ver = time.perf_counter() - t
        n_vox = int(np.count_nonzero(res.dose.dose_gy)) if args.region_half_mm else int((slab.density > 0.05).sum())
        print(f"verification dose on qa_slab (2 mm, {n_vox} voxels): {t_ver:.1f} s")
        t = time.perf_counter()
        fine = make_phantom("qa_slab", 2.5)
        direct = sum(engine_point_dose(b, fine.density, fine.grid, res.reference_point_mm) for b in res.beam_set.beams)
        t_pt = time.perf_counter() - t
        print(f"chamber ({res.chamber.label}) volume average {res.chamber_dose_gy:.4f} Gy, centre "
              f"{res.point_dose_gy:.4f} Gy; engine point dose (slab at 2.5 mm) {direct:.4f} Gy ({t_pt:.1f} s)")
        print(f"  chamber - engine {100 * (res.chamber_dose_gy / direct - 1):+.3f} %, centre - engine "
              f"{100 * (res.point_dose_gy / direct - 1):+.3f} % (target within 0.5 %)")
        write_verification(res, work / "qa", write_ct=False, source_rtplan=str(rtplan))
        rd = read_rtdose(work / "qa" / "RTDOSE.dcm")
        plane = plane_from_volume(rd.dose_gy, rd.grid, res.reference_point_mm, PlaneOrientation.CORONAL)
        g = res.case.grid
        k = np.rint(g.index_from_patient(res.reference_point_mm)).astype(int)
        half = args.region_half_mm if args.region_half_mm else np.inf
        x, _, z = g.axis_coordinates_mm()
        near_x = np.abs(x - res.reference_point_mm[0]) <= half
        near_z = np.abs(z - res.reference_point_mm[2]) <= half
        sel = np.zeros(g.shape, bool)
        sel[:, k[1], :] = near_z[:, None] & near_x[None, :]
        sel &= res.case.density > 0.05
        crit = load_criteria()
        t = time.perf_counter()
        engine = forward_dose(res.case.density, g, res.beam_set, voxel_indices=np.flatnonzero(sel),
                              max_gantry_step_deg=crit.max_gantry_step_deg,
                              max_leaf_step_mm=crit.max_leaf_step_mm)[:, k[1], :]
        t_pl = time.perf_counter() - t
        got = plane.dose_gy[np.ix_(near_z, near_x)]
        want = engine[np.ix_(near_z, near_x)]
        inside = sel[:, k[1], :][np.ix_(near_z, near_x)]
        diff = float(np.max(np.abs(got - want)[inside]))
        print(f"RTDOSE plane vs engine on the plane's {int(inside.sum())} voxels ({t_pl:.1f} s): "
              f"largest difference {diff:.5f} Gy = {100 * diff / float(want.max()):.4f} % of the plane's maximum "
              f"{float(want.max()):.4f} Gy")
    print(f"peak memory {peak_memory_mib():.0f} MiB; load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Timings of the case-preparation steps: phantoms, planning structures,
resampling to the dose grid, and the HTML report.

Run: ``.venv/bin/python benchmarks/bench_phantoms.py``.  Each step is timed
twice (the first run includes numba compilation or cache loading); the
figures are wall-clock seconds and are noisy on a shared machine.

Targets (issue): each phantom < 1-2 s; a 512 x 512 x 105 CT with ~10
structures to a 2 mm grid over the body in a few seconds; report <= ~3 s for
a 2 mm case.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from sbrtplan.case import (Case, Dose, Grid, Structure, StructureRole, contract, distance_map_mm, expand, prv, ptv_minus,
                           resample_case, ring)
from sbrtplan.phantoms import PHANTOMS, make_phantom


def best_of_two(fn):
    times = []
    out = None
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def synthetic_ct() -> Case:
    """512 x 512 x 105 axial CT (0.98 x 0.98 x 3 mm) with a body and 10 structures."""
    g = Grid((105, 512, 512), (0.977, 0.977, 3.0), (-249.6, -249.6, -156.0))
    x, y, z = g.axis_coordinates_mm()
    body2d = (x[None, :] / 180.0) ** 2 + (y[:, None] / 120.0) ** 2 <= 1.0
    hu = np.where(body2d[None], 0.0, -1000.0).astype(np.float32) * np.ones((g.nz, 1, 1), np.float32)
    structures = {"External": Structure("External", g, np.broadcast_to(body2d, g.shape).copy(),
                                        role=StructureRole.EXTERNAL)}
    for n in range(9):
        c = (-80.0 + 20.0 * n, 10.0 * (n % 3), 5.0 * n - 20.0)
        r = 8.0 + 6.0 * n
        m = ((x[None, None, :] - c[0]) ** 2 + (y[None, :, None] - c[1]) ** 2 + (z[:, None, None] - c[2]) ** 2) <= r * r
        structures[f"Organ{n}"] = Structure(f"Organ{n}", g, m, role=StructureRole.OAR)
    return Case("synthetic512", g, hu, structures)


def main() -> None:
    print("phantoms (default spacing), seconds: first, second")
    for name in PHANTOMS:
        case, t = best_of_two(lambda: make_phantom(name))
        print(f"  {name:<10} {t[0]:6.2f} {t[1]:6.2f}   grid {case.grid.shape} (z,y,x)")

    spine = make_phantom("spine")
    ptv, cord = spine.structure("PTV"), spine.structure("SpinalCord")
    print("planning structures on the 2 mm spine phantom, seconds: first, second")
    for label, fn in [("PTV + 5 mm", lambda: expand(ptv, 5.0)),
                      ("cord PRV 2 mm", lambda: prv(cord, 2.0)),
                      ("PTV! (PTV - cord PRV)", lambda: ptv_minus(ptv, spine.structure("SpinalCord_PRV02"))),
                      ("ring 5-20 mm within External", lambda: ring(ptv, 5.0, 20.0, within=spine.body)),
                      ("distance map to 30 mm", lambda: distance_map_mm(ptv, max_distance_mm=30.0)),
                      ("External contracted by 5 mm", lambda: contract(spine.body, 5.0))]:
        _, t = best_of_two(fn)
        print(f"  {label:<30} {t[0]:6.3f} {t[1]:6.3f}")

    ct = synthetic_ct()
    out, t = best_of_two(lambda: resample_case(ct, 2.0, region=ct.structure("External")))
    print(f"resample 512x512x105 CT + {len(ct.structures)} structures to 2 mm over the body: "
          f"{t[0]:.2f} s, {t[1]:.2f} s -> grid {out.grid.shape} (z,y,x)")
    vols = [(n, ct.structures[n].volume_cc, out.structures[n].volume_cc) for n in ("Organ0", "Organ8")]
    for n, a, b in vols:
        print(f"  {n}: {a:.2f} cc on the CT, {b:.2f} cc on the dose grid ({100 * (b / a - 1):+.2f} %)")

    from sbrtplan.evaluation import evaluate_plan, metrics_dict
    from sbrtplan.report import render_report

    d = distance_map_mm(ptv, max_distance_mm=60.0, signed=True)
    d = np.where(np.isinf(d), 60.0, d)
    dose = Dose(spine.grid, np.where(d <= 0, 28.6, 28.4 * np.exp(-np.clip(d, 0, None) / 7.0)).astype(np.float32))
    metrics = metrics_dict(evaluate_plan(dose, spine, "bone_spine", "27/3"))
    with tempfile.TemporaryDirectory() as tmp:
        _, t = best_of_two(lambda: render_report(Path(tmp) / "report.html", case=spine, dose=dose, metrics=metrics,
                                                 prescription_gy=27.0, n_fractions=3))
    print(f"HTML report (spine, 2 mm, default DVH structures): {t[0]:.2f} s, {t[1]:.2f} s")


if __name__ == "__main__":
    main()

"""Patient-specific QA: synthetic measurements against an independent gamma (pymedphys).

Run::

    .venv/bin/python benchmarks/bench_qa_gamma.py --qa-dir QA_DIR [--pymedphys-python PY]
    .venv/bin/python benchmarks/bench_qa_gamma.py --rtplan RTPLAN [--phantom qa_slab] [--pymedphys-python PY]

The calculated plane is the verification plane of ``sbrtplan qa-plan`` (read
from ``QA_DIR``, or computed here from ``--rtplan`` on the slab phantom).
From it, synthetic measurements are made with known perturbations -- none, a
1 mm shift along u, a 2 % output increase, 1 % Gaussian noise (seeded), all
three together, and two beyond tolerance (a 3 mm shift, +4 % output) -- sampled (bilinear) on two detector geometries: a dense 5 mm
array lattice (27 x 27 cm, as an OCTAVIUS 1500 without its checkerboard gaps)
and a 1 mm film-like grid over the central 10 x 10 cm.  For each, the gamma
pass rates of ``sbrtplan.qa`` (2 %/2 mm and 3 %/2 mm, global and local, 10 %
threshold) are printed beside pymedphys' ``gamma`` on the same planes
(measured as reference, calculated as evaluation, ``interp_fraction=10`` or
``--pymedphys-interp-fraction``, ``max_gamma=2``, the same global normalisation).  pymedphys must not be a
dependency of sbrtplan: it runs in a separate interpreter given by
``--pymedphys-python`` (a virtual environment with ``pip install pymedphys``),
through a child script fed with ``.npz`` files.  The point-dose difference of
each perturbation (chamber dose x output change) is printed too.

Target (issue 24): pass rates within 0.5 % (percentage points) of pymedphys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from pymedphys import gamma
    out = {}
    for f in sys.argv[1:]:
        d = np.load(f)
        t = time.perf_counter()
        g = gamma((d["mv"], d["mu"]), d["meas"], (d["cv"], d["cu"]), d["calc"], float(d["dose_pct"]),
                  float(d["dta_mm"]), lower_percent_dose_cutoff=float(d["cutoff"]), interp_fraction=int(d["pif"]),
                  max_gamma=2.0,
                  local_gamma=bool(d["local"]), global_normalisation=float(d["norm"]), quiet=True)
        v = g[np.isfinite(g)]
        out[f] = {"rate": 100.0 * float(np.sum(v <= 1)) / v.size, "n": int(v.size), "s": time.perf_counter() - t}
    print(json.dumps(out))
""")


def calculated_plane(args):
    from sbrtplan.qa import load_qa_phantom, read_verification, verify_on_phantom

    if args.qa_dir:
        summary, plane = read_verification(args.qa_dir)
        return plane, summary["chamber"]["volume_averaged_dose_gy"], f"{args.qa_dir}"
    from sbrtplan.io import read_rtplan

    t = time.perf_counter()
    res = verify_on_phantom(load_qa_phantom(args.phantom), read_rtplan(args.rtplan), source=args.rtplan)
    print(f"verification dose of {args.rtplan} on {args.phantom}: {time.perf_counter() - t:.1f} s")
    return res.plane, res.chamber_dose_gy, args.rtplan


def main(tmp: Path) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--qa-dir")
    src.add_argument("--rtplan")
    ap.add_argument("--phantom", default="qa_slab")
    ap.add_argument("--pymedphys-python", help="python of an environment with pymedphys (else: ours only)")
    ap.add_argument("--seed", type=int, default=24)
    ap.add_argument("--pymedphys-interp-fraction", type=int, default=10,
                    help="pymedphys' search steps per DTA (10, its default; 40 resolves steep gradients)")
    args = ap.parse_args()

    from sbrtplan.qa import DosePlane, load_criteria, plane_gamma

    crit = load_criteria()
    calc, chamber_gy, label = calculated_plane(args)
    print(f"calculated plane: {label}, {calc.u_mm.size} x {calc.v_mm.size} points, max {calc.max_gy:.4f} Gy, "
          f"chamber {chamber_gy:.4f} Gy")
    rng = np.random.default_rng(args.seed)
    geometries = {"array 5 mm": (np.arange(-130.0, 130.01, 5.0), np.arange(-130.0, 130.01, 5.0)),
                  "film 1 mm": (np.arange(-50.0, 50.01, 1.0), np.arange(-50.0, 50.01, 1.0))}
    perturbations = {"none": (0.0, 1.00, 0.0), "shift 1 mm": (1.0, 1.00, 0.0), "output +2 %": (0.0, 1.02, 0.0),
                     "noise 1 %": (0.0, 1.00, 0.01), "all three": (1.0, 1.02, 0.01),
                     "shift 3 mm": (3.0, 1.00, 0.0), "output +4 %": (0.0, 1.04, 0.0)}
    rows, jobs = [], []
    for gname, (mu, mv) in geometries.items():
        # keep the detector lattice inside the calculated plane
        mu = mu[(mu >= calc.u_mm[0]) & (mu <= calc.u_mm[-1])]
        mv = mv[(mv >= calc.v_mm[0]) & (mv <= calc.v_mm[-1])]
        MU, MV = np.meshgrid(mu, mv)
        for pname, (shift, out_f, noise) in perturbations.items():
            d = calc.sample(MU - shift, MV) * out_f
            if noise:
                d = d * (1.0 + noise * rng.standard_normal(d.shape))
            meas = DosePlane(np.maximum(d, 0.0), mu, mv)
            norm = meas.max_gy
            point_diff = 100.0 * (chamber_gy * out_f - chamber_gy) / chamber_gy
            for c in crit.criteria:
                t = time.perf_counter()
                g = plane_gamma(meas, calc, c, threshold_pct=crit.low_dose_threshold_pct, normalisation_gy=norm,
                                max_gamma=crit.max_gamma, interp_fraction=crit.interp_fraction,
                                max_eval_spacing_mm=crit.max_eval_spacing_mm)
                dt = time.perf_counter() - t
                f = tmp / f"job{len(jobs)}.npz"
                np.savez(f, mu=mu, mv=mv, meas=meas.dose_gy, cu=calc.u_mm, cv=calc.v_mm, calc=calc.dose_gy,
                         dose_pct=c.dose_pct, dta_mm=c.dta_mm, cutoff=crit.low_dose_threshold_pct,
                         local=c.normalisation.value == "local", norm=norm, pif=args.pymedphys_interp_fraction)
                jobs.append(str(f))
                rows.append([gname, pname, c.label, g.pass_rate_pct, g.n_evaluated, dt, point_diff, str(f)])
    ref = {}
    if args.pymedphys_python:
        child = tmp / "child.py"
        child.write_text(CHILD)
        t = time.perf_counter()
        res = subprocess.run([args.pymedphys_python, str(child), *jobs], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-2000:], file=sys.stderr)
            return 1
        ref = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"pymedphys: {len(jobs)} gammas in {time.perf_counter() - t:.1f} s")
    print(f"{'geometry':<11} {'perturbation':<13} {'criterion':<16} {'ours %':>7} {'pmp %':>7} {'diff':>6} "
          f"{'points':>7} {'ours s':>7} {'pmp s':>7} {'point %':>8}")
    worst = 0.0
    for gname, pname, cl, rate, n, dt, pdiff, f in rows:
        r = ref.get(f)
        diff = (rate - r["rate"]) if r else float("nan")
        if r:
            worst = max(worst, abs(diff))
        print(f"{gname:<11} {pname:<13} {cl:<16} {rate:7.2f} {r['rate'] if r else float('nan'):7.2f} {diff:6.2f} "
              f"{n:7d} {dt:7.2f} {r['s'] if r else float('nan'):7.2f} {pdiff:8.2f}")
    if ref:
        print(f"largest pass-rate difference to pymedphys: {worst:.2f} percentage points (target <= 0.5)")
    return 0


if __name__ == "__main__":
    work = Path(tempfile.mkdtemp(prefix="qa_gamma_"))
    try:
        rc = main(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(rc)

"""Recompute of a clinical plan (issue 7 b): the shared thorax sliding-window IMRT plan with our engine.

Run::

    .venv/bin/python benchmarks/bench_recompute.py [--data DIR] [--grid-mm 2.5]
        [--reference-rtdose FILE] [--save-dose FILE.npz | --load-dose FILE.npz]

Default data: ``../shared/data/dicom/thorax-rt02`` (CT, RTSTRUCT, RTPLAN: 7 sliding-window fields,
41.4 Gy / 23 fx, 1105 MU per fraction).  The steps are those of ``sbrtplan recompute``: load the CT and
RTSTRUCT, read the RTPLAN, resample to the dose grid over the body, forward dose of every body voxel from
the MLC positions of every control point (sub-fields every 2 mm of leaf travel).

Prints the wall and CPU time per step, the peak resident memory, PTV D95 / D50 / D2, lung and heart mean
and cord maximum; with ``--reference-rtdose`` (the planning system's dose of the same plan) the same
metrics for it and the 3D gamma pass rate (3 %/3 mm global and 2 %/2 mm, 10 % cut-off) over the whole
dose and in the PTV.

Calibration assumption: the generic 6 MV model gives 1 cGy/MU on the central axis at 15 mm depth in
water for a 10 x 10 cm2 field at SSD 100 cm (the usual Varian calibration).  The clinical machine's
calibration and output factors are not known; a different reference condition scales our dose.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATA = SHARED / "dicom" / "thorax-rt02"

CALIBRATION = ("generic 6 MV model: 1 cGy/MU at 15 mm depth in water, 10x10 cm2 at SSD 100 cm "
               "(clinical machine calibration unknown)")


def find_files(folder: Path) -> tuple[Path, Path]:
    """(RTSTRUCT, RTPLAN) in a DICOM folder, by modality."""
    import pydicom

    rs = rp = None
    for f in sorted(folder.glob("*.dcm")):
        try:
            m = str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
        except Exception:  # not DICOM: ignore
            continue
        if m == "RTSTRUCT" and rs is None:
            rs = f
        elif m == "RTPLAN" and rp is None:
            rp = f
    if rs is None or rp is None:
        raise SystemExit(f"{folder}: need an RTSTRUCT and an RTPLAN (found {rs}, {rp})")
    return rs, rp


def pick(structures: dict, *patterns: str):
    """First structure whose lower-case name contains one of ``patterns`` (in order of preference)."""
    for p in patterns:
        for name, s in structures.items():
            if p in name.lower():
                return s
    return None


def metrics(dose, structures: dict, ptv) -> dict:
    from sbrtplan.evaluation import compute_dvh

    out = {}
    if ptv is not None:
        d = compute_dvh(dose, ptv)
        out.update({"PTV D95 (Gy)": d.d_pct(95.0), "PTV D50 (Gy)": d.d_pct(50.0), "PTV D2 (Gy)": d.d_pct(2.0)})
    for label, pats, what in (("Lungs mean (Gy)", ("lungs", "lung_total", "lung"), "mean"),
                              ("Heart mean (Gy)", ("heart",), "mean"),
                              ("Cord max (Gy)", ("spinalcord", "cord"), "max")):
        s = pick(structures, *pats)
        if s is None:
            out[label] = float("nan")
            continue
        d = compute_dvh(dose, s)
        out[label] = d.mean_gy if what == "mean" else d.max_gy
    return {k: float(v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--grid-mm", type=float, default=2.5)
    ap.add_argument("--reference-rtdose", type=Path)
    ap.add_argument("--save-dose", type=Path, help="save our dose (npz) for later comparisons")
    ap.add_argument("--load-dose", type=Path, help="reuse a dose saved with --save-dose (same grid)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data} not available, skipped")
        return 0

    from sbrtplan._log import peak_memory_mib
    from sbrtplan.beams import sample_delivery
    from sbrtplan.case import Dose, resample_case
    from sbrtplan.cli.recompute import MAX_GANTRY_STEP_DEG, MAX_LEAF_STEP_MM, compare_with_reference, recompute_dose
    from sbrtplan.io import load_case, read_rtdose, read_rtplan

    rtstruct, rtplan = find_files(args.data)
    times: dict[str, tuple[float, float]] = {}

    def step(name, fn):
        t, c = time.perf_counter(), time.process_time()
        r = fn()
        times[name] = (time.perf_counter() - t, time.process_time() - c)
        return r

    case = step("load CT + RTSTRUCT", lambda: load_case(str(args.data), rtstruct=str(rtstruct)))
    bs = step("read RTPLAN", lambda: read_rtplan(rtplan))
    cg = step("dose grid", lambda: resample_case(case, args.grid_mm, region=case.body, margin_mm=5.0))
    n_sub = sum(len(sample_delivery(b, i, MAX_GANTRY_STEP_DEG, MAX_LEAF_STEP_MM)) for i, b in enumerate(bs.beams))
    n_vox = int(cg.body.mask.sum()) if cg.body is not None else int((cg.density > 0.05).sum())
    if args.load_dose:
        z = np.load(args.load_dose)
        if tuple(z["dose_gy"].shape) != cg.grid.shape:
            raise SystemExit(f"{args.load_dose}: dose shape {z['dose_gy'].shape} differs from the grid {cg.grid.shape}")
        ours = Dose(cg.grid, z["dose_gy"], "sbrtplan recompute (loaded)")
        times["forward dose"] = (float(z["wall_s"]), float(z["cpu_s"]))
    else:
        ours = Dose(cg.grid, step("forward dose", lambda: recompute_dose(cg, bs)), "sbrtplan recompute")
        if args.save_dose:
            w, c = times["forward dose"]
            np.savez_compressed(args.save_dose, dose_gy=ours.dose_gy, wall_s=w, cpu_s=c)
    ptv = pick(cg.structures, "ptv")

    print(f"plan {rtplan.name}: {len(bs.beams)} beams ({', '.join(sorted({b.technique.value for b in bs.beams}))}), "
          f"{sum(len(b.control_points) for b in bs.beams)} control points, {bs.total_mu_per_fraction:.1f} MU per "
          f"fraction x {bs.n_fractions}, prescription {bs.prescription_gy:g} Gy")
    print(f"dose grid {cg.grid.shape} (z, y, x) at {args.grid_mm:g} mm, {n_vox} body voxels, {n_sub} sub-fields "
          f"({MAX_LEAF_STEP_MM:g} mm leaf / {MAX_GANTRY_STEP_DEG:g} deg steps)")
    for k, (w, c) in times.items():
        print(f"  {k:20s} wall {w:7.1f} s   CPU {c:7.1f} s")
    print(f"  peak RSS {peak_memory_mib():.0f} MiB")
    print(f"calibration assumption: {CALIBRATION}")
    rows = {"sbrtplan": metrics(ours, cg.structures, ptv)}
    gammas = {}
    if args.reference_rtdose:
        ref = read_rtdose(args.reference_rtdose, grid=cg.grid)
        if ref.per_fraction:
            ref = Dose(cg.grid, ref.dose_gy * bs.n_fractions, ref.description)
        rows["reference RTDOSE"] = metrics(ref, cg.structures, ptv)
        for dp, dta in ((3.0, 3.0), (2.0, 2.0)):
            t = time.perf_counter()
            gammas[f"{dp:g}%/{dta:g} mm"] = (compare_with_reference(ours.dose_gy, cg, ref.dose_gy, dose_percent=dp,
                                                                    dta_mm=dta), time.perf_counter() - t)
    keys = list(rows["sbrtplan"])
    print(f"{'':18s}" + "".join(f"{k:>17s}" for k in keys))
    for label, m in rows.items():
        print(f"{label:18s}" + "".join(f"{m[k]:17.2f}" for k in keys))
    if "reference RTDOSE" in rows:
        r, o = rows["reference RTDOSE"], rows["sbrtplan"]
        print(f"{'ratio ours/ref':18s}" + "".join(f"{o[k] / r[k]:17.3f}" if r[k] else f"{'-':>17s}" for k in keys))
        for crit, (res, sec) in gammas.items():
            per = "; ".join(f"{k} {v:.1f} %" for k, v in res["per_structure"].items())
            print(f"gamma {crit} (global, 10 % cut-off): {res['pass_rate_pct']:.1f} % pass; {per} ({sec:.1f} s)")
    elif ptv is not None and bs.prescription_gy:
        m = rows["sbrtplan"]
        print(f"no clinical RTDOSE given: PTV D50 / prescription = {m['PTV D50 (Gy)'] / bs.prescription_gy:.3f}, "
              f"D95 / prescription = {m['PTV D95 (Gy)'] / bs.prescription_gy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

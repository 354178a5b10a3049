"""Recompute of a clinical plan (issues 7 b, 17): the shared thorax sliding-window IMRT plan with our engine.

Run::

    .venv/bin/python benchmarks/bench_recompute.py [--data DIR] [--grid-mm 2.5] [--calibration NAME]
        [--ref-points 400] [--ref-slices 0] [--no-before] [--reference-rtdose FILE]
        [--save-dose FILE.npz | --load-dose FILE.npz]

Default data: ``../shared/data/dicom/thorax-rt02`` (CT, RTSTRUCT, RTPLAN: 7 sliding-window fields,
41.4 Gy / 23 fx, 1106 MU per fraction).  The steps are those of ``sbrtplan recompute``: load the CT and
RTSTRUCT, read the RTPLAN, resample to the dose grid over the body, then the forward dose of every body
voxel from one fluence map per beam (leaf motion integrated exactly, the machine file's MLC model).

Prints the wall and CPU time per step and the peak resident memory; PTV D98 / D95 / D50 / D2 and the
mean dose of lungs, liver, heart and body for the MLC model of the machine file ("after": transmission,
dosimetric leaf gap, tongue-and-groove) and for the previous model ("before": transmission only, ideal
leaf ends); the per-sub-field reference path (every 2 mm of leaf travel a static aperture, the
former ``recompute``: 2684 s for this plan on the 2-core machine) at ``--ref-points`` points above
10 % of the maximum (exact per-point integration) with the dose differences there, and optionally on
``--ref-slices`` axial slices through the PTV (its time, a lower bound of the whole-body reference,
and the gamma 1 %/1 mm, 10 % cut-off, on the slab).
With ``--reference-rtdose`` (the planning system's dose of the same plan) the same metrics for it and
the 3D gamma pass rates (3 %/3 mm and 2 %/2 mm, 10 % cut-off).

Calibration: the machine file's convention (1 cGy/MU at 15 mm depth in water, 10 x 10 cm2 at SSD
100 cm) unless ``--calibration`` names another (see ``sbrtplan recompute --help``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATA = SHARED / "dicom" / "thorax-rt02"


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
        out.update({"PTV D98": d.d_pct(98.0), "PTV D95": d.d_pct(95.0), "PTV D50": d.d_pct(50.0),
                    "PTV D2": d.d_pct(2.0)})
    for label, pats in (("Lungs mean", ("lungs", "lung_total", "lung")), ("Liver mean", ("liver",)),
                        ("Heart mean", ("heart",)), ("Body mean", ("body", "external"))):
        s = pick(structures, *pats)
        out[label] = float("nan") if s is None else compute_dvh(dose, s).mean_gy
    return {k: float(v) for k, v in out.items()}


def print_table(rows: dict) -> None:
    keys = list(next(iter(rows.values())))
    print(f"{'(Gy)':22s}" + "".join(f"{k:>12s}" for k in keys))
    for label, m in rows.items():
        print(f"{label:22s}" + "".join(f"{m[k]:12.2f}" for k in keys))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--grid-mm", type=float, default=2.5)
    ap.add_argument("--calibration", help="calibration convention (default: the machine file's)")
    ap.add_argument("--ref-slices", type=int, default=0, help="axial slices for the per-sub-field reference "
                                                               "(0: skip; expensive: tables per sub-field)")
    ap.add_argument("--ref-points", type=int, default=400, help="points for the per-sub-field reference (0: skip)")
    ap.add_argument("--no-before", action="store_true", help="skip the dose with the previous MLC model")
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
    from sbrtplan.dose_engine import default_beam_model, forward_dose, parse_calibration
    from sbrtplan.evaluation import gamma_index, gamma_pass_rate
    from sbrtplan.io import load_case, read_rtdose, read_rtplan

    rtstruct, rtplan = find_files(args.data)
    times: dict[str, tuple[float, float]] = {}

    def step(name, fn):
        t, c = time.perf_counter(), time.process_time()
        r = fn()
        times[name] = (time.perf_counter() - t, time.process_time() - c)
        print(f"  {name:28s} wall {times[name][0]:7.1f} s   CPU {times[name][1]:7.1f} s", flush=True)
        return r

    model = default_beam_model()
    if args.calibration:
        model = model.with_calibration(parse_calibration(args.calibration))
    case = step("load CT + RTSTRUCT", lambda: load_case(str(args.data), rtstruct=str(rtstruct)))
    bs = step("read RTPLAN", lambda: read_rtplan(rtplan))
    cg = step("dose grid", lambda: resample_case(case, args.grid_mm, region=case.body, margin_mm=5.0))
    n_vox = int(cg.body.mask.sum()) if cg.body is not None else int((cg.density > 0.05).sum())
    if args.load_dose:
        z = np.load(args.load_dose)
        if tuple(z["dose_gy"].shape) != cg.grid.shape:
            raise SystemExit(f"{args.load_dose}: dose shape {z['dose_gy'].shape} differs from the grid {cg.grid.shape}")
        ours = Dose(cg.grid, z["dose_gy"], "sbrtplan recompute (loaded)")
        times["forward dose (fluence maps)"] = (float(z["wall_s"]), float(z["cpu_s"]))
    else:
        ours = Dose(cg.grid, step("forward dose (fluence maps)", lambda: recompute_dose(cg, bs, model=model)),
                    "sbrtplan recompute")
        if args.save_dose:
            w, c = times["forward dose (fluence maps)"]
            np.savez_compressed(args.save_dose, dose_gy=ours.dose_gy, wall_s=w, cpu_s=c)
    peak = peak_memory_mib()
    print(f"  peak RSS after the fluence-map dose {peak:.0f} MiB", flush=True)
    ptv = pick(cg.structures, "ptv")

    print(f"plan {rtplan.name}: {len(bs.beams)} beams ({', '.join(sorted({b.technique.value for b in bs.beams}))}), "
          f"{sum(len(b.control_points) for b in bs.beams)} control points, {bs.total_mu_per_fraction:.1f} MU per "
          f"fraction x {bs.n_fractions}, prescription {bs.prescription_gy:g} Gy")
    print(f"dose grid {cg.grid.shape} (z, y, x) at {args.grid_mm:g} mm, {n_vox} body voxels")
    print(f"calibration: {model.calibration.describe()}")
    for b in bs.beams[:1]:
        m = model.mlc_for(b.mlc)
        print(f"MLC model ({m.name}): transmission {m.transmission:.3f}, DLG {m.dlg_mm:g} mm, "
              f"tongue-and-groove {m.tongue_groove_mm:g} mm, jaw transmission {model.jaw_transmission:g}")
    rows = {"after (machine file)": metrics(ours, cg.structures, ptv)}
    if not args.no_before:
        before = replace(model, mlc_models={})
        d0 = step("forward dose, before", lambda: recompute_dose(cg, bs, model=before))
        rows = {"before (T only)": metrics(Dose(cg.grid, d0), cg.structures, ptv), **rows}
    gamma_line = None
    if args.ref_points > 0:
        # the per-sub-field reference at a few hundred points (exact per-point integration, no tables:
        # affordable for thousands of sub-fields) where the dose exceeds 10 % of its maximum
        dflat = ours.dose_gy.ravel()
        cand = np.flatnonzero(dflat > 0.1 * dflat.max())
        pts_idx = np.sort(np.random.default_rng(0).choice(cand, min(args.ref_points, cand.size), replace=False))
        n_sub = sum(len(sample_delivery(b, i, MAX_GANTRY_STEP_DEG, MAX_LEAF_STEP_MM)) for i, b in enumerate(bs.beams))
        refp = step("reference, points", lambda: forward_dose(cg.density, cg.grid, bs, model=model,
                                                              voxel_indices=pts_idx, method="control_points",
                                                              max_gantry_step_deg=MAX_GANTRY_STEP_DEG,
                                                              max_leaf_step_mm=MAX_LEAF_STEP_MM).ravel()[pts_idx])
        diff = (dflat[pts_idx] - refp) / dflat.max()
        print(f"per-sub-field reference ({n_sub} sub-fields, {MAX_LEAF_STEP_MM:g} mm leaf steps) at "
              f"{pts_idx.size} points above 10 % of the maximum: fluence maps - reference = "
              f"{100 * diff.mean():+.2f} % of the maximum on average, |difference| <= 1 % at "
              f"{100 * np.mean(np.abs(diff) <= 0.01):.1f} % of the points (gamma 1 %/1 mm <= 1 there), "
              f"max {100 * np.abs(diff).max():.2f} %", flush=True)
    if args.ref_slices > 0 and ptv is not None:
        # the per-sub-field reference on a slab of axial slices through the PTV centre
        kz = int(round(np.mean(np.nonzero(ptv.mask)[0])))
        ks = np.arange(kz - args.ref_slices // 2, kz - args.ref_slices // 2 + args.ref_slices)
        body = cg.body.mask if cg.body is not None else cg.density > 0.05
        slab = np.zeros_like(body)
        slab[ks] = body[ks]
        idx = np.flatnonzero(slab)
        n_sub = sum(len(sample_delivery(b, i, MAX_GANTRY_STEP_DEG, MAX_LEAF_STEP_MM)) for i, b in enumerate(bs.beams))
        ref = step("reference, slab", lambda: forward_dose(cg.density, cg.grid, bs, model=model, voxel_indices=idx,
                                                           method="control_points",
                                                           max_gantry_step_deg=MAX_GANTRY_STEP_DEG,
                                                           max_leaf_step_mm=MAX_LEAF_STEP_MM))
        w_ref, c_ref = times["reference, slab"]
        w_map = times["forward dose (fluence maps)"][0]
        g = gamma_index(ref[ks], ours.dose_gy[ks], cg.grid.spacing_mm, 1.0, 1.0, 10.0)
        # the reference on a slab costs at least its per-sub-field tables and fans; the whole body adds the
        # voxels: the slab time is a lower bound of the reference's time, so the ratio a lower bound too
        gamma_line = (f"per-sub-field reference ({n_sub} sub-fields, {MAX_LEAF_STEP_MM:g} mm leaf steps) on "
                      f"{args.ref_slices} slice(s) ({idx.size} of {n_vox} voxels): {w_ref:.1f} s wall, already "
                      f"{w_ref / w_map:.1f} x the fluence-map dose of the whole body ({w_map:.1f} s); gamma "
                      f"1 %/1 mm (10 % cut-off) of the fluence-map dose against it on the slab: "
                      f"{gamma_pass_rate(g):.2f} %")
    print(f"  peak RSS after the fluence-map dose {peak:.0f} MiB")
    if gamma_line:
        print(gamma_line)
    gammas = {}
    if args.reference_rtdose:
        refd = read_rtdose(args.reference_rtdose, grid=cg.grid)
        if refd.per_fraction:
            refd = Dose(cg.grid, refd.dose_gy * bs.n_fractions, refd.description)
        rows["reference RTDOSE"] = metrics(refd, cg.structures, ptv)
        for dp, dta in ((3.0, 3.0), (2.0, 2.0)):
            gammas[f"{dp:g}%/{dta:g} mm"] = compare_with_reference(ours.dose_gy, cg, refd.dose_gy, dose_percent=dp,
                                                                   dta_mm=dta)
    print_table(rows)
    if bs.prescription_gy and ptv is not None:
        for label, m in rows.items():
            print(f"{label}: PTV D50 / prescription = {m['PTV D50'] / bs.prescription_gy:.3f}")
    for crit, res in gammas.items():
        per = "; ".join(f"{k} {v:.1f} %" for k, v in res["per_structure"].items())
        print(f"gamma {crit} against the RTDOSE (global, 10 % cut-off): {res['pass_rate_pct']:.1f} % pass; {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

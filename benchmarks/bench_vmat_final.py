"""VMAT final dose of the spine demo plan (issue 17): sector-dose time, its ratio to the per-control-point
reference and their agreement (gamma 1 %/1 mm, 10 % cut-off), plus the demo's stage times.

Run::

    .venv/bin/python benchmarks/bench_vmat_final.py                       # plans the demo (VMAT 27/3) first
    .venv/bin/python benchmarks/bench_vmat_final.py --rtplan OUT/RTPLAN.dcm   # an existing demo plan
        [--ref-every 4] [--ref-max-slices 3]

The sector dose is what the VMAT path computes after the DAO (``workflow.vmat._resolve_on_delivered``):
the dose of each optimisation sector (three control-point intervals) from its fluence maps on the
final-dose voxels (``workflow.final_dose_voxels``).  The reference computes the arcs (the sum of the
sectors at their MU) with every sub-field (1 degree, 2 mm of leaf travel) as a static aperture, on
every ``--ref-every``-th axial slice where the dose exceeds 10 % of its maximum (at most
``--ref-max-slices`` of them, nearest the PTV centre first); the gamma is evaluated at those slices'
voxels against the fluence-map dose of the whole volume.  The time ratio compares the fluence-map time
per voxel with the reference's.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _times(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    from sbrtplan.beams import BeamSet
    from sbrtplan.dose_engine import default_beam_model, forward_dose, forward_dose_by_beam
    from sbrtplan.evaluation import gamma_index, gamma_pass_rate
    from sbrtplan.io import read_rtplan
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow.final_dose import final_dose_voxels
    from sbrtplan.workflow.vmat import sector_beams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtplan", help="RTPLAN of a demo run (default: plan the demo here)")
    ap.add_argument("--ref-every", type=int, default=4, help="reference on every n-th slice (default 4)")
    ap.add_argument("--ref-max-slices", type=int, default=3, help="at most this many reference slices")
    args = ap.parse_args()

    case = make_phantom("spine")
    if args.rtplan:
        bs = read_rtplan(args.rtplan)
        target = case.structures["PTV"]
    else:
        from sbrtplan.workflow import plan

        p, wall, cpu = _times(lambda: plan(case, "bone_spine", "27/3", "vmat", allow_missing=True))
        print(f"demo plan: wall {wall:.1f} s, processor {cpu:.1f} s, load {os.getloadavg()[0]:.2f}")
        for k, v in p.timings_s.items():
            print(f"  {k:<64} {v:8.2f} s")
        print("plan:", {k: round(p.metrics["targets"][p.report.target][k], 3)
                        for k in ("V100_pct", "CI_paddick", "R50", "D2cm_pct", "Dmax_gy")},
              f"MU/fx {p.total_mu:.0f}")
        bs, case, target = p.beam_set, p.case, p.case.structures[p.report.target]
    model = default_beam_model()
    vox = final_dose_voxels(case, target)
    per = (len(bs.beams[0].control_points) - 1) // 60 if len(bs.beams[0].control_points) > 60 else 1
    subs = [sb for b in bs.beams for sb in sector_beams(b, per)]
    mus = np.concatenate([[np.asarray(b.segment_mu())[s * per:(s + 1) * per].sum()
                           for s in range((len(b.control_points) - 1) // per)] for b in bs.beams])
    width = 358.0 / 60
    g, wall, cpu = _times(lambda: forward_dose_by_beam(case.density, case.grid, BeamSet(subs, bs.n_fractions,
                                                                                          bs.prescription_gy),
                                                         vox.indices, model=model, arc_bin_deg=min(width, 4.0) + 1e-6))
    print(f"sector dose: {len(subs)} sectors, {vox.indices.size} voxels: wall {wall:.1f} s, processor {cpu:.1f} s, "
          f"load {os.getloadavg()[0]:.2f}")
    d_map = vox.to_grid((mus @ g).astype(np.float32), case.grid.shape)

    zc = int(round(np.nonzero(target.mask)[0].mean()))
    cand = [z for z in range(zc % args.ref_every, case.grid.shape[0], args.ref_every)
            if d_map[z].max() > 0.1 * d_map.max()]
    zs = sorted(sorted(cand, key=lambda z: abs(z - zc))[:args.ref_max_slices])
    z_of = np.unravel_index(vox.indices, case.grid.shape)[0]
    sel = vox.indices[np.isin(z_of, zs)]
    d, rwall, rcpu = _times(lambda: forward_dose(case.density, case.grid, bs, model=model, voxel_indices=sel,
                                                 method="control_points", max_gantry_step_deg=1.0,
                                                 max_leaf_step_mm=2.0))
    d_ref = vox.to_grid(d.reshape(-1)[vox.indices].astype(np.float32), case.grid.shape)
    keep = np.zeros(case.grid.shape[0], bool)
    keep[zs] = True
    d_ref[~keep] = 0.0
    gam = gamma_index(d_ref, d_map, case.grid.spacing_mm, 1.0, 1.0, 10.0, normalisation_gy=float(d_ref.max()))
    m = d_ref > 0.1 * d_ref.max()
    e = 100.0 * (d_map - d_ref)[m] / d_ref.max()
    print(f"per-control-point reference on slices {zs} ({sel.size} voxels): wall {rwall:.1f} s, processor "
          f"{rcpu:.1f} s")
    ratio = (cpu / vox.indices.size) / (rcpu / max(sel.size, 1))
    print(f"fluence maps / reference, processor time per voxel: {ratio:.4f} (reference extrapolated to all "
          f"voxels: {rcpu * vox.indices.size / max(sel.size, 1):.0f} s)")
    print(f"gamma 1 %/1 mm (10 % cut-off): {gamma_pass_rate(gam):.3f} % of {int(np.isfinite(gam).sum())} voxels "
          f"(limit >= 99 %); difference above 10 %: mean {e.mean():+.3f} %, p1 {np.percentile(e, 1):+.3f} %, "
          f"p99 {np.percentile(e, 99):+.3f} % of the maximum")


if __name__ == "__main__":
    main()

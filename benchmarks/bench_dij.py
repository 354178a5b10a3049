"""Influence-matrix build time and memory: TG-119 and the spine phantom.

Run: ``.venv/bin/python benchmarks/bench_dij.py [--only tg119|spine] [--grid-mm 2.5]``.

Problem of the issue: the TG-119 phantom of matRad (``../shared/data/matrad/TG119.mat``),
9 equispaced coplanar beams, 5 mm beamlets, 2.5 mm dose grid, default voxel
set (the body).  Target: <= 10 s with the numba cache warm and <= 1.5 GiB peak
memory on a 2-core machine.  pyRadPlan 0.5.0 needs 163 s and 6.9 GiB for the
same problem (its matrix: 299 million non-zeros, 64-bit indices); when
pyRadPlan is importable the script runs it too and prints the ratio.  The
spine phantom at 2 mm with 9 beams and 2.5 mm beamlets is reported as well.

Each case is built twice: the first run loads the compiled kernels (or
compiles them on a cold cache), the second is the warm figure.  Peak memory
is the process's peak resident set size (``ru_maxrss``) sampled before and
after each case, so the first case's figure also holds the loaded data.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from sbrtplan._log import peak_memory_mib
from sbrtplan.beams import BeamGeometry
from sbrtplan.case import Grid, resample_array
from sbrtplan.dose_engine import default_beam_model, influence_matrix
from sbrtplan.dose_engine.influence import _beamlet_grid_for_points

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PYRADPLAN_S, PYRADPLAN_GIB, PYRADPLAN_NNZ = 163.0, 6.9, 299e6


def load_tg119(grid_mm: float):
    """Density, grid and target voxel centres of matRad's TG119 phantom on a ``grid_mm`` grid.

    matRad's ``ct.cube`` is indexed (y, x, z); its world coordinates put voxel
    i of n at (i - n/2) * h (the absolute position is irrelevant here).
    """
    import scipy.io as sio

    path = SHARED / "matrad" / "TG119.mat"
    m = sio.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    ct = m["ct"]
    cube = np.asarray(ct.cube, dtype=np.float32)            # (ny, nx, nz) relative electron density
    res = ct.resolution
    h = (float(res.x), float(res.y), float(res.z))
    ny, nx, nz = cube.shape
    src = Grid((nz, ny, nx), h, tuple(-(n / 2.0) * s for n, s in zip((nx, ny, nz), h)))
    dens_src = np.ascontiguousarray(np.transpose(cube, (2, 0, 1)))   # -> (z, y, x)
    masks = {"TARGET": np.zeros(src.size, dtype=np.float32), "BODY": np.zeros(src.size, dtype=np.float32)}
    for row in m["cst"]:
        key = "TARGET" if str(row[2]).upper() == "TARGET" else str(row[1]).upper()
        if key in masks:
            idx = np.atleast_1d(row[3] if not (isinstance(row[3], np.ndarray) and row[3].dtype == object)
                                else row[3][0]).astype(np.int64) - 1   # 1-based, column-major (y, x, z)
            iy, ix, iz = np.unravel_index(idx, (ny, nx, nz), order="F")
            masks[key][np.ravel_multi_index((iz, iy, ix), src.shape)] = 1.0
    dst = src.with_spacing(grid_mm)
    dens = resample_array(dens_src, src, dst, order=1)
    tmask = resample_array(masks["TARGET"].reshape(src.shape), src, dst, order=0) > 0.5
    body = resample_array(masks["BODY"].reshape(src.shape), src, dst, order=0) > 0.5
    # the voxel set is the BODY contour (what matRad/pyRadPlan compute on); the CT's air has RED 0.01-0.1
    return dens, dst, dst.voxel_centers_mm(np.flatnonzero(tmask)), np.flatnonzero(body)


def load_spine(grid_mm: float):
    from sbrtplan.phantoms import make_phantom

    case = make_phantom("spine", spacing_mm=grid_mm)
    ptv = case.structure("PTV") if case.has("PTV") else case.targets()[0]
    body = case.body.mask if case.body is not None else case.density > 0.05
    return case.density, case.grid, case.grid.voxel_centers_mm(np.flatnonzero(ptv.mask)), np.flatnonzero(body)


def beams_for(target_pts: np.ndarray, n_beams: int, beamlet_mm: float):
    iso = tuple(np.round(target_pts.mean(axis=0), 1))
    geoms = [BeamGeometry(360.0 * b / n_beams, isocenter_mm=iso) for b in range(n_beams)]
    grids = [_beamlet_grid_for_points(g, target_pts, beamlet_mm, margin_mm=beamlet_mm) for g in geoms]
    return geoms, grids


def run_case(label: str, dens, grid, target_pts, voxels, n_beams: int, beamlet_mm: float, model,
             repeats: int = 2) -> dict:
    geoms, grids = beams_for(target_pts, n_beams, beamlet_mm)
    n_vox = voxels.size
    print(f"\n== {label}: grid {grid.shape} (z,y,x) at {grid.spacing_mm[0]:g} mm, {n_vox} body voxels, "
          f"{n_beams} beams, {sum(g.n_beamlets for g in grids)} beamlets of {beamlet_mm:g} mm")
    out = {}
    for r in range(repeats):
        t0 = time.perf_counter()
        c0 = time.process_time()
        D = influence_matrix(dens, grid, geoms, grids, voxels, model=model)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        rss = peak_memory_mib()
        print(f"  run {r + 1}: {dt:6.2f} s wall, {cpu:6.2f} s CPU (load {os.getloadavg()[0]:.1f})  nnz {D.nnz / 1e6:7.1f} M  matrix {D.nbytes / 2**20:7.0f} MiB  "
              f"peak RSS {rss:6.0f} MiB  (count {D.timings_s['count']:.2f} s, trace {D.timings_s['trace']:.2f} s, "
              f"fill {D.timings_s['fill']:.2f} s)")
        out = {"cpu_seconds": cpu, "seconds": dt, "nnz": D.nnz, "matrix_mib": D.nbytes / 2**20, "peak_rss_mib": rss}
        del D
    return out


def forward_subfield(label: str, dens, grid, voxels, iso, model) -> None:
    """Time of one MLC sub-field of forward dose on the whole voxel set (a VMAT arc is ~180 of them)."""
    from sbrtplan.beams import Aperture, MLCModel
    from sbrtplan.dose_engine.aperture_dose import _s_range, aperture_dose_per_mu

    mlc = MLCModel.hd120()
    ap = Aperture.rectangle(mlc, (-20.0, 20.0), (-15.0, 15.0))
    pts = grid.voxel_centers_mm(voxels)
    acc = np.zeros(voxels.size)
    times = []
    for g in (0.0, 90.0, 180.0, 270.0):
        geom = BeamGeometry(g, isocenter_mm=iso)
        t0, c0 = time.perf_counter(), time.process_time()
        aperture_dose_per_mu(dens, grid, pts, geom, ap, mlc.leaf_boundaries_mm, mlc.transmission, model, out=acc,
                             s_range=_s_range(pts, geom))
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    w, c = np.median(np.array(times[1:]), axis=0)
    print(f"\n== forward dose, {label}: one 4 x 3 cm sub-field on {voxels.size} voxels: {w:.2f} s wall, {c:.2f} s CPU "
          f"-> 2 VMAT arcs of 178 sub-fields ~ {356 * c / 2:.0f} s on 2 idle cores")


def maybe_pyradplan() -> None:
    try:
        import pyRadPlan  # noqa: F401
    except ImportError:
        print(f"\npyRadPlan not installed: published figures for this problem are {PYRADPLAN_S:g} s, "
              f"{PYRADPLAN_GIB:g} GiB, {PYRADPLAN_NNZ / 1e6:.0f} M non-zeros")
        return
    print("\npyRadPlan is installed; run its TG119 photon dij separately to compare (not automated here)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["tg119", "spine"])
    ap.add_argument("--grid-mm", type=float, default=2.5)
    ap.add_argument("--beams", type=int, default=9)
    args = ap.parse_args(argv)
    model = default_beam_model()
    print(f"sbrtplan influence-matrix benchmark (model {model.name}, peak RSS at start {peak_memory_mib():.0f} MiB)")
    if args.only in (None, "tg119"):
        if not (SHARED / "matrad" / "TG119.mat").exists():
            print("TG119.mat not found under ../shared/data/matrad; skipping")
        else:
            dens, grid, tpts, vox = load_tg119(args.grid_mm)
            r = run_case("TG-119", dens, grid, tpts, vox, args.beams, 5.0, model)
            print(f"  target <= 10 s, <= 1536 MiB: {'PASS' if r['seconds'] <= 10 and r['peak_rss_mib'] <= 1536 else 'MISS'}"
                  f"; vs pyRadPlan: {PYRADPLAN_S / r['seconds']:.1f}x faster, "
                  f"{PYRADPLAN_GIB * 1024 / r['peak_rss_mib']:.1f}x less memory, "
                  f"{PYRADPLAN_NNZ / max(r['nnz'], 1):.1f}x fewer non-zeros")
            del dens
    if args.only in (None, "spine"):
        dens, grid, tpts, vox = load_spine(2.0)
        run_case("spine phantom", dens, grid, tpts, vox, args.beams, 2.5, model)
        forward_subfield("spine phantom 2 mm", dens, grid, vox, tuple(np.round(tpts.mean(axis=0), 1)), model)
    maybe_pyradplan()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the prioritised optimiser at full size (first-order path).

A synthetic 3-D problem of the size of a spine SBRT plan: a water cube at
2 mm (about 150 000 voxels), a spherical PTV, a cord cylinder behind it and
seven coplanar beams split into 3 mm x 3 mm beamlets over the PTV projection
(about 2 000 variables).  Beamlet dose: Gaussian lateral profiles (sigma 3 mm)
times exp(-0.005/mm depth), 1 cGy/MU at the surface.  Goals: the spine
protocol (27 Gy / 3 fx) with its cord limits, through ``stages_from_goals``.

Prints the matrix size, each stage's time, iterations and objective, the
cord and PTV figures and the peak memory.  Target (issue): 3 stages in 30 s
on 2 cores.  Run:  python benchmarks/bench_optimizer.py [--cvxpy]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from sbrtplan._log import peak_memory_mib
from sbrtplan.optimizer import SolverMethod, VoxelRegion, prioritized_solve
from sbrtplan.workflow import stages_from_goals
from sbrtplan.protocols import load_protocol


def build(n_side=53, spacing_mm=2.0, n_beams=7, beamlet_mm=3.0, ptv_r_mm=20.0, sigma_mm=3.0, mu=0.005):
    c = (np.arange(n_side) + 0.5) * spacing_mm - n_side * spacing_mm / 2
    Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
    px, py, pz = X.ravel(), Y.ravel(), Z.ravel()
    half = n_side * spacing_mm / 2
    n_b = int(np.ceil((ptv_r_mm + 4) / beamlet_mm))
    edges = np.arange(-n_b, n_b + 1) * beamlet_mm       # beamlet edges, lateral and along z
    nb = edges.size - 1
    rows, cols, vals = [], [], []
    col0 = 0
    pairs = []
    for b in range(n_beams):
        a = 2 * np.pi * b / n_beams
        u = np.array([np.cos(a), np.sin(a)])
        lat = -px * u[1] + py * u[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            tx = np.where(abs(u[0]) > 1e-12, (-half * np.sign(u[0]) - px) / u[0], -np.inf)
            ty = np.where(abs(u[1]) > 1e-12, (-half * np.sign(u[1]) - py) / u[1], -np.inf)
        depth = np.maximum(-np.maximum(tx, ty), 0.0)
        att = 0.01 * np.exp(-mu * depth)
        iu = np.floor((lat - edges[0]) / beamlet_mm).astype(int)
        iz = np.floor((pz - edges[0]) / beamlet_mm).astype(int)
        for du in range(-2, 3):
            for dz in range(-2, 3):
                ju, jz = iu + du, iz + dz
                ok = (ju >= 0) & (ju < nb) & (jz >= 0) & (jz < nb)
                r = np.flatnonzero(ok)
                ju, jz = ju[ok], jz[ok]
                s2 = np.sqrt(2) * sigma_mm
                from scipy.special import erf
                pu = 0.5 * (erf((edges[ju + 1] - lat[r]) / s2) - erf((edges[ju] - lat[r]) / s2))
                pzv = 0.5 * (erf((edges[jz + 1] - pz[r]) / s2) - erf((edges[jz] - pz[r]) / s2))
                v = att[r] * pu * pzv
                keep = v > 1e-5
                rows.append(r[keep])
                cols.append(col0 + ju[keep] * nb + jz[keep])
                vals.append(v[keep].astype(np.float32))
        for i in range(nb):
            for j in range(nb):
                k = col0 + i * nb + j
                if j + 1 < nb:
                    pairs.append((k, k + 1))
                if i + 1 < nb:
                    pairs.append((k, k + nb))
        col0 += nb * nb
    D = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(px.size, col0), dtype=np.float32)
    vox_cc = (spacing_mm / 10) ** 3
    r = np.sqrt(px ** 2 + py ** 2 + pz ** 2)
    cord = (np.hypot(px, py - (ptv_r_mm + 8.0)) <= 5.0)

    def region(name, mask):
        rows = np.flatnonzero(mask)
        return VoxelRegion(name, rows, np.ones(rows.size), rows.size * vox_cc)

    ptv = region("PTV", r <= ptv_r_mm)
    regions = dict(ptv=ptv, cord=region("SpinalCord", cord), body=region("Body", np.ones(px.size, bool)))
    rings = []
    for lo, hi in [(0, 5), (5, 15), (15, 30), (30, 200)]:
        rings.append((region(f"ring{lo}", (r > ptv_r_mm + lo) & (r <= ptv_r_mm + hi) & ~cord), float(lo), float(hi)))
    hot = region("Body-GTV", r > ptv_r_mm)
    return D, regions, rings, hot, np.array(pairs, np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-side", type=int, default=53, help="voxels per side of the cube (53: ~150k voxels)")
    ap.add_argument("--time-limit", type=float, default=None, help="time budget of the solve (s)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    D, regions, rings, hot, pairs = build(n_side=args.n_side)
    t_build = time.perf_counter() - t0
    print(f"matrix: {D.shape[0]} rows x {D.shape[1]} variables, {D.nnz / 1e6:.1f} M non-zeros "
          f"(built in {t_build:.1f} s)")
    goals = load_protocol("bone_spine").goals_for("27/3")
    pairs_g = [(g, regions.get(g.structure)) for g in goals]
    stages = stages_from_goals(pairs_g, prescription_gy=27.0, n_fractions=3, target=regions["ptv"], boost=None,
                               hotspot_free=hot, rings=rings, body=regions["body"], smoothness_pairs=pairs)
    t1 = time.perf_counter()
    res = prioritized_solve(D, stages, method=SolverMethod.FIRST_ORDER, time_limit_s=args.time_limit)
    t_solve = time.perf_counter() - t1
    for s in res.stages:
        print(f"  stage {s.name:11s} {s.time_s:6.1f} s  {s.iterations:5d} L-BFGS-B iterations  "
              f"objective {s.objective:.4g}  {s.status}")
    ptv = res.dose_gy[regions["ptv"].rows]
    cord = np.sort(res.dose_gy[regions["cord"].rows])[::-1]
    vcc = 0.008
    print(f"total solve {t_solve:.1f} s (target <= 30 s; ratio {t_solve / 30.0:.2f}); peak RSS "
          f"{peak_memory_mib():.0f} MiB")
    print(f"PTV V100% {np.mean(ptv >= 27.0) * 100:.1f} %, D98 {np.quantile(ptv, 0.02):.2f} Gy, "
          f"Dmax {ptv.max():.2f} Gy; cord D0.1cc {cord[int(np.ceil(0.1 / vcc)) - 1]:.2f} Gy (< 21.9), "
          f"D0.35cc {cord[int(np.ceil(0.35 / vcc)) - 1]:.2f} Gy (< 18), "
          f"D1.2cc {cord[int(np.ceil(1.2 / vcc)) - 1]:.2f} Gy (< 12.3)")


if __name__ == "__main__":
    main()

"""Numba kernels: sub-voxel samples of dose and structure occupancy.

A voxel is split into ``s x s x s`` sub-voxels.  The dose of each sub-voxel is
the trilinear interpolation of the dose grid at its centre (voxel values are
samples at voxel centres).  Which sub-voxels lie inside the structure follows a
planar model of the boundary: in a voxel with occupancy ``0 < f < 1`` the
boundary is a plane whose normal is the occupancy gradient (central
differences, in mm), placed so that exactly the volume ``f`` of the voxel is on
the inner side.  A voxel with ``f = 1`` (or a structure without occupancy) is
entirely inside.  Sub-voxel volumes always add up to the voxel's occupancy, so
volumes are preserved exactly.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _trilinear(dose, z, y, x):
    nz, ny, nx = dose.shape
    z0 = int(np.floor(z))
    y0 = int(np.floor(y))
    x0 = int(np.floor(x))
    fz = z - z0
    fy = y - y0
    fx = x - x0
    z1 = min(max(z0 + 1, 0), nz - 1)
    y1 = min(max(y0 + 1, 0), ny - 1)
    x1 = min(max(x0 + 1, 0), nx - 1)
    z0 = min(max(z0, 0), nz - 1)
    y0 = min(max(y0, 0), ny - 1)
    x0 = min(max(x0, 0), nx - 1)
    c00 = dose[z0, y0, x0] * (1.0 - fx) + dose[z0, y0, x1] * fx
    c01 = dose[z0, y1, x0] * (1.0 - fx) + dose[z0, y1, x1] * fx
    c10 = dose[z1, y0, x0] * (1.0 - fx) + dose[z1, y0, x1] * fx
    c11 = dose[z1, y1, x0] * (1.0 - fx) + dose[z1, y1, x1] * fx
    c0 = c00 * (1.0 - fy) + c01 * fy
    c1 = c10 * (1.0 - fy) + c11 * fy
    return c0 * (1.0 - fz) + c1 * fz


@njit(cache=True, parallel=True)
def subsample_voxels(dose, occ, has_occ, kk, jj, ii, spacing_zyx, s):
    """Sub-voxel doses and occupancy weights for the voxels ``(kk, jj, ii)``.

    Parameters
    ----------
    dose : float32 (nz, ny, nx)
    occ : float32 (nz, ny, nx)
        Occupancy in [0, 1] (ignored, may be 1x1x1, when ``has_occ`` is False).
    has_occ : bool
    kk, jj, ii : int64 (n,)
        Voxel indices.
    spacing_zyx : float64 (3,)
        Voxel size along z, y, x (mm); used to turn the occupancy gradient into a normal.
    s : int
        Sub-divisions per axis.

    Returns
    -------
    sub_dose : float32 (n, s**3)
    sub_w : float32 (n, s**3)
        Fraction of the voxel volume each sub-voxel contributes (sums to the occupancy).
    """
    n = kk.shape[0]
    m = s * s * s
    sub_dose = np.empty((n, m), dtype=np.float32)
    sub_w = np.empty((n, m), dtype=np.float32)
    nz, ny, nx = dose.shape
    offs = np.empty(s, dtype=np.float64)
    for a in range(s):
        offs[a] = (a + 0.5) / s - 0.5
    for v in prange(n):
        k = kk[v]
        j = jj[v]
        i = ii[v]
        q = 0
        for a in range(s):
            for b in range(s):
                for c in range(s):
                    sub_dose[v, q] = _trilinear(dose, k + offs[a], j + offs[b], i + offs[c])
                    q += 1
        f = 1.0
        if has_occ:
            f = occ[k, j, i]
        if f >= 1.0 - 1e-6 or not has_occ:
            w = min(f, 1.0) / m
            for q2 in range(m):
                sub_w[v, q2] = w
            continue
        # occupancy gradient (towards the inside), per mm
        gz = (occ[min(k + 1, nz - 1), j, i] - occ[max(k - 1, 0), j, i]) / (2.0 * spacing_zyx[0])
        gy = (occ[k, min(j + 1, ny - 1), i] - occ[k, max(j - 1, 0), i]) / (2.0 * spacing_zyx[1])
        gx = (occ[k, j, min(i + 1, nx - 1)] - occ[k, j, max(i - 1, 0)]) / (2.0 * spacing_zyx[2])
        g = np.sqrt(gz * gz + gy * gy + gx * gx)
        if g < 1e-12:
            w = f / m
            for q2 in range(m):
                sub_w[v, q2] = w
            continue
        proj = np.empty(m, dtype=np.float64)
        q = 0
        for a in range(s):
            for b in range(s):
                for c in range(s):
                    proj[q] = (gz * offs[a] * spacing_zyx[0] + gy * offs[b] * spacing_zyx[1]
                               + gx * offs[c] * spacing_zyx[2])
                    q += 1
        order = np.argsort(-proj)
        inside = f * m
        for r in range(m):
            q2 = order[r]
            if r + 1 <= inside:
                sub_w[v, q2] = 1.0 / m
            elif r < inside:
                sub_w[v, q2] = (inside - r) / m
            else:
                sub_w[v, q2] = 0.0
    return sub_dose, sub_w


@njit(cache=True, parallel=True)
def fraction_above(dose, kk, jj, ii, threshold, s):
    """Fraction of each voxel's ``s**3`` trilinear sub-samples with dose >= ``threshold``."""
    n = kk.shape[0]
    out = np.empty(n, dtype=np.float64)
    m = s * s * s
    for v in prange(n):
        cnt = 0
        for a in range(s):
            for b in range(s):
                for c in range(s):
                    d = _trilinear(dose, kk[v] + (a + 0.5) / s - 0.5, jj[v] + (b + 0.5) / s - 0.5,
                                   ii[v] + (c + 0.5) / s - 0.5)
                    if d >= threshold:
                        cnt += 1
        out[v] = cnt / m
    return out

"""Numba kernels: sub-voxel samples of dose and structure occupancy.

A voxel is split into ``s x s x s`` sub-voxels.  The dose of each sub-voxel is
the trilinear interpolation of the dose grid at its centre (voxel values are
samples at voxel centres).  Which sub-voxels lie inside the structure follows a
planar model of the boundary: in a voxel with occupancy ``0 < f < 1`` the
boundary is a plane whose normal is the occupancy gradient (central
differences, in mm), placed so that exactly the volume ``f`` of the voxel is on
the inner side (sub-voxels ranked by the trilinear occupancy at their centres,
ties by the projection on the normal; see "No dose outside the structure" in
``dvh``).  A voxel with ``f = 1`` (or a structure without occupancy) is entirely
inside.  Sub-voxel volumes always add up to the voxel's occupancy, so
volumes are preserved exactly.

Cache safety
------------
Every kernel here is cached (``cache=True``); cached libraries may come from
different processes, where numba numbers its internal helper functions
differently.  Numba's sort and search helpers (``np.sort``, ``np.argsort``,
``np.searchsorted``, ...) are built by factories whose instances share one
symbol name for different bodies (sort and argsort, left and right search), so
two cached libraries from different processes can bind one another's helper and
crash when loaded together.  The kernels therefore sort with their own
insertion sort (``_order_descending``), and the interpolation helper inlined into
the kernels lives in this module with a name used nowhere else in the package.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _eval_trilinear(dose, z, y, x):
    """Trilinear interpolation of ``dose`` at fractional index (z, y, x), clamped to the grid."""
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


@njit(cache=True)
def _order_descending(values, order):
    """``order`` = indices of ``values`` by decreasing value (stable insertion sort, n <= 64 here)."""
    n = values.shape[0]
    for r in range(n):
        order[r] = r
    for r in range(1, n):
        q = order[r]
        v = values[q]
        t = r - 1
        while t >= 0 and values[order[t]] < v:
            order[t + 1] = order[t]
            t -= 1
        order[t + 1] = q


@njit(cache=True, parallel=True)
def subsample_voxels(dose, occ, has_occ, kk, jj, ii, spacing_zyx, s, inset):
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
    inset : float
        In partial voxels, the doses of the inner sub-voxels are taken this many sub-voxel
        extents (along the normal) further inside than their centres: a margin against the
        error of the boundary model where a sample must not lie outside (the hot tail).

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
                    sub_dose[v, q] = _eval_trilinear(dose, k + offs[a], j + offs[b], i + offs[c])
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
                    # rank by the interpolated occupancy (its 0.5 level follows a curved boundary),
                    # ties (flat occupancy) by the projection on the occupancy gradient
                    planar = (gz * offs[a] * spacing_zyx[0] + gy * offs[b] * spacing_zyx[1]
                              + gx * offs[c] * spacing_zyx[2]) / g
                    proj[q] = _eval_trilinear(occ, k + offs[a], j + offs[b], i + offs[c]) + 1e-6 * planar
                    q += 1
        order = np.empty(m, dtype=np.int64)
        _order_descending(proj, order)
        # extent of one sub-voxel along the unit normal (mm)
        ext = (abs(gz) * spacing_zyx[0] + abs(gy) * spacing_zyx[1] + abs(gx) * spacing_zyx[2]) / (g * s)
        inside = f * m
        for r in range(m):
            q2 = order[r]
            if r + 1 <= inside:
                sub_w[v, q2] = 1.0 / m
                if inset > 0.0:
                    t_mm = inset * ext
                    a2 = q2 // (s * s)
                    b2 = (q2 // s) % s
                    c2 = q2 % s
                    sub_dose[v, q2] = _eval_trilinear(
                        dose, k + offs[a2] + gz / g * t_mm / spacing_zyx[0],
                        j + offs[b2] + gy / g * t_mm / spacing_zyx[1], i + offs[c2] + gx / g * t_mm / spacing_zyx[2])
            elif r < inside:
                phi = inside - r
                sub_w[v, q2] = phi / m
                # The plane cuts this sub-voxel and its centre lies on the outer side: its dose is
                # taken at the centroid of its inner part (a slab of fraction phi of the sub-voxel's
                # extent along the normal), so that no sample is evaluated outside the boundary.
                t_mm = (0.5 * (1.0 - phi) + inset) * ext
                a2 = q2 // (s * s)
                b2 = (q2 // s) % s
                c2 = q2 % s
                sub_dose[v, q2] = _eval_trilinear(
                    dose, k + offs[a2] + gz / g * t_mm / spacing_zyx[0], j + offs[b2] + gy / g * t_mm / spacing_zyx[1],
                    i + offs[c2] + gx / g * t_mm / spacing_zyx[2])
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
                    d = _eval_trilinear(dose, kk[v] + (a + 0.5) / s - 0.5, jj[v] + (b + 0.5) / s - 0.5,
                                   ii[v] + (c + 0.5) / s - 0.5)
                    if d >= threshold:
                        cnt += 1
        out[v] = cnt / m
    return out


@njit(cache=True, parallel=True)
def gamma_search(ref, ev, idx, offs, r2, inv_dd, max_g2, out):
    """out[q] = gamma of reference voxel idx[q]; offs (n, 3) fractional index offsets (z, y, x) sorted by
    their squared normalised distance r2 (distance / DTA)^2; inv_dd[q] = 1 / dose criterion (Gy)."""
    nz, ny, nx = ref.shape
    n = idx.size
    n_off = r2.size
    for q in prange(n):
        flat = idx[q]
        k = flat // (ny * nx)
        rem = flat - k * ny * nx
        j = rem // nx
        i = rem - j * nx
        d0 = ref[k, j, i]
        s = inv_dd[q]
        best = max_g2
        for m in range(n_off):
            if r2[m] >= best:
                break
            z = k + offs[m, 0]
            y = j + offs[m, 1]
            x = i + offs[m, 2]
            if z < 0.0 or y < 0.0 or x < 0.0 or z > nz - 1 or y > ny - 1 or x > nx - 1:
                continue
            dd = (_eval_trilinear(ev, z, y, x) - d0) * s
            g2 = r2[m] + dd * dd
            if g2 < best:
                best = g2
        out[q] = math.sqrt(best)

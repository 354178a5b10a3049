"""Per-voxel beam geometry and per-beamlet dose evaluation (numba).

Shared by the influence matrix (values stored) and :func:`fluence_dose`
(values summed with weights).  For one voxel and one beam:

1. beam's-eye-view coordinates: ``b = R^T (p - iso)``, distance from the
   source along the central axis ``SAD - b_z``, isocentre-plane position
   ``(u, v) = (b_x, b_y) * SAD / (SAD - b_z)`` and Euclidean distance ``s``
   to the source;
2. radiological depth and mean densities from the beam's fan table;
3. model terms (Gaussian) or depth functions (matRad SVD);
4. one value per active beamlet whose centre lies within ``cutoff`` of
   ``(u, v)`` at the isocentre plane, in increasing column order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .pencil import MAX_TERMS, gaussian_terms
from .raytrace import fan_lookup

MODE_LATERAL = 0
MODE_DEPTH_ONLY = 1
MODE_NONE = 2



# numba's np.searchsorted is built by a factory whose instances share one symbol name; cached
# kernels of different modules can then bind to each other's helper (see CONTRIBUTING, "Kernels").
# These two are the dose engine's bisections (aperture_dose, clarkson and the ranges below call them).
@njit(cache=True)
def sorted_bisect_left(a, x):
    """First index i with a[i] >= x in the ascending ``a`` (np.searchsorted side='left')."""
    lo, hi = 0, a.size
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def sorted_bisect_right(a, x):
    """First index i with a[i] > x in the ascending ``a`` (np.searchsorted side='right')."""
    lo, hi = 0, a.size
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def voxel_frame(px, py, pz, bp):
    """BEV frame of a point. ``bp`` = [iso(3), R(9, row-major), sad, source(3)].

    Returns (u, v, dist_axis, s).
    """
    qx = px - bp[0]
    qy = py - bp[1]
    qz = pz - bp[2]
    # b = R^T q, R columns are the BLD axes in patient coordinates
    bx = bp[3] * qx + bp[6] * qy + bp[9] * qz
    by = bp[4] * qx + bp[7] * qy + bp[10] * qz
    bz = bp[5] * qx + bp[8] * qy + bp[11] * qz
    sad = bp[12]
    dist = sad - bz
    if dist < 1.0:
        dist = 1.0
    u = bx * sad / dist
    v = by * sad / dist
    dx = px - bp[13]
    dy = py - bp[14]
    dz = pz - bp[15]
    s = math.sqrt(dx * dx + dy * dy + dz * dz)
    return u, v, dist, s


def beam_params(geometry) -> np.ndarray:
    r = np.asarray(geometry.rotation, dtype=np.float64)
    return np.concatenate([np.asarray(geometry.isocenter_mm, float), r.ravel(), [float(geometry.sad_mm)],
                           np.asarray(geometry.source_mm, float)]).astype(np.float64)


@njit(cache=True)
def _range(centers, lo, hi):
    a = sorted_bisect_left(centers, lo)
    b = sorted_bisect_right(centers, hi)
    return a, b


@njit(cache=True)
def _erf_sat(z):
    """erf, skipping the call where it is 1 to within 2e-8 (|z| > 4)."""
    if z > 4.0:
        return 1.0
    if z < -4.0:
        return -1.0
    return math.erf(z)


@njit(cache=True)
def count_candidates(u, v, xc, yc, active_idx, cutoff):
    cut2 = cutoff * cutoff
    c_lo, c_hi = _range(xc, u - cutoff, u + cutoff)
    r_lo, r_hi = _range(yc, v - cutoff, v + cutoff)
    n = 0
    for r in range(r_lo, r_hi):
        dy = yc[r] - v
        dy2 = dy * dy
        if dy2 > cut2:
            continue
        for c in range(c_lo, c_hi):
            if active_idx[r, c] >= 0:
                dx = xc[c] - u
                if dx * dx + dy2 <= cut2:
                    n += 1
    return n


@njit(cache=True)
def gaussian_voxel(px, py, pz, bp, gp, mode, fp, table, entry, lengths, n_len, xe, ye, xc, yc, active_idx,
                   horn_map, cutoff, compensate, amp, sx, sy, rho, ex, ey, vals, cols):
    """Dose per MU of every candidate beamlet at one voxel (Gaussian model).

    Writes values and local column indices into ``vals``/``cols``; returns the count.
    """
    u, v, dist, s = voxel_frame(px, py, pz, bp)
    cut2 = cutoff * cutoff
    c_lo, c_hi = _range(xc, u - cutoff, u + cutoff)
    r_lo, r_hi = _range(yc, v - cutoff, v + cutoff)
    if c_hi <= c_lo or r_hi <= r_lo:
        return 0
    rad, ent = fan_lookup(fp, table, entry, u, v, s, lengths, n_len, rho)
    if mode == MODE_NONE:
        rad = s - ent if s > ent else 0.0
        for k in range(n_len):
            rho[k] = 1.0
    elif mode == MODE_DEPTH_ONLY:
        for k in range(n_len):
            rho[k] = 1.0
    nt = gaussian_terms(gp, rad, dist, rho, amp, sx, sy)
    sad = bp[12]
    isq = sad * sad / (s * s)
    inv = 1.0 / math.sqrt(2.0)
    for t in range(nt):
        a = amp[t] * isq
        if compensate:
            lost = math.exp(-cut2 / (2.0 * sx[t] * sy[t]))
            if lost < 0.999:
                a = a / (1.0 - lost)
        amp[t] = a
        isx = inv / sx[t]
        isy = inv / sy[t]
        for e in range(c_lo, c_hi + 1):
            ex[t, e - c_lo] = _erf_sat((xe[e] - u) * isx)
        for e in range(r_lo, r_hi + 1):
            ey[t, e - r_lo] = _erf_sat((ye[e] - v) * isy)
    n = 0
    for r in range(r_lo, r_hi):
        dy = yc[r] - v
        dy2 = dy * dy
        if dy2 > cut2:
            continue
        jr = r - r_lo
        for c in range(c_lo, c_hi):
            j = active_idx[r, c]
            if j < 0:
                continue
            dx = xc[c] - u
            if dx * dx + dy2 > cut2:
                continue
            jc = c - c_lo
            val = 0.0
            for t in range(nt):
                val += amp[t] * (ex[t, jc + 1] - ex[t, jc]) * (ey[t, jr + 1] - ey[t, jr])
            vals[n] = 0.25 * val * horn_map[r, c]
            cols[n] = j
            n += 1
    return n


@njit(cache=True)
def _bilinear3(tab, fx, fy, n):
    ix = int(math.floor(fx))
    iy = int(math.floor(fy))
    if ix < 0 or iy < 0 or ix >= n - 1 or iy >= n - 1:
        return 0.0, 0.0, 0.0
    wx = fx - ix
    wy = fy - iy
    w00 = (1 - wx) * (1 - wy)
    w10 = wx * (1 - wy)
    w01 = (1 - wx) * wy
    w11 = wx * wy
    a = w00 * tab[0, ix, iy] + w10 * tab[0, ix + 1, iy] + w01 * tab[0, ix, iy + 1] + w11 * tab[0, ix + 1, iy + 1]
    b = w00 * tab[1, ix, iy] + w10 * tab[1, ix + 1, iy] + w01 * tab[1, ix, iy + 1] + w11 * tab[1, ix + 1, iy + 1]
    c = w00 * tab[2, ix, iy] + w10 * tab[2, ix + 1, iy] + w01 * tab[2, ix, iy + 1] + w11 * tab[2, ix + 1, iy + 1]
    return a, b, c


@njit(cache=True)
def matrad_voxel(px, py, pz, bp, mp, fp, table, entry, xc, yc, active_idx, cutoff, ktab, t0, tres, vals, cols):
    """Dose of every candidate beamlet at one voxel (matRad SVD model).

    ``mp`` = [m, beta1, beta2, beta3]; ``ktab`` (3, n, n) lateral tables of one
    beamlet (first axis x offset, second y offset), sample ``i`` at ``t0 + i*tres``.
    """
    u, v, dist, s = voxel_frame(px, py, pz, bp)
    cut2 = cutoff * cutoff
    c_lo, c_hi = _range(xc, u - cutoff, u + cutoff)
    r_lo, r_hi = _range(yc, v - cutoff, v + cutoff)
    if c_hi <= c_lo or r_hi <= r_lo:
        return 0
    dummy = np.empty(1)
    lens = np.zeros(1)
    rad, _ = fan_lookup(fp, table, entry, u, v, s, lens, 0, dummy)
    m = mp[0]
    d = rad if rad > 0.0 else 0.0
    sad = bp[12]
    isq = sad * sad / (s * s)
    f1 = mp[1] / (mp[1] - m) * (math.exp(-m * d) - math.exp(-mp[1] * d)) * isq
    f2 = mp[2] / (mp[2] - m) * (math.exp(-m * d) - math.exp(-mp[2] * d)) * isq
    f3 = mp[3] / (mp[3] - m) * (math.exp(-m * d) - math.exp(-mp[3] * d)) * isq
    n_tab = ktab.shape[1]
    n = 0
    for r in range(r_lo, r_hi):
        dy = v - yc[r]
        dy2 = dy * dy
        if dy2 > cut2:
            continue
        fy = (dy - t0) / tres
        for c in range(c_lo, c_hi):
            j = active_idx[r, c]
            if j < 0:
                continue
            dx = u - xc[c]
            if dx * dx + dy2 > cut2:
                continue
            k1, k2, k3 = _bilinear3(ktab, (dx - t0) / tres, fy, n_tab)
            val = k1 * f1 + k2 * f2 + k3 * f3
            vals[n] = val if val > 0.0 else 0.0
            cols[n] = j
            n += 1
    return n

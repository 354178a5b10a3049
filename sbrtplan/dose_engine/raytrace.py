"""Exact voxel traversal (Siddon 1985, incremental form of Jacobs et al. 1998).

Rays are traced in continuous index space of the grid, where voxel ``i``
spans ``[i, i + 1)`` along each axis, so oblique grids (any orthonormal
``Grid.direction``) are handled the same way as axial ones.  The radiological
path of a segment is its length in mm times the voxel's relative electron
density.

Two entry points:

* :func:`radiological_depth` -- exact water-equivalent depth from a source to
  arbitrary points (one ray per point, numba-parallel over points);
* :func:`trace_fan` -- the cumulative radiological path sampled at regular
  distances along a fan of rays through a regular beam's-eye-view grid
  (numba-parallel over rays).  The influence-matrix and forward-dose kernels
  interpolate depths (and the mean density over the last few cm of the path
  used for lateral kernel scaling) from this table instead of tracing a ray
  per voxel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..case import Grid
from ..errors import InputError

_BIG = 1e30


def grid_frame(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(origin, inverse-axis matrix, spacing, shape) for the numba tracers.

    ``index_coordinate = (M @ (p - origin)) / spacing + 0.5``, voxel ``i``
    occupying ``[i, i+1)``.  ``shape`` is (nx, ny, nz).
    """
    origin = np.asarray(grid.origin_mm, dtype=np.float64)
    m = np.ascontiguousarray(np.asarray(grid.direction, dtype=np.float64).T)  # orthonormal: inverse = transpose
    spacing = np.asarray(grid.spacing_mm, dtype=np.float64)
    shape = np.array([grid.nx, grid.ny, grid.nz], dtype=np.int64)
    return origin, m, spacing, shape


@njit(cache=True)
def _to_index(p0, p1, p2, origin, m, spacing):
    q0 = p0 - origin[0]
    q1 = p1 - origin[1]
    q2 = p2 - origin[2]
    c0 = (m[0, 0] * q0 + m[0, 1] * q1 + m[0, 2] * q2) / spacing[0] + 0.5
    c1 = (m[1, 0] * q0 + m[1, 1] * q1 + m[1, 2] * q2) / spacing[1] + 0.5
    c2 = (m[2, 0] * q0 + m[2, 1] * q1 + m[2, 2] * q2) / spacing[2] + 0.5
    return c0, c1, c2


@njit(cache=True)
def _clip_interval(c0, d0, n, tlo, thi):
    """Intersect the parameter interval with the slab 0 <= c0 + t d0 <= n."""
    if abs(d0) < 1e-15:
        if c0 < 0.0 or c0 > n:
            return 1.0, 0.0
        return tlo, thi
    ta = (0.0 - c0) / d0
    tb = (n - c0) / d0
    if ta > tb:
        ta, tb = tb, ta
    return max(tlo, ta), min(thi, tb)


@njit(cache=True)
def _trace_segment(density, shape, c, d, length_mm, t_end, s_out, r_out, n_max, threshold):
    """Walk the voxels along ``c + t d`` for ``t`` in ``[0, t_end]``.

    ``length_mm`` is the path length in mm per unit ``t``.  Writes the
    boundary distances (mm from t=0) and the cumulative radiological path at
    each boundary into ``s_out``/``r_out``; returns (n_points, total_path,
    entry distance of the first voxel with density > threshold, or -1).
    The first point is where the ray enters the grid.
    """
    nx, ny, nz = shape[0], shape[1], shape[2]
    tlo, thi = 0.0, t_end
    tlo, thi = _clip_interval(c[0], d[0], nx, tlo, thi)
    tlo, thi = _clip_interval(c[1], d[1], ny, tlo, thi)
    tlo, thi = _clip_interval(c[2], d[2], nz, tlo, thi)
    if thi <= tlo:
        return 0, 0.0, -1.0
    tm = tlo + 1e-9 * (thi - tlo + 1.0)
    ix = int(math.floor(c[0] + tm * d[0]))
    iy = int(math.floor(c[1] + tm * d[1]))
    iz = int(math.floor(c[2] + tm * d[2]))
    ix = min(max(ix, 0), nx - 1)
    iy = min(max(iy, 0), ny - 1)
    iz = min(max(iz, 0), nz - 1)
    sx = 1 if d[0] > 0 else -1
    sy = 1 if d[1] > 0 else -1
    sz = 1 if d[2] > 0 else -1
    dtx = abs(1.0 / d[0]) if abs(d[0]) > 1e-15 else _BIG
    dty = abs(1.0 / d[1]) if abs(d[1]) > 1e-15 else _BIG
    dtz = abs(1.0 / d[2]) if abs(d[2]) > 1e-15 else _BIG
    tx = ((ix + (1 if sx > 0 else 0)) - c[0]) / d[0] if abs(d[0]) > 1e-15 else _BIG
    ty = ((iy + (1 if sy > 0 else 0)) - c[1]) / d[1] if abs(d[1]) > 1e-15 else _BIG
    tz = ((iz + (1 if sz > 0 else 0)) - c[2]) / d[2] if abs(d[2]) > 1e-15 else _BIG
    t = tlo
    total = 0.0
    entry = -1.0
    n = 0
    if n < n_max:
        s_out[n] = t * length_mm
        r_out[n] = 0.0
        n += 1
    while t < thi:
        tn = min(tx, ty, tz, thi)
        rho = density[iz, iy, ix]
        if entry < 0.0 and rho > threshold:
            entry = t * length_mm
        total += (tn - t) * length_mm * rho
        t = tn
        if n < n_max:
            s_out[n] = t * length_mm
            r_out[n] = total
            n += 1
        if t >= thi:
            break
        if tn == tx:
            ix += sx
            tx += dtx
        elif tn == ty:
            iy += sy
            ty += dty
        else:
            iz += sz
            tz += dtz
        if ix < 0 or iy < 0 or iz < 0 or ix >= nx or iy >= ny or iz >= nz:
            break
    return n, total, entry


@njit(cache=True, parallel=True)
def _radiological_depth_kernel(density, origin, m, spacing, shape, source, points, out):
    n = points.shape[0]
    for i in prange(n):
        s0, s1, s2 = _to_index(source[0], source[1], source[2], origin, m, spacing)
        p0, p1, p2 = _to_index(points[i, 0], points[i, 1], points[i, 2], origin, m, spacing)
        c = np.empty(3)
        d = np.empty(3)
        c[0], c[1], c[2] = s0, s1, s2
        d[0], d[1], d[2] = p0 - s0, p1 - s1, p2 - s2
        length = math.sqrt((points[i, 0] - source[0]) ** 2 + (points[i, 1] - source[1]) ** 2
                           + (points[i, 2] - source[2]) ** 2)
        dummy_s = np.empty(1)
        dummy_r = np.empty(1)
        _, total, _ = _trace_segment(density, shape, c, d, length, 1.0, dummy_s, dummy_r, 0, 1e30)
        out[i] = total


def radiological_depth(density: np.ndarray, grid: Grid, source_mm, points_mm) -> np.ndarray:
    """Water-equivalent path length (mm) from ``source_mm`` to each point.

    Exact Siddon traversal of ``density`` (relative electron density on
    ``grid``); the part of the ray outside the grid counts as vacuum.

    Parameters
    ----------
    density : (nz, ny, nx) array
    grid : Grid
    source_mm : (3,) patient coordinates of the source
    points_mm : (N, 3) patient coordinates

    Returns
    -------
    (N,) float64 array
    """
    dens = np.ascontiguousarray(density, dtype=np.float32)
    if dens.shape != grid.shape:
        raise InputError(f"radiological_depth: density shape {dens.shape} does not match grid {grid.shape}")
    pts = np.ascontiguousarray(np.asarray(points_mm, dtype=np.float64).reshape(-1, 3))
    src = np.asarray(source_mm, dtype=np.float64).reshape(3)
    origin, m, spacing, shape = grid_frame(grid)
    out = np.empty(pts.shape[0], dtype=np.float64)
    _radiological_depth_kernel(dens, origin, m, spacing, shape, src, pts, out)
    return out


# --------------------------------------------------------------- fan tables
@njit(cache=True, parallel=True)
def _trace_fan_kernel(density, origin, m, spacing, shape, source, ray_targets, s0, ds, ns, threshold,
                      table, entry_out):
    """Cumulative radiological path at s0 + k*ds along each ray (source -> target, extended)."""
    n_rays = ray_targets.shape[0]
    n_max = 2 * (shape[0] + shape[1] + shape[2]) + 8
    for r in prange(n_rays):
        dx = ray_targets[r, 0] - source[0]
        dy = ray_targets[r, 1] - source[1]
        dz = ray_targets[r, 2] - source[2]
        norm = math.sqrt(dx * dx + dy * dy + dz * dz)
        dx /= norm
        dy /= norm
        dz /= norm
        s_end = s0 + (ns - 1) * ds + ds
        c = np.empty(3)
        d = np.empty(3)
        a0, a1, a2 = _to_index(source[0], source[1], source[2], origin, m, spacing)
        b0, b1, b2 = _to_index(source[0] + dx * s_end, source[1] + dy * s_end, source[2] + dz * s_end,
                               origin, m, spacing)
        c[0], c[1], c[2] = a0, a1, a2
        d[0], d[1], d[2] = b0 - a0, b1 - a1, b2 - a2
        sb = np.empty(n_max)
        rb = np.empty(n_max)
        npt, total, entry = _trace_segment(density, shape, c, d, s_end, 1.0, sb, rb, n_max, threshold)
        entry_out[r] = entry if entry >= 0.0 else 1e30
        j = 0
        for k in range(ns):
            s = s0 + k * ds
            if npt == 0 or s <= sb[0]:
                table[r, k] = 0.0
                continue
            while j + 1 < npt and sb[j + 1] < s:
                j += 1
            if j + 1 >= npt:
                table[r, k] = rb[npt - 1]
            else:
                seg = sb[j + 1] - sb[j]
                f = (s - sb[j]) / seg if seg > 0 else 0.0
                table[r, k] = rb[j] + f * (rb[j + 1] - rb[j])


class FanTable:
    """Cumulative radiological path on a regular fan of rays of one beam.

    Rays leave the source through points ``(u, v)`` of a regular grid on the
    isocentre plane (IEC BEAM LIMITING DEVICE x, y); along each ray the
    cumulative water-equivalent path is sampled every ``ds`` mm of distance
    from the source starting at ``s0``.

    Attributes
    ----------
    u0, v0, du, dv : float
        First ray position and ray spacing at the isocentre plane (mm).
    nu, nv : int
    s0, ds : float
        Distance of the first sample from the source and sample step (mm).
    table : (nv * nu, ns) float32
        Cumulative radiological path (mm); rays in row-major (v, u) order.
    entry_mm : (nv * nu,) float64
        Distance from the source where each ray first meets density above the
        body threshold (1e30 if never).
    """

    def __init__(self, u0, v0, du, dv, nu, nv, s0, ds, table, entry_mm):
        self.u0, self.v0, self.du, self.dv = float(u0), float(v0), float(du), float(dv)
        self.nu, self.nv = int(nu), int(nv)
        self.s0, self.ds = float(s0), float(ds)
        self.table = table
        self.entry_mm = entry_mm

    @property
    def params(self) -> np.ndarray:
        return np.array([self.u0, self.v0, self.du, self.dv, self.nu, self.nv, self.s0, self.ds,
                         self.table.shape[1]], dtype=np.float64)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes + self.entry_mm.nbytes)


def trace_fan(density: np.ndarray, grid: Grid, geometry, u_range_mm, v_range_mm, ray_spacing_mm: float,
              s_range_mm, step_mm: float, body_threshold: float = 0.05) -> FanTable:
    """Trace a fan of rays of ``geometry`` covering an isocentre-plane rectangle.

    Parameters
    ----------
    density : (nz, ny, nx) float32 relative electron density on ``grid``.
    geometry : BeamGeometry
    u_range_mm, v_range_mm : (lo, hi)
        Extent to cover at the isocentre plane (one extra ray on each side is added).
    ray_spacing_mm : float
        Ray spacing at the isocentre plane.
    s_range_mm : (lo, hi)
        Distances from the source to sample.
    step_mm : float
        Sample step along the rays.
    body_threshold : float
        Density above which a ray is considered inside the patient (for ``entry_mm``).
    """
    du = dv = float(ray_spacing_mm)
    u0 = float(u_range_mm[0]) - du
    v0 = float(v_range_mm[0]) - dv
    nu = int(math.ceil((float(u_range_mm[1]) + du - u0) / du)) + 1
    nv = int(math.ceil((float(v_range_mm[1]) + dv - v0) / dv)) + 1
    s0 = max(float(s_range_mm[0]) - step_mm, 1.0)
    ns = int(math.ceil((float(s_range_mm[1]) + step_mm - s0) / step_mm)) + 1
    uu, vv = np.meshgrid(u0 + du * np.arange(nu), v0 + dv * np.arange(nv))
    pts_b = np.column_stack([uu.ravel(), vv.ravel(), np.zeros(uu.size)])
    targets = np.ascontiguousarray(geometry.from_beam(pts_b))
    origin, m, spacing, shape = grid_frame(grid)
    table = np.empty((nu * nv, ns), dtype=np.float32)
    entry = np.empty(nu * nv, dtype=np.float64)
    _trace_fan_kernel(np.ascontiguousarray(density, dtype=np.float32), origin, m, spacing, shape,
                      np.asarray(geometry.source_mm, dtype=np.float64), targets, s0, float(step_mm), ns,
                      float(body_threshold), table, entry)
    return FanTable(u0, v0, du, dv, nu, nv, s0, float(step_mm), table, entry)


@njit(cache=True)
def fan_lookup(fp, table, entry, u, v, s, lengths, n_len, out_means):
    """Interpolate the fan table at (u, v, s).

    Returns (radiological depth at ``s``, distance where the ray enters the
    patient) and fills ``out_means[i]`` with the mean density over the last
    ``lengths[i]`` mm of the path inside the patient (1.0 when less than 1 mm
    of the path is inside).
    """
    u0, v0, du, dv = fp[0], fp[1], fp[2], fp[3]
    nu, nv = int(fp[4]), int(fp[5])
    s0, ds, ns = fp[6], fp[7], int(fp[8])
    fu = (u - u0) / du
    fv = (v - v0) / dv
    iu = int(math.floor(fu))
    iv = int(math.floor(fv))
    iu = min(max(iu, 0), nu - 2)
    iv = min(max(iv, 0), nv - 2)
    wu = min(max(fu - iu, 0.0), 1.0)
    wv = min(max(fv - iv, 0.0), 1.0)
    r00 = iv * nu + iu
    r01 = r00 + 1
    r10 = r00 + nu
    r11 = r10 + 1
    w00 = (1 - wu) * (1 - wv)
    w01 = wu * (1 - wv)
    w10 = (1 - wu) * wv
    w11 = wu * wv
    # A ray that never enters the patient (beyond the CT's first or last slice, or past the body
    # outline at a tangent) has no depth: interpolating its zero depth and infinite entry into a
    # point inside the patient would lower the depth and, through the entry, switch the density
    # means to water.  Such rays are left out and the weights of the others renormalised.
    if entry[r00] > 1e29:
        w00 = 0.0
    if entry[r01] > 1e29:
        w01 = 0.0
    if entry[r10] > 1e29:
        w10 = 0.0
    if entry[r11] > 1e29:
        w11 = 0.0
    wsum = w00 + w01 + w10 + w11
    if wsum <= 0.0:
        for i in range(n_len):
            out_means[i] = 1.0
        return 0.0, 1e6
    w00 /= wsum
    w01 /= wsum
    w10 /= wsum
    w11 /= wsum
    ent = w00 * min(entry[r00], 1e6) + w01 * min(entry[r01], 1e6) + w10 * min(entry[r10], 1e6) \
        + w11 * min(entry[r11], 1e6)
    rad = _fan_at(table, r00, r01, r10, r11, w00, w01, w10, w11, s, s0, ds, ns)
    inside = s - ent
    for i in range(n_len):
        ell = min(lengths[i], inside)
        if ell < 1.0:
            out_means[i] = 1.0
        else:
            back = _fan_at(table, r00, r01, r10, r11, w00, w01, w10, w11, s - ell, s0, ds, ns)
            out_means[i] = (rad - back) / ell
    return rad, ent


@njit(cache=True)
def _fan_at(table, r00, r01, r10, r11, w00, w01, w10, w11, s, s0, ds, ns):
    fs = (s - s0) / ds
    k = int(math.floor(fs))
    if k < 0:
        k = 0
        ws = 0.0
    elif k >= ns - 1:
        k = ns - 2
        ws = 1.0
    else:
        ws = fs - k
    a = w00 * table[r00, k] + w01 * table[r01, k] + w10 * table[r10, k] + w11 * table[r11, k]
    b = w00 * table[r00, k + 1] + w01 * table[r01, k + 1] + w10 * table[r10, k + 1] + w11 * table[r11, k + 1]
    return a + ws * (b - a)

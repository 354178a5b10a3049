"""TG-43U1 dose calculation for low-energy seeds (Rivard et al., Med. Phys. 31, 633 (2004)).

2D (line source)::

    D_rate(r, theta) = S_K * Lambda * G_L(r, theta) / G_L(r0, theta0) * g_L(r) * F(r, theta)

1D (point-source approximation, TG-43U1 eq. 11 with G_P = 1/r^2)::

    D_rate(r) = S_K * Lambda * (r0 / r)^2 * g_P(r) * phi_an(r),
    g_P(r) = g_L(r) * [G_L(r, 90) / G_L(r0, 90)] * (r / r0)^2

Interpolation as TG-43U1 Appendix C prescribes: g_L log-linear between the tabulated radii, its
value at r_min below r_min and a log-linear extrapolation of the last two points beyond r_max;
F(r, theta) bilinear, nearest tabulated radius outside the table; phi_an(r) linear, nearest
outside.  Points closer to the seed axis than the seed radius are moved onto the capsule
surface (the TG-43 functions are undefined inside the source).

A permanent implant's total dose is the initial dose rate times the mean life
tau = T_1/2 / ln 2 (the source decays completely in place).

The kernels are numba-compiled, parallel over dose points, with the seeds in the inner loop.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..errors import InputError
from .source import SourceData, geometry_line

R0_CM = 1.0


class SourceGeometry(str, enum.Enum):
    """Which TG-43U1 formalism: the 2D line source or the 1D point-source approximation."""

    LINE = "line"
    POINT = "point"


@dataclass
class SeedSet:
    """Seeds of an implant: centres (mm, LPS), unit axis directions and air-kerma strengths (U)."""

    positions_mm: np.ndarray
    directions: np.ndarray
    strength_u: np.ndarray

    def __post_init__(self) -> None:
        p = np.asarray(self.positions_mm, dtype=float).reshape(-1, 3)
        n = p.shape[0]
        d = np.asarray(self.directions, dtype=float)
        d = np.broadcast_to(d.reshape(-1, 3) if d.size != 3 else d.reshape(1, 3), (n, 3)).copy()
        s = np.broadcast_to(np.asarray(self.strength_u, dtype=float).ravel()
                            if np.ndim(self.strength_u) else np.asarray([self.strength_u], float), (n,)).copy()
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(d)) and np.all(np.isfinite(s))):
            raise InputError("seeds: positions, directions and strengths must be finite")
        if np.any(s < 0):
            raise InputError(f"seeds: air-kerma strength must be >= 0 U, got min {s.min():g} U")
        norm = np.linalg.norm(d, axis=1)
        if np.any(norm < 1e-9):
            raise InputError("seeds: a seed direction has zero length")
        self.positions_mm, self.directions, self.strength_u = p, d / norm[:, None], s

    def __len__(self) -> int:
        return int(self.positions_mm.shape[0])


# ----------------------------------------------------------------------------- kernels
@njit(cache=True, inline="never")
def _brachy_lerp_index(x: float, table: np.ndarray):
    """Index i and weight t of x between table[i] and table[i+1] (clamped to the table)."""
    n = table.shape[0]
    if x <= table[0]:
        return 0, 0.0
    if x >= table[n - 1]:
        return n - 2, 1.0
    i = 0
    while table[i + 1] < x:
        i += 1
    return i, (x - table[i]) / (table[i + 1] - table[i])


@njit(cache=True, inline="never")
def _brachy_unit_rate(dx: float, dy: float, dz: float, ux: float, uy: float, uz: float, length_cm: float,
                      g_ref: float, lam: float, g_r: np.ndarray, g_ln: np.ndarray, f_r: np.ndarray,
                      f_t: np.ndarray, f_v: np.ndarray, phi_r: np.ndarray, phi_v: np.ndarray,
                      rmin_away_cm: float, point: bool) -> float:
    """Dose rate (cGy/h) per unit S_K at offset (dx, dy, dz) cm from a seed with axis (ux, uy, uz)."""
    along = dx * ux + dy * uy + dz * uz
    r2 = dx * dx + dy * dy + dz * dz
    away2 = r2 - along * along
    away = math.sqrt(away2) if away2 > 0.0 else 0.0
    # inside the capsule radius next to the active line the functions are undefined: move to the surface
    if away < rmin_away_cm and abs(along) < 0.5 * length_cm + 0.02:
        away = rmin_away_cm
    r2 = away * away + along * along
    r = math.sqrt(r2)
    if r < rmin_away_cm:
        r = rmin_away_cm
        r2 = r * r
    # radial dose function: log-linear inside, g(r_min) below, log-linear extrapolation beyond
    n = g_r.shape[0]
    if r <= g_r[0]:
        lg = g_ln[0]
    else:
        if r >= g_r[n - 1]:
            i = n - 2
        else:
            i = 0
            while g_r[i + 1] < r:
                i += 1
        lg = g_ln[i] + (r - g_r[i]) / (g_r[i + 1] - g_r[i]) * (g_ln[i + 1] - g_ln[i])
    g = math.exp(lg)
    L = length_cm
    # transverse-axis line geometry G_L(r, 90) is needed by both formalisms
    if point:
        beta90 = 2.0 * math.atan2(0.5 * L, r)
        g90 = beta90 / (L * r)
        i, t = _brachy_lerp_index(r, phi_r)
        phi = phi_v[i] + t * (phi_v[i + 1] - phi_v[i])
        # G_P(r)/G_P(r0) * g_P(r) = G_L(r,90)/G_L(r0,90) * g_L(r)
        return lam * g90 / g_ref * g * phi
    if away > 1e-9:
        geo = math.atan2(L * away, r2 - 0.25 * L * L) / (L * away)
    else:  # on the axis beyond the active length: the limit of beta / (L r sin theta)
        geo = 1.0 / (r2 - 0.25 * L * L)
    theta = math.degrees(math.atan2(away, abs(along)))  # folded onto 0..90 deg (symmetric source)
    ir, tr = _brachy_lerp_index(r, f_r)
    it, tt = _brachy_lerp_index(theta, f_t)
    f0 = f_v[ir, it] + tt * (f_v[ir, it + 1] - f_v[ir, it])
    f1 = f_v[ir + 1, it] + tt * (f_v[ir + 1, it + 1] - f_v[ir + 1, it])
    f = f0 + tr * (f1 - f0)
    return lam * geo / g_ref * g * f


@njit(cache=True, parallel=True)
def _brachy_sum_kernel(points, pos, axis, sk, table, inv_h, length_cm, g_ref, lam, g_r, g_ln, f_r, f_t, f_v,
                       phi_r, phi_v, rmin_away_cm, point, exact):
    n = points.shape[0]
    m = pos.shape[0]
    nt = table.shape[0] - 1
    rmin2 = rmin_away_cm * rmin_away_cm
    out = np.zeros(n)
    for k in prange(n):
        acc = 0.0
        px, py, pz = points[k, 0], points[k, 1], points[k, 2]
        for j in range(m):
            if sk[j] == 0.0:
                continue
            dx, dy, dz = px - pos[j, 0], py - pos[j, 1], pz - pos[j, 2]
            ux, uy, uz = axis[j, 0], axis[j, 1], axis[j, 2]
            along = dx * ux + dy * uy + dz * uz
            r2 = dx * dx + dy * dy + dz * dz
            away2 = r2 - along * along
            a = abs(along) * inv_h
            b = math.sqrt(away2) * inv_h if away2 > 0.0 else 0.0
            if exact or a >= nt or b >= nt:
                v = _brachy_unit_rate(dx, dy, dz, ux, uy, uz, length_cm, g_ref, lam, g_r, g_ln, f_r, f_t, f_v,
                                      phi_r, phi_v, rmin_away_cm, point)
            else:
                # bilinear lookup of D * r^2 (smooth) and the exact inverse square
                i = int(a)
                jj = int(b)
                ta = a - i
                tb = b - jj
                q0 = table[i, jj] + tb * (table[i, jj + 1] - table[i, jj])
                q1 = table[i + 1, jj] + tb * (table[i + 1, jj + 1] - table[i + 1, jj])
                v = (q0 + ta * (q1 - q0)) / (r2 if r2 > rmin2 else rmin2)
            acc += sk[j] * v
        out[k] = acc
    return out


@njit(cache=True, parallel=True)
def _brachy_matrix_kernel(points, pos, axis, table, inv_h, length_cm, g_ref, lam, g_r, g_ln, f_r, f_t, f_v,
                          phi_r, phi_v, rmin_away_cm, point):
    n = points.shape[0]
    m = pos.shape[0]
    nt = table.shape[0] - 1
    rmin2 = rmin_away_cm * rmin_away_cm
    out = np.empty((n, m), dtype=np.float32)
    for k in prange(n):
        px, py, pz = points[k, 0], points[k, 1], points[k, 2]
        for j in range(m):
            dx, dy, dz = px - pos[j, 0], py - pos[j, 1], pz - pos[j, 2]
            ux, uy, uz = axis[j, 0], axis[j, 1], axis[j, 2]
            along = dx * ux + dy * uy + dz * uz
            r2 = dx * dx + dy * dy + dz * dz
            away2 = r2 - along * along
            a = abs(along) * inv_h
            b = math.sqrt(away2) * inv_h if away2 > 0.0 else 0.0
            if a >= nt or b >= nt:
                v = _brachy_unit_rate(dx, dy, dz, ux, uy, uz, length_cm, g_ref, lam, g_r, g_ln, f_r, f_t, f_v,
                                      phi_r, phi_v, rmin_away_cm, point)
            else:
                i = int(a)
                jj = int(b)
                ta = a - i
                tb = b - jj
                q0 = table[i, jj] + tb * (table[i, jj + 1] - table[i, jj])
                q1 = table[i + 1, jj] + tb * (table[i + 1, jj + 1] - table[i + 1, jj])
                v = (q0 + ta * (q1 - q0)) / (r2 if r2 > rmin2 else rmin2)
            out[k, j] = v
    return out


@njit(cache=True, parallel=True)
def _brachy_build_table(n, h, length_cm, g_ref, lam, g_r, g_ln, f_r, f_t, f_v, phi_r, phi_v, rmin_away_cm,
                        point):
    out = np.empty((n + 1, n + 1))
    for i in prange(n + 1):
        for j in range(n + 1):
            along = i * h
            away = j * h
            r2 = along * along + away * away
            rmin2 = rmin_away_cm * rmin_away_cm
            out[i, j] = _brachy_unit_rate(away, 0.0, along, 0.0, 0.0, 1.0, length_cm, g_ref, lam, g_r, g_ln, f_r,
                                          f_t, f_v, phi_r, phi_v, rmin_away_cm, point) * (r2 if r2 > rmin2 else rmin2)
    return out


# ----------------------------------------------------------------------------- model
class Tg43Model:
    """A seed model ready for dose calculation.

    Parameters
    ----------
    source : SourceData
    geometry : SourceGeometry
        ``LINE`` (2D, default) or ``POINT`` (1D approximation).
    """

    def __init__(self, source: SourceData, geometry: SourceGeometry | str = SourceGeometry.LINE):
        try:
            self.geometry = SourceGeometry(geometry)
        except ValueError:
            raise InputError(f"source geometry must be 'line' or 'point', got {geometry!r}") from None
        self.source = source
        L = source.active_length_cm
        self._g_ref = float(geometry_line(np.array([R0_CM]), np.array([math.pi / 2]), L)[0])
        # the capsule radius: no dose point is closer to the axis than the seed's surface
        self._rmin_cm = max(0.5 * source.seed_diameter_mm / 10.0, 0.02)
        self._args = (float(L), self._g_ref, float(source.dose_rate_constant),
                      np.ascontiguousarray(source.g_r_cm, float), np.ascontiguousarray(np.log(source.g_l), float),
                      np.ascontiguousarray(source.f_r_cm, float), np.ascontiguousarray(source.f_theta_deg, float),
                      np.ascontiguousarray(source.f_table, float), np.ascontiguousarray(source.phi_r_cm, float),
                      np.ascontiguousarray(source.phi_an, float), float(self._rmin_cm),
                      self.geometry is SourceGeometry.POINT)
        self._table: np.ndarray | None = None

    # The lookup table of D * r^2 over (|along|, away): 0.25 mm steps to 10 cm.  D * r^2 is smooth
    # (the inverse square is divided out), so bilinear interpolation stays within 0.5 % of the
    # exact evaluation beyond 2 mm from the seed centre (tests/test_brachy_tg43.py).
    TABLE_STEP_CM = 0.025
    TABLE_EXTENT_CM = 10.0

    def _lookup(self) -> tuple[np.ndarray, float]:
        if self._table is None:
            n = int(round(self.TABLE_EXTENT_CM / self.TABLE_STEP_CM))
            self._table = _brachy_build_table(n, self.TABLE_STEP_CM, *self._args)
        return self._table, 1.0 / self.TABLE_STEP_CM

    @staticmethod
    def _points_cm(points_mm) -> np.ndarray:
        p = np.asarray(points_mm, dtype=float).reshape(-1, 3)
        if not np.all(np.isfinite(p)):
            raise InputError("dose points must be finite")
        return np.ascontiguousarray(p / 10.0)

    def dose_rate_cgy_h(self, points_mm, seeds: SeedSet, exact: bool = True) -> np.ndarray:
        """Initial dose rate (cGy/h) in water at ``points_mm`` (N, 3) from all ``seeds``.

        ``exact=False`` uses the precomputed lookup table (about 10 times faster, for dose grids).
        """
        pts = self._points_cm(points_mm)
        if len(seeds) == 0:
            return np.zeros(pts.shape[0])
        table, inv_h = self._lookup() if not exact else (np.zeros((2, 2)), 1.0)
        return _brachy_sum_kernel(pts, np.ascontiguousarray(seeds.positions_mm / 10.0),
                                  np.ascontiguousarray(seeds.directions), np.ascontiguousarray(seeds.strength_u),
                                  table, inv_h, *self._args, bool(exact))

    def total_dose_gy(self, points_mm, seeds: SeedSet, exact: bool = True) -> np.ndarray:
        """Total dose (Gy) of a permanent implant: initial dose rate x mean life."""
        return self.dose_rate_cgy_h(points_mm, seeds, exact) * self.source.total_dose_gy_per_cgy_h()

    def unit_dose_matrix_gy(self, points_mm, positions_mm, directions) -> np.ndarray:
        """(N points x M candidate seeds) total dose (Gy) per U of air-kerma strength, float32."""
        pts = self._points_cm(points_mm)
        pos = np.ascontiguousarray(np.asarray(positions_mm, float).reshape(-1, 3) / 10.0)
        d = np.asarray(directions, float).reshape(-1, 3)
        d = np.ascontiguousarray(np.broadcast_to(d, pos.shape) / np.linalg.norm(d, axis=1, keepdims=True))
        table, inv_h = self._lookup()
        m = _brachy_matrix_kernel(pts, pos, d, table, inv_h, *self._args)
        m *= np.float32(self.source.total_dose_gy_per_cgy_h())
        return m

    def dose_grid_gy(self, grid, seeds: SeedSet, mask: np.ndarray | None = None) -> np.ndarray:
        """Total dose (Gy) on every voxel of ``grid`` (or only where ``mask``; 0 elsewhere)."""
        if mask is None:
            pts = grid.voxel_centers_mm()
            return self.total_dose_gy(pts, seeds, exact=False).reshape(grid.shape)
        flat = np.flatnonzero(np.asarray(mask).ravel())
        out = np.zeros(grid.size)
        out[flat] = self.total_dose_gy(grid.voxel_centers_mm(flat), seeds, exact=False)
        return out.reshape(grid.shape)

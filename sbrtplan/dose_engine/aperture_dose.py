"""Dose per MU of static MLC apertures at points: the forward dose's sub-field kernels.

One job: the dose of static sub-fields (an aperture, its jaws, MU), each
integrated exactly over its aperture: for every kernel term, the sum over leaf pairs of
error-function products over the rectangle (leaf-pair width clipped by the Y
jaws) x (open interval between the leaf tips clipped by the X jaws), plus the
leaf transmission times the jaw-limited field and the jaw transmission times
the collimator's full field:

    fluence = (1 - T_mlc) * open + (T_mlc - T_jaw) * jaws + T_jaw * full.

Beamlets are not involved, so an optimised fluence and its leaf sequence can
be compared on the same footing.  Kernel terms wider than 8 mm (far scatter,
head scatter, contamination) vary slowly across the field; for them the
blurred aperture is tabulated once per aperture (2.5 mm raster, 18 widths from
8 to 180 mm) and interpolated, which agrees with the exact sums to < 0.3 % of
the maximum (tested) and makes a sub-field about three times cheaper.  The same model terms, ray tracing and
heterogeneity correction as the influence matrix are used
(:mod:`sbrtplan.dose_engine.pencil`), so a beam whose aperture opens exactly
a set of beamlets gives the matrix's dose (tested).

Sub-fields that share the source position (the same gantry angle, couch and
isocentre; collimators may differ) are evaluated together: one fan table over
the union of their jaws and one evaluation of each point's depth, densities
and kernel terms serve all of them (for two arcs this halves the ray tracing
and the per-point geometry; tested against every sub-field evaluated alone at
twice the angular resolution).  For a few points (``_FEW_POINTS``: the MU
check's point doses) the fan covers only the points and the broad terms are
integrated exactly, without tables.

:func:`~sbrtplan.dose_engine.forward.forward_dose` (``method="control_points"``) samples
the beams into these sub-fields.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from scipy.special import erf

from ..beams import Aperture, BeamGeometry
from ..case import Grid
from ..errors import GeometryError, InputError
from .geometry_kernels import _erf_sat, beam_params, sorted_bisect_left, sorted_bisect_right, voxel_frame
from .influence import Correction, _fan_for
from .model import BeamModel, ModelKind
from .pencil import gaussian_terms, horn, pack_gaussian, scaling_lengths
from .raytrace import fan_lookup

# Margin (mm, isocentre plane) around the jaws over which rays are traced for
# the depth lookup; beyond it the edge rays' depths are used (only the low,
# smooth tails of the broad kernel terms reach there).
_FAN_MARGIN_MM = 60.0
_NEGLIGIBLE_SIGMAS = 6.0


@njit(cache=True)
def _frac(lo, hi, x, c):
    """Fraction of a Gaussian (centre x, 1/(sqrt(2) sigma) = c) inside [lo, hi]."""
    return 0.5 * (_erf_sat((hi - x) * c) - _erf_sat((lo - x) * c))


# Broad kernel terms (sigma >= _TABLE_SIGMA_MIN_MM: far scatter, head scatter, contamination) vary slowly
# across the aperture; for them the blurred aperture is tabulated once per aperture on a BEV raster for a
# geometric ladder of widths and interpolated (bilinear in u, v; linear in log sigma).  Narrow terms
# (primary, near scatter), which shape the penumbra, are always integrated exactly.
_TABLE_SIGMA_MIN_MM = 8.0
_TABLE_SIGMA_RATIO = 1.2
_TABLE_N_SIGMA = 18          # 8 mm ... 180 mm
_TABLE_STEP_MM = 2.5
_TABLE_REACH_MM = 300.0
# Up to this many points, broad terms are integrated exactly (no tables) and the fan covers only the points.
_FEW_POINTS = 512
# table parameters under which no term qualifies for the tables (exact integration everywhere)
_NO_TABLE_PARAMS = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 1e30, 1.0, 2.0])
_NO_TABLES = np.zeros((2, 2, 2, 2), dtype=np.float32)


@njit(cache=True)
def _table_at(tables, f, tp, u, v, sig):
    u0, du, nu, v0, dv, nv = tp[0], tp[1], int(tp[2]), tp[3], tp[4], int(tp[5])
    fu = (u - u0) / du
    fv = (v - v0) / dv
    if fu < 0.0 or fv < 0.0 or fu > nu - 1 or fv > nv - 1:
        return 0.0
    fs = math.log(sig / tp[6]) / tp[7]
    ns = int(tp[8])
    if fs < 0.0:
        fs = 0.0
    if fs > ns - 1:
        fs = ns - 1.0
    iu = min(int(fu), nu - 2)
    iv = min(int(fv), nv - 2)
    ks = min(int(fs), ns - 2)
    wu = fu - iu
    wv = fv - iv
    ws = fs - ks
    r = 0.0
    for dk in range(2):
        t = tables[f, ks + dk]
        val = ((1 - wv) * ((1 - wu) * t[iv, iu] + wu * t[iv, iu + 1])
               + wv * ((1 - wu) * t[iv + 1, iu] + wu * t[iv + 1, iu + 1]))
        r += (ws if dk else 1.0 - ws) * val
    return r


@njit(cache=True)
def _aperture_sum(u, v, nt, nk, amp, sx, sy, yb, x1, x2, jaw, p_lo, p_hi, t_mlc, t_jaw, full, tables, tp):
    """Relative fluence of one aperture blurred by the point's kernel terms, summed with their amplitudes.

    Per kernel term: the open area is summed over the leaf pairs within 6 sigma
    of the point (erf at each pair boundary computed once); a term whose
    Gaussian lies more than 6 sigma outside the jaws only sees the jaw
    transmission; broad terms are read from the aperture's tables.
    """
    inv2 = 1.0 / math.sqrt(2.0)
    dxo = max(jaw[0] - u, u - jaw[1], 0.0)
    dyo = max(jaw[2] - v, v - jaw[3], 0.0)
    tot = 0.0
    for t in range(nt):
        a = amp[t]
        if a == 0.0:
            continue
        sxt = sx[t]
        syt = sy[t]
        if sxt >= tp[6] and syt >= tp[6] - 1.0:
            # tabulated: open, jaw-limited and full field of this aperture together
            fam = 0 if t < nk else 1
            tot += a * _table_at(tables, fam, tp, u, v, sxt)
            continue
        cx = inv2 / sxt
        cy = inv2 / syt
        ff = 1.0
        if t_jaw > 0.0:
            ff = _frac(full[0], full[1], u, cx) * _frac(full[2], full[3], v, cy)
        if dxo > 6.0 * sxt or dyo > 6.0 * syt:
            tot += a * t_jaw * ff
            continue
        fj = _frac(jaw[0], jaw[1], u, cx) * _frac(jaw[2], jaw[3], v, cy)
        reach = 6.0 * syt
        q_lo = max(p_lo, sorted_bisect_right(yb, v - reach) - 1)
        q_hi = min(p_hi, sorted_bisect_left(yb, v + reach))
        op = 0.0
        if q_hi > q_lo:
            e_lo = _erf_sat((max(yb[q_lo], jaw[2]) - v) * cy)
            for p in range(q_lo, q_hi):
                e_hi = _erf_sat((min(yb[p + 1], jaw[3]) - v) * cy)
                xa = max(x1[p], jaw[0])
                xb = min(x2[p], jaw[1])
                if xb > xa:
                    op += 0.5 * (e_hi - e_lo) * _frac(xa, xb, u, cx)
                e_lo = e_hi
        tot += a * ((1.0 - t_mlc) * op + (t_mlc - t_jaw) * fj + t_jaw * ff)
    return tot


@njit(cache=True, parallel=True)
def _apertures_kernel(pts, bps, gp, mode, fp, table, entry, lengths, yb, x1s, x2s, jaws, p_rng, t_mlc, t_jaw, full,
                      scales, tables, tps, rows, out):
    """Add scales[a] x dose per MU of aperture ``a`` to ``out[rows[a]]`` (one value per point).

    All apertures share the source position and beam axis (same gantry, couch
    and isocentre; collimators may differ): the point's depth, densities and
    kernel terms are computed once, in the frame ``bps[0]`` of the fan table,
    and each aperture is integrated in its own collimator frame.  ``rows``
    sends each aperture's dose to a row of ``out`` (all 0: the sum).
    """
    n = pts.shape[0]
    n_len = lengths.size
    n_ap = x1s.shape[0]
    nblk = (n + 255) // 256
    nk = int(gp[3])
    sad = bps[0, 12]
    for b in prange(nblk):
        amp = np.empty(8)
        sx = np.empty(8)
        sy = np.empty(8)
        rho = np.ones(8)
        for i in range(b * 256, min(n, (b + 1) * 256)):
            u, v, dist, s = voxel_frame(pts[i, 0], pts[i, 1], pts[i, 2], bps[0])
            rad, ent = fan_lookup(fp, table, entry, u, v, s, lengths, n_len, rho)
            if mode == 2:
                rad = s - ent if s > ent else 0.0
                for k in range(n_len):
                    rho[k] = 1.0
            elif mode == 1:
                for k in range(n_len):
                    rho[k] = 1.0
            nt = gaussian_terms(gp, rad, dist, rho, amp, sx, sy)
            isq = sad * sad / (s * s)
            for a in range(n_ap):
                if a > 0:
                    u, v, _, _ = voxel_frame(pts[i, 0], pts[i, 1], pts[i, 2], bps[a])
                tot = _aperture_sum(u, v, nt, nk, amp, sx, sy, yb, x1s[a], x2s[a], jaws[a], p_rng[a, 0],
                                    p_rng[a, 1], t_mlc, t_jaw, full, tables[a], tps[a])
                out[rows[a], i] += scales[a] * tot * horn(gp, u, v) * isq


def _gaussian_only(model: BeamModel, what: str) -> np.ndarray:
    if model.kind is not ModelKind.GAUSSIAN:
        raise InputError(f"{what}: needs a Gaussian beam model (got {model.name}, {model.kind.value}); "
                         "use influence_matrix for matRad machines")
    return pack_gaussian(model)



def _s_range(pts: np.ndarray, geom: BeamGeometry) -> tuple[float, float]:
    src = np.asarray(geom.source_mm)
    lo, hi = np.inf, 0.0
    for a in range(0, pts.shape[0], 1 << 20):
        d = np.sqrt(np.sum((pts[a:a + (1 << 20)] - src) ** 2, axis=1))
        lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
    return lo, hi


def aperture_dose_per_mu(dens: np.ndarray, grid: Grid, pts: np.ndarray, geometry: BeamGeometry, aperture: Aperture,
                         leaf_boundaries_mm: np.ndarray, t_mlc: float, model: BeamModel,
                         correction: Correction = Correction.LATERAL, out: np.ndarray | None = None,
                         scale: float = 1.0, s_range: tuple[float, float] | None = None) -> np.ndarray:
    """Dose per MU (Gy, per fraction) of one static aperture at points ``pts`` (N, 3); added to ``out``."""
    return _apertures_dose(dens, grid, pts, [geometry], [aperture], leaf_boundaries_mm, t_mlc, model, correction,
                           out=out, scales=[scale], s_range=s_range)


def _apertures_dose(dens: np.ndarray, grid: Grid, pts: np.ndarray, geometries: list[BeamGeometry],
                    apertures: list[Aperture], leaf_boundaries_mm: np.ndarray, t_mlc: float, model: BeamModel,
                    correction: Correction = Correction.LATERAL, out: np.ndarray | None = None,
                    scales=None, s_range: tuple[float, float] | None = None, rows=None) -> np.ndarray:
    """``sum_a scales[a]`` x dose per MU of apertures sharing one source position and beam axis.

    ``geometries[a]`` differ at most in the collimator angle (checked): one fan
    table, traced in the frame of ``geometries[0]`` over the union of the
    apertures' jaws, and one evaluation of each point's depth and kernel terms
    serve every aperture.  With ``rows``, ``out`` is 2-D and aperture ``a``
    adds to ``out[rows[a]]`` (doses kept apart per beam or arc sector).
    """
    gp = _gaussian_only(model, "aperture dose")
    yb = np.ascontiguousarray(leaf_boundaries_mm, dtype=np.float64)
    if out is None:
        out = np.zeros(pts.shape[0] if rows is None else (int(np.max(rows)) + 1, pts.shape[0]), dtype=np.float64)
    scales = np.ones(len(apertures)) if scales is None else np.asarray(scales, dtype=np.float64)
    g0 = geometries[0]
    keep = []
    for k, (g, ap) in enumerate(zip(geometries, apertures)):
        if yb.size != ap.n_pairs + 1:
            raise GeometryError(f"aperture has {ap.n_pairs} leaf pairs but the MLC model {yb.size - 1}")
        if k and (np.max(np.abs(np.asarray(g.source_mm) - np.asarray(g0.source_mm))) > 1e-6
                  or np.max(np.abs(np.asarray(g.isocenter_mm) - np.asarray(g0.isocenter_mm))) > 1e-6):
            raise GeometryError("apertures evaluated together must share the source position and isocentre")
        jx, jy = ap.jaw_x_mm, ap.jaw_y_mm
        if jx[1] > jx[0] and jy[1] > jy[0] and scales[k] != 0.0:
            keep.append(k)
    if not keep:
        return out
    g0 = geometries[keep[0]]
    # the union of the jaws (plus the fan margin), in the fan's frame
    m = _FAN_MARGIN_MM
    corners = []
    for k in keep:
        jx, jy = apertures[k].jaw_x_mm, apertures[k].jaw_y_mm
        c = np.array([[jx[0] - m, jy[0] - m, 0.0], [jx[1] + m, jy[0] - m, 0.0], [jx[0] - m, jy[1] + m, 0.0],
                      [jx[1] + m, jy[1] + m, 0.0]])
        corners.append(c if k == keep[0] else g0.to_beam(geometries[k].from_beam(c)))
    corners = np.vstack(corners)
    u_rng = [corners[:, 0].min(), corners[:, 0].max()]
    v_rng = [corners[:, 1].min(), corners[:, 1].max()]
    small = pts.shape[0] <= _FEW_POINTS
    if small and pts.shape[0]:
        # a few points (point-dose checks): rays only where the points project; no tables, whose
        # construction would cost more than integrating the broad terms exactly at each point
        uv, _ = g0.project_to_isocenter_plane(pts)
        u_rng = [uv[:, 0].min() - 2.0, uv[:, 0].max() + 2.0]
        v_rng = [uv[:, 1].min() - 2.0, uv[:, 1].max() + 2.0]
    lo, hi = s_range if s_range is not None else _s_range(pts, g0)
    fan = _fan_for(dens, grid, g0, tuple(u_rng), tuple(v_rng), lo, hi, float(scaling_lengths(gp).max()))
    xmax = 200.0
    full = np.array([-xmax, xmax, min(yb[0], -xmax), max(yb[-1], xmax)], dtype=np.float64)
    t_jaw = float(model.jaw_transmission)
    n_ap = len(keep)
    x1s = np.empty((n_ap, yb.size - 1))
    x2s = np.empty((n_ap, yb.size - 1))
    jaws = np.empty((n_ap, 4))
    p_rng = np.empty((n_ap, 2), dtype=np.int64)
    bps = np.empty((n_ap, 16))
    tps = np.empty((n_ap, 9))
    for j, k in enumerate(keep):
        ap = apertures[k]
        x1s[j] = ap.leaf_x1_mm
        x2s[j] = ap.leaf_x2_mm
        jaws[j] = [*ap.jaw_x_mm, *ap.jaw_y_mm]
        # leaf pairs inside the Y jaws
        p_rng[j, 0] = max(int(np.searchsorted(yb, jaws[j, 2], side="right")) - 1, 0)
        p_rng[j, 1] = min(int(np.searchsorted(yb, jaws[j, 3], side="left")), yb.size - 1)
        bps[j] = beam_params(geometries[k])
        tps[j] = _NO_TABLE_PARAMS if small else _table_params(jaws[j])
    if small:
        # no tables on the few-point path: one placeholder per aperture
        tables = np.zeros((n_ap, *_NO_TABLES.shape), dtype=np.float32)
    else:
        # built in place, each aperture in its own corner of one array (no copies: at hundreds of
        # sub-fields per arc the copies cost as much as a tenth of the dose)
        nv, nu = int(tps[:, 5].max()), int(tps[:, 2].max())
        tables = np.zeros((n_ap, 2, _TABLE_N_SIGMA, nv, nu), dtype=np.float32)
        for j in range(n_ap):
            _aperture_tables(gp, yb, x1s[j], x2s[j], jaws[j], float(t_mlc), t_jaw, full, tps[j],
                             tables[j, :, :, :int(tps[j, 5]), :int(tps[j, 2])])
    if rows is None:
        out2 = out[None, :]
        row_of = np.zeros(n_ap, dtype=np.int64)
    else:
        out2 = out
        row_of = np.ascontiguousarray(np.asarray(rows, dtype=np.int64)[keep])
    _apertures_kernel(pts, bps, gp, Correction(correction).value, fan.params, fan.table, fan.entry_mm,
                      scaling_lengths(gp), yb, x1s, x2s, jaws, p_rng, float(t_mlc), t_jaw, full,
                      np.ascontiguousarray(scales[keep]), tables, tps, row_of, out2)
    return out


def _table_params(jaw) -> np.ndarray:
    """Lattice of an aperture's tables: [u0, du, nu, v0, dv, nv, sigma_min, log(ratio), n_sigma]."""
    r = _TABLE_REACH_MM
    h = _TABLE_STEP_MM
    u0, v0 = jaw[0] - r, jaw[2] - r
    nu = int(math.ceil((jaw[1] + r - u0) / h)) + 1
    nv = int(math.ceil((jaw[3] + r - v0) / h)) + 1
    return np.array([u0, h, nu, v0, h, nv, _TABLE_SIGMA_MIN_MM, math.log(_TABLE_SIGMA_RATIO), _TABLE_N_SIGMA],
                    dtype=np.float64)


def _aperture_tables(gp: np.ndarray, yb, x1, x2, jaw, t_mlc: float, t_jaw: float, full, tp: np.ndarray,
                     out: np.ndarray) -> None:
    """Blurred-aperture tables of the broad kernel terms (family 0: photon components, whose y width
    follows from x through the source size; family 1: isotropic terms), added to the zeroed ``out``
    of shape (2, n_sigma, nv, nu) on the lattice ``tp`` (:func:`_table_params`).

    The aperture is a sum of rectangles (each open leaf pair, the jaw-limited field under the
    leaves, the collimator's full field under the jaws), and a Gaussian blur of a rectangle is the
    outer product of two error-function profiles; so each table is ``FY^T @ FX`` with one row per
    rectangle: a matrix product (BLAS) instead of an element-wise sum over the raster per pair.
    """
    nu, nv = int(tp[2]), int(tp[5])
    u = tp[0] + tp[1] * np.arange(nu)
    v = tp[3] + tp[4] * np.arange(nv)
    y0 = np.maximum(yb[:-1], jaw[2])
    y1 = np.minimum(yb[1:], jaw[3])
    xa = np.maximum(np.asarray(x1, float), jaw[0])
    xb = np.minimum(np.asarray(x2, float), jaw[1])
    # rectangles: the full field (jaw transmission), the jaw-limited field (leaf transmission on top
    # of it), the open part of each leaf pair (the rest)
    ry0 = np.concatenate([[full[2], jaw[2]], y0])
    ry1 = np.concatenate([[full[3], jaw[3]], y1])
    rxa = np.concatenate([[full[0], jaw[0]], xa])
    rxb = np.concatenate([[full[1], jaw[1]], xb])
    rw = np.concatenate([[t_jaw, t_mlc - t_jaw], np.full(y0.size, 1.0 - t_mlc)])
    keep = (ry1 > ry0) & (rxb > rxa) & (rw != 0.0)
    ry0, ry1, rxa, rxb, rw = ry0[keep], ry1[keep], rxa[keep], rxb[keep], rw[keep]
    if not keep.any():
        return
    sig_x = _TABLE_SIGMA_MIN_MM * _TABLE_SIGMA_RATIO ** np.arange(_TABLE_N_SIGMA)
    sig_y = np.stack([np.sqrt(np.maximum(sig_x ** 2 - gp[1] + gp[2], 1e-6)), sig_x])
    cx = (1.0 / (math.sqrt(2.0) * sig_x))[:, None, None]
    fx = 0.5 * (erf((rxb[None, :, None] - u[None, None, :]) * cx) - erf((rxa[None, :, None] - u[None, None, :]) * cx))
    for f in range(2):
        cy = (1.0 / (math.sqrt(2.0) * sig_y[f]))[:, None, None]
        fy = rw[None, :, None] * 0.5 * (erf((ry1[None, :, None] - v[None, None, :]) * cy)
                                        - erf((ry0[None, :, None] - v[None, None, :]) * cy))
        out[f] += np.matmul(fy.transpose(0, 2, 1), fx)


__all__ = ["aperture_dose_per_mu"]

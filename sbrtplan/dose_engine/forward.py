"""Forward dose: from MLC apertures (final plan dose) and from beamlet fluence maps.

:func:`forward_dose` computes the dose of a :class:`~sbrtplan.beams.BeamSet`.  By default
(``method="fluence"``) each beam -- each group of control-point intervals spanning at most
``ARC_BIN_DEG`` of an arc -- becomes one fluence map, its leaf motion integrated exactly with the
machine's MLC model (:mod:`sbrtplan.dose_engine.fluence`), and one pencil-beam dose is computed
per map (:mod:`sbrtplan.dose_engine.fluence_map_dose`).  The per-control-point path below
(``method="control_points"``) is kept as the reference of the tests and benchmarks, and for point
doses (at most ``_FEW_POINTS`` voxels), where it is the cheaper one:
every beam is split into static sub-fields -- arcs by :func:`arc_samples` on
one grid of absolute gantry angles (``max_gantry_step_deg`` bins, so that two
arcs over the same range sample the same angles), other beams by
:func:`~sbrtplan.beams.sample_delivery` -- and each sub-field's dose per MU is
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

:func:`fluence_dose` computes one beam's dose from a beamlet-weight vector
(MU per beamlet) without building a matrix and without a lateral cut-off.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange
from scipy.special import erf

from .._log import get_logger, timed
from ..beams import Aperture, BeamGeometry, BeamletGrid, BeamSet, sample_delivery
from ..case import Grid
from ..errors import GeometryError, InputError
from .geometry_kernels import _erf_sat, sorted_bisect_left, sorted_bisect_right, beam_params, gaussian_voxel, voxel_frame
from .influence import Correction, _check_inputs, _fan_for, _grid_arrays, _voxel_set
from .model import BeamModel, ModelKind, default_beam_model
from .pencil import gaussian_terms, horn, pack_gaussian, scaling_lengths
from .raytrace import fan_lookup
from .fluence import leaf_rows, unwrapped_gantry
from .fluence_map_dose import forward_fluence

log = get_logger(__name__)

# Margin (mm, isocentre plane) around the jaws over which rays are traced for
# the depth lookup; beyond it the edge rays' depths are used (only the low,
# smooth tails of the broad kernel terms reach there).
_FAN_MARGIN_MM = 60.0
_NEGLIGIBLE_SIGMAS = 6.0




@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
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


@njit(cache=True, parallel=True)
def _fluence_kernel(pts, bp, gp, mode, fp, table, entry, lengths, xe, ye, xc, yc, active_idx, horn_map, cutoff,
                    weights, out):
    n = pts.shape[0]
    nblk = (n + 255) // 256
    nb = xc.size * yc.size
    n_len = lengths.size
    for b in prange(nblk):
        amp = np.empty(8)
        sx = np.empty(8)
        sy = np.empty(8)
        rho = np.ones(8)
        ex = np.empty((8, xe.size))
        ey = np.empty((8, ye.size))
        vals = np.empty(nb, dtype=np.float32)
        cols = np.empty(nb, dtype=np.int32)
        for i in range(b * 256, min(n, (b + 1) * 256)):
            m = gaussian_voxel(pts[i, 0], pts[i, 1], pts[i, 2], bp, gp, mode, fp, table, entry, lengths, n_len,
                               xe, ye, xc, yc, active_idx, horn_map, cutoff, False, amp, sx, sy, rho, ex, ey,
                               vals, cols)
            tot = 0.0
            for k in range(m):
                tot += vals[k] * weights[cols[k]]
            out[i] = tot


def _gaussian_only(model: BeamModel, what: str) -> np.ndarray:
    if model.kind is not ModelKind.GAUSSIAN:
        raise InputError(f"{what}: needs a Gaussian beam model (got {model.name}, {model.kind.value}); "
                         "use influence_matrix for matRad machines")
    return pack_gaussian(model)


def _points(density, grid, voxel_indices):
    vi = _voxel_set(density, grid, voxel_indices)
    return vi, np.ascontiguousarray(grid.voxel_centers_mm(vi), dtype=np.float64)


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


# ------------------------------------------------------------------ arc sampling
def _leaf_state(ap: Aperture) -> np.ndarray:
    return np.concatenate([ap.leaf_x1_mm, ap.leaf_x2_mm, ap.jaw_x_mm, ap.jaw_y_mm]).astype(np.float64)


def arc_samples(beam, bin_deg: float = 1.0, max_leaf_step_mm: float = 5.0):
    """Sub-fields of an arc, at most ``bin_deg`` apart: ``[(gantry_deg, aperture, mu), ...]``.

    Each control-point interval is cut into the fewest equal bins of at most
    ``bin_deg``: each bin is one sub-field at the bin's centre, carrying the
    MU delivered while the gantry crosses the bin (MU are linear in gantry
    angle within a control-point interval) and the aperture interpolated at
    the bin's centre.  Arcs whose control points sit at the same gantry angles
    (the two arcs of a plan, either direction) get the same sample angles, so
    their sub-fields share the source position; and any run of control
    points of an arc (one optimisation sector: ``workflow.vmat``) is sampled
    exactly as within the whole arc, so sectors' doses add up to the arc's.  A bin in which a leaf or
    jaw travels more than ``max_leaf_step_mm`` is split into equal parts, each
    its own sub-field.  Returns None for a beam that is not a monotonic arc
    (the caller then uses :func:`~sbrtplan.beams.sample_delivery`).
    """
    theta = unwrapped_gantry(beam)
    if theta is None:
        return None
    sign = 1.0 if theta[-1] > theta[0] else -1.0
    phi = sign * theta                                   # increasing along the delivery
    mu_int = beam.segment_mu()
    states = [_leaf_state(cp.aperture) for cp in beam.control_points]
    n_pairs = beam.control_points[0].aperture.n_pairs

    def state_at(x: float) -> np.ndarray:
        i = int(np.clip(np.searchsorted(phi, x, side="right") - 1, 0, phi.size - 2))
        t = (x - phi[i]) / (phi[i + 1] - phi[i])
        return (1.0 - t) * states[i] + t * states[i + 1]

    def span(xa: float, xb: float):
        """(centre, mean state, MU) of the delivery between xa < xb."""
        cuts = np.concatenate([[xa], phi[(phi > xa) & (phi < xb)], [xb]])
        mu_tot = 0.0
        acc = np.zeros_like(states[0])
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            i = int(np.clip(np.searchsorted(phi, 0.5 * (c0 + c1), side="right") - 1, 0, phi.size - 2))
            m = mu_int[i] * (c1 - c0) / (phi[i + 1] - phi[i])
            if m > 0:
                mu_tot += m
                acc += m * state_at(0.5 * (c0 + c1))
        travel = np.zeros_like(states[0])
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            travel += np.abs(state_at(c1) - state_at(c0))
        return 0.5 * (xa + xb), (acc / mu_tot if mu_tot > 0 else acc), mu_tot, float(travel.max())

    out = []
    edges = []
    for i in range(phi.size - 1):
        m = max(1, int(math.ceil((phi[i + 1] - phi[i]) / bin_deg - 1e-9)))
        edges.append(phi[i] + (phi[i + 1] - phi[i]) * np.arange(m) / m)
    edges = np.concatenate(edges + [phi[-1:]])
    for xa, xb in zip(edges[:-1], edges[1:]):
        if xb - xa <= 1e-9:
            continue
        centre, st, mu, travel = span(xa, xb)
        n = max(1, int(math.ceil(travel / max_leaf_step_mm - 1e-9)))
        parts = [(centre, st, mu)] if n == 1 else \
            [span(xa + (xb - xa) * q / n, xa + (xb - xa) * (q + 1) / n)[:3] for q in range(n)]
        for c, st_c, mu_c in parts:
            if mu_c <= 0:
                continue
            ap = Aperture(st_c[:n_pairs].copy(), st_c[n_pairs:2 * n_pairs].copy(),
                          (float(st_c[2 * n_pairs]), float(st_c[2 * n_pairs + 1])),
                          (float(st_c[2 * n_pairs + 2]), float(st_c[2 * n_pairs + 3])))
            out.append(((sign * c) % 360.0, ap, float(mu_c)))
    return out


#: Largest gantry span (degrees) of the control-point intervals in one fluence map of an arc: one
#: pencil-beam dose per map (two intervals of the usual 2-degree control-point spacing).
ARC_BIN_DEG = 4.0

#: Largest number of apertures evaluated together (tables held in memory at once).
_MAX_GROUP = 16


def forward_dose(density: np.ndarray, grid: Grid, beam_set: BeamSet, *, model: BeamModel | None = None,
                 voxel_indices: np.ndarray | None = None, max_gantry_step_deg: float = 1.0,
                 max_leaf_step_mm: float = 2.0, correction: Correction = Correction.LATERAL,
                 progress: Callable[[int, int], None] | None = None,
                 method: str | None = None, arc_bin_deg: float | None = None) -> np.ndarray:
    """Total course dose (Gy) of a beam set from its MLC apertures, jaws and MU.

    Arcs are sampled by :func:`arc_samples` on a fixed grid of gantry angles
    (``max_gantry_step_deg``); other beams by
    :func:`~sbrtplan.beams.sample_delivery`.  Sub-fields that share the source
    position (same gantry angle, couch and isocentre; the collimator may
    differ: two arcs over the same range, the segments of a step-and-shoot
    beam) are evaluated together, tracing the fan and computing each voxel's
    depth and kernel terms once for all of them.

    Parameters
    ----------
    density : (nz, ny, nx) relative electron density on ``grid``.
    grid : Grid
    beam_set : BeamSet
        Beams with control points (MU per fraction).
    model : BeamModel, optional
        Gaussian beam model (default: the shipped generic 6 MV).
    voxel_indices : array of int, optional
        Voxels to compute (default: density > 0.05).
    max_gantry_step_deg : float
        Arc sampling step.
    max_leaf_step_mm : float
        Largest leaf or jaw motion within one sub-field (dynamic beams and arcs).
    correction : Correction
    progress : callable(done, total), optional
        Called after each group of maps (sub-fields).
    method : {None, "fluence", "control_points"}
        ``None`` (default): ``"fluence"``, or ``"control_points"`` for at most 512 voxels (point
        doses, integrated exactly without tables).
        ``"fluence"``: one fluence map per beam and per ``arc_bin_deg`` gantry bin of an
        arc, leaf motion integrated exactly (:mod:`~sbrtplan.dose_engine.fluence`), one pencil-beam
        dose per map.  ``"control_points"``: the reference, every sub-field of
        ``max_gantry_step_deg`` / ``max_leaf_step_mm`` computed as a static aperture.  Both use the
        machine's MLC leakage (``BeamModel.mlc_for``: transmission, dosimetric leaf gap,
        tongue-and-groove).
    arc_bin_deg : float, optional
        Gantry bin of the fluence maps of an arc (default ``ARC_BIN_DEG``).

    Returns
    -------
    (nz, ny, nx) float64 array: dose per fraction x ``beam_set.n_fractions``;
    0 outside the voxel set.
    """
    vi, acc = _forward(density, grid, beam_set, model, voxel_indices, max_gantry_step_deg, max_leaf_step_mm,
                       correction, progress, per_beam=False, method=method, arc_bin_deg=arc_bin_deg)
    out = np.zeros(grid.size, dtype=np.float64)
    out[vi] = acc * float(beam_set.n_fractions)
    return out.reshape(grid.shape)


def forward_dose_by_beam(density: np.ndarray, grid: Grid, beam_set: BeamSet, voxel_indices: np.ndarray, *,
                         model: BeamModel | None = None, max_gantry_step_deg: float = 1.0,
                         max_leaf_step_mm: float = 2.0, correction: Correction = Correction.LATERAL,
                         progress: Callable[[int, int], None] | None = None,
                 method: str | None = None, arc_bin_deg: float | None = None) -> np.ndarray:
    """Total course dose (Gy) of each beam of ``beam_set`` at ``voxel_indices``, beam by beam.

    The same sampling and dose as :func:`forward_dose` (whose result is the sum
    of the rows), kept apart per beam: an optimiser that re-weights beams or arc
    sectors (see ``workflow.vmat``) gets the delivered dose of each one.

    Parameters
    ----------
    voxel_indices : (n,) array of int
        Flat voxel indices (C order on ``grid``), sorted and unique.
    Other parameters as :func:`forward_dose`.

    Returns
    -------
    (n_beams, n) float64 array.
    """
    vi_in = np.asarray(voxel_indices).reshape(-1)
    if vi_in.size > 1 and not np.all(vi_in[1:] > vi_in[:-1]):
        raise InputError("forward_dose_by_beam: voxel_indices must be sorted and unique")
    _, acc = _forward(density, grid, beam_set, model, vi_in, max_gantry_step_deg, max_leaf_step_mm, correction,
                      progress, per_beam=True, method=method, arc_bin_deg=arc_bin_deg)
    return acc * float(beam_set.n_fractions)


def _forward(density, grid, beam_set, model, voxel_indices, max_gantry_step_deg, max_leaf_step_mm, correction,
             progress, per_beam: bool, method: str | None = None, arc_bin_deg: float | None = None):
    """Voxel indices and the dose per fraction there: summed, or ``(n_beams, n)`` with ``per_beam``."""
    model = default_beam_model() if model is None else model
    _gaussian_only(model, "forward_dose")
    if method is None:
        # a few points (the MU check's point doses) are cheaper per sub-field without tables, exactly
        # integrated, than through the blurred tables of every map
        few = voxel_indices is not None and np.asarray(voxel_indices).size <= _FEW_POINTS
        method = "control_points" if few else "fluence"
    if method == "fluence":
        return forward_fluence(density, grid, beam_set, model, voxel_indices,
                               arc_bin_deg=ARC_BIN_DEG if arc_bin_deg is None else float(arc_bin_deg),
                               correction=correction, progress=progress, per_beam=per_beam)
    if method != "control_points":
        raise InputError(f"forward dose method {method!r}: expected 'fluence' or 'control_points'")
    dens = _check_inputs(density, grid, [0], [0])
    vi, pts = _points(dens, grid, voxel_indices)
    groups: dict[tuple, list] = {}
    n_sub = 0
    for b, beam in enumerate(beam_set.beams):
        if abs(float(beam.sad_mm) - float(model.sad_mm)) > 1e-6:
            raise GeometryError(f"beam '{beam.name}': SAD {beam.sad_mm} mm differs from the beam model's "
                                f"{model.sad_mm} mm")
        subs = arc_samples(beam, max_gantry_step_deg, max_leaf_step_mm) if beam.is_arc else None
        if subs is None:
            subs = [(s.geometry.gantry_deg, s.aperture, s.mu)
                    for s in sample_delivery(beam, b, max_gantry_step_deg=max_gantry_step_deg,
                                             max_leaf_step_mm=max_leaf_step_mm)]
        mlc = model.mlc_for(beam.mlc)
        yb, pa, pb = leaf_rows(mlc.leaf_boundaries_mm, mlc.tongue_groove_mm, -np.inf, np.inf)
        for g, ap, mu in subs:
            if mu <= 0:
                continue
            key = (round(float(g) % 360.0, 6), round(float(beam.couch_deg) % 360.0, 6),
                   tuple(np.round(np.asarray(beam.isocenter_mm, float), 6)), str(beam.patient_position),
                   yb.tobytes(), float(mlc.transmission))
            groups.setdefault(key, []).append((mlc, float(g), _rows_aperture(ap, pa, pb, mlc.dlg_mm), mu, b,
                                               beam, yb))
            n_sub += 1
    batches = [v[i:i + _MAX_GROUP] for v in groups.values() for i in range(0, len(v), _MAX_GROUP)]
    acc = np.zeros((len(beam_set.beams), vi.size) if per_beam else vi.size, dtype=np.float64)
    # source distances of the voxels from their bounding sphere (cheap, slightly generous fan range)
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0)) if pts.size else np.zeros(3)
    radius = float(np.sqrt(np.max(np.sum((pts - centre) ** 2, axis=1)))) if pts.size else 0.0
    with timed(f"forward dose: {len(beam_set.beams)} beams, {n_sub} sub-fields at {len(batches)} source "
               f"positions, {vi.size} voxels", log):
        for k, batch in enumerate(batches):
            mlc0 = batch[0][0]
            geoms = [e[5].geometry(e[1]) for e in batch]
            dc = float(np.linalg.norm(np.asarray(geoms[0].source_mm) - centre))
            s_rng = (max(dc - radius, 1.0), dc + radius)
            _apertures_dose(dens, grid, pts, geoms, [e[2] for e in batch], batch[0][6],
                            mlc0.transmission, model, correction, out=acc, scales=[e[3] for e in batch],
                            s_range=s_rng, rows=[e[4] for e in batch] if per_beam else None)
            if progress is not None:
                progress(k + 1, len(batches))
    return vi, acc


def _rows_aperture(ap: Aperture, pa: np.ndarray, pb: np.ndarray, dlg_mm: float) -> Aperture:
    """A static aperture on the rows of :func:`~sbrtplan.dose_engine.fluence.leaf_rows`: leaf tips
    retracted by half the dosimetric leaf gap; a tongue-and-groove strip open where both pairs are."""
    h = 0.5 * float(dlg_mm)
    x1 = np.maximum(ap.leaf_x1_mm[pa], ap.leaf_x1_mm[pb]) - h
    x2 = np.minimum(ap.leaf_x2_mm[pa], ap.leaf_x2_mm[pb]) + h
    return Aperture(x1, np.maximum(x2, x1), ap.jaw_x_mm, ap.jaw_y_mm)


def fluence_dose(density: np.ndarray, grid: Grid, geometry: BeamGeometry, beamlet_grid: BeamletGrid,
                 fluence_mu: np.ndarray, *, model: BeamModel | None = None, voxel_indices: np.ndarray | None = None,
                 correction: Correction = Correction.LATERAL) -> np.ndarray:
    """Per-fraction dose (Gy) of one beam from beamlet weights (MU), without building a matrix.

    Parameters
    ----------
    fluence_mu : (n_beamlets,) or (n_rows, n_cols) array
        Weights of the active beamlets (row-major) or a full fluence map.

    Returns
    -------
    (nz, ny, nx) float64 array (0 outside the voxel set).  No lateral cut-off.
    """
    model = default_beam_model() if model is None else model
    gp = _gaussian_only(model, "fluence_dose")
    dens = _check_inputs(density, grid, [geometry], [beamlet_grid])
    w = np.asarray(fluence_mu, dtype=np.float64)
    if w.ndim == 2:
        if w.shape != beamlet_grid.shape:
            raise InputError(f"fluence map shape {w.shape} does not match the beamlet grid {beamlet_grid.shape}")
        w = beamlet_grid.from_map(w)
    w = np.ascontiguousarray(w.reshape(-1))
    if w.size != beamlet_grid.n_beamlets:
        raise InputError(f"fluence_dose: expected {beamlet_grid.n_beamlets} beamlet weights, got {w.size}")
    vi, pts = _points(dens, grid, voxel_indices)
    xe, ye, xc, yc, active_idx = _grid_arrays(beamlet_grid)
    uu, vv = np.meshgrid(xc, yc)
    r2 = (uu * uu + vv * vv) * 1e-4
    horn_map = 1.0 + gp[9] * r2 + gp[10] * r2 * r2
    lo, hi = _s_range(pts, geometry)
    m = _FAN_MARGIN_MM
    fan = _fan_for(dens, grid, geometry, (xe[0] - m, xe[-1] + m), (ye[0] - m, ye[-1] + m), lo, hi,
                  float(scaling_lengths(gp).max()))
    acc = np.zeros(vi.size, dtype=np.float64)
    _fluence_kernel(pts, beam_params(geometry), gp, Correction(correction).value, fan.params, fan.table, fan.entry_mm,
                    scaling_lengths(gp), xe, ye, xc, yc, active_idx, horn_map, 1e6, w, acc)
    out = np.zeros(grid.size, dtype=np.float64)
    out[vi] = acc
    return out.reshape(grid.shape)

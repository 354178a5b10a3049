"""MLC fluence maps: the MU-weighted fluence a beam's control points deliver, leaf motion integrated exactly.

A *fluence map* is the fluence (MU) a beam -- or one gantry bin of an arc --
delivers through its MLC and jaws, on cells of the beam's-eye view at the
isocentre plane (IEC BEAM LIMITING DEVICE x along leaf travel, y across):

* columns: ``cell_mm`` (0.5 mm) along leaf travel over the union of the X-jaw
  openings;
* rows: one per leaf pair, narrowed by the tongue-and-groove strips, one strip
  per boundary between adjacent pairs, and split wherever a Y jaw stands at a
  control point (so a static Y jaw edge falls on a row edge).

Between control points leaves, jaws and meterset move linearly with the
cumulative meterset (DICOM).  For one interval and one cell the delivered
fluence is ``MU x (1 / width) x int_t |[lo(t), hi(t)] & [xa, xb]| dt`` where
``lo`` is the largest of the (shifted) leaf tips and X jaw on the -x side and
``hi`` the smallest on the +x side: a piecewise-linear function of ``t``
whose kinks are crossings of two of these linear functions, so the integral
is exact by the trapezoidal rule between crossings (no sub-sampling of the
leaf travel).  A row's Y-jaw coverage is taken at its centre (exact for static
jaws, whose edges are row edges).

The MLC model (:class:`~sbrtplan.beams.MLCModel` fields, values from the
machine file, see ``machines/README.md``):

``transmission``
    leakage through the leaves (intra- and inter-leaf average) as a fraction
    of the open fluence; under the jaws it is replaced by ``jaw_transmission``;
``dlg_mm``
    dosimetric leaf gap: each rounded leaf tip acts as if retracted by half of
    it (the transmission through the rounded end, LoSasso et al. 1998);
``tongue_groove_mm``
    width of the strip along each boundary between adjacent leaf pairs that is
    open only where *both* pairs are open at the same time (the tongue of one
    leaf and the groove of its neighbour overlap there).

The fluence of a map is then

    F = (1 - T) * open + (T - T_jaw) * jaws + T_jaw * MU * full,

``open`` the MU-weighted open time of the leaves within the jaws, ``jaws``
that of the jaw opening alone and ``full`` the collimator's whole field
(+-200 mm), the same model as the static-aperture dose of
:mod:`sbrtplan.dose_engine.aperture_dose`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..errors import GeometryError

#: Fluence cell along leaf travel (mm, isocentre plane).
CELL_MM = 0.5
#: Half-width of the collimator's full field (mm): jaw transmission reaches this far.
FULL_FIELD_MM = 200.0


@dataclass
class FluenceMap:
    """Fluence (MU per fraction) of one beam or arc bin on BEV cells at the isocentre plane.

    ``fluence_mu[r, c]`` is the mean fluence over the cell ``[x_edges_mm[c], x_edges_mm[c+1]] x
    [y_edges_mm[r], y_edges_mm[r+1]]``; outside the cells the fluence is ``full_mu`` (jaw
    transmission times the MU) within +-``FULL_FIELD_MM`` (``full_rect_mm``) and 0 beyond.
    """

    gantry_deg: float
    x_edges_mm: np.ndarray
    y_edges_mm: np.ndarray
    fluence_mu: np.ndarray
    full_mu: float
    full_rect_mm: tuple[float, float, float, float]
    mu: float

    @property
    def x_centers_mm(self) -> np.ndarray:
        return 0.5 * (self.x_edges_mm[1:] + self.x_edges_mm[:-1])

    @property
    def y_centers_mm(self) -> np.ndarray:
        return 0.5 * (self.y_edges_mm[1:] + self.y_edges_mm[:-1])


# ------------------------------------------------------------------ exact time integrals (numba)
@njit(cache=True)
def _fm_gap(f0, f1, nlo, nall, t):
    """``max(0, min(hi(t)) - max(lo(t)))``: functions ``[0, nlo)`` bound below, ``[nlo, nall)`` above."""
    lo = -1e30
    for i in range(nlo):
        x = f0[i] + (f1[i] - f0[i]) * t
        if x > lo:
            lo = x
    hi = 1e30
    for i in range(nlo, nall):
        x = f0[i] + (f1[i] - f0[i]) * t
        if x < hi:
            hi = x
    return hi - lo if hi > lo else 0.0


@njit(cache=True)
def _fm_integral(f0, f1, nlo, nall, ta, tb, buf):
    """Exact ``int_ta^tb max(0, min_hi - max_lo) dt`` for linear functions ``f(t) = f0 + (f1 - f0) t``.

    Between two consecutive crossings of any two of the functions the integrand is linear, so the
    trapezoidal rule over the sorted crossing times is exact.
    """
    n = 0
    buf[n] = ta
    n += 1
    buf[n] = tb
    n += 1
    for i in range(nall):
        di = f1[i] - f0[i]
        for j in range(i + 1, nall):
            den = di - (f1[j] - f0[j])
            if den != 0.0:
                t = (f0[j] - f0[i]) / den
                if ta < t < tb:
                    buf[n] = t
                    n += 1
    # an insertion sort of the few crossing times: numba's np.sort helper is unsafe in cached kernels
    # (its symbol name is shared across modules; see CONTRIBUTING, "Kernels")
    for k in range(1, n):
        t = buf[k]
        m = k - 1
        while m >= 0 and buf[m] > t:
            buf[m + 1] = buf[m]
            m -= 1
        buf[m + 1] = t
    ts = buf[:n]
    tot = 0.0
    g_prev = _fm_gap(f0, f1, nlo, nall, ts[0])
    for k in range(1, n):
        g = _fm_gap(f0, f1, nlo, nall, ts[k])
        tot += 0.5 * (g + g_prev) * (ts[k] - ts[k - 1])
        g_prev = g
    return tot


@njit(cache=True)
def _fm_window(a0, a1, y, ta, tb, below):
    """Sub-interval of ``[ta, tb]`` where the linear ``a(t)`` is below (``below``) or above ``y``."""
    da = a1 - a0
    if da == 0.0:
        ok = a0 < y if below else a0 > y
        return (ta, tb) if ok else (ta, ta)
    tc = (y - a0) / da
    # a(t) < y for t < tc when a rises, for t > tc when it falls
    if (da > 0.0) == below:
        return ta, min(tb, max(ta, tc))
    return max(ta, min(tb, tc)), tb


@njit(cache=True)
def _fm_add_quantity(f0, f1, nlo, nhi, ta, tb, w, xe, out_row, buf):
    """Add ``w x int_ta^tb |[lo, hi] & cell| dt`` to every cell of one row (MU x mm).

    Layout of ``f0``/``f1``: lower bounds in ``[0, nlo)``, a free slot at ``nlo`` (the cell's left
    edge goes there), upper bounds in ``[nlo + 1, nlo + 1 + nhi)``, a free slot after them (right edge).
    """
    lo_min = -1e30
    lo_max = -1e30
    for i in range(nlo):
        va = f0[i] + (f1[i] - f0[i]) * ta
        vb = f0[i] + (f1[i] - f0[i]) * tb
        lo_min = max(lo_min, min(va, vb))
        lo_max = max(lo_max, max(va, vb))
    hi_min = 1e30
    hi_max = 1e30
    for i in range(nlo + 1, nlo + 1 + nhi):
        va = f0[i] + (f1[i] - f0[i]) * ta
        vb = f0[i] + (f1[i] - f0[i]) * tb
        hi_min = min(hi_min, min(va, vb))
        hi_max = min(hi_max, max(va, vb))
    # lo(t) >= lo_min and hi(t) <= hi_max at every t: nothing opens outside [lo_min, hi_max]
    if hi_max <= lo_min:
        return
    x0 = xe[0]
    h = xe[1] - xe[0]
    nc = xe.size - 1
    c_lo = max(int(math.floor((lo_min - x0) / h)), 0)
    c_hi = min(int(math.ceil((hi_max - x0) / h)), nc)
    dt = tb - ta
    nall = nlo + nhi + 2
    for c in range(c_lo, c_hi):
        xa = xe[c]
        xb = xe[c + 1]
        if xa >= lo_max and xb <= hi_min:
            # open over the whole window
            out_row[c] += w * dt * h
            continue
        f0[nlo] = xa
        f1[nlo] = xa
        f0[nall - 1] = xb
        f1[nall - 1] = xb
        out_row[c] += w * _fm_integral(f0, f1, nlo + 1, nall, ta, tb, buf)


@njit(cache=True, parallel=True)
def _fm_accumulate(states, n_pairs, job_k, job_t0, job_t1, job_w, row_p, row_q, row_yc, half_dlg, xe,
                   open_out, jaw_out):
    """MU x mm of open leaves (within the jaws) and of the jaw opening, per row and cell.

    ``states[k]`` = leaf x1 (n_pairs), leaf x2 (n_pairs), jaw x1, x2, y1, y2 at control point ``k``;
    job ``j`` integrates the interval ``k = job_k[j]`` -> ``k + 1`` over ``t`` in
    ``[job_t0[j], job_t1[j]]`` with ``job_w[j]`` MU per unit ``t``.
    """
    nr = row_p.size
    nj = job_k.size
    for r in prange(nr):
        buf = np.empty(64)
        f0 = np.empty(10)
        f1 = np.empty(10)
        p = row_p[r]
        q = row_q[r]
        yc = row_yc[r]
        for j in range(nj):
            k = job_k[j]
            s0 = states[k]
            s1 = states[k + 1]
            ta = job_t0[j]
            tb = job_t1[j]
            # the row centre must lie between the Y jaws
            ta, tb = _fm_window(s0[2 * n_pairs + 2], s1[2 * n_pairs + 2], yc, ta, tb, True)
            if tb <= ta:
                continue
            ta, tb = _fm_window(s0[2 * n_pairs + 3], s1[2 * n_pairs + 3], yc, ta, tb, False)
            if tb <= ta:
                continue
            w = job_w[j]
            # jaw opening alone
            f0[0] = s0[2 * n_pairs]
            f1[0] = s1[2 * n_pairs]
            f0[2] = s0[2 * n_pairs + 1]
            f1[2] = s1[2 * n_pairs + 1]
            _fm_add_quantity(f0, f1, 1, 1, ta, tb, w, xe, jaw_out[r], buf)
            # leaves (both pairs of a tongue-and-groove strip) within the jaws
            f0[0] = s0[2 * n_pairs]
            f1[0] = s1[2 * n_pairs]
            f0[1] = s0[p] - half_dlg
            f1[1] = s1[p] - half_dlg
            f0[2] = s0[q] - half_dlg
            f1[2] = s1[q] - half_dlg
            f0[4] = s0[2 * n_pairs + 1]
            f1[4] = s1[2 * n_pairs + 1]
            f0[5] = s0[n_pairs + p] + half_dlg
            f1[5] = s1[n_pairs + p] + half_dlg
            f0[6] = s0[n_pairs + q] + half_dlg
            f1[6] = s1[n_pairs + q] + half_dlg
            _fm_add_quantity(f0, f1, 3, 3, ta, tb, w, xe, open_out[r], buf)


# ------------------------------------------------------------------ rows, states, jobs
def leaf_rows(leaf_boundaries_mm: np.ndarray, tongue_groove_mm: float, y_lo: float, y_hi: float,
              extra_edges_mm=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a fluence map: ``(y_edges, pair_a, pair_b)`` within ``[y_lo, y_hi]``.

    Interior rows of a pair have ``pair_a == pair_b``; the tongue-and-groove strip centred on the
    boundary between pairs ``p`` and ``p + 1`` has ``(p, p + 1)``.  ``extra_edges_mm`` (the Y jaw
    positions) split rows further.
    """
    yb = np.asarray(leaf_boundaries_mm, float)
    half = 0.5 * float(tongue_groove_mm)
    if half > 0 and half >= 0.5 * float(np.min(np.diff(yb))):
        raise GeometryError(f"tongue-and-groove width {tongue_groove_mm} mm must be under the narrowest leaf")
    edges = [yb]
    if half > 0:
        edges += [yb[1:-1] - half, yb[1:-1] + half]
    edges.append(np.asarray(list(extra_edges_mm), float))
    e = np.unique(np.round(np.concatenate(edges), 6))
    e = e[(e >= max(y_lo, yb[0]) - 1e-9) & (e <= min(y_hi, yb[-1]) + 1e-9)]
    e = np.unique(np.concatenate([[max(y_lo, yb[0])], e, [min(y_hi, yb[-1])]]))
    if e.size < 2 or e[-1] <= e[0]:
        return e, np.zeros(0, np.int64), np.zeros(0, np.int64)
    yc = 0.5 * (e[1:] + e[:-1])
    pa = np.clip(np.searchsorted(yb, yc, side="right") - 1, 0, yb.size - 2)
    pb = pa.copy()
    if half > 0:
        # a strip around the boundary yb[k] (k = 1 .. n-1): pairs k-1 and k
        k = np.clip(np.searchsorted(yb, yc), 1, yb.size - 2)
        near_lo = np.abs(yc - yb[k]) < half
        near_prev = np.abs(yc - yb[np.maximum(k - 1, 1)]) < half
        strip = near_lo | near_prev
        kk = np.where(near_lo, k, np.maximum(k - 1, 1))
        pa = np.where(strip, kk - 1, pa)
        pb = np.where(strip, kk, pb)
    return e, pa.astype(np.int64), pb.astype(np.int64)


def control_point_states(beam) -> np.ndarray:
    """``(n_cp, 2 n_pairs + 4)``: leaf x1, leaf x2, jaw x1, x2, y1, y2 at each control point."""
    return np.array([np.concatenate([cp.aperture.leaf_x1_mm, cp.aperture.leaf_x2_mm, cp.aperture.jaw_x_mm,
                                     cp.aperture.jaw_y_mm]) for cp in beam.control_points], dtype=np.float64)


def accumulate_fluence(states: np.ndarray, jobs: list[tuple[int, float, float, float]], leaf_boundaries_mm,
                       *, transmission: float, dlg_mm: float, tongue_groove_mm: float, jaw_transmission: float,
                       gantry_deg: float = 0.0, cell_mm: float = CELL_MM) -> FluenceMap | None:
    """Fluence map of the intervals ``jobs = [(k, t0, t1, mu_per_unit_t), ...]`` of ``states``.

    Returns None when the jobs deliver no MU or the jaws never open.
    """
    yb = np.asarray(leaf_boundaries_mm, np.float64)
    n_pairs = yb.size - 1
    if states.ndim != 2 or states.shape[1] != 2 * n_pairs + 4:
        raise GeometryError(f"control-point states have {states.shape[-1]} values; the MLC needs "
                            f"{2 * n_pairs + 4}")
    if states.shape[0] == 1:
        states = np.vstack([states, states])
    jk = np.array([j[0] for j in jobs], np.int64)
    t0 = np.array([j[1] for j in jobs], np.float64)
    t1 = np.array([j[2] for j in jobs], np.float64)
    w = np.array([j[3] for j in jobs], np.float64)
    keep = (w > 0) & (t1 > t0)
    jk, t0, t1, w = jk[keep], t0[keep], t1[keep], w[keep]
    if jk.size == 0:
        return None
    mu = float(np.sum(w * (t1 - t0)))
    used = np.unique(np.concatenate([jk, jk + 1]))
    st = states[used]
    jx = st[:, 2 * n_pairs:2 * n_pairs + 2]
    jy = st[:, 2 * n_pairs + 2:2 * n_pairs + 4]
    x_lo, x_hi = float(jx[:, 0].min()), float(jx[:, 1].max())
    y_lo, y_hi = float(jy[:, 0].min()), float(jy[:, 1].max())
    h = float(cell_mm)
    if x_hi - x_lo <= 0 or y_hi - y_lo <= 0:
        xe = np.array([0.0, h])
        ye = np.array([0.0, h])
        fl = np.zeros((1, 1))
    else:
        c0 = math.floor(x_lo / h)
        c1 = math.ceil(x_hi / h)
        xe = h * np.arange(c0, c1 + 1, dtype=np.float64)
        ye, pa, pb = leaf_rows(yb, tongue_groove_mm, y_lo, y_hi, extra_edges_mm=np.unique(jy))
        open_mm = np.zeros((pa.size, xe.size - 1))
        jaw_mm = np.zeros((pa.size, xe.size - 1))
        if pa.size:
            _fm_accumulate(np.ascontiguousarray(states), n_pairs, jk, t0, t1, w, pa, pb,
                           0.5 * (ye[1:] + ye[:-1]), 0.5 * float(dlg_mm), xe, open_mm, jaw_mm)
        tm, tj = float(transmission), float(jaw_transmission)
        fl = ((1.0 - tm) * open_mm + (tm - tj) * jaw_mm) / h
    f = FULL_FIELD_MM
    full = (-f, f, min(float(yb[0]), -f), max(float(yb[-1]), f))
    return FluenceMap(float(gantry_deg) % 360.0, xe, ye, fl, float(jaw_transmission) * mu, full, mu)


def unwrapped_gantry(beam) -> np.ndarray | None:
    """Gantry angle of each control point along the delivery, unwrapped (None: not a monotonic arc)."""
    g = [float(cp.gantry_deg) for cp in beam.control_points]
    direction = str(beam.arc_direction).upper()
    theta = [g[0]]
    for a, b in zip(g[:-1], g[1:]):
        d = (b - a) % 360.0
        if direction in ("CC", "CCW"):
            d = d - 360.0 if d > 0 else d
        elif direction != "CW" and d > 180.0:
            d -= 360.0
        theta.append(theta[-1] + d)
    theta = np.asarray(theta)
    step = np.diff(theta)
    if step.size == 0 or not (np.all(step > 1e-9) or np.all(step < -1e-9)):
        return None
    return theta


def beam_jobs(beam, bin_deg: float) -> list[tuple[float, list[tuple[int, float, float, float]]]]:
    """The fluence maps of a beam: ``[(gantry_deg, jobs), ...]``.

    A beam at one gantry angle (static, step-and-shoot, sliding window) is one map holding every
    control-point interval.  An arc is cut into bins of consecutive control-point intervals spanning
    at most ``bin_deg`` (an interval longer than that is split into equal parts): each bin is one map
    at its central gantry angle holding those intervals whole (meterset, leaves and gantry are linear
    within an interval).  Bins follow the control points and are formed in ascending gantry angle
    whatever the arc's direction, so arcs -- or optimisation sectors, clockwise or not -- over the
    same control-point angles get maps at the same angles (their evaluations share the source
    position), and a sector of ``bin_deg`` is one map.
    """
    mu_int = beam.segment_mu()
    if len(beam.control_points) == 1:
        return [(float(beam.control_points[0].gantry_deg), [(0, 0.0, 1.0, float(beam.mu))])]
    theta = unwrapped_gantry(beam) if beam.is_arc else None
    if theta is None:
        if beam.is_arc:
            # gantry not monotonic (an arc that turns back): one map per interval, at its middle angle
            # along the shorter way
            g = [float(cp.gantry_deg) for cp in beam.control_points]
            return [((a + 0.5 * (((b - a) + 180.0) % 360.0 - 180.0)) % 360.0, [(k, 0.0, 1.0, float(m))])
                    for k, (a, b, m) in enumerate(zip(g[:-1], g[1:], mu_int)) if m > 0]
        return [(float(beam.control_points[0].gantry_deg),
                 [(k, 0.0, 1.0, float(m)) for k, m in enumerate(mu_int) if m > 0])]
    # bins in ascending gantry angle whatever the direction: two arcs (or sectors) over the same
    # control-point angles in opposite directions get their maps at the same angles, so they share
    # the ray tracing and each point's kernel terms (forward dose)
    b = float(bin_deg)
    pieces = []
    for k in range(theta.size - 1):
        a0, a1 = theta[k], theta[k + 1]
        n = max(1, int(math.ceil(abs(a1 - a0) / b - 1e-9)))
        for q in range(n):
            ta, tb = q / n, (q + 1) / n
            x0, x1 = a0 + (a1 - a0) * ta, a0 + (a1 - a0) * tb
            pieces.append((min(x0, x1), max(x0, x1), k, ta, tb))
    if theta[-1] < theta[0]:
        pieces.reverse()
    out = []
    cur: list = []
    lo = hi = 0.0
    for x0, x1, k, ta, tb in pieces:
        if mu_int[k] <= 0:
            if cur:
                out.append(((0.5 * (lo + hi)) % 360.0, cur))
                cur = []
            continue
        if cur and x1 - lo > b + 1e-9:
            out.append(((0.5 * (lo + hi)) % 360.0, cur))
            cur = []
        if not cur:
            lo, hi = x0, x1
        lo, hi = min(lo, x0), max(hi, x1)
        cur.append((k, ta, tb, float(mu_int[k])))
    if cur:
        out.append(((0.5 * (lo + hi)) % 360.0, cur))
    return out


def beam_fluence_maps(beam, model, *, arc_bin_deg: float = 2.0, cell_mm: float = CELL_MM) -> list[FluenceMap]:
    """Every fluence map of ``beam`` with the MLC leakage of the beam model's machine file
    (:meth:`~sbrtplan.dose_engine.BeamModel.mlc_for`): one map, or one per gantry bin of an arc."""
    mlc = model.mlc_for(beam.mlc)
    states = control_point_states(beam)
    out = []
    for g, jobs in beam_jobs(beam, arc_bin_deg):
        fm = accumulate_fluence(states, jobs, mlc.leaf_boundaries_mm, transmission=mlc.transmission,
                                dlg_mm=mlc.dlg_mm, tongue_groove_mm=mlc.tongue_groove_mm,
                                jaw_transmission=model.jaw_transmission, gantry_deg=g, cell_mm=cell_mm)
        if fm is not None:
            out.append(fm)
    return out

"""Step-and-shoot leaf sequencing of optimised fluence maps.

Method
------
1. **Quantisation** into ``L`` equal intensity steps ``delta = f_max / L``
   (``q = round(f / delta)``).
2. **Decomposition** of the integer map, two ways: the unidirectional sweep
   of Bortfeld (minimum total MU: in each row the ``k``-th unit opens from the
   ``k``-th rise to the ``k``-th fall of the profile) and the reducing-levels
   method of Xia and Verhey (at the largest power-of-two level ``h <= max(q)``
   each row splits into the maximal runs where the remainder is ``>= h``;
   segment ``j`` opens the ``j``-th run of every row and carries ``h`` units;
   usually fewer segments).  Identical apertures are merged.
3. **Segment weights** are refitted to the *unquantised* fluence by
   non-negative least squares, including the MLC transmission under closed
   leaves inside the jaws as the dose engine delivers it; segments below
   ``min_segment_mu`` are dropped (the smallest first) and the fit repeated,
   so every returned segment respects the minimum MU.
4. ``L`` is scanned from 1 to ``floor(f_max / min_segment_mu)`` (capped at
   30) with both decompositions.  If even ``L = 1`` needs too many segments
   (rows with several separate runs), the segments contributing least (MU x
   open area) are dropped before the refit.
5. A further candidate comes from greedy **aperture pursuit**: repeatedly add
   the aperture that best matches the current residual (one interval per row,
   found exactly as the maximum-sum subarray of each row: the pricing step of
   column generation for a least-squares objective) and refit the weights; it
   usually wins when few segments are allowed.
6. Among all candidates with at most ``max_segments`` segments the smallest
   RMS fluence error over the active beamlets wins (ties: fewer segments, then
   fewer MU).

References: P. Xia, L.J. Verhey, "Multileaf collimator leaf sequencing
algorithm for intensity modulated beams with multiple static segments", Med.
Phys. 25 (1998) 1424-1434; T. Bortfeld et al., "X-ray field compensation with
multileaf collimators", IJROBP 28 (1994) 723-730 (unidirectional sweep);
H.E. Romeijn, R.K. Ahuja, J.F. Dempsey, A. Kumar, "A column generation
approach to radiation therapy treatment planning using aperture modulation",
SIAM J. Optim. 15 (2005) 838-862 (pricing of apertures).

Geometry: apertures are in mm at the isocentre plane (IEC BLD); beamlet row
``r`` is delivered by the leaf pair that contains it
(:func:`sbrtplan.beams.targeting.rows_to_leaf_pairs`); leaf tips sit on column
edges; closed pairs are parked with their minimum gap under the X1 jaw; jaws
fit the open leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from .._log import get_logger
from ..errors import GeometryError
from .beamlets import BeamletGrid
from .delivery import Aperture, Beam, ControlPoint, MLCModel, Technique
from .geometry import BeamGeometry
from .targeting import rows_to_leaf_pairs

log = get_logger(__name__)

_MAX_LEVELS = 30


@dataclass(frozen=True)
class SequencingError:
    """Difference between the delivered and the requested fluence (MU)."""

    rms_mu: float
    max_abs_mu: float
    max_fluence_mu: float
    n_segments: int
    total_mu: float

    @property
    def rms_relative(self) -> float:
        """RMS error over active beamlets relative to the maximum fluence."""
        return self.rms_mu / self.max_fluence_mu if self.max_fluence_mu > 0 else 0.0


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of True in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), stops.tolist()))


def _decompose(q: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Xia-Verhey reducing levels: integer map -> [(openings (n_rows, 2) col [a, b), units)].

    ``a == b == -1`` marks a closed row.
    """
    rem = q.astype(np.int64).copy()
    out: dict[bytes, list] = {}
    order: list[bytes] = []
    n_rows = q.shape[0]
    while rem.max(initial=0) > 0:
        h = 1 << int(np.floor(np.log2(rem.max())))
        runs = [_runs(rem[r] >= h) for r in range(n_rows)]
        n_seg = max(len(x) for x in runs)
        for j in range(n_seg):
            op = np.full((n_rows, 2), -1, np.int64)
            for r in range(n_rows):
                if j < len(runs[r]):
                    a, b = runs[r][j]
                    op[r] = (a, b)
                    rem[r, a:b] -= h
            key = op.tobytes()
            if key in out:
                out[key][1] += h
            else:
                out[key] = [op, h]
                order.append(key)
    return [(out[k][0], int(out[k][1])) for k in order]


def _sweep(q: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Unidirectional sweep (Bortfeld): minimum total MU for the integer map.

    In each row the ``k``-th unit opens from the ``k``-th rise to the
    ``k``-th fall of the profile; unit segments with identical openings merge.
    """
    n_rows, n_cols = q.shape
    qq = np.zeros((n_rows, n_cols + 2), np.int64)
    qq[:, 1:-1] = q
    d = np.diff(qq, axis=1)  # d[:, j] = q[j] - q[j-1], j = 0..n_cols
    n_units = int(np.clip(d, 0, None).sum(axis=1).max(initial=0))
    ops = np.full((n_units, n_rows, 2), -1, np.int64)
    cols = np.arange(n_cols + 1)
    for r in range(n_rows):
        left = np.repeat(cols, np.clip(d[r], 0, None))
        right = np.repeat(cols, np.clip(-d[r], 0, None))
        ops[:left.size, r, 0] = left
        ops[:right.size, r, 1] = right
    out: dict[bytes, list] = {}
    order: list[bytes] = []
    for k in range(n_units):
        key = ops[k].tobytes()
        if key in out:
            out[key][1] += 1
        else:
            out[key] = [ops[k].copy(), 1]
            order.append(key)
    return [(out[k][0], int(out[k][1])) for k in order]


def _opening_matrix(openings: list[np.ndarray], shape: tuple[int, int], transmission: float = 0.0) -> np.ndarray:
    """(n_rows * n_cols, n_segments) fluence per MU of each segment on the beamlets.

    1 where the segment is open; ``transmission`` under closed leaves inside
    the jaws, which :func:`_aperture_from_opening` fits to the bounding box of
    the open beamlets.
    """
    n_rows, n_cols = shape
    cols = np.arange(n_cols)
    m = np.zeros((n_rows * n_cols, len(openings)))
    for k, op in enumerate(openings):
        a = op[:, 0:1]
        b = op[:, 1:2]
        is_open = (cols[None, :] >= a) & (cols[None, :] < b)
        col = is_open.astype(float)
        if transmission > 0:
            rows = np.flatnonzero(op[:, 0] >= 0)
            if rows.size:
                box = np.zeros(shape, bool)
                box[rows.min():rows.max() + 1, op[rows, 0].min():op[rows, 1].max()] = True
                col = col + transmission * (box & ~is_open)
        m[:, k] = col.ravel()
    return m


def _best_intervals(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row the contiguous interval [a, b) with the largest sum of ``r`` (Kadane via prefix sums)."""
    n_rows, n_cols = r.shape
    prefix = np.zeros((n_rows, n_cols + 1))
    prefix[:, 1:] = np.cumsum(r, axis=1)
    run_min = prefix[:, 0].copy()
    run_arg = np.zeros(n_rows, np.int64)
    best = np.zeros(n_rows)
    best_a = np.full(n_rows, -1, np.int64)
    best_b = np.full(n_rows, -1, np.int64)
    for b in range(1, n_cols + 1):
        gain = prefix[:, b] - run_min
        better = gain > best
        best = np.where(better, gain, best)
        best_a = np.where(better, run_arg, best_a)
        best_b = np.where(better, b, best_b)
        lower = prefix[:, b] < run_min
        run_min = np.where(lower, prefix[:, b], run_min)
        run_arg = np.where(lower, b, run_arg)
    return best_a, best_b, best


def _pursuit(f: np.ndarray, max_segments: int, min_mu: float, transmission: float,
             active: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Greedy aperture pursuit: add the aperture best aligned with the residual, refit, repeat.

    The aperture maximising the residual summed over its open beamlets is one
    best interval per row (the pricing step of column generation for a
    least-squares objective; Romeijn et al., SIAM J. Optim. 15 (2005) 838).
    """
    target = f.ravel()
    openings: list[np.ndarray] = []
    w = np.zeros(0)
    m = np.zeros((target.size, 0))
    for _ in range(max_segments):
        r = (target - m @ w).reshape(f.shape)
        a, b, gain = _best_intervals(np.where(active, r, -np.abs(r) - 1e-9))
        if gain.sum() <= 1e-9 * max(float(f.max()), 1.0):
            break
        op = np.stack([np.where(gain > 0, a, -1), np.where(gain > 0, b, -1)], axis=1)
        if any(np.array_equal(op, o) for o in openings):
            break
        openings.append(op)
        m = np.column_stack([m, _opening_matrix([op], f.shape, transmission)])
        w = _fit_weights(m, target, min_mu)
        if w[-1] <= 0:  # the new aperture cannot carry min_mu: stop
            break
    keep = w > 0
    return [o for o, k in zip(openings, keep) if k], w[keep]


def _fit_weights(m: np.ndarray, target: np.ndarray, min_mu: float) -> np.ndarray:
    """NNLS weights, dropping segments below ``min_mu`` one at a time (smallest first)."""
    keep = np.ones(m.shape[1], bool)
    w = np.zeros(m.shape[1])
    while keep.any():
        wk, _ = nnls(m[:, keep], target, maxiter=50 * m.shape[1] + 100)
        w[:] = 0.0
        w[keep] = wk
        small = keep & (w < min_mu - 1e-9)
        if not small.any():
            break
        # drop the smallest positive-or-zero weight among those too small
        idx = np.flatnonzero(small)
        keep[idx[np.argmin(w[idx])]] = False
    return np.where(keep, w, 0.0)


def _default_leaf_gap(mlc: MLCModel, min_leaf_gap_mm: float | None) -> float:
    gap = mlc.min_gap_mm if min_leaf_gap_mm is None else float(min_leaf_gap_mm)
    if not (np.isfinite(gap) and gap >= 0):
        raise GeometryError(f"min_leaf_gap_mm must be >= 0, got {min_leaf_gap_mm}")
    return gap


def _dlg_retracted(edge1: np.ndarray, edge2: np.ndarray, mlc: MLCModel) -> tuple[np.ndarray, np.ndarray]:
    """Leaf tips for an opening whose fluence edges are ``edge1``/``edge2`` (mm).

    A rounded leaf end transmits as if the tip stood half the dosimetric leaf gap further out
    (LoSasso et al. 1998), so the leaves go DLG/2 inside the wanted edges, as commercial leaf-motion
    calculators place them; the delivered fluence (:func:`delivered_fluence`, the forward dose) then
    has the optimised edges.
    """
    h = 0.5 * float(mlc.dlg_mm)
    if h == 0.0:
        return edge1, edge2
    x1, x2 = edge1 + h, edge2 - h
    shut = x2 < x1  # an opening narrower than the DLG: its centre, the minimum gap rule widens it
    mid = 0.5 * (edge1 + edge2)
    return np.where(shut, mid, x1), np.where(shut, mid, x2)


def _aperture_from_opening(op: np.ndarray, grid: BeamletGrid, mlc: MLCModel, pairs: np.ndarray,
                           gap_mm: float) -> Aperture:
    x = grid.x_edges_mm
    open_rows = np.flatnonzero(op[:, 0] >= 0)
    if open_rows.size == 0:
        raise GeometryError("cannot build an aperture with no open leaf pair")
    edge1 = x[op[open_rows, 0]]
    edge2 = x[op[open_rows, 1]]
    x1o, x2o = _dlg_retracted(edge1, edge2, mlc)
    # widen openings narrower than the minimum gap symmetrically
    short = (x2o - x1o) < gap_mm
    mid = 0.5 * (x1o + x2o)
    x1o = np.where(short, mid - 0.5 * gap_mm, x1o)
    x2o = np.where(short, mid + 0.5 * gap_mm, x2o)
    # the jaws have no rounded ends: they go to the opening's edges
    jaw_x = (float(min(edge1.min(), x1o.min())), float(max(edge2.max(), x2o.max())))
    b = mlc.leaf_boundaries_mm
    jaw_y = (float(b[pairs[open_rows].min()]), float(b[pairs[open_rows].max() + 1]))
    # Closed pairs park with their gap under the X1 jaw (inside the Y jaws this
    # hides the gap; outside, the Y jaws cover it anyway, and keeping every
    # closed pair at the same place keeps the leaf-bank span at the field width).
    park = jaw_x[0] - gap_mm
    if park < -mlc.max_position_mm:
        park = jaw_x[1]  # hide under X2 instead when X1 is at the carriage limit
    x1 = np.full(mlc.n_pairs, park)
    x2 = x1 + gap_mm
    x1[pairs[open_rows]] = x1o
    x2[pairs[open_rows]] = x2o
    return Aperture(x1, x2, jaw_x, jaw_y)


def aperture_from_columns(left: np.ndarray, right: np.ndarray, grid: BeamletGrid, mlc: MLCModel, *,
                          min_leaf_gap_mm: float | None = None,
                          jaws_mm: tuple[float, float, float, float] | None = None) -> Aperture:
    """An aperture from open column intervals ``[left[r], right[r])`` per beamlet row.

    This is the form in which direct aperture optimisation (VMAT pricing)
    produces apertures.  Leaf tips sit on column edges; a closed row
    (``left >= right``) closes its pair with the minimum gap centred on edge
    ``left`` (so closed leaves stay where they are and do not have to travel);
    pairs outside the grid close at the grid's centre line.  Openings narrower
    than the minimum gap are widened symmetrically.

    Parameters
    ----------
    left, right : (n_rows,) int
        Column-edge indices, 0..n_cols.
    jaws_mm : (x1, x2, y1, y2), optional
        Fixed jaws (e.g. the grid extent for a whole arc); default: fit to the
        open leaves (jaw tracking), or collapsed on the centre when all closed.
    """
    gap = _default_leaf_gap(mlc, min_leaf_gap_mm)
    pairs = rows_to_leaf_pairs(grid, mlc)
    left = np.asarray(left, np.int64).reshape(-1)
    right = np.asarray(right, np.int64).reshape(-1)
    n_rows, n_cols = grid.shape
    if left.size != n_rows or right.size != n_rows:
        raise GeometryError(f"aperture: {left.size}/{right.size} column indices for {n_rows} beamlet rows")
    if left.min(initial=0) < 0 or right.max(initial=0) > n_cols:
        raise GeometryError(f"aperture: column-edge indices must lie in 0..{n_cols}")
    x = grid.x_edges_mm
    centre = 0.5 * (x[0] + x[-1])
    x1 = np.full(mlc.n_pairs, centre - 0.5 * gap)
    x2 = np.full(mlc.n_pairs, centre + 0.5 * gap)
    is_open = right > left
    edge_l = x[left]
    edge_r = np.where(is_open, x[np.maximum(right, left)], edge_l)
    xl, xr = _dlg_retracted(edge_l, edge_r, mlc)
    xl = np.where(is_open, xl, edge_l)
    xr = np.where(is_open, xr, edge_r)
    mid = 0.5 * (xl + xr)
    narrow = (xr - xl) < gap
    xl = np.where(narrow, mid - 0.5 * gap, xl)
    xr = np.where(narrow, mid + 0.5 * gap, xr)
    x1[pairs] = xl
    x2[pairs] = xr
    if jaws_mm is not None:
        jx = (float(jaws_mm[0]), float(jaws_mm[1]))
        jy = (float(jaws_mm[2]), float(jaws_mm[3]))
    elif is_open.any():
        b = mlc.leaf_boundaries_mm
        # the jaws have no rounded ends: they go to the opening's edges
        jx = (float(min(edge_l[is_open].min(), xl[is_open].min())), float(max(edge_r[is_open].max(), xr[is_open].max())))
        jy = (float(b[pairs[is_open].min()]), float(b[pairs[is_open].max() + 1]))
    else:
        yc = 0.5 * (grid.y_edges_mm[0] + grid.y_edges_mm[-1])
        jx = (centre, centre)
        jy = (yc, yc)
    return Aperture(x1, x2, jx, jy)


def best_row_intervals(score: np.ndarray) -> np.ndarray:
    """Per row the contiguous column interval with the largest positive sum of ``score``.

    The pricing step of aperture generation: with ``score`` the negative gradient of a dose
    objective on a beam's beamlets, the aperture (one leaf opening per row) that improves the
    objective most opens, in each row, the interval of maximum sum (Romeijn et al. 2005).

    Parameters
    ----------
    score : ndarray (n_rows, n_cols)

    Returns
    -------
    ndarray (n_rows, 2) int
        Column-edge indices ``[a, b)`` per row; ``-1, -1`` where no interval has a positive sum
        (the pair stays closed).  The format of the openings :func:`aperture_from_opening` takes.
    """
    score = np.asarray(score, float)
    if score.ndim != 2:
        raise GeometryError(f"score must be a 2-D beamlet map, got shape {score.shape}")
    a, b, gain = _best_intervals(score)
    return np.stack([np.where(gain > 0, a, -1), np.where(gain > 0, b, -1)], axis=1).astype(np.int64)


def opening_fluence(opening: np.ndarray, grid: BeamletGrid, mlc: MLCModel) -> np.ndarray:
    """Relative fluence of one opening on the active beamlets (row-major order of ``grid.active``).

    1 on open beamlets, ``mlc.transmission`` under closed leaves inside the jaws fitted to the
    open beamlets (the model the sequencer fits segment MU with).
    """
    op = np.asarray(opening, np.int64).reshape(grid.shape[0], 2)
    return _opening_matrix([op], grid.shape, mlc.transmission)[:, 0][grid.active.ravel()]


def aperture_from_opening(opening: np.ndarray, grid: BeamletGrid, mlc: MLCModel, *,
                          min_leaf_gap_mm: float | None = None) -> Aperture:
    """The MLC aperture of an opening (per beamlet row ``[a, b)`` column edges, ``-1`` closed).

    Leaf tips on column edges, openings narrower than the minimum gap widened symmetrically,
    closed pairs parked under the X1 jaw, jaws fitted to the open leaves (as the sequencer does).
    """
    op = np.asarray(opening, np.int64).reshape(grid.shape[0], 2)
    return _aperture_from_opening(op, grid, mlc, rows_to_leaf_pairs(grid, mlc),
                                  _default_leaf_gap(mlc, min_leaf_gap_mm))


def delivered_fluence(segments: list[tuple[Aperture, float]], grid: BeamletGrid, mlc: MLCModel, *,
                      transmission: bool = False) -> np.ndarray:
    """Fluence (MU) on the beamlet grid delivered by ``segments``.

    Each beamlet receives the segment MU times the fraction of its area that is
    open between the leaves (each tip taken DLG/2 further out, the rounded leaf end) and inside
    the jaws; with ``transmission`` the
    covered part (inside the jaws) adds ``mlc.transmission`` x MU.
    """
    pairs = rows_to_leaf_pairs(grid, mlc)
    x0, x1 = grid.x_edges_mm[:-1], grid.x_edges_mm[1:]
    y0, y1 = grid.y_edges_mm[:-1], grid.y_edges_mm[1:]
    wx = x1 - x0
    wy = y1 - y0
    out = np.zeros(grid.shape)
    h = 0.5 * float(mlc.dlg_mm)  # rounded leaf ends: the fluence edge is DLG/2 beyond each tip
    for ap, mu in segments:
        fy = np.clip(np.minimum(y1, ap.jaw_y_mm[1]) - np.maximum(y0, ap.jaw_y_mm[0]), 0, None) / wy
        jx0, jx1 = ap.jaw_x_mm
        lo = np.maximum(ap.leaf_x1_mm[pairs][:, None] - h, jx0)
        hi = np.minimum(ap.leaf_x2_mm[pairs][:, None] + h, jx1)
        fo = np.clip(np.minimum(hi, x1[None, :]) - np.maximum(lo, x0[None, :]), 0, None) / wx[None, :]
        f = fo
        if transmission:
            fj = np.clip(np.minimum(x1, jx1) - np.maximum(x0, jx0), 0, None) / wx
            f = fo + mlc.transmission * (fj[None, :] - fo)
        out += mu * f * fy[:, None]
    return out


def sequencing_error(fluence_mu: np.ndarray, segments: list[tuple[Aperture, float]], grid: BeamletGrid,
                     mlc: MLCModel, *, transmission: bool = False) -> SequencingError:
    """Delivered minus requested fluence over the active beamlets (optionally with MLC transmission)."""
    f = np.asarray(fluence_mu, float)
    d = delivered_fluence(segments, grid, mlc, transmission=transmission)
    e = (d - f)[grid.active]
    return SequencingError(rms_mu=float(np.sqrt(np.mean(e ** 2))) if e.size else 0.0,
                           max_abs_mu=float(np.max(np.abs(e), initial=0.0)),
                           max_fluence_mu=float(f[grid.active].max(initial=0.0)),
                           n_segments=len(segments), total_mu=float(sum(m for _, m in segments)))


def sequence_fluence(fluence_mu: np.ndarray, grid: BeamletGrid, mlc: MLCModel, *, max_segments: int = 10,
                     min_segment_mu: float = 2.0,
                     min_leaf_gap_mm: float | None = None,
                     transmission: bool = True) -> list[tuple[Aperture, float]]:
    """Step-and-shoot segments (aperture, MU) that reproduce a fluence map.

    Parameters
    ----------
    fluence_mu : ndarray (n_rows, n_cols)
        Optimised fluence in MU per fraction (MU through an open beamlet) on
        ``grid``; values at inactive beamlets are ignored (treated as 0).
    grid : BeamletGrid
        Rows follow ``mlc`` leaf pairs (see :func:`beamlet_grid_for_target`).
    mlc : MLCModel
    max_segments : int
        Upper bound on the number of segments.
    min_segment_mu : float
        Every returned segment has at least this MU.
    min_leaf_gap_mm : float, optional
        Minimum gap between opposing leaves (default ``mlc.min_gap_mm``).
    transmission : bool
        Fit the segment MU to the fluence including ``mlc.transmission``
        under closed leaves inside the jaws (what the dose engine delivers).

    Returns
    -------
    list of (Aperture, float)
        Segments in delivery order (largest first) with their MU; empty when the
        fluence is zero or too weak for a single segment of ``min_segment_mu``.
        The fluence error is logged; compute it with :func:`sequencing_error`.
    """
    f = np.asarray(fluence_mu, float)
    if f.shape != grid.shape:
        raise GeometryError(f"fluence map shape {f.shape} does not match the beamlet grid {grid.shape}")
    if not np.all(np.isfinite(f)):
        raise GeometryError("fluence map contains NaN or infinite values")
    if int(max_segments) < 1:
        raise GeometryError(f"max_segments must be >= 1, got {max_segments}")
    if not (np.isfinite(min_segment_mu) and min_segment_mu >= 0):
        raise GeometryError(f"min_segment_mu must be >= 0, got {min_segment_mu}")
    gap = _default_leaf_gap(mlc, min_leaf_gap_mm)
    pairs = rows_to_leaf_pairs(grid, mlc)
    f = np.where(grid.active, np.clip(f, 0.0, None), 0.0)
    fmax = float(f.max(initial=0.0))
    if fmax <= 0:
        return []
    target = f.ravel()
    n_levels_max = max(1, min(_MAX_LEVELS, int(np.floor(fmax / min_segment_mu + 1e-9)) if min_segment_mu > 0
                              else _MAX_LEVELS))
    t = mlc.transmission if transmission else 0.0
    act = grid.active.ravel()
    best = None

    def consider(openings, w, label):
        nonlocal best
        m = _opening_matrix(openings, f.shape, t)
        err = float(np.sqrt(np.mean((m @ w - target)[act] ** 2)))
        # smallest error; among equal errors fewer segments, then fewer MU
        score = (round(err / fmax, 9), int(np.count_nonzero(w)), float(w.sum()))
        if best is None or score < best[0]:
            best = (score, openings, w, label)

    candidates = [(n, method) for n in range(1, n_levels_max + 1) for method in (_sweep, _decompose)]
    for n_levels, method in candidates:
        q = np.rint(f / (fmax / n_levels)).astype(np.int64)
        segs = method(q)
        openings = [op for op, _ in segs]
        units = np.array([u for _, u in segs], float) * fmax / n_levels
        m = _opening_matrix(openings, f.shape, t)
        if len(openings) > max_segments:
            if best is not None or method is _sweep:
                continue
            # even the coarsest quantisation has too many segments: keep the most useful
            score = units * m.sum(axis=0)
            keep = np.sort(np.argsort(-score, kind="stable")[:max_segments])
            openings = [openings[k] for k in keep]
            m = m[:, keep]
        consider(openings, _fit_weights(m, target, min_segment_mu),
                 f"{'sweep' if method is _sweep else 'reducing levels'}, {n_levels} levels")
    ops, w = _pursuit(f, int(max_segments), min_segment_mu, t, grid.active)
    if ops:
        consider(ops, w, "aperture pursuit")
    _, openings, w, method_label = best
    used = np.flatnonzero(w > 0)
    used = used[np.argsort(-w[used], kind="stable")]
    segments = [(_aperture_from_opening(openings[k], grid, mlc, pairs, gap), float(w[k])) for k in used]
    if not segments:
        log.warning("fluence (max %.2f MU) too weak for one segment of %.2f MU: no segment", fmax, min_segment_mu)
        return []
    e = sequencing_error(f, segments, grid, mlc, transmission=transmission)
    log.info("sequenced %d segments (%s), %.1f MU; fluence error RMS %.2f MU (%.1f%% of max), max %.2f MU",
             len(segments), method_label, e.total_mu, e.rms_mu, 100 * e.rms_relative, e.max_abs_mu)
    return segments


def segments_to_beam(name: str, geometry: BeamGeometry, segments: list[tuple[Aperture, float]],
                     mlc: MLCModel) -> Beam:
    """A step-and-shoot :class:`Beam` (two control points per segment).

    Segment ``k`` spans control points ``2k`` and ``2k + 1`` with the same
    aperture; the cumulative meterset weight rises by the segment's share of
    the MU between them (the DICOM convention for step-and-shoot).
    """
    if not segments:
        raise GeometryError(f"beam '{name}': no segments to deliver (drop the beam or lower min_segment_mu)")
    mu = np.array([float(m) for _, m in segments])
    if np.any(mu <= 0) or not np.all(np.isfinite(mu)):
        raise GeometryError(f"beam '{name}': segment MU must be positive, got {mu.round(3).tolist()}")
    for k, (ap, _) in enumerate(segments):
        if ap.n_pairs != mlc.n_pairs:
            raise GeometryError(f"beam '{name}': segment {k} has {ap.n_pairs} leaf pairs, {mlc.name} has {mlc.n_pairs}")
    total = float(mu.sum())
    cum = np.concatenate([[0.0], np.cumsum(mu) / total])
    cum[-1] = 1.0
    cps = []
    for k, (ap, _) in enumerate(segments):
        cps.append(ControlPoint(geometry.gantry_deg, ap.copy(), float(cum[k])))
        cps.append(ControlPoint(geometry.gantry_deg, ap.copy(), float(cum[k + 1])))
    return Beam(name=name, control_points=cps, mu=total, mlc=mlc, isocenter_mm=geometry.isocenter_mm,
                collimator_deg=geometry.collimator_deg, couch_deg=geometry.couch_deg, sad_mm=geometry.sad_mm,
                technique=Technique.STEP_AND_SHOOT, patient_position=geometry.patient_position)

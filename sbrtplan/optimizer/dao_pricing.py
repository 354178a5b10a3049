"""Pricing step of VMAT direct aperture optimisation by column generation.

Given the gradient ``g`` of the plan objective with respect to the beamlet
intensities of one control point (MU through a fully open beamlet), the best
new aperture is the one whose open beamlets have the most negative summed
gradient (the reduced cost of the column it would add to the master problem).
An aperture is one open interval per leaf pair, so the problem separates by
leaf pair: for row ``r`` choose ``a <= b`` minimising ``sum(g[r, a:b])``
(``a == b``: the pair is closed), with the leaf positions restricted to the
window that the leaf speed allows from the apertures already chosen at the
neighbouring control points.

References: H.E. Romeijn, R.K. Ahuja, J.F. Dempsey, A. Kumar, "A column
generation approach to radiation therapy treatment planning using aperture
modulation", SIAM J. Optim. 15 (2005) 838-862; F. Peng, X. Jia, X. Gu,
M.A. Epelman, H.E. Romeijn, S.B. Jiang, "A new column-generation-based
algorithm for VMAT treatment plan optimization", Phys. Med. Biol. 57 (2012)
4569-4588 (leaf-travel windows from the neighbouring control points).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..beams import BeamletGrid


@njit(cache=True)
def _price_rows(grad, a_lo, a_hi, b_lo, b_hi, left, right):  # pragma: no cover - compiled
    n_rows, n_cols = grad.shape
    total = 0.0
    prefix = np.zeros(n_cols + 1)
    for r in range(n_rows):
        prefix[0] = 0.0
        for j in range(n_cols):
            prefix[j + 1] = prefix[j] + grad[r, j]
        best = np.inf
        best_a = -1
        best_b = -1
        # For each right edge b, the best left edge is the largest prefix value
        # among the admissible a <= b: a running maximum over a.
        run_max = -np.inf
        run_arg = -1
        a_next = a_lo[r]
        for b in range(b_lo[r], b_hi[r] + 1):
            while a_next <= a_hi[r] and a_next <= b:
                if prefix[a_next] > run_max:
                    run_max = prefix[a_next]
                    run_arg = a_next
                a_next += 1
            if run_arg < 0:
                continue
            cost = prefix[b] - run_max
            if cost < best:
                best = cost
                best_a = run_arg
                best_b = b
        if best_a < 0:  # no admissible pair: keep the leaves where the window centre is
            best_a = a_lo[r]
            best_b = max(best_a, b_lo[r])
            best = prefix[best_b] - prefix[best_a]
        left[r] = best_a
        right[r] = best_b
        total += best
    return total


def price_aperture(grad: np.ndarray, a_window: np.ndarray | None = None,
                   b_window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Best aperture for one control point.

    Parameters
    ----------
    grad : ndarray (n_rows, n_cols)
        Objective gradient per beamlet (leaf pair x column along the leaf motion).
    a_window, b_window : ndarray (n_rows, 2) of int, optional
        Admissible [lo, hi] (inclusive) column-edge index of the left (x1) and
        right (x2) leaf of each pair, edges numbered 0..n_cols.  Default: anywhere.

    Returns
    -------
    left, right : ndarray of int (n_rows,)
        Open interval ``[left, right)`` of beamlet columns per leaf pair.
    reduced_cost : float
        Summed gradient over the open beamlets (negative: the aperture improves the plan).
    """
    g = np.ascontiguousarray(grad, dtype=np.float64)
    n_rows, n_cols = g.shape
    if a_window is None:
        a_window = np.tile(np.array([0, n_cols]), (n_rows, 1))
    if b_window is None:
        b_window = np.tile(np.array([0, n_cols]), (n_rows, 1))
    a_window = np.clip(np.asarray(a_window, dtype=np.int64), 0, n_cols)
    b_window = np.clip(np.asarray(b_window, dtype=np.int64), 0, n_cols)
    left = np.empty(n_rows, np.int64)
    right = np.empty(n_rows, np.int64)
    cost = _price_rows(g, a_window[:, 0].copy(), a_window[:, 1].copy(), b_window[:, 0].copy(),
                       b_window[:, 1].copy(), left, right)
    return left, right, float(cost)


def travel_windows(neighbours: list[tuple[np.ndarray, np.ndarray]], travel_cols: int,
                   n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Leaf windows allowed by the apertures at neighbouring control points.

    Parameters
    ----------
    neighbours : list of (left, right)
        Apertures (column-edge indices) already fixed at the adjacent control
        points (0, 1 or 2 of them).
    travel_cols : int
        Largest leaf travel between adjacent control points, in columns.
    n_cols : int

    Returns
    -------
    a_window, b_window : ndarray (n_rows, 2)
        Empty windows (lo > hi) cannot occur when the neighbours themselves
        respect the travel limit with respect to each other at twice the
        distance, which the sequential generation guarantees.
    """
    if not neighbours:
        raise ValueError("travel_windows needs at least one neighbour")
    n_rows = len(neighbours[0][0])
    a_lo = np.zeros(n_rows, np.int64)
    a_hi = np.full(n_rows, n_cols, np.int64)
    b_lo = np.zeros(n_rows, np.int64)
    b_hi = np.full(n_rows, n_cols, np.int64)
    for left, right in neighbours:
        a_lo = np.maximum(a_lo, left - travel_cols)
        a_hi = np.minimum(a_hi, left + travel_cols)
        b_lo = np.maximum(b_lo, right - travel_cols)
        b_hi = np.minimum(b_hi, right + travel_cols)
    # Where two neighbours disagree by more than the travel allows the window
    # collapses; fall back to the midpoint so the aperture stays deliverable
    # as far as possible (the checker reports what remains).
    bad_a = a_lo > a_hi
    a_lo[bad_a] = a_hi[bad_a] = (a_lo[bad_a] + a_hi[bad_a]) // 2
    bad_b = b_lo > b_hi
    b_lo[bad_b] = b_hi[bad_b] = (b_lo[bad_b] + b_hi[bad_b]) // 2
    return np.stack([a_lo, a_hi], 1), np.stack([b_lo, b_hi], 1)


def aperture_mask(left: np.ndarray, right: np.ndarray, n_cols: int) -> np.ndarray:
    """Boolean (n_rows, n_cols) map of the open beamlets of ``[left, right)`` per row."""
    cols = np.arange(n_cols)
    return (cols[None, :] >= left[:, None]) & (cols[None, :] < right[:, None])


# ----------------------------------------------------------------------------- travel windows (vmat_dao)

def _edge_window(edges: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(n_rows, 2) inclusive range of edge indices inside ``[lo, hi]``; nearest edge when none is."""
    tol = 1e-6
    i_lo = np.searchsorted(edges, lo - tol, side="left")
    i_hi = np.searchsorted(edges, hi + tol, side="right") - 1
    empty = i_lo > i_hi
    if np.any(empty):
        mid = 0.5 * (lo[empty] + hi[empty])
        near = np.abs(edges[None, :] - mid[:, None]).argmin(axis=1)
        i_lo[empty] = near
        i_hi[empty] = near
    n = edges.size - 1
    return np.stack([np.clip(i_lo, 0, n), np.clip(i_hi, 0, n)], 1).astype(np.int64)


def _park_positions(grid: BeamletGrid) -> np.ndarray:
    """Per row, the centre of its optimised beamlets (of all active ones for an empty row)."""
    x = np.asarray(grid.x_edges_mm, float)
    xc = 0.5 * (x[1:] + x[:-1])
    act = np.asarray(grid.active, bool)
    any_act = act.any(axis=1)
    all_c = xc[act.any(axis=0)].mean() if act.any() else 0.5 * (x[0] + x[-1])
    cnt = np.maximum(act.sum(axis=1), 1)
    return np.where(any_act, (act * xc[None, :]).sum(axis=1) / cnt, all_c)


def _neighbour_windows(s: int, has: np.ndarray, left: list, right: list, travel_mm: float,
                       n_rows: int, arc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Continuous windows ``[lo, hi]`` (mm) of the x1 and x2 leaves of sector ``s``."""
    a_lo = np.full(n_rows, -np.inf)
    a_hi = np.full(n_rows, np.inf)
    b_lo = np.full(n_rows, -np.inf)
    b_hi = np.full(n_rows, np.inf)
    n = has.size
    for step in (-1, 1):
        k = s + step
        while 0 <= k < n and arc[k] == arc[s] and not has[k]:
            k += step
        if 0 <= k < n and arc[k] == arc[s]:
            reach = abs(k - s) * travel_mm
            a_lo = np.maximum(a_lo, left[k] - reach)
            a_hi = np.minimum(a_hi, left[k] + reach)
            b_lo = np.maximum(b_lo, right[k] - reach)
            b_hi = np.minimum(b_hi, right[k] + reach)
    return a_lo, a_hi, b_lo, b_hi


def _price_sector(g_map: np.ndarray, edges: np.ndarray, windows,
                  park_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    a_lo, a_hi, b_lo, b_hi = windows
    big = 1e6
    aw = _edge_window(edges, np.maximum(a_lo, edges[0] - big), np.minimum(a_hi, edges[-1] + big))
    bw = _edge_window(edges, np.maximum(b_lo, edges[0] - big), np.minimum(b_hi, edges[-1] + big))
    ia, ib, cost = price_aperture(g_map, aw, bw)
    left = np.clip(edges[ia], a_lo, a_hi)
    right = np.clip(edges[ib], b_lo, b_hi)
    # Park closed pairs as near the row's park position as the windows allow: a pair closed at
    # the field edge could not reach the target at the next sectors within the travel limit.
    closed = ia == ib
    if np.any(closed):
        lo = np.maximum(a_lo[closed], b_lo[closed])
        hi = np.minimum(a_hi[closed], b_hi[closed])
        pos = np.clip(park_mm[closed], lo, hi)
        ok = lo <= hi
        left[closed] = np.where(ok, pos, left[closed])
        right[closed] = np.where(ok, pos, right[closed])
    # A closed pair placed where the windows forced the edges apart: close it inside both windows.
    bad = right < left
    if np.any(bad):
        lo = np.maximum(a_lo[bad], b_lo[bad])
        hi = np.minimum(a_hi[bad], b_hi[bad])
        mid = np.clip(0.5 * (left[bad] + right[bad]), lo, hi)
        left[bad] = mid
        right[bad] = mid
    return left, right, cost

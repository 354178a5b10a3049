"""VMAT direct aperture optimisation (DAO) by column generation.

One MLC aperture and one MU weight per arc sector (optimisation control
point).  The method follows Romeijn et al. (2005) for the column generation
and Peng et al. (2012) for its VMAT form:

1. **Pricing.**  From the gradient ``g = dF/dx`` of the plan objective ``F``
   with respect to the beamlet intensities (MU through a fully open beamlet,
   per fraction) every sector that has no aperture yet is priced: per leaf
   pair the open interval with the most negative summed gradient
   (:func:`~sbrtplan.optimizer.dao_pricing.price_aperture`), restricted to
   the leaf positions reachable from the nearest sectors on either side that
   already hold an aperture (``k * max_leaf_travel_mm`` when the neighbour is
   ``k`` sectors away).  The most negative reduced costs win; sectors are
   added one at a time and the windows of the others re-derived after each,
   so apertures chosen in the same iteration stay mutually deliverable.
2. **Master.**  The convex problem in the aperture weights (MU per sector)
   is re-solved with the bounds ``mu_per_deg_range * sector_width_deg``:
   the dose is ``D_total @ P @ w`` with ``P`` the (beamlets x apertures) open
   fractions (a beamlet partially covered by a leaf counts fractionally;
   closed beamlets inside the jaw-tracked field receive the leaf
   transmission).
3. Stop when no sector prices negatively, every sector holds an aperture or
   ``max_iterations`` is reached.  Sectors still empty receive the linear
   interpolation (in leaf position) of their neighbours -- which respects the
   travel limit by construction -- and the minimum MU; a master solve sets
   all weights.
4. **Leaf refinement** (local search): sector by sector, with its neighbours
   fixed, the leaves move towards the aperture the pricing proposes within the
   travel windows (all, half or a quarter of the way, at the same MU or at the
   MU that keeps the sector's integral dose); a move is kept when the objective
   drops.  Sweeps alternate direction, each followed by a master solve.
5. With :class:`~sbrtplan.optimizer.OptimizationStage` stages, the final
   aperture weights are re-solved by
   :func:`~sbrtplan.optimizer.prioritized_solve` on the matrix ``D_total @ P``
   (stage order kept, hard limits exact); steps 1-4 work on the stages'
   summed penalty (:attr:`OptimizationStage.terms`, hard limits as heavily
   weighted quadratic penalties).

The intermediate master problems (a few hundred bounded variables) are solved
by a spectral projected gradient method (Birgin, Martinez and Raydan, SIAM
J. Optim. 10 (2000) 1196-1211), warm-started from the previous weights.

Leaf-travel feasibility is enforced, not just checked: the leaf positions
returned by the pricing (beamlet edges) are clipped to the continuous travel
windows, so ``|x_leaf(s + 1) - x_leaf(s)| <= max_leaf_travel_mm`` holds for
every leaf between adjacent sectors.

Units: ``D`` maps MU per fraction to Gy per fraction (the influence matrix);
the objective sees total dose ``n_fractions * D @ x``, as every dose in the
project is a total.  MU are per fraction.

References
----------
H.E. Romeijn, R.K. Ahuja, J.F. Dempsey, A. Kumar, "A column generation
approach to radiation therapy treatment planning using aperture modulation",
SIAM J. Optim. 15 (2005) 838-862.
F. Peng, X. Jia, X. Gu, M.A. Epelman, H.E. Romeijn, S.B. Jiang, "A new
column-generation-based algorithm for VMAT treatment plan optimization",
Phys. Med. Biol. 57 (2012) 4569-4588.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from .._log import get_logger, timed
from ..beams import BeamletGrid
from ..errors import InputError
from .dao_master import (DoseObjective, _as_objective, _dao_range_matvec, _dao_range_rmatvec,  # noqa: F401
                         _prioritized_master, _solve_master, stage_objective)
from .dao_pricing import _neighbour_windows, _park_positions, _price_sector
from .first_order import single_thread_blas

log = get_logger(__name__)


@dataclass
class ArcSector:
    """One optimisation control point of an arc.

    Parameters
    ----------
    gantry_deg : float
        Gantry angle of the sector centre (IEC 61217).
    beamlet_grid : BeamletGrid
        Beamlets of this control point; grid rows are MLC leaf pairs, columns
        run along the leaf motion (Xb).
    columns : slice
        Its columns in the influence matrix (the active beamlets, row-major).
    arc : int
        Index of the arc the sector belongs to.  Leaf-travel windows and the
        interpolation of empty sectors only link adjacent sectors of the same arc.
    """

    gantry_deg: float
    beamlet_grid: BeamletGrid
    columns: slice
    arc: int = 0


def sectors_from_influence(influence, arc_of_beam: Sequence[int] | None = None) -> list[ArcSector]:
    """One :class:`ArcSector` per beam of an influence matrix (beams in delivery order).

    Parameters
    ----------
    influence : InfluenceMatrix
        With ``geometries``, ``beamlet_grids`` and ``beam_offsets`` (see
        :func:`sbrtplan.dose_engine.influence_matrix`), its beams being the
        optimisation control points of the arcs.
    arc_of_beam : sequence of int, optional
        Arc index of each beam (default: all one arc).
    """
    grids = list(influence.beamlet_grids)
    off = np.asarray(influence.beam_offsets, np.int64)
    if off.size != len(grids) + 1:
        raise InputError(f"sectors_from_influence: {len(grids)} beamlet grids but {off.size} beam offsets; "
                         "expected one more offset than beams")
    arcs = np.zeros(len(grids), int) if arc_of_beam is None else np.asarray(arc_of_beam, int)
    if arcs.shape != (len(grids),):
        raise InputError(f"sectors_from_influence: arc_of_beam has {arcs.size} entries, expected {len(grids)}")
    return [ArcSector(float(influence.geometries[b].gantry_deg), grids[b], slice(int(off[b]), int(off[b + 1])),
                      int(arcs[b])) for b in range(len(grids))]


@dataclass
class DAOResult:
    """Apertures and weights of a VMAT arc found by :func:`vmat_dao`.

    Attributes
    ----------
    left_mm, right_mm : list of ndarray
        Per sector, per beamlet row (leaf pair): positions of the x1 and x2
        leaves at the isocentre plane (mm, IEC BLD Xb).  ``left == right``: closed.
    mu : ndarray
        MU per sector, per fraction.
    x_beamlet : ndarray
        Equivalent beamlet weights (aperture MU spread over its open
        fractions, transmission included), one per influence-matrix column.
    dose_gy : ndarray
        Optimiser dose (total over the course) at the matrix rows.
    history : list of dict
        Per iteration: ``iteration``, ``phase`` (``column_generation``, ``fill``,
        ``refinement``), ``objective``, ``n_apertures``, ``best_reduced_cost``, ``time_s``
        (and ``apertures_moved`` in refinement).
    objective : float
        Final value of the summed penalty the pricing used (see ``stages`` in :func:`vmat_dao`).
    optimization : OptimizationResult or None
        The prioritised master's result (per-stage values, relaxed limits) when it ran.
    """

    left_mm: list[np.ndarray]
    right_mm: list[np.ndarray]
    mu: np.ndarray
    x_beamlet: np.ndarray
    dose_gy: np.ndarray
    history: list[dict] = field(default_factory=list)
    objective: float = float("nan")
    optimization: Any = None


# ----------------------------------------------------------------------------- geometry helpers

def _overlap_fraction(edges: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(n_rows, n_cols) fraction of each column ``[edges[c], edges[c+1]]`` inside ``[lo_r, hi_r]``."""
    e0 = edges[None, :-1]
    e1 = edges[None, 1:]
    ov = np.clip(np.minimum(e1, hi[:, None]) - np.maximum(e0, lo[:, None]), 0.0, None)
    return ov / (e1 - e0)


def aperture_fractions(grid: BeamletGrid, left_mm: np.ndarray, right_mm: np.ndarray,
                       leaf_transmission: float) -> np.ndarray:
    """Relative fluence through each active beamlet for one aperture.

    The open part of a beamlet (its overlap with ``[left, right]``) counts fully,
    the rest of the jaw-tracked field (jaws at the outermost open leaves along
    Xb and the first/last open pair along Yb) counts ``leaf_transmission``;
    beamlets outside the jaws count zero.

    Returns
    -------
    ndarray (n_beamlets,)
        In the row-major order of ``grid.active``.
    """
    x = np.asarray(grid.x_edges_mm, float)
    n_rows, n_cols = grid.shape
    left_mm = np.asarray(left_mm, float)
    right_mm = np.asarray(right_mm, float)
    open_frac = _overlap_fraction(x, left_mm, right_mm)
    is_open = right_mm > left_mm + 1e-9
    frac = np.zeros((n_rows, n_cols))
    if np.any(is_open):
        rows = np.nonzero(is_open)[0]
        jx1 = float(left_mm[is_open].min())
        jx2 = float(right_mm[is_open].max())
        in_jaw = np.zeros(n_rows, bool)
        in_jaw[rows[0]:rows[-1] + 1] = True
        jaw_frac = _overlap_fraction(x, np.full(n_rows, jx1), np.full(n_rows, jx2)) * in_jaw[:, None]
        frac = leaf_transmission * jaw_frac + (1.0 - leaf_transmission) * open_frac
    return frac[grid.active]


# ----------------------------------------------------------------------------- main loop

def vmat_dao(D, sectors: list[ArcSector], stages, *, n_fractions: int,
             mu_per_deg_range: tuple[float, float] = (0.5, 10.0), sector_width_deg: float,
             max_leaf_travel_mm: float, max_iterations: int = 40, apertures_per_iteration: int = 4,
             leaf_transmission: float = 0.015, refine_passes: int = 20,
             prioritized_master: bool = True, master_iterations: int = 150,
             time_limit_s: float | None = None,
             delivery_samples: int = 0,
             progress: Callable[[int, int], None] | None = None) -> DAOResult:
    """Direct aperture optimisation of one or more arcs (one aperture and MU per sector).

    Parameters
    ----------
    D : sparse or dense (n_voxels, n_beamlets)
        Influence matrix, Gy per fraction per MU through a fully open beamlet.
    sectors : list of ArcSector
        In delivery order; adjacent entries are adjacent control points (for
        two arcs, call once per arc or accept the travel limit across the join).
    stages : sequence of OptimizationStage, or an object with ``value_and_grad(dose_gy)``
        The plan objective on the total dose at the rows of ``D``.
    n_fractions : int
    mu_per_deg_range : (float, float)
        Admissible MU per degree of gantry rotation, per fraction.
    sector_width_deg : float
        Gantry rotation covered by one sector.
    max_leaf_travel_mm : float
        Largest leaf travel between adjacent sectors (leaf speed x sector time).
    max_iterations, apertures_per_iteration : int
        Column-generation budget.
    leaf_transmission : float
        Relative fluence through closed leaves inside the jaw-tracked field.
    refine_passes : int
        Sweeps of local leaf-position refinement after the column generation (0: none).
    master_iterations : int
        Iteration cap of each intermediate master solve (warm-started; the final one gets 4x).
    time_limit_s : float, optional
        Processor-time budget (seconds of CPU used by the process, all threads): column
        generation and refinement stop when it is spent (the remaining sectors are
        interpolated and the final master still runs).  Processor time, unlike wall-clock
        time, does not depend on what else the machine runs, so a plan is reproducible.
    delivery_samples : int
        0: a sector delivers its own aperture.  ``m > 0``: a sector's dose is the mean over
        ``m`` equally spaced gantry samples of the aperture interpolated (leaf positions)
        towards the adjacent sector of the same arc, as delivered when the leaves move
        linearly from one sector centre to the next (control points between sector
        centres); a change of one aperture then also changes its neighbours' columns, which
        the refinement accounts for.  The optimiser's dose is then the delivered dose (up to
        the beamlet model).
    prioritized_master : bool
        With :class:`OptimizationStage` stages, re-solve the final aperture weights with
        :func:`prioritized_solve` (stage order and hard limits honoured exactly; the
        column generation itself works on the summed penalty of
        :attr:`OptimizationStage.terms`, hard limits as heavy quadratic penalties).
    progress : callable(done, total), optional
        Called after each column-generation iteration (``total``: ``max_iterations +
        refine_passes``) and each refinement pass (``total``: the iterations run +
        ``refine_passes``).

    Returns
    -------
    DAOResult
    """
    with timed("VMAT direct aperture optimisation", log), single_thread_blas():
        # Small dense products dominate: OpenBLAS threads cost more than they save (see
        # first_order.single_thread_blas); the prioritised master sets its own threads.
        return _vmat_dao(D, sectors, stages, n_fractions=n_fractions, mu_per_deg_range=mu_per_deg_range,
                         sector_width_deg=sector_width_deg, max_leaf_travel_mm=max_leaf_travel_mm,
                         max_iterations=max_iterations, apertures_per_iteration=apertures_per_iteration,
                         leaf_transmission=leaf_transmission, refine_passes=refine_passes,
                         prioritized_master=prioritized_master, master_iterations=master_iterations,
                         time_limit_s=time_limit_s, delivery_samples=delivery_samples, progress=progress)


def _vmat_dao(D, sectors: list[ArcSector], stages, *, n_fractions: int,
              mu_per_deg_range: tuple[float, float] = (0.5, 10.0), sector_width_deg: float,
              max_leaf_travel_mm: float, max_iterations: int = 40, apertures_per_iteration: int = 4,
              leaf_transmission: float = 0.015, refine_passes: int = 20,
              prioritized_master: bool = True, master_iterations: int = 150,
              time_limit_s: float | None = None,
              delivery_samples: int = 0,
              progress: Callable[[int, int], None] | None = None) -> DAOResult:
    n_sec = len(sectors)
    if n_sec == 0:
        raise InputError("vmat_dao: 'sectors' is empty; expected at least one arc sector")
    if n_fractions < 1:
        raise InputError(f"vmat_dao: n_fractions={n_fractions}; expected a positive integer")
    mu_lo_deg, mu_hi_deg = map(float, mu_per_deg_range)
    if not 0.0 <= mu_lo_deg < mu_hi_deg:
        raise InputError(f"vmat_dao: mu_per_deg_range={mu_per_deg_range}; expected 0 <= min < max")
    if sector_width_deg <= 0 or max_leaf_travel_mm <= 0:
        raise InputError(f"vmat_dao: sector_width_deg={sector_width_deg}, max_leaf_travel_mm="
                         f"{max_leaf_travel_mm}; both must be positive")
    if not 0.0 <= leaf_transmission < 0.2:
        raise InputError(f"vmat_dao: leaf_transmission={leaf_transmission}; expected within [0, 0.2)")
    n_vox, n_bl = D.shape
    for i, sec in enumerate(sectors):
        start, stop, step = sec.columns.indices(n_bl)
        if step != 1 or stop - start != sec.beamlet_grid.n_beamlets:
            raise InputError(f"vmat_dao: sector {i} (gantry {sec.gantry_deg} deg) has columns "
                             f"{sec.columns} but its beamlet grid has {sec.beamlet_grid.n_beamlets} beamlets")
    n_rows = {s.beamlet_grid.shape[0] for s in sectors}
    if len(n_rows) != 1:
        raise InputError(f"vmat_dao: sectors have different numbers of leaf rows {sorted(n_rows)}; "
                         "expected one beamlet grid row layout per arc")
    n_rows = n_rows.pop()

    arc_id = np.array([int(sec.arc) for sec in sectors])
    objective = _as_objective(stages)
    # The matrix is used as given (no scaled copy: it is the largest object of a VMAT plan); the
    # fraction count multiplies the vectors instead.
    fx = float(n_fractions)
    Dt = D.tocsc() if sp.issparse(D) else sp.csc_matrix(np.asarray(D))
    # float32 as the project's matrices (one compiled signature of the products, which accumulate in
    # float64); a VMAT plan's matrix is float32 already and is not copied
    Dt = Dt.astype(np.float32, copy=False)
    mu_min = mu_lo_deg * sector_width_deg
    mu_max = mu_hi_deg * sector_width_deg

    has = np.zeros(n_sec, bool)
    left: list = [None] * n_sec
    right: list = [None] * n_sec
    # dose per MU (total) of each sector's aperture; column-major: the refinement reads and writes
    # whole columns, the master's products stream them
    cols_dose = np.zeros((n_vox, n_sec), order="F")
    frac_now: list = [None] * n_sec          # the delivered fractions behind each column
    w = np.zeros(n_sec)
    history: list[dict] = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    dose = np.zeros(n_vox)
    fval, gdose = objective.value_and_grad(dose)

    m_blend = max(int(delivery_samples), 0)
    offsets = (np.arange(m_blend) + 0.5) / m_blend - 0.5 if m_blend else np.zeros(0)

    def neighbour(s, side):
        k = s + side
        return k if 0 <= k < n_sec and arc_id[k] == arc_id[s] and has[k] else None

    def sector_fraction(s, override=None):
        """Relative fluence of sector ``s`` as delivered: the mean over ``m_blend`` gantry samples of
        the aperture interpolated (in leaf position) towards the adjacent sector, the leaves moving
        linearly between sector centres; ``override = (k, left, right)`` replaces sector k's leaves."""
        def leaves(k):
            if override is not None and override[0] == k:
                return override[1], override[2]
            return left[k], right[k]
        grid = sectors[s].beamlet_grid
        l0, r0 = leaves(s)
        f0 = aperture_fractions(grid, l0, r0, leaf_transmission)
        if not m_blend:
            return f0
        acc = np.zeros_like(f0)
        for u in offsets:
            k = neighbour(s, -1 if u < 0 else 1)
            if k is None or u == 0:
                acc += f0
                continue
            lk, rk = leaves(k)
            t = abs(float(u))
            acc += aperture_fractions(grid, (1 - t) * l0 + t * lk, (1 - t) * r0 + t * rk, leaf_transmission)
        return acc / m_blend

    def product(s, frac):
        """Dose (total) of fractions ``frac`` through sector ``s``'s columns."""
        start = sectors[s].columns.indices(n_bl)[0]
        return _dao_range_matvec(Dt.indptr, Dt.indices, Dt.data, start,
                                 fx * np.ascontiguousarray(frac, dtype=np.float64), n_vox)

    def column(s, override=None):
        return product(s, sector_fraction(s, override))

    def recompute(k):
        frac_now[k] = sector_fraction(k)
        cols_dose[:, k] = product(k, frac_now[k])

    def moved_column(k, frac):
        """Column ``k`` for the fractions ``frac``: the current column plus the product of the change
        (non-zero only where a leaf moved; the products skip zero fractions)."""
        return cols_dose[:, k] + product(k, frac - frac_now[k])

    def affected(s):
        """Sectors whose delivered column depends on sector s's aperture."""
        out = [s]
        if m_blend:
            out += [k for k in (neighbour(s, -1), neighbour(s, 1)) if k is not None]
        return out

    def set_aperture(s, lft, rgt):
        left[s], right[s] = lft, rgt
        has[s] = True
        for k in affected(s):
            recompute(k)

    park = [_park_positions(sec.beamlet_grid) for sec in sectors]

    def out_of_time() -> bool:
        # processor time, not wall-clock time: the same inputs give the same plan on a busy machine
        return time_limit_s is not None and time.process_time() - cpu0 > time_limit_s

    for it in range(max_iterations):
        if has.all():
            break
        if out_of_time():
            log.info("DAO: processor-time limit of %.0f s reached after %d iterations", time_limit_s, it)
            break
        g_beam = _dao_range_rmatvec(Dt.indptr, Dt.indices, Dt.data, 0, n_bl,
                                    np.ascontiguousarray(gdose, dtype=np.float64)) * fx
        best_cost = 0.0
        added = 0
        priced: dict[int, tuple] = {}
        stale = set(np.nonzero(~has)[0].tolist())
        for _ in range(apertures_per_iteration):
            # Only sectors whose nearest filled neighbours changed need pricing again.
            for s in stale:
                sec = sectors[s]
                grid = sec.beamlet_grid
                g_map = np.zeros(grid.shape)
                # Opening over beamlets outside the optimised set delivers unmodelled dose:
                # price them as unattractive so leaves stay closed there.
                g_map[~grid.active] = np.abs(g_beam[sec.columns]).max(initial=0.0) + 1e-12
                g_map[grid.active] = g_beam[sec.columns]
                win = _neighbour_windows(s, has, left, right, max_leaf_travel_mm, n_rows, arc_id)
                lft, rgt, cost = _price_sector(g_map, np.asarray(grid.x_edges_mm, float), win,
                                               park[s])
                priced[s] = (cost, s, lft, rgt)
            stale = set()
            cand = min(priced.values(), key=lambda c: (c[0], c[1])) if priced else None
            if cand is None or cand[0] >= -1e-12 * max(1.0, abs(fval)):
                break
            best_cost = min(best_cost, cand[0])
            s_new = cand[1]
            set_aperture(s_new, cand[2], cand[3])
            w[s_new] = mu_min
            added += 1
            del priced[s_new]
            for step in (-1, 1):
                k = s_new + step
                while 0 <= k < n_sec and arc_id[k] == arc_id[s_new] and not has[k]:
                    stale.add(k)
                    k += step
        if added == 0:
            log.info("DAO iteration %d: no sector prices negatively; stopping", it)
            break
        idx = np.nonzero(has)[0]
        w_sub, fval = _solve_master(cols_dose[:, idx], objective, w[idx], np.full(idx.size, mu_min),
                                    np.full(idx.size, mu_max), max_iter=master_iterations)
        w[idx] = w_sub
        dose = cols_dose[:, idx] @ w_sub
        fval, gdose = objective.value_and_grad(dose)
        rec = {"iteration": it, "phase": "column_generation", "objective": float(fval),
               "n_apertures": int(has.sum()),
               "best_reduced_cost": float(best_cost), "time_s": time.perf_counter() - t0}
        history.append(rec)
        log.info("DAO iteration %d: objective %.6g, %d/%d apertures, best reduced cost %.3g, %.1f s",
                 it, fval, rec["n_apertures"], n_sec, best_cost, rec["time_s"])
        if progress is not None:
            progress(it + 1, max_iterations + refine_passes)

    n_cg = len(history)
    priced = has.copy()
    _fill_empty_sectors(has, left, right, sectors, n_rows, arc_id)
    for s in np.nonzero(~priced)[0]:
        has[s] = True
        w[s] = mu_min
    for s in range(n_sec):
        recompute(s)
    lb_all, ub_all = np.full(n_sec, mu_min), np.full(n_sec, mu_max)
    w, fval = _solve_master(cols_dose, objective, w, lb_all, ub_all,
                            max_iter=master_iterations * (4 if refine_passes == 0 else 1))
    dose = cols_dose @ w
    fval, gdose = objective.value_and_grad(dose)
    history.append({"iteration": len(history), "phase": "fill", "objective": float(fval),
                    "n_apertures": n_sec, "best_reduced_cost": 0.0, "time_s": time.perf_counter() - t0})

    # Local refinement of the leaf positions (one sector at a time, neighbours fixed): the priced
    # aperture is the steepest first-order replacement within the travel windows; moves towards
    # it (full, half, quarter way -- convex combinations stay inside the windows) are accepted
    # when they lower the objective, then the master re-solves the weights.
    for p in range(refine_passes):
        f_start = fval
        moved = 0
        order = range(n_sec) if p % 2 == 0 else range(n_sec - 1, -1, -1)
        for s in order:
            sec = sectors[s]
            grid = sec.beamlet_grid
            g_map = np.zeros(grid.shape)
            g_s = _dao_range_rmatvec(Dt.indptr, Dt.indices, Dt.data, sec.columns.indices(n_bl)[0],
                                     sec.beamlet_grid.n_beamlets, fx * np.ascontiguousarray(gdose, dtype=np.float64))
            g_map[~grid.active] = np.abs(g_s).max(initial=0.0) + 1e-12
            g_map[grid.active] = g_s
            win = _neighbour_windows(s, has, left, right, max_leaf_travel_mm, n_rows, arc_id)
            lft, rgt, _ = _price_sector(g_map, np.asarray(grid.x_edges_mm, float), win, park[s])
            done = False
            nbs = [k for k in affected(s) if k != s]
            for alpha in (1.0, 0.5, 0.25):
                l_c = left[s] + alpha * (lft - left[s])
                r_c = right[s] + alpha * (rgt - right[s])
                f_s = sector_fraction(s, (s, l_c, r_c))
                col = moved_column(s, f_s)
                # the adjacent sectors' delivered fluence blends towards this aperture
                f_nb = [sector_fraction(k, (s, l_c, r_c)) for k in nbs]
                nb_cols = [moved_column(k, f) for k, f in zip(nbs, f_nb)]
                d_nb = dose.copy()
                for k, ck in zip(nbs, nb_cols):
                    d_nb += w[k] * (ck - cols_dose[:, k])
                # Try the move at the same MU and at the MU that keeps the sector's integral dose
                # (a smaller aperture usually wants more MU).
                old_sum, new_sum = float(cols_dose[:, s].sum()), float(col.sum())
                w_keep = float(np.clip(w[s] * old_sum / new_sum, mu_min, mu_max)) if new_sum > 0 else w[s]
                for w_c in ((w[s], w_keep) if abs(w_keep - w[s]) > 1e-9 * max(w[s], 1.0) else (w[s],)):
                    d_c = d_nb + w_c * col - w[s] * cols_dose[:, s]
                    f_c, g_c = objective.value_and_grad(d_c)
                    if f_c < fval * (1 - 1e-9):
                        left[s], right[s] = l_c, r_c
                        cols_dose[:, s] = col
                        frac_now[s] = f_s
                        for k, ck, f in zip(nbs, nb_cols, f_nb):
                            cols_dose[:, k] = ck
                            frac_now[k] = f
                        w[s] = w_c
                        dose, fval, gdose = d_c, f_c, g_c
                        moved += 1
                        done = True
                        break
                if done:
                    break
        w, fval = _solve_master(cols_dose, objective, w, lb_all, ub_all,
                                max_iter=4 * master_iterations if p == refine_passes - 1 else master_iterations)
        dose = cols_dose @ w
        fval, gdose = objective.value_and_grad(dose)
        history.append({"iteration": len(history), "phase": "refinement", "objective": float(fval),
                        "n_apertures": n_sec, "best_reduced_cost": 0.0,
                        "time_s": time.perf_counter() - t0, "apertures_moved": moved})
        log.info("DAO refinement pass %d: objective %.6g, %d apertures moved", p, fval, moved)
        if progress is not None:
            progress(n_cg + p + 1, n_cg + refine_passes)
        if moved == 0 or fval > f_start * (1 - 1e-4) or out_of_time():
            if p < refine_passes - 1:   # converged early: polish the weights once more
                w, fval = _solve_master(cols_dose, objective, w, lb_all, ub_all, max_iter=4 * master_iterations)
                dose = cols_dose @ w
                fval, gdose = objective.value_and_grad(dose)
                history[-1]["objective"] = float(fval)
            break
    log.info("DAO final: objective %.6g, %d apertures, total MU/fx %.0f", fval, n_sec, w.sum())

    opt_result = None
    if prioritized_master and isinstance(stages, (list, tuple)) and stages \
            and all(hasattr(st, "objectives") and hasattr(st, "constraints") for st in stages):
        opt_result = _prioritized_master(cols_dose, stages, w, lb_all, ub_all)
        if opt_result is not None:
            w = np.clip(np.asarray(opt_result.x, float), lb_all, ub_all)
            dose = cols_dose @ w
            fval, _ = objective.value_and_grad(dose)
            history.append({"iteration": len(history), "phase": "prioritized_master",
                            "objective": float(fval), "n_apertures": n_sec, "best_reduced_cost": 0.0,
                            "time_s": time.perf_counter() - t0})
            log.info("DAO prioritised master: objective %.6g, total MU/fx %.0f", fval, w.sum())

    x = np.zeros(n_bl)
    for s, sec in enumerate(sectors):
        x[sec.columns] += w[s] * sector_fraction(s)
    return DAOResult(left_mm=[np.asarray(a, float) for a in left],
                     right_mm=[np.asarray(b, float) for b in right], mu=w, x_beamlet=x,
                     dose_gy=dose, history=history, objective=float(fval), optimization=opt_result)


def _fill_empty_sectors(has: np.ndarray, left: list, right: list, sectors: list[ArcSector],
                        n_rows: int, arc: np.ndarray) -> None:
    """Give each empty sector the leaf-position interpolation of its nearest filled neighbours (same arc)."""
    n = has.size
    for s in range(n):
        if has[s]:
            continue
        filled = np.nonzero(has & (arc == arc[s]))[0]
        if filled.size == 0:
            # Nothing in this arc priced negatively: closed pairs parked over the optimised beamlets.
            c = _park_positions(sectors[s].beamlet_grid)
            left[s], right[s] = c.copy(), c.copy()
            continue
        lo = filled[filled < s]
        hi = filled[filled > s]
        if lo.size and hi.size:
            k0, k1 = lo[-1], hi[0]
            t = (s - k0) / (k1 - k0)
            left[s] = (1 - t) * left[k0] + t * left[k1]
            right[s] = (1 - t) * right[k0] + t * right[k1]
        else:
            k = lo[-1] if lo.size else hi[0]
            left[s], right[s] = left[k].copy(), right[k].copy()

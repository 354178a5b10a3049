"""Master problem and linear algebra of the VMAT direct aperture optimisation (:mod:`.dao`).

* the plan objective as one smooth function of the dose (:class:`_StageObjective`), its terms
  evaluated on two threads in two balanced groups;
* the master problem in the aperture weights (:func:`_solve_master`, spectral projected gradient);
* the products with the influence matrix restricted to a sector's columns and with the sector-dose
  matrix, as numba kernels that use both cores and give the same result whatever the number of
  threads (fixed partial sums, added in a fixed order).

Measured on the spine demo (51 670 voxels, 120 sectors, 170 M non-zeros; one thread of a loaded
2-core machine): a master iteration's two products with the sector-dose matrix took 9.4 ms with
BLAS in float64, the objective 13 ms of processor time when its 20 terms went to the thread pool one
by one (5.7 ms evaluated in turn): the masters were half the DAO.  The matrix is read in float32
(half the memory traffic; the products still accumulate in float64, so the objective stays smooth
for the line search), and the objective's terms go to the pool as one group per thread.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, Sequence

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from ..errors import InputError, OptimizationError
from .first_order import helper_thread

#: Fixed number of partial sums of the parallel products (their result does not depend on the threads).
_N_PART = 4


class DoseObjective(Protocol):
    """Anything that gives the plan objective and its dose gradient."""

    def value_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective value and gradient with respect to the (total) dose at the matrix rows."""
        ...


# ----------------------------------------------------------------------------- objective adapters

class _StageObjective:
    """All stages' penalties as one smooth function of the dose (``value_and_grad``).

    Uses :attr:`OptimizationStage.terms`: the objectives with their weights and
    every hard constraint as a heavily weighted quadratic penalty.  A term that
    appears in several stages counts once, with its largest weight.
    Fluence-smoothness terms contribute nothing (apertures are smooth by
    construction).
    """

    def __init__(self, stages: Sequence[Any]):
        by_term: dict[int, Any] = {}
        for st in stages:
            terms = getattr(st, "terms", None)
            if terms is None:
                raise InputError(f"vmat_dao: stage {st!r} has no 'terms'; expected OptimizationStage "
                                 "objects or an object with value_and_grad(dose_gy)")
            for t in terms:
                key = id(getattr(t, "term", t))
                if key not in by_term or getattr(t, "weight", 1.0) > getattr(by_term[key], "weight", 1.0):
                    by_term[key] = t
        self.terms = list(by_term.values())
        if not self.terms:
            raise InputError("vmat_dao: the stages have no objective or constraint terms")
        self._groups: list[list[int]] | None = None

    @staticmethod
    def _sparse(term, dose_gy: np.ndarray):
        # (value, rows or None, gradient on those rows): region terms return their own rows only
        f = getattr(term, "value_and_sparse_grad", None)
        if f is not None:
            return f(dose_gy)
        v, g = term.value_and_grad(dose_gy)
        return v, None, g

    def _group(self, idx: list[int], dose_gy: np.ndarray) -> list:
        return [self._sparse(self.terms[i], dose_gy) for i in idx]

    def value_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        # The terms are independent (each reads the dose, none writes it) and their sorts, sparse
        # products and element-wise work release the GIL: on two cores the terms are evaluated in two
        # groups of about equal cost (measured on the first call), one on the pool's thread and one on
        # this one -- one hand-over per evaluation (one per term cost more than the terms on a loaded
        # machine).  The sum is taken in the terms' own order, so the result does not depend on the
        # scheduling.
        pool = helper_thread("dao-terms")
        n = len(self.terms)
        if pool is None or n < 2:
            results = self._group(list(range(n)), dose_gy)
        elif self._groups is None:
            cost, results = [], []
            for t in self.terms:
                t0 = time.perf_counter()
                results.append(self._sparse(t, dose_gy))
                cost.append(time.perf_counter() - t0)
            groups: list[list[int]] = [[], []]
            load = [0.0, 0.0]
            for i in np.argsort(-np.asarray(cost), kind="stable"):
                k = int(load[1] < load[0])
                groups[k].append(int(i))
                load[k] += cost[i]
            self._groups = groups
        else:
            fut = pool.submit(self._group, self._groups[1], dose_gy)
            mine = self._group(self._groups[0], dose_gy)
            theirs = fut.result()
            results = [None] * n
            for idx, res in ((self._groups[0], mine), (self._groups[1], theirs)):
                for i, r in zip(idx, res):
                    results[i] = r
        val = 0.0
        grad = np.zeros(len(dose_gy))
        for v, rows, g in results:
            val += float(v)
            if rows is None:
                grad += g
            else:
                grad[rows] += g      # unique rows: the same sum as adding the full-length gradient
        return val, grad


def stage_objective(stages: Any) -> DoseObjective:
    """The stages' terms summed into one smooth dose objective (hard limits as heavy penalties)."""
    return _as_objective(stages)


def _as_objective(stages: Any) -> DoseObjective:
    if hasattr(stages, "value_and_grad"):
        return stages
    if isinstance(stages, (list, tuple)) and stages and all(hasattr(s, "value_and_grad") for s in stages):
        class _Sum:
            def value_and_grad(self, d):
                vals = [s.value_and_grad(d) for s in stages]
                return sum(float(v) for v, _ in vals), sum(g for _, g in vals)
        return _Sum()
    if not isinstance(stages, (list, tuple)) or not stages:
        raise InputError("vmat_dao: 'stages' must be a non-empty list of OptimizationStage or an "
                         "object with value_and_grad(dose_gy)")
    return _StageObjective(list(stages))


def _prioritized_master(A: np.ndarray, stages: Sequence[Any], w0: np.ndarray, lb: np.ndarray,
                        ub: np.ndarray):
    """Re-solve the aperture weights with the prioritised optimiser (hard limits, stage order)."""
    from dataclasses import replace

    from .prioritized import prioritized_solve
    from .terms import Smoothness

    # Smoothness terms index beamlets, not apertures: drop them from the master.
    clean = [replace(st, objectives=[(t, wt) for t, wt in st.objectives if not isinstance(t, Smoothness)],
                     constraints=[c for c in st.constraints if not isinstance(c, Smoothness)])
             for st in stages]
    clean = [st for st in clean if st.objectives or st.constraints]
    if not clean:
        return None
    return prioritized_solve(sp.csr_matrix(np.asarray(A, np.float32)), clean, x_lb=lb, x_ub=ub, x0=w0)


# ----------------------------------------------------------------------------- dense products

@njit(cache=True, parallel=True)
def _dao_cols_matvec(a, x, out):  # pragma: no cover - compiled
    """``out = a @ x`` for a column-major (Fortran) float32 ``a``, accumulated in float64."""
    n, k = a.shape
    nb = (n + 4095) // 4096
    for b in prange(nb):
        lo = b * 4096
        hi = min(n, lo + 4096)
        for i in range(lo, hi):
            out[i] = 0.0
        for j in range(k):
            xj = x[j]
            if xj == 0.0:
                continue
            for i in range(lo, hi):
                out[i] += a[i, j] * xj


@njit(cache=True, parallel=True)
def _dao_cols_rmatvec(a, y, out):  # pragma: no cover - compiled
    """``out = a.T @ y`` for a column-major float32 ``a``, accumulated in float64 (one dot per column)."""
    n, k = a.shape
    for j in prange(k):
        s = 0.0
        for i in range(n):
            s += a[i, j] * y[i]
        out[j] = s


class _Cols:
    """The master's matrix (voxels x apertures) held column-major in float32 for its products."""

    def __init__(self, A: np.ndarray):
        self.a = np.asfortranarray(A, dtype=np.float32)

    def dot(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(self.a.shape[0])
        _dao_cols_matvec(self.a, np.ascontiguousarray(x, dtype=np.float64), out)
        return out

    def tdot(self, y: np.ndarray) -> np.ndarray:
        out = np.empty(self.a.shape[1])
        _dao_cols_rmatvec(self.a, np.ascontiguousarray(y, dtype=np.float64), out)
        return out


# ----------------------------------------------------------------------------- master problem

def _solve_master(A: np.ndarray, objective: DoseObjective, w0: np.ndarray, lb: np.ndarray,
                  ub: np.ndarray, max_iter: int = 1000, rtol: float = 1e-8) -> tuple[np.ndarray, float]:
    """Minimise ``F(A w)`` over ``lb <= w <= ub``.

    Spectral projected gradient (Birgin, Martinez, Raydan, SIAM J. Optim. 10 (2000) 1196) with
    a non-monotone Armijo line search: the master has a few hundred variables at most, and this
    needs no LAPACK (whose threads oversubscribe a small shared machine) and no factorisation.
    ``A`` is read in float32 (:class:`_Cols`); the dose ``A w`` and the gradient accumulate in float64.
    """
    if A.shape[1] == 0:
        v, _ = objective.value_and_grad(np.zeros(A.shape[0]))
        return w0, float(v)
    M = _Cols(A)
    w = np.clip(np.asarray(w0, float), lb, ub)
    Aw = M.dot(w)
    f, gd = objective.value_and_grad(Aw)
    g = M.tdot(gd)
    recent = [f]
    best = (f, w.copy())
    best_hist = [f]
    # Initial step: a projected-gradient step that changes w by about 1 % of the box size.
    gn = np.abs(np.clip(w - g, lb, ub) - w).max()
    box = np.where(np.isfinite(ub - lb), ub - lb, np.abs(w) + 1.0)
    step = 0.01 * float(np.max(box)) / gn if gn > 0 else 1.0
    for _ in range(max_iter):
        d = np.clip(w - step * g, lb, ub) - w
        if np.abs(d).max() <= 1e-12 * max(1.0, np.abs(w).max()):
            break
        gtd = float(g @ d)
        f_ref = max(recent[-10:])
        lam = 1.0
        Ad = M.dot(d)
        while True:
            f_new, gd_new = objective.value_and_grad(Aw + lam * Ad)
            if f_new <= f_ref + 1e-4 * lam * gtd or lam < 1e-10:
                break
            lam *= 0.5
        w_new = w + lam * d
        Aw = Aw + lam * Ad
        g_new = M.tdot(gd_new)
        s_vec, y_vec = w_new - w, g_new - g
        sy = float(s_vec @ y_vec)
        step = float(s_vec @ s_vec) / sy if sy > 0 else 10.0 * step
        step = min(max(step, 1e-12), 1e12)
        w, f, g = w_new, f_new, g_new
        recent.append(f)
        if f < best[0]:
            best = (f, w.copy())
        best_hist.append(best[0])
        # Converged when the best value gained less than rtol (relative) over 20 iterations.
        if len(best_hist) > 20 and best_hist[-21] - best[0] <= rtol * max(abs(best[0]), 1e-30):
            break
    w = np.clip(best[1], lb, ub)
    if not np.all(np.isfinite(w)):
        raise OptimizationError("vmat_dao: master problem diverged (non-finite aperture weights)")
    f, _ = objective.value_and_grad(M.dot(w))
    return w, float(f)


# ----------------------------------------------------------------------------- sparse products

@njit(cache=True, parallel=True)
def _dao_range_rmatvec(indptr, indices, data, start, n_cols, y):  # pragma: no cover - compiled
    """``D[:, start:start + n_cols].T @ y`` for a CSC matrix (one column per iteration: parallel)."""
    out = np.zeros(n_cols)
    for j in prange(n_cols):
        acc = 0.0
        for k in range(indptr[start + j], indptr[start + j + 1]):
            acc += data[k] * y[indices[k]]
        out[j] = acc
    return out


@njit(cache=True, parallel=True)
def _dao_range_matvec(indptr, indices, data, start, x, n_rows):  # pragma: no cover - compiled
    """``D[:, start:start + x.size] @ x`` for a CSC matrix, without copying the column block.

    The columns are split into ``_N_PART`` fixed parts summed apart (in parallel) and then in order,
    so that the result does not depend on the number of threads.
    """
    n = x.size
    part = np.zeros((_N_PART, n_rows))
    for c in prange(_N_PART):
        for j in range(c * n // _N_PART, (c + 1) * n // _N_PART):
            xj = x[j]
            if xj == 0.0:
                continue
            for k in range(indptr[start + j], indptr[start + j + 1]):
                part[c, indices[k]] += data[k] * xj
    out = np.empty(n_rows)
    nb = (n_rows + 4095) // 4096
    for b in prange(nb):
        for i in range(b * 4096, min(n_rows, (b + 1) * 4096)):
            s = 0.0
            for c in range(_N_PART):
                s += part[c, i]
            out[i] = s
    return out

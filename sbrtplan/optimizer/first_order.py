"""First-order solver path: augmented Lagrangian with bounded L-BFGS-B inner solves.

One stage is

    minimise    F(x) = sum_k w_k pen_k(D x)
    subject to  c_j(D x) <= 0          (hard limits, kept objectives of earlier stages)
                x_lb <= x <= x_ub

Method (Nocedal & Wright, *Numerical Optimization*, 2nd ed., ch. 17.4, for
inequality constraints): for multipliers ``lambda_j >= 0`` and penalty
parameters ``rho_j`` minimise the augmented Lagrangian

    L(x, t) = F(x, t) + sum_j rho_j / 2 [ (c_j + lambda_j / rho_j)_+^2 - (lambda_j / rho_j)^2 ]

over the box with L-BFGS-B (scipy), then set ``lambda_j <- (lambda_j + rho_j c_j)_+``
and multiply ``rho_j`` by 5 where the violation did not fall by a factor 4.
Constraints are scaled to relative units (``(d - L) / L``), so that a tolerance
of 1e-3 means 0.1 % of the limit.  Hard limits are aimed at ``L (1 - tol)`` so
that the returned plan meets the real limit.  A maximum-dose limit is one
constraint per row (with one multiplier per row), a dose-volume (CVaR) limit
one scalar constraint.

Kept objectives of earlier stages (``F_k(x) <= B_k``) are not penalised
quadratically (a quadratic penalty on a sum of squared hinges is badly
conditioned); they enter as Lagrangian weights ``lambda_k F_k / B_k`` plus a
fixed one-sided penalty ``KEEP_RHO/2 (F_k / B_k - 1)_+^2`` (which keeps the inner
minimiser continuous in ``lambda_k`` when the stage objective is linear), and
``lambda_k`` is found by a safeguarded root search on ``log lambda_k``
(expansion by 4, then false position with the Illinois rule).

CVaR terms carry their Rockafellar-Uryasev threshold ``t`` as an extra
(unbounded) variable; the hinge ``(z)_+`` inside is replaced by a smooth upper
bound (a shifted Huber function, ``h(z) >= (z)_+``, ``h(z) - (z)_+ <= eps/8``
with ``eps = smoothing x L``), so the smoothed CVaR over-estimates the exact one
and a smoothed limit that is met is met exactly too.  The smoothing starts at
1 % of the limit and shrinks by 0.3 per outer iteration to 0.02 % (continuation:
well conditioned early, accurate at the end).

The inner solves run with one OpenBLAS thread (:func:`single_thread_blas`) and
stop at the time budget (checked at every L-BFGS-B iteration).

The dose matrix restricted to the rows used by the terms, and its transpose,
are held as CSR (float32 data, float64 accumulation) and multiplied by
parallel numba kernels.
"""

from __future__ import annotations

import ctypes
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from scipy.optimize import minimize

from .._log import get_logger
from .problem import KeptObjective
from .terms import (ConstraintKind, LinearMean, LowerDVH, MeanDose, Smoothness, UpperDVH, _QuadLower,
                    _QuadUpper)

log = get_logger(__name__)


# ----------------------------------------------------------------------------- sparse kernels

@njit(parallel=True, cache=True)
def _csr_matvec(indptr, indices, data, x, out):  # pragma: no cover - compiled
    n = out.shape[0]
    for i in prange(n):
        s = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            s += data[k] * x[indices[k]]
        out[i] = s


@njit(cache=True)
def _csr_matvec_serial(indptr, indices, data, x, out):  # pragma: no cover - compiled
    n = out.shape[0]
    for i in range(n):
        s = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            s += data[k] * x[indices[k]]
        out[i] = s


PARALLEL_MIN_NNZ = 2_000_000
OBJ_NORM = 1.0
RHO0 = 10.0
KEEP_METHOD = "dual"
KEEP_RHO = 0.1
MAXCOR = 50
INNER_LATER = 1.0


class MatrixOps:
    """``A x`` and ``A^T g`` for a sparse matrix held twice as CSR (``A`` and ``A^T``).

    float32 data, float64 vectors and accumulation (scipy would up-cast the
    whole matrix to float64 on every product).  Matrices with fewer than
    :data:`PARALLEL_MIN_NNZ` non-zeros use a serial kernel: thread start-up
    costs more than it saves there.
    """

    def __init__(self, A: sp.spmatrix):
        A = sp.csr_matrix(A, dtype=np.float32)
        A.sum_duplicates()
        self.shape = A.shape
        self._kernel = _csr_matvec if A.nnz >= PARALLEL_MIN_NNZ else _csr_matvec_serial
        self._a = self._arrays(A)
        self._at = self._arrays(A.T.tocsr())

    @staticmethod
    def _arrays(M: sp.csr_matrix):
        idx_t = np.int32 if M.nnz < 2**31 - 1 else np.int64
        return (M.indptr.astype(np.int64), M.indices.astype(idx_t), M.data.astype(np.float32))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(self.shape[0])
        self._kernel(*self._a, np.ascontiguousarray(x, dtype=np.float64), out)
        return out

    def rmatvec(self, g: np.ndarray) -> np.ndarray:
        out = np.empty(self.shape[1])
        self._kernel(*self._at, np.ascontiguousarray(g, dtype=np.float64), out)
        return out


# ----------------------------------------------------------------------------- BLAS threads

_HELPERS: dict[str, ThreadPoolExecutor | None] = {}


def helper_thread(name: str) -> ThreadPoolExecutor | None:
    """One worker thread named ``name`` beside the caller's, created on first use (None on one core).

    Each use has its own worker, so a task of one never waits behind the other's.
    """
    if name not in _HELPERS:
        n = os.cpu_count() or 1
        _HELPERS[name] = ThreadPoolExecutor(1, thread_name_prefix=name) if n > 1 else None
    return _HELPERS[name]


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with one OpenBLAS thread (restored afterwards).

    L-BFGS-B's update works on vectors of a few thousand entries through BLAS;
    OpenBLAS threads cost far more than they save there (35x slower per
    iteration measured on a loaded 2-core machine).  The loaded OpenBLAS
    libraries are found in the process map (Linux); elsewhere nothing changes.
    """
    handles = []
    try:
        with open("/proc/self/maps") as fh:
            paths = {ln.split()[-1] for ln in fh if "openblas" in ln.lower() and ".so" in ln}
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for suffix in ("", "64_"):
                for prefix in ("scipy_openblas", "openblas"):
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        n = int(get())
                        set_(1)
                        handles.append((set_, n))
    except OSError:
        pass
    try:
        yield
    finally:
        for set_, n in handles:
            set_(n)


# ----------------------------------------------------------------------------- smooth primitives

def _huber_up(z: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth upper bound of (z)_+ and its derivative (shifted Huber)."""
    u = z + 0.5 * eps
    h = np.where(u <= 0, 0.0, np.where(u < eps, u * u / (2 * eps), u - 0.5 * eps))
    dh = np.clip(u / eps, 0.0, 1.0)
    return h, dh


@dataclass(eq=False)
class _Fn:
    """A smooth scalar function of (local dose, fluence, aux variables) with gradients."""

    term: object
    loc: np.ndarray | None   # local rows of the term's region
    aux: int                  # index of its aux variable (-1: none)
    eps: float = 0.0

    def measure(self, d, x, t):
        """Smoothed constraint measure m and its gradients (gd_local, gx, gt)."""
        term = self.term
        if isinstance(term, UpperDVH):
            w, f = term.region.w, term.fraction
            h, dh = _huber_up(d[self.loc] - t[self.aux], self.eps)
            m = t[self.aux] + (w @ h) / f
            gdl = w * dh / f
            return m, gdl, None, 1.0 - gdl.sum()
        if isinstance(term, LowerDVH):
            w, f = term.region.w, term.fraction
            h, dh = _huber_up(t[self.aux] - d[self.loc], self.eps)
            m = t[self.aux] - (w @ h) / f
            gdl = w * dh / f
            return m, gdl, None, 1.0 - gdl.sum()
        if isinstance(term, (MeanDose, LinearMean)):
            return float(term.region.w @ d[self.loc]), term.region.w, None, 0.0
        if isinstance(term, _QuadUpper):
            e = np.maximum(d[self.loc] - term.dose_gy, 0.0)
            return float(term.region.w @ (e * e)), 2.0 * term.region.w * e, None, 0.0
        if isinstance(term, _QuadLower):
            e = np.maximum(term.dose_gy - d[self.loc], 0.0)
            return float(term.region.w @ (e * e)), -2.0 * term.region.w * e, None, 0.0
        if isinstance(term, Smoothness):
            v, gx = term.fluence_value_and_grad(x)
            return v, None, gx, 0.0
        raise TypeError(f"unsupported term {type(term).__name__}")

    def penalty(self, d, x, t):
        """Smoothed penalty and gradients."""
        term = self.term
        if isinstance(term, (UpperDVH, LowerDVH, MeanDose)):
            m, gdl, gx, gt = self.measure(d, x, t)
            e = (m - term.dose_gy) if term.upper else (term.dose_gy - m)
            if e <= 0:
                return 0.0, None, None, 0.0
            s = 2.0 * e if term.upper else -2.0 * e
            return e * e, s * gdl, None, s * gt
        return self.measure(d, x, t)


class _Problem:
    """Augmented Lagrangian of one stage in scaled variables z = (x / x_scale, t / d_ref)."""

    def __init__(self, ops: MatrixOps, remap: np.ndarray, objectives, constraints, *, x_scale: float,
                 d_ref: float, smoothing: float, tol: float):
        self.ops, self.remap = ops, remap
        self._smoothing = smoothing
        self.aux_fns: list[_Fn] = []
        self.n = ops.shape[1]
        self.xs, self.dref = x_scale, d_ref
        self.n_aux = 0
        self.obj = [(self._fn(t), w / d_ref ** t.penalty_power) for t, w in objectives if w > 0]
        self.kept, self.kept_bound, self.kept_terms = [], [], []
        self.vox = []     # (loc, L_target, scale, sign, term)
        self.scal = []    # (fn or list of (fn, w), L_target, scale, sign, term)
        for c in constraints:
            if isinstance(c, KeptObjective):
                # kept objectives: Lagrangian weight lambda (no quadratic penalty) found by a safeguarded
                # root search on lambda; see _update_kept
                fns = [(self._fn(t), w) for t, w in c.objectives]
                self.kept.append(fns)
                self.kept_bound.append(max(float(c.bound), 1e-12))
                self.kept_terms.append(c)
                continue
            kind = c.constraint_kind
            L = c.constraint_limit
            if kind in (ConstraintKind.VOXEL_UPPER, ConstraintKind.VOXEL_LOWER):
                s = max(abs(L), 1e-2 * d_ref)
                sign = 1.0 if kind is ConstraintKind.VOXEL_UPPER else -1.0
                self.vox.append((remap[c.region.rows], L * (1 - sign * tol), s, sign, c))
            else:
                sign = 1.0 if kind is ConstraintKind.SCALAR_UPPER else -1.0
                s = max(abs(L), 1e-2 * d_ref ** c.penalty_power)
                self.scal.append((self._fn(c), L * (1 - sign * tol) if L != 0 else 0.0, s, sign, c, None))
        self.lam_vox = [np.zeros(v[0].size) for v in self.vox]
        self.lam_scal = np.zeros(len(self.scal))
        self.rho_vox = np.full(len(self.vox), 10.0)
        self.rho_scal = np.full(len(self.scal), 10.0)
        nk = len(self.kept)
        self.lam_kept = np.ones(nk) if KEEP_METHOD == "dual" else np.zeros(nk)
        self.rho_kept = np.full(nk, RHO0)
        self.kept_lo = [None] * nk    # (log lambda, c) with c > 0 (violated)
        self.kept_hi = [None] * nk    # (log lambda, c) with c < 0 (slack)
        self.kept_side = [0] * nk     # Illinois bookkeeping: which end moved last
        self.evals = 0

    def _fn(self, term) -> _Fn:
        loc = None if isinstance(term, Smoothness) else self.remap[term.region.rows]
        aux = -1
        eps = 0.0
        if isinstance(term, (UpperDVH, LowerDVH)):
            aux = self.n_aux
            self.n_aux += 1
            eps = self._smoothing * max(term.dose_gy, 1e-3 * self.dref)
        fn = _Fn(term, loc, aux, eps)
        if aux >= 0:
            self.aux_fns.append(fn)
        return fn

    def set_smoothing(self, smoothing: float) -> None:
        """Continuation: a smaller hinge smoothing as the solve converges."""
        self._smoothing = smoothing
        for fn in self.aux_fns:
            fn.eps = smoothing * max(fn.term.dose_gy, 1e-3 * self.dref)

    def split(self, z):
        return z[:self.n] * self.xs, z[self.n:] * self.dref

    def init_aux(self, x):
        """Thresholds t at the current value-at-risk of each CVaR term."""
        d = self.ops.matvec(x)
        t = np.zeros(self.n_aux)
        fns = [f for f, _ in self.obj]
        for item in self.scal:
            fns.append(item[0])
        for k in self.kept:
            fns += [f for f, _ in k]
        for f in fns:
            if f.aux >= 0:
                term = f.term
                dl = d[f.loc]
                order = np.argsort(dl)
                cw = np.cumsum(term.region.w[order])
                q = 1.0 - term.fraction if isinstance(term, UpperDVH) else term.fraction
                k = min(int(np.searchsorted(cw, q)), dl.size - 1)
                t[f.aux] = dl[order[k]]
        return t

    def _accumulate(self, fn, coef, d, x, t, gd, gx, gt, measure: bool):
        v, gdl, gxl, gtl = (fn.measure if measure else fn.penalty)(d, x, t)
        if coef != 0.0:
            if gdl is not None:
                gd[fn.loc] += coef * gdl
            if gxl is not None:
                gx += coef * gxl
            if fn.aux >= 0:
                gt[fn.aux] += coef * gtl
        return v

    def constraint_values(self, d, x, t):
        """Scaled violations: list of arrays (voxel) and an array (scalar)."""
        cv = [sign * (d[loc] - L) / s for (loc, L, s, sign, _) in self.vox]
        cs = np.zeros(len(self.scal))
        dummy_gd, dummy_gx, dummy_gt = np.zeros(d.size), np.zeros(x.size), np.zeros(self.n_aux)
        for j, (fn, L, s, sign, _, delta) in enumerate(self.scal):
            m = self._accumulate(fn, 0.0, d, x, t, dummy_gd, dummy_gx, dummy_gt, True)
            cs[j] = sign * (m - L) / s
        return cv, cs

    def kept_values(self, d, x, t):
        """Relative excess F_k / bound_k - 1 of every kept objective."""
        gd, gx, gt = np.zeros(d.size), np.zeros(x.size), np.zeros(self.n_aux)
        out = np.zeros(len(self.kept))
        for j, fns in enumerate(self.kept):
            F = sum(w * self._accumulate(f, 0.0, d, x, t, gd, gx, gt, False) for f, w in fns)
            out[j] = F / self.kept_bound[j] - 1.0
        return out

    def update_kept(self, ck: np.ndarray, tol: float) -> None:
        """Root search on log(lambda_k) for F_k = bound_k (F_k(lambda) decreases as lambda grows).

        Expands by a factor 4 until the root is bracketed, then false position
        with the Illinois modification (superlinear, never leaves the bracket).
        A constraint that stays slack with lambda -> 0 is inactive (lambda = 0).
        """
        for j, c in enumerate(ck):
            lam = self.lam_kept[j]
            if lam <= 0.0:
                if c > tol:
                    self.lam_kept[j] = 1e-6
                continue
            if abs(c) <= tol or (c < 0 and lam <= 1e-9):
                if c < 0 and lam <= 1e-9:
                    self.lam_kept[j] = 0.0
                continue
            ll = np.log(lam)
            if c > 0:
                if self.kept_lo[j] is not None and self.kept_side[j] == -1:
                    pass
                self.kept_lo[j] = (ll, c)
                if self.kept_side[j] == 1 and self.kept_hi[j] is not None:   # same side twice: Illinois
                    self.kept_hi[j] = (self.kept_hi[j][0], 0.5 * self.kept_hi[j][1])
                self.kept_side[j] = 1
            else:
                self.kept_hi[j] = (ll, c)
                if self.kept_side[j] == -1 and self.kept_lo[j] is not None:
                    self.kept_lo[j] = (self.kept_lo[j][0], 0.5 * self.kept_lo[j][1])
                self.kept_side[j] = -1
            lo, hi = self.kept_lo[j], self.kept_hi[j]
            if lo is None:
                new = ll - np.log(4.0)
            elif hi is None:
                new = ll + np.log(4.0)
            else:
                new = lo[0] + (hi[0] - lo[0]) * lo[1] / (lo[1] - hi[1])
                # a bracket end the search keeps returning to is stale (the other multipliers and the
                # smoothing moved the root): drop it and expand again
                if abs(new - lo[0]) < 1e-3:
                    self.kept_lo[j] = None
                    new = lo[0] - np.log(2.0)
                elif abs(new - hi[0]) < 1e-3:
                    self.kept_hi[j] = None
                    new = hi[0] + np.log(2.0)
            self.lam_kept[j] = float(np.exp(new))

    def objective_value(self, d, x, t):
        gd, gx, gt = np.zeros(d.size), np.zeros(x.size), np.zeros(self.n_aux)
        return sum(w * self._accumulate(f, 0.0, d, x, t, gd, gx, gt, False) for f, w in self.obj)

    def lagrangian(self, z, penalty_only: bool = False):
        self.evals += 1
        x, t = self.split(z)
        d = self.ops.matvec(x)
        gd, gx, gt = np.zeros(d.size), np.zeros(self.n), np.zeros(self.n_aux)
        val = 0.0
        if not penalty_only:
            for fn, w in self.obj:
                val += w * self._accumulate(fn, w, d, x, t, gd, gx, gt, False)
        for j, (loc, L, s, sign, _) in enumerate(self.vox):
            rho, lam = self.rho_vox[j], self.lam_vox[j]
            c = sign * (d[loc] - L) / s
            a = np.maximum(c + lam / rho, 0.0)
            val += 0.5 * rho * float(a @ a - (lam / rho) @ (lam / rho))
            gd[loc] += rho * a * sign / s
        for j, fns in enumerate(self.kept):
            B = self.kept_bound[j]
            if KEEP_METHOD == "dual" or penalty_only:
                lam = self.lam_kept[j] / B
                if KEEP_RHO > 0 and not penalty_only:
                    # Lagrangian weight plus a fixed one-sided quadratic penalty: the penalty makes the
                    # inner minimiser depend continuously on lambda (no jumps when the objective is linear)
                    gd2, gx2, gt2 = np.zeros(d.size), np.zeros(self.n), np.zeros(self.n_aux)
                    F = sum(w * self._accumulate(f, w, d, x, t, gd2, gx2, gt2, False) for f, w in fns)
                    e = max(F / B - 1.0, 0.0)
                    val += lam * F + 0.5 * KEEP_RHO * e * e
                    k = lam + KEEP_RHO * e / B
                    if k > 0:
                        gd += k * gd2
                        gx += k * gx2
                        gt += k * gt2
                    continue
                if lam > 0:
                    for f, w in fns:
                        val += lam * w * self._accumulate(f, lam * w, d, x, t, gd, gx, gt, False)
                continue
            gd2, gx2, gt2 = np.zeros(d.size), np.zeros(self.n), np.zeros(self.n_aux)
            F = sum(w * self._accumulate(f, w, d, x, t, gd2, gx2, gt2, False) for f, w in fns)
            rho, lam = self.rho_kept[j], self.lam_kept[j]
            a = max(F / B - 1.0 + lam / rho, 0.0)
            val += 0.5 * rho * (a * a - (lam / rho) ** 2)
            if a > 0:
                k = rho * a / B
                gd += k * gd2
                gx += k * gx2
                gt += k * gt2
        for j, (fn, L, s, sign, _, delta) in enumerate(self.scal):
            rho, lam = self.rho_scal[j], self.lam_scal[j]
            # gradients stay on the term's own rows (no full-size temporaries)
            m, gdl, gxl, gtl = fn.measure(d, x, t)
            c = sign * (m - L) / s
            a = max(c + lam / rho, 0.0)
            val += 0.5 * rho * (a * a - (lam / rho) ** 2)
            if a > 0:
                k = rho * a * sign / s
                if gdl is not None:
                    gd[fn.loc] += k * gdl
                if gxl is not None:
                    gx += k * gxl
                if fn.aux >= 0:
                    gt[fn.aux] += k * gtl
        gx = gx + self.ops.rmatvec(gd)
        grad = np.concatenate([gx * self.xs, gt * self.dref])
        return float(val), grad


def solve_stage(*args, **kwargs) -> dict:
    """Solve one stage (see :func:`_solve_stage`) with single-threaded BLAS."""
    with single_thread_blas():
        return _solve_stage(*args, **kwargs)


def _solve_stage(ops: MatrixOps, remap: np.ndarray, objectives, constraints, lb: np.ndarray, ub: np.ndarray,
                x0: np.ndarray, *, x_scale: float, d_ref: float, smoothing: float = 1e-2, min_smoothing: float = 2e-4,
                tol: float = 1e-3,
                max_outer: int = 40, inner_iter: int = 300, keep_tol: float = 1e-3, time_limit_s: float | None = None,
                feasibility: bool = False) -> dict:
    """Solve one stage; see the module docstring.

    Returns a dict with ``x``, ``status`` ("optimal", "violated" or "time_limit"),
    ``iterations`` (L-BFGS-B iterations), ``max_violation`` (relative) and ``outer``.

    With ``feasibility=True`` the objective is dropped and the constraints
    become quadratic penalties weighted by each term's ``relax_cost``: the result is the
    plan that violates the hard limits least (used to relax infeasible limits).
    """
    P = _Problem(ops, remap, objectives, constraints, x_scale=x_scale, d_ref=d_ref, smoothing=smoothing, tol=tol)
    # the budget is processor time (the DAO's clock): a busy machine does not stop a stage earlier
    t0 = time.process_time()
    xs = np.broadcast_to(np.asarray(x_scale, dtype=float), lb.shape)
    z = np.concatenate([np.clip(x0, lb, ub) / xs, P.init_aux(np.clip(x0, lb, ub)) / d_ref])
    bounds = [(lo / s, None if not np.isfinite(hi) else hi / s) for lo, hi, s in zip(lb, ub, xs)]
    bounds += [(None, None)] * P.n_aux
    iters = 0
    status = "optimal"
    if P.obj and not feasibility:
        # objective normalised to about 1 at the start so that rho0 means the same for every stage
        x_start, t_start = P.split(z)
        f0 = P.objective_value(ops.matvec(x_start), x_start, t_start)
        norm = OBJ_NORM / max(f0, 1e-4)
        P.obj = [(f, w * norm) for f, w in P.obj]
        P.rho_vox[:] = RHO0
        P.rho_scal[:] = RHO0
        P.rho_kept[:] = RHO0
    if feasibility:
        # with lambda = 0 the augmented Lagrangian is the quadratic penalty sum rho_j/2 (c_j)_+^2
        P.rho_vox = np.array([1e3 * getattr(v[4], "relax_cost", 1.0) for v in P.vox])
        P.rho_scal = np.array([1e3 * getattr(v[4], "relax_cost", 1.0) for v in P.scal])
        # kept objectives enter with a large fixed weight (the earlier stages' results come first)
        P.lam_kept[:] = 1e3 * np.array([c.relax_cost for c in P.kept_terms])
        res = minimize(P.lagrangian, z, args=(True,), jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(maxiter=inner_iter * 4, maxcor=20, ftol=1e-15, gtol=1e-10, maxls=50))
        x, _ = P.split(res.x)
        return dict(x=x, status="feasibility", iterations=int(res.nit), max_violation=np.nan, outer=1)

    def stop_at_deadline(intermediate_result=None):
        # the processor-time budget is checked at every L-BFGS-B iteration, not only between outer iterations
        if time_limit_s is not None and time.process_time() - t0 > time_limit_s:
            raise StopIteration

    prev_viol_vox = np.full(len(P.vox), np.inf)
    prev_viol_scal = np.full(len(P.scal), np.inf)
    prev_obj = np.inf
    prev_ck = np.full(len(P.kept), np.inf)
    max_viol = 0.0
    outer = 0
    for outer in range(1, max_outer + 1):
        it_budget = inner_iter if outer == 1 else max(int(inner_iter * INNER_LATER), 50)
        res = minimize(P.lagrangian, z, jac=True, method="L-BFGS-B", bounds=bounds, callback=stop_at_deadline,
                       options=dict(maxiter=it_budget, maxcor=MAXCOR, ftol=1e-13, gtol=1e-9, maxls=50))
        z = res.x
        iters += int(res.nit)
        x, t = P.split(z)
        d = ops.matvec(x)
        cv, cs = P.constraint_values(d, x, t)
        ck = P.kept_values(d, x, t)
        viol_vox = np.array([max(float(c.max()), 0.0) for c in cv]) if cv else np.zeros(0)
        viol_scal = np.maximum(cs, 0.0)
        max_viol = float(max(viol_vox.max(initial=0.0), viol_scal.max(initial=0.0), np.maximum(ck, 0).max(initial=0.0)))
        kept_done = bool(np.all((np.abs(ck) <= keep_tol) | ((ck < 0) & (P.lam_kept <= 0))))
        if KEEP_METHOD == "dual":
            P.update_kept(ck, keep_tol)
        else:
            kept_done = bool(np.all(ck <= keep_tol))
            P.lam_kept = np.maximum(P.lam_kept + P.rho_kept * ck, 0.0)
            growk = (ck > keep_tol) & (ck > 0.25 * prev_ck)
            P.rho_kept[growk] = np.minimum(P.rho_kept[growk] * 5.0, 1e7)
            prev_ck = np.maximum(ck, 0.0)
        obj = P.objective_value(d, x, t)
        for j in range(len(P.vox)):
            P.lam_vox[j] = np.maximum(P.lam_vox[j] + P.rho_vox[j] * cv[j], 0.0)
            if viol_vox[j] > tol and viol_vox[j] > 0.25 * prev_viol_vox[j]:
                P.rho_vox[j] = min(P.rho_vox[j] * 5.0, 1e7)
        P.lam_scal = np.maximum(P.lam_scal + P.rho_scal * cs, 0.0)
        grow = (viol_scal > tol) & (viol_scal > 0.25 * prev_viol_scal)
        P.rho_scal[grow] = np.minimum(P.rho_scal[grow] * 5.0, 1e7)
        prev_viol_vox, prev_viol_scal = viol_vox, viol_scal
        converged_obj = abs(obj - prev_obj) <= 1e-3 * max(abs(obj), 1e-9)
        prev_obj = obj
        log.debug("AL outer %d: objective %.6g, max violation %.2e, %d L-BFGS-B iterations (%s)", outer, obj,
                  max_viol, res.nit, res.message)
        smoothed_done = not P.aux_fns or P._smoothing <= min_smoothing
        if not smoothed_done:
            P.set_smoothing(max(P._smoothing * 0.3, min_smoothing))
        elif max_viol <= tol and kept_done and (converged_obj or res.nit < it_budget):
            break
        if time_limit_s is not None and time.process_time() - t0 > time_limit_s:
            status = "time_limit"
            break
        rho_all = np.concatenate([P.rho_vox, P.rho_scal])
        if max_viol > tol and rho_all.size and rho_all.max() >= 1e7 and outer >= 8:
            break
    x, _ = P.split(z)
    if max_viol > tol and status == "optimal":
        status = "violated"
    return dict(x=np.clip(x, lb, ub), status=status, iterations=iters, max_violation=max_viol, outer=outer)

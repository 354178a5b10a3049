"""Weighted quadratic-penalty optimisation with adaptive weights (the fast full-size path).

The objective is a sum of one-sided quadratic penalties on the dose ``d = D x``::

    F(x) = sum_k w_k / W_k * sum_{i in R_k} v_i * (d_i - r_{k,i})_+^2      (over-dose terms)
         + ...                                  (r_{k,i} - d_i)_+^2      (under-dose terms)

with row weights ``v_i`` (relative voxel volume, ``W_k = sum v_i``) and a
reference dose per row (a limit, the prescription, or a fall-off profile).
``F`` is convex and smooth, so bounded L-BFGS-B (x >= 0, optional bounds)
converges in a few hundred iterations of two sparse products each.

Hard limits are not constraints here: after each solve every limit is
measured exactly on the optimiser dose (its DVH metric, not the surrogate),
and the weight of each violated limit is multiplied (and its reference moved
below the limit) before the next solve.  This is the adaptive-penalty
scheme of commercial optimisers; the prioritised convex model
(:func:`prioritized_solve`) remains the reference on problems small enough to
solve it exactly, and the final plan is always checked against every goal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from .._log import get_logger
from .first_order import MatrixOps, helper_thread, single_thread_blas

log = get_logger(__name__)


@dataclass
class Penalty:
    """One-sided quadratic penalty on some rows of the dose matrix.

    Parameters
    ----------
    name : str
    rows : int array
    reference_gy : float or array (one per row)
    weight : float
    over : bool
        True: penalise dose above the reference; False: below.
    row_weights : array, optional
        Relative volume of each row (default 1).
    allowed_fraction : float
        Over-dose terms: this fraction of the region (its hottest part) may
        exceed the reference (a dose-volume limit ``D_v <= L``).  At each
        evaluation only the rows below the current dose at that volume are
        penalised (Wu and Mohan 2000): the hottest ``v`` are left free, the
        rest pushed under the reference.  Not convex, but it is what a DVH
        limit means; a plain maximum (``0``) would forbid the volume the
        protocol allows and cost target coverage next to the organ.
        Under-dose terms: the coldest fraction is left free (a coverage goal
        ``V_Rx >= 1 - v``: the cold volume the goal allows goes where the
        organ limits push, instead of cooling the whole target).
    """

    name: str
    rows: np.ndarray
    reference_gy: np.ndarray | float
    weight: float
    over: bool
    row_weights: np.ndarray | None = None
    allowed_fraction: float = 0.0

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.reference_gy = np.broadcast_to(np.asarray(self.reference_gy, float), self.rows.shape).copy()
        w = np.ones(self.rows.size) if self.row_weights is None else np.asarray(self.row_weights, float)
        self.row_weights = w / max(float(w.sum()), 1e-12)


@dataclass
class Limit:
    """A dose-volume limit measured exactly after each solve.

    ``volume`` is the irradiated volume the limit applies to, as a fraction of
    the region (0 for a maximum dose, 1 for a mean dose is expressed by
    ``mean=True``).  The limit holds when the dose exceeded by that volume
    (or the mean) is at most ``limit_gy``.  With ``lower=True`` it is a
    coverage goal on an under-dose penalty: the dose reached by all but the
    coldest ``volume_fraction`` must be at least ``limit_gy`` (``D95 >= Rx``
    is ``volume_fraction=0.05``); when violated the penalty's weight grows.
    ``growth``: weight factor when violated (default: the solver's
    ``weight_growth``); ``max_weight_factor``: the weight never grows beyond
    this multiple of its value at the first round (a soft goal must not
    make every other term negligible).  ``priority``: after a round only the violated limits of the most
    important violated priority (smallest number) are re-weighted, so that a
    coverage goal (priority 1) never grows against a hard organ limit
    (priority 0) that is not yet met.  ``measure_weights``: relative volume of the penalty's rows for the
    measurement when the penalty's own row weights are not volumes.  A violated lower limit whose
    weight has reached its cap cannot act any more: the next priority is re-weighted instead.
    ``floor_gy``: the penalty's
    reference is never lowered below it when the limit is violated (a
    near-maximum limit on a target region must not pull the whole region
    under its prescription).
    """

    penalty: Penalty
    limit_gy: float
    volume_fraction: float = 0.0
    mean: bool = False
    label: str = ""
    floor_gy: float = 0.0
    lower: bool = False
    measure_weights: np.ndarray | None = None
    priority: int = 0
    growth: float | None = None
    max_weight_factor: float = np.inf
    #: the plan is normalised to this limit (``penalty_solve(normalize=True)``)
    normalizes: bool = False
    #: measure this limit on the dose scaled so that ``normalized_by`` (the coverage goal) holds,
    #: as the plan's final normalisation will scale it (a target hot spot rises with the coverage)
    normalized_by: "Limit | None" = field(default=None, repr=False)
    #: ... but never scaled beyond what these upper limits allow (the normalisation stops at a
    #: hard organ limit: spine coverage next to the cord is not scaled up)
    scale_caps: list = field(default_factory=list, repr=False)
    #: the penalty's weight when the limit was first measured (the base of ``max_weight_factor``,
    #: kept over successive solves: a warm-started re-solve must not restart the cap)
    start_weight: float | None = field(default=None, repr=False)

    def value(self, dose: np.ndarray) -> float:
        v = self._raw_value(dose)
        n = self.normalized_by
        if n is not None:
            c = n.value(dose)
            if c > 0:
                scale = n.limit_gy / c
                for cap in self.scale_caps:
                    vc = cap._raw_value(dose)
                    if vc > 0:
                        scale = min(scale, cap.limit_gy / vc)
                # within a factor 1.25 either way: far from coverage the scaled figure means little
                v *= float(np.clip(scale, 0.8, 1.25))
        return v

    def _raw_value(self, dose: np.ndarray) -> float:
        p = self.penalty
        d = dose[p.rows]
        w = p.row_weights
        if self.measure_weights is not None:
            w = np.asarray(self.measure_weights, float)
            w = w / max(float(w.sum()), 1e-12)
        if self.mean:
            return float(np.dot(w, d))
        if self.lower:
            return _cold_dose_at_fraction(d, w, self.volume_fraction)
        return _dose_at_fraction(d, w, self.volume_fraction)

    def can_act(self) -> bool:
        """Whether re-weighting still changes the penalty (an upper limit also lowers its reference)."""
        if not self.lower or self.start_weight is None:
            return True
        return self.penalty.weight < self.start_weight * self.max_weight_factor * (1.0 - 1e-9)

    def violated(self, value: float) -> bool:
        """True when ``value`` (from :meth:`value`) breaks the limit (0.1 % tolerance)."""
        if self.lower:
            return value < self.limit_gy * 0.999
        return value > self.limit_gy * 1.001


def _dose_at_fraction(d: np.ndarray, w: np.ndarray, fraction: float) -> float:
    """Dose exceeded by the hottest ``fraction`` of the (weighted) rows."""
    order = np.argsort(-d)
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, max(fraction, 1e-9)))
    return float(d[order][min(k, d.size - 1)])


def _cold_dose_at_fraction(d: np.ndarray, w: np.ndarray, fraction: float) -> float:
    """Dose not reached by the coldest ``fraction`` of the (weighted) rows."""
    order = np.argsort(d)
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, max(fraction, 1e-9)))
    return float(d[order][min(k, d.size - 1)])


@dataclass
class FluenceRegularizer:
    """Penalties on the variables themselves: fluence smoothness and total MU.

    ``F_reg(x) = smooth_weight * mean_pairs (g (x_a - x_b))^2 + mu_weight * g * sum(x)``

    with ``g`` (Gy per MU) converting MU into dose so that the weights compare with the
    dose penalties (Gy^2 per unit weight).  The first term is the usual IMRT fluence
    smoothing (neighbouring beamlets along and across the leaves); it removes the
    beamlet-to-beamlet spikes that cost segments and MU and that the sequencer cannot
    reproduce.  The second is a linear MU penalty (convex, it favours open fields).

    Parameters
    ----------
    pairs : sparse (n_pairs, n_vars)
        One row per neighbouring pair, ``+1`` and ``-1`` in its two columns.
    gy_per_mu : float
        Typical total dose per MU of one variable (e.g. the median beamlet peak).
    smooth_weight, mu_weight : float
    """

    pairs: sp.spmatrix
    gy_per_mu: float
    smooth_weight: float = 0.0
    mu_weight: float = 0.0

    def __post_init__(self) -> None:
        P = sp.csr_matrix(self.pairs, dtype=np.float64)
        n_pairs = max(P.shape[0], 1)
        self._q = (P.T @ P).tocsr() * (self.smooth_weight * self.gy_per_mu ** 2 / n_pairs)

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        qx = self._q @ x
        f = float(x @ qx) + self.mu_weight * self.gy_per_mu * float(x.sum())
        return f, 2.0 * qx + self.mu_weight * self.gy_per_mu


def beamlet_neighbour_pairs(grids, offsets) -> sp.csr_matrix:
    """Difference operator of neighbouring active beamlets (same beam, along rows and columns).

    Parameters
    ----------
    grids : list of BeamletGrid-like (``active`` (n_rows, n_cols) bool)
    offsets : (n_beams + 1,) int
        First column of each beam in the dose matrix.
    """
    a_idx, b_idx = [], []
    for k, g in enumerate(grids):
        act = np.asarray(g.active, bool)
        idx = -np.ones(act.shape, np.int64)
        idx[act] = np.arange(int(act.sum())) + int(offsets[k])
        for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
            ok = (a >= 0) & (b >= 0)
            a_idx.append(a[ok])
            b_idx.append(b[ok])
    a = np.concatenate(a_idx) if a_idx else np.zeros(0, np.int64)
    b = np.concatenate(b_idx) if b_idx else np.zeros(0, np.int64)
    rows = np.arange(a.size)
    return sp.csr_matrix((np.r_[np.ones(a.size), -np.ones(b.size)], (np.r_[rows, rows], np.r_[a, b])),
                         shape=(a.size, int(offsets[-1])))


@dataclass
class PenaltyResult:
    x: np.ndarray
    dose_gy: np.ndarray
    objective: float
    rounds: list[dict] = field(default_factory=list)
    violated: list[str] = field(default_factory=list)


class PenaltyObjective:
    """``F(dose)`` and its gradient with respect to the dose at every row."""

    def __init__(self, penalties: list[Penalty], n_rows: int):
        self.penalties = penalties
        self.n_rows = n_rows

    def value_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        g = np.zeros(self.n_rows)
        f = 0.0
        for p in self.penalties:
            d = dose_gy[p.rows]
            r = d - p.reference_gy
            r = np.maximum(r, 0.0) if p.over else np.minimum(r, 0.0)
            if p.allowed_fraction > 0.0:
                if p.over:
                    r = np.where(d <= _dose_at_fraction(d, p.row_weights, p.allowed_fraction), r, 0.0)
                else:
                    r = np.where(d >= _cold_dose_at_fraction(d, p.row_weights, p.allowed_fraction), r, 0.0)
            wr = p.weight * p.row_weights * r
            f += float(np.dot(wr, r))
            g += np.bincount(p.rows, weights=2.0 * wr, minlength=self.n_rows)
        return f, g


class DenseOps:
    """``A x`` and ``A^T g`` of a dense (n_rows, n_vars) matrix with few columns (apertures).

    float64 (L-BFGS-B's line search needs the objective smooth to ~1e-10; float32 products make it
    stop early); BLAS does the products (a few apertures per beam make the matrix dense: a sparse
    format would cost more than it saves).  BLAS runs on one thread here (L-BFGS-B's small vector
    updates are slower with threads, ``first_order.single_thread_blas``), so ``A x`` of a tall
    matrix is split in two row blocks computed side by side; the split falls on a multiple of
    64 rows, where every row's dot product is computed exactly as in the whole product.
    ``A^T g`` is not split: two partial sums would change its rounding.
    """

    def __init__(self, A: np.ndarray):
        self._a = np.ascontiguousarray(A, dtype=np.float64)   # no copy when already so
        self.shape = self._a.shape
        half = (self.shape[0] // 2) // 64 * 64
        self._half = half if half >= _SPLIT_MIN_ROWS else 0

    def matvec(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        pool = helper_thread("dense-products") if self._half else None
        if pool is None:
            return self._a @ x
        h = self._half
        lower = pool.submit(np.matmul, self._a[h:], x)
        return np.concatenate([self._a[:h] @ x, lower.result()])

    def rmatvec(self, g: np.ndarray) -> np.ndarray:
        # the transpose is a view: BLAS reads it in place (no second copy of the matrix)
        return self._a.T @ np.asarray(g, np.float64)


#: Rows below which a dense product is not split between two threads (the hand-over costs more).
_SPLIT_MIN_ROWS = 32768


def _operator(D):
    """Product operator of ``D``: dense BLAS for an ndarray, the parallel CSR kernels otherwise."""
    return DenseOps(D) if isinstance(D, np.ndarray) else MatrixOps(D)


def _lbfgs(ops: MatrixOps, obj: PenaltyObjective, x0: np.ndarray, lb, ub, max_iter: int,
           regularizer: FluenceRegularizer | None = None):
    def fun(x):
        d = ops.matvec(x)
        f, g = obj.value_and_grad(d)
        gx = ops.rmatvec(g)
        if regularizer is not None:
            fr, gr = regularizer.value_and_grad(x)
            f += fr
            gx += gr
        return f, gx

    bounds = list(zip(lb, ub))
    # one OpenBLAS thread: L-BFGS-B's small vector updates are many times slower with BLAS threads
    # competing with the parallel matrix products (first_order.single_thread_blas)
    with single_thread_blas():
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(maxiter=max_iter, maxcor=20, ftol=1e-10, gtol=1e-9))
    if int(res.nit) == 0:
        log.info("L-BFGS-B stopped at once: %s", res.message)
    return res.x, float(res.fun), int(res.nit)


def normalisation_caps(limits, norm: Limit) -> list[Limit]:
    """The upper limits the plan's normalisation never scales past: every upper limit of a higher
    priority than the normalising coverage goal (hard organ limits, the PTV maximum), as the
    protocols' priority order has it (coverage yields to them).  Limits measured on the normalised
    dose (``Limit.normalized_by``) are capped by them (``Limit.scale_caps``)."""
    return [lim for lim in limits if lim is not norm and not lim.lower and lim.priority < norm.priority]


def _normalized(ops, lim: Limit, x: np.ndarray, dose: np.ndarray, lb: np.ndarray):
    """``x`` scaled so that the normalising limit (the coverage goal) holds exactly."""
    v = lim.value(dose)
    if not v > 0:
        return x, dose
    s = float(np.clip(lim.limit_gy / v, 0.5, 2.0))
    xs = np.maximum(x * s, lb)
    return xs, ops.matvec(xs)


def penalty_solve(D, penalties: list[Penalty], limits: list[Limit] = (), *, x0: np.ndarray | None = None,
                  x_lb: float | np.ndarray = 0.0, x_ub: float | np.ndarray = np.inf, rounds: int = 4,
                  max_iter: int = 400, weight_growth: float = 4.0,
                  regularizer: FluenceRegularizer | None = None, normalize: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> PenaltyResult:
    """Minimise the penalties; re-weight violated limits between rounds.

    Parameters
    ----------
    D : sparse or ndarray (n_rows, n_vars)
        Total dose per unit of each variable (dense for a few aperture columns).
    penalties : list of Penalty
    limits : list of Limit
        Each refers to one of ``penalties``; after a round, a violated limit's
        penalty weight is multiplied by ``weight_growth`` and its reference
        lowered by the relative excess.
    x0, x_lb, x_ub : starting point and bounds.
    rounds : int
        Solves at most (stops early when every limit holds).
    max_iter : int
        L-BFGS-B iterations per round.
    regularizer : FluenceRegularizer, optional
        Smoothness and MU penalties on the variables.
    normalize : bool
        After each round, scale the weights so that the first limit with ``normalizes=True``
        (the coverage goal) holds exactly, as the plan's final normalisation will, and measure
        every other limit on that dose: the re-weighting then acts on what the normalised plan
        delivers (a hot spot or an organ dose the scaling would raise), not on a dose the
        normalisation changes afterwards.

    Returns
    -------
    PenaltyResult
    """
    ops = _operator(D)   # float32 CSR of D and D^T (parallel numba products) or dense BLAS
    n = ops.shape[1]
    lb = np.broadcast_to(np.asarray(x_lb, float), (n,)).copy()
    ub = np.broadcast_to(np.asarray(x_ub, float), (n,)).copy()
    ub = np.where(np.isfinite(ub), ub, None)
    x = np.maximum(np.zeros(n) if x0 is None else np.asarray(x0, float), lb)
    if x0 is None:
        # Start where the targets' under-dose penalties are about met on average.
        under = [p for p in penalties if not p.over]
        if under:
            d1 = ops.matvec(np.ones(n))
            ratio = np.median([np.median(p.reference_gy) / max(float(np.median(d1[p.rows])), 1e-9) for p in under])
            x = np.maximum(np.full(n, ratio), lb)
    obj = PenaltyObjective(penalties, ops.shape[0])
    norm = next((lim for lim in limits if lim.normalizes), None) if normalize else None
    hist: list[dict] = []
    violated: list[str] = []
    f = float("nan")
    for r in range(rounds):
        x, f, nit = _lbfgs(ops, obj, x, lb, list(ub), max_iter, regularizer)
        dose = ops.matvec(x)
        if norm is not None:
            x, dose = _normalized(ops, norm, x, dose, lb)
        violated = []
        for lim in limits:
            if lim.start_weight is None:
                lim.start_weight = lim.penalty.weight
        broken = [(lim, v) for lim in limits for v in [lim.value(dose)] if lim.violated(v)]
        # the most important violated priority that can still act: a coverage goal whose weight has
        # reached its cap no longer changes anything, and must not block the next priority forever
        acting = [lim.priority for lim, _ in broken if lim.can_act()]
        first = min(acting, default=0)
        for lim, v in broken:
            violated.append(lim.label or lim.penalty.name)
            if lim.priority == first:
                grown = lim.penalty.weight * (weight_growth if lim.growth is None else lim.growth)
                lim.penalty.weight = min(grown, lim.start_weight * lim.max_weight_factor)
                if not lim.lower:
                    lim.penalty.reference_gy = np.maximum(lim.penalty.reference_gy * max(0.8, lim.limit_gy / v),
                                                          lim.floor_gy)
        hist.append({"round": r, "objective": f, "iterations": nit, "violated": list(violated)})
        log.info("penalty round %d: objective %.5g after %d iterations; %d limits violated%s", r, f, nit,
                 len(violated), (": " + ", ".join(violated[:6])) if violated else "")
        if progress is not None:
            progress(r + 1, rounds)
        if not violated or not acting:
            break   # every limit met, or none can change any more
    dose = ops.matvec(x)
    return PenaltyResult(x, dose, f, hist, violated)


def objective_solve(D, objective, *, x0: np.ndarray | None = None, x_lb: float | np.ndarray = 0.0,
                    x_ub: float | np.ndarray = np.inf, max_iter: int = 500) -> PenaltyResult:
    """Minimise any smooth dose objective (``value_and_grad(dose)``) over bounded weights with L-BFGS-B.

    Used with the prioritised stages' terms summed into one function (hard limits as heavy
    penalties; ``optimizer.dao.stage_objective``): the fast path for full-size plans.
    """
    ops = _operator(D)
    n = ops.shape[1]
    lb = np.broadcast_to(np.asarray(x_lb, float), (n,)).copy()
    ub = np.broadcast_to(np.asarray(x_ub, float), (n,)).copy()
    ub_list = [None if not np.isfinite(u) else float(u) for u in ub]
    if x0 is None:
        x0 = np.ones(n)
        f1, _ = objective.value_and_grad(ops.matvec(x0))
        # scale the start so that the mean dose is of the order of the objective's doses
        for s in (0.1, 0.3, 3.0, 10.0, 30.0, 100.0):
            f, _ = objective.value_and_grad(ops.matvec(s * np.ones(n)))
            if f < f1:
                f1, x0 = f, s * np.ones(n)
    x, f, nit = _lbfgs(ops, objective, np.maximum(np.asarray(x0, float), lb), lb, ub_list, max_iter)
    log.info("objective solve: %.5g after %d L-BFGS-B iterations", f, nit)
    return PenaltyResult(x, ops.matvec(x), f, [{"round": 0, "objective": f, "iterations": nit}], [])

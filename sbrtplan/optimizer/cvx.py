"""cvxpy solver path: the exact convex model, solved by an interior-point method.

Each stage is written in cvxpy exactly as documented in
:mod:`sbrtplan.optimizer.terms` (no smoothing): CVaR terms through the
Rockafellar-Uryasev threshold ``t`` and the hinge ``pos(d - t)``, squared hinges
through ``square(pos(.))``.  The problem is a second-order cone program solved
by Clarabel (interior point: the solution comes with a duality-gap
certificate); OSQP is tried when Clarabel fails and the stage is a QP.

Variables are scaled (``x = x_scale y``) and every penalty divided by
``d_ref^p`` (``p`` = 1 or 2), every constraint by its limit, so that the
solver sees numbers of order one.

Infeasibility: with ``feasibility=True`` every constraint gets one elastic
slack ``s_j >= 0`` (relative units), ``c_j(x) <= s_j``, and ``sum relax_cost_j s_j``
is minimised: the least relaxation of the hard limits.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from .._log import get_logger
from .problem import KeptObjective
from .terms import (ConstraintKind, LinearMean, LowerDVH, MeanDose, Smoothness, UpperDVH, _QuadLower,
                    _QuadUpper)

log = get_logger(__name__)


def _measure(term, d, y, x_scale, remap, aux):
    """cvxpy expression of a term's constraint measure (exact)."""
    if isinstance(term, Smoothness):
        a, b = term.pairs[:, 0], term.pairs[:, 1]
        s = term.scale() * x_scale
        return (s * s / len(a)) * cp.sum_squares(y[a] - y[b])
    loc = remap[term.region.rows]
    dr = d[loc]
    w = term.region.w
    if isinstance(term, UpperDVH):
        t = cp.Variable()
        aux.append(t)
        return t + (w / term.fraction) @ cp.pos(dr - t)
    if isinstance(term, LowerDVH):
        t = cp.Variable()
        aux.append(t)
        return t - (w / term.fraction) @ cp.pos(t - dr)
    if isinstance(term, (MeanDose, LinearMean)):
        return w @ dr
    if isinstance(term, _QuadUpper):
        return w @ cp.square(cp.pos(dr - term.dose_gy))
    if isinstance(term, _QuadLower):
        return w @ cp.square(cp.pos(term.dose_gy - dr))
    raise TypeError(f"unsupported term {type(term).__name__}")


def _penalty(term, d, y, x_scale, remap, aux):
    """cvxpy expression of a term's penalty (exact)."""
    if isinstance(term, (UpperDVH, LowerDVH, MeanDose)):
        m = _measure(term, d, y, x_scale, remap, aux)
        e = (m - term.dose_gy) if term.upper else (term.dose_gy - m)
        return cp.square(cp.pos(e))
    return _measure(term, d, y, x_scale, remap, aux)


def _constraint_parts(c, d, y, x_scale, remap, aux, d_ref):
    """(scaled expression that must be <= 0, is_vector)."""
    if isinstance(c, KeptObjective):
        expr = sum(w * _penalty(t, d, y, x_scale, remap, aux) for t, w in c.objectives)
        s = max(abs(c.bound), 1e-9)
        return (expr - c.bound) / s, False
    kind, L = c.constraint_kind, c.constraint_limit
    if kind in (ConstraintKind.VOXEL_UPPER, ConstraintKind.VOXEL_LOWER):
        s = max(abs(L), 1e-2 * d_ref)
        dr = d[remap[c.region.rows]]
        return ((dr - L) / s if kind is ConstraintKind.VOXEL_UPPER else (L - dr) / s), True
    s = max(abs(L), 1e-2 * d_ref ** c.penalty_power)
    m = _measure(c, d, y, x_scale, remap, aux)
    return ((m - L) / s if kind is ConstraintKind.SCALAR_UPPER else (L - m) / s), False


def solve_stage(A: sp.csr_matrix, remap: np.ndarray, objectives, constraints, lb: np.ndarray, ub: np.ndarray, *,
                x_scale: float, d_ref: float, feasibility: bool = False) -> dict:
    """Solve one stage exactly; returns ``x``, ``status`` ("optimal" or "infeasible"), ``iterations``."""
    n = A.shape[1]
    y = cp.Variable(n)
    d = (A.astype(np.float64) * x_scale) @ y
    aux: list = []
    cons = [y >= lb / x_scale]
    finite = np.isfinite(ub)
    if finite.any():
        cons.append(y[np.flatnonzero(finite)] <= ub[finite] / x_scale)
    obj = 0
    if feasibility:
        slacks = cp.Variable(len(constraints), nonneg=True)
        for j, c in enumerate(constraints):
            expr, _ = _constraint_parts(c, d, y, x_scale, remap, aux, d_ref)
            cons.append(expr <= slacks[j])
        costs = np.array([getattr(c, "relax_cost", 1.0) for c in constraints])
        obj = costs @ slacks
    else:
        for t, w in objectives:
            if w > 0:
                obj = obj + (w / d_ref ** t.penalty_power) * _penalty(t, d, y, x_scale, remap, aux)
        for c in constraints:
            expr, _ = _constraint_parts(c, d, y, x_scale, remap, aux, d_ref)
            cons.append(expr <= 0)
    prob = cp.Problem(cp.Minimize(obj), cons)
    status = None
    iters = 0
    for solver in (cp.CLARABEL, cp.OSQP):
        if solver not in cp.installed_solvers():
            continue
        try:
            kw = dict(max_iter=200) if solver == cp.CLARABEL else dict(max_iter=200000, eps_abs=1e-7, eps_rel=1e-7)
            prob.solve(solver=solver, **kw)
            status = prob.status
            st = prob.solver_stats
            iters = int(st.num_iters or 0) if st is not None else 0
            if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                break
        except (cp.error.SolverError, cp.error.DCPError, ValueError) as exc:
            log.info("cvxpy solver %s failed: %s", solver, exc)
            status = "solver_error"
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return dict(x=None, status="infeasible", iterations=iters)
    if y.value is None:
        return dict(x=None, status=str(status), iterations=iters)
    x = np.clip(np.asarray(y.value, float) * x_scale, lb, ub)
    return dict(x=x, status="optimal" if status == cp.OPTIMAL else str(status), iterations=iters)

"""Prioritised (lexicographic) fluence optimisation on a dose matrix.

Model
-----
``x`` (one entry per column of ``D``, MU) gives the total course dose ``d = D x``
(Gy) at the rows of ``D``.  A plan is optimised in stages, most important first:

1. stage 1 minimises its objective (e.g. target underdose) subject to its hard
   constraints (organ limits, target dose bounds);
2. stage ``k`` minimises its own objective subject to its hard constraints and
   to every earlier stage's optimum kept within a tolerance:
   ``F_j(x) <= (1 + slack) F_j* + keep_abs`` for ``j < k``.

Every penalty and constraint is convex (:mod:`sbrtplan.optimizer.terms`), so each
stage is a convex problem and its optimum is global: the result does not depend
on the starting point, only on the priorities.

Infeasible hard limits
    When a stage cannot meet its hard limits (status infeasible for the
    interior-point path, violation left after the augmented-Lagrangian loop for
    the first-order path) the limits are relaxed elastically: the plan that
    violates them least (each limit weighted by its term's ``relax_cost``:
    organ limits high, target minimums low) is computed, every violated limit
    is moved to the value that plan reaches (plus 0.1 %), and the stage is
    solved again.  The relaxed limits are kept for the later stages and
    reported in :attr:`StageResult.relaxed`; nothing is silently dropped.

Two solver paths solve the same model: :mod:`.cvx` (cvxpy with Clarabel:
certified optimum, small and medium problems) and :mod:`.first_order`
(augmented Lagrangian with L-BFGS-B: full-size problems).  ``SolverMethod.AUTO``
uses cvxpy while the matrix restricted to the used rows has at most
:data:`AUTO_CVXPY_MAX_NNZ` non-zeros and :data:`AUTO_CVXPY_MAX_VARS` columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .._log import Timings, get_logger, timed
from ..errors import InputError, OptimizationError
from .problem import (KeepMode, KeptObjective, OptimizationResult, OptimizationStage, SolverMethod,
                      StageResult)
from .terms import ConstraintKind, Smoothness, Term

log = get_logger(__name__)

AUTO_CVXPY_MAX_NNZ = 100_000
AUTO_CVXPY_MAX_VARS = 1_500
RELAX_MARGIN = 1e-3
FO_RELAX_VIOLATION = 1e-2
JACOBI_SCALING = True   # first-order path: a violation above 1 % of a limit means infeasible


def _as_csr(D) -> sp.csr_matrix:
    if sp.issparse(D):
        M = sp.csr_matrix(D)
    elif isinstance(D, np.ndarray) and D.ndim == 2:
        M = sp.csr_matrix(D)
    else:
        raise InputError(f"prioritized_solve: D must be a 2-D scipy.sparse matrix (rows x variables), "
                         f"got {type(D).__name__}")
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise InputError(f"prioritized_solve: D has shape {M.shape}; expected at least one row and one variable")
    if M.dtype != np.float32:
        M = M.astype(np.float32)
    if M.nnz and not np.all(np.isfinite(M.data)):
        raise InputError("prioritized_solve: D contains non-finite values")
    return M


def _bounds(v, n: int, default: float, name: str) -> np.ndarray:
    if v is None:
        return np.full(n, default)
    a = np.asarray(v, dtype=float)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise InputError(f"prioritized_solve: {name} must be a scalar or have one entry per variable ({n}), "
                         f"got shape {a.shape}")
    if np.any(np.isnan(a)):
        raise InputError(f"prioritized_solve: {name} contains NaN")
    return a


def _all_terms(stages: list[OptimizationStage]) -> list[Term]:
    seen: dict[int, Term] = {}
    for s in stages:
        for t, _ in s.objectives:
            seen.setdefault(id(t), t)
        for t in s.constraints:
            seen.setdefault(id(t), t)
    return list(seen.values())


def _choose(method: SolverMethod, nnz: int, n_vars: int) -> SolverMethod:
    if method is not SolverMethod.AUTO:
        return method
    if nnz <= AUTO_CVXPY_MAX_NNZ and n_vars <= AUTO_CVXPY_MAX_VARS:
        return SolverMethod.CVXPY
    return SolverMethod.FIRST_ORDER


def _violated(c, value: float) -> bool:
    return not c.satisfied(value, rtol=2e-3)


def prioritized_solve(D, stages: list[OptimizationStage], *, x_lb=None, x_ub=None,
                      method: SolverMethod = SolverMethod.AUTO, slack: float = 0.02, x0=None,
                      progress: Callable[[int, int], None] | None = None,
                      time_limit_s: float | None = None) -> OptimizationResult:
    """Solve the stages in order, keeping each optimum within ``slack`` in the later ones.

    Parameters
    ----------
    D : scipy.sparse matrix (n_rows, n_vars)
        Total course dose (Gy) at each row per unit of each variable (MU, or
        aperture weight for direct aperture optimisation).
    stages : list of OptimizationStage
    x_lb, x_ub : float or ndarray (n_vars,), optional
        Bounds of the variables (default 0 and +inf).
    method : SolverMethod
    slack : float
        Relative tolerance with which earlier optima are kept (0.02 = 2 %).
    x0 : ndarray, optional
        Starting point of the first-order path.
    progress : callable(done, total), optional
        Called after every stage.
    time_limit_s : float, optional
        Processor-time budget of the first-order path, shared among the stages (seconds of CPU
        used by the process, as the DAO's: the same problem stops at the same point on a busy
        machine as on an idle one).

    Returns
    -------
    OptimizationResult
    """
    timings = Timings()
    cpu_start = time.process_time()
    if not stages:
        raise InputError("prioritized_solve: no stages given")
    if not (np.isfinite(slack) and slack >= 0):
        raise InputError(f"prioritized_solve: slack must be >= 0, got {slack!r}")
    if not isinstance(method, SolverMethod):
        try:
            method = SolverMethod(method)
        except ValueError:
            raise InputError(f"prioritized_solve: method must be one of "
                             f"{', '.join(m.value for m in SolverMethod)}, got {method!r}") from None
    with timed("optimiser setup", log, timings):
        M = _as_csr(D)
        n_rows, n_vars = M.shape
        lb = _bounds(x_lb, n_vars, 0.0, "x_lb")
        ub = _bounds(x_ub, n_vars, np.inf, "x_ub")
        if np.any(lb > ub) or np.any(~np.isfinite(lb)):
            raise InputError("prioritized_solve: x_lb must be finite and <= x_ub")
        terms = _all_terms(stages)
        used = np.zeros(n_rows, bool)
        smooth_fix: dict[int, Term] = {}
        col_peak = None
        for t in terms:
            if isinstance(t, Smoothness):
                if t.pairs.max() >= n_vars:
                    raise InputError(f"Smoothness: pair index {t.pairs.max()} >= number of variables {n_vars}")
                if t.gy_per_mu is None:
                    if col_peak is None:
                        col_peak = np.asarray(abs(M).max(axis=0).todense()).ravel()
                        pos = col_peak[col_peak > 0]
                        col_peak = float(np.median(pos)) if pos.size else 1.0
                    smooth_fix[id(t)] = replace(t, gy_per_mu=col_peak)
                continue
            t.region.check_rows(n_rows)
            used[t.region.rows] = True
        if not used.any():
            raise InputError("prioritized_solve: the stages use no rows of D (no dose terms)")
        used_rows = np.flatnonzero(used)
        remap = np.full(n_rows, -1, np.int64)
        remap[used_rows] = np.arange(used_rows.size)
        A = M[used_rows]
        levels = [float(getattr(t, "dose_gy", 0.0)) for t in terms]
        d_ref = max(levels + [1e-3])
        unit = np.asarray(A @ np.ones(n_vars, np.float32)).ravel()
        peak = float(np.percentile(unit[unit > 0], 99)) if np.any(unit > 0) else 1.0
        x_scale = d_ref / peak
        chosen = _choose(method, A.nnz, n_vars)
        x_scale_cols = x_scale
        if chosen is SolverMethod.FIRST_ORDER:
            from .first_order import MatrixOps
            ops = MatrixOps(A)
            if JACOBI_SCALING:
                # Jacobi scaling: every variable's unit moves the dose by the same amount (column 2-norm),
                # which evens out the curvature L-BFGS-B sees across beamlets of different strength
                norms = np.sqrt(np.asarray(A.multiply(A).sum(axis=0)).ravel())
                ok = norms > 0
                med = float(np.median(norms[ok])) if ok.any() else 1.0
                ratio = np.ones(n_vars)
                ratio[ok] = np.clip(med / norms[ok], 0.1, 10.0)
                x_scale_cols = x_scale * ratio
        if x0 is None:
            x = np.clip(np.full(n_vars, 0.5 * x_scale), lb, ub)
        else:
            x = np.clip(_bounds(x0, n_vars, 0.0, "x0"), lb, ub)
    log.info("prioritised solve: %d stages, %d of %d rows used, %d variables, %d non-zeros, solver %s",
             len(stages), used_rows.size, n_rows, n_vars, A.nnz, chosen.value)

    def fix(t):
        return smooth_fix.get(id(t), t)

    relax_map: dict[int, object] = {}   # id(original constraint) -> relaxed copy
    kept: list[KeptObjective] = []
    results: list[StageResult] = []
    n_stages = len(stages)

    def solve(objectives, constraints, x_start, feasibility=False, budget=None):
        if chosen is SolverMethod.CVXPY:
            from .cvx import solve_stage as cvx_solve
            return cvx_solve(A, remap, objectives, constraints, lb, ub, x_scale=x_scale, d_ref=d_ref,
                             feasibility=feasibility)
        from .first_order import solve_stage as fo_solve
        return fo_solve(ops, remap, objectives, constraints, lb, ub, x_start, x_scale=x_scale_cols, d_ref=d_ref,
                        time_limit_s=budget, feasibility=feasibility)

    for k, stage in enumerate(stages):
        t0 = time.perf_counter()
        objectives = [(fix(t), float(w)) for t, w in stage.objectives]
        originals = [fix(c) for c in stage.constraints] + list(kept)
        constraints = [relax_map.get(id(c), c) for c in originals]
        budget = None
        if time_limit_s is not None:
            left = time_limit_s - (time.process_time() - cpu_start)
            budget = max(left / (n_stages - k), 1.0)
        relaxed_here: dict[str, tuple[float, float]] = {}
        with timed(f"optimiser stage {k + 1} '{stage.name}' ({chosen.value})", log, timings):
            sol = solve(objectives, constraints, x, budget=budget)
            iters = sol["iterations"]
            infeasible = sol["status"] == "infeasible" or (
                sol["status"] == "violated" and sol.get("max_violation", 0.0) > FO_RELAX_VIOLATION)
            if infeasible and constraints:
                log.warning("stage '%s': hard limits cannot all be met (%s); relaxing them elastically",
                            stage.name, sol["status"])
                feas = solve([], constraints, sol.get("x", x) if sol.get("x") is not None else x,
                             feasibility=True, budget=budget)
                iters += feas["iterations"]
                dose_f = np.asarray(M @ feas["x"]).ravel()
                for i, c in enumerate(constraints):
                    val = c.constraint_measure(dose_f, feas["x"])
                    if _violated(c, val):
                        upper = c.constraint_kind in (ConstraintKind.VOXEL_UPPER, ConstraintKind.SCALAR_UPPER)
                        new = val * (1 + RELAX_MARGIN) if upper else val * (1 - RELAX_MARGIN)
                        rc = c.relaxed(new)
                        relax_map[id(originals[i])] = rc
                        relaxed_here[c.label] = (float(c.constraint_limit), float(new))
                        constraints[i] = rc
                        log.warning("stage '%s': limit relaxed: %s -> %.4g", stage.name, c.label, new)
                sol = solve(objectives, constraints, feas["x"], budget=budget)
                iters += sol["iterations"]
            if sol.get("x") is None:
                raise OptimizationError(f"stage '{stage.name}': the {chosen.value} solver returned no solution "
                                        f"(status {sol['status']})")
            x = np.clip(np.asarray(sol["x"], float), lb, ub)
            dose = np.asarray(M @ x).ravel()
            obj_terms = {}
            obj = 0.0
            for t, w in objectives:
                v = float(t.penalty(dose, x))
                obj_terms[t.label] = v
                obj += w * v
            cvals = {c.label: float(c.constraint_measure(dose, x)) for c in constraints}
        status = sol["status"]
        if relaxed_here and status == "optimal":
            status = "optimal (limits relaxed)"
        results.append(StageResult(name=stage.name, objective=float(obj), constraint_values=cvals,
                                   solver=chosen.value, time_s=time.perf_counter() - t0, iterations=int(iters),
                                   status=status, objective_terms=obj_terms, relaxed=relaxed_here))
        log.info("stage '%s': objective %.6g, status %s", stage.name, obj, status)
        if stage.keep is KeepMode.OBJECTIVE and objectives:
            kept.append(KeptObjective(stage.name, objectives, (1 + slack) * obj + stage.keep_abs))
        elif stage.keep is KeepMode.TERMS:
            for t, w in objectives:
                v = float(t.penalty(dose, x))
                kept.append(KeptObjective(f"{stage.name}: {t.label}", [(t, 1.0)], (1 + slack) * v + stage.keep_abs))
        if progress is not None:
            progress(k + 1, n_stages)
    dose = np.asarray(M @ x, dtype=np.float64).ravel()
    return OptimizationResult(x=x, dose_gy=dose, stages=results, timings_s=timings.as_dict(), method=chosen)

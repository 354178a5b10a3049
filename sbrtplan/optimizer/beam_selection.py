"""Beam-angle selection by group sparsity (group lasso on beam fluences).

Given the influence matrix of many candidate directions (on a coarse grid),
solve the convex problem

    minimise   f(x) + lam * sum_b ||x_b||_2      subject to x >= 0

where ``x_b`` are the beamlet weights of candidate beam ``b`` and ``f`` is a
sum of quadratic penalties (target underdose and overdose, organ doses above
their limits, and a normal-tissue fall-off term that penalises dose above a
reference that decreases with the distance from the target).  The group norm
drives whole beams to zero (Yuan and Lin 2006; for beam orientation
optimisation see Jia et al. 2012, O'Connor et al. 2018).  The path starts
at ``lam_max`` (the largest group norm of the gradient at ``x = 0``, where
every beam is off) and decreases ``lam`` geometrically, warm-starting each
solve, until at least ``n_beams`` groups are non-zero; the ``n_beams``
largest groups are chosen.

The solver is FISTA with the exact proximal map of the group norm plus the
non-negativity constraint (project onto x >= 0, then shrink each group).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._log import get_logger
from .penalty import Penalty, PenaltyObjective

log = get_logger(__name__)


def QuadraticPenalty(rows, reference_gy, weight: float, over: bool, row_weights=None) -> Penalty:
    """A one-sided quadratic penalty for the selection problem (see :class:`optimizer.penalty.Penalty`)."""
    return Penalty("selection", rows, reference_gy, weight, over, row_weights)


@dataclass
class SelectionResult:
    """Chosen candidates and the path that chose them."""

    chosen: list[int]
    group_norms: np.ndarray
    lam: float
    path: list[dict] = field(default_factory=list)


def _objective_grad(D, Dt, x, penalties: list[Penalty]):
    f, g_d = PenaltyObjective(penalties, D.shape[0]).value_and_grad(D @ x)
    return f, Dt @ g_d


def _lipschitz(D, Dt, penalties, n_iter: int = 20, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    scale = np.zeros(D.shape[0])
    for p in penalties:
        w = p.row_weights if p.row_weights is not None else np.ones(p.rows.size)
        scale += np.bincount(p.rows, weights=2.0 * p.weight * w / max(w.sum(), 1e-12), minlength=D.shape[0])
    v = rng.random(D.shape[1])
    lam = 1.0
    for _ in range(n_iter):
        u = Dt @ (scale * (D @ v))
        lam = float(np.linalg.norm(u))
        if lam == 0.0:
            return 1.0
        v = u / lam
    return lam * 1.05


def _fista(D, Dt, penalties, groups: np.ndarray, n_groups: int, lam: float, L: float, x0: np.ndarray,
           n_iter: int) -> np.ndarray:
    x = x0.copy()
    y = x.copy()
    t = 1.0
    step = 1.0 / L
    for _ in range(n_iter):
        _, g = _objective_grad(D, Dt, y, penalties)
        z = np.maximum(y - step * g, 0.0)
        norms = np.sqrt(np.bincount(groups, weights=z * z, minlength=n_groups))
        shrink = np.where(norms > 0, np.maximum(1.0 - step * lam / np.maximum(norms, 1e-30), 0.0), 0.0)
        x_new = z * shrink[groups]
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def select_beams(D: sp.spmatrix, beam_offsets: np.ndarray, penalties: list[QuadraticPenalty], n_beams: int, *,
                 n_iter: int = 40, shrink: float = 0.8, max_lambda_steps: int = 40, progress=None) -> SelectionResult:
    """Choose ``n_beams`` of the candidate beams by a decreasing group-lasso path.

    Parameters
    ----------
    D : sparse (n_rows, n_beamlets)
        Influence matrix of all candidates (total dose per unit weight).
    beam_offsets : (n_candidates + 1,)
        Column range of each candidate.
    penalties : list of QuadraticPenalty
    n_beams : int
    n_iter : int
        FISTA iterations per value of the group weight (warm-started).
    shrink : float
        Factor between successive group weights.

    Returns
    -------
    SelectionResult
    """
    D = sp.csr_matrix(D, dtype=np.float64)
    Dt = D.T.tocsr()
    n_groups = len(beam_offsets) - 1
    if n_beams >= n_groups:
        return SelectionResult(list(range(n_groups)), np.ones(n_groups), 0.0, [])
    groups = np.repeat(np.arange(n_groups), np.diff(beam_offsets))
    L = _lipschitz(D, Dt, penalties)
    x = np.zeros(D.shape[1])
    _, g0 = _objective_grad(D, Dt, x, penalties)
    # At x = 0 a group leaves zero once lam drops below the norm of its descent direction.
    lam = float(np.max(np.sqrt(np.bincount(groups, weights=np.minimum(g0, 0.0) ** 2, minlength=n_groups))))
    path: list[dict] = []
    norms = np.zeros(n_groups)
    for step in range(max_lambda_steps):
        lam *= shrink
        x = _fista(D, Dt, penalties, groups, n_groups, lam, L, x, n_iter)
        norms = np.sqrt(np.bincount(groups, weights=x * x, minlength=n_groups))
        active = int(np.sum(norms > 1e-6 * max(norms.max(), 1e-30)))
        f, _ = _objective_grad(D, Dt, x, penalties)
        path.append({"lam": lam, "objective": f, "active": active})
        log.info("beam selection: lambda %.3g -> %d active candidates (objective %.4g)", lam, active, f)
        if progress is not None:
            progress(step + 1, max_lambda_steps)
        if active >= n_beams:
            break
    chosen = sorted(int(i) for i in np.argsort(-norms)[:n_beams])
    return SelectionResult(chosen, norms, lam, path)

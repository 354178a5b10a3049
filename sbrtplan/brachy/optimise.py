"""Seed-loading optimisation: which template positions receive a seed of a given strength.

A greedy construction followed by swap refinement on a quadratic-hinge objective (the integer
problem is solved directly; every move keeps the loading feasible).  For dose points ``p`` of the
target (T) and organs (O), with doses in units of the prescription::

    f = w_cold * mean_T(max(0, c - d)^2) + w_hot * mean_T(min(max(0, d - h), k)^2)
        + sum_O w_O * mean_O(max(0, d - a_O)^2) + needle_cost * needles + seed_cost * seeds

``c`` (coverage aim), ``h`` (hot aim), ``k`` (hot cap), ``a_O`` and the weights come from the protocol.  Two seeds on
one needle closer than the minimum separation are never loaded together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange


@dataclass
class Problem:
    """Dose points and the unit dose matrix of the candidates (dose per seed, in prescription units)."""

    a_rel: np.ndarray            # (P, M) float32: dose of one seed at strength s / prescription
    # (point indices, kind 'cold'|'hot'|'over', aim, weight, cap): the excess over the aim counts up to
    # ``cap`` (None: no cap); capping the target's hot term keeps the points next to a seed (always far
    # above any aim) from dominating it, so it acts like a smooth V150 count.
    groups: list[tuple[np.ndarray, str, float, float, float | None]]
    needle: np.ndarray           # (M,)
    conflicts: list[np.ndarray]  # per candidate: candidates that cannot be loaded with it
    needle_cost: float
    seed_cost: float


def conflicts_of(needle: np.ndarray, depth_mm: np.ndarray, min_sep_mm: float) -> list[np.ndarray]:
    out = []
    for j in range(len(needle)):
        same = np.flatnonzero((needle == needle[j]) & (np.abs(depth_mm - depth_mm[j]) < min_sep_mm - 1e-6))
        out.append(same[same != j])
    return out


@njit(cache=True, parallel=True)
def _brachy_delta_kernel(a_t, d, term_p, term_cold, term_aim, term_w, term_cap, amax):
    """out[j] = sum over terms of w * (e(d_p + a_jp)^2 - e(d_p)^2); inactive terms are skipped
    (a cold term already above its aim, a hot term that no candidate can push over it)."""
    m = a_t.shape[0]
    nt = term_p.shape[0]
    active = np.empty(nt, dtype=np.int64)
    na = 0
    for t in range(nt):
        x = d[term_p[t]]
        if term_cold[t]:
            if x < term_aim[t]:
                active[na] = t
                na += 1
        elif x + amax[term_p[t]] > term_aim[t] and x - term_aim[t] < term_cap[t]:
            active[na] = t
            na += 1
    out = np.zeros(m)
    for j in prange(m):
        acc = 0.0
        for q in range(na):
            t = active[q]
            p = term_p[t]
            x = d[p]
            y = x + a_t[j, p]
            aim = term_aim[t]
            if term_cold[t]:
                e0 = aim - x
                e1 = aim - y if y < aim else 0.0
            else:
                e0 = min(x - aim, term_cap[t]) if x > aim else 0.0
                e1 = min(y - aim, term_cap[t]) if y > aim else 0.0
            acc += term_w[t] * (e1 * e1 - e0 * e0)
        out[j] = acc
    return out


def _terms(prob: Problem):
    p, cold, aim, w, cap = [], [], [], [], []
    for idx, kind, a, wt, c in prob.groups:
        p.append(np.asarray(idx, np.int64))
        cold.append(np.full(len(idx), kind == "cold"))
        aim.append(np.full(len(idx), a))
        w.append(np.full(len(idx), wt / max(len(idx), 1)))
        cap.append(np.full(len(idx), np.inf if c is None else c))
    return (np.concatenate(p), np.concatenate(cold), np.concatenate(aim), np.concatenate(w), np.concatenate(cap))


def optimise_loading(prob: Problem, max_seeds: int = 400, sweeps: int = 2, progress=None,
                     initial: np.ndarray | None = None) -> np.ndarray:
    """Boolean loading (M,) minimising the objective: greedy additions (from ``initial`` if given),
    then swap sweeps."""
    m = prob.a_rel.shape[1]
    loaded = np.zeros(m, bool)
    blocked = np.zeros(m, int)
    needle_use = np.zeros(int(prob.needle.max()) + 1, int)
    d = np.zeros(prob.a_rel.shape[0])
    a_t = np.ascontiguousarray(prob.a_rel.T, dtype=np.float64)
    amax = a_t.max(axis=0)
    term_p, term_cold, term_aim, term_w, term_cap = _terms(prob)

    def delta_add() -> np.ndarray:
        return _brachy_delta_kernel(a_t, d, term_p, term_cold, term_aim, term_w, term_cap, amax)

    def add(j: int) -> None:
        nonlocal d
        loaded[j] = True
        blocked[prob.conflicts[j]] += 1
        needle_use[prob.needle[j]] += 1
        d = d + a_t[j]

    def remove(j: int) -> None:
        nonlocal d
        loaded[j] = False
        blocked[prob.conflicts[j]] -= 1
        needle_use[prob.needle[j]] -= 1
        d = d - a_t[j]

    def cost_add() -> np.ndarray:
        return prob.seed_cost + prob.needle_cost * (needle_use[prob.needle] == 0)

    if initial is not None:
        for j in np.flatnonzero(initial):
            add(int(j))
    for _ in range(max_seeds):
        feasible = (~loaded) & (blocked == 0)
        if not feasible.any():
            break
        delta = delta_add() + cost_add()
        delta[~feasible] = np.inf
        j = int(np.argmin(delta))
        if not delta[j] < 0:
            break
        add(j)
    if progress:
        progress("greedy loading", 1, 1 + sweeps)
    # swap sweeps: take a seed out, put the best feasible candidate in (possibly the same one)
    for sweep in range(sweeps):
        changed = 0
        for j in np.flatnonzero(loaded):
            if not loaded[j]:
                continue
            remove(j)
            feasible = (~loaded) & (blocked == 0)
            delta = delta_add() + cost_add()
            delta[~feasible] = np.inf
            k = int(np.argmin(delta))
            # the best of: leave the seed out (change 0), or load the best candidate (j itself included)
            if delta[k] < 0:
                add(k)
                changed += int(k != j)
            else:
                changed += 1
        if progress:
            progress(f"swap sweep {sweep + 1}", 2 + sweep, 1 + sweeps)
        if changed == 0:
            break
    return loaded

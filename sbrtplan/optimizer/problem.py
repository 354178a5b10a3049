"""Stages, solver choice and results of the prioritised (lexicographic) optimisation.

A plan is optimised in stages (see :mod:`sbrtplan.optimizer.prioritized`):
each :class:`OptimizationStage` minimises a weighted sum of convex penalties
subject to hard constraints (organ limits, target dose bounds) and to the
results of the earlier stages, which are *kept*: the optimum ``F_k*`` of an
earlier stage ``k`` becomes the constraint

    F_k(x) <= (1 + slack) F_k* + keep_abs

in every later stage (:class:`KeepMode.OBJECTIVE`), or each of its terms is
kept separately (:class:`KeepMode.TERMS`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .terms import ConstraintKind, Term


class SolverMethod(enum.Enum):
    """Which solver path solves the convex stages."""

    AUTO = "auto"                # CVXPY for small problems, FIRST_ORDER otherwise
    CVXPY = "cvxpy"              # interior point (Clarabel), OSQP as fallback: certified optimum
    FIRST_ORDER = "first_order"  # augmented Lagrangian with L-BFGS-B inner solves: full-size problems


class KeepMode(enum.Enum):
    """How the optimum of a stage is kept in the later stages."""

    OBJECTIVE = "objective"  # weighted objective <= (1 + slack) * optimum + keep_abs
    TERMS = "terms"          # every objective term <= (1 + slack) * its value + keep_abs
    NONE = "none"            # not kept


@dataclass(eq=False)
class OptimizationStage:
    """One stage of the prioritised solve.

    Parameters
    ----------
    name : str
    objectives : list of (Term, weight)
        Penalties minimised in this stage (weights > 0).
    constraints : list of Term
        Hard constraints of this stage (each term's constraint form).
    keep : KeepMode
        How this stage's optimum constrains the later stages.
    keep_abs : float
        Absolute allowance added to the kept bound, in the objective's units
        (Gy^2 for quadratic penalties): stops an optimum of zero from becoming
        an equality constraint.
    """

    name: str
    objectives: list[tuple[Term, float]]
    constraints: list[Term] = field(default_factory=list)
    keep: KeepMode = KeepMode.OBJECTIVE
    keep_abs: float = 1e-6

    def __post_init__(self) -> None:
        for i, item in enumerate(self.objectives):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Term)):
                raise InputError(f"stage '{self.name}': objective {i} must be a (term, weight) tuple")
            w = float(item[1])
            if not (np.isfinite(w) and w >= 0):
                raise InputError(f"stage '{self.name}': weight of {item[0].label!r} must be >= 0, got {item[1]!r}")
        for c in self.constraints:
            if not isinstance(c, Term):
                raise InputError(f"stage '{self.name}': constraint {c!r} is not a term")
        if not isinstance(self.keep, KeepMode):
            self.keep = KeepMode(self.keep)

    @property
    def terms(self) -> list["WeightedTerm"]:
        """Objective and constraints as weighted penalties with ``value_and_grad(dose_gy)``.

        For solvers that only minimise one smooth function of the dose (the
        VMAT aperture optimiser): objectives with their weights, and every
        constraint as its quadratic penalty with weight :data:`CONSTRAINT_PENALTY_WEIGHT`.
        """
        out = [WeightedTerm(t, float(w)) for t, w in self.objectives]
        out += [WeightedTerm(c, CONSTRAINT_PENALTY_WEIGHT) for c in self.constraints]
        return out


CONSTRAINT_PENALTY_WEIGHT = 100.0


@dataclass(eq=False)
class WeightedTerm:
    """``weight x term`` with ``value_and_grad`` on the dose of all rows."""

    term: Term
    weight: float

    def value_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = self.term.value_and_grad(dose_gy)
        return self.weight * v, self.weight * g

    def value_and_sparse_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray | None, np.ndarray]:
        """``weight x`` :meth:`Term.value_and_sparse_grad` (the gradient on the term's rows)."""
        v, rows, g = self.term.value_and_sparse_grad(dose_gy)
        return self.weight * v, rows, self.weight * g


@dataclass(eq=False)
class KeptObjective:
    """The objective of an earlier stage as a constraint: ``sum w_k pen_k <= bound``."""

    name: str
    objectives: list[tuple[Term, float]]
    bound: float
    relax_cost: float = 1.0

    constraint_kind = ConstraintKind.SCALAR_UPPER

    @property
    def constraint_limit(self) -> float:
        return self.bound

    def constraint_measure(self, dose_gy: np.ndarray, x: np.ndarray | None = None) -> float:
        return float(sum(w * t.penalty(dose_gy, x) for t, w in self.objectives))

    @property
    def penalty_power(self) -> int:
        return max(t.penalty_power for t, _ in self.objectives)

    @property
    def label(self) -> str:
        return f"keep '{self.name}' <= {self.bound:.6g}"

    def relaxed(self, limit: float) -> "KeptObjective":
        return KeptObjective(self.name, self.objectives, float(limit), self.relax_cost)

    def satisfied(self, value: float, rtol: float = 1e-3) -> bool:
        return value <= self.bound * (1 + rtol) + 1e-12


@dataclass
class StageResult:
    """Outcome of one stage.

    ``objective`` is the exact weighted objective at the stage's solution;
    ``constraint_values`` maps each constraint label to its exact measured value
    (max dose, CVaR, mean dose, ... in Gy; kept objectives in their units).
    ``relaxed`` maps each hard limit that had to be relaxed to (original, relaxed) limit.
    """

    name: str
    objective: float
    constraint_values: dict[str, float]
    solver: str
    time_s: float
    iterations: int
    status: str
    objective_terms: dict[str, float] = field(default_factory=dict)
    relaxed: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class OptimizationResult:
    """Fluence ``x`` (MU, per variable), dose at every row of ``D`` (Gy), per-stage results."""

    x: np.ndarray
    dose_gy: np.ndarray
    stages: list[StageResult]
    timings_s: dict[str, float]
    method: SolverMethod = SolverMethod.FIRST_ORDER

    @property
    def relaxed(self) -> dict[str, tuple[float, float]]:
        """Every hard limit that was relaxed, over all stages."""
        out: dict[str, tuple[float, float]] = {}
        for s in self.stages:
            out.update(s.relaxed)
        return out

"""Convex dose terms: each one is a penalty (objective) or a hard constraint.

Notation: ``d_i`` is the total course dose (Gy) at row ``i`` of a region,
``w_i`` the row's relative volume (normalised, sum 1), ``L`` the term's dose
level.  Every function below is convex in ``d`` (hence in the fluence ``x``,
since ``d = D x`` is linear), so every stage of the prioritised solve is a
convex problem with a global optimum.

=====================  =========================================  ======================================
term                   hard constraint                            penalty (objective)
=====================  =========================================  ======================================
MaxDose(L)             d_i <= L for every row                     sum_i w_i (d_i - L)_+^2        [Gy^2]
MinDose(L)             d_i >= L for every row                     sum_i w_i (L - d_i)_+^2        [Gy^2]
MeanDose(L)            sum_i w_i d_i <= L                          (mean - L)_+^2                 [Gy^2]
UpperDVH(L, v)         CVaR+_v(d) <= L                            (CVaR+_v - L)_+^2              [Gy^2]
LowerDVH(L, v%)        CVaR-_(100-v)%(d) >= L                     (L - CVaR-)_+^2                [Gy^2]
QuadOverdose(L)        sum w (d - L)_+^2 <= bound (0: d_i <= L)   sum_i w_i (d_i - L)_+^2        [Gy^2]
QuadUnderdose(L)       sum w (L - d)_+^2 <= bound (0: d_i >= L)   sum_i w_i (L - d_i)_+^2        [Gy^2]
LinearMean             mean <= bound                              sum_i w_i d_i                  [Gy]
Smoothness(pairs)      mean (g (x_a - x_b))^2 <= bound           mean over pairs (g (x_a - x_b))^2  [Gy^2]
=====================  =========================================  ======================================

Dose-volume limits through CVaR
    "At most ``v`` (cc or % of the structure) may receive more than ``L``"
    (D_v <= L, V_L <= v) is not convex.  Its convex, conservative surrogate is
    the *upper conditional value at risk*: the mean dose of the hottest
    fraction ``v`` of the structure,

        CVaR+_v(d) = min_t  t + (1/v) sum_i w_i (d_i - t)_+     (Rockafellar & Uryasev 2000)

    and ``CVaR+_v <= L`` implies ``D_v <= L`` because the mean of the hottest
    ``v`` is at least its coldest member.  Coverage ("D_v% >= L", e.g. GTV D98
    >= 21 Gy or PTV V100% >= 95 %) uses the lower tail: the mean of the coldest
    ``q = 1 - v/100`` of the structure,

        CVaR-_q(d) = max_t  t - (1/q) sum_i w_i (t - d_i)_+,

    which is concave, and ``CVaR-_q >= L`` implies ``D_v% >= L``.  (Romeijn,
    Ahuja, Dempsey, Kumar, Med. Phys. 2003; Rockafellar & Uryasev, J. Risk 2000.)

Smoothness
    The squared difference of neighbouring beamlet weights, converted to Gy
    with ``gy_per_mu`` (default: the median over beamlets of the beamlet's peak
    dose per MU, set by the solver) so that its weight is comparable with the
    dose penalties.

Each term has :meth:`Term.value_and_grad` of its exact penalty on the dose of
all rows of ``D``; the VMAT aperture optimiser uses it directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .regions import VoxelRegion


class ConstraintKind(enum.Enum):
    """Form of a term used as a hard constraint."""

    VOXEL_UPPER = "voxel_upper"    # d_i <= L at every row
    VOXEL_LOWER = "voxel_lower"    # d_i >= L at every row
    SCALAR_UPPER = "scalar_upper"  # measure(d) <= L
    SCALAR_LOWER = "scalar_lower"  # measure(d) >= L


# ----------------------------------------------------------------------------- exact tail means

def cvar_upper(d: np.ndarray, w: np.ndarray, frac: float) -> float:
    """Mean dose of the hottest fraction ``frac`` of a region (weights ``w`` sum to 1)."""
    return _tail_mean(-np.asarray(d, float), w, frac) * -1.0


def cvar_lower(d: np.ndarray, w: np.ndarray, frac: float) -> float:
    """Mean dose of the coldest fraction ``frac`` of a region (weights ``w`` sum to 1)."""
    return _tail_mean(np.asarray(d, float), w, frac)


def _lowest_sorted(d: np.ndarray, w: np.ndarray, frac: float) -> np.ndarray:
    """Indices of the lowest values of ``d``, in increasing order, at least enough to hold weight ``frac``.

    A DVH tail is usually a small part of its region (0.1 cc of a cord PRV), so a
    partial selection followed by a sort of the selected values replaces the full
    sort: every element weighs at least ``min(w)``, hence the lowest
    ``ceil(frac / min(w)) + 2`` values always hold the tail.
    """
    n = d.size
    w_min = float(w.min()) if n else 0.0
    m = n if w_min <= 0.0 else min(n, int(np.ceil(frac / w_min)) + 2)
    if m >= n // 4:
        return np.argsort(d, kind="stable")
    part = np.argpartition(d, m - 1)[:m]
    return part[np.argsort(d[part], kind="stable")]


def _tail_mean(d: np.ndarray, w: np.ndarray, frac: float) -> float:
    # mean of the lowest-valued fraction `frac` of the weighted distribution
    return _tail_mean_and_grad(d, w, frac, with_grad=False)[0]


def _tail_mean_and_grad(d: np.ndarray, w: np.ndarray, frac: float,
                        with_grad: bool = True) -> tuple[float, np.ndarray | None]:
    """:func:`_tail_mean` and a (sub)gradient of it with respect to ``d``, from one selection of the tail.

    The optimisers evaluate both at every iterate; selecting the tail once halves the cost
    of the DVH terms, which dominate the VMAT master problems.
    """
    frac = min(max(frac, 1e-12), 1.0)
    order = _lowest_sorted(d, w, frac)
    ds, ws = d[order], w[order]
    cw = np.cumsum(ws)
    k = min(int(np.searchsorted(cw, frac, side="left")), ds.size - 1)
    prev = cw[k - 1] if k > 0 else 0.0
    total = float(ds[:k] @ ws[:k]) + (frac - prev) * ds[k]
    if not with_grad:
        return total / frac, None
    g = np.zeros_like(d, dtype=float)
    g[order[:k]] = ws[:k] / frac
    g[order[k]] = (frac - prev) / frac
    return total / frac, g


# ----------------------------------------------------------------------------- base class

@dataclass(eq=False)
class Term:
    """Base class of the convex terms (see the module docstring for the maths)."""

    def __post_init__(self) -> None:
        pass

    # what the solvers need -------------------------------------------------
    @property
    def constraint_kind(self) -> ConstraintKind:
        raise NotImplementedError

    @property
    def constraint_limit(self) -> float:
        """The ``L`` (or bound) of the hard-constraint form."""
        raise NotImplementedError

    def constraint_measure(self, dose_gy: np.ndarray, x: np.ndarray | None = None) -> float:
        """Exact value of the constrained quantity (max, min, mean, CVaR, ...) from the dose of all rows."""
        raise NotImplementedError

    def penalty(self, dose_gy: np.ndarray, x: np.ndarray | None = None) -> float:
        """Exact penalty from the dose of all rows (and the fluence for :class:`Smoothness`)."""
        return self.value_and_grad(dose_gy)[0]

    def value_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        """Exact penalty and a (sub)gradient with respect to the dose of all rows."""
        raise NotImplementedError

    def value_and_sparse_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray | None, np.ndarray]:
        """:meth:`value_and_grad` with the gradient as ``(rows, values)``: ``rows`` the (unique) rows where
        it may be non-zero, ``None`` when ``values`` is the gradient of all rows.

        The aperture optimiser sums the gradients of many region terms at every step; adding each
        on its own rows saves a full-length vector per term (the sum is the same, term by term).
        """
        v, g = self.value_and_grad(dose_gy)
        return v, None, g

    @property
    def penalty_power(self) -> int:
        """1 for penalties in Gy, 2 for penalties in Gy^2 (objective scaling)."""
        return 2

    @property
    def label(self) -> str:
        raise NotImplementedError

    def relaxed(self, limit: float) -> "Term":
        """A copy whose constraint limit is ``limit`` (elastic relaxation of an infeasible limit)."""
        raise NotImplementedError

    def satisfied(self, value: float, rtol: float = 1e-3) -> bool:
        """Whether a constraint ``value`` meets the limit within ``rtol`` of the limit."""
        lim = self.constraint_limit
        tol = rtol * max(abs(lim), 1e-9)
        if self.constraint_kind in (ConstraintKind.VOXEL_UPPER, ConstraintKind.SCALAR_UPPER):
            return value <= lim + tol
        return value >= lim - tol


def _check_dose(name: str, region: VoxelRegion, dose_gy: float) -> float:
    if not isinstance(region, VoxelRegion):
        raise InputError(f"{name}: region must be a VoxelRegion, got {type(region).__name__}")
    v = float(dose_gy)
    if not np.isfinite(v) or v < 0:
        raise InputError(f"{name} on '{region.name}': dose_gy must be a finite dose >= 0 Gy, got {dose_gy!r}")
    return v


@dataclass(eq=False)
class _RegionTerm(Term):
    region: VoxelRegion
    dose_gy: float
    relax_cost: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        self.dose_gy = _check_dose(type(self).__name__, self.region, self.dose_gy)
        if not (np.isfinite(self.relax_cost) and self.relax_cost > 0):
            raise InputError(f"{type(self).__name__} on '{self.region.name}': relax_cost must be > 0")

    def _d(self, dose_gy: np.ndarray) -> np.ndarray:
        # select the region's rows first: converting the whole (float32) dose vector to float64
        # at every evaluation cost more than the term itself
        return np.take(np.asarray(dose_gy), self.region.rows).astype(float, copy=False)

    def _scatter(self, n: int, g_local: np.ndarray) -> np.ndarray:
        g = np.zeros(n)
        g[self.region.rows] = g_local      # rows are unique (VoxelRegion checks)
        return g

    def _local_value_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        """Penalty and its gradient at the region's rows (``region.rows`` order)."""
        raise NotImplementedError

    def value_and_grad(self, dose_gy):
        v, gl = self._local_value_and_grad(dose_gy)
        return v, self._scatter(len(dose_gy), gl)

    def value_and_sparse_grad(self, dose_gy):
        v, gl = self._local_value_and_grad(dose_gy)
        return v, self.region.rows, gl

    @property
    def constraint_limit(self) -> float:
        return self.dose_gy

    def relaxed(self, limit: float) -> "Term":
        from dataclasses import replace
        return replace(self, dose_gy=float(max(limit, 0.0)))


# ----------------------------------------------------------------------------- voxel-wise terms

@dataclass(eq=False)
class _QuadUpper(_RegionTerm):
    def _local_value_and_grad(self, dose_gy):
        d = self._d(dose_gy)
        e = np.maximum(d - self.dose_gy, 0.0)
        w = self.region.w
        return float(w @ (e * e)), 2.0 * w * e


@dataclass(eq=False)
class _QuadLower(_RegionTerm):
    def _local_value_and_grad(self, dose_gy):
        d = self._d(dose_gy)
        e = np.maximum(self.dose_gy - d, 0.0)
        w = self.region.w
        return float(w @ (e * e)), -2.0 * w * e


@dataclass(eq=False)
class MaxDose(_QuadUpper):
    """Maximum dose ``L`` at every row of ``region`` (Dmax, D0.035cc limits)."""

    @property
    def constraint_kind(self):
        return ConstraintKind.VOXEL_UPPER

    def constraint_measure(self, dose_gy, x=None):
        return float(self._d(dose_gy).max())

    @property
    def label(self):
        return f"{self.region.name} max <= {self.dose_gy:.4g} Gy"


@dataclass(eq=False)
class MinDose(_QuadLower):
    """Minimum dose ``L`` at every row of ``region``."""

    @property
    def constraint_kind(self):
        return ConstraintKind.VOXEL_LOWER

    def constraint_measure(self, dose_gy, x=None):
        return float(self._d(dose_gy).min())

    @property
    def label(self):
        return f"{self.region.name} min >= {self.dose_gy:.4g} Gy"


class _BoundedQuad:
    """Shared by the quadratic over/under-dose terms: as a constraint, ``bound_gy2 <= 0`` means a
    per-voxel dose bound at ``dose_gy``, otherwise a bound on the mean squared excess."""

    @property
    def constraint_limit(self):
        return self.dose_gy if self.bound_gy2 <= 0 else self.bound_gy2

    def relaxed(self, limit):
        from dataclasses import replace
        if self.bound_gy2 <= 0:
            return replace(self, dose_gy=float(limit))
        return replace(self, bound_gy2=float(limit))


@dataclass(eq=False)
class QuadOverdose(_BoundedQuad, _QuadUpper):
    """Mean squared dose above ``dose_gy`` (as a constraint: <= ``bound_gy2``; 0 means d_i <= L)."""

    bound_gy2: float = 0.0

    @property
    def constraint_kind(self):
        return ConstraintKind.VOXEL_UPPER if self.bound_gy2 <= 0 else ConstraintKind.SCALAR_UPPER

    def constraint_measure(self, dose_gy, x=None):
        if self.bound_gy2 <= 0:
            return float(self._d(dose_gy).max())
        return self.value_and_grad(dose_gy)[0]

    @property
    def label(self):
        return f"{self.region.name} overdose^2 above {self.dose_gy:.4g} Gy"


@dataclass(eq=False)
class QuadUnderdose(_BoundedQuad, _QuadLower):
    """Mean squared dose below ``dose_gy`` (as a constraint: <= ``bound_gy2``; 0 means d_i >= L)."""

    bound_gy2: float = 0.0

    @property
    def constraint_kind(self):
        return ConstraintKind.VOXEL_LOWER if self.bound_gy2 <= 0 else ConstraintKind.SCALAR_UPPER

    def constraint_measure(self, dose_gy, x=None):
        if self.bound_gy2 <= 0:
            return float(self._d(dose_gy).min())
        return self.value_and_grad(dose_gy)[0]

    @property
    def label(self):
        return f"{self.region.name} underdose^2 below {self.dose_gy:.4g} Gy"


@dataclass(eq=False)
class ProfileOverdose(_QuadUpper):
    """Mean squared dose above a reference that varies from row to row (a dose fall-off profile).

    ``dose_gy[i]`` (also :attr:`profile_gy`) is the reference of ``region.rows[i]``: e.g. the dose
    allowed at each voxel's distance from the target, so that one term shapes the whole gradient
    instead of one reference per ring.  An objective only (it has no constraint form).
    """

    dose_gy: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.region, VoxelRegion):
            raise InputError(f"ProfileOverdose: region must be a VoxelRegion, got {type(self.region).__name__}")
        prof = np.asarray(self.dose_gy, dtype=float)
        if prof.shape != self.region.rows.shape or not np.all(np.isfinite(prof)) or np.any(prof < 0):
            raise InputError(f"ProfileOverdose on '{self.region.name}': the profile must hold one finite dose "
                             f">= 0 Gy per row ({self.region.rows.size}), got shape {prof.shape}")
        self.dose_gy = prof

    @property
    def profile_gy(self) -> np.ndarray:
        return self.dose_gy

    @property
    def constraint_kind(self):
        raise InputError(f"ProfileOverdose on '{self.region.name}' is an objective, not a constraint")

    @property
    def label(self):
        return f"{self.region.name} overdose^2 above a {self.dose_gy.min():.3g}-{self.dose_gy.max():.3g} Gy profile"


# ----------------------------------------------------------------------------- scalar-measure terms

@dataclass(eq=False)
class _MeasureTerm(_RegionTerm):
    """Penalty (measure - L)_+^2 for upper limits, (L - measure)_+^2 for lower limits."""

    upper = True

    def measure_and_grad(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def constraint_measure(self, dose_gy, x=None):
        return self.measure_and_grad(dose_gy)[0]

    @property
    def constraint_kind(self):
        return ConstraintKind.SCALAR_UPPER if self.upper else ConstraintKind.SCALAR_LOWER

    def _local_value_and_grad(self, dose_gy):
        m, gl = self.measure_and_grad(dose_gy)
        e = m - self.dose_gy if self.upper else self.dose_gy - m
        if e <= 0:
            return 0.0, np.zeros(self.region.rows.size)
        s = 2.0 * e if self.upper else -2.0 * e
        return float(e * e), s * gl


@dataclass(eq=False)
class MeanDose(_MeasureTerm):
    """Mean dose of ``region`` at most ``dose_gy``."""

    def measure_and_grad(self, dose_gy):
        return float(self.region.w @ self._d(dose_gy)), self.region.w

    @property
    def label(self):
        return f"{self.region.name} mean <= {self.dose_gy:.4g} Gy"


@dataclass(eq=False)
class UpperDVH(_MeasureTerm):
    """At most ``volume_cc`` (or ``volume_pct`` %) of ``region`` above ``dose_gy``, via CVaR+ <= dose_gy."""

    volume_cc: float | None = None
    volume_pct: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.volume_cc is None) == (self.volume_pct is None):
            raise InputError(f"UpperDVH on '{self.region.name}': give exactly one of volume_cc, volume_pct")
        v = self.volume_cc if self.volume_cc is not None else self.volume_pct
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"UpperDVH on '{self.region.name}': the volume must be > 0, got {v!r}")
        if self.volume_pct is not None and self.volume_pct > 100:
            raise InputError(f"UpperDVH on '{self.region.name}': volume_pct must be <= 100, got {self.volume_pct}")

    @property
    def fraction(self) -> float:
        """Hottest fraction of the region whose mean dose is limited."""
        if self.volume_cc is not None:
            return self.region.fraction_of_cc(self.volume_cc)
        return min(self.volume_pct / 100.0, 1.0)

    def measure_and_grad(self, dose_gy):
        m, g = _tail_mean_and_grad(-self._d(dose_gy), self.region.w, self.fraction)
        return -m, g

    @property
    def label(self):
        v = f"{self.volume_cc:g}cc" if self.volume_cc is not None else f"{self.volume_pct:g}%"
        return f"{self.region.name} CVaR+({v}) <= {self.dose_gy:.4g} Gy"


@dataclass(eq=False)
class LowerDVH(_MeasureTerm):
    """Coverage: D_{volume_pct}% >= dose_gy via the mean of the coldest (100 - volume_pct) % >= dose_gy."""

    volume_pct: float = 95.0
    upper = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (np.isfinite(self.volume_pct) and 0 <= self.volume_pct < 100):
            raise InputError(f"LowerDVH on '{self.region.name}': volume_pct must be in [0, 100), "
                             f"got {self.volume_pct!r}")

    @property
    def fraction(self) -> float:
        """Coldest fraction of the region whose mean dose is bounded below."""
        return max(1.0 - self.volume_pct / 100.0, 1e-6)

    def measure_and_grad(self, dose_gy):
        return _tail_mean_and_grad(self._d(dose_gy), self.region.w, self.fraction)

    @property
    def label(self):
        return f"{self.region.name} CVaR-({100 - self.volume_pct:g}% coldest) >= {self.dose_gy:.4g} Gy"


# ----------------------------------------------------------------------------- ALARA and fluence terms

@dataclass(eq=False)
class LinearMean(Term):
    """Mean dose of ``region`` (ALARA); as a constraint: mean <= ``bound_gy``."""

    region: VoxelRegion
    bound_gy: float | None = None
    relax_cost: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.region, VoxelRegion):
            raise InputError(f"LinearMean: region must be a VoxelRegion, got {type(self.region).__name__}")

    @property
    def penalty_power(self):
        return 1

    @property
    def constraint_kind(self):
        return ConstraintKind.SCALAR_UPPER

    @property
    def constraint_limit(self):
        if self.bound_gy is None:
            raise InputError(f"LinearMean on '{self.region.name}': used as a constraint without bound_gy")
        return float(self.bound_gy)

    def constraint_measure(self, dose_gy, x=None):
        return float(self.region.w @ np.asarray(dose_gy, float)[self.region.rows])

    def value_and_grad(self, dose_gy):
        g = np.zeros(len(dose_gy))
        np.add.at(g, self.region.rows, self.region.w)
        return self.constraint_measure(dose_gy), g

    def relaxed(self, limit):
        from dataclasses import replace
        return replace(self, bound_gy=float(limit))

    @property
    def label(self):
        return f"{self.region.name} mean dose"


@dataclass(eq=False)
class Smoothness(Term):
    """Quadratic fluence smoothness: mean over neighbour pairs of (gy_per_mu (x_a - x_b))^2."""

    pairs: np.ndarray
    gy_per_mu: float | None = None
    bound_gy2: float | None = None
    relax_cost: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        p = np.asarray(self.pairs)
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0 or not np.issubdtype(p.dtype, np.integer):
            raise InputError(f"Smoothness: pairs must be a non-empty (k, 2) integer array of neighbouring "
                             f"variables, got shape {p.shape} dtype {p.dtype}")
        if p.min() < 0:
            raise InputError("Smoothness: pairs must be variable indices >= 0")
        self.pairs = p.astype(np.int64, copy=False)

    def scale(self) -> float:
        return 1.0 if self.gy_per_mu is None else float(self.gy_per_mu)

    def fluence_value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Penalty and gradient with respect to the fluence ``x``."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        s2 = self.scale() ** 2
        diff = x[a] - x[b]
        k = len(diff)
        g = np.zeros_like(x, dtype=float)
        np.add.at(g, a, 2.0 * s2 * diff / k)
        np.add.at(g, b, -2.0 * s2 * diff / k)
        return float(s2 * diff @ diff / k), g

    @property
    def constraint_kind(self):
        return ConstraintKind.SCALAR_UPPER

    @property
    def constraint_limit(self):
        if self.bound_gy2 is None:
            raise InputError("Smoothness: used as a constraint without bound_gy2")
        return float(self.bound_gy2)

    def constraint_measure(self, dose_gy, x=None):
        if x is None:
            raise InputError("Smoothness: the fluence x is needed to evaluate it")
        return self.fluence_value_and_grad(np.asarray(x, float))[0]

    def penalty(self, dose_gy, x=None):
        return self.constraint_measure(dose_gy, x)

    def value_and_grad(self, dose_gy):
        # depends on the fluence, not on the dose: no contribution to a dose gradient
        return 0.0, np.zeros(len(dose_gy))

    def relaxed(self, limit):
        from dataclasses import replace
        return replace(self, bound_gy2=float(limit))

    @property
    def label(self):
        return f"fluence smoothness ({len(self.pairs)} pairs)"


DOSE_TERMS = (MaxDose, MinDose, MeanDose, UpperDVH, LowerDVH, QuadOverdose, QuadUnderdose, LinearMean)

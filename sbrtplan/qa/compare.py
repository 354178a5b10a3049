"""Measured versus calculated: 2D gamma on dose planes, point-dose difference, verdict.

Gamma on planes
---------------
The measurement is the reference (each detector is a reference point), the
calculation is the evaluated distribution searched around it, as array
software does.  The gamma itself is :func:`sbrtplan.evaluation.gamma_index`
(one implementation in the project) applied to one-slice volumes: offsets that
leave the slice are skipped, so the search is in-plane.  Because that function
wants both doses on one grid, both are put on a search lattice with a step of
at most ``max_eval_spacing_mm``: the reference holds the measured values on
their nodes and only those nodes are evaluated (``mask``); the evaluated dose is
the calculated plane resampled bilinearly onto every node.  When the measured
points fall on a subdivision of the calculated grid (a 5 mm array or a 1 mm
film on a 2 mm calculation with the reference point on a voxel centre: a 1 mm
lattice), that subdivision is the lattice, and the interpolation
``gamma_index`` does between its nodes
reproduces the calculated plane's bilinear interpolant exactly -- the
evaluated dose pymedphys' gamma sees.  Otherwise the lattice subdivides the
measured pitch and the calculated dose is interpolated twice (a second-order
difference in curved penumbrae).

The search runs on a lattice of ``DTA / interp_fraction`` (0.2 mm for 2 mm);
where the dose changes by more than the dose criterion within one step (steep
penumbrae of small fields, local gamma at low dose) a lattice over-estimates
gamma.  Points that fail (gamma > 1) are searched again within one DTA at
``DTA / refine_interp_fraction`` (0.04 mm), which settles pass or fail; their
gamma is the finer value when it is below 1.

Global gamma normalises the dose criterion to the maximum measured dose (or
``normalisation_gy``); local gamma to the measured dose at each point.  Points
below the low-dose threshold (10 % of the normalisation dose) are not
evaluated.  Measured points outside the calculated plane are not evaluated and
counted.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..evaluation import gamma_index
from .criteria import GammaCriterion, Normalisation, QACriteria, load_criteria
from .plane import DosePlane


class Verdict(str, enum.Enum):
    PASS = "PASS"
    REVIEW = "REVIEW"      # gamma between the action level and the pass level
    FAIL = "FAIL"
    INCOMPLETE = "INCOMPLETE"  # a measurement is missing


@dataclass
class GammaResult:
    criterion: GammaCriterion
    pass_rate_pct: float
    n_evaluated: int
    mean_gamma: float
    gamma_map: np.ndarray        # on the measured lattice, NaN where not evaluated

    def as_dict(self) -> dict:
        return {"criterion": self.criterion.label, "dose_pct": self.criterion.dose_pct,
                "dta_mm": self.criterion.dta_mm, "normalisation": self.criterion.normalisation.value,
                "pass_rate_pct": round(self.pass_rate_pct, 2), "n_evaluated": self.n_evaluated,
                "mean_gamma": round(self.mean_gamma, 4)}


@dataclass
class PointComparison:
    measured_gy: float
    calculated_gy: float
    tolerance_pct: float

    @property
    def diff_pct(self) -> float:
        return 100.0 * (self.measured_gy - self.calculated_gy) / self.calculated_gy

    @property
    def passed(self) -> bool:
        return abs(self.diff_pct) < self.tolerance_pct

    def as_dict(self) -> dict:
        return {"measured_gy": round(self.measured_gy, 5), "calculated_gy": round(self.calculated_gy, 5),
                "diff_pct": round(self.diff_pct, 3), "tolerance_pct": self.tolerance_pct, "passed": self.passed}


@dataclass
class QAComparison:
    point: PointComparison | None
    gammas: list[GammaResult]
    decisive: GammaCriterion
    pass_rate_pct: float
    action_rate_pct: float
    normalisation_gy: float
    threshold_pct: float
    shift_mm: tuple[float, float]
    n_measured: int
    n_outside: int
    metadata: dict = field(default_factory=dict)

    def gamma(self, criterion: GammaCriterion) -> GammaResult:
        for g in self.gammas:
            if g.criterion == criterion:
                return g
        raise KeyError(criterion.label)

    @property
    def gamma_verdict(self) -> Verdict | None:
        if not self.gammas:
            return None
        r = self.gamma(self.decisive).pass_rate_pct
        if not math.isfinite(r):
            return Verdict.FAIL
        return Verdict.PASS if r >= self.pass_rate_pct else (Verdict.REVIEW if r >= self.action_rate_pct
                                                             else Verdict.FAIL)

    @property
    def verdict(self) -> Verdict:
        parts = []
        if self.point is not None:
            parts.append(Verdict.PASS if self.point.passed else Verdict.FAIL)
        if self.gamma_verdict is not None:
            parts.append(self.gamma_verdict)
        if Verdict.FAIL in parts:
            return Verdict.FAIL
        if self.point is None or not self.gammas:
            return Verdict.INCOMPLETE
        return Verdict.REVIEW if Verdict.REVIEW in parts else Verdict.PASS

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "point_dose": None if self.point is None else self.point.as_dict(),
            "gamma": {g.criterion.key: g.as_dict() for g in self.gammas},
            "gamma_decisive": self.decisive.label,
            "gamma_verdict": None if self.gamma_verdict is None else self.gamma_verdict.value,
            "gamma_pass_level_pct": self.pass_rate_pct, "gamma_action_level_pct": self.action_rate_pct,
            "low_dose_threshold_pct": self.threshold_pct,
            "normalisation_gy": round(self.normalisation_gy, 5),
            "registration_shift_mm": list(self.shift_mm),
            "n_measured_points": self.n_measured, "n_outside_calculation": self.n_outside,
            **self.metadata,
        }


def _pitch(c: np.ndarray, what: str) -> float:
    d = np.diff(c)
    p = float(np.min(d))
    # every coordinate must sit on a lattice of step p from the first one (rows of a checkerboard too)
    k = (c - c[0]) / p
    if p <= 0 or np.max(np.abs(k - np.rint(k))) > 1e-3:
        raise InputError(f"{what}: the measured points do not lie on a regular lattice (steps "
                         f"{np.unique(np.round(d, 3))} mm); resample the measurement onto a regular grid")
    return p


def _on_lattice(c: np.ndarray, origin: float, step: float, tol_mm: float = 1e-3) -> bool:
    k = (c - origin) / step
    return bool(np.max(np.abs(k - np.rint(k))) * step <= tol_mm)


def _lattice(meas: np.ndarray, calc: np.ndarray, max_h: float, what: str) -> tuple[float, float]:
    """Origin and step of the 1D search lattice: a subdivision of the calculated grid when every measured
    coordinate falls on one (the resampled plane is then exactly the calculated plane's bilinear interpolant),
    else a subdivision of the measured pitch (bilinear resampling of the calculated plane)."""
    dc = np.diff(calc)
    if np.allclose(dc, dc[0], rtol=0, atol=1e-4):
        k0 = max(1, int(math.ceil(dc[0] / max_h - 1e-9)))
        for k in range(k0, k0 + 24):
            if _on_lattice(meas, calc[0], dc[0] / k):
                return float(calc[0]), float(dc[0] / k)
    p = _pitch(meas, what)
    return float(meas[0]), p / max(1, int(math.ceil(p / max_h - 1e-9)))


def plane_gamma(measured: DosePlane, calculated: DosePlane, criterion: GammaCriterion, *,
                threshold_pct: float = 10.0, normalisation_gy: float | None = None, max_gamma: float = 2.0,
                interp_fraction: int = 10, max_eval_spacing_mm: float = 1.0,
                refine_interp_fraction: int | None = 50) -> GammaResult:
    """Gamma of the calculated plane against the measured points (see the module docstring)."""
    if measured.orientation != calculated.orientation:
        raise InputError(f"measured plane is {measured.orientation.value}, calculated plane "
                         f"{calculated.orientation.value}: they must be the same plane")
    if not calculated.mask.all():
        raise InputError("the calculated plane must be dense")
    what = measured.source or "measured plane"
    cu, cv = calculated.u_mm, calculated.v_mm
    u0, hu = _lattice(measured.u_mm, cu, max_eval_spacing_mm, what)
    v0, hv = _lattice(measured.v_mm, cv, max_eval_spacing_mm, what)
    # fine lattice u0 + hu * n inside the calculated plane (the evaluated dose is unknown outside it)
    nu0, nu1 = int(math.ceil((cu[0] - u0) / hu - 1e-9)), int(math.floor((cu[-1] - u0) / hu + 1e-9))
    nv0, nv1 = int(math.ceil((cv[0] - v0) / hv - 1e-9)), int(math.floor((cv[-1] - v0) / hv + 1e-9))
    mu_idx = np.rint((measured.u_mm - u0) / hu).astype(int)
    mv_idx = np.rint((measured.v_mm - v0) / hv).astype(int)
    jj, ii = np.nonzero(measured.mask)
    fi, fj = mu_idx[ii], mv_idx[jj]
    inside = (fi >= nu0) & (fi <= nu1) & (fj >= nv0) & (fj <= nv1)
    if nu1 < nu0 or nv1 < nv0 or not inside.any():
        raise InputError(
            f"measured plane {measured.source or ''} (u {measured.u_mm[0]:.1f}..{measured.u_mm[-1]:.1f}, "
            f"v {measured.v_mm[0]:.1f}..{measured.v_mm[-1]:.1f} mm) does not overlap the calculated plane "
            f"(u {cu[0]:.1f}..{cu[-1]:.1f}, v {cv[0]:.1f}..{cv[-1]:.1f} mm); check the registration shift")
    # only the part of the fine lattice within reach of an evaluated point is needed
    reach_u = int(math.ceil(max_gamma * criterion.dta_mm / hu)) + 1
    reach_v = int(math.ceil(max_gamma * criterion.dta_mm / hv)) + 1
    a0 = max(nu0, int(fi[inside].min()) - reach_u)
    a1 = min(nu1, int(fi[inside].max()) + reach_u)
    b0 = max(nv0, int(fj[inside].min()) - reach_v)
    b1 = min(nv1, int(fj[inside].max()) + reach_v)
    fu = u0 + hu * np.arange(a0, a1 + 1)
    fv = v0 + hv * np.arange(b0, b1 + 1)
    ev = calculated.sample(fu[None, :], fv[:, None])
    ev = np.where(np.isfinite(ev), ev, 0.0)
    ref = np.zeros_like(ev)
    mask = np.zeros(ev.shape, dtype=bool)
    sel_j, sel_i = fj[inside] - b0, fi[inside] - a0
    ref[sel_j, sel_i] = measured.dose_gy[jj[inside], ii[inside]]
    mask[sel_j, sel_i] = True
    norm = measured.max_gy if normalisation_gy is None else float(normalisation_gy)
    glob = criterion.normalisation is Normalisation.GLOBAL
    g = gamma_index(ref[None], ev[None], (hu, hv, 1.0), criterion.dose_pct, criterion.dta_mm, threshold_pct,
                    glob, normalisation_gy=norm, max_gamma=max_gamma, interp_fraction=interp_fraction,
                    mask=mask[None])[0]
    if refine_interp_fraction and refine_interp_fraction > interp_fraction:
        # A lattice search over-estimates gamma where the dose changes by more than the dose criterion within
        # one search step (steep penumbrae, and local gamma at low dose); only gamma <= 1 decides a pass, so the
        # points that failed are searched again within 1 DTA at a finer step.
        again = mask & (g > 1.0)
        if again.any():
            g2 = gamma_index(ref[None], ev[None], (hu, hv, 1.0), criterion.dose_pct, criterion.dta_mm,
                             threshold_pct, glob, normalisation_gy=norm, max_gamma=1.0,
                             interp_fraction=int(refine_interp_fraction), mask=again[None])[0]
            better = again & (g2 < 1.0)
            g[better] = g2[better]
    gmap = np.full(measured.dose_gy.shape, np.nan)
    gmap[jj[inside], ii[inside]] = g[sel_j, sel_i]
    vals = gmap[np.isfinite(gmap)]
    rate = 100.0 * float(np.count_nonzero(vals <= 1.0)) / vals.size if vals.size else float("nan")
    return GammaResult(criterion, rate, int(vals.size), float(vals.mean()) if vals.size else float("nan"), gmap)


def compare_measurement(calculated: DosePlane | None, measured: DosePlane | None, *,
                        calculated_point_gy: float | None = None, measured_point_gy: float | None = None,
                        shift_mm=(0.0, 0.0), criteria: QACriteria | None = None,
                        normalisation_gy: float | None = None) -> QAComparison:
    """Point-dose difference and gamma of every criterion, with the standards' verdict.

    Parameters
    ----------
    calculated, measured : DosePlane or None
        Planes in the registration frame (either None: no gamma).
    calculated_point_gy, measured_point_gy : float or None
        The chamber dose of the verification plan and the measured one (either None: no point check).
    shift_mm : (du, dv)
        Manual registration correction added to the measured coordinates.
    """
    crit = criteria or load_criteria()
    du, dv = (float(v) for v in shift_mm)
    if not (math.isfinite(du) and math.isfinite(dv)):
        raise InputError(f"--shift-mm must be two finite numbers, got {shift_mm!r}")
    point = None
    if measured_point_gy is not None:
        m = float(measured_point_gy)
        if not (math.isfinite(m) and m > 0):
            raise InputError(f"--measured-point-gy must be a positive dose in Gy, got {measured_point_gy!r}")
        if calculated_point_gy is None or not float(calculated_point_gy) > 0:
            raise InputError("measured point dose given but the calculated chamber dose is missing or zero")
        point = PointComparison(m, float(calculated_point_gy), crit.point_tolerance_pct)
    gammas: list[GammaResult] = []
    n_meas = n_out = 0
    norm = float("nan")
    if measured is not None and calculated is not None:
        meas = measured.shifted(du, dv) if (du or dv) else measured
        norm = meas.max_gy if normalisation_gy is None else float(normalisation_gy)
        for c in crit.criteria:
            gammas.append(plane_gamma(meas, calculated, c, threshold_pct=crit.low_dose_threshold_pct,
                                      normalisation_gy=norm, max_gamma=crit.max_gamma,
                                      interp_fraction=crit.interp_fraction,
                                      max_eval_spacing_mm=crit.max_eval_spacing_mm,
                                      refine_interp_fraction=crit.refine_interp_fraction))
        n_meas = meas.n_points
        u, v, _ = meas.points()
        cu, cv = calculated.u_mm, calculated.v_mm
        n_out = int(np.count_nonzero((u < cu[0] - 1e-6) | (u > cu[-1] + 1e-6) | (v < cv[0] - 1e-6)
                                     | (v > cv[-1] + 1e-6)))
    return QAComparison(point, gammas, crit.decisive, crit.pass_rate_pct, crit.action_rate_pct, norm,
                        crit.low_dose_threshold_pct, (du, dv), n_meas, n_out,
                        {"criteria_version": crit.version})

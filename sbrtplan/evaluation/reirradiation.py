"""Re-irradiation: cumulative EQD2 of a prior and a new course, checked against the Michigan table.

Per voxel, with ``n_p``, ``n_n`` the fraction numbers of the two courses::

    EQD2_cum = (1 - discount) * EQD2(prior dose, n_p) + EQD2(new dose, n_n)

``discount`` is the organ's percentage for the interval since the prior course
(``protocols.radiobiology.discount_pct_for``).  The limit applies to the
maximum EQD2 on 0.1 cc (D0.1cc of the cumulative EQD2 distribution).  Both doses
must be on the same grid: resample the prior dose first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..case import Dose, Grid, Structure
from ..errors import InputError
from ..protocols.radiobiology import (ALPHA_BETA_MICHIGAN_GY, ReirradiationLimit, discount_pct_for, eqd2_gy,
                                      reirradiation_limit)
from .dvh import DoseField, compute_dvh

#: Discount column shared by most organs of the table (< 3 mo, 3-6 mo, 6-12 mo, 1-3 y), used
#: when no organ is named.
GENERIC_DISCOUNT = ReirradiationLimit("generic", (), None, (0.0, 10.0, 25.0, 50.0), 50.0)


def _array(dose, what: str) -> tuple[np.ndarray, Grid | None]:
    if isinstance(dose, Dose):
        return dose.dose_gy, dose.grid
    arr = np.asarray(dose, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"{what}: expected a Dose or a 3-D dose array, got shape {arr.shape}")
    return arr, None


def cumulative_eqd2(prior_dose, new_dose, interval_months: float, alpha_beta: float = ALPHA_BETA_MICHIGAN_GY,
                    *, prior_fractions: int, new_fractions: int, organ: str | None = None,
                    discount_pct: float | None = None) -> np.ndarray:
    """Cumulative EQD2 (Gy) per voxel of a prior and a new course.

    Parameters
    ----------
    prior_dose, new_dose : Dose or ndarray
        Total doses of each course on the same grid.
    interval_months : float
        Time since the prior course.
    alpha_beta : float
        Gy; 2.5 for every organ of the Michigan table.
    prior_fractions, new_fractions : int
    organ : str, optional
        TG-263 name whose discount column is used (default: the column shared by
        most organs, 0/10/25/50 %).
    discount_pct : float, optional
        Explicit discount of the prior dose, overriding ``organ``.

    Returns
    -------
    ndarray of float32
    """
    p, gp = _array(prior_dose, "prior dose")
    n, gn = _array(new_dose, "new dose")
    if p.shape != n.shape or (gp is not None and gn is not None and not gp.same_as(gn)):
        raise InputError(f"prior dose {p.shape} and new dose {n.shape} are not on the same grid; "
                         f"resample the prior dose onto the new dose grid first")
    if discount_pct is None:
        row = reirradiation_limit(organ) if organ else None
        discount_pct = discount_pct_for(row or GENERIC_DISCOUNT, interval_months)
    if not 0 <= discount_pct <= 100:
        raise InputError(f"discount must be within 0-100 %, got {discount_pct}")
    keep = 1.0 - discount_pct / 100.0
    out = keep * eqd2_gy(p.astype(np.float64), prior_fractions, alpha_beta) + eqd2_gy(
        n.astype(np.float64), new_fractions, alpha_beta)
    return np.asarray(out, dtype=np.float32)


@dataclass
class ReirradiationResult:
    """One organ checked against the Michigan table."""

    structure: str
    organ: str
    discount_pct: float
    prior_eqd2_d01_gy: float
    new_eqd2_d01_gy: float
    cumulative_eqd2_d01_gy: float
    limit_gy: float | None
    passed: bool | None
    note: str = ""

    def as_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
        return {"structure": self.structure, "organ": self.organ, "discount_pct": self.discount_pct,
                "prior_eqd2_D0.1cc_gy": r(self.prior_eqd2_d01_gy), "new_eqd2_D0.1cc_gy": r(self.new_eqd2_d01_gy),
                "cumulative_eqd2_D0.1cc_gy": r(self.cumulative_eqd2_d01_gy), "limit_gy": r(self.limit_gy),
                "passed": self.passed, "note": self.note}


def min_gap_mm(a: Structure, b: Structure, search_mm: float = 10.0) -> float:
    """Smallest gap (mm) between the voxels of two structures (``inf`` beyond ``search_mm``).

    The gap between two voxels is their centre distance minus the extent of a voxel
    along the line joining them (``sum |u_i| h_i``), so face- or corner-adjacent
    voxels have a gap of 0 and overlapping structures too.
    """
    g = a.grid
    sp = np.asarray(g.spacing_zyx_mm, dtype=np.float64)
    ma, mb = a.weights >= 0.5, b.weights >= 0.5
    if not ma.any() or not mb.any():
        return float("inf")
    if np.any(ma & mb):
        return 0.0
    idx = np.argwhere(mb)
    margin = np.ceil(search_mm / sp).astype(int) + 2
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, np.asarray(g.shape))
    crop = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))
    sub_a = ma[crop]
    if not sub_a.any():
        return float("inf")
    dist, near = ndimage.distance_transform_edt(~mb[crop], sampling=sp, return_indices=True)
    pa = np.argwhere(sub_a)
    pb = near[:, sub_a].T
    vec = (pb - pa) * sp[None, :]
    d = np.linalg.norm(vec, axis=1)
    u = vec / np.maximum(d, 1e-12)[:, None]
    gap = np.maximum(d - np.abs(u) @ sp, 0.0)
    m = float(gap.min())
    return m if m <= search_mm else float("inf")


def check_reirradiation(prior_dose, new_dose, structures, interval_months: float, *, prior_fractions: int,
                        new_fractions: int, target: Structure | None = None,
                        alpha_beta: float = ALPHA_BETA_MICHIGAN_GY) -> list[ReirradiationResult]:
    """Check every structure the Michigan table knows against its cumulative EQD2 limit on 0.1 cc.

    Parameters
    ----------
    prior_dose, new_dose : Dose
        On the same grid as ``structures``.
    structures : dict of str -> Structure or iterable of Structure
    interval_months : float
    prior_fractions, new_fractions : int
    target : Structure, optional
        Used for the spinal cord's higher limit (55 Gy) when the cord is < 2 mm from it.
    """
    items = structures.values() if isinstance(structures, dict) else structures
    n_arr, grid = _array(new_dose, "new dose")
    cache: dict[float, DoseField] = {}
    out: list[ReirradiationResult] = []
    p_arr, _ = _array(prior_dose, "prior dose")
    for s in items:
        row = reirradiation_limit(s.name)
        if row is None or s.is_empty:
            continue
        disc = discount_pct_for(row, interval_months)
        if disc not in cache:
            cum = cumulative_eqd2(p_arr, n_arr, interval_months, alpha_beta, prior_fractions=prior_fractions,
                                  new_fractions=new_fractions, discount_pct=disc)
            cache[disc] = DoseField(cum, s.grid)
        if -1.0 not in cache:
            cache[-1.0] = DoseField(eqd2_gy(p_arr.astype(np.float64), prior_fractions, alpha_beta).astype(np.float32),
                                    s.grid)
            cache[-2.0] = DoseField(eqd2_gy(n_arr.astype(np.float64), new_fractions, alpha_beta).astype(np.float32),
                                    s.grid)
        cum_d = compute_dvh(cache[disc], s).d_cc(0.1)
        prior_d = compute_dvh(cache[-1.0], s).d_cc(0.1)
        new_d = compute_dvh(cache[-2.0], s).d_cc(0.1)
        limit = row.max_eqd2_gy
        note = f"prior dose discounted by {disc:g} % after {interval_months:g} months"
        if row.max_eqd2_near_target_gy is not None and target is not None:
            gap = min_gap_mm(s, target)
            if gap < 2.0:
                limit = row.max_eqd2_near_target_gy
                note += f"; {s.name} is {gap:.1f} mm from {target.name} (< 2 mm): limit {limit:g} Gy"
        if limit is None:
            passed = None
            note += f"; no numeric limit ({row.limit_text or 'see table'})"
        else:
            passed = bool(cum_d <= limit)
        out.append(ReirradiationResult(s.name, row.organ, disc, prior_d, new_d, cum_d, limit, passed, note))
    return out

"""Linear-quadratic radiobiology: BED, EQD2, isoeffective doses, re-irradiation table.

All doses are totals over a course of ``fractions`` equal fractions.  For dose
arrays the formulas apply voxel by voxel with the voxel's dose per fraction
``d = D / n``:

    BED  = D (1 + d / (alpha/beta))
    EQD2 = BED / (1 + 2 / (alpha/beta))

alpha/beta defaults from the standards: 10 Gy for tumour (liver standard,
bone standard), 2 Gy for the spinal cord (bone standard), 2.5 Gy for every organ
of the University of Michigan re-irradiation table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError, ProtocolError
from .tables import load_table

ALPHA_BETA_TUMOUR_GY = 10.0
ALPHA_BETA_CORD_BONE_GY = 2.0
ALPHA_BETA_MICHIGAN_GY = 2.5


def _check(fractions, alpha_beta_gy) -> None:
    if np.any(np.asarray(fractions) < 1):
        raise InputError(f"number of fractions must be >= 1, got {fractions!r}")
    if np.any(np.asarray(alpha_beta_gy) <= 0):
        raise InputError(f"alpha/beta must be positive (Gy), got {alpha_beta_gy!r}")


def bed_gy(total_gy, fractions, alpha_beta_gy):
    """Biologically effective dose (Gy) of ``total_gy`` in ``fractions`` equal fractions.

    Works on scalars and arrays (per voxel).

    Examples
    --------
    >>> round(bed_gy(27, 3, 10), 2), round(bed_gy(45, 3, 10), 2)
    (51.3, 112.5)
    """
    _check(fractions, alpha_beta_gy)
    d = np.asarray(total_gy, dtype=np.float64)
    out = d * (1.0 + d / (np.asarray(fractions, dtype=np.float64) * alpha_beta_gy))
    return float(out) if out.ndim == 0 else out


def eqd2_gy(total_gy, fractions, alpha_beta_gy):
    """Equivalent dose in 2 Gy fractions (Gy); scalar or per voxel."""
    b = np.asarray(bed_gy(total_gy, fractions, alpha_beta_gy))
    out = b / (1.0 + 2.0 / alpha_beta_gy)
    return float(out) if out.ndim == 0 else out


def bed_to_eqd2_gy(bed, alpha_beta_gy):
    b = np.asarray(bed, dtype=np.float64)
    out = b / (1.0 + 2.0 / alpha_beta_gy)
    return float(out) if out.ndim == 0 else out


def total_dose_for_bed_gy(bed, fractions, alpha_beta_gy):
    """Total dose (Gy) in ``fractions`` equal fractions that gives ``bed`` (inverse of :func:`bed_gy`).

    Solves ``D + D^2 / (n ab) = BED`` for the positive root.
    """
    _check(fractions, alpha_beta_gy)
    b = np.asarray(bed, dtype=np.float64)
    na = np.asarray(fractions, dtype=np.float64) * alpha_beta_gy
    out = 0.5 * na * (np.sqrt(1.0 + 4.0 * b / na) - 1.0)
    return float(out) if out.ndim == 0 else out


def isoeffective_dose_gy(total_gy, from_fractions, to_fractions, alpha_beta_gy):
    """Total dose in ``to_fractions`` with the same BED as ``total_gy`` in ``from_fractions``.

    Used to convert organ limits to a fraction number the standards give no
    table for.

    Examples
    --------
    >>> round(isoeffective_dose_gy(21.9, 3, 3, 2), 6)
    21.9
    """
    return total_dose_for_bed_gy(bed_gy(total_gy, from_fractions, alpha_beta_gy), to_fractions, alpha_beta_gy)


# ------------------------------------------------------------ re-irradiation
@dataclass(frozen=True)
class ReirradiationLimit:
    """One organ of the University of Michigan cumulative-EQD2 table.

    ``max_eqd2_gy`` is None for "ALARA", "NTCP-limited" or "per case" organs
    (``limit_text`` says which).  ``discount_pct`` are the percentages by which
    the prior dose is reduced for intervals < 3, 3-6, 6-12 and 12-36 months;
    ``discount_over_3y_pct`` applies beyond 3 years.
    """

    organ: str
    names: tuple[str, ...]
    max_eqd2_gy: float | None
    discount_pct: tuple[float, float, float, float]
    discount_over_3y_pct: float
    alpha_beta_gy: float = ALPHA_BETA_MICHIGAN_GY
    volume_cc: float = 0.1
    max_eqd2_near_target_gy: float | None = None  # spinal cord < 2 mm from the target
    limit_text: str = ""

    def discount_for(self, interval_months: float) -> float:
        """Fraction (0..1) by which the prior dose is discounted after ``interval_months``."""
        return discount_pct_for(self, interval_months) / 100.0


INTERVAL_EDGES_MONTHS = (3.0, 6.0, 12.0, 36.0)


def discount_pct_for(limit: ReirradiationLimit, interval_months: float) -> float:
    """Percent discount of the prior dose for ``interval_months`` since the prior course.

    Columns of the table: < 3 months, 3-6 months, 6 months-1 year, 1-3 years
    (lower edge included: an interval of exactly 3 months uses the 3-6 month
    column); > 3 years: the note of the liver standard's table A.3 (50 %).
    """
    m = float(interval_months)
    if not np.isfinite(m) or m < 0:
        raise InputError(f"re-irradiation interval must be >= 0 months, got {interval_months!r}")
    if m > INTERVAL_EDGES_MONTHS[3]:
        return limit.discount_over_3y_pct
    for i, edge in enumerate(INTERVAL_EDGES_MONTHS):
        if m < edge:
            return limit.discount_pct[i]
    return limit.discount_pct[3]  # exactly 36 months: the 1-3 year column


@lru_cache(maxsize=1)
def michigan_table() -> tuple[ReirradiationLimit, ...]:
    """The University of Michigan cumulative EQD2 table shipped with the package."""
    data = load_table("michigan_reirradiation")
    over3 = float(data.get("discount_over_3y_pct", 50))
    rows = []
    for i, r in enumerate(data.get("organs") or []):
        where = f"table michigan_reirradiation, organ #{i + 1}"
        try:
            disc = tuple(float(x) for x in r["discount_pct"])
            if len(disc) != 4:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"{where}: 'discount_pct' must list 4 percentages (<3 mo, 3-6 mo, 6-12 mo, 1-3 y)")
        mx = r.get("max_eqd2_gy")
        rows.append(ReirradiationLimit(
            organ=str(r["organ"]), names=tuple(r.get("names") or ()),
            max_eqd2_gy=None if mx is None else float(mx), discount_pct=disc,
            discount_over_3y_pct=float(r.get("discount_over_3y_pct", over3)),
            alpha_beta_gy=float(r.get("alpha_beta_gy", data.get("alpha_beta_gy", ALPHA_BETA_MICHIGAN_GY))),
            volume_cc=float(data.get("volume_cc", 0.1)),
            max_eqd2_near_target_gy=(None if r.get("max_eqd2_near_target_gy") is None
                                     else float(r["max_eqd2_near_target_gy"])),
            limit_text=str(r.get("limit_text", ""))))
    return tuple(rows)


def reirradiation_limit(structure_name: str) -> ReirradiationLimit | None:
    """The Michigan row for a (TG-263) structure name, or None when the table has none."""
    key = structure_name.strip().lower()
    for row in michigan_table():
        if any(key == n.lower() for n in row.names):
            return row
    # PRVs and laterality suffixes: "SpinalCord_PRV03" -> SpinalCord, "Lung_L" -> Lung
    base = key.split("_prv")[0]
    for row in michigan_table():
        if any(base == n.lower() for n in row.names):
            return row
    return None

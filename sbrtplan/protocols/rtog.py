"""RTOG 0813/0915 conformality table: limits interpolated in PTV volume and deviation classes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..errors import InputError, ProtocolError
from .tables import load_table
from .model import Goal, Metric, Quantity, RtogLevel, Unit


class RtogClass(str, enum.Enum):
    """Deviation class of one RTOG conformality criterion (limits are strict '<')."""

    NONE = "none"
    MINOR = "minor"
    MAJOR = "major"


@lru_cache(maxsize=1)
def _table() -> np.ndarray:
    data = load_table("rtog_0813_0915")
    rows = np.asarray(data["rows"], dtype=float)
    if rows.ndim != 2 or rows.shape[1] != 7 or np.any(np.diff(rows[:, 0]) <= 0):
        raise ProtocolError("table rtog_0813_0915: expected rows of 7 numbers with increasing PTV volume")
    return rows


@dataclass(frozen=True)
class RtogLimits:
    """Table limits at one PTV volume (linear interpolation between rows).

    ``in_range`` is False when the volume lies outside the table's 1.8-163 cc:
    the nearest row is used and the result must be flagged.
    """

    ptv_cc: float
    r100_none: float
    r100_minor: float
    r50_none: float
    r50_minor: float
    d2cm_none_pct: float
    d2cm_minor_pct: float
    in_range: bool

    def limit(self, metric: Metric, level: RtogLevel) -> float:
        key = {Metric.CI_RTOG: "r100", Metric.R50: "r50", Metric.D2CM: "d2cm"}.get(metric)
        if key is None:
            raise ProtocolError(f"the RTOG conformality table has no limit for metric {metric.value}")
        suffix = "_pct" if key == "d2cm" else ""
        return float(getattr(self, f"{key}_{level.value}{suffix}"))

    def classify(self, metric: Metric, value: float) -> RtogClass:
        if not np.isfinite(value):
            return RtogClass.MAJOR
        if value < self.limit(metric, RtogLevel.NONE):
            return RtogClass.NONE
        if value < self.limit(metric, RtogLevel.MINOR):
            return RtogClass.MINOR
        return RtogClass.MAJOR


def rtog_limits(ptv_cc: float) -> RtogLimits:
    """RTOG 0813/0915 limits at ``ptv_cc``, linearly interpolated between table rows.

    Examples
    --------
    >>> round(rtog_limits(40.0).r50_none, 4)
    4.1875
    """
    v = float(ptv_cc)
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"PTV volume must be positive for the RTOG table, got {ptv_cc!r} cc")
    t = _table()
    in_range = bool(t[0, 0] <= v <= t[-1, 0])
    cols = [float(np.interp(v, t[:, 0], t[:, c])) for c in range(1, 7)]  # np.interp clamps outside
    return RtogLimits(v, *cols, in_range=in_range)


@dataclass(frozen=True)
class RtogAssessment:
    """Classes of R100, R50 and D2cm and the overall (worst) class."""

    r100: RtogClass
    r50: RtogClass
    d2cm: RtogClass
    limits: RtogLimits

    @property
    def overall(self) -> RtogClass:
        order = [RtogClass.NONE, RtogClass.MINOR, RtogClass.MAJOR]
        return max((self.r100, self.r50, self.d2cm), key=order.index)

    @property
    def in_range(self) -> bool:
        return self.limits.in_range

    def as_dict(self) -> dict:
        lim = self.limits
        return {"class": self.overall.value, "R100": self.r100.value, "R50": self.r50.value,
                "D2cm": self.d2cm.value, "in_table_range": lim.in_range,
                "limits": {"R100": [lim.r100_none, lim.r100_minor], "R50": [round(lim.r50_none, 4),
                                                                          round(lim.r50_minor, 4)],
                           "D2cm_pct": [round(lim.d2cm_none_pct, 3), round(lim.d2cm_minor_pct, 3)]}}


def rtog_class(ptv_cc: float, r100: float, r50: float, d2cm_pct: float) -> RtogAssessment:
    """Classify a plan against the RTOG 0813/0915 table.

    Examples
    --------
    >>> rtog_class(22.0, 1.1, 4.6, 50.0).r50.value
    'minor'
    >>> rtog_class(40.0, 1.1, 4.1, 50.0).overall.value
    'none'
    """
    lim = rtog_limits(ptv_cc)
    return RtogAssessment(lim.classify(Metric.CI_RTOG, r100), lim.classify(Metric.R50, r50),
                          lim.classify(Metric.D2CM, d2cm_pct), lim)


def rtog_goal(goal: Goal, ptv_volume_cc: float) -> Goal:
    """A copy of ``goal`` whose limit is the RTOG 0813/0915 table value at ``ptv_volume_cc``.

    ``goal`` itself when it names no RTOG level.  A PTV outside the table's 1.8-163 cc range uses
    the nearest row, and the goal's note says so.
    """
    if goal.rtog_level is None:
        return goal
    lim = rtog_limits(ptv_volume_cc)
    value = lim.limit(goal.metric, goal.rtog_level)
    unit = Unit.PCT_RX if goal.metric is Metric.D2CM else Unit.RATIO
    note = goal.note
    if not lim.in_range:
        note = (note + "; " if note else "") + (f"PTV {ptv_volume_cc:.1f} cc outside the table's "
                                                f"1.8-163 cc range: nearest row used")
    return replace(goal, limit=Quantity(value, unit), note=note)

"""What an evaluation finds: one result per goal, target and structure metrics, the plan report.

:func:`~sbrtplan.evaluation.compliance.evaluate_plan` fills these; :meth:`PlanReport.as_dict` is
the ``metrics.json`` content (``evaluation.report``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from .._version import __version__
from .._log import Timings
from ..case import Dose
from ..protocols import Goal, Metric, Protocol, Scheme, Stage, bed_gy
from .conformity import PlanIndices
from .dvh import DVH
from .reirradiation import ReirradiationResult

#: Version of the ``metrics.json`` layout (``evaluation.compare`` refuses another major version).
SCHEMA_VERSION = "1.1"


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_EVALUABLE = "not_evaluable"


@dataclass
class GoalResult:
    """The outcome of one goal on one structure."""

    goal: Goal
    structure: str | None       # structure actually evaluated (None when missing)
    value: float | None         # in ``unit``
    limit: float | None         # numeric limit in ``unit``
    unit: str
    status: Status
    note: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.status is Status.NOT_EVALUABLE else self.status is Status.PASS

    def as_dict(self) -> dict:
        g = self.goal
        return {
            "structure": self.structure or g.structure, "role": g.structure, "minus": list(g.minus),
            "apply_to": g.apply_to.value, "metric": g.metric.value, "metric_label": g.metric_label,
            "parameter": None if g.parameter is None else g.parameter.value,
            "parameter_unit": None if g.parameter is None else g.parameter.unit.value,
            "comparator": g.comparator.value, "limit": _r(self.limit), "limit_unit": self.unit,
            "value": _r(self.value), "unit": self.unit, "priority": int(g.priority),
            "priority_class": g.priority.name.lower(), "stage": g.stage.value, "mandatory": g.mandatory,
            "source": g.source, "passed": self.passed, "status": self.status.value,
            "converted_from_fractions": g.converted_from_fractions, "note": "; ".join(
                x for x in (g.note, self.note) if x)}


def _r(v, nd: int = 4):
    if v is None:
        return None
    v = float(v)
    return None if not math.isfinite(v) else round(v, nd)


@dataclass
class TargetMetrics:
    """ICRU 91 items of one target (plus plan indices for the prescription target)."""

    name: str
    role: str
    volume_cc: float
    d98_gy: float
    d95_gy: float
    d50_gy: float
    d2_gy: float
    dmax_gy: float
    dmin_gy: float
    dmean_gy: float
    near_max_gy: float
    v100_pct: float
    v90_pct: float
    rx_gy: float
    indices: PlanIndices | None = None
    radiobiology: dict | None = None

    def as_dict(self) -> dict:
        rx = self.rx_gy
        pct = lambda d: _r(100.0 * d / rx, 3) if rx > 0 else None  # noqa: E731
        ix = self.indices
        out = {"role": self.role, "volume_cc": _r(self.volume_cc), "D98_gy": _r(self.d98_gy),
               "D95_gy": _r(self.d95_gy), "D50_gy": _r(self.d50_gy), "D2_gy": _r(self.d2_gy),
               "Dmax_gy": _r(self.dmax_gy), "Dmin_gy": _r(self.dmin_gy), "Dmean_gy": _r(self.dmean_gy),
               "near_max_gy": _r(self.near_max_gy),
               "D98_pct_rx": pct(self.d98_gy), "D95_pct_rx": pct(self.d95_gy), "D50_pct_rx": pct(self.d50_gy),
               "D2_pct_rx": pct(self.d2_gy), "V100_pct": _r(self.v100_pct), "V90_pct": _r(self.v90_pct),
               "CI_rtog": None, "CI_paddick": None, "GI": None, "R50": None, "D2cm_pct": None, "HI": None,
               "V105_outside_pct": None, "rtog_class": None, "rtog": None}
        if ix is not None:
            out.update({"CI_rtog": _r(ix.ci_rtog), "CI_paddick": _r(ix.ci_paddick), "GI": _r(ix.gi),
                        "R50": _r(ix.r50), "D2cm_pct": _r(ix.d2cm_pct), "HI": _r(ix.hi),
                        "V105_outside_pct": _r(ix.v105_outside_pct),
                        "piv_cc": _r(ix.piv_cc), "v50_cc": _r(ix.v50_cc), "tv_piv_cc": _r(ix.tv_piv_cc)})
            if ix.rtog is not None:
                out["rtog_class"] = ix.rtog.overall.value
                out["rtog"] = ix.rtog.as_dict()
        if self.radiobiology is not None:
            out["radiobiology"] = self.radiobiology
        return out


@dataclass
class StructureMetrics:
    name: str
    role: str
    volume_cc: float
    mean_gy: float
    max_gy: float
    min_gy: float
    d0035_gy: float
    d01_gy: float
    original_name: str = ""
    radiobiology: dict | None = None

    def as_dict(self) -> dict:
        out = {"role": self.role, "original_name": self.original_name, "volume_cc": _r(self.volume_cc),
               "mean_gy": _r(self.mean_gy), "max_gy": _r(self.max_gy), "min_gy": _r(self.min_gy),
               "D0.035cc_gy": _r(self.d0035_gy), "D0.1cc_gy": _r(self.d01_gy)}
        if self.radiobiology is not None:
            out["radiobiology"] = self.radiobiology
        return out


@dataclass
class CoverageVerdict:
    """Which coverage rule the plan meets: ``primary``, ``fallback``, ``failed`` or ``not_evaluable``."""

    status: str
    note: str = ""


@dataclass
class PlanReport:
    """Everything :func:`evaluate_plan` found; ``as_dict`` is the metrics.json content."""

    scheme: Scheme | None
    rx_gy: float | None
    protocol: Protocol | None
    target: str | None
    targets: dict[str, TargetMetrics]
    structures: dict[str, StructureMetrics]
    goals: list[GoalResult]
    coverage: CoverageVerdict | None
    reirradiation: list[ReirradiationResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dose_info: dict = field(default_factory=dict)
    timings: Timings | None = None
    plan_timings: dict | None = None
    conditions: tuple[str, ...] = ()
    dvhs: dict[str, DVH] = field(default_factory=dict, repr=False)

    @property
    def hard_failures(self) -> list[GoalResult]:
        """Mandatory organ limits and target bounds that fail (coverage judged separately)."""
        return [r for r in self.goals if r.goal.mandatory and r.status is Status.FAIL
                and r.goal.stage is Stage.CONSTRAINT]

    @property
    def acceptable(self) -> bool | None:
        """Mandatory constraints, prescription rules (BED) and coverage (primary or fallback) met."""
        if self.protocol is None:
            return None
        bed_fail = any(r.status is Status.FAIL and r.goal.metric is Metric.BED_RX for r in self.goals)
        cov_ok = self.coverage is None or self.coverage.status in ("primary", "fallback")
        return not self.hard_failures and not bed_fail and cov_ok

    def as_dict(self) -> dict:
        n_eval = [r for r in self.goals if r.status is not Status.NOT_EVALUABLE]
        out = {
            "schema_version": SCHEMA_VERSION,
            "generator": f"sbrtplan {__version__}",
            "protocol": None if self.protocol is None else {
                "name": self.protocol.name, "title": self.protocol.title,
                "conditions": list(self.conditions),
                "resolution": self.protocol.resolution_notes(self.scheme) if self.scheme else []},
            "prescription": None if self.scheme is None else {
                "dose_gy": self.scheme.total_gy, "fractions": self.scheme.fractions,
                "dose_per_fraction_gy": _r(self.scheme.dose_per_fraction_gy), "target": self.target,
                "bed10_gy": _r(bed_gy(self.scheme.total_gy, self.scheme.fractions, 10.0), 3)},
            "dose": self.dose_info,
            "targets": {k: v.as_dict() for k, v in self.targets.items()},
            "structures": {k: v.as_dict() for k, v in self.structures.items()},
            "goals": [r.as_dict() for r in self.goals],
            "coverage": None if self.coverage is None else {"status": self.coverage.status,
                                                            "note": self.coverage.note},
            "summary": {
                "n_goals": len(self.goals),
                "n_passed": sum(r.status is Status.PASS for r in self.goals),
                "n_failed": sum(r.status is Status.FAIL for r in self.goals),
                "n_failed_mandatory": sum(r.status is Status.FAIL and r.goal.mandatory for r in self.goals),
                "n_not_evaluable": len(self.goals) - len(n_eval),
                "hard_failures": [f"{r.structure} {r.goal.metric_label}" for r in self.hard_failures],
                "acceptable": self.acceptable,
            },
            "notes": list(self.notes),
        }
        if self.reirradiation:
            out["reirradiation"] = [r.as_dict() for r in self.reirradiation]
        timings = {}
        if self.plan_timings:
            timings.update(self.plan_timings)
        if self.timings is not None:
            timings.update({f"evaluation.{k}": v for k, v in self.timings.as_dict().items()})
        if timings:
            out["timings_s"] = timings
        return out


@dataclass
class PriorCourse:
    """A previous course for re-irradiation checks.

    ``dose`` is the prior course's total dose: a :class:`Dose` (an RTDOSE on any
    grid; resampled onto the structures' grid) or an array already on the
    structures' grid.
    """

    dose: Dose | np.ndarray
    fractions: int
    interval_months: float

"""Plan evaluation against a protocol: target and organ metrics, one result per goal.

:func:`evaluate_plan` takes any dose on any grid plus structures, a protocol
and a scheme, and returns a :class:`PlanReport`: ICRU 91 items per target,
volume/mean/max/D0.035cc per structure, conformity indices for the
prescription target, and a :class:`GoalResult` per goal with value, limit,
priority and pass / fail / not evaluable.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from .._version import __version__
from .._log import Timings, get_logger, timed
from ..case import Dose, Grid, Structure, StructureRole
from ..errors import InputError, ProtocolError, StructureError
from ..protocols import (ALPHA_BETA_MICHIGAN_GY, ALPHA_BETA_TUMOUR_GY, ApplyTo, Goal, Metric, Protocol,
                         Scheme, Stage, Unit, bed_gy, eqd2_gy, load_protocol)
from .conformity import PlanIndices, plan_indices
from .dvh import DVH, DoseField, compute_dvh
from .matching import RoleMatch, find_prv, match_roles, rename_structures, subtract
from .reirradiation import ReirradiationResult, check_reirradiation

log = get_logger(__name__)


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
        from .report import SCHEMA_VERSION

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


# ----------------------------------------------------------------- helpers
def _resample_to(dose: Dose, grid: Grid) -> Dose:
    """Trilinear resampling of ``dose`` onto ``grid`` (0 Gy outside the dose grid), slice by slice."""
    if dose.grid.same_as(grid):
        return dose
    out = np.empty(grid.shape, np.float32)
    jj, ii = np.meshgrid(np.arange(grid.ny, dtype=np.float64), np.arange(grid.nx, dtype=np.float64), indexing="ij")
    for k in range(grid.nz):
        kji = np.stack([np.full(jj.size, float(k)), jj.ravel(), ii.ravel()], axis=1)
        src = dose.grid.index_from_patient(grid.patient_from_index(kji)).T
        out[k] = ndimage.map_coordinates(dose.dose_gy, src, order=1, mode="constant", cval=0.0).reshape(jj.shape)
    return Dose(grid, out, description=dose.description + " (resampled)")


def _alpha_beta_of(name: str, s: Structure, match: RoleMatch | None, protocol: Protocol | None) -> tuple[float, str]:
    """alpha/beta (Gy) of a structure and where it comes from.

    The protocol role the structure fills (its PRV: the organ's role) gives the
    value (cord 2 Gy in the bone standard); other organs take the protocol's
    conversion value (2.5 Gy, the Michigan table), targets the tumour value
    (10 Gy).  Without a protocol: 10 Gy for targets, 2.5 Gy otherwise.
    """
    if protocol is None or match is None:
        if s.role.is_target:
            return ALPHA_BETA_TUMOUR_GY, "tumour default"
        return ALPHA_BETA_MICHIGAN_GY, "organ default (Michigan table)"
    low = name.lower()
    base = low.split("_prv")[0] if "_prv" in low else low
    for key, found in match.roles.items():
        spec = protocol.roles.get(key)
        if spec is None:
            continue
        if any(f.name.lower() in (low, base) for f in found):
            if spec.alpha_beta_gy is not None:
                return spec.alpha_beta_gy, f"protocol role '{key}'"
            if spec.is_target:
                return protocol.tumour_alpha_beta_gy, "protocol tumour value"
            break
    if s.role.is_target:
        return protocol.tumour_alpha_beta_gy, "protocol tumour value"
    return protocol.conversion_alpha_beta_gy, "protocol organ value"


def _radiobiology(dvh: DVH, points: dict[str, float], fractions: int, ab: float, source: str) -> dict:
    """BED and EQD2 of DVH points and of the mean (mean of the per-voxel values)."""
    eq = {k: _r(eqd2_gy(v, fractions, ab)) for k, v in points.items()}
    bd = {k: _r(bed_gy(v, fractions, ab)) for k, v in points.items()}
    mean_bed = dvh.mean_bed_gy(fractions, ab)
    bd["mean"] = _r(mean_bed)
    eq["mean"] = _r(mean_bed / (1.0 + 2.0 / ab))
    return {"alpha_beta_gy": ab, "alpha_beta_source": source, "fractions": fractions, "eqd2_gy": eq, "bed_gy": bd}


def _whole_grid(grid: Grid) -> Structure:
    return Structure("dose grid", grid, np.ones(grid.shape, bool), StructureRole.EXTERNAL)


class _Context:
    """Caches shared by the goals of one evaluation."""

    def __init__(self, field_: DoseField, match: RoleMatch | None, rx_gy: float | None, scheme: Scheme | None,
                 protocol: Protocol | None):
        self.field = field_
        self.match = match
        self.rx_gy = rx_gy
        self.scheme = scheme
        self.protocol = protocol
        self.dvhs: dict[str, DVH] = {}
        self.indices: PlanIndices | None = None
        self.body: Structure | None = None

    def dvh(self, s: Structure) -> DVH:
        if s.name not in self.dvhs:
            self.dvhs[s.name] = compute_dvh(self.field, s)
        return self.dvhs[s.name]


def _goal_structures(goal: Goal, ctx: _Context) -> tuple[list[Structure], str]:
    """Structures a goal applies to (after PRV and 'minus' resolution) and a note."""
    m = ctx.match
    spec = ctx.protocol.roles[goal.structure]
    found = list(m.get(goal.structure))
    notes = []
    if not found and spec.kind == "body":
        found = [_whole_grid(ctx.field.grid)]
        notes.append("no External contour: the whole dose grid is used")
    if not found:
        return [], ""
    if goal.apply_to is ApplyTo.PRV:
        resolved = []
        for s in found:
            prv = find_prv(s, m.structures)
            if prv is not None:
                resolved.append(prv)
            else:
                resolved.append(s)
                margin = f" (the standard asks for a {spec.prv_margin_mm:g} mm PRV)" if spec.prv_margin_mm else ""
                notes.append(f"no PRV structure for {s.name}: evaluated on the organ{margin}")
        found = resolved
    if goal.minus:
        parts = []
        for key in goal.minus:
            parts.extend(m.get(key))
        missing = [k for k in goal.minus if not m.get(k)]
        if missing and len(missing) == len(goal.minus):
            notes.append(f"no {'/'.join(missing)} structure: nothing subtracted")
        found = [subtract(s, parts, f"{s.name}-" + "-".join(p.name for p in parts)) if parts else s
                 for s in found]
    return found, "; ".join(notes)


def _dose_value(goal: Goal, gy: float, rx: float | None) -> tuple[float, str]:
    """A dose in the unit of the goal's limit."""
    if goal.limit is not None and goal.limit.unit is Unit.PCT_RX:
        return 100.0 * gy / rx, "%Rx"
    return gy, "Gy"


def _evaluate_one(goal: Goal, s: Structure | None, ctx: _Context) -> tuple[float, str]:
    """Value of ``goal`` on ``s`` in the unit of its limit."""
    rx = ctx.rx_gy
    met = goal.metric
    if met is Metric.BED_RX:
        ab = ctx.protocol.alpha_beta_for(goal) if ctx.protocol else 10.0
        return bed_gy(ctx.scheme.total_gy, ctx.scheme.fractions, ab), "Gy"
    if met.is_plan_index:
        ix = ctx.indices
        val = {Metric.CI_RTOG: ix.ci_rtog, Metric.CI_PADDICK: ix.ci_paddick, Metric.GI: ix.gi,
               Metric.R50: ix.r50, Metric.D2CM: ix.d2cm_pct, Metric.V105_OUTSIDE: ix.v105_outside_pct}[met]
        unit = {Metric.D2CM: "%Rx", Metric.V105_OUTSIDE: "%"}.get(met, "ratio")
        return val, unit
    dvh = ctx.dvh(s)
    if met is Metric.DMAX:
        return _dose_value(goal, dvh.max_gy, rx)
    if met is Metric.D_CC:
        return _dose_value(goal, dvh.d_cc(goal.parameter.value), rx)
    if met is Metric.D_PCT:
        return _dose_value(goal, dvh.d_pct(goal.parameter.value), rx)
    if met is Metric.DMEAN:
        return _dose_value(goal, dvh.mean_gy, rx)
    if met is Metric.V_GY_CC:
        return dvh.v_gy_cc(goal.parameter_in_gy(rx)), "cc"
    if met is Metric.V_GY_PCT:
        return dvh.v_gy_pct(goal.parameter_in_gy(rx)), "%"
    if met is Metric.COVERAGE:
        return dvh.v_gy_pct(goal.parameter_in_gy(rx)), "%"
    if met is Metric.CRITICAL_VOLUME_SPARED:
        return dvh.spared_cc(goal.parameter_in_gy(rx)), "cc"
    raise ProtocolError(f"metric {met.value} cannot be evaluated")


def evaluate_goals(goals: list[Goal], ctx: _Context) -> list[GoalResult]:
    out: list[GoalResult] = []
    ptv = ctx.match.target
    for goal in goals:
        g = goal
        if g.rtog_level is not None:
            if ptv is None:
                out.append(GoalResult(g, None, None, None, "", Status.NOT_EVALUABLE,
                                      "not evaluable: structure missing (prescription target)"))
                continue
            g = goal.with_rtog_limit(ctx.dvh(ptv).volume_cc)
        if g.metric is Metric.BED_RX:
            val, unit = _evaluate_one(g, None, ctx)
            out.append(_result(g, ctx.match.target.name if ptv else "prescription", val, unit, ""))
            continue
        if g.metric.is_plan_index:
            if ptv is None or ctx.indices is None:
                out.append(GoalResult(g, None, None, None, g.limit.unit.value if g.limit else "",
                                      Status.NOT_EVALUABLE, "not evaluable: structure missing (prescription target)"))
                continue
            val, unit = _evaluate_one(g, ptv, ctx)
            out.append(_result(g, ptv.name, val, unit, ""))
            continue
        structures, note = _goal_structures(g, ctx)
        if not structures:
            spec = ctx.protocol.roles[g.structure]
            expected = "/".join(spec.names + tuple(p + "*" for p in spec.prefixes))
            out.append(GoalResult(g, None, None, None, g.limit.unit.value if g.limit else "", Status.NOT_EVALUABLE,
                                  f"not evaluable: structure missing ({expected})"))
            continue
        for s in structures:
            if s.is_empty:
                out.append(GoalResult(g, s.name, None, None, g.limit.unit.value, Status.NOT_EVALUABLE,
                                      f"not evaluable: structure {s.name} is empty on the dose grid"))
                continue
            val, unit = _evaluate_one(g, s, ctx)
            out.append(_result(g, s.name, val, unit, note))
    return out


def _result(goal: Goal, name: str, value: float, unit: str, note: str) -> GoalResult:
    limit = goal.limit.value
    if not math.isfinite(value):
        return GoalResult(goal, name, None, limit, unit, Status.NOT_EVALUABLE, "not evaluable: value undefined")
    ok = goal.comparator.holds(float(value), limit)
    return GoalResult(goal, name, float(value), limit, unit, Status.PASS if ok else Status.FAIL, note)


def _coverage_verdict(results: list[GoalResult]) -> CoverageVerdict:
    prim = [r for r in results if r.goal.stage is Stage.COVERAGE]
    fb = [r for r in results if r.goal.stage is Stage.COVERAGE_FALLBACK]
    if not prim:
        return CoverageVerdict("not_evaluable", "no coverage goal")
    if any(r.status is Status.NOT_EVALUABLE for r in prim):
        return CoverageVerdict("not_evaluable", "prescription target missing")
    if all(r.status is Status.PASS for r in prim):
        return CoverageVerdict("primary", "primary coverage met")
    if fb and all(r.status is Status.PASS for r in fb):
        return CoverageVerdict("fallback", "primary coverage not met; the fallback coverage and the GTV minimum "
                                           "it requires are met")
    if fb:
        return CoverageVerdict("failed", "neither the primary coverage nor the fallback (with its GTV minimum) is met")
    return CoverageVerdict("failed", "primary coverage not met and the protocol allows no fallback")


# --------------------------------------------------------------- public API
def evaluate_plan(dose: Dose, structures, protocol: Protocol | str | None = None, scheme: Scheme | str | None = None,
                  *, target: str | None = None, rx_gy: float | None = None, conditions=(),
                  name_map: dict[str, str] | None = None, prior: PriorCourse | None = None,
                  plan_timings: dict | None = None, timings: Timings | None = None,
                  progress: Callable[[int, int], None] | None = None) -> PlanReport:
    """Evaluate a dose against a protocol.

    Parameters
    ----------
    dose : Dose or ndarray
        Total dose of the course in Gy (a per-fraction ``Dose`` is multiplied by the scheme's
        fractions), on any grid; a bare array must be on the structures' grid.
    structures : Case or dict of str -> Structure
        On the dose grid (the dose is resampled trilinearly onto the structures' grid otherwise).
    protocol : Protocol or str, optional
        Without a protocol only the metrics are computed (no goals).
    scheme : Scheme or str, optional
        Required with a protocol (``"27/3"``); gives the prescription dose.
    target : str, optional
        The prescription target when several PTVs exist.
    rx_gy : float, optional
        Prescription dose when no scheme is given.
    conditions : iterable of str
        Protocol conditions (``"renal_cell"``...).
    name_map : dict, optional
        ``OLD -> NEW`` renames applied before TG-263 matching.
    prior : PriorCourse, optional
        Prior course for the re-irradiation check (Michigan table).
    plan_timings : dict, optional
        Timings of the planning run, copied to ``timings_s`` in metrics.json.
    timings : Timings, optional
        Collects this evaluation's timings.
    progress : callable(done, total), optional

    Returns
    -------
    PlanReport
    """
    timings = timings if timings is not None else Timings()
    if isinstance(protocol, str):
        protocol = load_protocol(protocol)
    if protocol is not None and scheme is None:
        raise ProtocolError(f"protocol '{protocol.name}' needs a fractionation scheme (e.g. '27/3')")
    if scheme is not None:
        scheme = protocol.scheme(scheme) if protocol is not None else Scheme.parse(scheme)
        rx_gy = scheme.total_gy
    array = None
    if isinstance(dose, np.ndarray):
        array = dose           # a bare array: on the structures' grid (checked below)
    elif not isinstance(dose, Dose):
        raise InputError(f"expected a Dose or a dose array (Gy), got {type(dose).__name__}")
    notes: list[str] = []
    if array is not None:
        items = structures.structures if hasattr(structures, "structures") else structures
        first = next(iter(items.values()), None) if isinstance(items, dict) else None
        if first is None:
            raise StructureError("no structures to evaluate")
        if array.shape != first.grid.shape:
            raise InputError(f"dose array has shape {array.shape}; a bare array must be on the structures' grid "
                             f"{first.grid.shape} (give a Dose with its grid to resample it)")
        dose = Dose(first.grid, array, "dose array")
    if dose.per_fraction:
        if scheme is None:
            raise InputError("the dose is per fraction: give the scheme to scale it to the course")
        dose = Dose(dose.grid, dose.dose_gy * scheme.fractions, dose.description)
        notes.append(f"per-fraction dose multiplied by {scheme.fractions} fractions")

    with timed("match structures", log, timings):
        named = rename_structures(structures, name_map)
        if not named:
            raise StructureError("no structures to evaluate")
        grids = {id(s.grid): s.grid for s in named.values()}
        sgrid = next(iter(named.values())).grid
        if any(not g.same_as(sgrid) for g in grids.values()):
            raise StructureError("structures are on different grids; rasterise them onto one grid (the dose grid)")
    if not dose.grid.same_as(sgrid):
        with timed("resample dose onto the structure grid", log, timings):
            dose = _resample_to(dose, sgrid)
            notes.append("dose resampled trilinearly onto the structure grid")
    field_ = DoseField.of(dose)

    match = None
    if protocol is not None:
        match = match_roles(protocol, named, target)
        notes.extend(match.notes)
        tgt = match.target
    else:
        tgt = None
        if target is not None:
            key = target.strip().lower()  # the normalised name or the DICOM one (original_name)
            hits = [s for n, s in named.items() if n.lower() == key or (s.original_name or "").lower() == key]
            if not hits:
                raise StructureError(f"target '{target}' not found; structures: {', '.join(named)}")
            tgt = hits[0]
        match = RoleMatch(named, {}, tgt)
    ctx = _Context(field_, match, rx_gy, scheme, protocol)
    body = next((s for s in named.values() if s.role is StructureRole.EXTERNAL), None)
    ctx.body = body

    total = len(named) + 2
    done = 0
    structures_out: dict[str, StructureMetrics] = {}
    targets_out: dict[str, TargetMetrics] = {}
    with timed("DVH of every structure", log, timings):
        for name, s in named.items():
            if s.is_empty:
                notes.append(f"structure {name} is empty on the dose grid")
                done += 1
                continue
            d = ctx.dvh(s)
            sm = StructureMetrics(name, s.role.value, d.volume_cc, d.mean_gy, d.max_gy, d.min_gy,
                                  d.d_cc(min(0.035, d.volume_cc)), d.d_cc(min(0.1, d.volume_cc)),
                                  s.original_name or name)
            structures_out[name] = sm
            ab, ab_src = _alpha_beta_of(name, s, match, protocol)
            if scheme is not None:
                sm.radiobiology = _radiobiology(d, {"max": sm.max_gy, "D0.035cc": sm.d0035_gy, "D0.1cc": sm.d01_gy},
                                                scheme.fractions, ab, ab_src)
            if s.role.is_target or s is tgt:
                rx = rx_gy if rx_gy else float("nan")
                targets_out[name] = TargetMetrics(
                    name, s.role.value, d.volume_cc, d.d_pct(98), d.d_pct(95), d.d_pct(50), d.d_pct(2), d.max_gy,
                    d.min_gy, d.mean_gy, d.near_max_gy,
                    d.v_gy_pct(rx) if rx_gy else float("nan"), d.v_gy_pct(0.9 * rx) if rx_gy else float("nan"),
                    rx_gy or 0.0)
                tm = targets_out[name]
                if scheme is not None:
                    tm.radiobiology = _radiobiology(d, {"D98": tm.d98_gy, "D95": tm.d95_gy, "D50": tm.d50_gy,
                                                        "D2": tm.d2_gy}, scheme.fractions, ab, ab_src)
            done += 1
            if progress:
                progress(done, total)
    if tgt is not None and rx_gy:
        with timed("conformity indices", log, timings):
            ctx.indices = plan_indices(field_, tgt, rx_gy, body=body, ptv_dvh=ctx.dvh(tgt))
            if tgt.name in targets_out:
                targets_out[tgt.name].indices = ctx.indices
    elif rx_gy is None:
        notes.append("no prescription: conformity indices not computed")
    done += 1
    if progress:
        progress(done, total)

    results: list[GoalResult] = []
    coverage = None
    if protocol is not None:
        with timed("protocol goals", log, timings):
            goals = protocol.goals_for(scheme, conditions=conditions)
            results = evaluate_goals(goals, ctx)
            coverage = _coverage_verdict(results)
    reirr: list[ReirradiationResult] = []
    if prior is not None:
        if scheme is None:
            raise InputError("a re-irradiation check needs the new course's scheme")
        with timed("re-irradiation check", log, timings):
            pdose = prior.dose
            if not isinstance(pdose, Dose):
                arr = np.asarray(pdose, dtype=np.float32)
                if arr.shape != sgrid.shape:
                    raise InputError(f"prior dose array has shape {arr.shape}; an array must be on the structures' "
                                     f"grid {sgrid.shape} (give a Dose with its grid to resample it)")
                pdose = Dose(sgrid, arr, "prior course")
            if not pdose.grid.same_as(sgrid):
                pdose = _resample_to(pdose, sgrid)
                notes.append("prior dose resampled trilinearly onto the structure grid")
            if prior.fractions < 1 or not (prior.interval_months >= 0):
                raise InputError(f"prior course: fractions must be >= 1 and the interval >= 0 months, got "
                                 f"{prior.fractions} fx, {prior.interval_months} months")
            reirr = check_reirradiation(pdose, dose, named, prior.interval_months, prior_fractions=prior.fractions,
                                        new_fractions=scheme.fractions, target=tgt)
    done += 1
    if progress:
        progress(done, total)
    g = dose.grid
    info = {"description": dose.description, "shape_zyx": list(g.shape),
            "spacing_mm": [round(v, 4) for v in g.spacing_mm], "max_gy": _r(float(dose.dose_gy.max()))}
    return PlanReport(scheme=scheme, rx_gy=rx_gy, protocol=protocol, target=tgt.name if tgt else None,
                      targets=targets_out, structures=structures_out, goals=results, coverage=coverage,
                      reirradiation=reirr, notes=notes, dose_info=info, timings=timings, plan_timings=plan_timings,
                      conditions=tuple(conditions), dvhs=ctx.dvhs)

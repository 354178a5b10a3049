"""Plan evaluation against a protocol: target and organ metrics, one result per goal.

:func:`evaluate_plan` takes any dose on any grid plus structures, a protocol
and a scheme, and returns a :class:`PlanReport`: ICRU 91 items per target,
volume/mean/max/D0.035cc per structure, conformity indices for the
prescription target, and a :class:`GoalResult` per goal with value, limit,
priority and pass / fail / not evaluable.  The result types are in
:mod:`~sbrtplan.evaluation.results`; a goal's structures (PRV, ``minus``) come from
:func:`~sbrtplan.evaluation.matching.goal_structures`, the resolution the planner uses too.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import ndimage

from .._log import Timings, get_logger, timed
from ..case import Dose, Grid, Structure, StructureRole
from ..errors import InputError, ProtocolError, StructureError
from ..protocols import (ALPHA_BETA_MICHIGAN_GY, ALPHA_BETA_TUMOUR_GY, Goal, Metric, Protocol,
                         Scheme, Stage, Unit, bed_gy, eqd2_gy, load_protocol, rtog_goal)
from .conformity import PlanIndices, plan_indices
from .dvh import DVH, DoseField, compute_dvh
from .matching import RoleMatch, goal_structures, match_roles, rename_structures
from .reirradiation import ReirradiationResult, check_reirradiation
from .results import (CoverageVerdict, GoalResult, PlanReport, PriorCourse, Status, StructureMetrics,
                      TargetMetrics, _r)

log = get_logger(__name__)


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
    found, notes = goal_structures(goal, ctx.protocol, ctx.match, ctx.field.grid)
    return found, "; ".join(notes) if found else ""


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
            g = rtog_goal(goal, ctx.dvh(ptv).volume_cc)
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

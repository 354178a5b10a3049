"""The plan's MU scale, in the protocol's priority order: one rule for one target and for several.

1. **Coverage** (priority 3): the scale at which every primary coverage goal of every target is
   met as aimed (``V100%Rx >= 95 %`` aimed at 95.5 %, ``V90%Rx >= 99 %`` at 99.5 %: the recipe's
   ``penalties.coverage_margin_pct``, at most ``penalties.coverage_aim_max_pct``), each target at
   its own prescription: the largest of these scales.  The prescription level is aimed on the
   whole PTV (the standards' definition of the prescription); a lower level (V90) on the
   optimisation target PTV! (PTV minus the cord/canal PRV; the PTV itself where nothing is
   removed): the PTV inside the PRV is cold by design and approved so, and scaling the whole
   plan up to warm it would trade every lower-priority goal for a coverage the protocol waives.
2. **Limits of higher priority** (hard organ limits, priority 1; target bounds such as PTV Dmax
   <= 140 %, priority 2) cap it: a dose-scaled limit that fails at the coverage scale lowers the
   scale to ``penalties.normalisation_cap`` x its limit.  Coverage yields (the protocol's fallback
   rule decides whether the plan stays acceptable); the binding limit and its excess at the
   coverage scale are reported.
3. **Goals of lower priority** (hot spot outside the GTV/ITV, conformity: priority 4) never move
   the scale; those that fail at it are reported with their excess.

A plan of several targets (``ps.parts``, :mod:`~sbrtplan.workflow.targets`) is evaluated with
:func:`~sbrtplan.workflow.target_eval.evaluate_targets` (each target on its own share at its own
prescription, organ limits on the sum); one scale serves every target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..case import Case, Dose, Structure
from ..evaluation import Status, evaluate_plan
from ..protocols import Metric, Priority, Protocol, Scheme, Unit
from .target_eval import evaluate_targets, part_scheme
from .targets import target_protocol

__all__ = ["Normalisation", "normalisation", "weighted_quantile_dose"]

#: Metrics whose value scales with the MU (the caps are computed by proportion).
_SCALABLE = (Metric.DMAX, Metric.D_CC, Metric.D_PCT, Metric.DMEAN)


@dataclass
class Normalisation:
    """The normalisation of a plan (``metrics.json``: ``normalisation``).

    Attributes
    ----------
    scale : float
        The factor applied to every beam's MU.
    coverage_scale : float
        The scale at which every coverage goal is met as aimed.
    set_by : str
        The coverage goal (and target) that sets ``coverage_scale``.
    binding : dict or None
        The limit of higher priority that caps the scale: ``goal``, ``priority``,
        ``priority_class``, ``value_at_coverage_scale``, ``limit``, ``unit``, ``excess_pct``.
    unmet_lower_priority : list of dict
        Goals of lower priority than coverage that fail at ``scale`` (``value``, ``excess_pct``).
    below_coverage : list of str
        Targets whose coverage goal is not met at ``scale`` (several targets; one target: its
        name when capped).
    """

    scale: float
    coverage_scale: float
    set_by: str
    binding: dict | None = None
    unmet_lower_priority: list[dict] = field(default_factory=list)
    below_coverage: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"scale": float(self.scale), "coverage_scale": float(self.coverage_scale), "set_by": self.set_by,
                "binding": self.binding, "unmet_lower_priority": self.unmet_lower_priority,
                "below_coverage": self.below_coverage}


def weighted_quantile_dose(dose: np.ndarray, structure: Structure, volume_pct: float) -> float:
    """The dose that at least ``volume_pct`` % of ``structure`` receives (sub-voxel occupancy weighted)."""
    w = structure.weights.ravel()
    sel = np.flatnonzero(w > 0)
    d = dose.ravel()[sel]
    ww = w[sel].astype(float)
    order = np.argsort(-d)
    cum = np.cumsum(ww[order]) / ww.sum()
    k = int(np.searchsorted(cum, volume_pct / 100.0))
    return float(d[order][min(k, d.size - 1)])


def coverage_aims(protocol: Protocol, scheme: Scheme, recipe) -> list[tuple[object, float, float]]:
    """The primary coverage goals as (goal, dose level % Rx, volume % aimed at), highest level first.

    The fallback rules (``V100 >= 90 %`` to meet organ limits) are what a capped normalisation
    reaches, not aims.  Without a coverage goal: V100 >= 95 % (the SBRT standards' usual level).
    """
    r = recipe.penalties
    out = []
    for g in protocol.coverage_for(scheme).primary:
        if g.metric is not Metric.COVERAGE or g.limit is None:
            continue
        if g.parameter is not None and g.parameter.unit is not Unit.PCT_RX:
            continue
        level = 100.0 if g.parameter is None else float(g.parameter.value)
        out.append((g, level, min(float(g.limit.value) + r.coverage_margin_pct, r.coverage_aim_max_pct)))
    return sorted(out, key=lambda t: -t[1]) or [(None, 100.0, 95.0)]


def _goal_text(r) -> str:
    return f"{r.structure or r.goal.structure} {r.goal.metric_label} {r.goal.comparator.value} {r.limit:g} {r.unit}"


def normalisation(dose: np.ndarray, case: Case, ps, protocol: Protocol, scheme: Scheme, conditions,
                  recipe) -> Normalisation:
    """The plan's MU scale (see the module docstring).

    Parameters
    ----------
    dose : ndarray
        The plan's dose (Gy) on ``case.grid`` before scaling.
    case : Case
        The case on the dose grid, planning structures added.
    ps : PlanningStructures
        ``ps.target`` (one target) or ``ps.parts`` (several, each with ``rx_gy``).
    protocol, scheme : Protocol, Scheme
        The course's protocol and scheme (several targets: the highest dose level's).
    conditions : sequence of str
        Protocol conditions (e.g. prior irradiation).
    recipe : PlanningRecipe
        ``penalties.coverage_margin_pct``, ``coverage_aim_max_pct``, ``normalisation_cap``.
    """
    targets = ([(p.target, p.optimization_target, part_scheme(p, scheme.fractions)) for p in ps.parts]
               if ps.parts else [(ps.target, ps.optimization_target, scheme)])
    scales, cov_priority = [], int(Priority.COVERAGE)
    for target, opt_target, sch in targets:
        aims = coverage_aims(target_protocol(protocol, sch) if ps.parts else protocol, sch, recipe)
        for k, (g, level, vol) in enumerate(aims):
            # the prescription level (the highest) on the whole PTV, as the standards define the
            # prescription; a lower level (V90) on the volume the plan may cover (PTV!: the part of the
            # PTV inside the cord/canal PRV is cold by design and approved so, never a reason to
            # scale the whole plan up)
            d = weighted_quantile_dose(dose, target if k == 0 else opt_target or target, vol)
            s = level / 100.0 * sch.total_gy / d if d > 0 else 1.0
            label = f"{target.name} V{level:g}%Rx >= {vol:g}%" + (f" (goal {g.limit_label})" if g else "")
            scales.append((s, target.name, label))
            if g is not None:
                cov_priority = min(cov_priority, int(g.priority))
    s_cov, _, set_by = max(scales, key=lambda t: t[0])
    at_cov = Dose(case.grid, dose * s_cov)
    report = (evaluate_targets(at_cov, case, ps, protocol, fractions=scheme.fractions, conditions=conditions,
                               complete=False) if ps.parts
              else evaluate_plan(at_cov, case.structures, protocol, scheme, target=ps.target.name,
                                 conditions=conditions))
    cap, binding = 1.0, None
    for r in report.goals:
        g = r.goal
        if (r.status is not Status.FAIL or not g.mandatory or not g.comparator.is_upper_bound
                or int(g.priority) >= cov_priority or g.metric not in _SCALABLE or r.unit not in ("Gy", "%Rx")
                or not r.value or not r.limit):
            continue
        c = recipe.penalties.normalisation_cap * r.limit / r.value
        if c < cap:
            cap = c
            binding = {"goal": _goal_text(r), "priority": int(g.priority), "priority_class": g.priority.name.lower(),
                       "value_at_coverage_scale": round(float(r.value), 3), "limit": float(r.limit), "unit": r.unit,
                       "excess_pct": round(100.0 * (r.value / r.limit - 1.0), 2)}
    unmet = []
    for r in report.goals:
        g = r.goal
        if (not g.comparator.is_upper_bound or int(g.priority) <= cov_priority or g.metric not in _SCALABLE
                or r.unit not in ("Gy", "%Rx") or r.value is None or r.limit is None):
            continue
        v = r.value * cap
        if v >= r.limit if g.comparator.value == "<" else v > r.limit:
            unmet.append({"goal": _goal_text(r), "priority": int(g.priority), "priority_class": g.priority.name.lower(),
                          "value": round(float(v), 3), "limit": float(r.limit), "unit": r.unit,
                          "excess_pct": round(100.0 * (v / r.limit - 1.0), 2)})
    scale = s_cov * cap
    below = sorted({name for s, name, _ in scales if s > scale * 1.0001})
    return Normalisation(float(scale), float(s_cov), set_by, binding, unmet, below)

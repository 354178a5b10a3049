"""Normalisation and evaluation of a plan of several targets (see :mod:`sbrtplan.workflow.targets`).

Evaluation: each target is evaluated against the protocol at its own prescription on its own
share of the dose grid (the External restricted to the voxels nearest to it, so that its CI,
R50, D2cm and its hot spot outside the GTV/ITV see only its own isodoses: the nearest-target
rule of :mod:`sbrtplan.evaluation.lesions`), with its own GTV/CTV/ITV; the organ limits are
evaluated once, on the summed dose.  The per-lesion indices of
:func:`~sbrtplan.evaluation.lesion_indices` go into ``metrics.json`` (``lesions``).
"""

from __future__ import annotations

import numpy as np

from .._log import get_logger
from ..case import Case, Dose, Structure, StructureRole
from ..evaluation import CoverageVerdict, PlanReport, evaluate_plan, lesion_indices
from ..protocols import Protocol, Scheme
from .targets import is_per_target_goal, target_protocol

log = get_logger(__name__)

__all__ = ["evaluate_targets", "part_scheme", "target_metrics"]


def part_scheme(part, fractions: int) -> Scheme:
    """Target ``part``'s own scheme: its prescription over the course's fractions."""
    return Scheme(float(part.rx_gy), int(fractions))


def _own_structures(case: Case, ps, part) -> dict[str, Structure]:
    """The structures target ``part`` is evaluated with: organs, its own target structures, and the
    External restricted to its share (other targets' structures and planning helpers left out)."""
    names = {p.target.name for p in ps.parts}
    out: dict[str, Structure] = {}
    for n, s in case.structures.items():
        if s.role is StructureRole.CONTROL:
            continue
        if s.role is StructureRole.EXTERNAL:
            w = s.weights * part.share
            out[n] = Structure(s.name, s.grid, s.mask & part.share, s.role, fraction=w.astype(np.float32),
                               original_name=s.original_name)
            continue
        if s.role.is_target:
            if n in names and n != part.target.name:
                continue                      # another target: evaluated at its own prescription
            if not (s.mask & part.target.mask).any():
                continue                      # another lesion's GTV/CTV/ITV
        out[n] = s
    return out


def evaluate_targets(dose: Dose, case: Case, ps, protocol: Protocol, *, fractions: int, conditions=(),
                     plan_timings: dict | None = None, complete: bool = True) -> PlanReport:
    """One report for a plan of several targets (see the module docstring); the primary target's
    scheme is the report's, every target keeps its own prescription in ``targets``.  ``complete``:
    also the whole External's and the planning structures' metrics and the per-lesion indices (the
    normalisation needs only the goals)."""
    reports = []
    for part in ps.parts:
        sch = part_scheme(part, fractions)
        reports.append(evaluate_plan(dose, _own_structures(case, ps, part), target_protocol(protocol, sch), sch,
                                     target=part.target.name, conditions=conditions))
    first = reports[0]
    goals = []
    for i, rep in enumerate(reports):
        goals += [r for r in rep.goals if is_per_target_goal(r.goal, protocol) or i == 0]
    targets = {}
    structures = dict(first.structures)
    dvhs = dict(first.dvhs)
    part_names = {p.target.name for p in ps.parts}
    for part, rep in zip(ps.parts, reports):
        for n, tm in rep.targets.items():
            if n == part.target.name or (n not in part_names and n not in targets):
                targets[n] = tm
                structures[n] = rep.structures.get(n, structures.get(n))
                if n in rep.dvhs:
                    dvhs[n] = rep.dvhs[n]
    # the whole External and the planning helpers, without goals
    extra = {n: s for n, s in case.structures.items() if s.role in (StructureRole.EXTERNAL, StructureRole.CONTROL)}
    if extra and complete:
        structures.update(evaluate_plan(dose, extra).structures)
    cov = [(p.target.name, r.coverage) for p, r in zip(ps.parts, reports) if r.coverage is not None]
    coverage = None
    if cov:
        states = [c.status for _, c in cov]
        status = ("failed" if "failed" in states else "not_evaluable" if "not_evaluable" in states
                  else "primary" if all(s == "primary" for s in states) else "fallback")
        coverage = CoverageVerdict(status, "; ".join(f"{n}: {c.status}" + (f" ({c.note})" if c.note else "")
                                                     for n, c in cov))
    notes = list(first.notes)
    for part, rep in zip(ps.parts[1:], reports[1:]):
        notes += [f"{part.target.name}: {n}" for n in rep.notes if n not in first.notes]
    report = PlanReport(scheme=first.scheme, rx_gy=first.rx_gy, protocol=protocol, target=first.target,
                        targets=targets, structures=structures, goals=goals, coverage=coverage, notes=notes,
                        dose_info=first.dose_info, timings=first.timings, plan_timings=plan_timings,
                        conditions=tuple(conditions), dvhs=dvhs)
    report.lesions = None
    if not complete:
        return report
    if any((a.target.mask & b.target.mask).any() for k, a in enumerate(ps.parts) for b in ps.parts[k + 1:]):
        report.notes.append("targets overlap (integrated boost): no per-lesion split of the isodose volumes; each "
                            "target's indices are those of its own dose level on its share")
    else:
        report.lesions = lesion_indices(dose, [p.target for p in ps.parts], [p.rx_gy for p in ps.parts],
                                        body=case.body, dvhs=[dvhs.get(p.target.name) for p in ps.parts]
                                        if all(p.target.name in dvhs for p in ps.parts) else None)
    return report


def target_metrics(report: PlanReport, ps) -> dict:
    """The ``metrics.json`` additions of a plan of several targets: the per-lesion indices and the
    prescription of every target."""
    out = {"lesions": report.lesions.as_dict()} if report.lesions is not None else {}
    out["prescription"] = dict(report.as_dict()["prescription"] or {})
    out["prescription"]["targets"] = [{"name": p.target.name, "dose_gy": p.rx_gy} for p in ps.parts]
    return out


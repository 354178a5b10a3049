"""Several targets in one plan, each with its own prescription.

Oligometastases (two vertebral levels, two liver lesions) and simultaneous integrated boosts
are planned as one course: one beam set, one fraction number, every target at its own total
dose.  The rules:

* **Prescriptions**: ``NAME:TOTAL/FRACTIONS`` per target (``--target PTV1:27/3 --target
  PTV2:24/3``, a YAML mapping, or the cohort file).  Every target names a structure of the case
  whose role is a target role (PTV, CTV, GTV, ITV), once.  All targets share the fraction number
  (one fraction group).  The highest dose level must be a scheme the protocol allows; the others
  are lower dose levels of that course (their totals at most the highest), evaluated against the
  protocol's target goals at their own prescription.
* **Organ limits** are those of the protocol at the common fraction number, applied once to the
  summed dose.
* **Per-target goals** (coverage, hot spot, target bounds, fall-off, D2cm) use each target's
  prescription.  Each voxel outside every target belongs to its nearest target (the evaluation's
  rule, :func:`sbrtplan.evaluation.split_by_nearest_target`): a target's fall-off profile and rings
  apply only to its own share, so the dose a neighbouring target needs is never penalised as
  fall-off, and a voxel inside another target is governed by that target's goals.  Nested targets
  (a boost inside its PTV): a voxel inside targets belongs to the highest dose level containing it.
* **Optimisation**: the per-target terms of :mod:`~sbrtplan.workflow.penalties` side by side, the
  organ limits once; inside the optimiser the dose is normalised to the highest level's coverage
  and the other targets' goals are measured on that dose
  (:func:`~sbrtplan.workflow.penalties.multi_target_penalties`).
* **Normalisation** (:mod:`sbrtplan.workflow.normalisation`, the same rule as for one target):
  one MU scale for the plan, the smallest that meets every target's coverage goals, lowered where a
  limit of higher priority (hard limits of the sum, each target's bounds) would fail; the binding
  limit and the targets left below their goal are named in ``metrics.json``.

The single-target planner is reused: each target gets the planning structures, penalties and
stages of :mod:`~sbrtplan.workflow.structures`, :mod:`~sbrtplan.workflow.penalties` and
:mod:`~sbrtplan.workflow.goal_stages` at its own prescription; this module restricts them to the
target's share and merges them into one problem.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .._log import get_logger
from ..case import Structure
from ..errors import InputError, ProtocolError, StructureError
from ..protocols import Protocol, Scheme, SchemeOption

log = get_logger(__name__)

__all__ = ["TargetPrescription", "parse_target_arg", "targets_from_yaml", "load_targets_file", "check_targets",
           "plan_scheme", "target_structures", "is_per_target_goal", "restricted", "part_goal_pairs", "merge_stages"]


@dataclass(frozen=True)
class TargetPrescription:
    """One target of a plan and its prescription (total Gy over ``scheme.fractions``)."""

    name: str
    scheme: Scheme

    @property
    def dose_gy(self) -> float:
        return float(self.scheme.total_gy)

    @property
    def text(self) -> str:
        return f"{self.name}:{self.scheme.short}"


def _scheme(text, where: str) -> Scheme:
    try:
        return Scheme.parse(str(text).strip())
    except ProtocolError:
        raise InputError(f"{where}: cannot read the prescription {str(text)!r}; expected TOTAL/FRACTIONS such as "
                         "27/3") from None


def parse_target_arg(text: str, where: str = "--target") -> TargetPrescription:
    """``"PTV1:27/3"`` -> TargetPrescription (the last ``:`` separates name and prescription)."""
    raw = str(text)
    name, sep, rx = raw.rpartition(":")
    if not sep or not name.strip() or not rx.strip():
        raise InputError(f"{where} {raw!r}: expected NAME:TOTAL/FRACTIONS, e.g. PTV1:27/3")
    return TargetPrescription(name.strip(), _scheme(rx, f"{where} {raw!r}"))


def targets_from_yaml(obj, where: str) -> tuple[TargetPrescription, ...]:
    """Targets from a parsed YAML value: ``{PTV1: 27/3, PTV2: 24/3}``, ``["PTV1:27/3", ...]`` or
    ``[{name: PTV1, scheme: 27/3}, ...]`` (also under a top-level ``targets`` key)."""
    if isinstance(obj, dict) and set(obj) == {"targets"}:
        obj = obj["targets"]
    out: list[TargetPrescription] = []
    if isinstance(obj, dict):
        for name, rx in obj.items():
            if not isinstance(name, str) or not name.strip() or isinstance(rx, (dict, list)):
                raise InputError(f"{where}: target {name!r}: expected NAME: TOTAL/FRACTIONS")
            out.append(TargetPrescription(name.strip(), _scheme(rx, f"{where}: target {name!r}")))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            if isinstance(item, str):
                out.append(parse_target_arg(item, f"{where}, target #{i + 1}"))
            elif isinstance(item, dict) and set(item) == {"name", "scheme"} and isinstance(item["name"], str):
                out.append(TargetPrescription(item["name"].strip(),
                                              _scheme(item["scheme"], f"{where}, target #{i + 1}")))
            else:
                raise InputError(f"{where}, target #{i + 1}: expected 'NAME:TOTAL/FRACTIONS' or "
                                 f"{{name: NAME, scheme: TOTAL/FRACTIONS}}, got {item!r}")
    else:
        raise InputError(f"{where}: expected a mapping NAME: TOTAL/FRACTIONS or a list of targets, got "
                         f"{type(obj).__name__}")
    if not out:
        raise InputError(f"{where}: no target")
    return check_targets(out, where)


def load_targets_file(path) -> tuple[TargetPrescription, ...]:
    """Targets from a YAML file (see :func:`targets_from_yaml`)."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise InputError(f"--targets {p}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"--targets {p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return targets_from_yaml(doc, f"--targets {p}")


def check_targets(targets, where: str = "--target") -> tuple[TargetPrescription, ...]:
    """Each target once (names compared case-insensitively) and one fraction number for all."""
    targets = tuple(targets)
    seen: dict[str, TargetPrescription] = {}
    for t in targets:
        prev = seen.get(t.name.lower())
        if prev is not None:
            raise InputError(f"{where}: target '{t.name}' is given twice ({prev.scheme.short} and {t.scheme.short}); "
                             "expected each target once")
        seen[t.name.lower()] = t
    fx = sorted({t.scheme.fractions for t in targets})
    if len(fx) > 1:
        raise InputError(f"{where}: the targets have different fraction numbers ({', '.join(t.text for t in targets)});"
                         " one plan delivers one fraction group, expected the same number of fractions for all")
    return targets


def plan_scheme(protocol: Protocol, targets) -> tuple[Scheme, tuple[TargetPrescription, ...]]:
    """The course's scheme (the highest dose level, allowed by ``protocol``) and the targets, highest first.

    Lower dose levels need not be listed schemes of the protocol (a 24 Gy level beside a 27/3
    course): they are checked to be at most the highest level.
    """
    targets = check_targets(targets)
    ordered = tuple(sorted(targets, key=lambda t: -t.dose_gy))   # stable: ties keep the given order
    primary = ordered[0].scheme
    protocol.check_scheme(primary)
    return primary, ordered


def target_protocol(protocol: Protocol, scheme: Scheme) -> Protocol:
    """``protocol`` with ``scheme`` allowed (a lower dose level of an allowed course, see :func:`plan_scheme`)."""
    if protocol.allowed(scheme):
        return protocol
    return replace(protocol, schemes=tuple(protocol.schemes) + (
        SchemeOption(scheme, 99, "lower dose level of a multi-target course"),))


def target_structures(structures: dict[str, Structure], targets, where: str = "--target") -> list[Structure]:
    """The structure of each target (its name or DICOM name, case-insensitive), each a target role, each once."""
    out: list[Structure] = []
    for t in targets:
        key = t.name.lower()
        hits = [s for n, s in structures.items() if n.lower() == key or (s.original_name or "").lower() == key]
        if not hits:
            raise StructureError(f"{where} {t.text}: no structure named '{t.name}'; structures: "
                                 f"{', '.join(structures)}")
        s = hits[0]
        if not s.role.is_target:
            raise StructureError(f"{where} {t.text}: '{s.name}' has the role {s.role.value}, not a target role "
                                 "(PTV, CTV, GTV, ITV); only targets carry a prescription")
        if any(s is o for o in out):
            raise InputError(f"{where} {t.text}: names the structure '{s.name}' a second time; expected each "
                             "target once")
        if s.is_empty:
            raise StructureError(f"{where} {t.text}: structure '{s.name}' is empty")
        out.append(s)
    return out


def is_per_target_goal(goal, protocol: Protocol) -> bool:
    """Goals of the target roles and the body (hot spots, plan indices): one per target, at its prescription."""
    spec = protocol.roles.get(goal.structure)
    return spec is not None and spec.kind in ("target", "body")


# --------------------------------------------------------------------- planning structures
def restricted(s: Structure, keep: np.ndarray, name: str | None = None) -> Structure:
    """``s`` restricted to the voxels ``keep`` (a target's share), partial volumes kept."""
    w = s.weights * keep
    out = Structure(name or s.name, s.grid, s.mask & keep, s.role, fraction=w.astype(np.float32),
                    metadata=dict(s.metadata))
    return out


# --------------------------------------------------------------------- optimisation problem
def part_goal_pairs(pairs, protocol: Protocol, part, primary: bool) -> list:
    """The (goal, structure) pairs of one target: its own target-role and body goals (restricted to its
    share), and for the primary target also every organ goal (organ limits apply once, to the sum)."""
    own = part.target.mask
    out = []
    for goal, s in pairs:
        if not is_per_target_goal(goal, protocol):
            if primary:
                out.append((goal, s))
            continue
        kind = protocol.roles[goal.structure].kind
        if kind == "target":
            if goal.structure == protocol.prescription_role:
                out.append((goal, part.target))
            elif (s.mask & own).any():
                out.append((goal, s))       # this target's GTV/CTV/ITV
        else:
            r = restricted(s, part.share, f"{s.name}@{part.target.name}")
            if r.mask.any():
                out.append((goal, r))
    return out


def merge_stages(stage_lists: list[list]) -> list:
    """The targets' prioritised stages merged by name (objectives and constraints concatenated)."""
    merged: dict[str, object] = {}
    for stages in stage_lists:
        for st in stages:
            if st.name not in merged:
                merged[st.name] = replace(st, objectives=list(st.objectives), constraints=list(st.constraints))
            else:
                m = merged[st.name]
                m.objectives.extend(st.objectives)
                m.constraints.extend(st.constraints)
    order = ("coverage", "conformity", "alara")
    return sorted(merged.values(), key=lambda s: order.index(s.name) if s.name in order else len(order))


def as_targets(value) -> tuple[TargetPrescription, ...]:
    """``PlanOptions.targets`` from TargetPrescription, ``"NAME:D/F"`` strings or ``(name, scheme)`` pairs."""
    if value is None:
        return ()
    if isinstance(value, (str, TargetPrescription)):
        value = [value]
    out = []
    for v in value:
        if isinstance(v, TargetPrescription):
            out.append(v)
        elif isinstance(v, str):
            out.append(parse_target_arg(v, "plan: targets"))
        elif isinstance(v, (tuple, list)) and len(v) == 2 and isinstance(v[0], str):
            out.append(TargetPrescription(v[0].strip(), _scheme(v[1], f"plan: target {v[0]!r}")))
        else:
            raise InputError(f"plan: targets: expected 'NAME:TOTAL/FRACTIONS' or (name, scheme), got {v!r}")
    return check_targets(out, "plan: targets")


def course(protocol: Protocol, scheme, target: str | None, targets) -> tuple[Scheme, str | None, tuple]:
    """The plan's scheme, single target name and several targets (highest dose first; () for one).

    ``scheme`` (None: 27/3 without targets) must agree with the targets' highest dose level when
    both are given; one target with its prescription is the usual single-target plan.
    """
    targets = as_targets(targets)
    if not targets:
        return protocol.scheme(scheme if scheme is not None else "27/3"), target, ()
    if target is not None:
        raise InputError("plan: give the target either as target (with the scheme) or in targets with its "
                         "prescription, not both")
    sch, ordered = plan_scheme(protocol, targets)
    if scheme is not None and Scheme.parse(scheme) != sch:
        raise InputError(f"plan: scheme {Scheme.parse(scheme).short} differs from the highest target prescription "
                         f"{ordered[0].text}; give the prescription per target only")
    if len(ordered) == 1:
        return sch, ordered[0].name, ()
    return sch, None, ordered

"""Seed-implant protocols (YAML, ``format: sbrtplan-seed-protocol/1``) and their dosimetric goals.

A protocol names the planning target, where seeds may go (placement margin, avoided organs,
blocked needle paths), the needle template, the orderable seed strengths, the optimiser's
tuning values and the goals (D90, V100, V150, urethra D10, rectum D2cc, ...) with their sources.
Shipped: ``prostate_i125`` (145 Gy) and ``solid_tumour_i125`` (prescription as a parameter).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from .._fields import number_field
from ..errors import ProtocolError

FORMAT = "sbrtplan-seed-protocol/1"
_SHIPPED = ("prostate_i125", "solid_tumour_i125")
_METRIC = re.compile(r"^(D(?P<dx>\d+(\.\d+)?)(?P<cc>cc)?|V(?P<vx>\d+(\.\d+)?))$")
_COMPARATORS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
                "<": lambda a, b: a < b}


@dataclass(frozen=True)
class SeedGoal:
    """One goal: ``metric`` of ``structure`` compared with ``value_pct``.

    D<x> is the minimum dose to the hottest x % of the volume, D<x>cc to the hottest x cc, both in
    % of the prescription; V<x> is the % of the volume receiving at least x % of the prescription.
    ``structure`` is ``target``, a structure name or ``@OAR`` (every organ at risk).
    """

    structure: str
    metric: str
    comparator: str
    value_pct: float
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.structure} {self.metric} {self.comparator} {self.value_pct:g}%"


@dataclass(frozen=True)
class Template:
    needle_spacing_mm: float
    insertion_direction: tuple[float, float, float]
    seed_step_mm: float
    min_seed_separation_mm: float


@dataclass(frozen=True)
class SeedProtocol:
    name: str
    title: str
    sources: tuple[str, ...]
    isotope: str
    default_source: str
    prescription_gy: float | None
    prescription_fixed: bool
    target_names: tuple[str, ...]
    placement_margin_mm: float
    avoid: tuple[dict, ...]
    block_needles: tuple[str, ...]
    template: Template
    strength_u_choices: tuple[float, ...]
    optimiser: dict
    goals: tuple[SeedGoal, ...]
    count_tolerance: int
    position_tolerance_mm: float
    path: str = ""
    extra: dict = field(default_factory=dict)

    def with_prescription(self, prescription_gy: float | None) -> "SeedProtocol":
        """The protocol with its prescription set (a parameter of the generic template)."""
        from dataclasses import replace

        if prescription_gy is None:
            if self.prescription_gy is None:
                raise ProtocolError(f"protocol '{self.name}': the prescription is a parameter; give "
                                    f"--prescription-gy (Gy, total dose of the implant)")
            return self
        p = float(prescription_gy)
        if not (math.isfinite(p) and 10.0 <= p <= 400.0):
            raise ProtocolError(f"protocol '{self.name}': prescription must be 10-400 Gy, got {prescription_gy!r}")
        if self.prescription_fixed and self.prescription_gy is not None and abs(p - self.prescription_gy) > 1e-6:
            raise ProtocolError(f"protocol '{self.name}': prescription is fixed at {self.prescription_gy:g} Gy, "
                                f"got {p:g} Gy")
        return replace(self, prescription_gy=p)


def list_seed_protocols() -> tuple[str, ...]:
    return _SHIPPED


def _num(obj: dict, key: str, where: str, lo: float, hi: float) -> float:
    return number_field(obj, key, f"seed protocol '{where}'", lo, hi, error=ProtocolError)


def load_seed_protocol(spec: str | Path) -> SeedProtocol:
    """A shipped protocol name or a YAML file path."""
    key = str(spec).strip()
    if key in _SHIPPED:
        text = resources.files("sbrtplan.brachy").joinpath("data", f"protocol_{key}.yaml").read_text()
        where = f"sbrtplan/brachy/data/protocol_{key}.yaml"
    else:
        p = Path(key)
        if not p.is_file():
            raise ProtocolError(f"seed protocol '{spec}': neither a shipped protocol ({', '.join(_SHIPPED)}) "
                                f"nor a YAML file")
        text, where = p.read_text(), str(p)
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProtocolError(f"seed protocol '{where}': not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ProtocolError(f"seed protocol '{where}': 'format' must be '{FORMAT}'")
    t = obj.get("template")
    if not isinstance(t, dict):
        raise ProtocolError(f"seed protocol '{where}': missing 'template'")
    direction = np.asarray(t.get("insertion_direction", [0, 0, 1]), float)
    if direction.shape != (3,) or not np.all(np.isfinite(direction)) or np.linalg.norm(direction) < 1e-9:
        raise ProtocolError(f"seed protocol '{where}': template.insertion_direction must be a non-zero 3-vector")
    template = Template(needle_spacing_mm=_num(t, "needle_spacing_mm", where, 2.0, 20.0),
                        insertion_direction=tuple(float(v) for v in direction / np.linalg.norm(direction)),
                        seed_step_mm=_num(t, "seed_step_mm", where, 2.0, 20.0),
                        min_seed_separation_mm=_num(t, "min_seed_separation_mm", where, 4.0, 40.0))
    goals = []
    for g in obj.get("goals") or []:
        metric = str(g.get("metric", ""))
        if not _METRIC.match(metric):
            raise ProtocolError(f"seed protocol '{where}': goal metric must be D<x>, D<x>cc or V<x>, got {metric!r}")
        comp = str(g.get("comparator", ""))
        if comp not in _COMPARATORS:
            raise ProtocolError(f"seed protocol '{where}': goal comparator must be one of {list(_COMPARATORS)}, "
                                f"got {comp!r}")
        goals.append(SeedGoal(structure=str(g.get("structure", "")), metric=metric, comparator=comp,
                              value_pct=_num(g, "value_pct", where, 0.0, 1000.0), source=str(g.get("source", ""))))
    if not goals:
        raise ProtocolError(f"seed protocol '{where}': no goals")
    strengths = tuple(float(v) for v in obj.get("strength_u_choices") or [])
    if not strengths or any(not (0.05 <= s <= 5.0) for s in strengths):
        raise ProtocolError(f"seed protocol '{where}': strength_u_choices must list strengths in 0.05-5 U")
    rx = obj.get("prescription_gy")
    ver = obj.get("verification") or {}
    return SeedProtocol(name=str(obj.get("name", key)), title=str(obj.get("title", "")),
                        sources=tuple(str(s) for s in obj.get("sources") or []), isotope=str(obj.get("isotope", "")),
                        default_source=str(obj.get("default_source", "6711")),
                        prescription_gy=None if rx is None else _num(obj, "prescription_gy", where, 10.0, 400.0),
                        prescription_fixed=bool(obj.get("prescription_fixed", False)),
                        target_names=tuple(str(s) for s in (obj.get("target") or ["Prostate"])),
                        placement_margin_mm=_num(obj, "placement_margin_mm", where, 0.0, 10.0),
                        avoid=tuple(obj.get("avoid") or []), block_needles=tuple(obj.get("block_needles") or []),
                        template=template, strength_u_choices=strengths, optimiser=dict(obj.get("optimiser") or {}),
                        goals=tuple(goals), count_tolerance=int(ver.get("count_tolerance", 2)),
                        position_tolerance_mm=float(ver.get("position_tolerance_mm", 1.0)), path=where)


def metric_value(dvh, metric: str, prescription_gy: float) -> float:
    """Value of ``metric`` (see :class:`SeedGoal`) from an :class:`sbrtplan.evaluation.DVH`, in %."""
    m = _METRIC.match(metric)
    if m is None:
        raise ProtocolError(f"unknown seed metric {metric!r}")
    if m.group("dx") is not None:
        x = float(m.group("dx"))
        d = float(dvh.d_cc(x)) if m.group("cc") else float(dvh.d_pct(x))
        return 100.0 * d / prescription_gy
    return float(dvh.v_gy_pct(float(m.group("vx")) / 100.0 * prescription_gy))


def goal_passes(goal: SeedGoal, value_pct: float) -> bool:
    return bool(_COMPARATORS[goal.comparator](value_pct, goal.value_pct))

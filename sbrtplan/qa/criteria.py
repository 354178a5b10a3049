"""QA acceptance criteria, chamber models and calculation settings from ``qa/data/qa_criteria.yaml``."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .._fields import number_field
from ..errors import InputError


class Normalisation(str, enum.Enum):
    GLOBAL = "global"
    LOCAL = "local"


@dataclass(frozen=True)
class GammaCriterion:
    """One gamma criterion: dose difference (percent), distance to agreement (mm), global or local."""

    dose_pct: float
    dta_mm: float
    normalisation: Normalisation = Normalisation.GLOBAL

    @property
    def label(self) -> str:
        return f"{self.dose_pct:g}%/{self.dta_mm:g}mm {self.normalisation.value}"

    @property
    def key(self) -> str:
        return f"{self.dose_pct:g}pct_{self.dta_mm:g}mm_{self.normalisation.value}"


@dataclass(frozen=True)
class Chamber:
    """A chamber's sensitive volume, modelled as a cylinder along the phantom's chamber axis."""

    name: str
    label: str
    radius_mm: float
    length_mm: float

    @property
    def volume_cc(self) -> float:
        return math.pi * self.radius_mm ** 2 * self.length_mm / 1000.0


@dataclass(frozen=True)
class QACriteria:
    version: int
    point_tolerance_pct: float
    low_dose_threshold_pct: float
    pass_rate_pct: float
    action_rate_pct: float
    decisive: GammaCriterion
    criteria: tuple[GammaCriterion, ...]
    max_gamma: float
    interp_fraction: int
    refine_interp_fraction: int
    max_eval_spacing_mm: float
    max_grid_mm: float
    max_gantry_step_deg: float
    max_leaf_step_mm: float
    chamber_sampling_mm: float
    chambers: dict
    default_chamber: str

    def chamber(self, name: str | None) -> Chamber:
        key = (name or self.default_chamber).strip().lower()
        if key not in self.chambers:
            raise InputError(f"--chamber: unknown chamber {name!r}; available: {', '.join(self.chambers)}")
        return self.chambers[key]


def _pos(d: dict, key: str, where: str) -> float:
    return number_field(d, key, where, 0.0, math.inf, open_interval=True)


def _criterion(d: dict, where: str) -> GammaCriterion:
    try:
        norm = Normalisation(str(d.get("normalisation", "global")).lower())
    except ValueError:
        raise InputError(f"{where}: normalisation must be global or local, got {d.get('normalisation')!r}") from None
    return GammaCriterion(_pos(d, "dose_pct", where), _pos(d, "dta_mm", where), norm)


def load_criteria(path: str | Path | None = None) -> QACriteria:
    """Read the QA criteria (default: the shipped ``qa_criteria.yaml``)."""
    if path is None:
        ref = resources.files("sbrtplan") / "qa" / "data" / "qa_criteria.yaml"
        where = "qa_criteria.yaml"
        text = ref.read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{where}: cannot read QA criteria ({exc.strerror})") from None
    try:
        d = yaml.safe_load(text) or {}
        pt, gm, calc = d["point_dose"], d["gamma"], d["calculation"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{where}: expected point_dose, gamma and calculation sections ({exc})") from None
    chambers = {}
    for name, c in (d.get("chambers") or {}).items():
        chambers[str(name).lower()] = Chamber(str(name).lower(), str(c.get("label", name)),
                                              _pos(c, "radius_mm", f"{where} chamber {name}"),
                                              _pos(c, "length_mm", f"{where} chamber {name}"))
    default = str(d.get("default_chamber", "")).lower()
    if default not in chambers:
        raise InputError(f"{where}: default_chamber {default!r} is not among the chambers {list(chambers)}")
    crit = QACriteria(
        version=int(d.get("version", 0)),
        point_tolerance_pct=_pos(pt, "tolerance_pct", where),
        low_dose_threshold_pct=float(gm.get("low_dose_threshold_pct", 10.0)),
        pass_rate_pct=_pos(gm, "pass_rate_pct", where),
        action_rate_pct=_pos(gm, "action_rate_pct", where),
        decisive=_criterion(gm["decisive"], f"{where} gamma.decisive"),
        criteria=tuple(_criterion(c, f"{where} gamma.criteria") for c in gm["criteria"]),
        max_gamma=_pos(gm, "max_gamma", where),
        interp_fraction=int(_pos(gm, "interp_fraction", where)),
        refine_interp_fraction=int(_pos(gm, "refine_interp_fraction", where)),
        max_eval_spacing_mm=_pos(gm, "max_eval_spacing_mm", where),
        max_grid_mm=_pos(calc, "max_grid_mm", where),
        max_gantry_step_deg=_pos(calc, "max_gantry_step_deg", where),
        max_leaf_step_mm=_pos(calc, "max_leaf_step_mm", where),
        chamber_sampling_mm=_pos(calc, "chamber_sampling_mm", where),
        chambers=chambers, default_chamber=default)
    if not 0 <= crit.low_dose_threshold_pct < 100:
        raise InputError(f"{where}: low_dose_threshold_pct must lie in [0, 100), got {crit.low_dose_threshold_pct}")
    if crit.decisive not in crit.criteria:
        raise InputError(f"{where}: the decisive gamma criterion {crit.decisive.label} is not among the criteria")
    return crit

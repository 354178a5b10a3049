"""The vocabulary of protocol goals: units, quantities, comparators, metrics and priority classes.

The enums and the :class:`Quantity` value a goal is made of (:mod:`sbrtplan.protocols.model`
builds goals, schemes and protocols from them).  Priority semantics: see
:mod:`sbrtplan.protocols.model`.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from ..errors import ProtocolError


class Unit(str, enum.Enum):
    """Units of goal parameters and limits."""

    GY = "Gy"
    GY_PER_FX = "Gy/fx"      # resolved to total Gy once the scheme is known
    PCT_RX = "%Rx"           # percent of the prescription dose
    CC = "cc"
    PCT = "%"                # percent of the structure volume (or of the PTV volume)
    RATIO = "ratio"          # dimensionless (CI, GI, R50)

    @classmethod
    def parse(cls, text: str) -> "Unit":
        key = text.strip().replace(" ", "").lower()
        aliases = {"gy": cls.GY, "gy/fx": cls.GY_PER_FX, "gy/f": cls.GY_PER_FX, "%rx": cls.PCT_RX,
                   "cc": cls.CC, "ml": cls.CC, "cm3": cls.CC, "%": cls.PCT, "ratio": cls.RATIO, "": cls.RATIO}
        if key not in aliases:
            raise ProtocolError(f"unknown unit {text!r}; expected one of Gy, Gy/fx, %Rx, cc, %, ratio")
        return aliases[key]


@dataclass(frozen=True)
class Quantity:
    """A number with a :class:`Unit`."""

    value: float
    unit: Unit

    _PATTERN = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+)\s*(.*?)\s*$")

    @classmethod
    def parse(cls, text, where: str = "") -> "Quantity":
        """``"21.9 Gy"``, ``"0.1 cc"``, ``"100 %Rx"``, ``"4.0 ratio"`` -> Quantity.

        A bare number is accepted only for dimensionless quantities: the caller
        decides (see :func:`sbrtplan.protocols.schema`), because a limit without
        a unit is an error for every dose or volume metric.
        """
        if isinstance(text, Quantity):
            return text
        if isinstance(text, bool) or text is None:
            raise ProtocolError(f"{where}: expected a number with a unit, got {text!r}")
        if isinstance(text, (int, float)):
            return cls(float(text), Unit.RATIO)
        m = cls._PATTERN.match(str(text))
        if not m:
            raise ProtocolError(f"{where}: cannot read {text!r} as 'number unit' (e.g. '21.9 Gy', '0.1 cc')")
        try:
            unit = Unit.parse(m.group(2))
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}") from None
        return cls(float(m.group(1)), unit)

    def __str__(self) -> str:
        v = f"{self.value:g}"
        if self.unit is Unit.RATIO:
            return v
        if self.unit in (Unit.PCT, Unit.PCT_RX):
            return f"{v}{self.unit.value}"
        return f"{v} {self.unit.value}"


class Comparator(str, enum.Enum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    def holds(self, value: float, limit: float) -> bool:
        """True when ``value <comparator> limit``."""
        if self is Comparator.LT:
            return value < limit
        if self is Comparator.LE:
            return value <= limit
        if self is Comparator.GT:
            return value > limit
        return value >= limit

    @property
    def is_upper_bound(self) -> bool:
        return self in (Comparator.LT, Comparator.LE)


class Metric(str, enum.Enum):
    """Dose-volume and plan-quality metrics a goal can constrain.

    ``parameter`` meaning per metric:

    ========================  ======================  ===========================
    metric                    parameter               limit unit
    ========================  ======================  ===========================
    DMAX                      --                      Gy, %Rx
    D_CC   (D_x cc)           x in cc                 Gy, %Rx
    D_PCT  (D_x %)            x in %                  Gy, %Rx
    V_GY_CC  (V_x Gy)         x in Gy (or %Rx)        cc
    V_GY_PCT (V_x Gy)         x in Gy (or %Rx)        %
    DMEAN                     --                      Gy, %Rx
    CRITICAL_VOLUME_SPARED    dose x in Gy            cc (volume receiving < x)
    COVERAGE (V_x%Rx)         x in %Rx                %
    CI_RTOG, CI_PADDICK,      --                      ratio
    GI, R50
    D2CM                      --                      %Rx
    V105_OUTSIDE              --                      % of the PTV volume
    BED_RX                    --                      Gy (BED of the prescription)
    ========================  ======================  ===========================
    """

    DMAX = "Dmax"
    D_CC = "D_cc"
    D_PCT = "D_pct"
    V_GY_CC = "V_Gy_cc"
    V_GY_PCT = "V_Gy_pct"
    DMEAN = "Dmean"
    CRITICAL_VOLUME_SPARED = "CV_spared"
    COVERAGE = "coverage"
    CI_RTOG = "CI_rtog"
    CI_PADDICK = "CI_paddick"
    GI = "GI"
    R50 = "R50"
    D2CM = "D2cm"
    V105_OUTSIDE = "V105_outside"
    BED_RX = "BED_Rx"

    @property
    def needs_parameter(self) -> bool:
        return self in _PARAMETER_UNITS

    @property
    def is_plan_index(self) -> bool:
        """Metrics computed from the PTV and isodose volumes rather than one DVH."""
        return self in (Metric.CI_RTOG, Metric.CI_PADDICK, Metric.GI, Metric.R50, Metric.D2CM,
                        Metric.V105_OUTSIDE)


# Allowed parameter and limit units per metric (schema validation).
_PARAMETER_UNITS: dict[Metric, tuple[Unit, ...]] = {
    Metric.D_CC: (Unit.CC,),
    Metric.D_PCT: (Unit.PCT,),
    Metric.V_GY_CC: (Unit.GY, Unit.GY_PER_FX, Unit.PCT_RX),
    Metric.V_GY_PCT: (Unit.GY, Unit.GY_PER_FX, Unit.PCT_RX),
    Metric.CRITICAL_VOLUME_SPARED: (Unit.GY, Unit.GY_PER_FX),
    Metric.COVERAGE: (Unit.PCT_RX,),
}
_DOSE_UNITS = (Unit.GY, Unit.GY_PER_FX, Unit.PCT_RX)
_LIMIT_UNITS: dict[Metric, tuple[Unit, ...]] = {
    Metric.DMAX: _DOSE_UNITS, Metric.D_CC: _DOSE_UNITS, Metric.D_PCT: _DOSE_UNITS, Metric.DMEAN: _DOSE_UNITS,
    Metric.V_GY_CC: (Unit.CC,), Metric.V_GY_PCT: (Unit.PCT,), Metric.CRITICAL_VOLUME_SPARED: (Unit.CC,),
    Metric.COVERAGE: (Unit.PCT,), Metric.CI_RTOG: (Unit.RATIO,), Metric.CI_PADDICK: (Unit.RATIO,),
    Metric.GI: (Unit.RATIO,), Metric.R50: (Unit.RATIO,), Metric.D2CM: (Unit.PCT_RX,),
    Metric.V105_OUTSIDE: (Unit.PCT,), Metric.BED_RX: (Unit.GY,),
}


def parameter_units(metric: Metric) -> tuple[Unit, ...]:
    return _PARAMETER_UNITS.get(metric, ())


def limit_units(metric: Metric) -> tuple[Unit, ...]:
    return _LIMIT_UNITS[metric]


class Priority(enum.IntEnum):
    """Priority class of a goal (1 = most important)."""

    HARD_OAR = 1      # organ-at-risk limit
    TARGET_MIN = 2    # target dose bound: GTV D98 minimum, PTV Dmax, BED of the prescription
    COVERAGE = 3      # PTV coverage
    CONFORMITY = 4    # CI, GI, R50 %, D2cm, hot spots outside the GTV/ITV
    ALARA = 5         # as low as reasonably achievable

    @classmethod
    def parse(cls, text) -> "Priority":
        if isinstance(text, Priority):
            return text
        key = str(text).strip().upper()
        if key.isdigit() and int(key) in cls._value2member_map_:
            return cls(int(key))
        if key not in cls.__members__:
            raise ProtocolError(f"unknown priority {text!r}; expected one of "
                                f"{', '.join(m.lower() for m in cls.__members__)}")
        return cls[key]


class Stage(str, enum.Enum):
    """How the optimiser uses a goal (see the module docstring)."""

    CONSTRAINT = "constraint"
    COVERAGE = "coverage"
    COVERAGE_FALLBACK = "coverage_fallback"
    OBJECTIVE = "objective"
    REPORT = "report"


class ApplyTo(str, enum.Enum):
    """Whether an organ goal applies to the organ or to its PRV."""

    ORGAN = "organ"
    PRV = "prv"


class RtogLevel(str, enum.Enum):
    """Row of the RTOG 0813/0915 conformality table a goal uses as its limit."""

    NONE = "none"    # "no deviation" limit
    MINOR = "minor"  # "minor deviation" limit


class ConversionPolicy(str, enum.Enum):
    """What ``goals_for`` does for a fraction number that has no limit table."""

    EQD2 = "eqd2"        # convert the nearest table through EQD2 (isoeffective LQ dose)
    REFUSE = "refuse"    # raise ProtocolError listing the missing limits

"""Typed protocol model: schemes, goals, priorities and structure roles.

The vocabulary goals are made of (units, quantities, comparators, metrics, priority classes) is in
:mod:`sbrtplan.protocols.quantities`.

The optimiser consumes :class:`Goal` objects directly; nothing downstream parses
strings.  A goal says *which structure* (a protocol role such as ``"cord"``, or
``"ptv"``), *which metric* (:class:`Metric`) with its *parameter* (the ``x`` of
D_x cc, V_x Gy, ...), a *comparator* and a *limit* with a unit, a
:class:`Priority` class and where the rule comes from.

Priority semantics for the optimiser (see :attr:`Goal.stage`):

* ``Stage.CONSTRAINT``        mandatory hard organ limits (``Priority.HARD_OAR``) and
  target dose bounds (``Priority.TARGET_MIN``: GTV D98 minimum, PTV Dmax <= 140 %):
  stage-1 hard constraints.
* ``Stage.COVERAGE``          the coverage goal (PTV V100%Rx >= 95 %, V90%Rx >= 99 %):
  the stage-1 objective, maximised subject to the constraints.
* ``Stage.COVERAGE_FALLBACK`` the relaxed coverage allowed when the constraints
  cannot be met with full coverage (spine: V100 >= 90 %) together with the
  goals it requires (GTV D98 >= 21 Gy / 3 fx, 23 Gy / 5 fx).
* ``Stage.OBJECTIVE``         conformity / gradient (R50 %, D2cm, CI, GI), ALARA and
  non-mandatory ("optimal") organ limits: stage-2 objectives weighted by priority.
* ``Stage.REPORT``            rules on the prescription itself (BED10 >= 80 Gy): checked,
  not optimised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from ..errors import ProtocolError
from .quantities import (ApplyTo, Comparator, ConversionPolicy, Metric, Priority, Quantity, RtogLevel, Stage,
                         Unit, limit_units, parameter_units)
from .radiobiology import isoeffective_dose_gy


@dataclass(frozen=True)
class Scheme:
    """A fractionation scheme: total dose (Gy) over ``fractions`` fractions."""

    total_gy: float
    fractions: int

    def __post_init__(self) -> None:
        if not (isinstance(self.fractions, int) and self.fractions >= 1):
            raise ProtocolError(f"scheme: number of fractions must be a positive integer, got {self.fractions!r}")
        if not (math.isfinite(self.total_gy) and self.total_gy > 0):
            raise ProtocolError(f"scheme: total dose must be positive, got {self.total_gy!r}")

    @property
    def dose_per_fraction_gy(self) -> float:
        return self.total_gy / self.fractions

    @classmethod
    def parse(cls, text) -> "Scheme":
        """``"27/3"``, ``"27 Gy / 3 fx"``, ``"27Gy/3F"`` -> Scheme(27, 3)."""
        if isinstance(text, Scheme):
            return text
        m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(?:gy)?\s*/\s*(\d+)\s*(?:fx|f|fractions?)?\s*$", str(text), re.I)
        if not m:
            raise ProtocolError(f"cannot read scheme {text!r}; expected TOTAL/FRACTIONS such as '27/3'")
        return cls(float(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.total_gy:g} Gy / {self.fractions} fx"

    @property
    def short(self) -> str:
        return f"{self.total_gy:g}/{self.fractions}"


@dataclass(frozen=True)
class SchemeOption:
    """A scheme listed by a protocol, with its rank (1 = preferred) and a note."""

    scheme: Scheme
    rank: int
    note: str = ""


@dataclass(frozen=True)
class SchemeRange:
    """Schemes allowed by range (liver: 24-60 Gy in 3-10 fractions)."""

    total_gy: tuple[float, float]
    fractions: tuple[int, int]
    note: str = ""

    def contains(self, scheme: Scheme) -> bool:
        return (self.total_gy[0] - 1e-9 <= scheme.total_gy <= self.total_gy[1] + 1e-9
                and self.fractions[0] <= scheme.fractions <= self.fractions[1])

    def __str__(self) -> str:
        return (f"{self.total_gy[0]:g}-{self.total_gy[1]:g} Gy in {self.fractions[0]}-{self.fractions[1]} fx")


@dataclass(frozen=True)
class Goal:
    """One planning rule.

    Parameters
    ----------
    structure : str
        Protocol role key (``"ptv"``, ``"gtv"``, ``"cord"``, ``"liver"``, ``"body"``) or,
        for ad-hoc goals, a structure name.
    metric : Metric
    comparator : Comparator
    limit : Quantity or None
        ``None`` only when ``rtog_level`` is set (limit read from the RTOG table
        at the PTV volume; see :func:`~sbrtplan.protocols.rtog.rtog_goal`).
    priority : Priority
    parameter : Quantity, optional
        The ``x`` of D_x cc / D_x % / V_x Gy / coverage V_x %Rx / volume spared below x Gy.
    minus : tuple of str
        Roles whose volume is removed from ``structure`` (normal liver = liver - GTV;
        hot spots: body - GTV - ITV).
    apply_to : ApplyTo
        ``PRV``: evaluate on the organ's PRV; when the case has no PRV structure the
        goal is evaluated on the organ and the report says so.
    mandatory : bool
        ``False`` for "optimal" limits (UK SABR optimal column) and advisory rules:
        they become stage-2 objectives and a failure does not fail the plan.
    source : str
        Where the rule comes from ("TG-101 3 fx (bone standard table 9)").
    alpha_beta_gy : float, optional
        alpha/beta used for BED/EQD2 of this goal (conversions, BED_RX).
    fallback : bool
        Part of the relaxed-coverage rule (see :class:`Stage`).
    rtog_level : RtogLevel, optional
        Limit taken from the RTOG 0813/0915 conformality table.
    condition : str, optional
        Applies only when this condition is declared (e.g. ``"renal_cell"``).
    converted_from_fractions : int, optional
        Set when the limit was converted through EQD2 from a table for another
        fraction number.
    note : str
    """

    structure: str
    metric: Metric
    comparator: Comparator
    limit: Quantity | None
    priority: Priority
    parameter: Quantity | None = None
    minus: tuple[str, ...] = ()
    apply_to: ApplyTo = ApplyTo.ORGAN
    mandatory: bool = True
    source: str = ""
    alpha_beta_gy: float | None = None
    fallback: bool = False
    rtog_level: RtogLevel | None = None
    condition: str | None = None
    converted_from_fractions: int | None = None
    note: str = ""

    @property
    def stage(self) -> Stage:
        if self.metric is Metric.BED_RX:
            return Stage.REPORT
        if self.fallback:
            return Stage.COVERAGE_FALLBACK
        if self.priority is Priority.COVERAGE:
            return Stage.COVERAGE
        if self.mandatory and self.priority in (Priority.HARD_OAR, Priority.TARGET_MIN):
            return Stage.CONSTRAINT
        return Stage.OBJECTIVE

    @property
    def metric_label(self) -> str:
        """Short text of the metric, e.g. ``D0.1cc``, ``V15Gy``, ``V100%Rx``, ``CV<15Gy``."""
        p = self.parameter
        m = self.metric
        if m is Metric.D_CC:
            return f"D{p.value:g}cc"
        if m is Metric.D_PCT:
            return f"D{p.value:g}%"
        if m in (Metric.V_GY_CC, Metric.V_GY_PCT):
            return f"V{p.value:g}{'%Rx' if p.unit is Unit.PCT_RX else 'Gy'}"
        if m is Metric.COVERAGE:
            return f"V{p.value:g}%Rx"
        if m is Metric.CRITICAL_VOLUME_SPARED:
            return f"Vol<{p.value:g}Gy"
        return m.value

    @property
    def limit_label(self) -> str:
        if self.limit is None:
            return f"{self.comparator.value} RTOG {self.rtog_level.value if self.rtog_level else ''}"
        return f"{self.comparator.value} {self.limit}"

    @property
    def label(self) -> str:
        where = self.structure + (" - " + " - ".join(self.minus) if self.minus else "")
        if self.apply_to is ApplyTo.PRV:
            where += " (PRV)"
        return f"{where} {self.metric_label} {self.limit_label}"

    def limit_in_gy(self, rx_gy: float) -> float:
        """The limit as an absolute dose (Gy) for dose limits in Gy or %Rx."""
        if self.limit is None:
            raise ProtocolError(f"goal '{self.label}': limit comes from the RTOG table; resolve it first")
        if self.limit.unit is Unit.GY:
            return self.limit.value
        if self.limit.unit is Unit.PCT_RX:
            return self.limit.value / 100.0 * rx_gy
        raise ProtocolError(f"goal '{self.label}': limit unit {self.limit.unit.value} is not a dose")

    def parameter_in_gy(self, rx_gy: float) -> float:
        """The dose parameter of V_x / coverage / spared-volume goals in Gy."""
        p = self.parameter
        if p is None:
            raise ProtocolError(f"goal '{self.label}': metric {self.metric.value} has no dose parameter")
        if p.unit is Unit.GY:
            return p.value
        if p.unit is Unit.PCT_RX:
            return p.value / 100.0 * rx_gy
        raise ProtocolError(f"goal '{self.label}': parameter unit {p.unit.value} is not a dose")


@dataclass(frozen=True)
class RoleSpec:
    """Which structures fill a protocol role.

    Parameters
    ----------
    key : str
        Role key used by goals (``"cord"``).
    kind : str
        ``"target"``, ``"oar"`` or ``"body"``.
    names : tuple of str
        TG-263 names that fill the role (exact, case-insensitive).
    prefixes : tuple of str
        Name prefixes that fill the role (targets: ``PTV``, ``PTV_27Gy``...).
    union_of : tuple of str
        When none of ``names`` exists, the union of these structures fills the role
        (``Kidneys`` = ``Kidney_L`` + ``Kidney_R``).
    prv_margin_mm : float, optional
        PRV margin the standard asks for (``None``: no PRV required).
    alpha_beta_gy : float, optional
        Organ alpha/beta (conversions, re-irradiation).
    multiple : str
        ``"each"`` (evaluate every matching structure, e.g. left and right plexus)
        or ``"union"`` (one combined structure, e.g. several GTVs).
    """

    key: str
    kind: str = "oar"
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    union_of: tuple[str, ...] = ()
    prv_margin_mm: float | None = None
    alpha_beta_gy: float | None = None
    multiple: str = "each"
    description: str = ""

    @property
    def is_target(self) -> bool:
        return self.kind == "target"


@dataclass(frozen=True)
class LimitTable:
    """Goals from one source valid for one fraction number (``None`` = any)."""

    family: str
    fractions: int | None
    goals: tuple[Goal, ...]
    source: str = ""
    convert: bool = True   # False: supplementary, used only at its own fraction numbers


@dataclass(frozen=True)
class CoverageRule:
    """Coverage goal and its fallback for one scheme."""

    primary: tuple[Goal, ...]
    fallback: tuple[Goal, ...] = ()
    fallback_requires: tuple[Goal, ...] = ()

    @property
    def has_fallback(self) -> bool:
        return bool(self.fallback)


@dataclass
class Protocol:
    """A planning protocol from a template.

    Use :meth:`goals_for` to get the typed goals for a scheme and
    :meth:`coverage_for` for the coverage rule with its fallback.
    """

    name: str
    title: str
    site: str
    sources: tuple[str, ...]
    roles: dict[str, RoleSpec]
    schemes: tuple[SchemeOption, ...] = ()
    scheme_range: SchemeRange | None = None
    target_goals: tuple[Goal, ...] = ()            # fraction-independent target rules
    coverage_primary: tuple[Goal, ...] = ()
    coverage_fallback: tuple[Goal, ...] = ()
    coverage_fallback_requires: tuple[LimitTable, ...] = ()
    limit_tables: tuple[LimitTable, ...] = ()
    conversion: ConversionPolicy = ConversionPolicy.EQD2
    conversion_alpha_beta_gy: float = 2.5
    tumour_alpha_beta_gy: float = 10.0
    ptv_margin_mm: tuple[float, float] | None = None
    ctv_margin_mm: tuple[float, float] | None = None
    prescription_role: str = "ptv"
    conditions: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    path: str = ""

    # ---------------------------------------------------------------- schemes
    def scheme(self, text) -> Scheme:
        """Parse ``text`` and check that the protocol allows the scheme."""
        s = Scheme.parse(text)
        self.check_scheme(s)
        return s

    def allowed(self, scheme: Scheme) -> bool:
        if any(abs(o.scheme.total_gy - scheme.total_gy) < 1e-6 and o.scheme.fractions == scheme.fractions
               for o in self.schemes):
            return True
        return self.scheme_range is not None and self.scheme_range.contains(scheme)

    def check_scheme(self, scheme: Scheme) -> None:
        if not self.allowed(scheme):
            listed = ", ".join(o.scheme.short for o in self.schemes)
            rng = f"; or any scheme in {self.scheme_range}" if self.scheme_range else ""
            raise ProtocolError(f"protocol '{self.name}': scheme {scheme} is not allowed; allowed schemes: "
                                f"{listed or 'none listed'}{rng}")

    @property
    def table_fractions(self) -> dict[str, tuple[int, ...]]:
        """Fraction numbers that have a limit table, per family."""
        out: dict[str, list[int]] = {}
        for t in self.limit_tables:
            if t.fractions is not None:
                out.setdefault(t.family, []).append(t.fractions)
            else:
                out.setdefault(t.family, [])
        return {k: tuple(sorted(v)) for k, v in out.items()}

    # ------------------------------------------------------------------ goals
    def goals_for(self, scheme, conditions=(), conversion: ConversionPolicy | str | None = None) -> list[Goal]:
        """All goals for ``scheme``, resolved to the scheme's fraction number.

        Parameters
        ----------
        scheme : Scheme or str
            Must be allowed by the protocol.
        conditions : iterable of str
            Declared conditions (``"renal_cell"``, ``"solitary_kidney"``); goals
            tied to other conditions are left out.
        conversion : ConversionPolicy, optional
            Overrides the template's policy for fraction numbers without a table:
            ``EQD2`` converts the nearest table's limits (alpha/beta stated on
            each converted goal), ``REFUSE`` raises :class:`ProtocolError`
            listing the limits that are missing.

        Returns
        -------
        list of Goal
            Target goals, coverage (primary, fallback and its requirements for
            this fraction number), then organ limits.  ``Gy/fx`` limits are
            multiplied out to total Gy.
        """
        scheme = scheme if isinstance(scheme, Scheme) else Scheme.parse(scheme)
        self.check_scheme(scheme)
        policy = ConversionPolicy(conversion) if conversion is not None else self.conversion
        conds = {str(c) for c in conditions}
        unknown = conds - set(self.conditions)
        if unknown:
            raise ProtocolError(f"protocol '{self.name}': unknown condition(s) {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(self.conditions) or 'none'}")
        n = scheme.fractions
        goals: list[Goal] = []
        goals.extend(self.target_goals)
        cov = self.coverage_for(scheme)
        goals.extend(cov.primary)
        goals.extend(cov.fallback)
        goals.extend(cov.fallback_requires)

        missing: list[str] = []
        for family, tables in self._families().items():
            for t in tables:
                if t.fractions is None:
                    goals.extend(t.goals)
            specific = [t for t in tables if t.fractions is not None]
            if not specific:
                continue
            exact = [t for t in specific if t.fractions == n]
            if exact:
                for t in exact:
                    goals.extend(t.goals)
                continue
            if not specific[0].convert:
                continue  # supplementary family: stated by resolution_notes()
            src = self._nearest(specific, n)
            if policy is ConversionPolicy.REFUSE:
                have = ", ".join(str(t.fractions) for t in specific)
                missing.append(f"{family} (tables for {have} fx): "
                               + "; ".join(_goal_text(g) for g in src.goals))
                continue
            goals.extend(self._convert(g, src.fractions, n) for g in src.goals)
        if missing:
            raise ProtocolError(f"protocol '{self.name}': no organ limits for {n} fractions and conversion is "
                                f"refused; missing: " + " | ".join(missing))

        out = []
        for g in goals:
            if g.condition is not None and g.condition not in conds:
                continue
            out.append(_resolve_per_fraction(g, n))
        return out

    def _families(self) -> dict[str, list[LimitTable]]:
        families: dict[str, list[LimitTable]] = {}
        for t in self.limit_tables:
            families.setdefault(t.family, []).append(t)
        return families

    @staticmethod
    def _nearest(tables: list[LimitTable], n: int) -> LimitTable:
        # a tie goes to the smaller fraction number (higher dose per fraction, closer to the
        # SBRT regime the limits were derived for)
        return min(tables, key=lambda t: (abs(t.fractions - n), t.fractions))

    def resolution_notes(self, scheme) -> list[str]:
        """How each organ-limit family was resolved for ``scheme`` (table used, converted or not applied)."""
        scheme = scheme if isinstance(scheme, Scheme) else Scheme.parse(scheme)
        n = scheme.fractions
        out = []
        for family, tables in self._families().items():
            specific = sorted(t.fractions for t in tables if t.fractions is not None)
            if not specific:
                out.append(f"{family}: fraction-independent rules")
            elif n in specific:
                out.append(f"{family}: {n}-fraction table")
            elif not tables[0].convert:
                out.append(f"{family}: not applied (tables for {', '.join(map(str, specific))} fx only; "
                           f"supplementary to the other families)")
            else:
                src = self._nearest([t for t in tables if t.fractions is not None], n)
                ab = sorted({self.alpha_beta_for(g) for g in src.goals})
                out.append(f"{family}: no {n}-fraction table; {src.fractions}-fraction limits converted through "
                           f"EQD2 (alpha/beta {', '.join(f'{a:g}' for a in ab)} Gy)")
        cov = self.coverage_for(scheme)
        if self.coverage_fallback and not cov.has_fallback:
            out.append(f"coverage fallback: not available at {n} fractions (the standard gives no GTV minimum)")
        return out

    def coverage_for(self, scheme) -> CoverageRule:
        """Primary coverage goals, and the fallback with what it requires at this fraction number."""
        scheme = scheme if isinstance(scheme, Scheme) else Scheme.parse(scheme)
        req: list[Goal] = []
        for t in self.coverage_fallback_requires:
            if t.fractions is None or t.fractions == scheme.fractions:
                req.extend(t.goals)
        # the relaxed coverage is allowed only where the standard gives the GTV minimum
        fallback = self.coverage_fallback if (req or not self.coverage_fallback_requires) else ()
        return CoverageRule(primary=self.coverage_primary, fallback=tuple(fallback),
                            fallback_requires=tuple(req) if fallback else ())

    def role(self, key: str) -> RoleSpec:
        if key not in self.roles:
            raise ProtocolError(f"protocol '{self.name}': unknown structure role '{key}'")
        return self.roles[key]

    def alpha_beta_for(self, goal: Goal) -> float:
        """alpha/beta of a goal: the goal's, else its role's, else the protocol default."""
        if goal.alpha_beta_gy is not None:
            return goal.alpha_beta_gy
        spec = self.roles.get(goal.structure)
        if spec is not None and spec.alpha_beta_gy is not None:
            return spec.alpha_beta_gy
        if spec is not None and spec.is_target:
            return self.tumour_alpha_beta_gy
        return self.conversion_alpha_beta_gy

    def _convert(self, goal: Goal, from_n: int, to_n: int) -> Goal:
        """Convert a goal's absolute-dose numbers from ``from_n`` to ``to_n`` fractions."""
        ab = self.alpha_beta_for(goal)

        def conv(q: Quantity | None) -> Quantity | None:
            if q is None:
                return None
            if q.unit is Unit.GY:
                return Quantity(round(float(isoeffective_dose_gy(q.value, from_n, to_n, ab)), 2), Unit.GY)
            if q.unit is Unit.GY_PER_FX:
                total = isoeffective_dose_gy(q.value * from_n, from_n, to_n, ab)
                return Quantity(round(float(total), 2), Unit.GY)
            return q

        note = (f"converted from the {from_n}-fx limit {goal.limit} through EQD2 (LQ, alpha/beta {ab:g} Gy)"
                + ("; mean dose converted as if uniform" if goal.metric is Metric.DMEAN else ""))
        return replace(goal, limit=conv(goal.limit), parameter=conv(goal.parameter), alpha_beta_gy=ab,
                       converted_from_fractions=from_n,
                       note=(goal.note + "; " if goal.note else "") + note)

    def summary(self) -> str:
        lines = [f"{self.name}: {self.title} ({self.site})"]
        for o in self.schemes:
            lines.append(f"  {o.rank}. {o.scheme}" + (f"  ({o.note})" if o.note else ""))
        if self.scheme_range:
            lines.append(f"  range: {self.scheme_range}" + (f" ({self.scheme_range.note})" if self.scheme_range.note
                                                              else ""))
        return "\n".join(lines)


def _goal_text(g: Goal) -> str:
    return f"{g.structure} {g.metric_label} {g.limit_label}"


def _resolve_per_fraction(goal: Goal, fractions: int) -> Goal:
    """Replace Gy/fx limits and parameters by totals for ``fractions``."""
    changed = {}
    for attr in ("limit", "parameter"):
        q = getattr(goal, attr)
        if q is not None and q.unit is Unit.GY_PER_FX:
            changed[attr] = Quantity(q.value * fractions, Unit.GY)
    if not changed:
        return goal
    note = goal.note
    if "limit" in changed:
        note = (note + "; " if note else "") + f"{goal.limit.value:g} Gy per fraction x {fractions}"
    return replace(goal, note=note, **changed)

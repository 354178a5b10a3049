"""Validation of protocol templates (YAML) into :class:`~sbrtplan.protocols.model.Protocol`.

Every problem raises :class:`ProtocolError` naming the template, the place in it
(section, table, goal number) and what was expected: an unknown structure role,
a limit without a unit, a unit that does not fit the metric, a scheme outside
the protocol, an unknown key (typos are errors, not silently ignored).

Template layout (see ``templates/*.yaml`` for complete examples)::

    kind: protocol
    name: bone_spine
    title: ...
    site: ...
    sources: [...]
    include: [lib_...]                 # library files merged in (roles, limits)
    tumour_alpha_beta_gy: 10
    ptv_margin_mm: [1, 2]
    ctv_margin_mm: [0, 5]
    conversion: {policy: eqd2, alpha_beta_gy: 2.5}
    conditions: {renal_cell: "..."}
    schemes: [{scheme: 30/3, rank: 1, note: ...}, ...]
    scheme_range: {total_gy: [24, 60], fractions: [3, 10]}
    roles: {ptv: {kind: target, prefixes: [PTV]}, cord: {names: [SpinalCord], prv_margin_mm: 2}, ...}
    targets: [goal, ...]                # fraction-independent target rules
    coverage: {primary: [goal], fallback: [goal], fallback_requires: {3: [goal], 5: [goal]}}
    limits:                             # organ limit tables
      - family: ...
        source: ...
        apply_to: prv                   # default for the table's goals
        priority: hard_oar              # default for the table's goals
        convert: true                   # false: supplementary, used only at its own fraction numbers
        by_fractions: {1: [goal], 3: [goal], any: [goal]}

A goal::

    {structure: cord, metric: D_cc, at: 0.1 cc, lt: 21.9 Gy, priority: hard_oar,
     mandatory: true, apply_to: prv, minus: [gtv], alpha_beta_gy: 2, condition: renal_cell,
     source: "...", note: "..."}

``lt`` / ``le`` / ``gt`` / ``ge`` (exactly one) carries the limit with its unit;
``"rtog:none"`` or ``"rtog:minor"`` takes the limit from the RTOG 0813/0915 table.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProtocolError
from .model import (ApplyTo, Comparator, ConversionPolicy, Goal, LimitTable, Metric, Priority, Protocol,
                    Quantity, RoleSpec, RtogLevel, Scheme, SchemeOption, SchemeRange, Unit, limit_units,
                    parameter_units)

_TOP_KEYS = {"kind", "name", "title", "site", "sources", "include", "tumour_alpha_beta_gy", "ptv_margin_mm",
             "ctv_margin_mm", "conversion", "conditions", "schemes", "scheme_range", "roles", "targets",
             "coverage", "limits", "notes", "prescription_role"}
_LIB_KEYS = {"kind", "name", "title", "sources", "roles", "limits", "targets", "notes", "conditions"}
_GOAL_KEYS = {"structure", "metric", "at", "lt", "le", "gt", "ge", "priority", "mandatory", "apply_to", "minus",
              "alpha_beta_gy", "condition", "source", "note"}
_ROLE_KEYS = {"kind", "names", "prefixes", "union_of", "prv_margin_mm", "alpha_beta_gy", "multiple",
              "description"}
_TABLE_KEYS = {"family", "source", "apply_to", "priority", "mandatory", "by_fractions", "alpha_beta_gy", "note",
               "convert"}
_COMPARATOR_KEYS = {"lt": Comparator.LT, "le": Comparator.LE, "gt": Comparator.GT, "ge": Comparator.GE}
_ROLE_KINDS = ("target", "oar", "body")


def _fail(where: str, msg: str) -> ProtocolError:
    return ProtocolError(f"{where}: {msg}")


def _check_keys(d: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise _fail(where, f"expected a mapping, got {type(d).__name__}")
    extra = set(d) - allowed
    if extra:
        raise _fail(where, f"unknown key(s) {', '.join(sorted(map(str, extra)))}; allowed: "
                           f"{', '.join(sorted(allowed))}")
    return d


def _range(value, where: str, integer: bool = False) -> tuple:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise _fail(where, f"expected [min, max], got {value!r}")
    try:
        lo, hi = (int(v) if integer else float(v) for v in value)
    except (TypeError, ValueError):
        raise _fail(where, f"expected two numbers, got {value!r}") from None
    if lo > hi:
        raise _fail(where, f"min {lo} is larger than max {hi}")
    return (lo, hi)


def parse_role(key: str, d: dict, where: str) -> RoleSpec:
    _check_keys(d, _ROLE_KEYS, where)
    kind = str(d.get("kind", "oar"))
    if kind not in _ROLE_KINDS:
        raise _fail(where, f"kind must be one of {', '.join(_ROLE_KINDS)}, got {kind!r}")
    names = tuple(str(n) for n in (d.get("names") or ()))
    prefixes = tuple(str(n) for n in (d.get("prefixes") or ()))
    if not names and not prefixes:
        raise _fail(where, "a role needs 'names' (TG-263 names) or 'prefixes'")
    multiple = str(d.get("multiple", "union" if kind == "target" else "each"))
    if multiple not in ("each", "union"):
        raise _fail(where, f"multiple must be 'each' or 'union', got {multiple!r}")
    prv = d.get("prv_margin_mm")
    ab = d.get("alpha_beta_gy")
    return RoleSpec(key=key, kind=kind, names=names, prefixes=prefixes,
                    union_of=tuple(str(n) for n in (d.get("union_of") or ())),
                    prv_margin_mm=None if prv is None else float(prv),
                    alpha_beta_gy=None if ab is None else float(ab), multiple=multiple,
                    description=str(d.get("description", "")))


def parse_goal(d: Any, where: str, roles: dict[str, RoleSpec], conditions: dict[str, str],
               defaults: dict | None = None) -> Goal:
    """One goal mapping -> :class:`Goal` (``defaults`` from the enclosing table)."""
    defaults = defaults or {}
    _check_keys(d, _GOAL_KEYS, where)
    if "structure" not in d:
        raise _fail(where, "missing 'structure' (a role key)")
    structure = str(d["structure"])
    if structure not in roles:
        raise _fail(where, f"unknown structure role '{structure}'; roles defined: {', '.join(sorted(roles))}")
    minus = tuple(str(m) for m in (d.get("minus") or ()))
    for m in minus:
        if m not in roles:
            raise _fail(where, f"unknown structure role '{m}' in 'minus'; roles defined: {', '.join(sorted(roles))}")
    try:
        metric = Metric(str(d.get("metric")))
    except ValueError:
        raise _fail(where, f"unknown metric {d.get('metric')!r}; expected one of "
                           f"{', '.join(m.value for m in Metric)}") from None
    where = f"{where} ({structure} {metric.value})"

    comps = [k for k in _COMPARATOR_KEYS if k in d]
    if len(comps) != 1:
        raise _fail(where, "exactly one of lt / le / gt / ge must give the limit")
    comparator = _COMPARATOR_KEYS[comps[0]]
    raw_limit = d[comps[0]]
    rtog_level = None
    limit: Quantity | None
    if isinstance(raw_limit, str) and raw_limit.strip().lower().startswith("rtog:"):
        try:
            rtog_level = RtogLevel(raw_limit.split(":", 1)[1].strip().lower())
        except ValueError:
            raise _fail(where, f"RTOG limit must be 'rtog:none' or 'rtog:minor', got {raw_limit!r}") from None
        if metric not in (Metric.CI_RTOG, Metric.R50, Metric.D2CM):
            raise _fail(where, "only CI_rtog, R50 and D2cm have RTOG table limits")
        limit = None
    else:
        allowed = limit_units(metric)
        if isinstance(raw_limit, (int, float)) and not isinstance(raw_limit, bool) and Unit.RATIO not in allowed:
            raise _fail(where, f"limit {raw_limit!r} has no unit; expected one of "
                               f"{', '.join(u.value for u in allowed)} (e.g. '{raw_limit} {allowed[0].value}')")
        limit = Quantity.parse(raw_limit, where)
        if limit.unit not in allowed:
            raise _fail(where, f"limit unit '{limit.unit.value}' does not fit metric {metric.value}; expected "
                               f"{', '.join(u.value for u in allowed)}")

    parameter = None
    p_units = parameter_units(metric)
    if p_units:
        if "at" not in d:
            raise _fail(where, f"metric {metric.value} needs 'at' (unit {', '.join(u.value for u in p_units)})")
        raw = d["at"]
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raise _fail(where, f"'at: {raw}' has no unit; expected {', '.join(u.value for u in p_units)}")
        parameter = Quantity.parse(raw, where)
        if parameter.unit not in p_units:
            raise _fail(where, f"'at' unit '{parameter.unit.value}' does not fit metric {metric.value}; "
                               f"expected {', '.join(u.value for u in p_units)}")
        if parameter.value < 0:
            raise _fail(where, f"'at' must be >= 0, got {parameter}")
    elif "at" in d:
        raise _fail(where, f"metric {metric.value} takes no 'at' parameter")

    prio = d.get("priority", defaults.get("priority"))
    if prio is None:
        raise _fail(where, "missing 'priority' (hard_oar, target_min, coverage, conformity or alara)")
    try:
        priority = Priority.parse(prio)
    except ProtocolError as exc:
        raise _fail(where, str(exc)) from None
    try:
        apply_to = ApplyTo(str(d.get("apply_to", defaults.get("apply_to", "organ"))))
    except ValueError:
        raise _fail(where, f"apply_to must be 'organ' or 'prv', got {d.get('apply_to')!r}") from None
    if apply_to is ApplyTo.PRV and roles[structure].is_target:
        raise _fail(where, "apply_to: prv is meaningless for a target role")
    cond = d.get("condition")
    if cond is not None and str(cond) not in conditions:
        raise _fail(where, f"unknown condition {cond!r}; declare it under 'conditions' "
                           f"(known: {', '.join(conditions) or 'none'})")
    mandatory = d.get("mandatory", defaults.get("mandatory", True))
    if not isinstance(mandatory, bool):
        raise _fail(where, f"mandatory must be true or false, got {mandatory!r}")
    ab = d.get("alpha_beta_gy", defaults.get("alpha_beta_gy"))
    source = str(d.get("source", defaults.get("source", "")))
    if not source:
        raise _fail(where, "missing 'source' (where the rule comes from)")
    return Goal(structure=structure, metric=metric, comparator=comparator, limit=limit, priority=priority,
                parameter=parameter, minus=minus, apply_to=apply_to, mandatory=mandatory, source=source,
                alpha_beta_gy=None if ab is None else float(ab), rtog_level=rtog_level,
                condition=None if cond is None else str(cond), note=str(d.get("note", defaults.get("note", ""))))


def _goal_list(items, where: str, roles, conditions, defaults=None, fallback: bool = False) -> tuple[Goal, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise _fail(where, "expected a list of goals")
    out = []
    for i, g in enumerate(items):
        goal = parse_goal(g, f"{where}, goal #{i + 1}", roles, conditions, defaults)
        if fallback:
            from dataclasses import replace
            goal = replace(goal, fallback=True)
        out.append(goal)
    return tuple(out)


def _fraction_key(k, where: str) -> int | None:
    if str(k).strip().lower() == "any":
        return None
    try:
        n = int(k)
    except (TypeError, ValueError):
        raise _fail(where, f"fraction key must be a positive integer or 'any', got {k!r}") from None
    if n < 1:
        raise _fail(where, f"fraction key must be >= 1, got {n}")
    return n


def parse_limit_table(t: Any, where: str, roles, conditions) -> list[LimitTable]:
    _check_keys(t, _TABLE_KEYS, where)
    family = str(t.get("family") or "")
    if not family:
        raise _fail(where, "missing 'family'")
    where = f"{where} '{family}'"
    source = str(t.get("source", ""))
    if not source:
        raise _fail(where, "missing 'source'")
    defaults = {"source": source, "priority": t.get("priority", "hard_oar"), "apply_to": t.get("apply_to", "organ"),
                "mandatory": t.get("mandatory", True), "alpha_beta_gy": t.get("alpha_beta_gy"),
                "note": t.get("note", "")}
    convert = t.get("convert", True)
    if not isinstance(convert, bool):
        raise _fail(where, f"convert must be true or false, got {convert!r}")
    by = t.get("by_fractions")
    if not isinstance(by, dict) or not by:
        raise _fail(where, "'by_fractions' must map fraction numbers (or 'any') to goal lists")
    out = []
    for k, items in by.items():
        n = _fraction_key(k, where)
        label = f"{where}, {k} fx" if n else f"{where}, any fx"
        src = f"{source} ({n} fx)" if n else source
        goals = _goal_list(items, label, roles, conditions, dict(defaults, source=src))
        out.append(LimitTable(family=family, fractions=n, goals=goals, source=source, convert=convert))
    return out


def parse_scheme_option(d: Any, where: str) -> SchemeOption:
    _check_keys(d, {"scheme", "rank", "note"}, where)
    try:
        scheme = Scheme.parse(d.get("scheme"))
    except ProtocolError as exc:
        raise _fail(where, str(exc)) from None
    rank = d.get("rank")
    if not isinstance(rank, int) or rank < 1:
        raise _fail(where, f"rank must be a positive integer, got {rank!r}")
    return SchemeOption(scheme, rank, str(d.get("note", "")))


def merge_library(data: dict, lib: dict, lib_name: str, where: str) -> dict:
    """Merge a library template into a protocol mapping (protocol entries win for roles)."""
    _check_keys(lib, _LIB_KEYS, f"library '{lib_name}'")
    if lib.get("kind") != "library":
        raise _fail(where, f"include '{lib_name}' is not a library template (kind: {lib.get('kind')!r})")
    out = dict(data)
    roles = dict(lib.get("roles") or {})
    roles.update(data.get("roles") or {})
    out["roles"] = roles
    conds = dict(lib.get("conditions") or {})
    conds.update(data.get("conditions") or {})
    out["conditions"] = conds
    out["limits"] = list(lib.get("limits") or []) + list(data.get("limits") or [])
    out["targets"] = list(lib.get("targets") or []) + list(data.get("targets") or [])
    out["sources"] = list(data.get("sources") or []) + [s for s in (lib.get("sources") or [])
                                                         if s not in (data.get("sources") or [])]
    return out


def build_protocol(data: dict, where: str, path: str = "") -> Protocol:
    """Validate a (merged) protocol mapping and build the :class:`Protocol`."""
    _check_keys(data, _TOP_KEYS, where)
    if data.get("kind") != "protocol":
        raise _fail(where, f"kind must be 'protocol', got {data.get('kind')!r}")
    name = str(data.get("name") or "")
    if not name:
        raise _fail(where, "missing 'name'")
    raw_roles = data.get("roles")
    if not isinstance(raw_roles, dict) or not raw_roles:
        raise _fail(where, "'roles' must map role keys to structure names")
    roles = {str(k): parse_role(str(k), v, f"{where}, role '{k}'") for k, v in raw_roles.items()}
    rx_role = str(data.get("prescription_role", "ptv"))
    if rx_role not in roles or not roles[rx_role].is_target:
        raise _fail(where, f"prescription role '{rx_role}' must be a target role")
    conditions = {str(k): str(v) for k, v in (data.get("conditions") or {}).items()}

    schemes = tuple(parse_scheme_option(s, f"{where}, scheme #{i + 1}")
                    for i, s in enumerate(data.get("schemes") or []))
    ranks = [s.rank for s in schemes]
    if len(set(ranks)) != len(ranks):
        raise _fail(where, f"scheme ranks must be unique, got {ranks}")
    rng = None
    if data.get("scheme_range") is not None:
        r = _check_keys(data["scheme_range"], {"total_gy", "fractions", "note"}, f"{where}, scheme_range")
        rng = SchemeRange(_range(r.get("total_gy"), f"{where}, scheme_range.total_gy"),
                          _range(r.get("fractions"), f"{where}, scheme_range.fractions", integer=True),
                          str(r.get("note", "")))
    if not schemes and rng is None:
        raise _fail(where, "no allowed schemes: give 'schemes' or 'scheme_range'")

    conv = _check_keys(data.get("conversion") or {}, {"policy", "alpha_beta_gy", "note"}, f"{where}, conversion")
    try:
        policy = ConversionPolicy(str(conv.get("policy", "eqd2")))
    except ValueError:
        raise _fail(where, f"conversion.policy must be 'eqd2' or 'refuse', got {conv.get('policy')!r}") from None

    targets = _goal_list(data.get("targets"), f"{where}, targets", roles, conditions)
    cov = _check_keys(data.get("coverage") or {}, {"primary", "fallback", "fallback_requires"}, f"{where}, coverage")
    primary = _goal_list(cov.get("primary"), f"{where}, coverage.primary", roles, conditions,
                         {"priority": "coverage"})
    if not primary:
        raise _fail(where, "coverage.primary must give at least one coverage goal")
    fallback = _goal_list(cov.get("fallback"), f"{where}, coverage.fallback", roles, conditions,
                          {"priority": "coverage"}, fallback=True)
    req_tables = []
    for k, items in (cov.get("fallback_requires") or {}).items():
        n = _fraction_key(k, f"{where}, coverage.fallback_requires")
        goals = _goal_list(items, f"{where}, coverage.fallback_requires {k} fx", roles, conditions,
                           {"priority": "target_min"}, fallback=True)
        req_tables.append(LimitTable("coverage fallback", n, goals))
    if req_tables and not fallback:
        raise _fail(where, "coverage.fallback_requires given without coverage.fallback")

    tables: list[LimitTable] = []
    for i, t in enumerate(data.get("limits") or []):
        tables.extend(parse_limit_table(t, f"{where}, limits #{i + 1}", roles, conditions))

    proto = Protocol(
        name=name, title=str(data.get("title", name)), site=str(data.get("site", "")),
        sources=tuple(str(s) for s in (data.get("sources") or ())), roles=roles, schemes=schemes,
        scheme_range=rng, target_goals=targets, coverage_primary=primary, coverage_fallback=fallback,
        coverage_fallback_requires=tuple(req_tables), limit_tables=tuple(tables), conversion=policy,
        conversion_alpha_beta_gy=float(conv.get("alpha_beta_gy", 2.5)),
        tumour_alpha_beta_gy=float(data.get("tumour_alpha_beta_gy", 10.0)),
        ptv_margin_mm=_range(data["ptv_margin_mm"], f"{where}, ptv_margin_mm") if "ptv_margin_mm" in data else None,
        ctv_margin_mm=_range(data["ctv_margin_mm"], f"{where}, ctv_margin_mm") if "ctv_margin_mm" in data else None,
        prescription_role=rx_role, conditions=conditions,
        notes=tuple(str(n) for n in (data.get("notes") or ())), path=path)
    if proto.conversion is ConversionPolicy.EQD2:
        for s in schemes:  # every listed scheme must resolve: catches a broken table at load time
            proto.goals_for(s.scheme)
        if rng is not None:
            for n in range(rng.fractions[0], rng.fractions[1] + 1):
                proto.goals_for(Scheme(rng.total_gy[1], n))
    return proto

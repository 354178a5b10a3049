"""Matching a case's structures to protocol roles.

Names are first renamed with the user's ``--map OLD=NEW`` pairs, then
normalised through the TG-263 alias table (``case.names.normalize_name``).  A
role is filled by the structures whose normalised name equals one of the role's
names (case-insensitive) or starts with one of its prefixes.  PRVs are found by
the TG-263 convention ``<Organ>_PRV[margin]`` (also ``<Organ>PRV``,
``PRV_<Organ>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..case import Grid, Structure, StructureRole, subtract
from ..case.names import infer_role, normalize_name
from ..errors import InputError, StructureError
from ..protocols.model import ApplyTo, Goal, Protocol, RoleSpec


def parse_name_map(pairs) -> dict[str, str]:
    """``["OLD=NEW", ...]`` -> dict; raises InputError on a malformed pair."""
    out: dict[str, str] = {}
    for p in pairs or ():
        if "=" not in str(p):
            raise InputError(f"--map expects OLD=NEW, got {p!r}")
        old, new = (s.strip() for s in str(p).split("=", 1))
        if not old or not new:
            raise InputError(f"--map expects OLD=NEW with both names, got {p!r}")
        out[old] = new
    return out


def rename_structures(structures, name_map: dict[str, str] | None = None) -> dict[str, Structure]:
    """Structures keyed by their TG-263 name after applying ``name_map``.

    ``name_map`` keys may be either the original name or the already-normalised
    one (case-insensitive).  The role is re-inferred when a structure is renamed.
    """
    items = structures.structures if hasattr(structures, "structures") else structures
    nm = {k.lower(): v for k, v in (name_map or {}).items()}
    used: set[str] = set()
    out: dict[str, Structure] = {}
    for key, s in items.items():
        new = None
        for cand in (s.original_name or "", key, s.name):
            if cand and cand.lower() in nm:
                new = nm[cand.lower()]
                used.add(cand.lower())
                break
        if new is not None:
            name = normalize_name(new)
            s = s.copy(name=name, role=infer_role(name))
        else:
            name = normalize_name(s.name)
            if name != s.name:
                s = s.copy(name=name)
        if name in out:
            raise StructureError(f"two structures are named '{name}' after renaming "
                                 f"('{out[name].original_name}' and '{s.original_name}'); use --map to tell them apart")
        out[name] = s
    unknown = set(nm) - used
    if unknown:
        avail = ", ".join(sorted(s.original_name or k for k, s in items.items()))
        raise StructureError(f"--map names not found: {', '.join(sorted(unknown))} (structures: {avail})")
    return out


def combine(structures: list[Structure], name: str | None = None) -> Structure:
    """Union of disjoint parts (left + right kidney, several GTVs): occupancies add, clipped at 1."""
    if len(structures) == 1:
        return structures[0]
    g = structures[0].grid
    w = np.zeros(g.shape, np.float32)
    for s in structures:
        if not s.grid.same_as(g):
            raise StructureError(f"cannot combine '{s.name}': not on the grid of '{structures[0].name}'")
        w += s.weights
    np.clip(w, 0.0, 1.0, out=w)
    return Structure(name or "+".join(s.name for s in structures), g, w >= 0.5, structures[0].role, fraction=w,
                     original_name=name or "+".join(s.original_name or s.name for s in structures))


def _matches(spec: RoleSpec, name: str) -> bool:
    low = name.lower()
    if any(low == n.lower() for n in spec.names):
        return True
    return any(low.startswith(p.lower()) for p in spec.prefixes)


def _is_prv_name(name: str) -> bool:
    return "prv" in name.lower()


def find_prv(organ: Structure, structures: dict[str, Structure]) -> Structure | None:
    """The PRV of ``organ`` by TG-263 naming, or None."""
    base = organ.name.lower()
    for name, s in structures.items():
        low = name.lower()
        if (low.startswith(base + "_prv") or low.startswith(base + "prv") or low == "prv_" + base
                or low.startswith("prv_" + base)):
            return s
    return None


def goal_structures(goal: Goal, protocol: Protocol, match: "RoleMatch",
                    grid: Grid | None = None) -> tuple[list[Structure], list[str]]:
    """The structures a goal applies to, its PRV and ``minus`` applied, and notes on what was missing.

    The one resolution of a goal's structure: the evaluation scores the goal on these structures
    and the planner (``workflow.goals``) optimises it on the same ones.  ``minus`` removes the union
    of the named roles' structures with :func:`sbrtplan.case.subtract` (e.g. External minus GTV/ITV,
    the region of the hot-spot limit).  A ``body`` role without a structure is the whole ``grid``
    when one is given (none: no structure).
    """
    spec = protocol.roles[goal.structure]
    found = list(match.get(goal.structure))
    notes: list[str] = []
    if not found and spec.kind == "body" and grid is not None:
        found = [Structure("dose grid", grid, np.ones(grid.shape, bool), StructureRole.EXTERNAL)]
        notes.append("no External contour: the whole dose grid is used")
    if not found:
        return [], notes
    if goal.apply_to is ApplyTo.PRV:
        resolved = []
        for s in found:
            p = find_prv(s, match.structures)
            resolved.append(p if p is not None else s)
            if p is None:
                margin = f" (the standard asks for a {spec.prv_margin_mm:g} mm PRV)" if spec.prv_margin_mm else ""
                notes.append(f"no PRV structure for {s.name}: evaluated on the organ{margin}")
        found = resolved
    if goal.minus:
        parts = [p for key in goal.minus for p in match.get(key)]
        missing = [k for k in goal.minus if not match.get(k)]
        if missing and len(missing) == len(goal.minus):
            notes.append(f"no {'/'.join(missing)} structure: nothing subtracted")
        if parts:
            found = [subtract(s, parts, f"{s.name}-" + "-".join(p.name for p in parts), role=s.role)
                     for s in found]
    return found, notes


@dataclass
class RoleMatch:
    """Structures filling each role of a protocol (empty list: missing)."""

    structures: dict[str, Structure]
    roles: dict[str, list[Structure]]
    target: Structure | None
    notes: list[str] = field(default_factory=list)

    def get(self, role: str) -> list[Structure]:
        return self.roles.get(role, [])


def match_roles(protocol: Protocol, structures: dict[str, Structure], target: str | None = None) -> RoleMatch:
    """Fill every role of ``protocol`` from ``structures`` (already renamed).

    Parameters
    ----------
    target : str, optional
        Name of the prescription target (``--target``); required when several
        structures could be the PTV.
    """
    notes: list[str] = []
    roles: dict[str, list[Structure]] = {}
    rx_role = protocol.prescription_role
    for key, spec in protocol.roles.items():
        found = [s for n, s in structures.items() if _matches(spec, n) and not _is_prv_name(n)]
        if not found and spec.union_of:
            parts = [structures[n] for n in structures if any(n.lower() == u.lower() for u in spec.union_of)]
            if parts:
                found = [combine(parts, "+".join(p.name for p in parts))]
                notes.append(f"role '{key}': no {'/'.join(spec.names)} structure; using the union of "
                             f"{', '.join(p.name for p in parts)}")
        if key == rx_role:
            continue
        if len(found) > 1 and spec.multiple == "union":
            found = [combine(found)]
        roles[key] = found

    rx_spec = protocol.roles[rx_role]
    tgt: Structure | None = None
    if target is not None:
        key = target.lower()
        hits = [s for n, s in structures.items() if n.lower() == key or (s.original_name or "").lower() == key]
        if not hits:
            raise StructureError(f"target '{target}' not found; structures: {', '.join(structures)}")
        tgt = hits[0]
    else:
        # rings, walls and boolean helpers match target name patterns but are not targets (their role
        # comes from RTROIInterpretedType, or from the name when the type is empty)
        cands = [s for n, s in structures.items() if _matches(rx_spec, n) and not _is_prv_name(n)
                 and s.role.is_target]
        if not cands:  # no target-like name: a single structure typed PTV in the DICOM is the target
            cands = [s for s in structures.values() if s.role is StructureRole.PTV]
        if len(cands) > 1:
            raise StructureError(f"several structures could be the prescription target "
                                 f"({', '.join(s.name for s in cands)}); choose one with --target")
        tgt = cands[0] if cands else None
    roles[rx_role] = [tgt] if tgt is not None else []
    if tgt is not None and tgt.role is not StructureRole.PTV and tgt.role.is_target is False:
        notes.append(f"target '{tgt.name}' is not named like a PTV; evaluated as the prescription target")
    return RoleMatch(structures=structures, roles=roles, target=tgt, notes=notes)

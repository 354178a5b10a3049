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

from ..case import Structure, StructureRole
from ..case.names import infer_role, normalize_name
from ..errors import InputError, StructureError
from ..protocols.model import Protocol, RoleSpec


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


def subtract(base: Structure, parts: list[Structure], name: str) -> Structure:
    """``base`` minus the union of ``parts`` (occupancy ``max(w_base - max(w_parts), 0)``)."""
    w = base.weights.astype(np.float32, copy=True)
    if parts:
        cut = np.zeros_like(w)
        for p in parts:
            if not p.grid.same_as(base.grid):
                raise StructureError(f"cannot subtract '{p.name}' from '{base.name}': different grids")
            np.maximum(cut, p.weights, out=cut)
        w = np.clip(w - cut, 0.0, 1.0)
    return Structure(name, base.grid, w >= 0.5, base.role, fraction=w, original_name=name)


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

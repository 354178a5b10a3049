"""Planning structures a protocol asks for: PRVs, PTV!, hot-spot region and dose-fall-off rings.

The rules come from the bone-metastasis and liver SBRT standards (see the
protocol templates): a PRV for every organ role that carries ``prv_margin_mm``;
for the spine, PTV! = PTV minus the cord (or canal) PRV, optimised on while the
plan is approved on the full PTV; hot spots are only allowed inside the GTV/ITV,
so the optimiser needs "PTV minus GTV/ITV" and "body minus GTV/ITV"; and the
RTOG 0813/0915 gradient limits (R50%, D2cm) are driven by rings at fixed
distance bands from the PTV surface.

Every derived structure is added to the case (role PRV or CONTROL, TG-263
names with a ``z`` prefix for optimisation-only structures) so that it is
exported with the RTSTRUCT and can be inspected by the physicist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._log import get_logger
from ..case import Case, Structure, StructureRole, intersect, prv, ptv_minus, ring, subtract, union
from ..errors import StructureError
from ..evaluation import split_by_nearest_target
from ..evaluation.matching import RoleMatch, find_prv, match_roles
from ..protocols import Protocol
from .targets import restricted, target_structures

log = get_logger(__name__)

#: Distance bands (mm from the PTV surface) of the automatic rings.  The inner
#: ring shapes the prescription isodose (CI), the middle one holds the 50 %
#: isodose close to the target (R50%), and everything beyond 20 mm is the
#: D2cm region of the RTOG table.
RING_BANDS_MM: tuple[tuple[float, float], ...] = ((0.0, 5.0), (5.0, 20.0), (20.0, 300.0))


@dataclass
class PlanningStructures:
    """Structures the optimiser works on, all on the case grid.

    Attributes
    ----------
    target : Structure
        The prescription target (the full PTV: coverage is approved on it).
    optimization_target : Structure
        PTV! when the PTV overlaps the cord/canal PRV, else the PTV.
    boost : Structure or None
        GTV/ITV (union) where hot spots are allowed.
    hotspot_free : Structure
        Body minus GTV/ITV: where the hot-spot limit (e.g. 110 % Rx) applies.
    rings : list of Structure
        Rings at :data:`RING_BANDS_MM` from the PTV, inside the body.
    match : RoleMatch
        Protocol role -> structures (PRVs included in ``match.structures``).
    derived : list of str
        Names of the structures this step added to the case.
    parts : list of PlanningStructures
        A plan of several targets (:mod:`~sbrtplan.workflow.targets`): each target's structures
        (``target`` is then the union of the targets); empty for one target.
    rx_gy : float or None
        A part's prescription (total Gy); None for a single-target plan (the scheme's).
    share : bool array or None
        A part's voxels (nearest-target rule); None: every voxel.
    falloff_mask : bool array or None
        Where a part's fall-off goals apply: its share outside every target; None: outside the target.
    """

    target: Structure
    optimization_target: Structure
    boost: Structure | None
    hotspot_free: Structure
    rings: list[Structure]
    match: RoleMatch
    derived: list[str] = field(default_factory=list)
    parts: list["PlanningStructures"] = field(default_factory=list)
    rx_gy: float | None = None
    share: np.ndarray | None = field(default=None, repr=False)
    falloff_mask: np.ndarray | None = field(default=None, repr=False)
    #: the protocol of a plan of several targets (which goals are per target)
    protocol: Protocol | None = field(default=None, repr=False)


def build_planning_structures(case: Case, protocol: Protocol, target: str | None = None,
                              targets=None) -> PlanningStructures:
    """Add the protocol's planning structures to ``case`` (in place) and return them.

    Parameters
    ----------
    case : Case
        Case on the dose grid (margins are computed in true mm on its grid).
    protocol : Protocol
    target : str, optional
        Name of the prescription target when several PTVs exist.
    targets : sequence of TargetPrescription, optional
        Several targets with their prescriptions, highest dose first (``workflow.targets``):
        each target's structures restricted to its share, in ``parts``.

    Returns
    -------
    PlanningStructures
    """
    if targets is not None and len(targets) > 1:
        return build_target_structures(case, protocol, targets)
    derived: list[str] = []
    match = match_roles(protocol, case.structures, target=target)
    if match.target is None:
        raise StructureError(f"case '{case.name}': no prescription target for protocol '{protocol.name}' "
                             f"(expected a structure named like {protocol.roles[protocol.prescription_role].prefixes}"
                             f"); structures: {', '.join(case.structures)}")
    ptv = match.target
    body = case.body

    # PRVs the standard asks for, unless contoured already.
    for key, spec in protocol.roles.items():
        if spec.prv_margin_mm is None:
            continue
        for organ in match.get(key):
            if find_prv(organ, case.structures) is not None or not organ.mask.any():
                continue
            p = prv(organ, spec.prv_margin_mm)
            case.add_structure(p, replace=True)
            derived.append(p.name)

    # PTV! (spine): PTV minus the cord PRV, or the canal PRV when there is no cord.
    opt_target = ptv
    for key in ("cord", "canal", "cauda"):
        organs = match.get(key) if key in protocol.roles else []
        prvs = [find_prv(o, case.structures) for o in organs]
        prvs = [p for p in prvs if p is not None and (p.mask & ptv.mask).any()]
        if prvs:
            avoid = prvs[0] if len(prvs) == 1 else union(*prvs, name="zAvoid", role=StructureRole.CONTROL)
            opt_target = ptv_minus(ptv, avoid, name=f"{ptv.name}!")
            case.add_structure(opt_target, replace=True)
            derived.append(opt_target.name)
            log.info("%s overlaps %s: optimising on %s (%.1f of %.1f cc)", ptv.name, avoid.name,
                     opt_target.name, opt_target.volume_cc, ptv.volume_cc)
            break

    # GTV/ITV: the only place hot spots may sit, and only the part inside the planned PTV: a role
    # matches every lesion's GTV/ITV, and another lesion's is no place for this plan's hot spot (with
    # it, a plan of one of two lung lesions put its dose on the other one).
    boosts = [s for key in ("itv", "gtv") if key in protocol.roles for s in match.get(key)
              if (s.mask & ptv.mask).any()]
    boost = None
    if boosts:
        boost = boosts[0] if len(boosts) == 1 else union(*boosts, name="zBoost", role=StructureRole.CONTROL)
        if (boost.mask & ~ptv.mask).any():
            boost = intersect(boost, ptv, name="zBoost", role=StructureRole.CONTROL)
    outer = body if body is not None else Structure("zGrid", case.grid, np.ones(case.grid.shape, bool),
                                                   StructureRole.CONTROL)
    hot_free = subtract(outer, boost, name="zNoHotspot") if boost is not None else outer.copy(name="zNoHotspot")
    hot_free.role = StructureRole.CONTROL
    case.add_structure(hot_free, replace=True)
    derived.append(hot_free.name)

    rings = []
    for inner, outer_mm in RING_BANDS_MM:
        r = ring(ptv, inner, outer_mm, within=body)
        if r.mask.any():
            case.add_structure(r, replace=True)
            derived.append(r.name)
            rings.append(r)
    # Structures added above become visible to role matching (PRVs).
    match = match_roles(protocol, case.structures, target=ptv.name)
    return PlanningStructures(target=ptv, optimization_target=opt_target, boost=boost, hotspot_free=hot_free,
                              rings=rings, match=match, derived=derived)


def build_target_structures(case: Case, protocol: Protocol, targets) -> PlanningStructures:
    """Planning structures of every target, each restricted to its share (see the module docstring).

    ``targets``: TargetPrescription, highest dose first (:func:`plan_scheme`).  Returns the plan's
    :class:`PlanningStructures`: ``target`` is the union of the
    targets (beam placement, optimisation voxels), ``parts`` one per target.
    """
    structs = target_structures(case.structures, targets)
    parts = [build_planning_structures(case, protocol, s.name) for s in structs]
    owner = split_by_nearest_target([p.target for p in parts])
    # a voxel inside targets belongs to the highest dose level containing it (a boost inside its PTV:
    # the nearest-surface rule would give the boost's interior to the larger PTV); outside every
    # target, and for disjoint targets, the rule is the evaluation's
    for i in reversed(range(len(parts))):
        owner[parts[i].target.mask] = i
    in_any = np.logical_or.reduce([p.target.mask for p in parts])
    boosts = [p.boost for p in parts if p.boost is not None]
    body = case.body
    outer = body.mask if body is not None else np.ones(case.grid.shape, bool)
    hot_free_mask = outer & ~np.logical_or.reduce([b.mask for b in boosts]) if boosts else outer.copy()
    derived: list[str] = []
    for i, (p, t) in enumerate(zip(parts, targets)):
        share = owner == i
        p.rx_gy = t.dose_gy
        p.share = share
        p.falloff_mask = share & ~in_any
        rings = []
        for r in p.rings:
            rr = restricted(r, p.falloff_mask)
            if rr.mask.any():
                case.add_structure(rr, replace=True)
                rings.append(rr)
        p.rings = rings
        others = in_any & ~p.target.mask
        hf = Structure(f"zNoHotspot_{p.target.name}", case.grid, hot_free_mask & share & ~others,
                       StructureRole.CONTROL)
        case.add_structure(hf, replace=True)
        p.hotspot_free = hf
        derived += [d for d in p.derived if d not in derived and d in case.structures] + [hf.name]
    hot_free = Structure("zNoHotspot", case.grid, hot_free_mask, StructureRole.CONTROL)
    case.add_structure(hot_free, replace=True)
    target = union(*[p.target for p in parts], name="zTargets", role=StructureRole.CONTROL)
    opt = union(*[p.optimization_target for p in parts], name="zTargets!", role=StructureRole.CONTROL)
    boost = (boosts[0] if len(boosts) == 1 else union(*boosts, name="zBoosts", role=StructureRole.CONTROL)) \
        if boosts else None
    overlap = [(a.target.name, b.target.name) for k, a in enumerate(parts) for b in parts[k + 1:]
               if (a.target.mask & b.target.mask).any()]
    if overlap:
        log.info("overlapping targets (integrated boost): %s", ", ".join(f"{a} and {b}" for a, b in overlap))
    log.info("%d targets: %s", len(parts), ", ".join(f"{p.target.name} {p.rx_gy:g} Gy ({p.target.volume_cc:.1f} cc)"
                                                     for p in parts))
    return PlanningStructures(target=target, optimization_target=opt, boost=boost, hotspot_free=hot_free,
                              rings=[r for p in parts for r in p.rings], match=parts[0].match,
                              derived=derived + ["zNoHotspot"], parts=parts, protocol=protocol)

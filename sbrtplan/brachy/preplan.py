"""Pre-plan of a permanent seed implant: template candidates, TG-43 dose matrix, loading optimisation,
seed strength, final dose and goals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .._log import Timings, get_logger, timed
from ..case import Case, Dose, Structure
from ..errors import InputError, OptimizationError
from .dosimetry import GoalOutcome, all_passed, evaluate_goals, organ_metrics, target_metrics
from .geometry import (Candidates, avoided_structures, crop_structure, dose_box, find_target, placement_masks,
                       template_candidates)
from .optimise import Problem, conflicts_of, optimise_loading
from .protocol import SeedProtocol
from .source import SourceData, load_source
from .tg43 import SeedSet, SourceGeometry, Tg43Model

log = get_logger(__name__)

# Apparent activity per air-kerma strength (U per mCi) for converting a strength into the unit
# vendors still quote (TG-43 conversion factors): I-125 1.270 U/mCi, Pd-103 1.293 U/mCi.
U_PER_MCI = {"I-125": 1.270, "Pd-103": 1.293}
DOSE_MARGIN_MM = 15.0  # dose grid = target bounding box + this (covers the organs' high-dose regions)


@dataclass
class PrePlan:
    case: Case
    protocol: SeedProtocol
    source: SourceData
    target: Structure
    seeds: SeedSet
    needle_of_seed: np.ndarray        # index into needle_labels
    needle_labels: list[str]
    needle_xy_mm: np.ndarray
    strength_u: float
    dose: Dose
    structures: dict[str, Structure]  # on the dose grid
    goals: list[GoalOutcome]
    metrics: dict
    timings: Timings = field(default_factory=Timings)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_needles(self) -> int:
        return int(len(np.unique(self.needle_of_seed)))


def _sample(mask: np.ndarray, step: int) -> np.ndarray:
    sub = np.zeros_like(mask)
    sub[::step, ::step, ::step] = mask[::step, ::step, ::step]
    if not sub.any():
        sub = mask
    return np.flatnonzero(sub.ravel())


def _quick_goals(d_rel: np.ndarray, groups_idx: dict, voxel_cc: float, step: int) -> dict:
    """Sample estimates of the goal metrics (doses in prescription units) for choosing the strength."""
    t = d_rel[groups_idx["target"]]
    out = {"D90": 100 * np.percentile(t, 10), "V100": 100 * np.mean(t >= 1.0), "V150": 100 * np.mean(t >= 1.5)}
    for name, idx in groups_idx.items():
        if name == "target" or len(idx) == 0:
            continue
        x = np.sort(d_rel[idx])[::-1]
        out[f"{name}.D10"] = 100 * np.percentile(x, 90)
        n2 = int(round(2.0 / (voxel_cc * step ** 3)))
        out[f"{name}.D2cc"] = 100 * x[min(n2, len(x) - 1)]
    return out


def _quick_pass(q: dict, protocol: SeedProtocol, margin_pct: float = 1.0) -> bool:
    from .protocol import goal_passes

    for g in protocol.goals:
        key = g.metric if g.structure == "target" else f"{g.structure}.{g.metric}"
        if key not in q:
            continue
        v = q[key]
        # a little margin in the direction of the goal, as the sample estimate is not the DVH
        v = v - margin_pct if g.comparator in (">=", ">") else v + margin_pct
        if not goal_passes(g, v):
            return False
    return True


def run_preplan(case: Case, protocol: SeedProtocol, *, source: SourceData | str | None = None,
                target_name: str | None = None, geometry: SourceGeometry | str = SourceGeometry.LINE,
                progress=None, timings: Timings | None = None) -> PrePlan:
    """Plan the seed loading of ``case`` with ``protocol`` (its prescription must be set).

    Raises
    ------
    ProtocolError, StructureError, InputError
        Missing prescription or target, no feasible template position, source isotope not that of
        the protocol.
    """
    timings = Timings() if timings is None else timings
    t0 = time.perf_counter()
    protocol = protocol.with_prescription(None)
    rx = float(protocol.prescription_gy)
    src = load_source(source or protocol.default_source) if not isinstance(source, SourceData) else source
    if protocol.isotope and src.isotope != protocol.isotope:
        raise InputError(f"seed source '{src.model}' is {src.isotope} but protocol '{protocol.name}' is "
                         f"for {protocol.isotope}")
    model = Tg43Model(src, geometry)
    target = find_target(case, protocol, target_name)
    opt = protocol.optimiser
    with timed("seed pre-plan: placement region and template", log, timings):
        region, blocked = placement_masks(case, protocol, target)
        cands: Candidates = template_candidates(case, target, region, blocked, protocol.template)
    log.info("template: %d needles (%d blocked), %d candidate positions", len(cands.needle_labels),
             cands.n_blocked_needles, len(cands.positions_mm))
    grid, sl = dose_box(case, target, DOSE_MARGIN_MM)
    organs = [s for s, _ in avoided_structures(case, protocol, target)]
    for name in opt.get("oar_aims", {}):
        if case.has(name) and all(o.name != name for o in organs):
            organs.append(case.structure(name))
    structures = {s.name: crop_structure(s, grid, sl) for s in [target, *organs]}
    step = int(opt.get("sample_step_vox", 2))
    with timed("seed pre-plan: TG-43 dose matrix", log, timings):
        idx_t = _sample(structures[target.name].mask, step)
        groups_idx = {"target": idx_t}
        oar_aims = dict(opt.get("oar_aims", {}))
        oar_list = []
        for name, spec in oar_aims.items():
            names = [o.name for o in organs if o.role.value == "OAR"] if name == "@OAR" else [name]
            for n in names:
                if n in structures and structures[n].mask.any():
                    oar_list.append((n, float(spec["aim"]), float(spec["weight"])))
                    groups_idx[n] = _sample(structures[n].mask, step)
        all_idx = np.unique(np.concatenate(list(groups_idx.values())))
        pos = {v: i for i, v in enumerate(all_idx)}
        local = {k: np.array([pos[v] for v in idx], int) for k, idx in groups_idx.items()}
        pts = grid.voxel_centers_mm(all_idx)
        a_unit = model.unit_dose_matrix_gy(pts, cands.positions_mm, cands.direction)  # Gy per U
    conflicts = conflicts_of(cands.needle, cands.depth_mm, protocol.template.min_seed_separation_mm)
    best = None
    with timed("seed pre-plan: loading optimisation", log, timings):
        for i, s_u in enumerate(protocol.strength_u_choices):
            a_rel = (a_unit * np.float32(s_u / rx))
            groups = [(local["target"], "cold", float(opt.get("coverage_aim", 1.08)), float(opt.get("w_cold", 1.0)),
                       None),
                      (local["target"], "hot", float(opt.get("hot_aim", 1.4)), float(opt.get("w_hot", 0.04)),
                       float(opt.get("hot_cap", 0.5)))]
            groups += [(local[n], "over", aim, w, None) for n, aim, w in oar_list]
            prob = Problem(a_rel=a_rel, groups=groups, needle=cands.needle, conflicts=conflicts,
                           needle_cost=float(opt.get("needle_cost", 0.002)), seed_cost=float(opt.get("seed_cost", 5e-4)))
            loaded = optimise_loading(prob, sweeps=0)
            d_rel = a_rel[:, loaded].sum(axis=1, dtype=np.float64)
            q = _quick_goals(d_rel, local, grid.voxel_volume_cc, step)
            ok = _quick_pass(q, protocol)
            n = int(loaded.sum())
            log.info("strength %.2f U: %d seeds, %d needles, sample D90 %.1f%% V100 %.1f%% V150 %.1f%% -> %s", s_u, n,
                     len(np.unique(cands.needle[loaded])), q["D90"], q["V100"], q["V150"], "pass" if ok else "fail")
            # among passing loadings the fewest seeds wins (fewer needles, then the lower strength, on ties)
            key = (0 if ok else 1, n if ok else -q["V100"], len(np.unique(cands.needle[loaded])))
            if best is None or key < best[0]:
                best = (key, s_u, loaded, prob)
            if progress:
                progress(f"strength {s_u:g} U", i + 1, len(protocol.strength_u_choices))
    if best is None or not best[2].any():
        raise OptimizationError(f"seed pre-plan of '{case.name}': no seed could be placed")
    _, s_u, loaded, prob = best
    with timed("seed pre-plan: swap refinement", log, timings):
        loaded = optimise_loading(prob, sweeps=int(opt.get("swap_sweeps", 2)), initial=loaded)
    seeds = SeedSet(cands.positions_mm[loaded], cands.direction, s_u)
    check_loading(case, protocol, target, seeds.positions_mm)
    needles_used = cands.needle[loaded]
    with timed("seed pre-plan: final TG-43 dose (1 mm grid)", log, timings):
        dose = Dose(grid=grid, dose_gy=model.dose_grid_gy(grid, seeds), description=f"seed pre-plan {protocol.name}")
    with timed("seed pre-plan: goals", log, timings):
        goals = evaluate_goals(dose, structures, structures[target.name], protocol)
        metrics = {"target": target_metrics(dose, structures[target.name], rx),
                   "organs": [organ_metrics(dose, structures[o.name], rx) for o in organs]}
    log.info("seed pre-plan of %s: %.1f s", case.name, time.perf_counter() - t0)
    if not all_passed(goals):
        log.warning("seed pre-plan '%s': goals failed: %s", case.name,
                    ", ".join(g.label for g in goals if g.passed is False))
    return PrePlan(case=case, protocol=protocol, source=src, target=target, seeds=seeds, needle_of_seed=needles_used,
                   needle_labels=cands.needle_labels, needle_xy_mm=cands.needle_xy_mm, strength_u=float(s_u),
                   dose=dose, structures=structures, goals=goals, metrics=metrics, timings=timings)


def check_loading(case: Case, protocol: SeedProtocol, target: Structure, positions_mm: np.ndarray) -> None:
    """Refuse a loading with a seed inside an avoided organ (grown by its margin) or outside the target
    plus the placement margin: a one-line :class:`InputError` naming the seed and the organ."""
    from ..case import expand

    pos = np.asarray(positions_mm, float).reshape(-1, 3)
    idx = np.rint(case.grid.index_from_patient(pos)).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(case.grid.shape)), axis=1)
    for s, margin in avoided_structures(case, protocol, target):
        m = expand(s, margin).mask if margin > 0 else s.mask
        hit = np.flatnonzero(inside & m[tuple(np.clip(idx, 0, np.array(case.grid.shape) - 1).T)])
        if len(hit):
            p = pos[hit[0]]
            raise InputError(f"seed {hit[0] + 1} at ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm lies in '{s.name}' "
                             f"(+{margin:g} mm), where protocol '{protocol.name}' allows no seed")
    region = expand(target, protocol.placement_margin_mm).mask if protocol.placement_margin_mm > 0 else target.mask
    out = np.flatnonzero(~inside | ~region[tuple(np.clip(idx, 0, np.array(case.grid.shape) - 1).T)])
    if len(out):
        p = pos[out[0]]
        raise InputError(f"seed {out[0] + 1} at ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm lies outside "
                         f"'{target.name}' + {protocol.placement_margin_mm:g} mm")


def activity_mci(strength_u: float, isotope: str) -> float | None:
    """Apparent activity (mCi) of a seed of ``strength_u`` (for vendor order forms)."""
    k = U_PER_MCI.get(isotope)
    return None if k is None else strength_u / k

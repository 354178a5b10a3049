"""Implant geometry on the case: target and placement region, dose grid, needle template candidates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..case import Case, Grid, Structure, StructureRole, expand
from ..errors import StructureError
from .protocol import SeedProtocol, Template


def find_target(case: Case, protocol: SeedProtocol, name: str | None = None) -> Structure:
    """The planning target: ``name`` or the first of the protocol's target names the case has."""
    names = (name,) if name else protocol.target_names
    for n in names:
        if case.has(n) and not case.structure(n).is_empty:
            return case.structure(n)
    raise StructureError(f"case '{case.name}': no target structure among {', '.join(names)} "
                         f"(structures: {', '.join(case.structures)})")


def avoided_structures(case: Case, protocol: SeedProtocol, target: Structure) -> list[tuple[Structure, float]]:
    """(structure, margin_mm) of every organ no seed may enter, as the protocol names them."""
    out = []
    for entry in protocol.avoid:
        margin = float(entry.get("margin_mm", 0.0))
        if "role" in entry:
            role = StructureRole(str(entry["role"]))
            out += [(s, margin) for s in case.by_role(role) if s.name != target.name and not s.is_empty]
        elif case.has(str(entry.get("structure", ""))):
            s = case.structure(str(entry["structure"]))
            if not s.is_empty:
                out.append((s, margin))
    return out


def crop_grid(grid: Grid, lo_zyx, hi_zyx) -> tuple[Grid, tuple[slice, ...]]:
    """The sub-grid of voxels ``lo_zyx`` .. ``hi_zyx`` (exclusive) and the slices it covers."""
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo_zyx, hi_zyx))
    origin = grid.patient_from_index(np.array([[s.start for s in sl]], float))[0]
    shape = tuple(s.stop - s.start for s in sl)
    return Grid(shape, grid.spacing_mm, tuple(float(v) for v in origin), grid.direction), sl


def crop_structure(s: Structure, grid: Grid, sl: tuple[slice, ...]) -> Structure:
    return Structure(name=s.name, grid=grid, mask=s.mask[sl].copy(), role=s.role,
                     fraction=None if s.fraction is None else s.fraction[sl].copy(), original_name=s.original_name,
                     color_rgb=s.color_rgb)


def dose_box(case: Case, target: Structure, margin_mm: float) -> tuple[Grid, tuple[slice, ...]]:
    """The dose grid: the case grid cropped to the target's bounding box grown by ``margin_mm``."""
    lo, hi = target.bounding_box()
    pad = np.ceil(margin_mm / np.asarray(case.grid.spacing_zyx_mm)).astype(int)
    lo = np.maximum(np.asarray(lo) - pad, 0)
    hi = np.minimum(np.asarray(hi) + pad + 1, case.grid.shape)
    return crop_grid(case.grid, lo, hi)


@dataclass
class Candidates:
    """Candidate seed positions on template needles."""

    positions_mm: np.ndarray      # (M, 3)
    needle: np.ndarray            # (M,) needle index
    depth_mm: np.ndarray          # (M,) position along the needle from the template plane
    needle_xy_mm: np.ndarray      # (K, 2) template coordinates of each needle
    needle_labels: list[str]      # template hole names (column letter + row number)
    direction: np.ndarray         # (3,) insertion direction
    n_blocked_needles: int


def _basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - v * (helper @ v)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(v, e1)


def _lookup(mask: np.ndarray, grid: Grid, pts: np.ndarray) -> np.ndarray:
    idx = np.rint(grid.index_from_patient(pts)).astype(int)  # (N, 3) in (k, j, i)? see below
    shape = np.array(grid.shape)
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    out = np.zeros(len(pts), bool)
    out[inside] = mask[idx[inside, 0], idx[inside, 1], idx[inside, 2]]
    return out


def template_candidates(case: Case, target: Structure, region: np.ndarray, blocked: np.ndarray,
                        template: Template) -> Candidates:
    """Seed positions on a grid of parallel needles (``template``) inside the placement ``region``;
    needles whose path from the template plane to their deepest position crosses ``blocked`` are dropped."""
    v = np.asarray(template.insertion_direction, float)
    e1, e2 = _basis(v)
    c = target.centroid_mm()
    g = case.grid
    corners = np.array([[i, j, k] for i in (0, g.nz - 1) for j in (0, g.ny - 1) for k in (0, g.nx - 1)], float)
    pts = g.patient_from_index(corners) - c
    lo_t, hi_t = (pts @ np.column_stack([e1, e2, v])).min(axis=0), (pts @ np.column_stack([e1, e2, v])).max(axis=0)
    tlo, thi = target.bounding_box()
    tb = g.patient_from_index(np.array([[a, b, d] for a in (tlo[0], thi[0]) for b in (tlo[1], thi[1])
                                        for d in (tlo[2], thi[2])], float)) - c
    proj = tb @ np.column_stack([e1, e2, v])
    h = template.needle_spacing_mm
    reach = np.abs(proj).max(axis=0) + 10.0
    us = np.arange(-np.ceil(reach[0] / h), np.ceil(reach[0] / h) + 1) * h
    ws = np.arange(-np.ceil(reach[1] / h), np.ceil(reach[1] / h) + 1) * h
    step = template.seed_step_mm
    depth = np.arange(np.floor(proj[:, 2].min() / step) - 2, np.ceil(proj[:, 2].max() / step) + 3) * step
    path = np.arange(lo_t[2], depth.max() + 0.5, min(g.spacing_mm) * 0.5)
    positions, needle, depths, labels, xy = [], [], [], [], []
    n_blocked = 0
    for iu, u in enumerate(us):
        for iw, w in enumerate(ws):
            base = c + u * e1 + w * e2
            cand = base[None, :] + depth[:, None] * v[None, :]
            ok = _lookup(region, g, cand)
            if not ok.any():
                continue
            deepest = depth[ok].max()
            track = base[None, :] + path[path <= deepest][:, None] * v[None, :]
            if _lookup(blocked, g, track).any():
                n_blocked += 1
                continue
            k = len(xy)
            xy.append((u, w))
            labels.append(f"{chr(ord('A') + iu % 26)}{iw + 1}")
            positions.append(cand[ok])
            needle.append(np.full(int(ok.sum()), k))
            depths.append(depth[ok] - lo_t[2])
    if not positions:
        raise StructureError(f"case '{case.name}': no template position lies inside the placement region of "
                             f"'{target.name}' outside the avoided organs")
    return Candidates(positions_mm=np.concatenate(positions), needle=np.concatenate(needle),
                      depth_mm=np.concatenate(depths), needle_xy_mm=np.array(xy, float), needle_labels=labels,
                      direction=v, n_blocked_needles=n_blocked)


def placement_masks(case: Case, protocol: SeedProtocol, target: Structure) -> tuple[np.ndarray, np.ndarray]:
    """(region where seeds may lie, region no needle may cross) on the case grid."""
    region = expand(target, protocol.placement_margin_mm).mask.copy() if protocol.placement_margin_mm > 0 \
        else target.mask.copy()
    blocked = np.zeros(case.grid.shape, bool)
    for s, margin in avoided_structures(case, protocol, target):
        grown = expand(s, margin).mask if margin > 0 else s.mask
        region &= ~grown
        if s.name in protocol.block_needles:
            blocked |= grown
    return region, blocked


__all__ = ["find_target", "avoided_structures", "crop_grid", "crop_structure", "dose_box", "Candidates",
           "template_candidates", "placement_masks"]

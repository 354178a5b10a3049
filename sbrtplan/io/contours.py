"""Planar contours of a structure slice: outlines at the 0.5 level and their area match.

:func:`mask_contours` traces the closed outlines of a 2-D mask or sub-voxel occupancy map at the
0.5 iso-line (marching squares, holes as separate outlines); :func:`match_area` moves the
outlines of one slice along their normals so that the area they enclose is the slice's area.
``io.rtexport.write_rtstruct`` writes RTSTRUCT contours with them.
"""

from __future__ import annotations

import numpy as np


def _drop_collinear(poly: np.ndarray) -> np.ndarray:
    """Remove vertices on straight runs of a closed polygon (marching squares emits one per voxel edge)."""
    if poly.shape[0] <= 4:
        return poly
    prev = np.roll(poly, 1, axis=0)
    nxt = np.roll(poly, -1, axis=0)
    cross = (poly[:, 0] - prev[:, 0]) * (nxt[:, 1] - poly[:, 1]) - (poly[:, 1] - prev[:, 1]) * (nxt[:, 0] - poly[:, 0])
    keep = np.abs(cross) > 1e-9
    return poly[keep] if keep.sum() >= 3 else poly


def mask_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2-D mask or occupancy map at the 0.5 level, in (column i, row j) index units.

    ``mask2d`` is a boolean mask or a sub-voxel occupancy in [0, 1] sampled at
    the voxel centres; the outline is the 0.5 iso-line of its bilinear
    interpolation (marching squares).  For a mask it runs half-way between
    voxel centres inside and outside; for an occupancy it crosses a boundary
    voxel where the box-filtered indicator passes 0.5, i.e. close to the true
    edge, so the polygon area keeps the structure's partial-volume area.
    Outer boundaries and hole boundaries come out as separate polygons (the
    even-odd rule rebuilds the region).  Each polygon lists its vertices once
    (not repeating the first) and has collinear vertices removed.
    """
    import contourpy

    a = np.asarray(mask2d)
    m = a >= 0.5 if a.dtype != bool else a
    if not m.any():
        return []
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    # crop to the bounding box of the >= 0.5 region grown by one voxel (whose values below 0.5 place
    # the crossings of the edge cells), then pad with zeros so every outline closes
    ny, nx = a.shape
    j0, j1 = max(rows[0] - 1, 0), min(rows[-1] + 1, ny - 1)
    i0, i1 = max(cols[0] - 1, 0), min(cols[-1] + 1, nx - 1)
    sub = np.zeros((j1 - j0 + 3, i1 - i0 + 3), dtype=np.float64)
    sub[1:-1, 1:-1] = np.clip(a[j0:j1 + 1, i0:i1 + 1].astype(np.float64), 0.0, 1.0)
    gen = contourpy.contour_generator(z=sub, line_type=contourpy.LineType.Separate, corner_mask=False)
    out = []
    # an occupancy plateau of exactly 0.5 (a slice half covered along the slice axis) belongs to the region
    for line in gen.lines(0.5 if a.dtype == bool else 0.5 - 1e-6):
        pts = np.asarray(line, float)
        if pts.shape[0] > 1 and np.allclose(pts[0], pts[-1]):
            pts = pts[:-1]
        if pts.shape[0] < 3:
            continue
        pts = pts + np.array([i0 - 1, j0 - 1], float)
        pts = _drop_collinear(pts)
        # a level line through a single occupancy value of exactly 0.5 can degenerate
        x, y = pts[:, 0], pts[:, 1]
        if abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) < 1e-9:
            continue
        out.append(pts)
    return out


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _inside(px: float, py: float, poly: np.ndarray) -> bool:
    """Even-odd (crossing number) test of one point against a closed polygon."""
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (px < xint)) % 2)


# Largest normal shift of an outline in voxels when matching the area.  The 0.5 level of an in-plane
# box-filtered indicator lies within half a voxel of the true edge; a slice only partly covered along the
# slice axis (the end of a structure) needs its outline shrunk further, to its coverage times its area.
_MAX_SHIFT_VOXELS = 2.0


def match_area(polys: list[np.ndarray], area: float, iterations: int = 8) -> list[np.ndarray]:
    """Shift the outlines of one plane along their normals so that the region they bound (even-odd
    rule, in index units) has area ``area``.

    The 0.5 level of a sub-voxel occupancy follows a straight edge exactly but cuts corners and
    thin parts (its bilinear interpolation between voxel centres rounds a 10 mm cord on a 3 mm
    grid to 12 % less area); a uniform normal shift of at most half a voxel (outer outlines
    outwards, holes inwards for a positive shift) restores the slice's occupancy area, so the
    contoured volume equals the structure's volume.  Vertices move along the miter of their two
    edges (capped at twice the shift at sharp corners); an outline that collapses is dropped.
    """
    if not polys or area <= 0.0:
        return polys
    # outer outlines (+1) and holes (-1): a hole lies inside an odd number of the other outlines
    sign = []
    for a, p in enumerate(polys):
        depth = sum(_inside(p[0, 0], p[0, 1], q) for b, q in enumerate(polys) if b != a)
        sign.append(-1.0 if depth % 2 else 1.0)
    normals = []
    for p in polys:
        # outward unit normal of every edge (from its orientation), then the miter at every vertex
        e = np.roll(p, -1, axis=0) - p
        length = np.hypot(e[:, 0], e[:, 1])
        length[length == 0.0] = 1.0
        orient = 1.0 if _signed_area(p) > 0 else -1.0
        n_edge = orient * np.column_stack([e[:, 1], -e[:, 0]]) / length[:, None]
        n_prev = np.roll(n_edge, 1, axis=0)
        miter = n_prev + n_edge
        cos = np.clip(np.sum(n_prev * n_edge, axis=1), -1.0, 1.0)
        miter = miter / (1.0 + cos)[:, None].clip(min=0.5)  # capped at 2 (corners sharper than 90 deg)
        normals.append(miter)

    def region(d: float) -> tuple[float, float, list[np.ndarray]]:
        moved = [p + (s * d) * n for p, s, n in zip(polys, sign, normals)]
        total, perimeter = 0.0, 0.0
        for p0, p, s in zip(polys, moved, sign):
            a0, a = _signed_area(p0), _signed_area(p)
            if a * a0 > 0:  # collapsed outlines (orientation flipped) no longer count
                total += s * abs(a)
                perimeter += float(np.hypot(*(np.roll(p, -1, axis=0) - p).T).sum())
        return total, perimeter, moved

    d = 0.0
    for _ in range(iterations):
        total, perimeter, _moved = region(d)
        if perimeter <= 0.0 or abs(total - area) <= 1e-6 * area:
            break
        d = float(np.clip(d + (area - total) / perimeter, -_MAX_SHIFT_VOXELS, _MAX_SHIFT_VOXELS))
    _total, _perimeter, moved = region(d)
    return [p for p0, p in zip(polys, moved) if _signed_area(p) * _signed_area(p0) > 0
            and abs(_signed_area(p)) > 1e-6]

"""Building blocks of the analytic phantoms: shapes, a rasteriser and identifiers.

Shapes are indicator functions of patient coordinates (mm, LPS) with a
bounding box, combined with ``|`` (union), ``&`` (intersection) and ``-``
(difference).  The :class:`Canvas` evaluates them only inside their box, on
voxel centres (the mask) and on 2 x 2 x 2 sub-points per voxel (the sub-voxel
``fraction``), so small organs such as the cord keep their analytic volume on a
2 mm grid.  Targets that are built with margins use a local grid twice as fine
(:meth:`Canvas.fine_grid`), where the planning-structure operations of
:mod:`sbrtplan.case` are accurate to a fraction of a percent, and are then
averaged back onto the phantom grid (``fraction``; ``mask = fraction >= 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pydicom.uid

from ..case import DensityCalibration, Grid, PatientInfo, Structure, StructureRole

Fn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Shape:
    """Indicator ``fn(x, y, z) -> bool`` that is False outside the box
    ``[lo_mm, hi_mm]``.

    ``x``, ``y``, ``z`` are open coordinate arrays of shapes (1, 1, nx),
    (1, ny, 1) and (nz, 1, 1), each in ascending order; the result broadcasts
    to (nz, ny, nx).  Unions and differences evaluate each operand only inside
    its own box, so a union of many small parts stays cheap.
    """

    fn: Fn
    lo_mm: tuple[float, float, float]
    hi_mm: tuple[float, float, float]

    def evaluate(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``fn`` on the open arrays, computed only inside this shape's box."""
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
        sl = []
        for c, lo, hi in ((z.ravel(), self.lo_mm[2], self.hi_mm[2]), (y.ravel(), self.lo_mm[1], self.hi_mm[1]),
                          (x.ravel(), self.lo_mm[0], self.hi_mm[0])):
            i0, i1 = int(np.searchsorted(c, lo, side="left")), int(np.searchsorted(c, hi, side="right"))
            if i1 <= i0:
                return out
            sl.append(slice(i0, i1))
        sz, sy, sx = sl
        out[sz, sy, sx] = self.fn(x[:, :, sx], y[:, sy, :], z[sz])
        return out

    def __or__(self, other: "Shape") -> "Shape":
        a, b = self, other
        return Shape(lambda x, y, z: a.evaluate(x, y, z) | b.evaluate(x, y, z),
                     tuple(np.minimum(a.lo_mm, b.lo_mm)), tuple(np.maximum(a.hi_mm, b.hi_mm)))

    def __and__(self, other: "Shape") -> "Shape":
        a, b = self, other
        return Shape(lambda x, y, z: a.fn(x, y, z) & b.fn(x, y, z),
                     tuple(np.maximum(a.lo_mm, b.lo_mm)), tuple(np.minimum(a.hi_mm, b.hi_mm)))

    def __sub__(self, other: "Shape") -> "Shape":
        a, b = self, other
        return Shape(lambda x, y, z: a.fn(x, y, z) & ~b.evaluate(x, y, z), a.lo_mm, a.hi_mm)


INF = 1.0e6


def ellipsoid(center, semi) -> Shape:
    cx, cy, cz = center
    ax, ay, az = semi
    return Shape(lambda x, y, z: ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0,
                 (cx - ax, cy - ay, cz - az), (cx + ax, cy + ay, cz + az))


def sphere(center, radius: float) -> Shape:
    return ellipsoid(center, (radius, radius, radius))


def elliptic_cylinder(center_xy, semi_xy, z_range=(-INF, INF), power: float = 2.0) -> Shape:
    """Cylinder along z with a (super-)elliptic cross-section (``power`` > 2 squares it off)."""
    cx, cy = center_xy
    ax, ay = semi_xy
    z0, z1 = z_range
    return Shape(lambda x, y, z: ((np.abs(x - cx) / ax) ** power + (np.abs(y - cy) / ay) ** power <= 1.0)
                 & (z >= z0) & (z <= z1),
                 (cx - ax, cy - ay, z0), (cx + ax, cy + ay, z1))


def cylinder(center_xy, radius: float, z_range=(-INF, INF)) -> Shape:
    return elliptic_cylinder(center_xy, (radius, radius), z_range)


def box(lo, hi) -> Shape:
    lo = tuple(float(v) for v in lo)
    hi = tuple(float(v) for v in hi)
    return Shape(lambda x, y, z: (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
                 & (z >= lo[2]) & (z <= hi[2]), lo, hi)


def half_space(axis: str, threshold: float, above: bool) -> Shape:
    """Points with coordinate ``axis`` (x, y or z) above (or below) ``threshold``."""
    k = "xyz".index(axis)
    lo, hi = [-INF] * 3, [INF] * 3
    if above:
        lo[k] = threshold
    else:
        hi[k] = threshold

    def fn(x, y, z):
        c = (x, y, z)[k]
        return (c >= threshold) if above else (c <= threshold)

    return Shape(fn, tuple(lo), tuple(hi))


def tube(points_mm, radius: float) -> Shape:
    """Points within ``radius`` of a polyline (capsules joined at the vertices)."""
    pts = np.asarray(points_mm, dtype=float)

    def fn(x, y, z):
        inside = None
        for p, q in zip(pts[:-1], pts[1:]):
            d = q - p
            L2 = float(d @ d)
            t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1] + (z - p[2]) * d[2]) / L2, 0.0, 1.0)
            r2 = (x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 + (z - p[2] - t * d[2]) ** 2
            seg = r2 <= radius * radius
            inside = seg if inside is None else (inside | seg)
        return inside

    return Shape(fn, tuple(pts.min(axis=0) - radius), tuple(pts.max(axis=0) + radius))


def elliptic_arc_tube(semi_xy, z_mm: float, radius: float, angle_range_deg, center_xy=(0.0, 0.0),
                      slope_mm_per_deg: float = 0.0, reference_deg: float = 0.0) -> Shape:
    """A rib: a tube of ``radius`` around an arc of the axial ellipse ``semi_xy``.

    The arc covers polar angles ``angle_range_deg`` (0 deg = +x, 90 deg = +y,
    measured on the ellipse normalised to a circle); its height is
    ``z_mm + slope_mm_per_deg * (angle - reference_deg)`` so that ribs can
    descend from the back to the front.
    """
    ax, ay = semi_xy
    cx, cy = center_xy
    a0, a1 = np.deg2rad(angle_range_deg)
    slope = slope_mm_per_deg * 180.0 / np.pi
    ref = np.deg2rad(reference_deg)

    def fn(x, y, z):
        u, v = (x - cx) / ax, (y - cy) / ay
        phi = np.mod(np.arctan2(v, u) - a0, 2 * np.pi) + a0
        phi_c = np.clip(phi, a0, a1)
        # Nearest point approximated by the point of the same normalised angle
        # (exact on a circle, well under a millimetre off for these thin tubes
        # on a 1.4:1 ellipse).
        px, py = cx + ax * np.cos(phi_c), cy + ay * np.sin(phi_c)
        pz = z_mm + slope * (phi_c - ref)
        return (x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2 <= radius * radius

    # Tight box from a dense sampling of the arc (plus the tube radius and a
    # margin for the sampling's chord error), so the rib is evaluated only
    # around itself rather than over the whole body ellipse.
    phis = np.linspace(a0, a1, 361)
    arc = np.stack([cx + ax * np.cos(phis), cy + ay * np.sin(phis), z_mm + slope * (phis - ref)], axis=1)
    pad = radius + 1.0
    return Shape(fn, tuple(arc.min(axis=0) - pad), tuple(arc.max(axis=0) + pad))


# --------------------------------------------------------------------- canvas
class Canvas:
    """A phantom grid centred on the origin, on which shapes are rasterised.

    Parameters
    ----------
    extent_mm : (x, y, z)
        Physical size; the number of voxels is ``round(extent / spacing)`` and
        the grid is centred on (0, 0, 0).
    spacing_mm : float
    """

    def __init__(self, extent_mm, spacing_mm: float):
        s = float(spacing_mm)
        n = np.maximum(1, np.round(np.asarray(extent_mm, float) / s)).astype(int)  # (nx, ny, nz)
        origin = -0.5 * n * s + 0.5 * s
        self.spacing_mm = s
        self.grid = Grid((int(n[2]), int(n[1]), int(n[0])), (s, s, s), tuple(origin))
        self.x, self.y, self.z = self.grid.axis_coordinates_mm()
        self.calibration = DensityCalibration.default()
        self.hu = np.zeros(self.grid.shape, dtype=np.float32)

    # ---------------------------------------------------------------- boxes
    def _slices(self, shape: Shape) -> tuple[slice, ...] | None:
        out = []
        for coords, lo, hi in zip((self.z, self.y, self.x), shape.lo_mm[::-1], shape.hi_mm[::-1]):
            h = self.spacing_mm
            i0 = int(np.searchsorted(coords, lo - h, side="left"))
            i1 = int(np.searchsorted(coords, hi + h, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def _mask_block(self, shape: Shape) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
        sl = self._slices(shape)
        if sl is None:
            return None, None
        z = self.z[sl[0]][:, None, None]
        y = self.y[sl[1]][None, :, None]
        x = self.x[sl[2]][None, None, :]
        return sl, shape.evaluate(x, y, z)

    def _fraction_block(self, shape: Shape) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
        sl = self._slices(shape)
        if sl is None:
            return None, None
        q = 0.25 * self.spacing_mm
        sub = [(c[s][:, None] + np.array([-q, q])[None, :]).ravel() for c, s in zip((self.z, self.y, self.x), sl)]
        vals = shape.evaluate(sub[2][None, None, :], sub[1][None, :, None], sub[0][:, None, None])
        nz, ny, nx = (s.stop - s.start for s in sl)
        return sl, vals.reshape(nz, 2, ny, 2, nx, 2).mean(axis=(1, 3, 5), dtype=np.float32)

    def mask(self, shape: Shape | list[Shape]) -> np.ndarray:
        """Voxels whose centre lies in ``shape`` (or in any of a list of
        parts, each evaluated on its own small box)."""
        out = np.zeros(self.grid.shape, dtype=bool)
        for part in (shape if isinstance(shape, list) else [shape]):
            sl, block = self._mask_block(part)
            if sl is not None:
                out[sl] |= block
        return out

    def fraction(self, shape: Shape | list[Shape]) -> np.ndarray:
        """Occupancy from 2 x 2 x 2 sub-points per voxel (multiples of 1/8).

        A list is treated as disjoint parts (occupancies add, capped at 1),
        each evaluated on its own box so that a dozen ribs stay cheap.
        """
        out = np.zeros(self.grid.shape, dtype=np.float32)
        for part in (shape if isinstance(shape, list) else [shape]):
            sl, block = self._fraction_block(part)
            if sl is not None:
                out[sl] += block
        if isinstance(shape, list):
            np.minimum(out, 1.0, out=out)
        return out

    def structure(self, name: str, shape: Shape | list[Shape], role: StructureRole, with_fraction: bool = True,
                  original_name: str | None = None) -> Structure:
        frac = self.fraction(shape) if with_fraction else None
        return Structure(name=name, grid=self.grid, mask=self.mask(shape), role=role, fraction=frac,
                         original_name=original_name)

    # ------------------------------------------------------------ painting
    def paint(self, where: np.ndarray | Shape | list[Shape], red: float) -> None:
        """Set the CT number of ``where`` to the HU giving relative electron
        density ``red`` with the default calibration."""
        mask = where if isinstance(where, np.ndarray) else self.mask(where)
        self.hu[mask] = float(self.calibration.inverse(np.array([red]))[0])

    # ------------------------------------------------------ fine local grids
    def fine_grid(self, lo_mm, hi_mm, factor: int = 2) -> tuple[Grid, tuple[slice, ...]]:
        """A local grid ``factor`` times finer that tiles the phantom voxels
        covering ``[lo_mm, hi_mm]``, and the phantom-grid slices it covers."""
        sl = self._slices(Shape(lambda x, y, z: None, tuple(lo_mm), tuple(hi_mm)))
        h = self.spacing_mm
        f = int(factor)
        start = np.array([self.x[sl[2].start], self.y[sl[1].start], self.z[sl[0].start]])
        origin = start - 0.5 * h + 0.5 * h / f
        shape = tuple(f * (s.stop - s.start) for s in sl)
        return Grid(shape, (h / f,) * 3, tuple(origin)), sl

    def fine_structure(self, name: str, shape: Shape, grid: Grid, role: StructureRole) -> Structure:
        x, y, z = grid.axis_coordinates_mm()
        mask = shape.evaluate(x[None, None, :], y[None, :, None], z[:, None, None])
        return Structure(name=name, grid=grid, mask=mask, role=role)

    def coarsen(self, fine: Structure, sl: tuple[slice, ...], factor: int = 2,
                name: str | None = None, role: StructureRole | None = None) -> Structure:
        """Average a fine-grid structure back onto the phantom grid."""
        f = int(factor)
        nz, ny, nx = (s.stop - s.start for s in sl)
        block = fine.mask.reshape(nz, f, ny, f, nx, f).mean(axis=(1, 3, 5), dtype=np.float32)
        frac = np.zeros(self.grid.shape, dtype=np.float32)
        frac[sl] = block
        mask = frac >= 0.5
        return Structure(name=name or fine.name, grid=self.grid, mask=mask, role=role or fine.role,
                         fraction=frac, metadata=dict(fine.metadata))


# ------------------------------------------------------------- identifiers
def phantom_patient(name: str, spacing_mm: float, n_slices: int) -> PatientInfo:
    """Deterministic DICOM identifiers: the same phantom and spacing always get
    the same UIDs, so exports are reproducible."""
    def uid(*parts) -> str:
        return pydicom.uid.generate_uid(entropy_srcs=["sbrtplan-phantom", name, f"{spacing_mm:g}", *map(str, parts)])

    return PatientInfo(patient_id=f"PHANTOM_{name.upper()}", patient_name=f"Phantom^{name.capitalize()}",
                       study_instance_uid=uid("study"), series_instance_uid=uid("ct-series"),
                       frame_of_reference_uid=uid("frame-of-reference"),
                       ct_sop_instance_uids=[uid("ct", k) for k in range(n_slices)],
                       study_description=f"sbrtplan built-in phantom '{name}'")

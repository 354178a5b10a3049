"""Dose planes: a 2D dose in a phantom plane, taken from a 3D dose or read from a measurement.

Coordinates
-----------
A plane is described in the *registration frame*: millimetres relative to the
phantom's reference point (the chamber centre, where the plan's isocentre is
placed), along two patient axes:

============  ======================  =====================
orientation   u (columns)             v (rows)
============  ======================  =====================
coronal       x (LPS: toward left)    z (toward the head)
axial         x                       y (toward posterior)
sagittal      y                       z
============  ======================  =====================

``dose_gy[j, i]`` is the dose at ``(u_mm[i], v_mm[j])``; ``mask`` marks the
points that hold a value (a detector array measures only at its detectors).
The plane's offset along its normal, relative to the reference point, is
``offset_mm``.
"""

from __future__ import annotations

import enum
import io as _io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from .._log import atomic_output
from ..case import Grid
from ..errors import InputError


class PlaneOrientation(str, enum.Enum):
    CORONAL = "coronal"
    AXIAL = "axial"
    SAGITTAL = "sagittal"

    @property
    def axes(self) -> tuple[int, int, int]:
        """Patient axes (0 = x, 1 = y, 2 = z) of u, v and the plane normal."""
        return {"coronal": (0, 2, 1), "axial": (0, 1, 2), "sagittal": (1, 2, 0)}[self.value]

    @classmethod
    def parse(cls, value, what: str = "plane orientation") -> "PlaneOrientation":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise InputError(f"{what}: {value!r} is not one of coronal, axial, sagittal") from None


@dataclass
class DosePlane:
    """A dose plane (Gy) on a rectilinear lattice in the registration frame (see the module docstring)."""

    dose_gy: np.ndarray
    u_mm: np.ndarray
    v_mm: np.ndarray
    orientation: PlaneOrientation = PlaneOrientation.CORONAL
    offset_mm: float = 0.0
    mask: np.ndarray | None = None
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dose_gy = np.asarray(self.dose_gy, dtype=np.float64)
        self.u_mm = np.asarray(self.u_mm, dtype=np.float64).reshape(-1)
        self.v_mm = np.asarray(self.v_mm, dtype=np.float64).reshape(-1)
        what = self.source or "dose plane"
        if self.dose_gy.shape != (self.v_mm.size, self.u_mm.size):
            raise InputError(f"{what}: dose array {self.dose_gy.shape} does not match {self.v_mm.size} rows x "
                             f"{self.u_mm.size} columns")
        for name, c in (("u", self.u_mm), ("v", self.v_mm)):
            if c.size < 2 or not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
                raise InputError(f"{what}: {name} coordinates must be at least 2 finite, increasing values")
        m = np.isfinite(self.dose_gy)
        if self.mask is not None:
            given = np.asarray(self.mask, bool)
            if given.shape != m.shape:
                raise InputError(f"{what}: mask shape {given.shape} differs from the dose {m.shape}")
            m &= given
        if not m.any():
            raise InputError(f"{what}: holds no finite dose value")
        if np.any(self.dose_gy[m] < 0):
            raise InputError(f"{what}: negative dose values (min {float(self.dose_gy[m].min()):.4g} Gy)")
        self.mask = m
        self.orientation = PlaneOrientation(self.orientation)

    @property
    def n_points(self) -> int:
        return int(self.mask.sum())

    @property
    def max_gy(self) -> float:
        return float(self.dose_gy[self.mask].max())

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, dose) of the points holding a value."""
        j, i = np.nonzero(self.mask)
        return self.u_mm[i], self.v_mm[j], self.dose_gy[j, i]

    def sample(self, u_mm, v_mm) -> np.ndarray:
        """Bilinear dose at points (NaN outside the lattice); the plane must be dense."""
        if not self.mask.all():
            raise InputError(f"{self.source or 'dose plane'}: sampling needs a dense plane")
        u, v = np.broadcast_arrays(np.asarray(u_mm, float), np.asarray(v_mm, float))
        fi = np.interp(u, self.u_mm, np.arange(self.u_mm.size), left=np.nan, right=np.nan)
        fj = np.interp(v, self.v_mm, np.arange(self.v_mm.size), left=np.nan, right=np.nan)
        ok = np.isfinite(fi) & np.isfinite(fj)
        out = np.full(u.shape, np.nan)
        if ok.any():
            out[ok] = map_coordinates(self.dose_gy, np.stack([fj[ok], fi[ok]]), order=1, mode="nearest")
        return out

    def shifted(self, du_mm: float, dv_mm: float) -> "DosePlane":
        """The same plane with its coordinates moved by (du, dv) mm (a registration correction)."""
        return DosePlane(self.dose_gy, self.u_mm + du_mm, self.v_mm + dv_mm, self.orientation, self.offset_mm,
                         self.mask, self.source, dict(self.metadata))

    def scaled(self, factor: float) -> "DosePlane":
        return DosePlane(self.dose_gy * factor, self.u_mm, self.v_mm, self.orientation, self.offset_mm, self.mask,
                         self.source, dict(self.metadata))


def plane_from_volume(dose_gy: np.ndarray, grid: Grid, reference_point_mm, orientation: PlaneOrientation,
                      offset_mm: float = 0.0, *, source: str = "calculated") -> DosePlane:
    """The plane of a 3D dose through ``reference_point_mm + offset_mm * normal``.

    The in-plane lattice is the grid's own (voxel centres); along the normal the
    dose is interpolated linearly (exact when the plane falls on voxel centres).
    """
    if not grid.is_axis_aligned:
        raise InputError("plane_from_volume: the dose grid must be axis-aligned")
    d = np.asarray(dose_gy, dtype=np.float64)
    if d.shape != grid.shape:
        raise InputError(f"plane_from_volume: dose shape {d.shape} does not match the grid {grid.shape}")
    orientation = PlaneOrientation(orientation)
    ref = np.asarray(reference_point_mm, float)
    au, av, an = orientation.axes
    coords = grid.axis_coordinates_mm()          # x, y, z
    pos = ref.copy()
    pos[an] += offset_mm
    fidx = grid.index_from_patient(pos)[::-1]    # fractional (i, j, k) == (x, y, z) axis order
    n_normal = grid.shape[2 - an]
    if not (-1e-6 <= fidx[an] <= n_normal - 1 + 1e-6):
        raise InputError(f"plane at {offset_mm:g} mm from the reference point lies outside the dose grid")
    nu, nv = coords[au].size, coords[av].size
    idx = np.zeros((3, nv, nu))                  # (k, j, i) index arrays for map_coordinates
    jj, ii = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    xyz_idx = [None, None, None]
    xyz_idx[au], xyz_idx[av] = ii.astype(float), jj.astype(float)
    xyz_idx[an] = np.full((nv, nu), min(max(fidx[an], 0.0), n_normal - 1.0))
    idx[0], idx[1], idx[2] = xyz_idx[2], xyz_idx[1], xyz_idx[0]
    plane = map_coordinates(d, idx, order=1, mode="nearest")
    return DosePlane(plane, coords[au] - ref[au], coords[av] - ref[av], orientation, offset_mm, source=source)


# ------------------------------------------------------------------------------------------- CSV
def write_plane_csv(plane: DosePlane, path) -> Path:
    """Write a plane as the CSV grid format that :func:`read_plane_csv` reads."""
    path = Path(path)
    au, av, _ = plane.orientation.axes
    buf = _io.StringIO()
    buf.write(f"# sbrtplan dose plane; orientation={plane.orientation.value}; offset_mm={plane.offset_mm:g}; "
              f"u={'xyz'[au]} mm, v={'xyz'[av]} mm relative to the reference point; dose in Gy\n")
    buf.write("v\\u," + ",".join(f"{u:.4f}" for u in plane.u_mm) + "\n")
    for j, v in enumerate(plane.v_mm):
        vals = ["" if not plane.mask[j, i] else f"{plane.dose_gy[j, i]:.6g}" for i in range(plane.u_mm.size)]
        buf.write(f"{v:.4f}," + ",".join(vals) + "\n")
    with atomic_output(path) as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    return path


def _float(cell: str, where: str) -> float:
    c = cell.strip()
    if c == "" or c.lower() == "nan":
        return math.nan
    try:
        return float(c)
    except ValueError:
        raise InputError(f"{where}: {c!r} is not a number") from None


def read_plane_csv(path, *, unit_scale: float = 1.0) -> DosePlane:
    """Read a CSV dose grid.

    Format: lines starting with ``#`` are comments (``orientation=...`` and
    ``offset_mm=...`` in them are read); the first other line is ``v\\u``
    followed by the u coordinates (mm); every further line is a v coordinate
    followed by the doses (Gy, times ``unit_scale``) of that row; an empty cell
    is a point without a measurement.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the CSV dose plane ({exc.strerror})") from None
    orientation, offset = PlaneOrientation.CORONAL, 0.0
    rows = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            for part in s[1:].replace(";", " ").split():
                if part.startswith("orientation="):
                    orientation = PlaneOrientation.parse(part.split("=", 1)[1], f"{path}:{n}")
                elif part.startswith("offset_mm="):
                    offset = _float(part.split("=", 1)[1], f"{path}:{n}")
            continue
        rows.append((n, s.split(",")))
    if len(rows) < 3:
        raise InputError(f"{path}: a CSV dose plane needs a header row of u coordinates and at least 2 rows")
    n0, head = rows[0]
    u = np.array([_float(c, f"{path}:{n0}") for c in head[1:]])
    v, dose = [], []
    for n, cells in rows[1:]:
        if len(cells) != u.size + 1:
            raise InputError(f"{path}:{n}: {len(cells) - 1} values, expected {u.size} (one per u coordinate)")
        v.append(_float(cells[0], f"{path}:{n}"))
        dose.append([_float(c, f"{path}:{n}") * unit_scale for c in cells[1:]])
    return DosePlane(np.array(dose), u, np.array(v), orientation, offset, source=str(path))

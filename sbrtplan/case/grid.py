"""Regular 3-D voxel grid in DICOM patient coordinates (LPS, mm).

Conventions used everywhere in sbrtplan
---------------------------------------
* Arrays are indexed ``[k, j, i]`` = ``[z, y, x]`` (slice, row, column), so
  ``array.shape == grid.shape``.
* Vectors in patient space (origin, spacing, points) are ordered ``(x, y, z)``
  like DICOM: +x towards the patient's left, +y posterior, +z superior.
* ``direction`` is a 3x3 matrix whose *columns* are the unit vectors, in
  patient space, along increasing column index ``i``, row index ``j`` and slice
  index ``k`` (DICOM ImageOrientationPatient row/column cosines and the slice
  normal).  Axis-aligned axial CT has ``direction == identity``.
* ``origin_mm`` is the centre of voxel ``[0, 0, 0]``.

So the centre of voxel ``[k, j, i]`` is::

    origin_mm + direction @ (spacing_mm * [i, j, k])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


def _as_vec3(value, name: str) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise InputError(f"Grid {name} must be three finite numbers, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Number of voxels along slice, row and column (numpy order).
    spacing_mm : (sx, sy, sz)
        Voxel size along the ``i`` (column), ``j`` (row) and ``k`` (slice)
        index axes, in mm.
    origin_mm : (x, y, z)
        Patient coordinates of the centre of voxel ``[0, 0, 0]``.
    direction : 3x3 array, optional
        Columns are the patient-space unit vectors of the ``i``, ``j``, ``k``
        index axes.  Defaults to the identity (axial, head-first supine CT).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in np.asarray(self.shape).reshape(-1))
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"Grid shape must be three positive integers (nz, ny, nx), got {self.shape!r}")
        spacing = _as_vec3(self.spacing_mm, "spacing_mm")
        if min(spacing) <= 0:
            raise InputError(f"Grid spacing_mm must be positive, got {spacing}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise InputError("Grid direction cosines must be orthonormal")
        direction = direction.copy()
        direction.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", _as_vec3(self.origin_mm, "origin_mm"))
        object.__setattr__(self, "direction", direction)

    # ------------------------------------------------------------------ sizes
    @property
    def nx(self) -> int:
        return self.shape[2]

    @property
    def ny(self) -> int:
        return self.shape[1]

    @property
    def nz(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def voxel_volume_cc(self) -> float:
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz / 1000.0

    @property
    def spacing_zyx_mm(self) -> tuple[float, float, float]:
        """Spacing in array-axis order, as scipy.ndimage expects it."""
        sx, sy, sz = self.spacing_mm
        return (sz, sy, sx)

    @property
    def is_axis_aligned(self) -> bool:
        return bool(np.allclose(self.direction, np.eye(3), atol=1e-6))

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (i, j, k, 1) to patient (x, y, z, 1)."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing_mm)[None, :]
        a[:3, 3] = self.origin_mm
        return a

    # ------------------------------------------------------------- transforms
    def patient_from_index(self, idx_zyx) -> np.ndarray:
        """Patient coordinates (..., 3) in mm of (possibly fractional) indices.

        ``idx_zyx`` has shape (..., 3) in array order (k, j, i), as returned by
        ``np.argwhere`` on an array of this grid.
        """
        idx = np.asarray(idx_zyx, dtype=float)
        ijk = idx[..., ::-1]
        m = self.direction * np.asarray(self.spacing_mm)[None, :]
        return ijk @ m.T + np.asarray(self.origin_mm)

    def index_from_patient(self, points_xyz) -> np.ndarray:
        """Fractional array indices (..., 3) in (k, j, i) order of patient points."""
        p = np.asarray(points_xyz, dtype=float) - np.asarray(self.origin_mm)
        m = self.direction * np.asarray(self.spacing_mm)[None, :]
        ijk = p @ np.linalg.inv(m).T
        return ijk[..., ::-1]

    def axis_coordinates_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates (x[i], y[j], z[k]) of an axis-aligned grid."""
        if not self.is_axis_aligned:
            raise InputError("axis_coordinates_mm needs an axis-aligned grid")
        ox, oy, oz = self.origin_mm
        sx, sy, sz = self.spacing_mm
        return (ox + sx * np.arange(self.nx), oy + sy * np.arange(self.ny), oz + sz * np.arange(self.nz))

    def voxel_centers_mm(self, flat_index: np.ndarray | None = None) -> np.ndarray:
        """Patient coordinates (N, 3) of the voxels with C-order ``flat_index``
        (all voxels when None)."""
        if flat_index is None:
            flat_index = np.arange(self.size)
        kji = np.stack(np.unravel_index(np.asarray(flat_index), self.shape), axis=-1)
        return self.patient_from_index(kji)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Min and max patient coordinates of the grid's outer voxel faces."""
        corners = np.array([[k, j, i] for k in (-0.5, self.nz - 0.5)
                            for j in (-0.5, self.ny - 0.5) for i in (-0.5, self.nx - 0.5)])
        pts = self.patient_from_index(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def contains(self, points_xyz) -> np.ndarray:
        """True where patient points lie inside the grid's voxel faces."""
        idx = self.index_from_patient(points_xyz)
        upper = np.asarray(self.shape) - 0.5
        return np.all((idx >= -0.5) & (idx <= upper), axis=-1)

    # ------------------------------------------------------------ derivation
    def with_spacing(self, spacing_mm, lo_mm=None, hi_mm=None) -> "Grid":
        """An axis-aligned grid of ``spacing_mm`` covering ``[lo_mm, hi_mm]``.

        The default region is this grid's full extent.  Voxel centres of the
        new grid start half a voxel inside ``lo_mm`` so the two grids cover
        the same physical box.
        """
        spacing = np.asarray(_as_vec3(np.broadcast_to(spacing_mm, 3), "spacing_mm"))
        blo, bhi = self.bounds_mm()
        lo = blo if lo_mm is None else np.maximum(np.asarray(lo_mm, float), blo)
        hi = bhi if hi_mm is None else np.minimum(np.asarray(hi_mm, float), bhi)
        if np.any(hi <= lo):
            raise InputError(f"empty region for the new grid: lo={lo}, hi={hi}")
        n = np.maximum(1, np.floor((hi - lo) / spacing + 1e-6).astype(int))
        origin = lo + 0.5 * spacing + 0.5 * ((hi - lo) - n * spacing)
        return Grid(shape=(int(n[2]), int(n[1]), int(n[0])), spacing_mm=tuple(spacing),
                    origin_mm=tuple(origin))

    def same_as(self, other: "Grid", tol_mm: float = 1e-3) -> bool:
        """True when both grids have the same voxels (within ``tol_mm``)."""
        return (self.shape == other.shape
                and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol_mm)
                and np.allclose(self.origin_mm, other.origin_mm, atol=tol_mm)
                and np.allclose(self.direction, other.direction, atol=1e-6))

    def __eq__(self, other: object) -> bool:  # dataclass eq would compare arrays elementwise
        return isinstance(other, Grid) and self.same_as(other, tol_mm=1e-6)

    def __hash__(self) -> int:
        return hash((self.shape, tuple(np.round(self.spacing_mm, 6)), tuple(np.round(self.origin_mm, 6))))

    def __repr__(self) -> str:
        aligned = "axis-aligned" if self.is_axis_aligned else "oblique"
        return (f"Grid(shape={self.shape} (z,y,x), spacing_mm={tuple(round(s, 4) for s in self.spacing_mm)} (x,y,z), "
                f"origin_mm={tuple(round(o, 3) for o in self.origin_mm)}, {aligned})")

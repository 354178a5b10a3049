"""Structures restricted to the rows of a dose-influence matrix.

The optimiser never sees masks or grids: a structure is a set of rows of the
dose matrix ``D`` (one row per optimisation voxel) with a relative volume per
row.  Row weights carry sub-voxel occupancy and, where the caller samples
voxels far from the target sparsely, the number of voxels a row stands for,
so that means and dose-volume fractions over a region are those of the whole
structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass(eq=False)
class VoxelRegion:
    """A structure as rows of the dose matrix.

    Parameters
    ----------
    name : str
        Structure name (used in labels and error messages).
    rows : ndarray of int64
        Rows of ``D`` that belong to the structure (unique).
    weights : ndarray of float
        Relative volume of each row (occupancy x sampling weight); normalised
        to sum 1 internally (see :attr:`w`).
    volume_cc : float
        Volume of the whole structure in cc; converts "x cc" into a fraction
        of the region.
    """

    name: str
    rows: np.ndarray
    weights: np.ndarray
    volume_cc: float
    w: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows)
        if rows.ndim != 1 or rows.size == 0:
            raise InputError(f"region '{self.name}': rows must be a non-empty 1-D array of matrix rows, "
                             f"got shape {rows.shape}")
        if not np.issubdtype(rows.dtype, np.integer):
            raise InputError(f"region '{self.name}': rows must be integers, got dtype {rows.dtype}")
        self.rows = rows.astype(np.int64, copy=False)
        if np.unique(self.rows).size != self.rows.size:
            raise InputError(f"region '{self.name}': rows must be unique, got "
                             f"{self.rows.size - np.unique(self.rows).size} repeated")
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != self.rows.shape:
            raise InputError(f"region '{self.name}': weights must have one entry per row "
                             f"({self.rows.size}), got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InputError(f"region '{self.name}': weights must be finite, >= 0 and not all zero")
        if not (np.isfinite(self.volume_cc) and self.volume_cc > 0):
            raise InputError(f"region '{self.name}': volume_cc must be positive, got {self.volume_cc!r}")
        self.weights = w
        self.w = w / w.sum()

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.rows.size)

    def fraction_of_cc(self, volume_cc: float) -> float:
        """``volume_cc`` as a fraction of the region's volume, clipped to (0, 1]."""
        return float(min(max(volume_cc / self.volume_cc, 1e-12), 1.0))

    def check_rows(self, n_rows: int) -> None:
        """Raise :class:`InputError` when a row is outside ``[0, n_rows)``."""
        if self.rows.min() < 0 or self.rows.max() >= n_rows:
            raise InputError(f"region '{self.name}': rows must lie in [0, {n_rows}) (rows of the dose matrix), "
                             f"got [{self.rows.min()}, {self.rows.max()}]")

    def mean(self, dose_rows: np.ndarray) -> float:
        """Volume-weighted mean of ``dose_rows`` (dose at this region's rows)."""
        return float(self.w @ dose_rows)

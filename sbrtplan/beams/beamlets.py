"""Beamlet (bixel) grids in the beam's eye view.

A :class:`BeamletGrid` is the fluence discretisation of one beam: rectangular
beamlets at the isocentre plane (IEC BEAM LIMITING DEVICE x, y in mm), rows
aligned with MLC leaf boundaries so that a fluence map can be delivered by the
leaves.  Only ``active`` beamlets (those that see the target plus a margin)
become columns of the influence matrix, in row-major order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GeometryError


@dataclass(frozen=True)
class BeamletGrid:
    """Rectangular beamlets of one beam.

    Parameters
    ----------
    x_edges_mm : (n_cols + 1,) increasing
        Column edges along Xb (direction of leaf travel).
    y_edges_mm : (n_rows + 1,) increasing
        Row edges along Yb; each row lies within one MLC leaf pair.
    active : (n_rows, n_cols) bool
        Beamlets that are optimised (influence-matrix columns, row-major).
    """

    x_edges_mm: np.ndarray
    y_edges_mm: np.ndarray
    active: np.ndarray

    def __post_init__(self) -> None:
        x = np.asarray(self.x_edges_mm, float)
        y = np.asarray(self.y_edges_mm, float)
        a = np.asarray(self.active, bool)
        if x.ndim != 1 or y.ndim != 1 or np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
            raise GeometryError("beamlet grid edges must be increasing 1-D arrays")
        if a.shape != (y.size - 1, x.size - 1):
            raise GeometryError(f"beamlet grid: active mask {a.shape} does not match "
                                f"{y.size - 1} rows x {x.size - 1} columns")
        for name, v in (("x_edges_mm", x), ("y_edges_mm", y), ("active", a)):
            v = v.copy()
            v.setflags(write=False)
            object.__setattr__(self, name, v)

    @property
    def shape(self) -> tuple[int, int]:
        return self.active.shape

    @property
    def n_beamlets(self) -> int:
        return int(self.active.sum())

    @property
    def widths_mm(self) -> np.ndarray:
        """(n_beamlets, 2) widths along x and y of the active beamlets."""
        r, c = np.nonzero(self.active)
        return np.column_stack([np.diff(self.x_edges_mm)[c], np.diff(self.y_edges_mm)[r]])

    def centers_mm(self) -> np.ndarray:
        """(n_beamlets, 2) centres (x, y) of the active beamlets, row-major."""
        r, c = np.nonzero(self.active)
        xc = 0.5 * (self.x_edges_mm[1:] + self.x_edges_mm[:-1])
        yc = 0.5 * (self.y_edges_mm[1:] + self.y_edges_mm[:-1])
        return np.column_stack([xc[c], yc[r]])

    def rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column index of each active beamlet (row-major order)."""
        return np.nonzero(self.active)

    def to_map(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter per-beamlet ``values`` into a (n_rows, n_cols) fluence map."""
        values = np.asarray(values)
        if values.shape[0] != self.n_beamlets:
            raise GeometryError(f"expected {self.n_beamlets} beamlet values, got {values.shape[0]}")
        out = np.full(self.active.shape + values.shape[1:], fill, dtype=np.result_type(values, float))
        out[self.active] = values
        return out

    def from_map(self, fluence_map: np.ndarray) -> np.ndarray:
        """Gather the active beamlets of a (n_rows, n_cols) map (row-major)."""
        return np.asarray(fluence_map)[self.active]

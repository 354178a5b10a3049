"""Structures (regions of interest) as masks on a :class:`Grid`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ..errors import StructureError
from .grid import Grid


class StructureRole(str, enum.Enum):
    """What a structure is used for in planning (DICOM RTROIInterpretedType-like)."""

    EXTERNAL = "EXTERNAL"  # body outline
    GTV = "GTV"
    CTV = "CTV"
    ITV = "ITV"
    PTV = "PTV"
    OAR = "OAR"  # organ at risk
    PRV = "PRV"  # planning organ-at-risk volume
    CONTROL = "CONTROL"  # optimisation helper: rings, PTV!, ...
    SUPPORT = "SUPPORT"  # couch, immobilisation
    OTHER = "OTHER"

    @property
    def is_target(self) -> bool:
        return self in (StructureRole.GTV, StructureRole.CTV, StructureRole.ITV, StructureRole.PTV)


@dataclass
class Structure:
    """A region of interest on a grid.

    Parameters
    ----------
    name : str
        Normalised (TG-263) name, e.g. ``"SpinalCord"``.
    grid : Grid
        The grid the mask lives on.
    mask : ndarray of bool, shape ``grid.shape``
        Voxels whose centre lies inside the structure.
    role : StructureRole
        Planning role.
    fraction : ndarray of float32, optional
        Sub-voxel occupancy in [0, 1] (fraction of each voxel's volume inside
        the structure).  Used for volumes and DVHs so that small organs keep
        their volume on coarse grids.  ``None`` means the binary mask is exact.
    original_name : str, optional
        Name as found in the source file, before TG-263 normalisation.
    color_rgb : tuple of int, optional
    """

    name: str
    grid: Grid
    mask: np.ndarray
    role: StructureRole = StructureRole.OTHER
    fraction: np.ndarray | None = None
    original_name: str | None = None
    color_rgb: tuple[int, int, int] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.shape != self.grid.shape:
            raise StructureError(
                f"structure '{self.name}': mask shape {mask.shape} does not match grid shape {self.grid.shape}")
        self.mask = mask.astype(bool, copy=False)
        if self.fraction is not None:
            frac = np.asarray(self.fraction, dtype=np.float32)
            if frac.shape != self.grid.shape:
                raise StructureError(
                    f"structure '{self.name}': occupancy shape {frac.shape} does not match grid {self.grid.shape}")
            self.fraction = frac
        if not isinstance(self.role, StructureRole):
            self.role = StructureRole(str(self.role).upper())
        if self.original_name is None:
            self.original_name = self.name

    # ----------------------------------------------------------------- sizes
    @property
    def weights(self) -> np.ndarray:
        """Per-voxel occupancy (float32): ``fraction`` if known, else the mask."""
        return self.fraction if self.fraction is not None else self.mask.astype(np.float32)

    @property
    def volume_cc(self) -> float:
        if self.fraction is not None:
            return float(self.fraction.sum(dtype=np.float64)) * self.grid.voxel_volume_cc
        return float(np.count_nonzero(self.mask)) * self.grid.voxel_volume_cc

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def is_empty(self) -> bool:
        if self.fraction is not None:
            return not bool(np.any(self.fraction > 0))
        return not bool(self.mask.any())

    def flat_indices(self) -> np.ndarray:
        """C-order flat indices (int64) of the mask's voxels."""
        return np.flatnonzero(self.mask.ravel())

    def centroid_mm(self) -> np.ndarray:
        """Occupancy-weighted centre of the structure in patient coordinates."""
        if self.is_empty:
            raise StructureError(f"structure '{self.name}' is empty: it has no centroid")
        w = self.weights
        idx = np.argwhere(w > 0)
        pts = self.grid.patient_from_index(idx)
        ww = w[w > 0].astype(np.float64)
        return (pts * ww[:, None]).sum(axis=0) / ww.sum()

    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive (lo, hi) voxel indices in (k, j, i) order of the occupied voxels."""
        occ = self.mask if self.fraction is None else (self.fraction > 0)
        if not occ.any():
            raise StructureError(f"structure '{self.name}' is empty")
        idx = np.argwhere(occ)
        return idx.min(axis=0), idx.max(axis=0)

    def copy(self, name: str | None = None, role: StructureRole | None = None) -> "Structure":
        return Structure(name=name or self.name, grid=self.grid, mask=self.mask.copy(),
                         role=role or self.role,
                         fraction=None if self.fraction is None else self.fraction.copy(),
                         original_name=self.original_name if name is None else name,
                         color_rgb=self.color_rgb, metadata=dict(self.metadata))

    def __repr__(self) -> str:
        return f"Structure({self.name!r}, role={self.role.value}, {self.volume_cc:.2f} cc)"

"""Shielding blocks drawn from organ outlines projected along the rays to the treatment plane.

The organ's voxel centres are projected from the source onto the treatment plane, rasterised at
``pixel_mm``, holes filled, and the outline shrunk by the margin (a lung block stays inside the
lung so that the ribs and chest wall keep the full dose).  Each connected part is one block; its
equivalent square (square root of its area) is used for the shielded-field dose.  The drawing at
the block screen is the treatment-plane outline scaled by ``screen distance / treatment distance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .geometry import Field


@dataclass
class BlockShape:
    """A block outline on the treatment plane (raster) for one field."""

    name: str
    field_name: str
    pixel_mm: float
    u0_mm: float
    v0_mm: float
    mask: np.ndarray                   # (nu, nv) bool, treatment plane
    labels: np.ndarray                 # connected parts (0 = none)
    square_cm: np.ndarray              # equivalent square per label (index 0 unused)
    thickness_mm: float = 0.0
    transmission: float = 1.0
    meta: dict = field(default_factory=dict)

    @property
    def area_cm2(self) -> float:
        return float(self.mask.sum() * (self.pixel_mm / 10.0) ** 2)

    def lookup(self, u_mm: np.ndarray, v_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(under the block, equivalent square of that block part) for in-plane points."""
        iu = np.floor((u_mm - self.u0_mm) / self.pixel_mm).astype(np.int64)
        iv = np.floor((v_mm - self.v0_mm) / self.pixel_mm).astype(np.int64)
        ok = (iu >= 0) & (iu < self.mask.shape[0]) & (iv >= 0) & (iv < self.mask.shape[1])
        lab = np.zeros(u_mm.shape, dtype=np.int64)
        lab[ok] = self.labels[iu[ok], iv[ok]]
        return lab > 0, self.square_cm[lab]


def design_outline(name: str, fld: Field, organ_points_mm: np.ndarray, margin_mm: float,
                   pixel_mm: float = 5.0) -> BlockShape | None:
    """Block outline of an organ for one field (``None`` when nothing is left after the margin)."""
    if organ_points_mm.size == 0:
        return None
    u, v = fld.plane_uv_mm(organ_points_mm)
    pad = margin_mm + 3 * pixel_mm
    u0, v0 = float(u.min() - pad), float(v.min() - pad)
    nu = int(np.ceil((u.max() + pad - u0) / pixel_mm)) + 1
    nv = int(np.ceil((v.max() + pad - v0) / pixel_mm)) + 1
    mask = np.zeros((nu, nv), dtype=bool)
    mask[((u - u0) / pixel_mm).astype(int), ((v - v0) / pixel_mm).astype(int)] = True
    # voxels project onto a pixel grid that may be finer than the CT: close the gaps first
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=1)
    mask = ndimage.binary_fill_holes(mask)
    if margin_mm > 0:
        # Euclidean erosion: keep pixels farther than the margin from the outline
        mask = ndimage.distance_transform_edt(mask) * pixel_mm > margin_mm
    if not mask.any():
        return None
    labels, n = ndimage.label(mask)
    areas = ndimage.sum(np.ones_like(labels), labels, index=np.arange(1, n + 1)) * (pixel_mm / 10.0) ** 2
    squares = np.concatenate([[0.0], np.sqrt(areas)])
    return BlockShape(name, fld.name, pixel_mm, u0, v0, mask, labels, squares)


"""Water / lung / water slab phantom for dose-engine tests.

Matches the Monte Carlo reference of ``../shared/data/reference/mc_lung_slab``:
a 300 x 300 x 300 mm block, water (RED 1.0) from 0 to 50 mm depth, lung
(water at RED 0.25) from 50 to 150 mm, water from 150 to 300 mm.

Orientation: the slabs are stacked along the patient's anterior-posterior
axis.  Depth runs along +y (anterior to posterior) from the anterior face at
``y = -150 mm``, so a gantry-0 beam of a head-first supine patient (source
anterior, beam travelling along +y) enters through the surface; with the
isocentre at ``(0, -150, 0)`` the SSD equals the SAD (100 cm), as in the
reference.  ``case.metadata`` holds ``surface_y_mm``, ``depth_axis``,
``lung_depth_mm`` and ``ssd_sad_isocenter_mm``.

On grids whose voxel faces do not fall on the slab boundaries (spacings that
do not divide 50 mm), boundary voxels get the volume-weighted mean density
and the slab structures carry their exact sub-voxel occupancy.
"""

from __future__ import annotations

import numpy as np

from ..case import Case, Structure, StructureRole
from ._build import Canvas, phantom_patient

DESCRIPTION = "water / lung (0.25) / water slabs, 30 cm cube, lung at 5-15 cm depth along +y (2 mm)"
DEFAULT_SPACING_MM = 2.0

SIZE_MM = 300.0
LUNG_DEPTH_MM = (50.0, 150.0)
RED_WATER, RED_LUNG = 1.0, 0.25


def _overlap_1d(lo_faces: np.ndarray, hi_faces: np.ndarray, a: float, b: float) -> np.ndarray:
    """Fraction of each interval [lo, hi] that lies in [a, b]."""
    return np.clip(np.minimum(hi_faces, b) - np.maximum(lo_faces, a), 0.0, None) / (hi_faces - lo_faces)


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The slab phantom on an isotropic grid of ``spacing_mm``."""
    cv = Canvas((SIZE_MM, SIZE_MM, SIZE_MM), spacing_mm)
    g = cv.grid
    h = cv.spacing_mm
    surface_y = float(g.bounds_mm()[0][1])
    depth = cv.y - surface_y  # voxel-centre depth, mm
    lo, hi = depth - 0.5 * h, depth + 0.5 * h
    slabs = [("Water_Entrance", 0.0, LUNG_DEPTH_MM[0], RED_WATER),
             ("Lung_Slab", LUNG_DEPTH_MM[0], LUNG_DEPTH_MM[1], RED_LUNG),
             ("Water_Exit", LUNG_DEPTH_MM[1], float(hi[-1]), RED_WATER)]
    red_y = np.zeros(g.ny)
    structures = [Structure("External", g, np.ones(g.shape, dtype=bool), role=StructureRole.EXTERNAL)]
    for name, a, b, red in slabs:
        frac_y = _overlap_1d(lo, hi, a, b)
        red_y += frac_y * red
        exact = bool(np.all((frac_y == 0) | (frac_y == 1)))
        mask = np.broadcast_to(((depth >= a) & (depth < b))[None, :, None], g.shape).copy()
        fraction = None if exact else np.broadcast_to(frac_y.astype(np.float32)[None, :, None], g.shape).copy()
        structures.append(Structure(name, g, mask, role=StructureRole.OTHER, fraction=fraction))
    hu_y = cv.calibration.inverse(red_y)
    hu = np.broadcast_to(hu_y.astype(np.float32)[None, :, None], g.shape).copy()
    metadata = {
        "phantom": "lung_slab",
        "description": DESCRIPTION,
        "depth_axis": "+y",
        "surface_y_mm": surface_y,
        "lung_depth_mm": LUNG_DEPTH_MM,
        "ssd_sad_isocenter_mm": (0.0, surface_y, 0.0),
        "densities": {"water": RED_WATER, "lung": RED_LUNG},
        "reference": "../shared/data/reference/mc_lung_slab",
    }
    return Case(name="lung_slab", grid=g, hu=hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient("lung_slab", spacing_mm, g.nz), source="phantom:lung_slab",
                metadata=metadata)

"""Homogeneous phantoms for patient-specific plan QA (verification plans).

Two phantoms of common dimensions, both of a water-equivalent plastic
(relative electron density 1.00: solid-water plastics such as Gammex RMI 457 have
a mass density of 1.03 g/cm3 and an electron density within 1 % of water's):

* ``qa_slab``: a stack of 30 x 30 cm slabs, 20 cm high -- 300 mm left-right (x),
  200 mm anterior-posterior (y, the stack height) and 300 mm head-feet (z).
* ``qa_cylinder``: a cylinder 300 mm in diameter and 180 mm long lying on the
  couch (axis along z), the size of the common "cheese" phantoms.

In both, the reference point -- the centre of the chamber cavity, where the
plan's isocentre is placed -- is the phantom centre ``(0, 0, 0)``; the chamber
axis runs along z (inserted from the feet end).  The 2D detector plane is the
coronal plane through the reference point (an array or film between the slabs,
10 cm below the anterior surface of the slab stack; the cylinder's
mid-plane).  ``case.metadata`` holds ``reference_point_mm``, ``chamber_axis``,
``detector_plane`` and the phantom dimensions.

The grid has an odd number of voxels along every axis and is centred on the
reference point, so the chamber centre and the detector plane lie on voxel
centres, with 10 mm of air around the phantom (as on a CT of it).  Boundary
voxels carry the volume-weighted density (2 x 2 x 2 sub-points).  The cavity is
modelled filled with the chamber (its wall is water-equivalent): the
``Chamber_Cavity`` structure marks where it is, the density is the plastic's.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from ..case import Case, StructureRole
from ._build import Canvas, box, cylinder, phantom_patient

RED_PLASTIC = 1.00
AIR_MARGIN_MM = 10.0
# Cavity of the chamber insert (mm): a 0.125 cm3-class cavity holds the micro chambers too.
CAVITY_RADIUS_MM = 3.5
CAVITY_LENGTH_MM = 10.0

SLAB_SIZE_MM = (300.0, 200.0, 300.0)          # x, y (stack height), z
CYLINDER_DIAMETER_MM = 300.0
CYLINDER_LENGTH_MM = 180.0


def _canvas(extent_mm, spacing_mm: float) -> Canvas:
    """A canvas with an odd voxel count per axis, centred on the origin (a voxel centre)."""
    s = float(spacing_mm)
    n = [2 * int(math.ceil((0.5 * e + AIR_MARGIN_MM) / s - 0.5)) + 1 for e in extent_mm]
    return Canvas(tuple(k * s for k in n), s)


def _build(name: str, description: str, body, extent_mm, spacing_mm: float, extra: dict) -> Case:
    cv = _canvas(extent_mm, spacing_mm)
    R = StructureRole
    frac = cv.fraction(body)
    density = (RED_PLASTIC * frac).astype(np.float32)
    hu = cv.calibration.inverse(np.maximum(density, 0.0))
    half = 0.5 * CAVITY_LENGTH_MM
    cavity = cylinder((0.0, 0.0), CAVITY_RADIUS_MM, (-half, half))
    structures = [
        cv.structure("External", body, R.EXTERNAL, original_name="Phantom"),
        cv.structure("Chamber_Cavity", cavity, R.OTHER),
    ]
    metadata = {
        "phantom": name,
        "description": description,
        "qa_phantom": True,
        "material_red": RED_PLASTIC,
        "reference_point_mm": (0.0, 0.0, 0.0),
        "chamber_axis": "z",
        "detector_plane": {"orientation": "coronal", "point_mm": (0.0, 0.0, 0.0)},
        "suggested_isocenter_mm": (0.0, 0.0, 0.0),
        **extra,
    }
    return Case(name=name, grid=cv.grid, hu=hu, density=density, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient(name, spacing_mm, cv.grid.nz), source=f"phantom:{name}", metadata=metadata)


def build_slab(spacing_mm: float = 2.0) -> Case:
    """The 30 x 30 x 20 cm slab stack."""
    hx, hy, hz = (0.5 * v for v in SLAB_SIZE_MM)
    body = box((-hx, -hy, -hz), (hx, hy, hz))
    return _build("qa_slab", SLAB.DESCRIPTION, body, SLAB_SIZE_MM, spacing_mm,
                  {"size_mm": SLAB_SIZE_MM, "anterior_surface_y_mm": -hy, "detector_depth_mm": hy})


def build_cylinder(spacing_mm: float = 2.0) -> Case:
    """The 30 cm diameter, 18 cm long cylinder."""
    r, hz = 0.5 * CYLINDER_DIAMETER_MM, 0.5 * CYLINDER_LENGTH_MM
    body = cylinder((0.0, 0.0), r, (-hz, hz))
    return _build("qa_cylinder", CYLINDER.DESCRIPTION, body, (2 * r, 2 * r, 2 * hz), spacing_mm,
                  {"diameter_mm": CYLINDER_DIAMETER_MM, "length_mm": CYLINDER_LENGTH_MM,
                   "detector_depth_mm": r})


SLAB = SimpleNamespace(
    DESCRIPTION="QA slab stack of solid water, 30 x 30 cm, 20 cm high; chamber and array plane at the centre (2 mm)",
    DEFAULT_SPACING_MM=2.0, build=build_slab)
CYLINDER = SimpleNamespace(
    DESCRIPTION="QA cylinder of solid water, 30 cm diameter, 18 cm long; chamber and film plane at the centre (2 mm)",
    DEFAULT_SPACING_MM=2.0, build=build_cylinder)

"""TG-119-like C-shape phantom for optimiser tests.

A C-shaped target wrapped around a cylindrical core, in an elliptical water
cylinder (300 x 200 mm, x by y; 160 mm long), after the AAPM TG-119 "C-shape"
test: core radius 10 mm and 100 mm long; target an annulus of radii 15 mm
(a 5 mm gap to the core) and 37 mm, 80 mm long, open over 90 degrees
on the posterior side (+y) so that the core sits in the concavity.  TG-119
goals (easy version): PTV D95 >= 50 Gy, D10 <= 55 Gy; core D5 <= 25 Gy.

It stands in for the CORT ``TG119.mat`` case on machines without the shared
data; it is not a copy of it.
"""

from __future__ import annotations

import numpy as np

from ..case import Case, StructureRole
from ._build import Canvas, Shape, cylinder, elliptic_cylinder, phantom_patient

DESCRIPTION = "TG-119-like C-shaped target around a cylindrical core in a water cylinder (2 mm)"
DEFAULT_SPACING_MM = 2.0

BODY_SEMI = (150.0, 100.0)
CORE_RADIUS, CORE_HALF_LENGTH = 10.0, 50.0
C_INNER, C_OUTER, C_HALF_LENGTH = 15.0, 37.0, 40.0
OPENING_DEG = 90.0  # centred on +y (posterior)


def _c_target() -> Shape:
    half = np.deg2rad(OPENING_DEG / 2)

    def fn(x, y, z):
        r2 = x * x + y * y
        # Angle from +y: inside the opening when it is below half the opening.
        in_gap = np.arctan2(np.abs(x), y) < half
        return (r2 >= C_INNER ** 2) & (r2 <= C_OUTER ** 2) & ~in_gap & (np.abs(z) <= C_HALF_LENGTH)

    return Shape(fn, (-C_OUTER, -C_OUTER, -C_HALF_LENGTH), (C_OUTER, C_OUTER, C_HALF_LENGTH))


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The C-shape phantom on an isotropic grid of ``spacing_mm``."""
    cv = Canvas((320.0, 220.0, 160.0), spacing_mm)
    R = StructureRole
    body = elliptic_cylinder((0, 0), BODY_SEMI)
    core = cylinder((0, 0), CORE_RADIUS, (-CORE_HALF_LENGTH, CORE_HALF_LENGTH))
    target = _c_target()
    cv.hu[:] = -1000.0
    cv.paint(body, 1.0)
    structures = [
        cv.structure("External", body, R.EXTERNAL, with_fraction=False, original_name="BODY"),
        cv.structure("PTV", target, R.PTV, original_name="OuterTarget"),
        cv.structure("Core", core, R.OAR, original_name="Core"),
    ]
    metadata = {
        "phantom": "cshape",
        "description": DESCRIPTION,
        "target": "PTV",
        "suggested_isocenter_mm": (0.0, 0.0, 0.0),
        "tg119_goals": {"PTV": "D95 >= 50 Gy, D10 <= 55 Gy", "Core": "D5 <= 25 Gy"},
    }
    return Case(name="cshape", grid=cv.grid, hu=cv.hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient("cshape", spacing_mm, cv.grid.nz), source="phantom:cshape",
                metadata=metadata)

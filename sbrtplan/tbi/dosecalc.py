"""Broad-beam TBI dose per MU: the hand-calculation formula, applied to points and to the CT grid.

    D/MU = output x Sp(s)/Sp(s_ref) x TMR(d, s) x (SPD_ref / SPD)^2 x OAR(r) x T_spoiler
           x T_compensator x [1 - (1 - T_block) g(d)]

``d`` is the water-equivalent depth along the ray from the source (exact Siddon traversal of the
relative electron density, the same tracer as the SBRT engine), ``SPD`` the distance from the
source along the central axis, ``s`` the patient-limited equivalent square of the slice
(``2 w L / (w + L)`` from the body width ``w`` across the beam and the scatter length ``L``),
``r`` the off-axis distance projected to the treatment plane.  Under a block the dose of a
field of the block's size, ``g = Sp(s_b) TMR(d, s_b) / (Sp(s) TMR(d, s))`` of the open dose, is
attenuated by the block (Clarkson subtraction of the shielded field, as in the hand method).
"""

from __future__ import annotations

import numpy as np

from ..case import Grid
from ..dose_engine import radiological_depth
from .beamdata import TbiBeamData
from .geometry import Field


def equivalent_square_cm(width_cm, length_cm: float) -> np.ndarray:
    """Equivalent square of a ``width x length`` rectangle (area/perimeter rule)."""
    w = np.maximum(np.asarray(width_cm, dtype=float), 1e-3)
    return 2.0 * w * length_cm / (w + length_cm)


def water_depth_cm(density_body: np.ndarray, grid: Grid, field: Field, points_mm: np.ndarray) -> np.ndarray:
    """Water-equivalent depth (cm) from the body surface to each point along its ray.

    ``density_body`` is zero outside the body, so couch and air do not count.
    """
    return radiological_depth(density_body, grid, field.source_mm, points_mm) / 10.0


def open_dose_per_mu(beam: TbiBeamData, field: Field, points_mm: np.ndarray, depth_cm: np.ndarray,
                     square_cm: np.ndarray, spoiler_cm: float) -> np.ndarray:
    """Dose per MU (cGy/MU) of an open field (no compensator, no block) at ``points_mm``."""
    spd_cm = field.along_mm(points_mm) / 10.0
    u, v = field.plane_uv_mm(points_mm)
    r_cm = np.hypot(u, v) / 10.0
    return (beam.output_cgy_per_mu * beam.sp(square_cm) / float(beam.sp(beam.reference_square_cm))
            * beam.tmr(depth_cm, square_cm) * (beam.reference_distance_cm / spd_cm) ** 2
            * beam.oar(r_cm) * beam.spoiler_factor(spoiler_cm))


def block_field_fraction(beam: TbiBeamData, depth_cm, square_cm, block_square_cm) -> np.ndarray:
    """Part ``g`` of the open-field dose that a block of equivalent square ``block_square_cm`` shields."""
    sb = np.minimum(np.asarray(block_square_cm, float), np.asarray(square_cm, float))
    return (beam.sp(sb) * beam.tmr(depth_cm, sb)) / (beam.sp(square_cm) * beam.tmr(depth_cm, square_cm))


def block_factor(beam: TbiBeamData, depth_cm, square_cm, block_square_cm, transmission) -> np.ndarray:
    """Dose under a block relative to the open field."""
    return 1.0 - (1.0 - np.asarray(transmission, float)) * block_field_fraction(beam, depth_cm, square_cm,
                                                                                block_square_cm)

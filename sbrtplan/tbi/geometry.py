"""TBI field geometry at extended distance: technique, sources, projection to the treatment plane.

Coordinates are DICOM patient coordinates (LPS, mm) of a head-first supine CT; the patient's
long axis is z.  A field is described by the unit vector of beam travel and the source
position; the *treatment plane* is perpendicular to the central axis through the reference
midline point, ``distance_cm`` from the source.  In-plane coordinates are ``u`` (along the
patient's long axis, z) and ``v`` (the transverse in-plane axis).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .beamdata import TbiBeamData
from .rules import RuleResult, TbiRules


class Technique(str, enum.Enum):
    """AP/PA (supine then prone, or standing) or bilateral (left and right lateral) fields."""

    AP_PA = "ap-pa"
    LATERAL = "lateral"


@dataclass(frozen=True)
class Field:
    """One TBI field: direction of travel (unit, LPS), source and its gantry angle (IEC, HFS)."""

    name: str
    direction: tuple[float, float, float]
    source_mm: tuple[float, float, float]
    reference_mm: tuple[float, float, float]
    distance_mm: float
    gantry_deg: float
    v_axis: tuple[float, float, float]  # transverse in-plane axis (unit)

    def along_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Distance from the source along the central axis (mm)."""
        return (np.asarray(points_mm, float) - np.asarray(self.source_mm)) @ np.asarray(self.direction)

    def plane_uv_mm(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projection of points along their rays onto the treatment plane: (u, v) in mm
        relative to the central axis."""
        p = np.asarray(points_mm, float) - np.asarray(self.reference_mm)
        scale = self.distance_mm / np.maximum(self.along_mm(points_mm), 1.0)
        u = p[:, 2] * scale
        v = (p @ np.asarray(self.v_axis)) * scale
        return u, v


# beam travel, gantry angle (IEC 61217, head-first supine) and transverse axis for each field
_FIELDS = {
    Technique.AP_PA: [("AP", (0.0, 1.0, 0.0), 0.0, (1.0, 0.0, 0.0)),
                      ("PA", (0.0, -1.0, 0.0), 180.0, (1.0, 0.0, 0.0))],
    Technique.LATERAL: [("RLAT", (1.0, 0.0, 0.0), 270.0, (0.0, 1.0, 0.0)),
                        ("LLAT", (-1.0, 0.0, 0.0), 90.0, (0.0, 1.0, 0.0))],
}


def parse_technique(value) -> Technique:
    try:
        return Technique(str(value).strip().lower())
    except ValueError:
        raise InputError(f"--technique {value!r}: expected one of {', '.join(t.value for t in Technique)}") from None


def make_fields(technique: Technique, reference_mm, distance_cm: float) -> list[Field]:
    """The fields of ``technique`` with their sources ``distance_cm`` from ``reference_mm``."""
    ref = np.asarray(reference_mm, float)
    out = []
    for name, d, gantry, v in _FIELDS[technique]:
        src = ref - np.asarray(d) * distance_cm * 10.0
        out.append(Field(name, d, tuple(src), tuple(ref), distance_cm * 10.0, gantry, v))
    return out


def outline_margin_cm(field: Field, body_points_mm: np.ndarray, field_cm: float, collimator_deg: float) -> float:
    """Smallest distance (cm) from the projected body outline to the edge of the square field
    of side ``field_cm`` (treatment plane), rotated by the collimator angle."""
    u, v = field.plane_uv_mm(body_points_mm)
    c = np.deg2rad(collimator_deg)
    a = u * np.cos(c) + v * np.sin(c)
    b = -u * np.sin(c) + v * np.cos(c)
    half = field_cm * 10.0 / 2.0
    return float((half - np.max(np.maximum(np.abs(a), np.abs(b)))) / 10.0)


def check_outline(fields: list[Field], body_points_mm: np.ndarray, field_cm: float, beam: TbiBeamData,
                  rules: TbiRules) -> RuleResult:
    """Refuse a patient whose outline comes closer than the margin to a field edge."""
    margin = min(outline_margin_cm(f, body_points_mm, field_cm, beam.collimator_deg) for f in fields)
    if margin < rules.outline_margin_cm:
        raise InputError(f"patient outline {margin:.1f} cm from the field edge ({field_cm:.0f} cm field, collimator "
                         f"{beam.collimator_deg:g} deg): rule 'outline margin' (annex 2-1) requires at least "
                         f"{rules.outline_margin_cm:g} cm")
    return RuleResult("outline inside field edge (head and feet)", margin, f">= {rules.outline_margin_cm:g} cm", True)

"""Treatment-machine geometry per IEC 61217, expressed in DICOM patient coordinates.

Coordinate systems (all right-handed, all rotations positive in the
right-hand sense about their axis, as IEC 61217 defines them):

* **IEC FIXED (f)**: origin at the isocentre; +Xf to the right of an observer
  at the foot of the couch facing the gantry; +Yf towards the gantry;
  +Zf up.
* **IEC PATIENT SUPPORT (s)**: rotated about Zf by the couch angle.
* **IEC GANTRY (g)**: rotated about Yf by the gantry angle; at gantry 90 deg
  the source is on +Xf.
* **IEC BEAM LIMITING DEVICE (b)**: rotated about Zg by the collimator angle.
  Jaws ``ASYMX`` and leaves ``MLCX`` move along Xb; leaf pairs are stacked
  along Yb; the source is at ``(0, 0, SAD)`` in this system.
* **DICOM patient (LPS)**: +x patient left, +y posterior, +z superior.
  The patient position (HFS, FFS, ...) fixes how LPS sits on the couch.

A point ``p`` in patient coordinates has beam-limiting-device coordinates
``R.T @ (p - isocenter)`` with ``R = beam_rotation(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GeometryError

# Where the patient's +x (left) and +z (superior) axes point in IEC FIXED at
# couch 0, per DICOM PatientPosition; +y (posterior) follows from L x P = S.
_POSITION_AXES = {
    "HFS": ((1, 0, 0), (0, 1, 0)),
    "HFP": ((-1, 0, 0), (0, 1, 0)),
    "FFS": ((-1, 0, 0), (0, -1, 0)),
    "FFP": ((1, 0, 0), (0, -1, 0)),
    "HFDL": ((0, 0, -1), (0, 1, 0)),
    "HFDR": ((0, 0, 1), (0, 1, 0)),
    "FFDL": ((0, 0, -1), (0, -1, 0)),
    "FFDR": ((0, 0, 1), (0, -1, 0)),
}


def _rot_y(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def patient_to_fixed(patient_position: str = "HFS") -> np.ndarray:
    """3x3 rotation taking DICOM patient vectors to IEC FIXED at couch 0."""
    try:
        left, sup = _POSITION_AXES[patient_position.upper()]
    except KeyError:
        raise GeometryError(f"unknown patient position {patient_position!r}; "
                            f"expected one of {', '.join(_POSITION_AXES)}") from None
    left = np.asarray(left, float)
    sup = np.asarray(sup, float)
    post = np.cross(sup, left)
    return np.column_stack([left, post, sup])


def beam_rotation(gantry_deg: float, collimator_deg: float = 0.0, couch_deg: float = 0.0,
                  patient_position: str = "HFS") -> np.ndarray:
    """Rotation matrix whose columns are Xb, Yb, Zb in patient (LPS) coordinates.

    ``v_patient = R @ v_b`` for a vector given in the IEC BEAM LIMITING DEVICE
    system.  ``-R[:, 2]`` is the beam direction (source towards isocentre).
    """
    fixed_from_b = _rot_y(gantry_deg) @ _rot_z(collimator_deg)
    fixed_from_patient = _rot_z(couch_deg) @ patient_to_fixed(patient_position)
    return fixed_from_patient.T @ fixed_from_b


@dataclass(frozen=True)
class BeamGeometry:
    """Gantry, collimator and couch angles of one beam direction and its isocentre.

    Parameters
    ----------
    gantry_deg, collimator_deg, couch_deg : float
        IEC 61217 angles in degrees.
    isocenter_mm : (x, y, z)
        Isocentre in DICOM patient coordinates.
    sad_mm : float
        Source-axis distance.
    patient_position : str
        DICOM PatientPosition of the case.
    """

    gantry_deg: float
    collimator_deg: float = 0.0
    couch_deg: float = 0.0
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sad_mm: float = 1000.0
    patient_position: str = "HFS"

    def __post_init__(self) -> None:
        for name in ("gantry_deg", "collimator_deg", "couch_deg"):
            v = float(getattr(self, name))
            if not np.isfinite(v):
                raise GeometryError(f"beam {name} must be finite, got {v}")
            object.__setattr__(self, name, v % 360.0)
        iso = tuple(float(v) for v in np.asarray(self.isocenter_mm, float).reshape(3))
        object.__setattr__(self, "isocenter_mm", iso)
        if not self.sad_mm > 0:
            raise GeometryError(f"beam sad_mm must be positive, got {self.sad_mm}")

    @property
    def rotation(self) -> np.ndarray:
        """Columns Xb, Yb, Zb in patient coordinates (see :func:`beam_rotation`)."""
        return beam_rotation(self.gantry_deg, self.collimator_deg, self.couch_deg, self.patient_position)

    @property
    def source_mm(self) -> np.ndarray:
        """Source position in patient coordinates."""
        return np.asarray(self.isocenter_mm) + self.sad_mm * self.rotation[:, 2]

    @property
    def direction(self) -> np.ndarray:
        """Unit vector of the central axis, from the source towards the isocentre."""
        return -self.rotation[:, 2]

    def to_beam(self, points_mm: np.ndarray) -> np.ndarray:
        """Patient points (N, 3) -> IEC BEAM LIMITING DEVICE coordinates (N, 3)."""
        p = np.asarray(points_mm, float) - np.asarray(self.isocenter_mm)
        return p @ self.rotation

    def from_beam(self, points_b: np.ndarray) -> np.ndarray:
        """IEC BEAM LIMITING DEVICE coordinates (N, 3) -> patient points (N, 3)."""
        return np.asarray(points_b, float) @ self.rotation.T + np.asarray(self.isocenter_mm)

    def project_to_isocenter_plane(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Beam's-eye-view coordinates (x_b, y_b) at the isocentre plane, and the
        distance from the source along the central axis, for patient points."""
        b = self.to_beam(points_mm)
        dist = self.sad_mm - b[..., 2]
        scale = self.sad_mm / dist
        return np.stack([b[..., 0] * scale, b[..., 1] * scale], axis=-1), dist

    def label(self) -> str:
        return f"G{self.gantry_deg:.0f} C{self.collimator_deg:.0f} T{self.couch_deg:.0f}"

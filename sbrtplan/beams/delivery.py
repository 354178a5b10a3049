"""What the linac delivers: MLC models, apertures, control points, beams, beam sets.

These dataclasses mirror the DICOM RT Plan model so that export and import are
direct: a :class:`Beam` holds control points with cumulative meterset weights,
an MLC (``MLCX``) and asymmetric jaws (``ASYMX``, ``ASYMY``); its MU are per
fraction.  Static fields, step-and-shoot and sliding-window IMRT and VMAT arcs
all use the same representation and are sampled for dose calculation by
:func:`sample_delivery`.

Sign conventions (IEC BEAM LIMITING DEVICE system, isocentre plane, mm):
leaf bank ``x1`` sits on the -Xb side, bank ``x2`` on +Xb; an open leaf pair
has ``x1 < x2``.  Jaws ``x1 < x2`` along Xb and ``y1 < y2`` along Yb.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import GeometryError
from .geometry import BeamGeometry


@dataclass(frozen=True)
class MLCModel:
    """Geometry and leakage of a multileaf collimator (MLCX: leaves move along Xb).

    Parameters
    ----------
    name : str
    leaf_boundaries_mm : 1-D array (n_pairs + 1,)
        Edges of the leaf pairs along Yb at the isocentre plane, increasing.
    transmission : float
        Fraction of the open-field fluence transmitted through closed leaves
        (average of intra- and inter-leaf leakage).
    dlg_mm : float
        Dosimetric leaf gap: the rounded leaf tips transmit as if each were
        retracted by half of it (0: ideal flat tips).
    tongue_groove_mm : float
        Width of the strip along each boundary between adjacent leaf pairs that
        is open only where both pairs are open (0: no tongue-and-groove effect).
    min_gap_mm : float
        Smallest gap allowed between opposing leaves of a moving pair.
    max_leaf_speed_mm_s : float
    max_position_mm : float
        Leaves and jaws stay within +-this value along Xb.
    max_interdigitation : bool
        Whether a leaf may pass the opposing neighbour leaf.
    """

    name: str
    leaf_boundaries_mm: np.ndarray
    transmission: float = 0.015
    min_gap_mm: float = 0.5
    max_leaf_speed_mm_s: float = 25.0
    max_position_mm: float = 200.0
    max_interdigitation: bool = True
    dlg_mm: float = 0.0
    tongue_groove_mm: float = 0.0

    def __post_init__(self) -> None:
        b = np.asarray(self.leaf_boundaries_mm, dtype=float)
        if b.ndim != 1 or b.size < 2 or np.any(np.diff(b) <= 0):
            raise GeometryError(f"MLC '{self.name}': leaf boundaries must be increasing")
        if not 0.0 <= self.transmission < 0.2:
            raise GeometryError(f"MLC '{self.name}': transmission {self.transmission} outside [0, 0.2)")
        if not (np.isfinite(self.dlg_mm) and 0.0 <= self.dlg_mm < 5.0):
            raise GeometryError(f"MLC '{self.name}': dosimetric leaf gap {self.dlg_mm} mm outside [0, 5)")
        if not (np.isfinite(self.tongue_groove_mm) and 0.0 <= self.tongue_groove_mm < float(np.min(np.diff(b)))):
            raise GeometryError(f"MLC '{self.name}': tongue-and-groove width {self.tongue_groove_mm} mm outside "
                                f"[0, narrowest leaf {float(np.min(np.diff(b))):g} mm)")
        b = b.copy()
        b.setflags(write=False)
        object.__setattr__(self, "leaf_boundaries_mm", b)

    @property
    def n_pairs(self) -> int:
        return self.leaf_boundaries_mm.size - 1

    def with_leakage(self, transmission: float, dlg_mm: float, tongue_groove_mm: float) -> "MLCModel":
        """A copy with other leakage parameters (e.g. the commissioned values of a machine file)."""
        return replace(self, transmission=float(transmission), dlg_mm=float(dlg_mm),
                       tongue_groove_mm=float(tongue_groove_mm))

    @property
    def leaf_widths_mm(self) -> np.ndarray:
        return np.diff(self.leaf_boundaries_mm)

    @property
    def leaf_centers_mm(self) -> np.ndarray:
        b = self.leaf_boundaries_mm
        return 0.5 * (b[1:] + b[:-1])

    @classmethod
    def millennium120(cls, transmission: float = 0.015) -> "MLCModel":
        """Varian Millennium 120: 40 central pairs of 5 mm, 2 x 10 outer pairs of 10 mm."""
        b = np.concatenate([np.arange(-200, -100, 10.0), np.arange(-100, 100, 5.0), np.arange(100, 201, 10.0)])
        return cls("Millennium120", b, transmission=transmission)

    @classmethod
    def hd120(cls, transmission: float = 0.012) -> "MLCModel":
        """Varian HD120: 32 central pairs of 2.5 mm, 2 x 14 outer pairs of 5 mm."""
        b = np.concatenate([np.arange(-110, -40, 5.0), np.arange(-40, 40, 2.5), np.arange(40, 111, 5.0)])
        return cls("HD120", b, transmission=transmission, max_position_mm=200.0)

    @classmethod
    def uniform(cls, leaf_width_mm: float, n_pairs: int, transmission: float = 0.015) -> "MLCModel":
        """Equal-width leaves centred on the axis (matRad-like idealised MLC)."""
        half = 0.5 * leaf_width_mm * n_pairs
        return cls(f"uniform{leaf_width_mm:g}mm", np.linspace(-half, half, n_pairs + 1), transmission=transmission)

    @classmethod
    def by_name(cls, name: str) -> "MLCModel":
        key = name.lower().replace("-", "").replace("_", "")
        if key in ("millennium120", "m120", "5mm"):
            return cls.millennium120()
        if key in ("hd120", "2.5mm", "25mm"):
            return cls.hd120()
        raise GeometryError(f"unknown MLC model {name!r}; expected Millennium120 or HD120")


@dataclass
class Aperture:
    """One MLC + jaw shape at the isocentre plane (mm, IEC BLD coordinates).

    ``leaf_x1_mm[i]``/``leaf_x2_mm[i]`` are the -Xb and +Xb leaf tips of pair
    ``i`` (pairs ordered along +Yb as the MLC boundaries).
    """

    leaf_x1_mm: np.ndarray
    leaf_x2_mm: np.ndarray
    jaw_x_mm: tuple[float, float]
    jaw_y_mm: tuple[float, float]

    def __post_init__(self) -> None:
        self.leaf_x1_mm = np.asarray(self.leaf_x1_mm, dtype=float).copy()
        self.leaf_x2_mm = np.asarray(self.leaf_x2_mm, dtype=float).copy()
        if self.leaf_x1_mm.shape != self.leaf_x2_mm.shape or self.leaf_x1_mm.ndim != 1:
            raise GeometryError("aperture: both leaf banks need the same number of leaves")
        if np.any(self.leaf_x1_mm > self.leaf_x2_mm + 1e-6):
            bad = int(np.argmax(self.leaf_x1_mm > self.leaf_x2_mm + 1e-6))
            raise GeometryError(f"aperture: leaf pair {bad + 1} crosses (x1 {self.leaf_x1_mm[bad]:.2f} > "
                                f"x2 {self.leaf_x2_mm[bad]:.2f} mm)")
        self.jaw_x_mm = (float(self.jaw_x_mm[0]), float(self.jaw_x_mm[1]))
        self.jaw_y_mm = (float(self.jaw_y_mm[0]), float(self.jaw_y_mm[1]))
        if self.jaw_x_mm[0] > self.jaw_x_mm[1] or self.jaw_y_mm[0] > self.jaw_y_mm[1]:
            raise GeometryError(f"aperture: jaws must satisfy x1 <= x2 and y1 <= y2, got X {self.jaw_x_mm}, Y {self.jaw_y_mm}")

    @property
    def n_pairs(self) -> int:
        return self.leaf_x1_mm.size

    @classmethod
    def closed(cls, mlc: MLCModel, park_mm: float = 0.0) -> "Aperture":
        x = np.full(mlc.n_pairs, park_mm)
        return cls(x - 0.5 * mlc.min_gap_mm, x + 0.5 * mlc.min_gap_mm, (park_mm, park_mm), (0.0, 0.0))

    @classmethod
    def rectangle(cls, mlc: MLCModel, x_mm: tuple[float, float], y_mm: tuple[float, float]) -> "Aperture":
        """An MLC-shaped rectangular field with jaws on the field edges."""
        b = mlc.leaf_boundaries_mm
        inside = (b[1:] > y_mm[0]) & (b[:-1] < y_mm[1])
        x1 = np.where(inside, x_mm[0], 0.0)
        x2 = np.where(inside, x_mm[1], 0.0)
        # closed pairs outside the field rest together under the jaws
        x1[~inside] = -0.5 * mlc.min_gap_mm
        x2[~inside] = 0.5 * mlc.min_gap_mm
        return cls(x1, x2, x_mm, y_mm)

    def area_mm2(self, mlc: MLCModel) -> float:
        """Open area inside leaves and jaws at the isocentre plane."""
        b = mlc.leaf_boundaries_mm
        y0 = np.clip(b[:-1], *self.jaw_y_mm)
        y1 = np.clip(b[1:], *self.jaw_y_mm)
        x0 = np.clip(self.leaf_x1_mm, *self.jaw_x_mm)
        x1 = np.clip(self.leaf_x2_mm, *self.jaw_x_mm)
        return float(np.sum(np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)))

    def interpolate(self, other: "Aperture", t: float) -> "Aperture":
        """Linear interpolation of leaves and jaws: ``t=0`` self, ``t=1`` other."""
        def lerp(a, b):
            return (1.0 - t) * np.asarray(a, float) + t * np.asarray(b, float)
        return Aperture(lerp(self.leaf_x1_mm, other.leaf_x1_mm), lerp(self.leaf_x2_mm, other.leaf_x2_mm),
                        tuple(lerp(self.jaw_x_mm, other.jaw_x_mm)), tuple(lerp(self.jaw_y_mm, other.jaw_y_mm)))

    def copy(self) -> "Aperture":
        return Aperture(self.leaf_x1_mm.copy(), self.leaf_x2_mm.copy(), self.jaw_x_mm, self.jaw_y_mm)


class Technique(str, enum.Enum):
    STATIC = "STATIC"              # one aperture per beam
    STEP_AND_SHOOT = "STEP_AND_SHOOT"
    SLIDING_WINDOW = "SLIDING_WINDOW"
    VMAT = "VMAT"


@dataclass
class ControlPoint:
    """A DICOM-style control point.

    Parameters
    ----------
    gantry_deg : float
    aperture : Aperture
    cumulative_weight : float
        Cumulative meterset weight in [0, 1] (fraction of the beam's MU
        delivered when this control point is reached).
    """

    gantry_deg: float
    aperture: Aperture
    cumulative_weight: float


@dataclass
class Beam:
    """One treatment beam or arc.

    ``mu`` is per fraction.  Collimator and couch angles are constant over the
    beam; the gantry angle may change between control points (arcs).
    """

    name: str
    control_points: list[ControlPoint]
    mu: float
    mlc: MLCModel
    isocenter_mm: tuple[float, float, float]
    collimator_deg: float = 0.0
    couch_deg: float = 0.0
    sad_mm: float = 1000.0
    technique: Technique = Technique.STATIC
    energy_mv: float = 6.0
    patient_position: str = "HFS"
    arc_direction: str = "NONE"  # "CW", "CC" (DICOM GantryRotationDirection) or "NONE"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.control_points:
            raise GeometryError(f"beam '{self.name}' has no control points")
        w = np.array([cp.cumulative_weight for cp in self.control_points])
        if abs(w[0]) > 1e-6 or abs(w[-1] - 1.0) > 1e-4 or np.any(np.diff(w) < -1e-9):
            if len(self.control_points) > 1 or abs(w[0] - 1.0) > 1e-4:
                raise GeometryError(f"beam '{self.name}': cumulative meterset weights must rise from 0 to 1, got "
                                    f"{w[0]:.4f} .. {w[-1]:.4f}")
        if self.mu < 0:
            raise GeometryError(f"beam '{self.name}': negative MU {self.mu}")
        self.technique = Technique(self.technique)

    def geometry(self, gantry_deg: float | None = None) -> BeamGeometry:
        """Beam geometry at ``gantry_deg`` (default: the first control point)."""
        g = self.control_points[0].gantry_deg if gantry_deg is None else gantry_deg
        return BeamGeometry(g, self.collimator_deg, self.couch_deg, self.isocenter_mm, self.sad_mm,
                            self.patient_position)

    @property
    def is_arc(self) -> bool:
        g = [cp.gantry_deg for cp in self.control_points]
        return len(g) > 1 and any(abs(((a - g[0]) + 180) % 360 - 180) > 1e-3 for a in g)

    def segment_mu(self) -> np.ndarray:
        """MU delivered between consecutive control points (per fraction)."""
        w = np.array([cp.cumulative_weight for cp in self.control_points])
        return np.diff(w) * self.mu if w.size > 1 else np.array([self.mu])


@dataclass
class BeamSet:
    """All beams of one plan (DICOM fraction group). MU are per fraction."""

    beams: list[Beam]
    n_fractions: int
    prescription_gy: float
    machine_name: str = "sbrtplan-6MV"
    label: str = "SBRT"

    @property
    def total_mu_per_fraction(self) -> float:
        return float(sum(b.mu for b in self.beams))


@dataclass
class DeliverySample:
    """One sub-field of a beam for dose calculation: geometry, aperture and MU."""

    geometry: BeamGeometry
    aperture: Aperture
    mu: float
    beam_index: int
    control_point: int  # index of the starting control point of the interval


def _gantry_between(g0: float, g1: float, t: float, direction: str) -> float:
    d = (g1 - g0) % 360.0
    if direction.upper() in ("CC", "CCW"):
        d = d - 360.0 if d > 0 else d
    elif d > 180.0:  # no stated direction: shortest way
        d -= 360.0
    return (g0 + t * d) % 360.0


def sample_delivery(beam: Beam, beam_index: int = 0, max_gantry_step_deg: float = 1.0,
                    max_leaf_step_mm: float = 2.0) -> list[DeliverySample]:
    """Split a beam into static sub-fields for dose calculation.

    Each control-point interval that delivers MU is divided into ``n`` equal
    parts so that the gantry moves at most ``max_gantry_step_deg`` and any leaf
    or jaw at most ``max_leaf_step_mm`` within a part; each part is evaluated
    at its midpoint with the interpolated aperture and gantry angle.  Intervals
    with identical apertures and gantry (step-and-shoot) give one sample.
    """
    cps = beam.control_points
    mu = beam.segment_mu()
    out: list[DeliverySample] = []
    if len(cps) == 1:
        return [DeliverySample(beam.geometry(), cps[0].aperture, float(beam.mu), beam_index, 0)]
    for i in range(len(cps) - 1):
        if mu[i] <= 0:
            continue
        a0, a1 = cps[i].aperture, cps[i + 1].aperture
        dg = abs(((cps[i + 1].gantry_deg - cps[i].gantry_deg) + 180.0) % 360.0 - 180.0)
        dleaf = max(np.max(np.abs(a1.leaf_x1_mm - a0.leaf_x1_mm), initial=0.0),
                    np.max(np.abs(a1.leaf_x2_mm - a0.leaf_x2_mm), initial=0.0),
                    np.max(np.abs(np.subtract(a1.jaw_x_mm, a0.jaw_x_mm))),
                    np.max(np.abs(np.subtract(a1.jaw_y_mm, a0.jaw_y_mm))))
        n = max(1, int(np.ceil(dg / max_gantry_step_deg - 1e-9)), int(np.ceil(dleaf / max_leaf_step_mm - 1e-9)))
        for s in range(n):
            t = (s + 0.5) / n
            g = _gantry_between(cps[i].gantry_deg, cps[i + 1].gantry_deg, t, beam.arc_direction)
            ap = a0 if dleaf == 0 else a0.interpolate(a1, t)
            out.append(DeliverySample(beam.geometry(g), ap, float(mu[i] / n), beam_index, i))
    return out


def with_mu(beam: Beam, mu: float) -> Beam:
    """A copy of ``beam`` with a different MU (per fraction)."""
    return replace(beam, mu=float(mu))

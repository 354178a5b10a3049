"""Delivery limits of the linac, the deliverability checker and delivery-time estimates.

Timing model
------------
Between two control points the machine needs the longest of

* the gantry rotation at full speed, ``|dg| / max_gantry_speed_deg_s``;
* the MU at the maximum dose rate, ``mu / (max_dose_rate_mu_min / 60)``;
* the largest leaf travel at full leaf speed, ``travel / max_leaf_speed_mm_s``;
* with jaw tracking, the largest jaw travel at full jaw speed.

The planning rule that makes a plan *deliverable as planned* (Peng et al.,
Phys. Med. Biol. 57 (2012) 4569; Unkelbach et al., Med. Phys. 42 (2015) 1367)
is that the leaves keep up with the gantry and the dose rate: a leaf may move at
most :func:`max_leaf_travel_mm` in an interval, i.e. the leaf speed times the
time set by the slower of the gantry at full speed and the dose rate at its
maximum.  A larger move would force the gantry to slow down below the planned
speed; the checker reports it as ``LEAF_SPEED``.  The MU per degree of arc must
lie inside ``mu_per_deg_range`` (the arc-mode QA range of the SBRT standards).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import GeometryError, InputError
from .delivery import Aperture, Beam, BeamSet, ControlPoint, Technique

# Tolerances absorb the precision of DICOM export (positions to 0.001 mm,
# meterset weights to 1e-7) so that a plan read back from RTPLAN checks the same.
_TOL_MM = 2e-3
_TOL_MU = 1e-3


# ------------------------------------------------------------ configuration files
def _packaged(name: str) -> Path:
    """Path of a configuration file shipped in ``sbrtplan/beams/data``."""
    return Path(str(resources.files("sbrtplan.beams").joinpath("data", name)))


def _read_yaml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Mapping at the top of ``path`` (or under ``section``), with clear errors on bad files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"configuration file {p} does not exist")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"configuration file {p} is not valid YAML: {exc}") from None
    if section is not None:
        if not isinstance(doc, dict) or section not in doc:
            have = ", ".join(doc) if isinstance(doc, dict) else "nothing"
            raise InputError(f"configuration file {p} has no section {section!r} (it has: {have})")
        doc = doc[section]
    if not isinstance(doc, dict):
        raise InputError(f"configuration file {p}: expected a mapping of parameter names to values")
    return doc


def _build(cls, values: dict[str, Any], source: str):
    """Instantiate dataclass ``cls`` from ``values``; unknown or ill-typed parameters raise InputError."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise InputError(f"{source}: unknown parameter {key!r} for {cls.__name__}; "
                             f"expected one of {', '.join(fields)}")
        default = fields[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(f"{source}: parameter {key!r} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{source}: parameter {key!r} must be a number, got {value!r}") from None
            if not np.isfinite(value):
                raise InputError(f"{source}: parameter {key!r} must be finite, got {value!r}")
        elif isinstance(default, tuple):
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise InputError(f"{source}: parameter {key!r} must be a list of numbers, got {value!r}") from None
        kwargs[key] = value
    return cls(**kwargs)


# ------------------------------------------------------------------------ limits
@dataclass(frozen=True)
class DeliveryLimits:
    """Machine limits for delivery (see the module docstring for the timing model).

    Parameters
    ----------
    max_leaf_speed_mm_s, max_gantry_speed_deg_s, max_dose_rate_mu_min : float
    min_leaf_gap_mm : float
        Smallest gap between opposing leaves (closed pairs included).
    mu_per_deg_range : (lo, hi)
        Allowed MU per degree of gantry rotation in every arc interval.
    jaw_tracking : bool
        Jaws may move with the leaves; if False the jaws are fixed per beam.
    max_jaw_speed_mm_s : float
    max_cp_spacing_deg : float
        Largest gantry step between arc control points.
    min_segment_mu : float
        Smallest MU of a step-and-shoot segment.
    segment_overhead_s : float
        Beam hold and MLC verification per step-and-shoot segment.
    beam_overhead_s : float
        Per beam or arc: beam ramp-up and record-and-verify handshake.
    max_leaf_span_mm : float
        Largest distance between the tips of the most extended and the most
        retracted leaf of one bank (leaf length on the carriage; ~15 cm on
        120-leaf MLCs).
    couch_speed_deg_s : float
        Couch rotation speed between non-coplanar beams (plan time only).
    """

    max_leaf_speed_mm_s: float = 25.0
    max_gantry_speed_deg_s: float = 6.0
    max_dose_rate_mu_min: float = 600.0
    min_leaf_gap_mm: float = 0.5
    mu_per_deg_range: tuple[float, float] = (0.5, 10.0)
    jaw_tracking: bool = True
    max_jaw_speed_mm_s: float = 20.0
    max_cp_spacing_deg: float = 4.0
    min_segment_mu: float = 2.0
    segment_overhead_s: float = 1.0
    beam_overhead_s: float = 15.0
    max_leaf_span_mm: float = 150.0
    couch_speed_deg_s: float = 3.0

    def __post_init__(self) -> None:
        for name in ("max_leaf_speed_mm_s", "max_gantry_speed_deg_s", "max_dose_rate_mu_min",
                     "max_jaw_speed_mm_s", "max_cp_spacing_deg", "max_leaf_span_mm",
                     "couch_speed_deg_s"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"delivery limit {name} must be positive, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        for name in ("min_leaf_gap_mm", "min_segment_mu", "segment_overhead_s", "beam_overhead_s"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v >= 0):
                raise InputError(f"delivery limit {name} must be >= 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        rng = tuple(float(v) for v in self.mu_per_deg_range)
        if len(rng) != 2 or not (0 <= rng[0] < rng[1]):
            raise InputError(f"delivery limit mu_per_deg_range must be (lo, hi) with 0 <= lo < hi, "
                             f"got {self.mu_per_deg_range!r}")
        object.__setattr__(self, "mu_per_deg_range", rng)

    @property
    def max_dose_rate_mu_s(self) -> float:
        return self.max_dose_rate_mu_min / 60.0

    @classmethod
    def from_yaml(cls, path: str | Path, preset: str | None = None) -> "DeliveryLimits":
        """Limits from a YAML mapping (or its section ``preset``)."""
        return _build(cls, _read_yaml(path, preset), f"delivery limits {path}" + (f" [{preset}]" if preset else ""))

    @classmethod
    def flattened(cls) -> "DeliveryLimits":
        """Flattened 6 MV beam, 600 MU/min (packaged ``delivery_limits.yaml``)."""
        return cls.from_yaml(_packaged("delivery_limits.yaml"), "flattened")

    @classmethod
    def fff(cls) -> "DeliveryLimits":
        """Flattening-filter-free 6 MV beam, 1400 MU/min (packaged ``delivery_limits.yaml``)."""
        return cls.from_yaml(_packaged("delivery_limits.yaml"), "fff")


def max_leaf_travel_mm(limits: DeliveryLimits, gantry_step_deg: float, mu: float | None = None) -> float:
    """Largest leaf travel allowed between two control points.

    The interval lasts at least the gantry rotation at full speed and, when
    ``mu`` is given, the MU at the maximum dose rate; the leaves may move at
    full speed during that time.
    """
    t = abs(float(gantry_step_deg)) / limits.max_gantry_speed_deg_s
    if mu is not None:
        t = max(t, max(float(mu), 0.0) / limits.max_dose_rate_mu_s)
    return limits.max_leaf_speed_mm_s * t


# ------------------------------------------------------------------- violations
class ViolationKind(str, enum.Enum):
    MLC_MISMATCH = "MLC_MISMATCH"          # aperture leaf count differs from the beam's MLC
    LEAF_GAP = "LEAF_GAP"                  # opposing leaves closer than min_leaf_gap_mm
    LEAF_POSITION = "LEAF_POSITION"        # leaf or jaw beyond the carriage range
    LEAF_SPAN = "LEAF_SPAN"                # leaves of one bank spread wider than the carriage allows
    INTERDIGITATION = "INTERDIGITATION"    # leaf passes the opposing neighbour (MLC forbids it)
    LEAF_SPEED = "LEAF_SPEED"              # leaf travel larger than the interval allows
    JAW_SPEED = "JAW_SPEED"
    JAW_MOTION = "JAW_MOTION"              # jaws move although jaw tracking is off
    MU_PER_DEGREE = "MU_PER_DEGREE"        # arc interval outside mu_per_deg_range
    CP_SPACING = "CP_SPACING"              # arc control points too far apart
    ARC_DIRECTION = "ARC_DIRECTION"        # gantry does not advance in the stated direction
    SEGMENT_MU = "SEGMENT_MU"              # step-and-shoot segment below min_segment_mu
    SEGMENT_MOTION = "SEGMENT_MOTION"      # leaves move while a step-and-shoot segment is on


@dataclass(frozen=True)
class Violation:
    """One delivery-limit violation.

    ``control_point`` is the index of the offending control point; for
    interval quantities (speeds, MU per degree, spacing) it is the control
    point that ends the interval.
    """

    beam: str
    control_point: int
    kind: ViolationKind
    value: float
    limit: float
    message: str


def _gantry_step(g0: float, g1: float, direction: str) -> tuple[float, bool]:
    """Gantry step (deg, >= 0) and whether it follows ``direction``."""
    cw = (g1 - g0) % 360.0
    ccw = (g0 - g1) % 360.0
    d = direction.upper()
    if d == "CW":
        return cw, cw <= 180.0
    if d in ("CC", "CCW"):
        return ccw, ccw <= 180.0
    return min(cw, ccw), True


def _leaf_travel(a0: Aperture, a1: Aperture) -> tuple[float, int]:
    d = np.maximum(np.abs(a1.leaf_x1_mm - a0.leaf_x1_mm), np.abs(a1.leaf_x2_mm - a0.leaf_x2_mm))
    if d.size == 0:
        return 0.0, -1
    i = int(np.argmax(d))
    return float(d[i]), i


def _jaw_travel(a0: Aperture, a1: Aperture) -> float:
    return float(max(np.max(np.abs(np.subtract(a1.jaw_x_mm, a0.jaw_x_mm))),
                     np.max(np.abs(np.subtract(a1.jaw_y_mm, a0.jaw_y_mm)))))


def _check_aperture(beam: Beam, k: int, ap: Aperture, limits: DeliveryLimits, out: list[Violation]) -> None:
    mlc = beam.mlc
    if ap.n_pairs != mlc.n_pairs:
        out.append(Violation(beam.name, k, ViolationKind.MLC_MISMATCH, ap.n_pairs, mlc.n_pairs,
                             f"beam '{beam.name}' CP {k}: {ap.n_pairs} leaf pairs, {mlc.name} has {mlc.n_pairs}"))
        return
    gap = ap.leaf_x2_mm - ap.leaf_x1_mm
    i = int(np.argmin(gap))
    if gap[i] < limits.min_leaf_gap_mm - _TOL_MM:
        out.append(Violation(beam.name, k, ViolationKind.LEAF_GAP, float(gap[i]), limits.min_leaf_gap_mm,
                             f"beam '{beam.name}' CP {k}: leaf pair {i + 1} gap {gap[i]:.2f} mm "
                             f"< minimum {limits.min_leaf_gap_mm:.2f} mm"))
    lim = mlc.max_position_mm
    pos = np.concatenate([np.abs(ap.leaf_x1_mm), np.abs(ap.leaf_x2_mm), np.abs(ap.jaw_x_mm), np.abs(ap.jaw_y_mm)])
    if pos.max() > lim + _TOL_MM:
        out.append(Violation(beam.name, k, ViolationKind.LEAF_POSITION, float(pos.max()), lim,
                             f"beam '{beam.name}' CP {k}: a leaf or jaw at {pos.max():.1f} mm is beyond "
                             f"the {lim:.0f} mm range"))
    for bank, xs in (("X1", ap.leaf_x1_mm), ("X2", ap.leaf_x2_mm)):
        span = float(xs.max() - xs.min())
        if span > limits.max_leaf_span_mm + _TOL_MM:
            out.append(Violation(beam.name, k, ViolationKind.LEAF_SPAN, span, limits.max_leaf_span_mm,
                                 f"beam '{beam.name}' CP {k}: bank {bank} leaves spread over {span:.1f} mm "
                                 f"> {limits.max_leaf_span_mm:.1f} mm"))
    if not mlc.max_interdigitation and ap.n_pairs > 1:
        over = np.maximum(ap.leaf_x1_mm[1:] - ap.leaf_x2_mm[:-1], ap.leaf_x1_mm[:-1] - ap.leaf_x2_mm[1:])
        j = int(np.argmax(over))
        if over[j] > _TOL_MM:
            out.append(Violation(beam.name, k, ViolationKind.INTERDIGITATION, float(over[j]), 0.0,
                                 f"beam '{beam.name}' CP {k}: leaves of pairs {j + 1} and {j + 2} interdigitate "
                                 f"by {over[j]:.1f} mm ({mlc.name} does not allow it)"))


def _beam_violations(beam: Beam, limits: DeliveryLimits) -> list[Violation]:
    out: list[Violation] = []
    cps = beam.control_points
    for k, cp in enumerate(cps):
        _check_aperture(beam, k, cp.aperture, limits, out)
    if any(v.kind is ViolationKind.MLC_MISMATCH for v in out):
        return out
    mu = beam.segment_mu()
    arc = beam.is_arc or beam.technique is Technique.VMAT
    if not limits.jaw_tracking:
        j0 = cps[0].aperture
        for k, cp in enumerate(cps[1:], start=1):
            moved = _jaw_travel(j0, cp.aperture)
            if moved > _TOL_MM:
                out.append(Violation(beam.name, k, ViolationKind.JAW_MOTION, moved, 0.0,
                                     f"beam '{beam.name}' CP {k}: jaws differ from CP 0 by {moved:.1f} mm "
                                     f"but jaw tracking is off (fixed jaws)"))
    if len(cps) < 2:
        return out
    lo, hi = limits.mu_per_deg_range
    for i in range(len(cps) - 1):
        k = i + 1
        a0, a1 = cps[i].aperture, cps[k].aperture
        travel, leaf = _leaf_travel(a0, a1)
        jaws = _jaw_travel(a0, a1)
        if arc:
            dg, ok = _gantry_step(cps[i].gantry_deg, cps[k].gantry_deg, beam.arc_direction)
            if not ok or dg == 0.0:
                out.append(Violation(beam.name, k, ViolationKind.ARC_DIRECTION, dg, 180.0,
                                     f"beam '{beam.name}' CP {k}: gantry {cps[i].gantry_deg:.1f} -> "
                                     f"{cps[k].gantry_deg:.1f} deg does not advance {beam.arc_direction}"))
                continue
            if dg > limits.max_cp_spacing_deg + 1e-6:
                out.append(Violation(beam.name, k, ViolationKind.CP_SPACING, dg, limits.max_cp_spacing_deg,
                                     f"beam '{beam.name}' CP {k}: {dg:.2f} deg from the previous control point "
                                     f"> {limits.max_cp_spacing_deg:.2f} deg"))
            mpd = mu[i] / dg
            if mpd < lo - _TOL_MU / dg or mpd > hi + _TOL_MU / dg:
                out.append(Violation(beam.name, k, ViolationKind.MU_PER_DEGREE, float(mpd), lo if mpd < lo else hi,
                                     f"beam '{beam.name}' CP {i}->{k}: {mpd:.2f} MU/deg outside "
                                     f"[{lo:g}, {hi:g}]"))
            allowed = max_leaf_travel_mm(limits, dg, mu[i])
            if travel > allowed + _TOL_MM:
                out.append(Violation(beam.name, k, ViolationKind.LEAF_SPEED, travel, allowed,
                                     f"beam '{beam.name}' CP {i}->{k}: leaf pair {leaf + 1} moves {travel:.1f} mm, "
                                     f"at most {allowed:.1f} mm in {dg:.1f} deg with {mu[i]:.1f} MU"))
            if limits.jaw_tracking:
                t = allowed / limits.max_leaf_speed_mm_s
                jaw_allowed = limits.max_jaw_speed_mm_s * t
                if jaws > jaw_allowed + _TOL_MM:
                    out.append(Violation(beam.name, k, ViolationKind.JAW_SPEED, jaws, jaw_allowed,
                                         f"beam '{beam.name}' CP {i}->{k}: a jaw moves {jaws:.1f} mm, at most "
                                         f"{jaw_allowed:.1f} mm allowed"))
        elif beam.technique is Technique.SLIDING_WINDOW:
            # leaves move while the beam is on: the MU at the maximum dose rate set the time
            allowed = max_leaf_travel_mm(limits, 0.0, mu[i])
            if travel > allowed + _TOL_MM:
                out.append(Violation(beam.name, k, ViolationKind.LEAF_SPEED, travel, allowed,
                                     f"beam '{beam.name}' CP {i}->{k}: leaf pair {leaf + 1} moves {travel:.1f} mm, "
                                     f"at most {allowed:.1f} mm with {mu[i]:.1f} MU"))
        elif beam.technique is Technique.STEP_AND_SHOOT or beam.technique is Technique.STATIC:
            if mu[i] > _TOL_MU and (travel > _TOL_MM or jaws > _TOL_MM):
                out.append(Violation(beam.name, k, ViolationKind.SEGMENT_MOTION, max(travel, jaws), 0.0,
                                     f"beam '{beam.name}' CP {i}->{k}: leaves or jaws move by "
                                     f"{max(travel, jaws):.1f} mm while {mu[i]:.1f} MU are delivered"))
            if _TOL_MU < mu[i] < limits.min_segment_mu - _TOL_MU:
                out.append(Violation(beam.name, k, ViolationKind.SEGMENT_MU, float(mu[i]), limits.min_segment_mu,
                                     f"beam '{beam.name}' segment ending at CP {k}: {mu[i]:.2f} MU "
                                     f"< minimum {limits.min_segment_mu:.2f} MU"))
    return out


def check_deliverability(beam_set: BeamSet | Beam | list[Beam], limits: DeliveryLimits) -> list[Violation]:
    """Every delivery-limit violation of the beams, with beam name and control point.

    An empty list means the plan is deliverable as planned under ``limits``.
    """
    if isinstance(beam_set, Beam):
        beams = [beam_set]
    elif isinstance(beam_set, BeamSet):
        beams = beam_set.beams
    else:
        beams = list(beam_set)
    out: list[Violation] = []
    for b in beams:
        out.extend(_beam_violations(b, limits))
    return out


# ------------------------------------------------------------------- enforcement
def with_fixed_jaws(beam: Beam) -> Beam:
    """A copy of ``beam`` whose jaws are fixed at the union of all its jaw openings.

    Use it when the machine has no jaw tracking (``jaw_tracking=False``); the
    delivered fluence is unchanged up to MLC transmission under the jaws.
    """
    jx0 = min(cp.aperture.jaw_x_mm[0] for cp in beam.control_points)
    jx1 = max(cp.aperture.jaw_x_mm[1] for cp in beam.control_points)
    jy0 = min(cp.aperture.jaw_y_mm[0] for cp in beam.control_points)
    jy1 = max(cp.aperture.jaw_y_mm[1] for cp in beam.control_points)
    cps = [ControlPoint(cp.gantry_deg, Aperture(cp.aperture.leaf_x1_mm, cp.aperture.leaf_x2_mm, (jx0, jx1), (jy0, jy1)),
                        cp.cumulative_weight) for cp in beam.control_points]
    return dataclasses.replace(beam, control_points=cps)


# ---------------------------------------------------------------- delivery time
def interval_times_s(beam: Beam, limits: DeliveryLimits) -> np.ndarray:
    """Duration (s) of each control-point interval: the slowest of gantry, dose rate, leaves and jaws."""
    cps = beam.control_points
    if len(cps) < 2:
        return np.array([beam.mu / limits.max_dose_rate_mu_s])
    mu = beam.segment_mu()
    t = np.zeros(len(cps) - 1)
    for i in range(len(cps) - 1):
        a0, a1 = cps[i].aperture, cps[i + 1].aperture
        if a0.n_pairs != a1.n_pairs:
            raise GeometryError(f"beam '{beam.name}': control points {i} and {i + 1} have different leaf counts")
        dg, _ = _gantry_step(cps[i].gantry_deg, cps[i + 1].gantry_deg, beam.arc_direction)
        travel, _ = _leaf_travel(a0, a1)
        parts = [dg / limits.max_gantry_speed_deg_s, mu[i] / limits.max_dose_rate_mu_s,
                 travel / limits.max_leaf_speed_mm_s]
        if limits.jaw_tracking:
            parts.append(_jaw_travel(a0, a1) / limits.max_jaw_speed_mm_s)
        t[i] = max(parts)
    return t


def estimate_delivery_time(beam: Beam, limits: DeliveryLimits) -> float:
    """Estimated delivery time of one beam or arc in seconds.

    Sum over control-point intervals of the slowest of gantry rotation, dose
    rate, leaf and jaw motion (:func:`interval_times_s`); step-and-shoot and
    static beams add ``segment_overhead_s`` per segment (intervals delivering
    MU); every beam adds ``beam_overhead_s``.
    """
    t = float(interval_times_s(beam, limits).sum())
    if not (beam.is_arc or beam.technique is Technique.VMAT):
        n_seg = int(np.count_nonzero(beam.segment_mu() > 0))
        t += limits.segment_overhead_s * n_seg
    return t + limits.beam_overhead_s


def estimate_plan_time(beam_set: BeamSet, limits: DeliveryLimits) -> float:
    """Estimated delivery time (s) of all beams of a plan, in their order.

    The sum of :func:`estimate_delivery_time` plus the moves between
    consecutive beams: gantry from the last control point of one beam to the
    first of the next at full speed, and the couch rotation at
    ``couch_speed_deg_s``, whichever is slower (remote couch rotation assumed;
    entering the room is not counted).
    """
    t = 0.0
    prev = None
    for b in beam_set.beams:
        t += estimate_delivery_time(b, limits)
        if prev is not None:
            dg = abs(((b.control_points[0].gantry_deg - prev.control_points[-1].gantry_deg) + 180.0) % 360.0 - 180.0)
            dc = abs(((b.couch_deg - prev.couch_deg) + 180.0) % 360.0 - 180.0)
            t += max(dg / limits.max_gantry_speed_deg_s, dc / limits.couch_speed_deg_s)
        prev = b
    return float(t)

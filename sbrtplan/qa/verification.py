"""Verification plans: a patient plan's beams delivered on a QA phantom, and the dose there.

The beams or arcs are transferred unchanged -- MU, control points, apertures,
collimator -- with the isocentre moved to the phantom's reference point (the
chamber centre), and the gantry and the couch either as planned or collapsed to
0 degrees.  One fraction is delivered (the phantom receives what the patient
receives in one session): the verification plan has ``n_fractions = 1`` and
the beams' MU per fraction.

The dose is the project's forward dose of the RTPLAN's apertures
(:func:`sbrtplan.dose_engine.forward_dose`, the same call as
``sbrtplan recompute``) on a grid of at most 2 mm.  From it come

* the chamber dose: the mean over the chamber's sensitive volume (a cylinder
  along the phantom's chamber axis, sampled every 0.25 mm, the 3D dose
  interpolated trilinearly), and the dose at its centre;
* the dose plane at the detector position (coronal through the reference point
  by default), see :mod:`sbrtplan.qa.plane`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import map_coordinates

from .._log import Timings, get_logger, timed
from ..beams import BeamSet, ControlPoint
from ..case import Case, Dose
from ..errors import InputError
from .criteria import Chamber, QACriteria, load_criteria
from .plane import DosePlane, PlaneOrientation, plane_from_volume

log = get_logger(__name__)


class AxisMode(str, enum.Enum):
    """Gantry or couch angle of the verification beams."""

    PLANNED = "planned"
    ZERO = "zero"


@dataclass
class VerificationResult:
    """The verification plan and its dose on the phantom (one fraction)."""

    beam_set: BeamSet
    case: Case                      # the phantom on the dose grid
    dose: Dose
    reference_point_mm: tuple[float, float, float]
    chamber: Chamber
    chamber_axis: str
    chamber_dose_gy: float          # mean over the sensitive volume
    point_dose_gy: float            # at the chamber centre
    chamber_n_samples: int
    plane: DosePlane
    gantry: AxisMode
    couch: AxisMode
    timings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        d = self.dose.dose_gy
        return {
            "phantom": self.case.name,
            "reference_point_mm": [round(float(v), 3) for v in self.reference_point_mm],
            "gantry": self.gantry.value, "couch": self.couch.value,
            "n_beams": len(self.beam_set.beams),
            "mu_per_fraction": round(self.beam_set.total_mu_per_fraction, 2),
            "fractions_delivered": self.beam_set.n_fractions,
            "dose_grid_mm": [round(float(s), 4) for s in self.dose.grid.spacing_mm],
            "dose_grid_shape_zyx": list(self.dose.grid.shape),
            "max_dose_gy": round(float(d.max()), 5),
            "chamber": {"model": self.chamber.name, "label": self.chamber.label,
                        "radius_mm": self.chamber.radius_mm, "length_mm": self.chamber.length_mm,
                        "axis": self.chamber_axis, "n_samples": self.chamber_n_samples,
                        "volume_averaged_dose_gy": round(self.chamber_dose_gy, 5),
                        "centre_dose_gy": round(self.point_dose_gy, 5)},
            "plane": {"orientation": self.plane.orientation.value, "offset_mm": self.plane.offset_mm,
                      "n_u": int(self.plane.u_mm.size), "n_v": int(self.plane.v_mm.size),
                      "max_dose_gy": round(self.plane.max_gy, 5)},
            "seconds": {k: round(v, 2) for k, v in self.timings.items()},
        }


def check_plan_mu(beam_set: BeamSet, source: str) -> None:
    """One-line error when the plan or one of its beams delivers no MU."""
    if not beam_set.beams:
        raise InputError(f"{source}: the plan has no treatment beam with MU")
    for b in beam_set.beams:
        if not (math.isfinite(b.mu) and b.mu > 0):
            raise InputError(f"{source}: beam '{b.name}' has no MU (BeamMeterset {b.mu!r}); a verification "
                             "plan needs the MU of every beam")


def transfer_beams(beam_set: BeamSet, reference_point_mm, *, gantry: AxisMode = AxisMode.PLANNED,
                   couch: AxisMode = AxisMode.PLANNED, patient_position: str = "HFS",
                   source: str = "plan") -> BeamSet:
    """The verification beam set: the same beams, isocentre on ``reference_point_mm``, one fraction."""
    check_plan_mu(beam_set, source)
    gantry, couch = AxisMode(gantry), AxisMode(couch)
    iso = tuple(float(v) for v in reference_point_mm)
    if len(iso) != 3 or not all(math.isfinite(v) for v in iso):
        raise InputError(f"reference point must be three finite coordinates in mm, got {reference_point_mm!r}")
    beams = []
    for b in beam_set.beams:
        cps = b.control_points
        if gantry is AxisMode.ZERO:
            cps = [ControlPoint(0.0, cp.aperture.copy(), cp.cumulative_weight) for cp in cps]
        else:
            cps = [ControlPoint(cp.gantry_deg, cp.aperture.copy(), cp.cumulative_weight) for cp in cps]
        meta = dict(b.metadata)
        meta["qa_source_isocenter_mm"] = tuple(float(v) for v in b.isocenter_mm)
        meta["qa_source_couch_deg"] = float(b.couch_deg)
        beams.append(replace(b, control_points=cps, isocenter_mm=iso,
                             couch_deg=0.0 if couch is AxisMode.ZERO else b.couch_deg,
                             arc_direction="NONE" if gantry is AxisMode.ZERO else b.arc_direction,
                             patient_position=patient_position, metadata=meta))
    per_fx = beam_set.prescription_gy / max(beam_set.n_fractions, 1)
    return BeamSet(beams, n_fractions=1, prescription_gy=per_fx, machine_name=beam_set.machine_name,
                   label=f"QA {beam_set.label}"[:64])


def chamber_samples(chamber: Chamber, centre_mm, axis: str, step_mm: float) -> np.ndarray:
    """Points (n, 3) of a cubic lattice of ``step_mm`` inside the chamber's cylinder (centred lattice)."""
    k = "xyz".index(axis)
    r, half = chamber.radius_mm, 0.5 * chamber.length_mm
    na = int(math.floor(half / step_mm + 1e-9))
    nr = int(math.floor(r / step_mm + 1e-9))
    a = np.arange(-na, na + 1) * step_mm
    t = np.arange(-nr, nr + 1) * step_mm
    p, q = np.meshgrid(t, t, indexing="ij")
    keep = p * p + q * q <= r * r + 1e-9
    p, q = p[keep], q[keep]
    pts = np.zeros((a.size * p.size, 3))
    others = [i for i in range(3) if i != k]
    pts[:, k] = np.repeat(a, p.size)
    pts[:, others[0]] = np.tile(p, a.size)
    pts[:, others[1]] = np.tile(q, a.size)
    return pts + np.asarray(centre_mm, float)[None, :]


def interpolate_dose(dose_gy: np.ndarray, grid, points_mm) -> np.ndarray:
    """Trilinear dose at patient points (n, 3); NaN outside the grid's voxel centres."""
    idx = grid.index_from_patient(np.asarray(points_mm, float))          # (n, 3) k, j, i
    upper = np.asarray(grid.shape) - 1
    ok = np.all((idx >= -1e-6) & (idx <= upper + 1e-6), axis=1)
    out = np.full(idx.shape[0], np.nan)
    if ok.any():
        out[ok] = map_coordinates(np.asarray(dose_gy, np.float64), np.clip(idx[ok], 0, upper).T, order=1)
    return out


def verify_on_phantom(phantom: Case, beam_set: BeamSet, *, reference_point_mm=None,
                      gantry: AxisMode = AxisMode.PLANNED, couch: AxisMode = AxisMode.PLANNED,
                      chamber: str | None = None, chamber_axis: str | None = None,
                      plane_orientation: PlaneOrientation | str | None = None, plane_offset_mm: float = 0.0,
                      region_half_mm: float | None = None, criteria: QACriteria | None = None, model=None,
                      source: str = "plan", progress=None) -> VerificationResult:
    """Transfer ``beam_set`` onto ``phantom`` and compute the verification dose, chamber dose and plane.

    Parameters
    ----------
    phantom : Case
        The QA phantom on its dose grid (spacing <= ``criteria.max_grid_mm``):
        a built-in phantom (``make_phantom('qa_slab', 2.0)``) or a phantom CT
        resampled with :func:`sbrtplan.case.resample_case`.
    beam_set : BeamSet
        The patient plan (:func:`sbrtplan.io.read_rtplan`).
    reference_point_mm : (x, y, z), optional
        Chamber centre and new isocentre (default: ``phantom.metadata['reference_point_mm']``).
    gantry, couch : AxisMode
        As planned, or collapsed to 0 degrees.
    chamber : str, optional
        Chamber model of the criteria file (default: its ``default_chamber``).
    chamber_axis : {'x', 'y', 'z'}, optional
        Default: ``phantom.metadata['chamber_axis']`` or z.
    plane_orientation, plane_offset_mm
        The detector plane (default: the phantom's, else coronal) and its
        offset from the reference point along its normal.
    region_half_mm : float, optional
        Compute the dose only within this distance (per axis) of the reference
        point (quick checks); default: the whole phantom.
    criteria : QACriteria, optional
    model : BeamModel, optional
        Default: the engine's default beam model.
    progress : callable(done, total), optional
    """
    from ..dose_engine import forward_dose

    crit = criteria or load_criteria()
    ch = crit.chamber(chamber)
    g = phantom.grid
    if max(g.spacing_mm) > crit.max_grid_mm + 1e-9:
        raise InputError(f"phantom '{phantom.name}': dose grid {max(g.spacing_mm):g} mm is coarser than the "
                         f"{crit.max_grid_mm:g} mm the QA criteria require")
    ref = reference_point_mm if reference_point_mm is not None else phantom.metadata.get("reference_point_mm")
    if ref is None:
        raise InputError(f"phantom '{phantom.name}': no reference point (chamber position); give one in mm")
    ref = np.asarray(ref, dtype=float).reshape(-1)
    if ref.size != 3 or not np.all(np.isfinite(ref)) or not bool(g.contains(ref)):
        raise InputError(f"reference point {tuple(ref)} mm must be three finite coordinates inside the phantom grid")
    axis = (chamber_axis or phantom.metadata.get("chamber_axis") or "z").lower()
    if axis not in ("x", "y", "z"):
        raise InputError(f"chamber axis must be x, y or z, got {chamber_axis!r}")
    if plane_orientation is None:
        plane_orientation = (phantom.metadata.get("detector_plane") or {}).get("orientation", "coronal")
    orient = PlaneOrientation.parse(plane_orientation, "--plane")
    if not math.isfinite(float(plane_offset_mm)):
        raise InputError(f"--plane-offset-mm must be finite, got {plane_offset_mm!r}")
    if region_half_mm is not None and not (math.isfinite(region_half_mm) and region_half_mm > 0):
        raise InputError(f"region half-size must be a positive number of mm, got {region_half_mm!r}")

    timings = Timings()
    vset = transfer_beams(beam_set, ref, gantry=gantry, couch=couch, patient_position=phantom.patient_position,
                          source=source)
    body = phantom.body.mask if phantom.body is not None else phantom.density > 0.05
    sel = body & (phantom.density > 0.05)
    if region_half_mm is not None:
        x, y, z = g.axis_coordinates_mm()
        near = [np.abs(c - r) <= region_half_mm for c, r in zip((x, y, z), ref)]
        sel &= near[2][:, None, None] & near[1][None, :, None] & near[0][None, None, :]
    idx = np.flatnonzero(sel)
    if idx.size == 0:
        raise InputError(f"phantom '{phantom.name}': no phantom voxel to compute")
    with timed(f"QA verification dose on '{phantom.name}' ({idx.size} voxels)", log, timings):
        dose = forward_dose(phantom.density, g, vset, model=model, voxel_indices=idx,
                            max_gantry_step_deg=crit.max_gantry_step_deg, max_leaf_step_mm=crit.max_leaf_step_mm,
                            progress=progress)
    dose = np.maximum(np.asarray(dose, dtype=np.float64).reshape(g.shape), 0.0)
    pts = chamber_samples(ch, ref, axis, crit.chamber_sampling_mm)
    vals = interpolate_dose(dose, g, pts)
    kji = np.clip(np.rint(g.index_from_patient(pts)).astype(int), 0, np.asarray(g.shape) - 1)
    if np.any(~np.isfinite(vals)) or not np.all(sel[kji[:, 0], kji[:, 1], kji[:, 2]]):
        raise InputError(f"chamber {ch.name} at {tuple(ref)} mm is not inside the computed phantom region")
    centre = float(interpolate_dose(dose, g, ref[None, :])[0])
    plane = plane_from_volume(dose, g, ref, orient, float(plane_offset_mm), source=f"calculated ({phantom.name})")
    d = Dose(g, dose.astype(np.float32), description=f"sbrtplan QA verification on {phantom.name}",
             per_fraction=False)
    t = timings.as_dict()
    return VerificationResult(vset, phantom, d, tuple(float(v) for v in ref), ch, axis, float(np.mean(vals)), centre,
                              int(pts.shape[0]), plane, AxisMode(gantry), AxisMode(couch), t)


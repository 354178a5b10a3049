"""Collision model of a C-arm linac: gantry head, couch and patient body.

Model (all distances configurable, see ``beams/data/collision_default.yaml``)
-----------------------------------------------------------------------------
* **Gantry head**: a solid cylinder about the beam axis, in IEC GANTRY
  coordinates ``z_g in [head_radius_mm, head_radius_mm + head_depth_mm]``,
  ``sqrt(x_g^2 + y_g^2) <= head_face_radius_mm``.  ``head_radius_mm`` is the
  clearance from the isocentre to the head's face.  The gantry stand and the
  imaging arms are not modelled (retracted imagers are assumed).
* **Couch**: a rectangular slab in IEC PATIENT SUPPORT coordinates (it turns
  with the couch angle about the vertical axis through the isocentre), width
  ``couch_width_mm`` along ``X_s``, from ``-couch_length_foot_mm`` to
  ``+couch_length_head_mm`` along ``Y_s`` (towards the gantry at couch 0),
  top ``couch_top_below_iso_mm`` below the isocentre, ``couch_thickness_mm``
  thick.  With a body outline the couch top is placed under the lowest body
  point and the slab is centred on the body laterally, so a lateral
  isocentre moves the couch the other way.
* **Patient**: the surface of the body outline (EXTERNAL structure),
  continued ``body_extension_mm`` beyond the scanned slices by repeating the
  end slices' outline (the patient does not end where the CT does).

A gantry/couch pair collides when a sampled couch point comes closer to the
head than ``couch_clearance_mm``, or a body point closer than
``body_clearance_mm``.  Surfaces are sampled every ``sampling_mm``; the
clearance is therefore known to about ``sampling_mm * sqrt(2) / 2``, which
the clearances absorb.  The model is geometric only: it says nothing about
the beam passing through the couch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._log import get_logger
from ..case import Structure
from ..errors import GeometryError, InputError
from .geometry import BeamGeometry, _rot_y, _rot_z, patient_to_fixed
from .limits import _build, _packaged, _read_yaml

log = get_logger(__name__)


@dataclass(frozen=True)
class CollisionResult:
    """Outcome of one collision check.

    ``clearance_mm`` is the smallest distance between the head and the couch
    or body minus the required clearance (negative: collision).
    """

    ok: bool
    reason: str
    clearance_mm: float = float("inf")

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class CollisionModel:
    """Gantry head, couch and body geometry (see the module docstring). Distances in mm."""

    head_radius_mm: float = 400.0
    head_face_radius_mm: float = 330.0
    head_depth_mm: float = 600.0
    couch_width_mm: float = 530.0
    couch_thickness_mm: float = 60.0
    couch_top_below_iso_mm: float = 150.0
    couch_lateral_offset_mm: float = 0.0
    couch_length_foot_mm: float = 1500.0
    couch_length_head_mm: float = 600.0
    body_clearance_mm: float = 20.0
    couch_clearance_mm: float = 10.0
    body_extension_mm: float = 300.0
    sampling_mm: float = 5.0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.init:
                continue
            v = float(getattr(self, f.name))
            allow_negative = f.name == "couch_lateral_offset_mm" or f.name == "couch_top_below_iso_mm"
            if not np.isfinite(v) or (v < 0 and not allow_negative):
                raise InputError(f"collision model parameter {f.name} must be a finite "
                                 f"{'number' if allow_negative else 'value >= 0'}, got {getattr(self, f.name)!r}")
            setattr(self, f.name, v)
        if self.sampling_mm <= 0:
            raise InputError(f"collision model sampling_mm must be positive, got {self.sampling_mm}")
        if self.head_radius_mm <= 0 or self.head_face_radius_mm <= 0:
            raise InputError("collision model head_radius_mm and head_face_radius_mm must be positive")

    # ------------------------------------------------------------- construction
    @classmethod
    def from_yaml(cls, path: str | Path) -> "CollisionModel":
        """Model from a YAML mapping of parameter names to values (missing ones keep their default)."""
        return _build(cls, _read_yaml(path), f"collision model {path}")

    @classmethod
    def default(cls) -> "CollisionModel":
        """The packaged default model (``beams/data/collision_default.yaml``)."""
        return cls.from_yaml(_packaged("collision_default.yaml"))

    # ------------------------------------------------------------------- scene
    def _scene(self, isocenter_mm, body, patient_position: str):
        """Couch and body surface points in IEC PATIENT SUPPORT coordinates (cached)."""
        iso = np.asarray(isocenter_mm, float).reshape(3)
        # The cache holds the body object itself, so an identity match cannot be a
        # different object that reuses a freed id (bodies are not modified in place).
        key = (tuple(iso), patient_position.upper())
        hit = self._cache.get("scene")
        if hit is not None and hit[0] is body and hit[1] == key:
            return hit[2]
        p2f = patient_to_fixed(patient_position)
        if body is None:
            body_s = np.zeros((0, 3))
            top = self.couch_top_below_iso_mm
            cx = self.couch_lateral_offset_mm
        else:
            pts = body if isinstance(body, np.ndarray) else body_surface_points(body, self.sampling_mm,
                                                                                self.body_extension_mm)
            q = np.asarray(pts, float) - iso
            body_s = np.column_stack([q[:, 0] * p2f[i, 0] + q[:, 1] * p2f[i, 1] + q[:, 2] * p2f[i, 2]
                                      for i in range(3)])
            if body_s.shape[0] == 0:
                raise GeometryError("body outline is empty: cannot place the couch")
            top = float(-body_s[:, 2].min())
            cx = 0.5 * float(body_s[:, 0].min() + body_s[:, 0].max())
        couch_s = _box_surface((cx - 0.5 * self.couch_width_mm, cx + 0.5 * self.couch_width_mm),
                               (-self.couch_length_foot_mm, self.couch_length_head_mm),
                               (-top - self.couch_thickness_mm, -top), self.sampling_mm)
        # Only points in the spherical shell the head can reach matter: the head
        # cylinder lies between r and sqrt((r + depth)^2 + R_face^2) from the isocentre.
        margin = max(self.body_clearance_mm, self.couch_clearance_mm) + self.sampling_mm
        r_in = self.head_radius_mm - margin
        r_out = np.hypot(self.head_radius_mm + self.head_depth_mm, self.head_face_radius_mm) + margin

        def shell(p):
            d = np.sqrt(np.einsum("ij,ij->i", p, p))
            return np.ascontiguousarray(p[(d >= r_in) & (d <= r_out)])

        couch_s = shell(couch_s)
        body_s = shell(body_s)
        scene = (couch_s, body_s, top, cx)
        self._cache["scene"] = (body, key, scene)
        return scene

    def _clearance(self, pts_s: np.ndarray, gantry_deg: float, couch_deg: float) -> float:
        """Smallest signed distance (mm) from the points to the head cylinder (negative inside)."""
        if pts_s.shape[0] == 0:
            return float("inf")
        # fixed = Rz(couch) @ support ; gantry = Ry(gantry)^T @ fixed
        m = _rot_y(gantry_deg).T @ _rot_z(couch_deg)
        px, py, pz = pts_s[:, 0], pts_s[:, 1], pts_s[:, 2]
        # explicit products: a (N, 3) @ (3, 3) BLAS call is slow under thread contention
        gx = m[0, 0] * px + m[0, 1] * py + m[0, 2] * pz
        gy = m[1, 0] * px + m[1, 1] * py + m[1, 2] * pz
        gz = m[2, 0] * px + m[2, 1] * py + m[2, 2] * pz
        rho = np.hypot(gx, gy)
        dz_out = np.maximum(self.head_radius_mm - gz, gz - self.head_radius_mm - self.head_depth_mm)
        dr_out = rho - self.head_face_radius_mm
        outside = np.hypot(np.maximum(dz_out, 0.0), np.maximum(dr_out, 0.0))
        inside = np.maximum(dz_out, dr_out)  # <= 0 when inside
        d = np.where((dz_out <= 0) & (dr_out <= 0), inside, outside)
        return float(d.min())

    def check(self, gantry_deg: float, couch_deg: float, isocenter_mm, body: Structure | np.ndarray | None = None,
              *, patient_position: str = "HFS") -> CollisionResult:
        """Whether the gantry at ``gantry_deg`` clears couch and body at ``couch_deg``.

        Parameters
        ----------
        gantry_deg, couch_deg : float
            IEC 61217 angles.
        isocenter_mm : (x, y, z)
            Isocentre in patient coordinates.
        body : Structure or (N, 3) array, optional
            Body outline, or its surface points from :func:`body_surface_points`
            (faster when checking many directions).  Without a body only the
            couch is checked, at the model's nominal height.
        patient_position : str
            DICOM patient position of the case.
        """
        couch_s, body_s, _, _ = self._scene(isocenter_mm, body, patient_position)
        label = f"gantry {float(gantry_deg) % 360:.0f} / couch {float(couch_deg) % 360:.0f}"
        c_couch = self._clearance(couch_s, gantry_deg, couch_deg) - self.couch_clearance_mm
        c_body = self._clearance(body_s, gantry_deg, couch_deg) - self.body_clearance_mm
        if c_couch < 0 and c_couch <= c_body:
            return CollisionResult(False, f"{label}: gantry head within {self.couch_clearance_mm:g} mm of the couch "
                                          f"(short by {-c_couch:.0f} mm)", c_couch)
        if c_body < 0:
            return CollisionResult(False, f"{label}: gantry head within {self.body_clearance_mm:g} mm of the "
                                          f"patient (short by {-c_body:.0f} mm)", c_body)
        return CollisionResult(True, f"{label}: clear by {min(c_couch, c_body):.0f} mm", min(c_couch, c_body))


def _box_surface(xr, yr, zr, step: float) -> np.ndarray:
    """Points sampling the surface of an axis-aligned box every ``step`` mm (edges included)."""
    def ax(r):
        n = max(2, int(np.ceil((r[1] - r[0]) / step)) + 1)
        return np.linspace(r[0], r[1], n)

    x, y, z = ax(xr), ax(yr), ax(zr)
    faces = []
    for fixed_axis, vals in ((0, xr), (1, yr), (2, zr)):
        others = [a for a in (0, 1, 2) if a != fixed_axis]
        grids = np.meshgrid(*[(x, y, z)[a] for a in others], indexing="ij")
        for v in vals:
            p = np.empty((grids[0].size, 3))
            p[:, fixed_axis] = v
            p[:, others[0]] = grids[0].ravel()
            p[:, others[1]] = grids[1].ravel()
            faces.append(p)
    return np.concatenate(faces)


def body_surface_points(body: Structure, sampling_mm: float = 5.0, extension_mm: float = 300.0) -> np.ndarray:
    """Patient coordinates (N, 3) of points on the body outline's surface.

    Surface voxels (the mask minus its erosion) are thinned to at most one
    per ``sampling_mm`` cube; the outlines of the first and last occupied
    slices are repeated every ``sampling_mm`` up to ``extension_mm`` beyond the
    scan along the slice normal.
    """
    occ = body.mask if body.fraction is None else (body.fraction > 0)
    if not occ.any():
        raise GeometryError(f"body outline '{body.name}' is empty")
    surface = occ & ~ndimage.binary_erosion(occ)
    pts = body.grid.patient_from_index(np.argwhere(surface))
    k_occ = np.flatnonzero(occ.any(axis=(1, 2)))
    extra = []
    if extension_mm > 0:
        normal = body.grid.direction[:, 2]
        n_rep = int(np.ceil(extension_mm / sampling_mm))
        offsets = sampling_mm * np.arange(1, n_rep + 1)
        for k, sign in ((k_occ[0], -1.0), (k_occ[-1], 1.0)):
            sl = occ[k]
            ring = sl & ~ndimage.binary_erosion(sl)
            kji = np.argwhere(ring)
            kji = np.column_stack([np.full(len(kji), k), kji])
            base = body.grid.patient_from_index(kji)
            extra.append((base[None, :, :] + sign * offsets[:, None, None] * normal[None, None, :]).reshape(-1, 3))
    allp = np.concatenate([pts] + extra) if extra else pts
    cell = np.floor(allp / sampling_mm).astype(np.int64)
    _, first = np.unique(cell, axis=0, return_index=True)
    return allp[np.sort(first)]


def candidate_directions(case_or_body, isocenter_mm, *, model: CollisionModel | None = None,
                         gantry_step_deg: float = 20.0,
                         couches_deg=(0, 15, 30, 45, 315, 330, 345),
                         patient_position: str | None = None) -> list[BeamGeometry]:
    """Non-colliding beam directions on a gantry x couch lattice.

    Parameters
    ----------
    case_or_body : Case, Structure or None
        The case (its EXTERNAL structure is used) or the body outline; None
        checks the couch only.
    isocenter_mm : (x, y, z)
    model : CollisionModel, optional
        Default :meth:`CollisionModel.default`.
    gantry_step_deg : float
        Gantry lattice spacing, starting at 0.
    couches_deg : sequence of float
    patient_position : str, optional
        Default: the case's patient position if it has one, else "HFS".

    Returns
    -------
    list of BeamGeometry
        Sorted by couch then gantry, collimator 0, ``isocenter_mm``.
    """
    if not (np.isfinite(gantry_step_deg) and 0 < gantry_step_deg <= 180):
        raise InputError(f"gantry_step_deg must be in (0, 180], got {gantry_step_deg!r}")
    model = model or CollisionModel.default()
    body = case_or_body
    position = patient_position
    if body is not None and not isinstance(body, Structure):
        case = body
        body = getattr(case, "body", None)
        if position is None:
            position = getattr(case, "patient_position", None)
    position = position or "HFS"
    pts = None if body is None else body_surface_points(body, model.sampling_mm, model.body_extension_mm)
    gantries = np.arange(0.0, 360.0 - 1e-9, float(gantry_step_deg))
    couches = sorted({float(c) % 360.0 for c in couches_deg}, key=lambda c: (c > 180, c if c <= 180 else c - 360))
    out: list[BeamGeometry] = []
    n_total = 0
    for c in couches:
        for g in gantries:
            n_total += 1
            if model.check(g, c, isocenter_mm, pts, patient_position=position).ok:
                out.append(BeamGeometry(float(g), 0.0, c, tuple(isocenter_mm), patient_position=position))
    log.info("candidate directions: %d of %d gantry/couch pairs clear", len(out), n_total)
    return out

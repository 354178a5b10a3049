"""Plan-quality indices: isodose volumes, CI (RTOG, Paddick), GI, R50 %, D2cm, HI, V105 outside.

Definitions (digest section 5; ``Rx`` = prescription dose)
-----------------------------------------------------------
* PIV = volume of the Rx isodose inside the body (External when given, else the
  whole dose grid); V50 = volume of the 50 % Rx isodose, likewise.
* TV = PTV volume; TV_PIV = PTV volume receiving >= Rx.
* RTOG CI = PIV / TV (= R100 %); Paddick CI = TV_PIV^2 / (TV x PIV);
  Paddick GI = V50 / PIV; R50 % = V50 / TV.
* D2cm = maximum dose (% Rx) over voxel centres at >= 20 mm from the PTV surface
  (inside the body), with true-mm distances.
* HI (ICRU 83) = (D2 % - D98 %) / D50 % of the PTV.
* V105 outside = body volume outside the PTV receiving >= 105 % Rx, as % of TV.

Isodose volumes are sub-voxel: a voxel whose 3x3x3 neighbourhood lies entirely
above (below) the level counts fully (not at all); a voxel the isodose crosses
counts the fraction of its 4^3 trilinear sub-samples above the level.

The PTV surface for D2cm is sampled by points: the foot of the boundary plane of
every partially occupied voxel (the same planar model as the DVH sub-voxels) and
the mid-point of every grid edge between a full and an empty voxel (binary
masks).  The distance of a voxel to the surface is its distance to the nearest
surface point (k-d tree), computed only in the band where the voxel-centre
distance transform is within one voxel diagonal of 20 mm; voxels further out or
further in are classified by the distance transform alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..case import Structure
from ..errors import InputError, StructureError
from ..protocols.rtog import RtogAssessment, rtog_class
from ._kernels import fraction_above
from .dvh import DVH, DoseField, compute_dvh

D2CM_DISTANCE_MM = 20.0
ISODOSE_SUBDIVISIONS = 4


def _body_weights(field_: DoseField, body: Structure | None) -> np.ndarray | None:
    if body is None:
        return None
    if not body.grid.same_as(field_.grid):
        raise StructureError(f"body structure '{body.name}' is not on the dose grid")
    return body.weights


def isodose_volume_cc(dose, threshold_gy: float, body: Structure | None = None,
                      body_weights: np.ndarray | None = None) -> float:
    """Volume (cc) receiving at least ``threshold_gy`` inside ``body`` (sub-voxel, see module doc)."""
    f = DoseField.of(dose)
    t = float(threshold_gy)
    w = body_weights if body_weights is not None else _body_weights(f, body)
    lo, hi = f.local_min, f.local_max
    full = lo >= t
    cross = (hi >= t) & ~full
    if w is None:
        n_full = float(np.count_nonzero(full))
    else:
        n_full = float(w[full].sum(dtype=np.float64))
    flat = np.flatnonzero(cross.ravel())
    n_part = 0.0
    if flat.size:
        kk, jj, ii = np.unravel_index(flat, f.grid.shape)
        frac = fraction_above(f.dose, kk.astype(np.int64), jj.astype(np.int64), ii.astype(np.int64), t,
                              ISODOSE_SUBDIVISIONS)
        if w is not None:
            frac = frac * w.ravel()[flat]
        n_part = float(frac.sum())
    return (n_full + n_part) * f.grid.voxel_volume_cc


_PLANE_SUBDIVISIONS = 6


def _surface_points_mm(occ: np.ndarray, origin_idx: np.ndarray, grid) -> np.ndarray:
    """Points on the PTV surface in patient mm (see the module docstring).

    * every partially occupied voxel (0 < f < 1) gives the foot of its boundary
      plane: normal = occupancy gradient, offset such that the fraction ``f`` of
      the voxel (``6^3`` sub-points) lies on the inner side;
    * every grid edge between a fully occupied and an empty voxel gives its
      mid-point (binary masks, and contour end caps without partial voxels).
    """
    sp = np.asarray(grid.spacing_zyx_mm, dtype=np.float64)
    pts = []
    occ64 = occ.astype(np.float64)
    part = np.argwhere((occ64 > 0) & (occ64 < 1))
    if part.size:
        grads = np.gradient(occ64, *sp)          # per mm, (z, y, x)
        gvec = np.stack([g[tuple(part.T)] for g in grads], axis=1)
        gnorm = np.linalg.norm(gvec, axis=1)
        ok = gnorm > 1e-12
        part, gvec, gnorm = part[ok], gvec[ok], gnorm[ok]
        n = gvec / gnorm[:, None]                # inward unit normal (z, y, x)
        s = _PLANE_SUBDIVISIONS
        o = (np.arange(s) + 0.5) / s - 0.5
        oz, oy, ox = np.meshgrid(o * sp[0], o * sp[1], o * sp[2], indexing="ij")
        sub = np.stack([oz.ravel(), oy.ravel(), ox.ravel()], axis=1)   # (s^3, 3) mm
        f = occ64[tuple(part.T)]
        offs = np.empty(part.shape[0])
        for c in range(0, part.shape[0], 20000):
            proj = np.sort(n[c:c + 20000] @ sub.T, axis=1)[:, ::-1]    # descending
            # the plane sits where the top f*m sub-points end (interpolated between ranks)
            r = f[c:c + 20000] * proj.shape[1] - 0.5
            r0 = np.clip(np.floor(r).astype(int), 0, proj.shape[1] - 1)
            r1 = np.clip(r0 + 1, 0, proj.shape[1] - 1)
            t = np.clip(r - r0, 0.0, 1.0)
            rows = np.arange(proj.shape[0])
            offs[c:c + 20000] = proj[rows, r0] * (1 - t) + proj[rows, r1] * t
        foot_mm = offs[:, None] * n                  # displacement from the voxel centre, (z, y, x) mm
        # a 3 x 3 patch of points on each plane (spacing a third of a voxel) so that the
        # point cloud, not only the feet, follows the surface between voxel centres
        helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
        t1 = np.cross(n, helper)
        t1 /= np.linalg.norm(t1, axis=1)[:, None]
        t2 = np.cross(n, t1)
        step = float(sp.min()) / 3.0
        half = 0.5 * sp[None, :] + 1e-9
        for u in (-1, 0, 1):
            for v in (-1, 0, 1):
                disp = foot_mm + step * (u * t1 + v * t2)
                keep = np.all(np.abs(disp) <= half, axis=1)   # stay inside the voxel
                pts.append(part[keep].astype(np.float64) + disp[keep] / sp[None, :])
    for axis in range(3):
        a = np.moveaxis(occ64, axis, 0)
        lo, hi = a[:-1], a[1:]
        edge = ((lo >= 1) & (hi <= 0)) | ((lo <= 0) & (hi >= 1))
        idx = np.argwhere(edge).astype(np.float64)
        if idx.size == 0:
            continue
        idx[:, 0] += 0.5
        # moveaxis kept the other two axes in their original order
        others = [ax for ax in range(3) if ax != axis]
        full = np.empty_like(idx)
        full[:, axis] = idx[:, 0]
        full[:, others[0]] = idx[:, 1]
        full[:, others[1]] = idx[:, 2]
        pts.append(full)
    if not pts:
        return np.empty((0, 3))
    return grid.patient_from_index(np.concatenate(pts) + origin_idx[None, :])


@dataclass
class D2cmResult:
    max_dose_gy: float
    n_voxels_region: int


def d2cm_gy(dose, ptv: Structure, body: Structure | None = None,
            distance_mm: float = D2CM_DISTANCE_MM) -> D2cmResult:
    """Maximum dose (Gy) at voxel centres at least ``distance_mm`` from the PTV surface.

    Only voxels inside ``body`` (occupancy >= 0.5) count when a body is given.
    Returns 0 Gy with ``n_voxels_region == 0`` when no voxel is that far; otherwise
    ``n_voxels_region`` counts the voxels beyond the distance-transform band plus
    the band voxels found far enough (the search of the band stops at the hottest
    qualifying voxel, so it is a lower bound of the region's size).
    """
    f = DoseField.of(dose)
    g = f.grid
    if not ptv.grid.same_as(g):
        raise StructureError(f"PTV '{ptv.name}' is not on the dose grid")
    w = ptv.weights
    occupied = w > 0
    if not occupied.any():
        raise StructureError(f"PTV '{ptv.name}' is empty")
    sp = np.asarray(g.spacing_zyx_mm)
    diag = float(np.sqrt((sp ** 2).sum()))
    margin = np.ceil((distance_mm + 2 * diag) / sp).astype(int)
    idx = np.argwhere(occupied)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, np.asarray(g.shape))
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    occ = w[crop]
    inside = occ >= 0.5
    if not inside.any():
        inside = occ > 0
    d_c = ndimage.distance_transform_edt(~inside, sampling=sp)
    band = np.abs(d_c - distance_mm) <= diag
    region = d_c > distance_mm + diag
    bw = _body_weights(f, body)
    in_body = None if bw is None else bw >= 0.5
    # voxels surely >= distance_mm away: beyond the band inside the crop, and everything outside the crop
    far = np.ones(g.shape, dtype=bool)
    far[crop] = region
    if in_body is not None:
        far &= in_body
    n = int(np.count_nonzero(far))
    best = float(f.dose[far].max()) if n else -np.inf
    # band voxels decide only if hotter than every far voxel: classify them hottest first and stop at
    # the first one that is far enough (the maximum is then known; colder ones cannot change it)
    if in_body is not None:
        band &= in_body[crop]
    b_idx = np.argwhere(band)
    if b_idx.size:
        b_dose = f.dose[crop][band]
        hot = b_dose > best
        b_idx, b_dose = b_idx[hot], b_dose[hot]
    if b_idx.size:
        order = np.argsort(-b_dose, kind="stable")
        surf = _surface_points_mm(occ, lo.astype(np.float64), g)
        if surf.shape[0] == 0:  # single-voxel PTV without a 0.5 crossing: fall back to voxel centres
            surf = g.patient_from_index(np.argwhere(inside) + lo[None, :])
        tree = cKDTree(surf, leafsize=64, balanced_tree=False, compact_nodes=False)   # faster for far queries
        start, chunk = 0, 256
        while start < order.size:
            sel = order[start:start + chunk]
            dist, _ = tree.query(g.patient_from_index(b_idx[sel] + lo[None, :]))
            ok = np.flatnonzero(dist >= distance_mm)
            if ok.size:
                n += int(ok.size)
                best = max(best, float(b_dose[sel[ok[0]]]))
                break
            start += chunk
            chunk *= 4
    if n == 0:
        return D2cmResult(0.0, 0)
    return D2cmResult(best, n)


@dataclass
class PlanIndices:
    """Conformity and gradient indices of one plan for one PTV."""

    rx_gy: float
    ptv_cc: float
    piv_cc: float
    v50_cc: float
    tv_piv_cc: float
    ci_rtog: float
    ci_paddick: float
    gi: float
    r50: float
    d2cm_pct: float
    hi: float
    v105_outside_pct: float
    rtog: RtogAssessment | None

    def as_dict(self) -> dict:
        return {"ptv_cc": self.ptv_cc, "piv_cc": self.piv_cc, "v50_cc": self.v50_cc, "tv_piv_cc": self.tv_piv_cc,
                "CI_rtog": self.ci_rtog, "CI_paddick": self.ci_paddick, "GI": self.gi, "R50": self.r50,
                "D2cm_pct": self.d2cm_pct, "HI": self.hi, "V105_outside_pct": self.v105_outside_pct}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


@dataclass(frozen=True)
class VolumeRatios:
    """The ratio indices of one target from its four volumes and its D2cm (one formula for all callers)."""

    ci_rtog: float
    ci_paddick: float
    gi: float
    r50: float
    rtog: RtogAssessment | None

    @classmethod
    def of(cls, tv_cc: float, piv_cc: float, v50_cc: float, tv_piv_cc: float, d2cm_pct: float) -> "VolumeRatios":
        """CI = PIV/TV, Paddick = TV_PIV^2/(TV PIV), GI = V50/PIV, R50 = V50/TV, RTOG class of these."""
        ci, r50 = _ratio(piv_cc, tv_cc), _ratio(v50_cc, tv_cc)
        return cls(ci, _ratio(tv_piv_cc ** 2, tv_cc * piv_cc), _ratio(v50_cc, piv_cc), r50,
                   rtog_class(tv_cc, ci, r50, d2cm_pct) if tv_cc > 0 else None)


def plan_indices(dose, ptv: Structure, rx_gy: float, body: Structure | None = None,
                 ptv_dvh: DVH | None = None) -> PlanIndices:
    """CI, GI, R50 %, D2cm, HI and V105 outside for ``ptv`` at prescription ``rx_gy``.

    Parameters
    ----------
    dose : Dose or DoseField
    ptv : Structure
    rx_gy : float
        Prescription dose (total, Gy).
    body : Structure, optional
        External contour; isodose volumes and D2cm are restricted to it.
    ptv_dvh : DVH, optional
        Re-use an already computed (fully refined) PTV DVH.
    """
    if not (np.isfinite(rx_gy) and rx_gy > 0):
        raise InputError(f"prescription dose must be positive, got {rx_gy!r} Gy")
    f = DoseField.of(dose)
    dvh = ptv_dvh if ptv_dvh is not None else compute_dvh(f, ptv, refinement="full")
    bw = _body_weights(f, body)
    tv = dvh.volume_cc
    piv = isodose_volume_cc(f, rx_gy, body_weights=bw)
    v50 = isodose_volume_cc(f, 0.5 * rx_gy, body_weights=bw)
    v105 = isodose_volume_cc(f, 1.05 * rx_gy, body_weights=bw)
    # the PTV part of the Rx isodose cannot exceed the isodose volume; the two come from different
    # sub-voxel models (DVH samples vs trilinear isodose) that disagree only where the dose steps at
    # the PTV surface, and there the clamp keeps Paddick's CI <= 1
    tv_piv = min(float(dvh.v_gy_cc(rx_gy)), piv)
    tv_105 = float(dvh.v_gy_cc(1.05 * rx_gy))
    d2 = d2cm_gy(f, ptv, body)
    d50 = float(dvh.d_pct(50.0))
    hi = (float(dvh.d_pct(2.0)) - float(dvh.d_pct(98.0))) / d50 if d50 > 0 else float("nan")
    d2cm_pct = 100.0 * d2.max_dose_gy / rx_gy
    r = VolumeRatios.of(tv, piv, v50, tv_piv, d2cm_pct)
    return PlanIndices(rx_gy=float(rx_gy), ptv_cc=tv, piv_cc=piv, v50_cc=v50, tv_piv_cc=tv_piv, ci_rtog=r.ci_rtog,
                       ci_paddick=r.ci_paddick, gi=r.gi, r50=r.r50, d2cm_pct=d2cm_pct, hi=hi,
                       v105_outside_pct=100.0 * max(v105 - tv_105, 0.0) / tv if tv > 0 else float("nan"),
                       rtog=r.rtog)

"""Clarkson sector integration of one static sub-field at a point (the MU check's dose per MU).

One job: from the circular-field tables (:mod:`sbrtplan.dose_engine.clarkson_tables`),
one aperture and one point, the factors of the dose per MU there
(:class:`PointDoseTerms`): the transmitted fluence (leaf openings on the
fluence map's tongue-and-groove rows, MLC and jaw transmission, the rest of
the elliptical focal spot as a blur) averaged over 360 sectors on rings
around the point's projection, the equivalent path length and the photon
components' mean densities sampled along the ray to the point, and the
in-air, inverse-square and off-axis factors.  Why the check is built this
way: :mod:`sbrtplan.dose_engine.mucheck`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..beams import Aperture, BeamGeometry, MLCModel
from ..case import Grid
from ..errors import InputError
from .clarkson_tables import ClarksonTables
from .fluence import leaf_rows
from .geometry_kernels import sorted_bisect_right
from .influence import Correction

N_SECTORS = 360
_MAX_FIELD_HALF_MM = 200.0   # largest field the collimators open (40 x 40 cm)
# Radial edges of the sector walk at the isocentre plane: fine where small
# fields and penumbrae live, coarser where only slowly varying scatter remains.
_RADIAL_EDGES_MM = np.concatenate([np.arange(0.0, 30.0, 0.1), np.arange(30.0, 80.0, 0.25),
                                   np.arange(80.0, 300.01, 1.0)])
BODY_THRESHOLD = 0.05   # relative electron density above which a ray sample counts as inside the patient


def _transmission(aperture: Aperture, mlc: MLCModel, jaw_transmission: float,
                  x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Relative fluence at isocentre-plane BEV points.

    1 in the opening (between the leaf tips of a pair and inside the jaws);
    the MLC transmission under a leaf inside the jaws; the jaw transmission
    outside the jaws, up to the collimator's maximum field of +-200 mm.
    """
    b = mlc.leaf_boundaries_mm
    pair = np.searchsorted(b, y, side="right") - 1
    in_bank = (pair >= 0) & (pair < mlc.n_pairs)
    p = np.clip(pair, 0, mlc.n_pairs - 1)
    open_leaf = in_bank & (x >= aperture.leaf_x1_mm[p]) & (x <= aperture.leaf_x2_mm[p])
    jx, jy = aperture.jaw_x_mm, aperture.jaw_y_mm
    open_jaw = (x >= jx[0]) & (x <= jx[1]) & (y >= jy[0]) & (y <= jy[1])
    in_head = (np.abs(x) <= _MAX_FIELD_HALF_MM) & (np.abs(y) <= _MAX_FIELD_HALF_MM)
    return np.where(open_jaw, np.where(open_leaf, 1.0, mlc.transmission),
                    np.where(in_head, jaw_transmission, 0.0))


# erf tabulated on [-4.3, 4.3] (beyond it erf is +-1 to 1e-9) and interpolated linearly: the windows of
# the blurred fluence are evaluated at every ring sample near an edge, where math.erf would triple the
# cost of the sector integration; the interpolation error is under 1e-5.
_ERF_LIMIT = 4.3
_ERF_STEP = 0.005
_ERF_TABLE = np.array([math.erf(t) for t in np.arange(-_ERF_LIMIT, _ERF_LIMIT + 0.5 * _ERF_STEP, _ERF_STEP)])


@njit(cache=True)
def _mc_erf(t, table):
    """erf(t) from ``table`` (``_ERF_TABLE``)."""
    if t <= -_ERF_LIMIT:
        return -1.0
    if t >= _ERF_LIMIT:
        return 1.0
    f = (t + _ERF_LIMIT) / _ERF_STEP
    i = min(int(f), table.size - 2)
    w = f - i
    return (1.0 - w) * table[i] + w * table[i + 1]


@njit(cache=True)
def _mc_window(lo, hi, x, c, table):
    """Fraction of a Gaussian (centre x, ``c = 1 / (sqrt(2) sigma)``; ``c = 0``: no blur) inside [lo, hi]."""
    if hi <= lo:
        return 0.0
    if c == 0.0:
        return 1.0 if lo <= x <= hi else 0.0
    a = (lo - x) * c
    b = (hi - x) * c
    if a <= -_ERF_LIMIT and b >= _ERF_LIMIT:
        return 1.0
    if a >= _ERF_LIMIT or b <= -_ERF_LIMIT:
        return 0.0
    return 0.5 * (_mc_erf(b, table) - _mc_erf(a, table))


@njit(cache=True)
def _ring_weights(u, v, cos_t, sin_t, mids, row_edges, row_a, row_b, x1, x2, jaw, t_mlc, t_jaw, max_half, blur_x,
                  blur_y, erf_table):
    """Sector-averaged transmitted fluence on each ring around (u, v): the numba
    form of :func:`_transmission` summed over sectors (same rules), the fluence
    blurred by Gaussians of ``blur_x`` along X and ``blur_y`` along Y (the part of
    the elliptical focal spot the circular tables leave out; 0: sharp edges).

    ``fluence = t_jaw + (t_mlc - t_jaw) * jaws + (1 - t_mlc) * open`` inside the
    collimator's field (``max_half``), ``jaws`` and ``open`` being the blurred
    jaw opening and leaf openings within it.  The openings are those of the
    fluence map's rows (:func:`~sbrtplan.dose_engine.fluence.leaf_rows`): a leaf
    pair's interior is open between its tips, the tongue-and-groove strip along
    the boundary of pairs ``row_a`` and ``row_b`` only where both are open; rows
    beyond the leaf bank are closed.
    """
    n_sec = cos_t.size
    n_r = mids.size
    n_rows = row_a.size
    cx = 1.0 / (math.sqrt(2.0) * blur_x) if blur_x > 0.0 else 0.0
    cy = 1.0 / (math.sqrt(2.0) * blur_y) if blur_y > 0.0 else 0.0
    reach = 6.0 * blur_y
    mx = 6.0 * blur_x
    my = reach
    w = np.zeros(n_r)
    for k in range(n_sec):
        for j in range(n_r):
            x = u + cos_t[k] * mids[j]
            y = v + sin_t[k] * mids[j]
            if not (abs(x) <= max_half and abs(y) <= max_half):
                continue
            if x < jaw[0] - mx or x > jaw[1] + mx or y < jaw[2] - my or y > jaw[3] + my:
                w[j] += t_jaw            # well outside the jaws (most samples): no window to evaluate
                continue
            jx = _mc_window(jaw[0], jaw[1], x, cx, erf_table)
            jy = _mc_window(jaw[2], jaw[3], y, cy, erf_table)
            op = 0.0
            if jx > 0.0 and jy > 0.0:
                if cy == 0.0:
                    r = sorted_bisect_right(row_edges, y) - 1
                    if r >= 0 and r < n_rows and jaw[2] <= y <= jaw[3]:
                        a, b = row_a[r], row_b[r]
                        op = _mc_window(max(x1[a], x1[b], jaw[0]), min(x2[a], x2[b], jaw[1]), x, cx, erf_table)
                else:
                    r0 = max(sorted_bisect_right(row_edges, y - reach) - 1, 0)
                    r1 = min(sorted_bisect_right(row_edges, y + reach), n_rows)
                    for r in range(r0, r1):
                        wy = _mc_window(max(row_edges[r], jaw[2]), min(row_edges[r + 1], jaw[3]), y, cy, erf_table)
                        if wy > 0.0:
                            a, b = row_a[r], row_b[r]
                            op += wy * _mc_window(max(x1[a], x1[b], jaw[0]), min(x2[a], x2[b], jaw[1]), x, cx,
                                                  erf_table)
            w[j] += t_jaw + (t_mlc - t_jaw) * jx * jy + (1.0 - t_mlc) * op
    for j in range(n_r):
        w[j] /= n_sec
    return w


def _ray_samples(density: np.ndarray, grid: Grid, source_mm, point_mm, step_mm: float | None = None):
    """Densities sampled along the ray from the source to a point (source side first).

    Returns ``(rho, h)``: the density of the voxel containing each sample and
    the sample spacing in mm, for the part of the ray inside the grid (empty
    when the ray misses it).  The ray is sampled at ``step_mm`` (default an
    eighth of the smallest voxel side).
    """
    src = np.asarray(source_mm, dtype=float)
    pt = np.asarray(point_mm, dtype=float)
    length = float(np.linalg.norm(pt - src))
    empty = np.zeros(0)
    if length == 0.0:
        return empty, 0.0
    h = min(grid.spacing_mm) / 8.0 if step_mm is None else float(step_mm)
    c0 = grid.index_from_patient(src)        # (k, j, i)
    c1 = grid.index_from_patient(pt)
    dc = c1 - c0
    lo, hi = 0.0, 1.0
    for ax in range(3):
        n = grid.shape[ax]
        if abs(dc[ax]) < 1e-12:
            if c0[ax] < -0.5 or c0[ax] > n - 0.5:
                return empty, 0.0
            continue
        ta = (-0.5 - c0[ax]) / dc[ax]
        tb = (n - 0.5 - c0[ax]) / dc[ax]
        lo, hi = max(lo, min(ta, tb)), min(hi, max(ta, tb))
    if hi <= lo:
        return empty, 0.0
    inside_mm = (hi - lo) * length
    n_steps = max(1, int(math.ceil(inside_mm / h)))
    t = lo + (np.arange(n_steps) + 0.5) * (hi - lo) / n_steps
    idx = np.rint(c0[None, :] + t[:, None] * dc[None, :]).astype(np.int64)
    for ax in range(3):
        np.clip(idx[:, ax], 0, grid.shape[ax] - 1, out=idx[:, ax])
    rho = np.asarray(density)[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float64)
    return rho, inside_mm / n_steps


def equivalent_path_mm(density: np.ndarray, grid: Grid, source_mm, point_mm, step_mm: float | None = None) -> float:
    """Radiological (equivalent water) path length from the source to a point.

    The ray is sampled at ``step_mm`` (default an eighth of the smallest voxel
    side) with the density of the voxel containing each sample; outside the
    grid the density is taken as 0 (air).
    """
    rho, h = _ray_samples(density, grid, source_mm, point_mm, step_mm)
    return float(np.sum(rho, dtype=np.float64) * h)


def path_mean_densities(density: np.ndarray, grid: Grid, source_mm, point_mm, lengths_mm,
                        step_mm: float | None = None) -> np.ndarray:
    """Mean relative density over the last ``lengths_mm`` of the ray inside the patient.

    "Inside" starts at the first sample denser than :data:`BODY_THRESHOLD`; a
    length longer than the path inside uses the whole inside path, and with
    less than 1 mm inside the mean is 1 (water), as in the engine's ray tables.
    """
    rho, h = _ray_samples(density, grid, source_mm, point_mm, step_mm)
    return _means_before_point(rho, h, lengths_mm)


def _means_before_point(rho: np.ndarray, h: float, lengths_mm) -> np.ndarray:
    lengths = np.asarray(lengths_mm, dtype=float).reshape(-1)
    out = np.ones(lengths.size)
    body = np.nonzero(rho >= BODY_THRESHOLD)[0]
    if body.size == 0:
        return out
    inside = rho[body[0]:]
    if inside.size * h < 1.0:
        return out
    csum = np.concatenate([[0.0], np.cumsum(inside[::-1])])        # from the point backwards
    for i, ell in enumerate(lengths):
        m = int(np.clip(round(ell / h), 1, inside.size))
        out[i] = csum[m] / m
    return out


@dataclass
class PointDoseTerms:
    """The factors of one static sub-field's dose per MU at the point (for reports and tests)."""

    depth_mm: float            # equivalent path length
    distance_mm: float         # source-point distance
    u_mm: float                # point's projection on the isocentre plane (BEV x, y)
    v_mm: float
    clarkson_gy_per_mu: float  # sector-integrated circular-field dose per MU (TMR geometry)
    sc_correction: float       # in-air factor of the aperture at the isocentre plane / at the point's plane
    inverse_square: float
    off_axis_ratio: float
    open_fraction: float       # fluence transmitted at the point itself (1 = open)
    mean_densities: tuple = ()  # per photon component, over its range before the point (empty: depth-only)

    @property
    def gy_per_mu(self) -> float:
        return self.clarkson_gy_per_mu * self.sc_correction * self.inverse_square * self.off_axis_ratio


def subfield_terms(tables: ClarksonTables, geometry: BeamGeometry, aperture: Aperture, mlc: MLCModel,
                   jaw_transmission: float, density: np.ndarray, grid: Grid, point_mm,
                   correction: Correction = Correction.LATERAL) -> PointDoseTerms:
    """Clarkson dose per MU of one static aperture at ``point_mm`` (patient mm).

    ``correction``: LATERAL (default) sums the per-component circular fields
    at the mean densities on the ray before the point; DEPTH_ONLY uses the
    water circular fields on the equivalent path (classic Clarkson); NONE is
    refused (an MU check always takes the radiological depth).

    The circular-field data hold the collimator (head-scatter) factor of the
    field size at the point's plane, which equals the isocentre plane in the
    tables' geometry.  For a point at another distance the in-air factor is
    re-evaluated for the aperture at the isocentre plane, where the
    collimators define it: ``Sc(aperture) / Sc(aperture scaled to the point's plane)``,
    both sector-integrated.
    """
    pt = np.asarray(point_mm, dtype=float).reshape(3)
    sad = float(geometry.sad_mm)
    b = geometry.to_beam(pt[None, :])[0]
    dist_axis = sad - b[2]
    if dist_axis <= 0:
        raise InputError(f"independent MU check: point {tuple(np.round(pt, 1))} mm is behind the source")
    mag = dist_axis / sad
    u, v = b[0] * sad / dist_axis, b[1] * sad / dist_axis
    src = geometry.source_mm
    spd = float(np.linalg.norm(pt - src))
    samples, step = _ray_samples(density, grid, src, pt)
    depth = float(np.sum(samples) * step)                       # equivalent path length
    rho_means = None
    if correction is Correction.LATERAL:
        rho_means = _means_before_point(samples, step, tables.part_lengths_mm)
    elif correction is not Correction.DEPTH_ONLY:
        raise InputError(f"independent MU check: correction must be LATERAL or DEPTH_ONLY, got {correction!r}")
    theta = (np.arange(N_SECTORS) + 0.5) * (2.0 * math.pi / N_SECTORS)
    edges = _RADIAL_EDGES_MM
    mids = 0.5 * (edges[1:] + edges[:-1])
    lb = np.asarray(mlc.leaf_boundaries_mm, dtype=np.float64)
    row_edges, row_a, row_b = leaf_rows(lb, float(mlc.tongue_groove_mm), float(lb[0]), float(lb[-1]))
    w = _ring_weights(float(u), float(v), np.cos(theta), np.sin(theta), mids,
                      np.ascontiguousarray(row_edges, dtype=np.float64), row_a, row_b,
                      np.ascontiguousarray(aperture.leaf_x1_mm, dtype=np.float64),
                      np.ascontiguousarray(aperture.leaf_x2_mm, dtype=np.float64),
                      np.array([*aperture.jaw_x_mm, *aperture.jaw_y_mm], dtype=np.float64),
                      float(mlc.transmission), float(jaw_transmission), _MAX_FIELD_HALF_MM,
                      float(tables.fluence_blur_mm[0]), float(tables.fluence_blur_mm[1]), _ERF_TABLE)
    clarkson = float(np.dot(w, np.diff(tables.circle_dose(depth, edges * mag, rho_means))))
    sc_iso = float(np.dot(w, np.diff(tables.sc_circle(edges))))
    sc_pt = float(np.dot(w, np.diff(tables.sc_circle(edges * mag))))
    q2 = (u * u + v * v) * 1e-4
    oar = 1.0 + tables.horn_h2 * q2 + tables.horn_h4 * q2 * q2
    t0 = float(_transmission(aperture, mlc, jaw_transmission, np.array([u]), np.array([v]))[0])
    return PointDoseTerms(depth_mm=depth, distance_mm=spd, u_mm=float(u), v_mm=float(v),
                          clarkson_gy_per_mu=clarkson, sc_correction=sc_iso / sc_pt if sc_pt > 0 else 1.0,
                          inverse_square=(sad / spd) ** 2, off_axis_ratio=float(oar), open_fraction=t0,
                          mean_densities=() if rho_means is None else tuple(float(r) for r in rho_means))


__all__ = ["PointDoseTerms", "subfield_terms", "equivalent_path_mm", "path_mean_densities"]

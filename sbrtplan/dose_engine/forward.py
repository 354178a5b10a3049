"""Forward dose: from MLC apertures (final plan dose) and from beamlet fluence maps.

:func:`forward_dose` computes the dose of a :class:`~sbrtplan.beams.BeamSet`.  By default
(``method="fluence"``) each beam -- each group of control-point intervals spanning at most
``ARC_BIN_DEG`` of an arc -- becomes one fluence map, its leaf motion integrated exactly with the
machine's MLC model (:mod:`sbrtplan.dose_engine.fluence`), and one pencil-beam dose is computed
per map (:mod:`sbrtplan.dose_engine.fluence_map_dose`).  The per-control-point path below
(``method="control_points"``) is kept as the reference of the tests and benchmarks, and for point
doses (at most ``_FEW_POINTS`` voxels), where it is the cheaper one:
every beam is split into static sub-fields -- arcs by :func:`arc_samples` on
one grid of absolute gantry angles (``max_gantry_step_deg`` bins, so that two
arcs over the same range sample the same angles), other beams by
:func:`~sbrtplan.beams.sample_delivery` -- and each sub-field's dose per MU is
integrated exactly over its aperture (:mod:`sbrtplan.dose_engine.aperture_dose`),
sub-fields that share the source position (the same gantry angle, couch and
isocentre; collimators may differ) together.

:func:`fluence_dose` computes one beam's dose from a beamlet-weight vector
(MU per beamlet) without building a matrix and without a lateral cut-off.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange

from .._log import get_logger, timed
from ..beams import Aperture, BeamGeometry, BeamletGrid, BeamSet, sample_delivery
from ..case import Grid
from ..errors import GeometryError, InputError
from .aperture_dose import _FAN_MARGIN_MM, _FEW_POINTS, _apertures_dose, _gaussian_only, _s_range
from .geometry_kernels import beam_params, gaussian_voxel
from .influence import Correction, _check_inputs, _fan_for, _grid_arrays, _voxel_set
from .model import BeamModel, default_beam_model
from .pencil import scaling_lengths
from .fluence import leaf_rows, unwrapped_gantry
from .fluence_map_dose import forward_fluence

log = get_logger(__name__)


@njit(cache=True, parallel=True)
def _fluence_kernel(pts, bp, gp, mode, fp, table, entry, lengths, xe, ye, xc, yc, active_idx, horn_map, cutoff,
                    weights, out):
    n = pts.shape[0]
    nblk = (n + 255) // 256
    nb = xc.size * yc.size
    n_len = lengths.size
    for b in prange(nblk):
        amp = np.empty(8)
        sx = np.empty(8)
        sy = np.empty(8)
        rho = np.ones(8)
        ex = np.empty((8, xe.size))
        ey = np.empty((8, ye.size))
        vals = np.empty(nb, dtype=np.float32)
        cols = np.empty(nb, dtype=np.int32)
        for i in range(b * 256, min(n, (b + 1) * 256)):
            m = gaussian_voxel(pts[i, 0], pts[i, 1], pts[i, 2], bp, gp, mode, fp, table, entry, lengths, n_len,
                               xe, ye, xc, yc, active_idx, horn_map, cutoff, False, amp, sx, sy, rho, ex, ey,
                               vals, cols)
            tot = 0.0
            for k in range(m):
                tot += vals[k] * weights[cols[k]]
            out[i] = tot



def _points(density, grid, voxel_indices):
    vi = _voxel_set(density, grid, voxel_indices)
    return vi, np.ascontiguousarray(grid.voxel_centers_mm(vi), dtype=np.float64)



# ------------------------------------------------------------------ arc sampling
def _leaf_state(ap: Aperture) -> np.ndarray:
    return np.concatenate([ap.leaf_x1_mm, ap.leaf_x2_mm, ap.jaw_x_mm, ap.jaw_y_mm]).astype(np.float64)


def arc_samples(beam, bin_deg: float = 1.0, max_leaf_step_mm: float = 5.0):
    """Sub-fields of an arc, at most ``bin_deg`` apart: ``[(gantry_deg, aperture, mu), ...]``.

    Each control-point interval is cut into the fewest equal bins of at most
    ``bin_deg``: each bin is one sub-field at the bin's centre, carrying the
    MU delivered while the gantry crosses the bin (MU are linear in gantry
    angle within a control-point interval) and the aperture interpolated at
    the bin's centre.  Arcs whose control points sit at the same gantry angles
    (the two arcs of a plan, either direction) get the same sample angles, so
    their sub-fields share the source position; and any run of control
    points of an arc (one optimisation sector: ``workflow.vmat``) is sampled
    exactly as within the whole arc, so sectors' doses add up to the arc's.  A bin in which a leaf or
    jaw travels more than ``max_leaf_step_mm`` is split into equal parts, each
    its own sub-field.  Returns None for a beam that is not a monotonic arc
    (the caller then uses :func:`~sbrtplan.beams.sample_delivery`).
    """
    theta = unwrapped_gantry(beam)
    if theta is None:
        return None
    sign = 1.0 if theta[-1] > theta[0] else -1.0
    phi = sign * theta                                   # increasing along the delivery
    mu_int = beam.segment_mu()
    states = [_leaf_state(cp.aperture) for cp in beam.control_points]
    n_pairs = beam.control_points[0].aperture.n_pairs

    def state_at(x: float) -> np.ndarray:
        i = int(np.clip(np.searchsorted(phi, x, side="right") - 1, 0, phi.size - 2))
        t = (x - phi[i]) / (phi[i + 1] - phi[i])
        return (1.0 - t) * states[i] + t * states[i + 1]

    def span(xa: float, xb: float):
        """(centre, mean state, MU) of the delivery between xa < xb."""
        cuts = np.concatenate([[xa], phi[(phi > xa) & (phi < xb)], [xb]])
        mu_tot = 0.0
        acc = np.zeros_like(states[0])
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            i = int(np.clip(np.searchsorted(phi, 0.5 * (c0 + c1), side="right") - 1, 0, phi.size - 2))
            m = mu_int[i] * (c1 - c0) / (phi[i + 1] - phi[i])
            if m > 0:
                mu_tot += m
                acc += m * state_at(0.5 * (c0 + c1))
        travel = np.zeros_like(states[0])
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            travel += np.abs(state_at(c1) - state_at(c0))
        return 0.5 * (xa + xb), (acc / mu_tot if mu_tot > 0 else acc), mu_tot, float(travel.max())

    out = []
    edges = []
    for i in range(phi.size - 1):
        m = max(1, int(math.ceil((phi[i + 1] - phi[i]) / bin_deg - 1e-9)))
        edges.append(phi[i] + (phi[i + 1] - phi[i]) * np.arange(m) / m)
    edges = np.concatenate(edges + [phi[-1:]])
    for xa, xb in zip(edges[:-1], edges[1:]):
        if xb - xa <= 1e-9:
            continue
        centre, st, mu, travel = span(xa, xb)
        n = max(1, int(math.ceil(travel / max_leaf_step_mm - 1e-9)))
        parts = [(centre, st, mu)] if n == 1 else \
            [span(xa + (xb - xa) * q / n, xa + (xb - xa) * (q + 1) / n)[:3] for q in range(n)]
        for c, st_c, mu_c in parts:
            if mu_c <= 0:
                continue
            ap = Aperture(st_c[:n_pairs].copy(), st_c[n_pairs:2 * n_pairs].copy(),
                          (float(st_c[2 * n_pairs]), float(st_c[2 * n_pairs + 1])),
                          (float(st_c[2 * n_pairs + 2]), float(st_c[2 * n_pairs + 3])))
            out.append(((sign * c) % 360.0, ap, float(mu_c)))
    return out


#: Largest gantry span (degrees) of the control-point intervals in one fluence map of an arc: one
#: pencil-beam dose per map (two intervals of the usual 2-degree control-point spacing).
ARC_BIN_DEG = 4.0

#: Largest number of apertures evaluated together (tables held in memory at once).
_MAX_GROUP = 16


def forward_dose(density: np.ndarray, grid: Grid, beam_set: BeamSet, *, model: BeamModel | None = None,
                 voxel_indices: np.ndarray | None = None, max_gantry_step_deg: float = 1.0,
                 max_leaf_step_mm: float = 2.0, correction: Correction = Correction.LATERAL,
                 progress: Callable[[int, int], None] | None = None,
                 method: str | None = None, arc_bin_deg: float | None = None) -> np.ndarray:
    """Total course dose (Gy) of a beam set from its MLC apertures, jaws and MU.

    Arcs are sampled by :func:`arc_samples` on a fixed grid of gantry angles
    (``max_gantry_step_deg``); other beams by
    :func:`~sbrtplan.beams.sample_delivery`.  Sub-fields that share the source
    position (same gantry angle, couch and isocentre; the collimator may
    differ: two arcs over the same range, the segments of a step-and-shoot
    beam) are evaluated together, tracing the fan and computing each voxel's
    depth and kernel terms once for all of them.

    Parameters
    ----------
    density : (nz, ny, nx) relative electron density on ``grid``.
    grid : Grid
    beam_set : BeamSet
        Beams with control points (MU per fraction).
    model : BeamModel, optional
        Gaussian beam model (default: the shipped generic 6 MV).
    voxel_indices : array of int, optional
        Voxels to compute (default: density > 0.05).
    max_gantry_step_deg : float
        Arc sampling step.
    max_leaf_step_mm : float
        Largest leaf or jaw motion within one sub-field (dynamic beams and arcs).
    correction : Correction
    progress : callable(done, total), optional
        Called after each group of maps (sub-fields).
    method : {None, "fluence", "control_points"}
        ``None`` (default): ``"fluence"``, or ``"control_points"`` for at most 512 voxels (point
        doses, integrated exactly without tables).
        ``"fluence"``: one fluence map per beam and per ``arc_bin_deg`` gantry bin of an
        arc, leaf motion integrated exactly (:mod:`~sbrtplan.dose_engine.fluence`), one pencil-beam
        dose per map.  ``"control_points"``: the reference, every sub-field of
        ``max_gantry_step_deg`` / ``max_leaf_step_mm`` computed as a static aperture.  Both use the
        machine's MLC leakage (``BeamModel.mlc_for``: transmission, dosimetric leaf gap,
        tongue-and-groove).
    arc_bin_deg : float, optional
        Gantry bin of the fluence maps of an arc (default ``ARC_BIN_DEG``).

    Returns
    -------
    (nz, ny, nx) float64 array: dose per fraction x ``beam_set.n_fractions``;
    0 outside the voxel set.
    """
    vi, acc = _forward(density, grid, beam_set, model, voxel_indices, max_gantry_step_deg, max_leaf_step_mm,
                       correction, progress, per_beam=False, method=method, arc_bin_deg=arc_bin_deg)
    out = np.zeros(grid.size, dtype=np.float64)
    out[vi] = acc * float(beam_set.n_fractions)
    return out.reshape(grid.shape)


def forward_dose_by_beam(density: np.ndarray, grid: Grid, beam_set: BeamSet, voxel_indices: np.ndarray, *,
                         model: BeamModel | None = None, max_gantry_step_deg: float = 1.0,
                         max_leaf_step_mm: float = 2.0, correction: Correction = Correction.LATERAL,
                         progress: Callable[[int, int], None] | None = None,
                 method: str | None = None, arc_bin_deg: float | None = None) -> np.ndarray:
    """Total course dose (Gy) of each beam of ``beam_set`` at ``voxel_indices``, beam by beam.

    The same sampling and dose as :func:`forward_dose` (whose result is the sum
    of the rows), kept apart per beam: an optimiser that re-weights beams or arc
    sectors (see ``workflow.vmat``) gets the delivered dose of each one.

    Parameters
    ----------
    voxel_indices : (n,) array of int
        Flat voxel indices (C order on ``grid``), sorted and unique.
    Other parameters as :func:`forward_dose`.

    Returns
    -------
    (n_beams, n) float64 array.
    """
    vi_in = np.asarray(voxel_indices).reshape(-1)
    if vi_in.size > 1 and not np.all(vi_in[1:] > vi_in[:-1]):
        raise InputError("forward_dose_by_beam: voxel_indices must be sorted and unique")
    _, acc = _forward(density, grid, beam_set, model, vi_in, max_gantry_step_deg, max_leaf_step_mm, correction,
                      progress, per_beam=True, method=method, arc_bin_deg=arc_bin_deg)
    return acc * float(beam_set.n_fractions)


def _forward(density, grid, beam_set, model, voxel_indices, max_gantry_step_deg, max_leaf_step_mm, correction,
             progress, per_beam: bool, method: str | None = None, arc_bin_deg: float | None = None):
    """Voxel indices and the dose per fraction there: summed, or ``(n_beams, n)`` with ``per_beam``."""
    model = default_beam_model() if model is None else model
    _gaussian_only(model, "forward_dose")
    if method is None:
        # a few points (the MU check's point doses) are cheaper per sub-field without tables, exactly
        # integrated, than through the blurred tables of every map
        few = voxel_indices is not None and np.asarray(voxel_indices).size <= _FEW_POINTS
        method = "control_points" if few else "fluence"
    if method == "fluence":
        return forward_fluence(density, grid, beam_set, model, voxel_indices,
                               arc_bin_deg=ARC_BIN_DEG if arc_bin_deg is None else float(arc_bin_deg),
                               correction=correction, progress=progress, per_beam=per_beam)
    if method != "control_points":
        raise InputError(f"forward dose method {method!r}: expected 'fluence' or 'control_points'")
    dens = _check_inputs(density, grid, [0], [0])
    vi, pts = _points(dens, grid, voxel_indices)
    groups: dict[tuple, list] = {}
    n_sub = 0
    for b, beam in enumerate(beam_set.beams):
        if abs(float(beam.sad_mm) - float(model.sad_mm)) > 1e-6:
            raise GeometryError(f"beam '{beam.name}': SAD {beam.sad_mm} mm differs from the beam model's "
                                f"{model.sad_mm} mm")
        subs = arc_samples(beam, max_gantry_step_deg, max_leaf_step_mm) if beam.is_arc else None
        if subs is None:
            subs = [(s.geometry.gantry_deg, s.aperture, s.mu)
                    for s in sample_delivery(beam, b, max_gantry_step_deg=max_gantry_step_deg,
                                             max_leaf_step_mm=max_leaf_step_mm)]
        mlc = model.mlc_for(beam.mlc)
        yb, pa, pb = leaf_rows(mlc.leaf_boundaries_mm, mlc.tongue_groove_mm, -np.inf, np.inf)
        for g, ap, mu in subs:
            if mu <= 0:
                continue
            key = (round(float(g) % 360.0, 6), round(float(beam.couch_deg) % 360.0, 6),
                   tuple(np.round(np.asarray(beam.isocenter_mm, float), 6)), str(beam.patient_position),
                   yb.tobytes(), float(mlc.transmission))
            groups.setdefault(key, []).append((mlc, float(g), _rows_aperture(ap, pa, pb, mlc.dlg_mm), mu, b,
                                               beam, yb))
            n_sub += 1
    batches = [v[i:i + _MAX_GROUP] for v in groups.values() for i in range(0, len(v), _MAX_GROUP)]
    acc = np.zeros((len(beam_set.beams), vi.size) if per_beam else vi.size, dtype=np.float64)
    # source distances of the voxels from their bounding sphere (cheap, slightly generous fan range)
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0)) if pts.size else np.zeros(3)
    radius = float(np.sqrt(np.max(np.sum((pts - centre) ** 2, axis=1)))) if pts.size else 0.0
    with timed(f"forward dose: {len(beam_set.beams)} beams, {n_sub} sub-fields at {len(batches)} source "
               f"positions, {vi.size} voxels", log):
        for k, batch in enumerate(batches):
            mlc0 = batch[0][0]
            geoms = [e[5].geometry(e[1]) for e in batch]
            dc = float(np.linalg.norm(np.asarray(geoms[0].source_mm) - centre))
            s_rng = (max(dc - radius, 1.0), dc + radius)
            _apertures_dose(dens, grid, pts, geoms, [e[2] for e in batch], batch[0][6],
                            mlc0.transmission, model, correction, out=acc, scales=[e[3] for e in batch],
                            s_range=s_rng, rows=[e[4] for e in batch] if per_beam else None)
            if progress is not None:
                progress(k + 1, len(batches))
    return vi, acc


def _rows_aperture(ap: Aperture, pa: np.ndarray, pb: np.ndarray, dlg_mm: float) -> Aperture:
    """A static aperture on the rows of :func:`~sbrtplan.dose_engine.fluence.leaf_rows`: leaf tips
    retracted by half the dosimetric leaf gap; a tongue-and-groove strip open where both pairs are."""
    h = 0.5 * float(dlg_mm)
    x1 = np.maximum(ap.leaf_x1_mm[pa], ap.leaf_x1_mm[pb]) - h
    x2 = np.minimum(ap.leaf_x2_mm[pa], ap.leaf_x2_mm[pb]) + h
    return Aperture(x1, np.maximum(x2, x1), ap.jaw_x_mm, ap.jaw_y_mm)


def fluence_dose(density: np.ndarray, grid: Grid, geometry: BeamGeometry, beamlet_grid: BeamletGrid,
                 fluence_mu: np.ndarray, *, model: BeamModel | None = None, voxel_indices: np.ndarray | None = None,
                 correction: Correction = Correction.LATERAL) -> np.ndarray:
    """Per-fraction dose (Gy) of one beam from beamlet weights (MU), without building a matrix.

    Parameters
    ----------
    fluence_mu : (n_beamlets,) or (n_rows, n_cols) array
        Weights of the active beamlets (row-major) or a full fluence map.

    Returns
    -------
    (nz, ny, nx) float64 array (0 outside the voxel set).  No lateral cut-off.
    """
    model = default_beam_model() if model is None else model
    gp = _gaussian_only(model, "fluence_dose")
    dens = _check_inputs(density, grid, [geometry], [beamlet_grid])
    w = np.asarray(fluence_mu, dtype=np.float64)
    if w.ndim == 2:
        if w.shape != beamlet_grid.shape:
            raise InputError(f"fluence map shape {w.shape} does not match the beamlet grid {beamlet_grid.shape}")
        w = beamlet_grid.from_map(w)
    w = np.ascontiguousarray(w.reshape(-1))
    if w.size != beamlet_grid.n_beamlets:
        raise InputError(f"fluence_dose: expected {beamlet_grid.n_beamlets} beamlet weights, got {w.size}")
    vi, pts = _points(dens, grid, voxel_indices)
    xe, ye, xc, yc, active_idx = _grid_arrays(beamlet_grid)
    uu, vv = np.meshgrid(xc, yc)
    r2 = (uu * uu + vv * vv) * 1e-4
    horn_map = 1.0 + gp[9] * r2 + gp[10] * r2 * r2
    lo, hi = _s_range(pts, geometry)
    m = _FAN_MARGIN_MM
    fan = _fan_for(dens, grid, geometry, (xe[0] - m, xe[-1] + m), (ye[0] - m, ye[-1] + m), lo, hi,
                  float(scaling_lengths(gp).max()))
    acc = np.zeros(vi.size, dtype=np.float64)
    _fluence_kernel(pts, beam_params(geometry), gp, Correction(correction).value, fan.params, fan.table, fan.entry_mm,
                    scaling_lengths(gp), xe, ye, xc, yc, active_idx, horn_map, 1e6, w, acc)
    out = np.zeros(grid.size, dtype=np.float64)
    out[vi] = acc
    return out.reshape(grid.shape)

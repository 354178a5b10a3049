"""Pencil-beam dose of fluence maps: one dose evaluation per beam (per gantry bin of an arc).

The dose per MU of the Gaussian model at a point is ``sum_t amp_t x (F * G_t)(u, v)``: the
fluence ``F`` (:mod:`sbrtplan.dose_engine.fluence`) blurred by each kernel term's anisotropic
Gaussian ``G_t`` at the point's isocentre-plane position, times the off-axis factor and the
inverse square (:mod:`sbrtplan.dose_engine.pencil`).  A fluence map is piecewise constant on
rectangles, and the Gaussian blur of a rectangle is a product of two error-function profiles, so
the blurred map on a raster is ``FY^T @ F @ FX`` (exact) for each width of a geometric ladder
(ratio 1.2); each point reads its terms' values by bilinear interpolation on the raster and
linear interpolation in log(width).  Two ladders:

* *fine*: terms narrower than ``COARSE_SIGMA_MIN_MM`` (8 mm: primary and near scatter, the
  penumbra), within 32 mm (4 x 8 mm) of the map;
* *coarse*: broader terms (far scatter, head scatter, contamination) within 300 mm of the map,
  from the map averaged onto 2.5 mm cells.

Each level has its own raster, with steps proportional to its widths: a third of the x and y widths
on the fine ladder (0.68 x 0.25 mm at the narrowest level of the shipped model, whose focal spot is
2.0 x 0.76 mm; 2.9 mm at the widest), 2.5 mm x width / 8 mm on the coarse one (2.5 mm at 8 mm,
56 mm at 180 mm).  The linear-interpolation error of an error-function edge of width sigma on steps
h is at most ``0.03 h^2 / sigma^2`` of the edge height, so 0.33 % along each axis on every fine level
and 0.3 % on every coarse one -- the bound of the narrowest level of a single raster per ladder, at
a fraction of its points (the broad levels need few), which is what the tables cost to build and
what the point loop reads.  Only the band of the profile matrices within ``_ERF_SAT`` widths of each
raster point is summed (the rest is zero to double precision).

Maps sharing the source position (two arcs, sectors of an arc at the same angle) are evaluated
together: the fan is traced and each point's depth, densities and kernel terms are computed once.
An arc's maps are binned in ascending gantry angle (:func:`~sbrtplan.dose_engine.fluence.beam_jobs`),
so that opposed arcs over the same control-point angles -- the VMAT plan's two arcs and their
sectors -- have their maps at the same angles.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .fluence import FluenceMap, beam_jobs
from .geometry_kernels import beam_params, sorted_bisect_right, voxel_frame
from .pencil import gaussian_terms
from .raytrace import fan_lookup

COARSE_SIGMA_MIN_MM = 8.0
SIGMA_RATIO = 1.2
COARSE_N_SIGMA = 18          # 8 ... 180 mm
#: raster step of the coarse level of width 8 mm (level k: ``COARSE_STEP_MM x SIGMA_RATIO^k``)
COARSE_STEP_MM = 2.5
COARSE_REACH_MM = 300.0
FINE_REACH_MM = 4.0 * COARSE_SIGMA_MIN_MM
#: raster steps of a fine level as a fraction of its (x, y) widths
FINE_STEP_PER_SIGMA = 1.0 / 3.0
#: |erf argument| from which erf is +-1 to double precision (erfc(6) = 2e-17)
_ERF_SAT = 6.0
#: Largest number of maps evaluated together (their tables are held in memory at once).
MAX_GROUP = 8
_LOG_RATIO = math.log(SIGMA_RATIO)


# ------------------------------------------------------------------ numba: lookups and the point loop
@njit(cache=True)
def _fd_level(data, lv, u, v):
    """Bilinear value at (u, v) of one blurred level ``lv`` = [offset, u0, du, nu, v0, dv, nv] of ``data``
    (0 outside its raster)."""
    fu = (u - lv[1]) / lv[2]
    fv = (v - lv[4]) / lv[5]
    nu = int(lv[3])
    nv = int(lv[6])
    if fu < 0.0 or fv < 0.0 or fu > nu - 1 or fv > nv - 1:
        return 0.0
    iu = min(int(fu), nu - 2)
    iv = min(int(fv), nv - 2)
    wu = fu - iu
    wv = fv - iv
    o = int(lv[0]) + iv * nu + iu
    return ((1.0 - wv) * ((1.0 - wu) * data[o] + wu * data[o + 1])
            + wv * ((1.0 - wu) * data[o + nu] + wu * data[o + nu + 1]))


@njit(cache=True)
def _fd_ladder_pos(sig, s0, n):
    """Level and weight of width ``sig`` on the ladder ``s0 x SIGMA_RATIO^k``, k < n (log-linear, clamped)."""
    if n <= 1:
        return 0, 0.0
    fs = math.log(sig / s0) / _LOG_RATIO
    if fs < 0.0:
        fs = 0.0
    if fs > n - 1:
        fs = n - 1.0
    k = min(int(fs), n - 2)
    return k, fs - k


@njit(cache=True, parallel=True)
def _fd_kernel(pts, bps, gp, mode, fp, table, entry, lengths, linv, data, lvs, rect, lad, rows, out):
    """``out[rows[m], i] +=`` dose per fraction of map ``m`` at point ``i`` (maps share the source).

    ``lvs[m, l]``: level ``l`` of map ``m`` (see :func:`_fd_level`), in the order of :func:`ladders`: fine
    family 0 (``lad[0]`` levels from width ``lad[2]``), fine family 1 (``lad[1]`` from ``lad[3]``), coarse
    family 0 and family 1 (``lad[4]`` levels each from ``COARSE_SIGMA_MIN_MM``); ``rect[m]``: the fine
    rasters' rectangle.  Family 0: photon components, indexed by their x width (y follows through the
    source size); family 1: isotropic terms (contamination, head scatter).  The ladders are the same
    for every map, so each term's levels and weights are found once per point.  ``lengths`` are the
    model's distinct scaling lengths, ``linv[k]`` the one of component ``k`` (the shipped model's four
    components use two lengths: two fewer depth lookups per point).
    """
    n = pts.shape[0]
    n_len = lengths.size
    n_comp = linv.size
    n_map = bps.shape[0]
    nk = int(gp[3])
    sad = gp[0]
    nf0 = int(lad[0])
    nf1 = int(lad[1])
    nc = int(lad[4])
    nblk = (n + 255) // 256
    for b in prange(nblk):
        amp = np.empty(8)
        sx = np.empty(8)
        sy = np.empty(8)
        rho_u = np.ones(8)
        rho = np.ones(8)
        kf = np.empty(8, np.int64)
        wf = np.empty(8)
        kc = np.empty(8, np.int64)
        wc = np.empty(8)
        for i in range(b * 256, min(n, (b + 1) * 256)):
            u, v, dist, s = voxel_frame(pts[i, 0], pts[i, 1], pts[i, 2], bps[0])
            rad, ent = fan_lookup(fp, table, entry, u, v, s, lengths, n_len, rho_u)
            for k in range(n_comp):
                rho[k] = rho_u[linv[k]] if mode == 0 else 1.0
            if mode == 2:
                rad = s - ent if s > ent else 0.0
            nt = gaussian_terms(gp, rad, dist, rho, amp, sx, sy)
            isq = sad * sad / (s * s)
            for t in range(nt):
                fam = 0 if t < nk else 1
                sig = sx[t]
                nf = nf0 if fam == 0 else nf1
                kf[t] = -1
                if sig < COARSE_SIGMA_MIN_MM and nf > 0:
                    k, w = _fd_ladder_pos(sig, lad[2 + fam], nf)
                    kf[t] = k + (0 if fam == 0 else nf0)
                    wf[t] = w
                k, w = _fd_ladder_pos(sig, COARSE_SIGMA_MIN_MM, nc)
                kc[t] = k + nf0 + nf1 + fam * nc
                wc[t] = w
            for m in range(n_map):
                if m > 0:
                    u, v, _, _ = voxel_frame(pts[i, 0], pts[i, 1], pts[i, 2], bps[m])
                inside = rect[m, 0] <= u <= rect[m, 1] and rect[m, 2] <= v <= rect[m, 3]
                tot = 0.0
                for t in range(nt):
                    a = amp[t]
                    if a == 0.0:
                        continue
                    if inside and kf[t] >= 0:
                        k = kf[t]
                        w = wf[t]
                    else:
                        k = kc[t]
                        w = wc[t]
                    val = _fd_level(data, lvs[m, k], u, v)
                    if w > 0.0:
                        val += w * (_fd_level(data, lvs[m, k + 1], u, v) - val)
                    tot += a * val
                r2 = (u * u + v * v) * 1e-4
                out[rows[m], i] += tot * (1.0 + gp[9] * r2 + gp[10] * r2 * r2) * isq


# ------------------------------------------------------------------ tables
@njit(cache=True)
def _fd_row_level(starts, q):
    """Level ``l`` with ``starts[l] <= q < starts[l + 1]`` (a few dozen levels: a linear scan)."""
    l = 0
    while starts[l + 1] <= q:
        l += 1
    return l


@njit(cache=True, parallel=True)
def _fd_blur(fl_t, xe, ye, lv, sig, full_mu, full, data):
    """Blurred map on the raster of every level: ``data[lv[l]]`` = ``P_y^T F P_x`` + the full field.

    ``fl_t`` (n_x cells, n_y rows) is the map transposed, ``xe``/``ye`` its cell edges, ``sig[l]`` the
    level's (x, y) Gaussian widths.  ``P_x[c, j]`` is the fraction of the Gaussian at raster point ``u_j``
    inside cell ``c``: zero (to double precision) beyond ``_ERF_SAT`` widths, so each raster point only
    sums over the cells within that reach (a band of the matrices).  All raster rows of all levels
    form one parallel loop per pass.
    """
    nc, nr = fl_t.shape
    n_lv = lv.shape[0]
    xs = np.zeros(n_lv + 1, np.int64)     # first x raster row of each level
    ys = np.zeros(n_lv + 1, np.int64)
    for l in range(n_lv):
        xs[l + 1] = xs[l] + int(lv[l, 3])
        ys[l + 1] = ys[l] + int(lv[l, 6])
    g = np.zeros((xs[n_lv], nr))
    gxf = np.zeros(xs[n_lv])
    r2 = 1.0 / math.sqrt(2.0)
    for q in prange(xs[n_lv]):
        l = _fd_row_level(xs, q)
        j = q - xs[l]
        u = lv[l, 1] + j * lv[l, 2]
        c = r2 / max(sig[l, 0], 1e-6)
        reach = _ERF_SAT / c
        gxf[q] = 0.5 * (math.erf((full[1] - u) * c) - math.erf((full[0] - u) * c))
        ca = max(sorted_bisect_right(xe, u - reach) - 1, 0)
        cb = min(sorted_bisect_right(xe, u + reach), nc)
        if ca >= cb:
            continue
        e0 = math.erf((xe[ca] - u) * c)
        for k in range(ca, cb):
            e1 = math.erf((xe[k + 1] - u) * c)
            p = 0.5 * (e1 - e0)
            e0 = e1
            # far tails would be subnormal numbers, which make the sums tens of times slower
            if abs(p) < 1e-12:
                continue
            for r in range(nr):
                g[q, r] += p * fl_t[k, r]
    for q in prange(ys[n_lv]):
        l = _fd_row_level(ys, q)
        i = q - ys[l]
        v = lv[l, 4] + i * lv[l, 5]
        c = r2 / max(sig[l, 1], 1e-6)
        reach = _ERF_SAT / c
        gy = full_mu * 0.5 * (math.erf((full[3] - v) * c) - math.erf((full[2] - v) * c))
        ra = max(sorted_bisect_right(ye, v - reach) - 1, 0)
        rb = min(sorted_bisect_right(ye, v + reach), nr)
        py = np.zeros(max(rb - ra, 1))
        if ra < rb:
            e0 = math.erf((ye[ra] - v) * c)
            for k in range(ra, rb):
                e1 = math.erf((ye[k + 1] - v) * c)
                p = 0.5 * (e1 - e0)
                e0 = e1
                py[k - ra] = p if abs(p) >= 1e-12 else 0.0
        nu = int(lv[l, 3])
        off = int(lv[l, 0]) + i * nu
        x0 = xs[l]
        for j in range(nu):
            acc = gy * gxf[x0 + j]
            for k in range(ra, rb):
                acc += py[k - ra] * g[x0 + j, k]
            data[off + j] = acc


def _ladder(s0: float, s_max: float) -> np.ndarray:
    n = max(1, int(math.ceil(math.log(max(s_max, s0) / s0) / math.log(SIGMA_RATIO) - 1e-9)) + 1)
    return s0 * SIGMA_RATIO ** np.arange(n)


def _family_sigmas(gp: np.ndarray, sig_x: np.ndarray, fam: int) -> tuple[np.ndarray, np.ndarray]:
    if fam == 0:
        return sig_x, np.sqrt(np.maximum(sig_x ** 2 - gp[1] + gp[2], 1e-6))
    return sig_x, sig_x


def ladders(gp: np.ndarray):
    """The blurred levels of every map for the packed model ``gp``: ``(sig, steps, lad)``.

    ``sig[l]`` = (x, y) widths of level ``l``, ``steps[l]`` its raster steps (mm), ``lad`` the ladder
    description of :func:`_fd_kernel`.  Order: fine family 0, fine family 1 (each only when the family
    has terms narrower than ``COARSE_SIGMA_MIN_MM``), coarse family 0, coarse family 1.
    """
    s0 = (math.sqrt(max(gp[1], 1e-6)), min(gp[6], gp[8]))      # narrowest x width of each family
    sig, steps, n_f = [], [], [0, 0]
    for fam in (0, 1):
        if s0[fam] >= COARSE_SIGMA_MIN_MM:
            continue
        sx, sy = _family_sigmas(gp, _ladder(s0[fam], COARSE_SIGMA_MIN_MM), fam)
        sig.append(np.stack([sx, sy], 1))
        steps.append(np.stack([sx, sy], 1) * FINE_STEP_PER_SIGMA)
        n_f[fam] = sx.size
    ks = SIGMA_RATIO ** np.arange(COARSE_N_SIGMA)
    for fam in (0, 1):
        sx, sy = _family_sigmas(gp, COARSE_SIGMA_MIN_MM * ks, fam)
        sig.append(np.stack([sx, sy], 1))
        steps.append(np.repeat((COARSE_STEP_MM * ks)[:, None], 2, axis=1))
    lad = np.array([n_f[0], n_f[1], s0[0], s0[1], COARSE_N_SIGMA], np.float64)
    return np.vstack(sig), np.vstack(steps), lad


def _raster(lo: float, hi: float, step: float) -> tuple[float, int]:
    """First point and number of points (>= 2) of a raster of ``step`` from ``lo`` covering ``hi``."""
    return lo, max(2, int(math.ceil((hi - lo) / step - 1e-9)) + 1)


def _coarsen(fm: FluenceMap, step: float):
    """The map averaged onto cells of ``step`` mm (area weighted; for the broad terms only)."""
    xe, ye = fm.x_edges_mm, fm.y_edges_mm
    cx = np.arange(math.floor(xe[0] / step), math.ceil(xe[-1] / step) + 1) * step
    cy = np.arange(math.floor(ye[0] / step), math.ceil(ye[-1] / step) + 1) * step

    def overlap(e_fine, e_coarse):
        lo = np.maximum(e_fine[:-1][None, :], e_coarse[:-1][:, None])
        hi = np.minimum(e_fine[1:][None, :], e_coarse[1:][:, None])
        return np.maximum(hi - lo, 0.0) / step       # (coarse, fine)

    return cx, cy, overlap(ye, cy) @ fm.fluence_mu @ overlap(xe, cx).T


def group_tables(gp: np.ndarray, maps: list[FluenceMap]):
    """Blurred levels of ``maps``: ``(data, lvs, rect, lad)`` for :func:`_fd_kernel`.

    Fine levels cover each map plus ``FINE_REACH_MM``, coarse ones plus ``COARSE_REACH_MM``; the raster
    step of a level is ``FINE_STEP_PER_SIGMA`` of its width (fine) or ``COARSE_STEP_MM`` x its width / 8 mm
    (coarse), so the interpolation error of every level is bounded alike (module docstring).
    """
    sig, steps, lad = ladders(gp)
    n_fine = int(lad[0] + lad[1])
    n_lv = sig.shape[0]
    lvs = np.zeros((len(maps), n_lv, 7))
    rect = np.zeros((len(maps), 4))
    coarse = []
    off = 0
    for m, fm in enumerate(maps):
        xe, ye = fm.x_edges_mm, fm.y_edges_mm
        r = FINE_REACH_MM
        rect[m] = [xe[0] - r, xe[-1] + r, ye[0] - r, ye[-1] + r]
        cx, cy, cf = _coarsen(fm, COARSE_STEP_MM)
        coarse.append((cx, cy, cf))
        rc = COARSE_REACH_MM
        for l in range(n_lv):
            if l < n_fine:
                lo_u, hi_u, lo_v, hi_v = rect[m]
            else:
                lo_u, hi_u, lo_v, hi_v = cx[0] - rc, cx[-1] + rc, cy[0] - rc, cy[-1] + rc
            u0, nu = _raster(lo_u, hi_u, steps[l, 0])
            v0, nv = _raster(lo_v, hi_v, steps[l, 1])
            lvs[m, l] = [off, u0, steps[l, 0], nu, v0, steps[l, 1], nv]
            off += nu * nv
    data = np.empty(off, np.float32)
    for m, fm in enumerate(maps):
        full = np.asarray(fm.full_rect_mm, np.float64)
        cx, cy, cf = coarse[m]
        for sel, (xe, ye, fl) in ((slice(0, n_fine), (fm.x_edges_mm, fm.y_edges_mm, fm.fluence_mu)),
                                  (slice(n_fine, n_lv), (cx, cy, cf))):
            if sel.stop > sel.start:
                _fd_blur(np.ascontiguousarray(np.asarray(fl, np.float64).T), np.ascontiguousarray(xe, np.float64),
                         np.ascontiguousarray(ye, np.float64), np.ascontiguousarray(lvs[m, sel]),
                         np.ascontiguousarray(sig[sel]), float(fm.full_mu), full, data)
    return data, lvs, rect, lad


def maps_dose(pts: np.ndarray, bps: np.ndarray, gp: np.ndarray, mode: int, fan, lengths: np.ndarray,
              maps: list[FluenceMap], rows: np.ndarray, out: np.ndarray) -> None:
    """Add the dose per fraction (Gy) of ``maps`` (sharing the source; frames ``bps``) to ``out[rows]``."""
    data, lvs, rect, lad = group_tables(gp, maps)
    ulen, linv = np.unique(np.asarray(lengths, np.float64), return_inverse=True)
    _fd_kernel(pts, np.ascontiguousarray(bps), gp, int(mode), fan.params, fan.table, fan.entry_mm, ulen,
               linv.astype(np.int64), data, lvs, rect, lad, np.ascontiguousarray(rows, dtype=np.int64), out)


# ------------------------------------------------------------------ driver
def _source_key(groups: dict, gantry_deg: float, beam) -> tuple:
    """Key of the source position (gantry, couch, isocentre, patient position) of a map: an existing
    group's key when its gantry angle is within 1e-6 degrees (two arcs reach the same angle by
    different sums of steps)."""
    g = float(gantry_deg) % 360.0
    rest = (round(float(beam.couch_deg) % 360.0, 6), tuple(np.round(np.asarray(beam.isocenter_mm, float), 6)),
            str(beam.patient_position))
    for key in groups:
        if key[1:] == rest and abs((key[0] - g + 180.0) % 360.0 - 180.0) < 1e-6:
            return key
    return (g,) + rest


def forward_fluence(density, grid, beam_set, model, voxel_indices, *, arc_bin_deg: float, correction,
                    progress=None, per_beam: bool = False):
    """Voxel indices and dose per fraction (summed, or ``(n_beams, n)`` with ``per_beam``) of a beam
    set from one fluence map per beam (per ``arc_bin_deg`` gantry bin of an arc).

    Maps sharing the source position are evaluated together, up to ``MAX_GROUP`` at a time.
    ``progress(done, total)`` is called after each group.
    """
    from .._log import get_logger, timed
    from ..errors import GeometryError, InputError
    from .fluence import accumulate_fluence, control_point_states
    from .influence import Correction, _check_inputs, _fan_for, _voxel_set
    from .pencil import pack_gaussian, scaling_lengths

    log = get_logger(__name__)
    if not (math.isfinite(arc_bin_deg) and 0.1 <= arc_bin_deg <= 30.0):
        raise InputError(f"arc_bin_deg={arc_bin_deg}: expected within [0.1, 30] degrees")
    gp = pack_gaussian(model)
    dens = _check_inputs(density, grid, [0], [0])
    vi = _voxel_set(dens, grid, voxel_indices)
    pts = np.ascontiguousarray(grid.voxel_centers_mm(vi), dtype=np.float64)
    groups: dict[tuple, list] = {}
    n_maps = 0
    with timed(f"fluence maps of {len(beam_set.beams)} beams", log):
        for b, beam in enumerate(beam_set.beams):
            if abs(float(beam.sad_mm) - float(model.sad_mm)) > 1e-6:
                raise GeometryError(f"beam '{beam.name}': SAD {beam.sad_mm} mm differs from the beam model's "
                                    f"{model.sad_mm} mm")
            if beam.mu <= 0:
                continue
            mlc = model.mlc_for(beam.mlc)
            states = control_point_states(beam)
            for g, jobs in beam_jobs(beam, arc_bin_deg):
                fm = accumulate_fluence(states, jobs, mlc.leaf_boundaries_mm, transmission=mlc.transmission,
                                        dlg_mm=mlc.dlg_mm, tongue_groove_mm=mlc.tongue_groove_mm,
                                        jaw_transmission=model.jaw_transmission, gantry_deg=g)
                if fm is None:
                    continue
                groups.setdefault(_source_key(groups, g, beam), []).append((beam, fm, b))
                n_maps += 1
    batches = [v[i:i + MAX_GROUP] for v in groups.values() for i in range(0, len(v), MAX_GROUP)]
    acc = np.zeros((len(beam_set.beams) if per_beam else 1, vi.size), dtype=np.float64)
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0)) if pts.size else np.zeros(3)
    radius = float(np.sqrt(np.max(np.sum((pts - centre) ** 2, axis=1)))) if pts.size else 0.0
    mode = Correction(correction).value
    lengths = scaling_lengths(gp)
    with timed(f"fluence-map dose: {n_maps} maps at {len(groups)} source positions, {vi.size} voxels", log):
        for k, batch in enumerate(batches):
            if pts.size:
                geoms = [beam.geometry(fm.gantry_deg) for beam, fm, _ in batch]
                g0 = geoms[0]
                m = 60.0
                corners = []
                for geo, (_, fm, _) in zip(geoms, batch):
                    xe, ye = fm.x_edges_mm, fm.y_edges_mm
                    c = np.array([[xe[0] - m, ye[0] - m, 0.0], [xe[-1] + m, ye[0] - m, 0.0],
                                  [xe[0] - m, ye[-1] + m, 0.0], [xe[-1] + m, ye[-1] + m, 0.0]])
                    corners.append(c if geo is g0 else g0.to_beam(geo.from_beam(c)))
                corners = np.vstack(corners)
                dc = float(np.linalg.norm(np.asarray(g0.source_mm) - centre))
                fan = _fan_for(dens, grid, g0, (corners[:, 0].min(), corners[:, 0].max()),
                               (corners[:, 1].min(), corners[:, 1].max()), max(dc - radius, 1.0), dc + radius,
                               float(lengths.max()))
                bps = np.array([beam_params(geo) for geo in geoms])
                rows = np.array([e[2] if per_beam else 0 for e in batch], np.int64)
                maps_dose(pts, bps, gp, mode, fan, lengths, [e[1] for e in batch], rows, acc)
            if progress is not None:
                progress(k + 1, len(batches))
    return vi, (acc if per_beam else acc[0])

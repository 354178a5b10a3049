"""Pencil-beam dose of fluence maps: one dose evaluation per beam (per gantry bin of an arc).

The dose per MU of the Gaussian model at a point is ``sum_t amp_t x (F * G_t)(u, v)``: the
fluence ``F`` (:mod:`sbrtplan.dose_engine.fluence`) blurred by each kernel term's anisotropic
Gaussian ``G_t`` at the point's isocentre-plane position, times the off-axis factor and the
inverse square (:mod:`sbrtplan.dose_engine.pencil`).  A fluence map is piecewise constant on
rectangles, and the Gaussian blur of a rectangle is a product of two error-function profiles, so
the blurred map on a raster is ``FY^T @ F @ FX`` (exact, two matrix products) for each width of a
geometric ladder; each point reads its terms' values by bilinear interpolation on the raster and
linear interpolation in log(width).  Two rasters:

* *fine*: terms narrower than ``COARSE_SIGMA_MIN_MM`` (8 mm: primary and near scatter, the
  penumbra), steps of a third of the narrowest width (0.5 mm along x, 0.25 mm along y for the
  shipped model, whose focal spot is 2.0 x 0.76 mm), within 32 mm (4 x 8 mm) of the map;
* *coarse*: broader terms (far scatter, head scatter, contamination) on 2.5 mm steps within
  300 mm of the map, from the map averaged onto 2.5 mm cells.

The linear-interpolation error of an error-function edge of width sigma on steps h is at most
``0.03 h^2 / sigma^2`` of the edge height (0.3 % on the fine raster, 0.3 % on the coarse one at
8 mm).  Maps sharing the source position (two arcs, sectors of an arc at the same angle) are
evaluated together: each point's depth, densities and kernel terms are computed once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from scipy.special import erf

from .fluence import FluenceMap
from .geometry_kernels import voxel_frame
from .pencil import gaussian_terms
from .raytrace import fan_lookup

COARSE_SIGMA_MIN_MM = 8.0
SIGMA_RATIO = 1.2
COARSE_N_SIGMA = 18          # 8 ... 180 mm
COARSE_STEP_MM = 2.5
COARSE_REACH_MM = 300.0
FINE_REACH_MM = 4.0 * COARSE_SIGMA_MIN_MM
FINE_STEP_MAX_MM = 0.5
#: Largest number of maps evaluated together (their tables are held in memory at once).
MAX_GROUP = 8
_LOG_RATIO = math.log(SIGMA_RATIO)


# ------------------------------------------------------------------ numba: lookups and the point loop
@njit(cache=True)
def _fd_table(tab, f, tp, u, v, sig, s0, ns):
    """Bilinear (u, v) and log-linear (sigma) interpolation in ``tab[f]`` (n_sigma, nv, nu)."""
    u0, du, nu, v0, dv, nv = tp[0], tp[1], int(tp[2]), tp[3], tp[4], int(tp[5])
    fu = (u - u0) / du
    fv = (v - v0) / dv
    if fu < 0.0 or fv < 0.0 or fu > nu - 1 or fv > nv - 1:
        return 0.0
    fs = math.log(sig / s0) / _LOG_RATIO
    if fs < 0.0:
        fs = 0.0
    if fs > ns - 1:
        fs = ns - 1.0
    iu = min(int(fu), nu - 2)
    iv = min(int(fv), nv - 2)
    ks = min(int(fs), max(ns - 2, 0))
    wu = fu - iu
    wv = fv - iv
    ws = fs - ks
    r = 0.0
    for dk in range(2 if ns > 1 else 1):
        t = tab[f, ks + dk]
        val = ((1 - wv) * ((1 - wu) * t[iv, iu] + wu * t[iv, iu + 1])
               + wv * ((1 - wu) * t[iv + 1, iu] + wu * t[iv + 1, iu + 1]))
        r += (ws if dk else 1.0 - ws) * val if ns > 1 else val
    return r


@njit(cache=True, parallel=True)
def _fd_kernel(pts, bps, gp, mode, fp, table, entry, lengths, fine, tpf, coarse, tpc, rows, out):
    """``out[rows[m], i] +=`` dose per fraction of map ``m`` at point ``i`` (maps share the source).

    ``tpf[m]`` = [u0, du, nu, v0, dv, nv, sigma0 family 0, n family 0, sigma0 family 1, n family 1];
    ``tpc[m]`` = [u0, du, nu, v0, dv, nv, sigma0, n].  Family 0: photon components, indexed by their
    x width (y follows through the source size); family 1: isotropic terms (contamination, head scatter).
    """
    n = pts.shape[0]
    n_len = lengths.size
    n_map = bps.shape[0]
    nk = int(gp[3])
    sad = gp[0]
    nblk = (n + 255) // 256
    for b in prange(nblk):
        amp = np.empty(8)
        sx = np.empty(8)
        sy = np.empty(8)
        rho = np.ones(8)
        for i in range(b * 256, min(n, (b + 1) * 256)):
            u, v, dist, s = voxel_frame(pts[i, 0], pts[i, 1], pts[i, 2], bps[0])
            rad, ent = fan_lookup(fp, table, entry, u, v, s, lengths, n_len, rho)
            if mode == 2:
                rad = s - ent if s > ent else 0.0
                for k in range(n_len):
                    rho[k] = 1.0
            elif mode == 1:
                for k in range(n_len):
                    rho[k] = 1.0
            nt = gaussian_terms(gp, rad, dist, rho, amp, sx, sy)
            isq = sad * sad / (s * s)
            for m in range(n_map):
                if m > 0:
                    u, v, _, _ = voxel_frame(pts[i, 0], pts[i, 1], pts[i, 2], bps[m])
                tot = 0.0
                for t in range(nt):
                    a = amp[t]
                    if a == 0.0:
                        continue
                    fam = 0 if t < nk else 1
                    sig = sx[t]
                    val = -1.0
                    if sig < tpc[m, 6]:
                        s0 = tpf[m, 6 + 2 * fam]
                        ns = int(tpf[m, 7 + 2 * fam])
                        if ns > 0:
                            fu = (u - tpf[m, 0]) / tpf[m, 1]
                            fv = (v - tpf[m, 3]) / tpf[m, 4]
                            if 0.0 <= fu <= tpf[m, 2] - 1 and 0.0 <= fv <= tpf[m, 5] - 1:
                                val = _fd_table(fine[m], fam, tpf[m], u, v, sig, s0, ns)
                    if val < 0.0:
                        val = _fd_table(coarse[m], fam, tpc[m], u, v, sig, tpc[m, 6], int(tpc[m, 7]))
                    tot += a * val
                r2 = (u * u + v * v) * 1e-4
                out[rows[m], i] += tot * (1.0 + gp[9] * r2 + gp[10] * r2 * r2) * isq


# ------------------------------------------------------------------ tables
@njit(cache=True, parallel=True)
def _fd_products(fy, fl, fx, out):
    """``out[k] = fy[k]^T @ fl @ fx[k]`` for every width ``k``, skipping the zeros of the Gaussian
    profiles (most of each row: a profile is non-zero within a few widths of its cell).  Written out
    rather than left to BLAS: the matrices are small, and BLAS threads contend with the kernels'."""
    ns, nr, nv = fy.shape
    nc, nu = fx.shape[1], fx.shape[2]
    for k in prange(ns):
        g = np.zeros((nr, nu))
        for r in range(nr):
            for c in range(nc):
                a = fl[r, c]
                if a == 0.0:
                    continue
                for j in range(nu):
                    g[r, j] += a * fx[k, c, j]
        for iv in range(nv):
            for r in range(nr):
                a = fy[k, r, iv]
                if a == 0.0:
                    continue
                for j in range(nu):
                    out[k, iv, j] += a * g[r, j]
def _profiles(edges: np.ndarray, grid: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(n_sigma, n_cells, n_grid): fraction of a Gaussian at each grid point inside each cell."""
    c = (1.0 / (math.sqrt(2.0) * np.maximum(sigma, 1e-6)))[:, None]
    e = erf((edges[None, :, None] - grid[None, None, :]) * c[:, :, None])
    p = 0.5 * (e[:, 1:, :] - e[:, :-1, :])
    # far tails are subnormal numbers, which make the matrix products tens of times slower
    p[np.abs(p) < 1e-12] = 0.0
    return p


def _ladder(s0: float, s_max: float) -> np.ndarray:
    n = max(1, int(math.ceil(math.log(max(s_max, s0) / s0) / math.log(SIGMA_RATIO) - 1e-9)) + 1)
    return s0 * SIGMA_RATIO ** np.arange(n)


def _family_sigmas(gp: np.ndarray, sig_x: np.ndarray, fam: int) -> tuple[np.ndarray, np.ndarray]:
    if fam == 0:
        return sig_x, np.sqrt(np.maximum(sig_x ** 2 - gp[1] + gp[2], 1e-6))
    return sig_x, sig_x


def _blur(fl: np.ndarray, xe, ye, u, v, sx: np.ndarray, sy: np.ndarray, full, full_mu) -> np.ndarray:
    """(n_sigma, nv, nu) float32: the map (plus the full-field jaw transmission) blurred on the raster."""
    fx = _profiles(xe, u, sx)                        # (ns, C, nu)
    fy = _profiles(ye, v, sy)                        # (ns, R, nv)
    out = np.zeros((sx.size, v.size, u.size))
    _fd_products(np.ascontiguousarray(fy), np.ascontiguousarray(fl, dtype=np.float64), np.ascontiguousarray(fx),
                 out)
    if full_mu != 0.0:
        gx = _profiles(np.array([full[0], full[1]]), u, sx)[:, 0, :]
        gy = _profiles(np.array([full[2], full[3]]), v, sy)[:, 0, :]
        out += full_mu * gy[:, :, None] * gx[:, None, :]
    return out.astype(np.float32)


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


def map_tables(gp: np.ndarray, fm: FluenceMap):
    """Fine and coarse tables of one map and their lattice parameters (see :func:`_fd_kernel`)."""
    xe, ye = fm.x_edges_mm, fm.y_edges_mm
    s0x = math.sqrt(max(gp[1], 1e-6))
    s0y = math.sqrt(max(gp[2], 1e-6))
    s1 = min(gp[6], gp[8])                             # narrowest isotropic term
    du = min(FINE_STEP_MAX_MM, s0x / 3.0)
    dv = min(FINE_STEP_MAX_MM, s0y / 3.0)
    r = FINE_REACH_MM
    u = np.arange(xe[0] - r, xe[-1] + r + du, du)
    v = np.arange(ye[0] - r, ye[-1] + r + dv, dv)
    fams = []
    tpf = np.zeros(10)
    tpf[:6] = [u[0], du, u.size, v[0], dv, v.size]
    for fam, s_lo in ((0, s0x), (1, s1)):
        if s_lo >= COARSE_SIGMA_MIN_MM:
            fams.append(None)
            continue
        sig = _ladder(s_lo, COARSE_SIGMA_MIN_MM)
        sx, sy = _family_sigmas(gp, sig, fam)
        fams.append(_blur(fm.fluence_mu, xe, ye, u, v, sx, sy, fm.full_rect_mm, fm.full_mu))
        tpf[6 + 2 * fam] = s_lo
        tpf[7 + 2 * fam] = sig.size
    n_f = max([0] + [f.shape[0] for f in fams if f is not None])
    fine = np.zeros((2, max(n_f, 1), v.size, u.size), np.float32)
    for fam, f in enumerate(fams):
        if f is not None:
            fine[fam, :f.shape[0]] = f
    h = COARSE_STEP_MM
    cx, cy, cf = _coarsen(fm, h)
    rc = COARSE_REACH_MM
    uc = np.arange(cx[0] - rc, cx[-1] + rc + h, h)
    vc = np.arange(cy[0] - rc, cy[-1] + rc + h, h)
    sig = COARSE_SIGMA_MIN_MM * SIGMA_RATIO ** np.arange(COARSE_N_SIGMA)
    coarse = np.empty((2, sig.size, vc.size, uc.size), np.float32)
    for fam in range(2):
        sx, sy = _family_sigmas(gp, sig, fam)
        coarse[fam] = _blur(cf, cx, cy, uc, vc, sx, sy, fm.full_rect_mm, fm.full_mu)
    tpc = np.array([uc[0], h, uc.size, vc[0], h, vc.size, COARSE_SIGMA_MIN_MM, sig.size], np.float64)
    return fine, tpf, coarse, tpc


def maps_dose(pts: np.ndarray, bps: np.ndarray, gp: np.ndarray, mode: int, fan, lengths: np.ndarray,
              maps: list[FluenceMap], rows: np.ndarray, out: np.ndarray) -> None:
    """Add the dose per fraction (Gy) of ``maps`` (sharing the source; frames ``bps``) to ``out[rows]``."""
    tabs = [map_tables(gp, fm) for fm in maps]
    nf = max(t[0].shape[1] for t in tabs)
    nvf = max(t[0].shape[2] for t in tabs)
    nuf = max(t[0].shape[3] for t in tabs)
    nvc = max(t[2].shape[2] for t in tabs)
    nuc = max(t[2].shape[3] for t in tabs)
    fine = np.zeros((len(maps), 2, nf, nvf, nuf), np.float32)
    coarse = np.zeros((len(maps), 2, COARSE_N_SIGMA, nvc, nuc), np.float32)
    tpf = np.zeros((len(maps), 10))
    tpc = np.zeros((len(maps), 8))
    for m, (f, tf, c, tc) in enumerate(tabs):
        fine[m, :, :f.shape[1], :f.shape[2], :f.shape[3]] = f
        coarse[m, :, :, :c.shape[2], :c.shape[3]] = c
        tpf[m] = tf
        tpc[m] = tc
    del tabs
    _fd_kernel(pts, np.ascontiguousarray(bps), gp, int(mode), fan.params, fan.table, fan.entry_mm, lengths,
               fine, tpf, coarse, tpc, np.ascontiguousarray(rows, dtype=np.int64), out)


# ------------------------------------------------------------------ driver
def forward_fluence(density, grid, beam_set, model, voxel_indices, *, arc_bin_deg: float, correction,
                    progress=None, per_beam: bool = False):
    """Voxel indices and dose per fraction (summed, or ``(n_beams, n)`` with ``per_beam``) of a beam
    set from one fluence map per beam (per ``arc_bin_deg`` gantry bin of an arc).

    Maps sharing the source position are evaluated together, up to ``MAX_GROUP`` at a time.
    ``progress(done, total)`` is called after each group.
    """
    from .._log import get_logger, timed
    from ..errors import GeometryError, InputError
    from .fluence import accumulate_fluence, beam_jobs, control_point_states
    from .geometry_kernels import beam_params
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
                key = (round(float(g) % 360.0, 6), round(float(beam.couch_deg) % 360.0, 6),
                       tuple(np.round(np.asarray(beam.isocenter_mm, float), 6)), str(beam.patient_position))
                groups.setdefault(key, []).append((beam, fm, b))
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

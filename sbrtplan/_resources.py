"""Memory guards: estimate what an array will need before allocating it.

:func:`check_memory` refuses a computation whose estimate exceeds the memory
available now (``MemAvailable``) or a user limit (``--max-memory-gib``), with
the estimate in the message, instead of being killed minutes later.
:func:`check_plan_memory` does it for a plan (dose grid and influence matrix,
:func:`estimate_plan_influences`) from the case as read, before the planner
builds anything.  This module reaches the beams, evaluation and protocols
subpackages: only the commands and ``batch`` import it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import ResourceError

GIB = float(2 ** 30)


def available_memory_bytes() -> float | None:
    """Memory the system can give this process now (Linux ``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def process_memory_bytes() -> float:
    """Resident memory of this process now (Linux ``/proc/self/statm``; 0 when unknown)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return float(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


#: what a refused job can change
ADVICE = "use a coarser --grid-mm, fewer beams or a smaller region"


def check_memory(estimate_bytes: float, what: str, max_memory_gib: float | None = None, *,
                 in_use_bytes: float = 0.0, limit_label: str = "--max-memory-gib", advice: str = ADVICE) -> None:
    """Refuse ``what`` when it needs more than the available memory or ``max_memory_gib``.

    ``estimate_bytes`` is what ``what`` will allocate; ``in_use_bytes`` what the process holds already
    (counted against ``max_memory_gib``, a limit of the whole job, not against the available memory,
    which is what is left beside it).  One line names both figures and ``limit_label``.
    """
    if max_memory_gib is not None and in_use_bytes + estimate_bytes > max_memory_gib * GIB:
        held = f" ({in_use_bytes / GIB:.2g} GiB of it in use now)" if in_use_bytes > 0 else ""
        total = (in_use_bytes + estimate_bytes) / GIB
        raise ResourceError(f"{what} would take about {total:.3g} GiB{held}, more than {limit_label} "
                            f"({max_memory_gib:.3g} GiB); {advice}")
    avail = available_memory_bytes()
    if avail is not None and estimate_bytes > avail:
        raise ResourceError(f"{what} would take about {estimate_bytes / GIB:.3g} GiB more than now, more than the "
                            f"available memory ({avail / GIB:.3g} GiB; --max-memory-gib can only lower the limit); "
                            f"{advice}")


#: bytes per dose-grid voxel while a plan is made: density, dose, body mask and occupancy (float32 + bool),
#: two float32 work arrays of the optimiser and evaluation, and ~12 structure masks with occupancy (5 B each)
PLAN_BYTES_PER_VOXEL = 4 + 4 + 1 + 4 + 2 * 4 + 12 * 5


def grid_voxels(extent_mm, spacing_mm: float) -> float:
    """Voxels of a box ``extent_mm`` (x, y, z) at isotropic ``spacing_mm`` (a float: it may be huge)."""
    return float(math.prod(max(1.0, math.ceil(float(e) / spacing_mm) + 1) for e in extent_mm))


def dose_grid_voxels(case, grid_mm: float) -> float:
    """Voxels of the plan's dose grid: the body's bounding box plus 5 mm on each side at ``grid_mm``."""
    body = case.body.mask if getattr(case, "body", None) is not None else None
    box = _bbox(body) if body is not None else None
    if box is None:
        lo, hi = case.grid.bounds_mm()
    else:  # the corners of the box (argwhere would copy every body voxel)
        corners = np.array([[z, y, x] for z in (box[0][0], box[1][0]) for y in (box[0][1], box[1][1])
                            for x in (box[0][2], box[1][2])])
        pts = _to_patient(case.grid, corners)
        lo, hi = pts.min(0), pts.max(0)
    return grid_voxels([float(h - l) + 10.0 for l, h in zip(lo, hi)], grid_mm)


def influence_bytes(n_beamlets: int, n_voxels: float, spacing_mm: float, cutoff_mm: float = 30.0,
                    path_mm: float = 400.0) -> float:
    """Upper estimate of a sparse influence matrix: each beamlet reaches the voxels of a cylinder of radius
    ``cutoff_mm`` along a path of ``path_mm`` (at most ``n_voxels``); 8 bytes per non-zero (float32 value +
    int32 row), twice for the assembly buffers."""
    per_beamlet = min(n_voxels, math.pi * cutoff_mm ** 2 * path_mm / spacing_mm ** 3)
    return 2.0 * 8.0 * per_beamlet * n_beamlets


# ------------------------------------------------------------------ the influence matrix of a plan
#
# ``plan`` builds its influence matrix (optimisation voxels x beamlets) minutes after the case is read; on a
# large target, a fine grid or with 120 arc sectors it is the largest allocation of the job (the spine
# phantom's VMAT matrix: 1.7e8 non-zeros, 1.3 GiB).  :func:`estimate_plan_influence` predicts it from the case
# alone, before anything is built, by mirroring the pipeline's rules on a coarse copy of the body:
#
# * rows: the optimisation voxels (``workflow.voxels``): every body voxel within 8 mm of the target and of the
#   organs within 20 mm, one in 2^3 up to 30 mm (organs: 60 mm), one in 4^3 beyond;
# * columns: the beamlets of each beam or arc sector (``beams.beamlet_grid_for_target``): columns of
#   ``beamlet_mm`` along the leaves, one row per leaf pair, active within the margin (IMRT 5 mm, VMAT 3 mm)
#   of the target's projection;
# * non-zeros (``dose_engine.influence``): a voxel gets an entry from every active beamlet whose centre lies
#   within the lateral cut-off (30 mm) of its projection: counted per voxel with a disc sum over the
#   beamlet centres, for a few sampled beam directions.
#
# Measured on the spine phantom at 2 mm (the matrices the pipeline built; the estimate within 25 %: see
# tests/test_bad_inputs_cli.py): VMAT 120 sectors, 11 274 beamlets, 51 670 voxels, 1.70e8 non-zeros, peak
# RSS 2.16 GiB of which 0.41 GiB before the matrix; IMRT 7 beams, 780 beamlets, 1.1e7 non-zeros, and the
# beam selection's coarse matrix (66 candidates, 10 mm beamlets, 6000 voxels) 6.5e6 non-zeros.

#: pipeline values the estimate mirrors (workflow.voxels, workflow.final_dose, workflow.imrt, workflow.vmat)
_NEAR_MM, _MID_MM, _ORGAN_MM, _ORGAN_FAR_MM = 8.0, 30.0, 20.0, 60.0
_FINAL_FULL_MM, _FINAL_FAR_MM, _FINAL_LATTICE_MM = 30.0, 60.0, 8.0
_IMRT_MARGIN_MM, _VMAT_MARGIN_MM = 5.0, 3.0
_SELECTION_BEAMLET_MM, _SELECTION_ROWS, _SELECTION_CANDIDATES = 10.0, 6000, 90  # 18 gantries x 5 couches
_CUTOFF_MM = 30.0

#: bytes per non-zero at the peak of each stage: float32 value + int32 row (8 B) for the matrix itself;
#: VMAT: the DAO's work arrays add ~10 % (measured 1.68 -> 1.78 GiB on the spine phantom); IMRT: the matrix,
#: its float32 CSR copy scaled by the fractions and the first-order solver's transpose (3 x 8 B); the beam
#: selection: CSC + CSR + float64 CSR and transpose (8 + 8 + 12 + 12 B)
_VMAT_BYTES_PER_NNZ, _IMRT_BYTES_PER_NNZ, _SELECTION_BYTES_PER_NNZ = 8.8, 24.0, 40.0
#: VMAT final dose: a (sectors x final-dose voxels) float64 matrix and its float32 copy
_FINAL_BYTES_PER_ENTRY = 12.0
#: coarse cell of the estimate (mm): fine enough for the 8 mm / 30 mm shells, coarse enough to stay well under
#: a tenth of a second on a thorax CT
_COARSE_MM = 6.0


@dataclass(frozen=True)
class InfluenceEstimate:
    """What :func:`estimate_plan_influence` predicts for one plan (counts are estimates)."""

    technique: str
    n_fields: int          # IMRT beams or VMAT arc sectors
    n_beamlets: int
    n_voxels: int          # optimisation voxels (rows)
    nnz: float             # non-zeros of the plan's matrix
    selection_nnz: float   # IMRT beam selection's coarse matrix (0 without it)
    final_dose_voxels: int  # VMAT: voxels of the per-sector final dose (0 for IMRT)
    peak_bytes: float      # the largest of the stages above, at their peak

    def describe(self) -> str:
        kind = "arc sectors" if self.technique == "vmat" else "beams"
        return (f"{self.technique.upper()} influence matrix ({self.n_fields} {kind}, ~{self.n_beamlets:,} beamlets x "
                f"~{self.n_voxels:,} voxels, ~{self.nnz:.2g} non-zeros)")


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive (lo, hi) indices of the True voxels, from the axis projections (None when empty)."""
    lo, hi = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for ax in range(3):
        nz = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if nz.size == 0:
            return None
        lo[ax], hi[ax] = nz[0], nz[-1]
    return lo, hi


def _to_patient(grid, idx_zyx: np.ndarray) -> np.ndarray:
    """``grid.patient_from_index`` written column by column: an (N, 3) @ (3, 3) product goes through
    BLAS, whose threads make it 10-100 times slower than this on a busy 2-core machine."""
    m = np.asarray(grid.direction, float) * np.asarray(grid.spacing_mm, float)[None, :]
    o = np.asarray(grid.origin_mm, float)
    i, j, k = idx_zyx[:, 2].astype(float), idx_zyx[:, 1].astype(float), idx_zyx[:, 0].astype(float)
    return np.column_stack([m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + o[r] for r in range(3)])


def _project(geom, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``BeamGeometry.project_to_isocenter_plane`` column by column (see :func:`_to_patient`)."""
    rot = np.asarray(geom.rotation, float)
    d = [points[:, c] - float(geom.isocenter_mm[c]) for c in range(3)]
    b = [d[0] * rot[0, c] + d[1] * rot[1, c] + d[2] * rot[2, c] for c in range(3)]
    dist = geom.sad_mm - b[2]
    scale = geom.sad_mm / dist
    return np.column_stack([b[0] * scale, b[1] * scale]), dist


def _target_points(targets, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patient points of the targets' occupied voxels, their occupancy, their (z, y, x) indices on ``grid``
    and the points whose projection gives the targets' outline (all of them, or the surface of a large one)."""
    pts, ws, idxs, outline = [], [], [], []
    for t in targets:
        occ = t.mask if getattr(t, "fraction", None) is None else (t.fraction > 0)
        box = _bbox(occ)
        if box is None:
            continue
        lo, hi = box
        sub = occ[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))]
        idx = np.argwhere(sub) + lo
        w = np.ones(idx.shape[0]) if getattr(t, "fraction", None) is None else \
            t.fraction[tuple(idx.T)].astype(float)
        p = _to_patient(t.grid, idx)
        if idx.shape[0] > 100000:  # the projection of a solid is that of its surface
            pad = np.pad(sub, 1)
            outline.append(_to_patient(t.grid, np.argwhere(pad & ~ndimage.binary_erosion(pad)) - 1 + lo))
        else:
            outline.append(p)
        pts.append(p)
        ws.append(w)
        idxs.append(idx if t.grid.same_as(grid) else np.rint(grid.index_from_patient(p)).astype(np.int64))
    if not pts:
        raise ResourceError("the target is empty; cannot estimate the plan's memory")
    return np.concatenate(pts), np.concatenate(ws), np.concatenate(idxs), np.concatenate(outline)


def _active_beamlets(target_pts: np.ndarray, geom, leaf_edges: np.ndarray, beamlet_mm: float, margin_mm: float,
                     half_voxel_mm: float) -> np.ndarray:
    """(n, 2) isocentre-plane centres of the beamlets ``beams.beamlet_grid_for_target`` would make active:
    columns of ``beamlet_mm`` with an edge on the central axis, one row per leaf pair, any part within the
    margin (plus half a voxel, magnified) of the target's projection."""
    uv, dist = _project(geom, target_pts)
    reach = margin_mm + half_voxel_mm * float(np.max(geom.sad_mm / dist))
    h = min(1.0, beamlet_mm / 4.0)
    lo = uv.min(axis=0) - reach - h
    shape = (np.ceil((uv.max(axis=0) + reach + h - lo) / h).astype(int) + 1)[::-1]  # (rows v, cols u)
    occ = np.zeros(shape, bool)
    ij = np.floor((uv - lo) / h).astype(int)
    occ[ij[:, 1], ij[:, 0]] = True
    near = ndimage.distance_transform_edt(~occ, sampling=h) <= reach
    vs, us = np.nonzero(near)
    u = lo[0] + (us + 0.5) * h
    v = lo[1] + (vs + 0.5) * h
    col = np.floor(u / beamlet_mm).astype(np.int64)
    pair = np.searchsorted(leaf_edges, v, side="right") - 1
    ok = (pair >= 0) & (pair < leaf_edges.size - 1)
    keys = np.unique(pair[ok] * 100000 + (col[ok] + 50000))
    pair, col = keys // 100000, keys % 100000 - 50000
    return np.column_stack([(col + 0.5) * beamlet_mm, 0.5 * (leaf_edges[pair] + leaf_edges[pair + 1])])


def _disc_sum(counts: np.ndarray, radius_cells: float) -> np.ndarray:
    """Sum of ``counts`` over a disc around every cell (FFT convolution; numpy only: scipy.signal takes
    seconds to import)."""
    r = int(np.ceil(radius_cells))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = (xx ** 2 + yy ** 2 <= radius_cells ** 2).astype(float)
    shape = (counts.shape[0] + 2 * r, counts.shape[1] + 2 * r)
    full = np.fft.irfft2(np.fft.rfft2(counts, shape) * np.fft.rfft2(disc, shape), shape)
    return np.rint(full[r:r + counts.shape[0], r:r + counts.shape[1]])


def _entries(points: np.ndarray, weights: np.ndarray, geom, centres: np.ndarray, cutoff_mm: float) -> float:
    """Sum over ``points`` of weight x (beamlet centres within ``cutoff_mm`` of the point's projection)."""
    if centres.size == 0 or points.size == 0:
        return 0.0
    h = 2.5
    lo = centres.min(axis=0) - cutoff_mm - h
    shape = (np.ceil((centres.max(axis=0) + cutoff_mm + h - lo) / h).astype(int) + 1)[::-1]
    cnt = np.zeros(shape)
    ij = np.floor((centres - lo) / h).astype(int)
    np.add.at(cnt, (ij[:, 1], ij[:, 0]), 1.0)
    within = _disc_sum(cnt, cutoff_mm / h)
    uv, _ = _project(geom, points)
    ij = np.floor((uv - lo) / h).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < shape[1]) & (ij[:, 1] < shape[0])
    return float(np.dot(weights[inside], within[ij[inside, 1], ij[inside, 0]]))


def estimate_plan_influence(case, target, *, technique: str = "vmat", n_beams: int | None = None,
                            grid_mm: float = 2.0, beamlet_mm: float = 5.0, n_arcs: int = 2, sector_deg: float = 6.0,
                            select_beams: bool = True, mlc=None, cutoff_mm: float = _CUTOFF_MM,
                            n_directions: int = 4) -> InfluenceEstimate:
    """Predict the size of a plan's influence matrix before the pipeline builds anything.

    Parameters
    ----------
    case : Case
        As read (CT grid): its body (or density) and its organs at risk.
    target : Structure or sequence of Structure
        The prescription target(s) the plan will use (several: their union).
    technique : {"vmat", "imrt"}
    n_beams : int, optional
        IMRT beams (default 7).
    grid_mm, beamlet_mm, n_arcs, sector_deg, select_beams, mlc, cutoff_mm
        The plan's settings (:class:`~sbrtplan.workflow.PlanOptions`; ``mlc`` a name or an
        :class:`~sbrtplan.beams.MLCModel`, default Millennium 120).
    n_directions : int
        Beam directions sampled per arc (VMAT) or in all (IMRT, at least 4).

    Returns
    -------
    InfluenceEstimate
        See the comment above :class:`InfluenceEstimate` for the rules it mirrors and how it was measured.
    """
    return estimate_plan_influences(case, target, techniques=(technique,), n_beams=n_beams, grid_mm=grid_mm,
                                    beamlet_mm=beamlet_mm, n_arcs=n_arcs, sector_deg=sector_deg,
                                    select_beams=select_beams, mlc=mlc, cutoff_mm=cutoff_mm,
                                    n_directions=n_directions)[0]


def estimate_plan_influences(case, target, *, techniques=("vmat",), n_beams: int | None = None,
                             grid_mm: float = 2.0, beamlet_mm: float = 5.0, n_arcs: int = 2, sector_deg: float = 6.0,
                             select_beams: bool = True, mlc=None, cutoff_mm: float = _CUTOFF_MM,
                             n_directions: int = 4) -> list[InfluenceEstimate]:
    """:func:`estimate_plan_influence` of each of ``techniques`` (the coarse body is built once)."""
    from .beams import BeamGeometry, MLCModel, arc_template

    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    mlc = MLCModel.by_name(mlc) if isinstance(mlc, str) else (mlc or MLCModel.millennium120())
    leaf_edges = np.asarray(mlc.leaf_boundaries_mm, float)
    grid = case.grid
    body = case.body.mask if getattr(case, "body", None) is not None else (case.density > 0.05)
    box = _bbox(body)
    if box is None:
        raise ResourceError(f"case '{case.name}': no body voxel; cannot estimate the plan's memory")
    # the body on a coarse lattice (one sample per cell of about _COARSE_MM), the targets marked in the cells
    # they touch, and the distance of every cell from them
    sp_zyx = np.asarray(grid.spacing_mm, float)[::-1]
    step = np.maximum(1, np.rint(_COARSE_MM / sp_zyx)).astype(np.int64)
    lo, hi = box
    sl = tuple(slice(int(lo[a] + step[a] // 2), int(hi[a]) + 1, int(step[a])) for a in range(3))
    body_c = np.ascontiguousarray(body[sl])
    t_pts, t_w, t_idx, outline = _target_points(targets, grid)
    cell = (t_idx - lo) // step
    cell = cell[np.all((cell >= 0) & (cell < np.asarray(body_c.shape)), axis=1)]
    tgt_c = np.zeros(body_c.shape, bool)
    tgt_c[tuple(cell.T)] = True
    dist = ndimage.distance_transform_edt(~tgt_c, sampling=step * sp_zyx) if tgt_c.any() \
        else np.full(body_c.shape, np.inf)
    organ_c = np.zeros(body_c.shape, bool)
    for s in case.structures.values():
        role = str(getattr(getattr(s, "role", None), "value", "")).upper()
        if role in ("OAR", "PRV") and s.grid.same_as(grid):
            organ_c |= s.mask[sl]
    # rows: the optimisation voxels each cell stands for (workflow.voxels' sampling)
    per_cell = float(np.prod(step * sp_zyx)) / grid_mm ** 3
    full = body_c & ((dist <= _NEAR_MM) | tgt_c | (organ_c & (dist <= _ORGAN_MM)))
    mid = body_c & ~full & ((dist <= _MID_MM) | (organ_c & (dist <= _ORGAN_FAR_MM)))
    w_opt = per_cell * (full + mid / 8.0 + (body_c & ~full & ~mid) / 64.0)
    n_opt = float(w_opt.sum())
    keep = np.nonzero(w_opt > 0)
    points = _to_patient(grid, lo + step // 2 + step * np.column_stack(keep))
    weights = w_opt[keep]
    iso = tuple(float(v) for v in (t_pts * t_w[:, None]).sum(axis=0) / t_w.sum())  # beams.isocenter_for
    # the pipeline's target lies on the dose grid: its occupied voxels reach up to half a voxel beyond the
    # contour, and the beamlet grid pads each by half its in-plane diagonal (beams.targeting)
    half_voxel = 0.5 * grid_mm + 0.5 * math.sqrt(2.0) * grid_mm
    position = getattr(case, "patient_position", None) or "HFS"

    def field(gantry, collimator, couch, bl_mm, margin) -> tuple[int, float]:
        geom = BeamGeometry(gantry, collimator, couch, iso, patient_position=position)
        centres = _active_beamlets(outline, geom, leaf_edges, bl_mm, margin, half_voxel)
        return centres.shape[0], _entries(points, weights, geom, centres, cutoff_mm)

    k = max(int(n_directions), 1)
    out = []
    for technique in techniques:
        technique = str(getattr(technique, "value", technique)).lower()
        final_voxels, sel = 0, 0.0
        if technique == "vmat":
            n_fields = n_beamlets = 0
            nnz = 0.0
            # the template's arcs (the pipeline's collision check can only shorten them)
            for arc in arc_template(max(1, int(n_arcs))):
                n_sec = max(1, int(round(arc.span_deg / sector_deg)))
                samples = [field(float(arc.angle((j + 0.5) * arc.span_deg / k)), arc.collimator_deg,
                                 arc.couch_deg, beamlet_mm, _VMAT_MARGIN_MM) for j in range(k)]
                n_fields += n_sec
                n_beamlets += int(round(n_sec * np.mean([s[0] for s in samples])))
                nnz += n_sec * float(np.mean([s[1] for s in samples]))
            # the per-sector final dose (workflow.final_dose): full resolution within 30 mm of the target and
            # in organs within 60 mm, every second voxel in-plane up to 60 mm, the coarsest lattice beyond
            full_f = body_c & ((dist <= _FINAL_FULL_MM) | tgt_c | (organ_c & (dist <= _FINAL_FAR_MM)))
            far_step = 4 if 4.0 * grid_mm <= _FINAL_LATTICE_MM + 1e-6 else 2
            final_voxels = int(per_cell * (full_f.sum() + (body_c & ~full_f & (dist <= _FINAL_FAR_MM)).sum() / 4.0
                                           + (body_c & ~full_f & (dist > _FINAL_FAR_MM)).sum() / far_step ** 2))
            peak = _VMAT_BYTES_PER_NNZ * nnz + _FINAL_BYTES_PER_ENTRY * n_fields * final_voxels
        elif technique == "imrt":
            n_fields = int(n_beams or 7)
            gantries = [360.0 * (j + 0.5) / max(k, 4) for j in range(max(k, 4))]
            samples = [field(g, 0.0, 0.0, beamlet_mm, _IMRT_MARGIN_MM) for g in gantries]
            n_beamlets = int(round(n_fields * np.mean([s[0] for s in samples])))
            nnz = n_fields * float(np.mean([s[1] for s in samples]))
            if select_beams:
                coarse = [field(g, 0.0, 0.0, _SELECTION_BEAMLET_MM, _IMRT_MARGIN_MM)[1] for g in gantries]
                sel = _SELECTION_CANDIDATES * float(np.mean(coarse)) * min(1.0, _SELECTION_ROWS / max(n_opt, 1.0))
            peak = max(_IMRT_BYTES_PER_NNZ * nnz, _SELECTION_BYTES_PER_NNZ * sel)
        else:
            raise ValueError(f"technique must be vmat or imrt, got {technique!r}")
        out.append(InfluenceEstimate(technique, int(n_fields), int(n_beamlets), int(round(n_opt)), nnz, sel,
                                     int(final_voxels), float(peak)))
    return out


def check_plan_memory(case, targets=None, *, techniques=("vmat",), grid_mm: float = 2.0,
                      max_memory_gib: float | None = None, limit_label: str = "--max-memory-gib",
                      **options) -> list[InfluenceEstimate]:
    """Refuse a plan whose dose grid and influence matrix would not fit, before anything is built.

    Parameters
    ----------
    case : Case
        As read (CT grid).
    targets : Structure or list of Structure, optional
        The plan's target(s); without one only the dose grid is estimated (the planner reports the
        missing target in its own words).
    techniques : sequence of {"vmat", "imrt"}
        Every plan the job makes (one after the other: the largest counts).
    grid_mm, max_memory_gib, limit_label
        The dose grid; the job's memory limit and the option (or setting) that gave it.
    **options
        :func:`estimate_plan_influences`' plan settings (``n_beams``, ``beamlet_mm``, ``n_arcs``, ...).

    Returns
    -------
    list of InfluenceEstimate
        The estimates (empty without a target), for the caller's log.
    """
    n = dose_grid_voxels(case, grid_mm)
    grid_bytes = n * PLAN_BYTES_PER_VOXEL
    grid_text = f"the dose grid ({n:.3g} voxels at --grid-mm {grid_mm:g})"
    ests = []
    if targets is not None and (not isinstance(targets, (list, tuple)) or targets):
        try:
            ests = estimate_plan_influences(case, targets, techniques=tuple(techniques), grid_mm=grid_mm, **options)
        except ResourceError as exc:  # no body or an empty target: the planner refuses it in its own words
            from ._log import get_logger

            get_logger(__name__).warning("influence matrix not estimated: %s", exc)
    if ests:
        worst = max(ests, key=lambda e: e.peak_bytes)
        what = f"the {worst.describe()} and {grid_text}"
        total = grid_bytes + worst.peak_bytes
        advice = ADVICE + (" (an IMRT plan has 7 beams where VMAT has 120 arc sectors: --technique imrt)"
                           if worst.technique == "vmat" else "")
    else:
        what, total, advice = grid_text, grid_bytes, ADVICE
    check_memory(total, what, max_memory_gib, in_use_bytes=process_memory_bytes(), limit_label=limit_label,
                 advice=advice)
    return ests


def plan_targets(case, names=(), protocol: str | None = None) -> list:
    """The target structure(s) a plan of ``case`` will use, as far as its settings tell before planning:
    the structures ``names`` (case-insensitive, TG-263 or DICOM name), else the protocol's prescription role,
    else the largest PTV.  Empty when none is found (the planner reports it in its own words)."""
    from .case import StructureRole
    from .errors import SbrtplanError

    structures = case.structures
    found = []
    for name in names or ():
        key = str(name).lower()
        hit = next((s for n, s in structures.items()
                    if n.lower() == key or (getattr(s, "original_name", None) or "").lower() == key), None)
        if hit is not None and not hit.is_empty:
            found.append(hit)
    if found:
        return found
    try:
        from .evaluation.matching import match_roles
        from .protocols import load_protocol

        m = match_roles(load_protocol(protocol or "bone_spine"), structures,
                        names[0] if names and len(names) == 1 else None)
        if m.target is not None and not m.target.is_empty:
            return [m.target]
    except SbrtplanError:
        pass
    ptvs = [s for s in structures.values() if s.role is StructureRole.PTV and not s.is_empty]
    return [max(ptvs, key=lambda s: s.n_voxels)] if ptvs else []

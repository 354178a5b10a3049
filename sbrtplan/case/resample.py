"""Resampling of CT, density, structures and doses onto another grid (the dose grid).

Three kinds of resampling:

* **Values** (HU, density, dose): trilinear interpolation (``order=1``) or
  nearest neighbour (``order=0``).  Points inside the source grid's outer
  voxel faces but beyond its outermost centres take the edge value; points
  outside the faces take ``fill_value``.
* **Structures**: sub-voxel occupancy.  For every destination voxel the
  fraction of its volume covered by the source structure is computed by
  integrating the source voxels' occupancy (the source ``fraction`` if known,
  else its mask) over the destination voxel's box.  With axis-aligned grids
  this box integral is exact and separable (three 1-D overlap matrices), so
  the structure's volume is conserved exactly: a 0.2 cc organ resampled from
  1 mm to 2.5 mm voxels keeps its 0.2 cc in ``fraction``, even though it
  covers only a dozen destination voxels.  Oblique source grids (non-identity
  direction cosines) are integrated by supersampling each destination voxel
  with up to 4 x 4 x 4 points looked up in the source mask (nearest), which
  conserves volume to about a percent.
  The destination ``mask`` is ``fraction >= 0.5``: for a locally planar
  surface a voxel is at least half covered exactly when its centre is inside
  (the box is symmetric about its centre), so this is the "centre inside"
  rule evaluated with sub-voxel information.  A non-empty structure whose
  every voxel is less than half covered keeps its most covered voxel(s) in
  the mask so that it never vanishes from optimisation.
* **Cases**: :func:`resample_case` builds the dose grid (axis-aligned, any
  spacing, over the whole CT, a structure's box or an explicit region) and
  resamples everything onto it.

Separable kernels are gathered passes in numpy, one per tap; the oblique path uses
``scipy.ndimage.map_coordinates`` chunked by destination slices so that
memory stays bounded.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from .._log import Timings, get_logger, timed
from ..errors import InputError, StructureError
from .case import Case, Dose
from .distance import bounding_box_index
from .grid import Grid
from .structure import Structure

log = get_logger(__name__)

# Points per chunk of the oblique (map_coordinates) path: ~100 MB of float64 coordinates.
_CHUNK_POINTS = 4_000_000


# ------------------------------------------------------------- grid helpers
def _axis_signs(grid: Grid) -> np.ndarray | None:
    """(sx, sy, sz) in {-1, +1} when ``grid.direction`` is diagonal, else None.

    Diagonal direction cosines (axis-aligned, possibly flipped, e.g. a
    head-first prone CT) allow separable resampling.
    """
    d = np.asarray(grid.direction)
    if np.allclose(d, np.diag(np.diag(d)), atol=1e-6) and np.allclose(np.abs(np.diag(d)), 1.0, atol=1e-6):
        return np.sign(np.diag(d))
    return None


def _axis_geometry(grid: Grid) -> list[tuple[float, float, int]] | None:
    """Per array axis (k, j, i): (coordinate of index 0, signed step in mm, n)."""
    signs = _axis_signs(grid)
    if signs is None:
        return None
    out = []
    for ax_xyz, n in zip((2, 1, 0), grid.shape):
        out.append((grid.origin_mm[ax_xyz], signs[ax_xyz] * grid.spacing_mm[ax_xyz], n))
    return out


# ------------------------------------------------------------ 1-D weights
def _linear_weights(f: np.ndarray, n: int, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices, weights and inside flags to interpolate at fractional indices ``f``."""
    inside = (f >= -0.5 - 1e-9) & (f <= n - 0.5 + 1e-9)
    fc = np.clip(f, 0.0, n - 1.0)
    if order == 0:
        idx = np.clip(np.floor(fc + 0.5), 0, n - 1).astype(np.int64)[:, None]
        w = np.ones((f.size, 1), dtype=np.float32)
    elif n == 1:
        idx = np.zeros((f.size, 1), dtype=np.int64)
        w = np.ones((f.size, 1), dtype=np.float32)
    else:
        i0 = np.minimum(np.floor(fc), n - 2).astype(np.int64)
        t = (fc - i0).astype(np.float32)
        idx = np.stack([i0, i0 + 1], axis=1)
        w = np.stack([1 - t, t], axis=1)
    w[~inside] = 0.0
    return idx, w, inside


def _box_weights(f: np.ndarray, width: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlap weights of destination boxes [f - width/2, f + width/2] (in
    source index units) with source voxels [s - 1/2, s + 1/2]; each row sums to
    the fraction of the destination box that lies inside the source grid."""
    lo = f - 0.5 * width
    hi = f + 0.5 * width
    s0 = np.floor(lo + 0.5).astype(np.int64)
    K = int(np.ceil(width)) + 1
    s = s0[:, None] + np.arange(K)[None, :]
    overlap = np.minimum(s + 0.5, hi[:, None]) - np.maximum(s - 0.5, lo[:, None])
    w = np.clip(overlap, 0.0, None) / width
    valid = (s >= 0) & (s < n)
    w = np.where(valid, w, 0.0).astype(np.float32)
    idx = np.clip(s, 0, n - 1)
    inside = w.sum(axis=1) > 0
    return idx, w, inside


def _apply_axis(a: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Resample float32 array ``a`` along ``axis``: out[.., d, ..] = sum_k w[d, k] a[.., idx[d, k], ..].

    One gathered pass per tap (two for linear interpolation), in numpy: no kernel to compile.
    Products are float32; the last axis accumulates them in float64, the others in float32
    (the arithmetic of the compiled kernel this replaced, to the bit).
    """
    nd, n_taps = w.shape
    shape = list(a.shape)
    shape[axis] = nd
    wide = axis == a.ndim - 1
    out = np.zeros(shape, dtype=np.float64 if wide else np.float32)
    bshape = [1] * a.ndim
    bshape[axis] = nd
    for k in range(n_taps):
        wk = w[:, k].reshape(bshape)
        taken = np.take(a, idx[:, k], axis=axis)
        if wide:
            out += (wk * taken).astype(np.float64)
        else:
            out += wk * taken
    return out.astype(np.float32, copy=False)


def _dst_axis_positions(dst: Grid) -> list[np.ndarray]:
    geo = _axis_geometry(dst)
    return [o + step * np.arange(n) for o, step, n in geo]


def _separable(array: np.ndarray, src_geo, dst_pos: list[np.ndarray], dst_width: Sequence[float],
               kind: str, order: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Separable resampling of ``array`` (float32) to destination axis positions.

    Applies the largest reduction first to keep intermediates small.  Returns
    the result and the per-axis inside flags.
    """
    weights = []
    for ax in range(3):
        o, step, n = src_geo[ax]
        f = (dst_pos[ax] - o) / step
        if kind == "box":
            weights.append(_box_weights(f, dst_width[ax] / abs(step), n))
        else:
            weights.append(_linear_weights(f, n, order))
    out = np.ascontiguousarray(array, dtype=np.float32)
    # Axes that shrink most go first.
    for ax in sorted(range(3), key=lambda a: dst_pos[a].size / max(out.shape[a], 1)):
        idx, w, _ = weights[ax]
        out = _apply_axis(out, ax, idx.astype(np.int64), w.astype(np.float32))
    return out, [wt[2] for wt in weights]


# --------------------------------------------------------------- values
def resample_array(array: np.ndarray, src_grid: Grid, dst_grid: Grid, order: int = 1,
                   fill_value: float = 0.0) -> np.ndarray:
    """Interpolate ``array`` (on ``src_grid``) at the voxel centres of ``dst_grid``.

    Parameters
    ----------
    array : ndarray, shape ``src_grid.shape``
    src_grid, dst_grid : Grid
        Any orientation; axis-aligned pairs use an exact separable kernel.
    order : {0, 1}
        0 nearest neighbour, 1 trilinear.
    fill_value : float
        Value outside the source grid's outer voxel faces.

    Returns
    -------
    ndarray of float32, shape ``dst_grid.shape``
    """
    arr = np.asarray(array)
    if arr.shape != src_grid.shape:
        raise InputError(f"resample_array: array shape {arr.shape} does not match the source grid {src_grid.shape}")
    if order not in (0, 1):
        raise InputError(f"resample_array: order must be 0 (nearest) or 1 (trilinear), got {order!r}")
    src_geo, dst_geo = _axis_geometry(src_grid), _axis_geometry(dst_grid)
    if src_geo is not None and dst_geo is not None:
        out, inside = _separable(arr, src_geo, _dst_axis_positions(dst_grid), (0, 0, 0), "linear", order)
        if fill_value != 0.0:
            outside = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
            out[outside] = fill_value
        return out
    return _map_coordinates_chunked(arr, src_grid, dst_grid, order, fill_value)


def _map_coordinates_chunked(arr: np.ndarray, src: Grid, dst: Grid, order: int, fill_value: float) -> np.ndarray:
    out = np.empty(dst.shape, dtype=np.float32)
    src_f = np.asarray(arr, dtype=np.float32)
    per_slice = dst.ny * dst.nx
    step = max(1, _CHUNK_POINTS // per_slice)
    jj, ii = np.meshgrid(np.arange(dst.ny), np.arange(dst.nx), indexing="ij")
    upper = np.asarray(src.shape) - 0.5
    for k0 in range(0, dst.nz, step):
        ks = np.arange(k0, min(k0 + step, dst.nz))
        kji = np.stack(np.broadcast_arrays(ks[:, None, None], jj[None], ii[None]), axis=-1).astype(float)
        idx = src.index_from_patient(dst.patient_from_index(kji))  # (..., 3) in (k, j, i)
        inside = np.all((idx >= -0.5) & (idx <= upper), axis=-1)
        coords = np.moveaxis(idx, -1, 0)
        vals = ndimage.map_coordinates(src_f, coords, order=order, mode="nearest")
        vals[~inside] = fill_value
        out[ks[0]:ks[-1] + 1] = vals
    return out


def resample_dose(dose: Dose, grid: Grid) -> Dose:
    """Trilinear resampling of ``dose`` onto ``grid`` (zero outside the dose grid)."""
    dose_gy = resample_array(dose.dose_gy, dose.grid, grid, order=1, fill_value=0.0)
    return Dose(grid=grid, dose_gy=dose_gy, description=dose.description, per_fraction=dose.per_fraction)


# ------------------------------------------------------------ structures
def _occupied_box(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    occ = structure.mask if structure.fraction is None else (structure.fraction > 0)
    return bounding_box_index(occ)


def _structure_box_mm(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """Patient-space (lo, hi) of the outer faces of the structure's occupied voxels."""
    lo, hi = _occupied_box(structure)
    corners = np.array([[k, j, i] for k in (lo[0] - 0.5, hi[0] + 0.5)
                        for j in (lo[1] - 0.5, hi[1] + 0.5) for i in (lo[2] - 0.5, hi[2] + 0.5)])
    pts = structure.grid.patient_from_index(corners)
    return pts.min(axis=0), pts.max(axis=0)


def _dst_index_box(dst: Grid, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of destination voxels whose boxes touch [lo_mm, hi_mm]."""
    corners = np.array([[x, y, z] for x in (lo_mm[0], hi_mm[0]) for y in (lo_mm[1], hi_mm[1])
                        for z in (lo_mm[2], hi_mm[2])])
    idx = dst.index_from_patient(corners)
    a = np.floor(idx.min(axis=0) + 0.5).astype(int) - 1
    b = np.floor(idx.max(axis=0) + 0.5).astype(int) + 2
    a = np.maximum(a, 0)
    b = np.minimum(b, dst.shape)
    if np.any(b <= a):
        return None
    return tuple(slice(int(a[n]), int(b[n])) for n in range(3))


def _sub_grid(dst: Grid, sl: tuple[slice, ...]) -> Grid:
    origin = dst.patient_from_index([sl[0].start, sl[1].start, sl[2].start])
    shape = tuple(s.stop - s.start for s in sl)
    return Grid(shape, dst.spacing_mm, tuple(origin), dst.direction)


def _occupancy_oblique(weights: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Occupancy on ``dst`` by supersampling each voxel (nearest lookup in the source)."""
    n_sub = np.clip(np.ceil(np.asarray(dst.spacing_mm) / min(src.spacing_mm)), 1, 4).astype(int)
    offs = [((np.arange(n) + 0.5) / n - 0.5) for n in n_sub]  # fractions of a voxel, per x, y, z
    acc = np.zeros(dst.shape, dtype=np.float32)
    total = int(np.prod(n_sub))
    for oz in offs[2]:
        for oy in offs[1]:
            for ox in offs[0]:
                shifted = Grid(dst.shape, dst.spacing_mm,
                               tuple(np.asarray(dst.origin_mm) + dst.direction @ (np.array([ox, oy, oz]) * np.asarray(dst.spacing_mm))),
                               dst.direction)
                acc += _map_coordinates_chunked(weights, src, shifted, order=0, fill_value=0.0)
    return acc / total


def resample_structure(structure: Structure, grid: Grid) -> Structure:
    """``structure`` on ``grid`` with sub-voxel occupancy (see the module docstring).

    Returns
    -------
    Structure
        Same name, role, colour and metadata; ``fraction`` = covered fraction
        of each voxel, ``mask`` = ``fraction >= 0.5`` (never empty when the
        structure overlaps the grid).
    """
    src = structure.grid
    frac = np.zeros(grid.shape, dtype=np.float32)
    if structure.mask.any() or (structure.fraction is not None and np.any(structure.fraction > 0)):
        lo_mm, hi_mm = _structure_box_mm(structure)
        sl = _dst_index_box(grid, lo_mm, hi_mm)
        if sl is not None:
            sub = _sub_grid(grid, sl)
            src_geo, dst_geo = _axis_geometry(src), _axis_geometry(sub)
            if src_geo is not None and dst_geo is not None:
                # Crop the source to the structure's box (plus one voxel) first.
                klo, khi = _occupied_box(structure)
                klo = np.maximum(klo - 1, 0)
                khi = np.minimum(khi + 2, src.shape)
                crop = tuple(slice(int(a), int(b)) for a, b in zip(klo, khi))
                geo = [(o + step * crop[ax].start, step, crop[ax].stop - crop[ax].start)
                       for ax, (o, step, _) in enumerate(src_geo)]
                occupancy = (structure.mask[crop].astype(np.float32) if structure.fraction is None
                             else structure.fraction[crop])
                block, _ = _separable(occupancy, geo, _dst_axis_positions(sub), grid.spacing_zyx_mm, "box")
            else:
                block = _occupancy_oblique(structure.weights, src, sub)
            frac[sl] = np.clip(block, 0.0, 1.0)
    mask = frac >= 0.5
    if not mask.any() and np.any(frac > 0):
        # Keep the best-covered voxel(s): a tiny organ must not vanish.
        mask = frac >= frac.max() - 1e-6
        log.debug("structure '%s' covers no voxel by half on the new grid; kept its %d best-covered voxel(s)",
                  structure.name, int(mask.sum()))
    return Structure(name=structure.name, grid=grid, mask=mask, role=structure.role, fraction=frac,
                     original_name=structure.original_name, color_rgb=structure.color_rgb,
                     metadata=dict(structure.metadata))


# ------------------------------------------------------------------ cases
def _region_box(case: Case, region, margin_mm: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    if region is None:
        if margin_mm:
            lo, hi = case.grid.bounds_mm()
            return lo - margin_mm, hi + margin_mm
        return None, None
    if isinstance(region, Structure):
        if not region.grid.same_as(case.grid):
            raise StructureError(f"resample_case: region structure '{region.name}' is not on the CT grid of "
                                 f"case '{case.name}'")
        if region.is_empty:
            raise StructureError(f"resample_case: region structure '{region.name}' is empty")
        lo, hi = _structure_box_mm(region)
    else:
        try:
            lo, hi = (np.asarray(v, dtype=float).reshape(3) for v in region)
        except (TypeError, ValueError):
            raise InputError("resample_case: region must be a Structure, a (lo_mm, hi_mm) pair of (x, y, z) "
                             f"points or None, got {region!r}") from None
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
            raise InputError(f"resample_case: region lo_mm must be below hi_mm on every axis, got {lo}, {hi}")
    return lo - margin_mm, hi + margin_mm


def resample_case(case: Case, spacing_mm, region: Structure | tuple | None = None, margin_mm: float = 0.0,
                  progress: Callable[[int, int], None] | None = None,
                  timings: Timings | None = None) -> Case:
    """A new :class:`Case` on an axis-aligned grid of ``spacing_mm`` (the dose grid).

    Parameters
    ----------
    case : Case
        Source case (any CT orientation).
    spacing_mm : float or (sx, sy, sz)
        Voxel size of the new grid in mm (SBRT: <= 2 mm).
    region : Structure or (lo_mm, hi_mm) or None
        Part of the CT to cover: a structure's bounding box (e.g. the
        External), an explicit box in patient coordinates, or the whole CT.
        The new grid never extends beyond the CT.
    margin_mm : float
        Grows the region on every side (clipped to the CT).
    progress : callable(done, total), optional
        Called after each resampled array (CT, density, each structure).
    timings : Timings, optional
        Receives the step's duration.

    Returns
    -------
    Case
        HU and density trilinear (density interpolated itself, not recomputed
        from interpolated HU, so that partial-volume voxels keep the mean
        electron density); structures with sub-voxel occupancy; reference doses,
        patient identifiers, calibration and metadata carried over.
    """
    spacing = np.asarray(spacing_mm, dtype=float).reshape(-1)
    if spacing.size not in (1, 3) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"resample_case: spacing_mm must be a positive number or (x, y, z) triple in mm, "
                         f"got {spacing_mm!r}")
    if not np.isfinite(margin_mm) or margin_mm < 0:
        raise InputError(f"resample_case: margin_mm must be a non-negative number, got {margin_mm!r}")
    lo, hi = _region_box(case, region, float(margin_mm))
    step = np.broadcast_to(spacing, 3).astype(float)
    if lo is not None:
        # Round the region up to whole voxels (centred) so that the dose grid
        # covers all of it: Grid.with_spacing rounds down, which would shave
        # up to a voxel off a body outline.  The CT bounds still clip it.
        n = np.ceil((hi - lo) / step - 1e-6)
        pad = 0.5 * (n * step - (hi - lo))
        lo, hi = lo - pad, hi + pad
    grid = case.grid.with_spacing(step, lo, hi)
    total = 2 + len(case.structures)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with timed(f"resample case '{case.name}' to {grid.nx}x{grid.ny}x{grid.nz} @ "
               f"{'x'.join(f'{s:g}' for s in grid.spacing_mm)} mm", log, timings):
        hu = resample_array(case.hu, case.grid, grid, order=1, fill_value=-1000.0)
        tick()
        density = resample_array(case.density, case.grid, grid, order=1, fill_value=float(case.calibration(np.array([-1000.0]))[0]))
        tick()
        structures = {}
        for key, s in case.structures.items():
            structures[key] = resample_structure(s, grid)
            tick()
    metadata = dict(case.metadata)
    metadata["resampled_from"] = repr(case.grid)
    return Case(name=case.name, grid=grid, hu=hu, structures=structures, calibration=case.calibration,
                density=density, patient_position=case.patient_position, patient=case.patient,
                doses=dict(case.doses), source=case.source, metadata=metadata)

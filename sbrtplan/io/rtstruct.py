"""RTSTRUCT import: planar contours -> masks and sub-voxel occupancy on a grid.

Geometry model
--------------
Each ROI is a stack of closed planar contours.  The contours of one plane are
combined with the **even-odd rule** (a contour inside another is a hole, a
contour inside a hole is an island again), which is how DICOM stores holes.
Each contour plane stands for a slab of the slice thickness ``t`` (the
most common gap between contour planes in the file, i.e. the CT slice spacing),
centred on the plane, so the structure is a stack of prisms.

On the destination grid:

* ``mask`` is True where the voxel *centre* lies inside a prism (in-plane:
  even-odd scanline through the voxel centre row; through-plane: the centre
  lies within the slab).  On the CT grid every contour plane is a slice and
  this is the usual "voxel centre inside the contour" rule.
* ``fraction`` is the fraction of each voxel's volume inside the prisms:
  the covered length of each of ``n_sub`` sub-rows per voxel row is computed
  exactly from the scanline intervals, and the slab overlap along the slice
  axis is exact.  With this occupancy small structures keep their contoured
  volume on coarse grids (a dose grid of 2.5 mm, for example).

Contour points are transformed into the grid's fractional index space, so the
grid may have any orientation as long as its slices are parallel to the
contour planes (true for the CT grid and for RTDOSE grids of the same
orientation); otherwise a clear :class:`InputError` is raised.

The in-plane rasteriser is a numba scanline kernel (no Python loop over
voxels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from numba import njit

from .._log import Timings, get_logger, timed
from ..case import Case, Grid, Structure, infer_role, normalize_name
from ..errors import InputError, StructureError
from .dicom_ct import read_header
from .validate import (check_contour_points, check_rtstruct_dataset, check_unique_roi_names,
                       refuse_malformed)

log = get_logger(__name__)

# Sub-rows per voxel row for the in-plane occupancy: the covered length along
# each sub-row is exact, so the area error is that of a 6-point midpoint rule
# across the row (well below 1 % of a voxel for smooth contours).
N_SUB_ROWS = 6
# A contour whose points spread more than this along the grid's slice axis is
# not parallel to the grid's slices.
_PLANAR_TOL_MM = 0.5


@njit(cache=True)
def _sort_crossings(xs):  # pragma: no cover - compiled
    """Sort the scanline crossings ``xs`` in place (insertion sort; a row has few crossings).

    Cached kernels do not call numba's ``np.sort``: its helpers share symbol names
    between sort variants, and cached libraries compiled in different processes
    can then bind each other's helper and crash when loaded together.
    """
    for r in range(1, xs.shape[0]):
        v = xs[r]
        t = r - 1
        while t >= 0 and xs[t] > v:
            xs[t + 1] = xs[t]
            t -= 1
        xs[t + 1] = v


@njit(cache=True)
def _raster_plane(ex0, ey0, ex1, ey1, ny, nx, n_sub, frac, mask):  # pragma: no cover - compiled
    """Even-odd scanline of one plane's edges (index units: x = column i, y = row j).

    ``mask[j, i]`` is set where the centre (j, i) is inside; ``frac[j, i]``
    accumulates the covered area fraction (``n_sub`` sub-rows, exact along x).
    """
    ne = ex0.shape[0]
    if ne == 0:
        return
    ymin = min(ey0.min(), ey1.min())
    ymax = max(ey0.max(), ey1.max())
    j0 = max(0, int(np.floor(ymin - 0.5)))
    j1 = min(ny - 1, int(np.ceil(ymax + 0.5)))
    xs = np.empty(ne)
    for j in range(j0, j1 + 1):
        for s in range(n_sub + 1):
            if s < n_sub:
                y = j - 0.5 + (s + 0.5) / n_sub
            else:
                y = float(j)
            cnt = 0
            for e in range(ne):
                a0 = ey0[e] <= y
                a1 = ey1[e] <= y
                if a0 != a1:  # half-open rule: a vertex on the line counts once
                    xs[cnt] = ex0[e] + (y - ey0[e]) * (ex1[e] - ex0[e]) / (ey1[e] - ey0[e])
                    cnt += 1
            if cnt < 2:
                continue
            xv = xs[:cnt]
            _sort_crossings(xv)  # not np.sort: see _sort_crossings
            for m in range(0, cnt - 1, 2):
                a = xv[m]
                b = xv[m + 1]
                if s == n_sub:
                    i0 = max(0, int(np.ceil(a)))
                    i1 = min(nx - 1, int(np.ceil(b)) - 1)
                    for i in range(i0, i1 + 1):
                        mask[j, i] = True
                else:
                    i0 = max(0, int(np.floor(a + 0.5)))
                    i1 = min(nx - 1, int(np.floor(b + 0.5)))
                    for i in range(i0, i1 + 1):
                        lo = max(a, i - 0.5)
                        hi = min(b, i + 0.5)
                        if hi > lo:
                            frac[j, i] += (hi - lo) / n_sub


def rasterize_planes(planes: dict[float, list[np.ndarray]], grid: Grid, thickness_index: float,
                     occupancy: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Mask and occupancy of a stack of planar polygons given in grid index space.

    Parameters
    ----------
    planes : dict of plane position (fractional slice index k) -> list of (N, 2) arrays
        Each array is a closed polygon in fractional (j, i) indices.
    grid : Grid
    thickness_index : float
        Slab thickness of each plane in slice-index units.
    occupancy : bool
        Also compute the sub-voxel occupancy.

    Returns
    -------
    mask : bool array ``grid.shape``
    fraction : float32 array ``grid.shape`` or None
    """
    nz, ny, nx = grid.shape
    mask = np.zeros(grid.shape, dtype=bool)
    frac = np.zeros(grid.shape, dtype=np.float32) if occupancy else None
    if not planes:
        return mask, frac
    half = 0.5 * thickness_index
    n_sub = N_SUB_ROWS if occupancy else 1
    # Work in the in-plane bounding box of all the ROI's polygons (plus a voxel).
    allpts = np.concatenate([p for polys in planes.values() for p in polys])
    j0 = int(max(0, np.floor(allpts[:, 0].min()) - 1))
    j1 = int(min(ny, np.ceil(allpts[:, 0].max()) + 2))
    i0 = int(max(0, np.floor(allpts[:, 1].min()) - 1))
    i1 = int(min(nx, np.ceil(allpts[:, 1].max()) + 2))
    if j1 <= j0 or i1 <= i0:
        return mask, frac
    bny, bnx = j1 - j0, i1 - i0
    for kp, polys in planes.items():
        k_lo = max(int(np.ceil(kp - half - 0.5 - 1e-9)), 0)
        k_hi = min(int(np.floor(kp + half + 0.5 + 1e-9)), nz - 1)
        if k_hi < k_lo:
            continue
        ex0 = np.concatenate([p[:, 1] for p in polys]) - i0
        ey0 = np.concatenate([p[:, 0] for p in polys]) - j0
        ex1 = np.concatenate([np.roll(p[:, 1], -1) for p in polys]) - i0
        ey1 = np.concatenate([np.roll(p[:, 0], -1) for p in polys]) - j0
        m2 = np.zeros((bny, bnx), dtype=bool)
        f2 = np.zeros((bny, bnx), dtype=np.float32)
        _raster_plane(ex0, ey0, ex1, ey1, bny, bnx, n_sub, f2, m2)
        for k in range(k_lo, k_hi + 1):
            if kp - half - 1e-6 <= k < kp + half - 1e-6:
                mask[k, j0:j1, i0:i1] |= m2
            if frac is not None:
                w = min(k + 0.5, kp + half) - max(k - 0.5, kp - half)
                if w > 1e-9:
                    blk = frac[k, j0:j1, i0:i1]
                    blk += np.float32(w) * f2
                    np.minimum(blk, np.float32(1.0), out=blk)
    return mask, frac


def _roi_tables(ds, path: Path) -> dict[int, dict]:
    rois: dict[int, dict] = {}
    for item in ds.get("StructureSetROISequence", []) or []:
        num = int(item.ROINumber)
        rois[num] = {"number": num, "name": str(item.get("ROIName", f"ROI {num}")).strip(),
                     "for_uid": str(item.get("ReferencedFrameOfReferenceUID", "") or "") or None,
                     "type": None, "color": None, "contours": []}
    for item in ds.get("RTROIObservationsSequence", []) or []:
        num = int(item.get("ReferencedROINumber", -1))
        if num in rois:
            rois[num]["type"] = str(item.get("RTROIInterpretedType", "") or "") or None
    for item in ds.get("ROIContourSequence", []) or []:
        num = int(item.get("ReferencedROINumber", -1))
        if num not in rois:
            log.warning("%s: contours for ROI number %d, which the StructureSetROISequence does not list", path, num)
            continue
        color = item.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            rois[num]["color"] = tuple(int(float(c)) for c in color)
        rois[num]["contours"] = list(item.get("ContourSequence", []) or [])
    return rois


def _select(rois: dict[int, dict], names: Sequence[str] | None, path: Path) -> list[dict]:
    if names is None:
        return list(rois.values())
    by_key: dict[str, dict] = {}
    for r in rois.values():
        by_key.setdefault(r["name"].lower(), r)
        by_key.setdefault(normalize_name(r["name"]).lower(), r)
    out, missing = [], []
    for n in names:
        r = by_key.get(str(n).lower()) or by_key.get(normalize_name(str(n)).lower())
        if r is None:
            missing.append(str(n))
        elif r not in out:
            out.append(r)
    if missing:
        avail = ", ".join(r["name"] for r in rois.values()) or "none"
        raise StructureError(f"{path}: no ROI named {', '.join(repr(m) for m in missing)} (available: {avail})")
    return out


@refuse_malformed("RTSTRUCT")
def read_rtstruct(path: str | Path, case: Case | Grid, names: Sequence[str] | None = None, *,
                  occupancy: bool = True, frame_of_reference_uid: str | None = None,
                  timings: Timings | None = None) -> list[Structure]:
    """Rasterise the ROIs of an RTSTRUCT file onto a case's CT grid (or any grid).

    Parameters
    ----------
    path : path
        The RTSTRUCT file.
    case : Case or Grid
        Destination: a case (its CT grid and FrameOfReferenceUID) or a bare
        grid (e.g. a dose grid).
    names : sequence of str, optional
        ROIs to read, by their name in the file or their TG-263 name
        (case-insensitive); all ROIs with contours when None.
    occupancy : bool
        Compute ``Structure.fraction`` (sub-voxel occupancy); default True.
    frame_of_reference_uid : str, optional
        Frame of reference the ROIs must share when ``case`` is a bare grid.

    Returns
    -------
    list of Structure
        TG-263 names (``original_name`` keeps the file's), role from the name
        and RTROIInterpretedType, colour, ``metadata['roi_number']``.

    Raises
    ------
    InputError
        Not an RTSTRUCT, ROIs in another frame of reference (named), contours
        not parallel to the grid's slices.
    StructureError
        A requested ROI is absent or has no contours.
    """
    path = Path(path)
    with timed(f"read RTSTRUCT {path.name}", log, timings):
        if not path.is_file():
            raise InputError(f"{path}: no such RTSTRUCT file")
        import pydicom

        try:
            ds = pydicom.dcmread(str(path))
        except pydicom.errors.InvalidDicomError:
            raise InputError(f"{path}: not a DICOM file; expected an RTSTRUCT") from None
        except Exception as exc:
            raise InputError(f"{path}: cannot read RTSTRUCT ({type(exc).__name__}: {exc}); "
                             "the file may be truncated") from None
        if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
            raise InputError(f"{path}: Modality is {ds.get('Modality', 'missing')!s}, expected RTSTRUCT")
        check_rtstruct_dataset(ds, path)  # cut or inconsistent contour items (a truncated file)
        if isinstance(case, Case):
            grid = case.grid
            for_uid = frame_of_reference_uid or case.patient.frame_of_reference_uid
        elif isinstance(case, Grid):
            grid, for_uid = case, frame_of_reference_uid
        else:
            raise InputError(f"read_rtstruct: expected a Case or a Grid as destination, got {type(case).__name__}")
        rois = _roi_tables(ds, path)
        selected = _select(rois, names, path)
        if for_uid:
            foreign = [r["name"] for r in selected if r["for_uid"] and r["for_uid"] != for_uid]
            if foreign:
                other = {r["for_uid"] for r in selected if r["for_uid"] and r["for_uid"] != for_uid}
                raise InputError(f"{path}: ROI(s) {', '.join(foreign)} are defined in frame of reference "
                                 f"{', '.join(sorted(other))}, not the CT's {for_uid}; refused "
                                 "(register the images or choose other ROIs)")
        empty = [r["name"] for r in selected if not any(_is_closed(c) for c in r["contours"])]
        if names is not None and empty:
            raise StructureError(f"{path}: ROI(s) {', '.join(empty)} have no closed planar contours")
        if selected and len(empty) == len(selected):  # e.g. a truncated file: nothing would be evaluated
            raise StructureError(f"{path}: none of its {len(selected)} ROIs has closed planar contours "
                                 "(truncated or empty structure set?)")
        for r in selected:
            if r["name"] not in empty:
                continue
            if _is_marker(r):  # isocentre and marker points: expected, nothing to evaluate
                log.info("%s: ROI '%s' is a point (%s); skipped", path, r["name"], r["type"] or "POINT contours")
            else:
                log.warning("%s: ROI '%s' has no closed planar contours; skipped", path, r["name"])
        selected = [r for r in selected if r["name"] not in empty]
        check_unique_roi_names(selected, path)  # two contoured ROIs of one name: which one is the PTV?

        # Contours -> fractional grid indices, grouped by plane.
        sz = grid.spacing_mm[2]
        roi_planes: list[dict[float, list[np.ndarray]]] = []
        between: list[tuple[str, float]] = []  # ROIs whose contour planes lie between CT slices
        all_positions: list[float] = []
        for r in selected:
            planes: dict[float, list[np.ndarray]] = {}
            for c in r["contours"]:
                if not _is_closed(c):
                    continue
                pts = _contour_points(c)
                check_contour_points(pts, path, r["name"])
                if pts.size < 9 or pts.size % 3:
                    if pts.size % 3:
                        raise InputError(f"{path}: ROI '{r['name']}': ContourData length {pts.size} "
                                         "is not a multiple of 3")
                    continue  # fewer than three points encloses nothing
                kji = grid.index_from_patient(pts.reshape(-1, 3))
                spread_mm = float(np.ptp(kji[:, 0])) * sz
                if spread_mm > _PLANAR_TOL_MM:
                    raise InputError(f"{path}: ROI '{r['name']}': a contour spans {spread_mm:.2f} mm across the "
                                     "grid's slices; expected contours parallel to the slices")
                kp = round(float(kji[:, 0].mean()), 3)
                planes.setdefault(kp, []).append(np.ascontiguousarray(kji[:, 1:]))
            roi_planes.append(planes)
            if isinstance(case, Case) and planes:  # on the CT, contours belong on slices: say when they do not
                off = max(abs(k - round(k)) for k in planes)
                if off > 0.25:
                    between.append((r["name"], off * sz))
            all_positions.extend(planes.keys())
        if between:
            log.warning("%s: contour planes of %d ROI(s) (%s) lie up to %.2f mm between CT slices; each plane is "
                        "applied to the slices its slab covers (check that the structure set matches this CT)",
                        path, len(between), ", ".join(n for n, _ in between[:6]) + (" ..." if len(between) > 6
                                                                                     else ""),
                        max(d for _, d in between))
        # Slab thickness: the most common gap between neighbouring contour planes of the file
        # (the CT slice spacing); robust to a stray plane between two slices.
        positions = np.unique(np.round(np.asarray(all_positions) * sz, 2))
        gaps = np.round(np.diff(positions), 2)
        gaps = gaps[gaps > 0.05]
        if gaps.size:
            values, counts = np.unique(gaps, return_counts=True)
            thickness_mm = float(values[counts == counts.max()].min())
        else:
            thickness_mm = sz
        thickness = thickness_mm / sz

        out: list[Structure] = []
        used: set[str] = set()
        for r, planes in zip(selected, roi_planes):
            mask, frac = rasterize_planes(planes, grid, thickness, occupancy=occupancy)
            name = normalize_name(r["name"])
            if name in used:
                base, i = name, 2
                while f"{base}_{i}" in used:
                    i += 1
                name = f"{base}_{i}"
            used.add(name)
            if not mask.any() and (frac is None or not frac.any()):
                log.warning("%s: ROI '%s' lies outside the grid; its mask is empty", path, r["name"])
            out.append(Structure(name=name, grid=grid, mask=mask, role=infer_role(name, r["type"]),
                                 fraction=frac, original_name=r["name"], color_rgb=r["color"],
                                 metadata={"roi_number": r["number"], "dicom_type": r["type"],
                                           "n_planes": len(planes), "slab_thickness_mm": thickness_mm,
                                           "source": str(path)}))
    return out


def _contour_points(contour) -> np.ndarray:
    """ContourData as a float array; parses the raw DS bytes directly (pydicom's
    per-value conversion dominates the read time of large structure sets)."""
    try:
        raw = contour.get_item(0x30060050)
        value = getattr(raw, "value", None)
        if isinstance(value, (bytes, bytearray)):
            arr = np.array(value.replace(b"\\", b" ").split(), dtype=float)
            if arr.size:
                return arr
    except (KeyError, ValueError, TypeError):
        pass
    try:
        return np.asarray(contour.ContourData, dtype=float)
    except (AttributeError, ValueError, TypeError) as exc:
        raise InputError(f"unreadable ContourData ({exc})") from None


def _is_marker(roi: dict) -> bool:
    """A point ROI: typed MARKER/ISOCENTER/REGISTRATION, or contoured with POINT items only."""
    if (roi.get("type") or "").strip().upper() in ("MARKER", "ISOCENTER", "REGISTRATION"):
        return True
    kinds = {str(c.get("ContourGeometricType", "")).upper() for c in roi.get("contours", [])}
    return kinds == {"POINT"}


def _is_closed(contour) -> bool:
    return str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper() == "CLOSED_PLANAR"


def rtstruct_frame_of_reference(path: str | Path) -> set[str]:
    """FrameOfReferenceUIDs referenced by the ROIs of an RTSTRUCT (header only)."""
    ds = read_header(Path(path), "RTSTRUCT")
    uids = {str(item.get("ReferencedFrameOfReferenceUID", "")) for item in ds.get("StructureSetROISequence", []) or []}
    for item in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        uids.add(str(item.get("FrameOfReferenceUID", "")))
    return {u for u in uids if u}

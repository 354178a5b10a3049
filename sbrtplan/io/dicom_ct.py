"""DICOM folder scanning and CT series import.

A folder is scanned once (headers only, pixel data skipped); its files are
grouped by modality and, for CT images, by SeriesInstanceUID.  The CT series
is sorted along the slice normal (the cross product of the
ImageOrientationPatient row and column cosines), rescaled to HU with each
slice's RescaleSlope / RescaleIntercept, and placed on a :class:`Grid` whose
direction cosines are the image's (so any patient orientation is kept).

Refused with a one-line :class:`InputError` naming the folder or file:
an empty folder, a folder without DICOM CT, several CT series when no
SeriesInstanceUID is given (the UIDs are listed), a gantry tilt (slices
shifted within their plane or GantryDetectorTilt != 0), slices of different
orientation or size, two slices at the same position and a truncated or
unreadable pixel block.  Unequal slice spacing is resampled (linear
interpolation between neighbouring slices onto the most common spacing) unless
``uneven="error"``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._log import Timings, get_logger, timed
from ..case import Case, DensityCalibration, Grid, PatientInfo
from ..errors import InputError

log = get_logger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

# Slice positions closer than this along the normal are "the same slice".
_SAME_POSITION_MM = 1e-3
# Relative tolerance of slice gaps before the series counts as unevenly spaced
# (DICOM writers round positions to 0.01 mm; 1 % of a 1 mm slice is above that).
_SPACING_RTOL = 0.01
# In-plane shift of successive slice origins that reveals a gantry tilt.
_TILT_SHIFT_MM = 0.05


@dataclass
class DicomFolder:
    """Headers of the DICOM files of one folder, grouped by modality.

    Attributes
    ----------
    directory : Path
    ct_series : dict of SeriesInstanceUID -> list of (path, header)
    rtstruct, rtdose, rtplan : list of (path, header)
    other : list of (path, header) of DICOM files of other modalities
    not_dicom : list of Path of files that are not DICOM
    """

    directory: Path
    ct_series: dict[str, list] = field(default_factory=dict)
    rtstruct: list = field(default_factory=list)
    rtdose: list = field(default_factory=list)
    rtplan: list = field(default_factory=list)
    other: list = field(default_factory=list)
    not_dicom: list = field(default_factory=list)

    @property
    def n_dicom(self) -> int:
        return (sum(len(v) for v in self.ct_series.values()) + len(self.rtstruct) + len(self.rtdose)
                + len(self.rtplan) + len(self.other))


def read_header(path: Path, what: str = "DICOM file"):
    """The header of ``path`` (pixel data skipped); InputError when it is not readable DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        raise InputError(f"{path}: not a DICOM file (no DICM preamble); expected a {what}") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: cannot read {what}: {type(exc).__name__}: {exc}") from None


def scan_folder(directory: str | Path) -> DicomFolder:
    """Read the DICOM headers of every file in ``directory`` (not recursive)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    d = Path(directory)
    if not d.exists():
        raise InputError(f"{d}: no such folder")
    if not d.is_dir():
        raise InputError(f"{d}: expected a folder of DICOM files, got a file")
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{d}: the folder is empty; expected DICOM CT images (and optionally RTSTRUCT/RTDOSE)")
    out = DicomFolder(directory=d)
    for p in files:
        try:
            # Large values (pixel data) are read only when used, from the same parse.
            ds = pydicom.dcmread(str(p), defer_size="4 KB")
        except InvalidDicomError:
            if _has_dicm_magic(p):
                raise InputError(f"{p}: truncated or corrupt DICOM file (DICM marker present, header unreadable)") \
                    from None
            out.not_dicom.append(p)
            continue
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{p}: cannot read DICOM header: {type(exc).__name__}: {exc}") from None
        modality = str(ds.get("Modality", "")).upper()
        sop_class = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None) or {},
                                                             "MediaStorageSOPClassUID", "") or "")
        if modality == "CT" or sop_class in (CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE):
            # pydicom stops quietly at the end of a file: a slice cut short loses its pixel data
            # (and possibly its UIDs), so it is refused here rather than sorted into a bogus series.
            if "PixelData" not in ds or "SeriesInstanceUID" not in ds or "ImagePositionPatient" not in ds:
                missing = [t for t in ("SeriesInstanceUID", "ImagePositionPatient", "PixelData") if t not in ds]
                raise InputError(f"{p}: CT file without {', '.join(missing)}; the file is truncated or incomplete")
            uid = str(ds.get("SeriesInstanceUID", "unknown"))
            out.ct_series.setdefault(uid, []).append((p, ds))
        elif modality == "RTSTRUCT":
            out.rtstruct.append((p, ds))
        elif modality == "RTDOSE":
            out.rtdose.append((p, ds))
        elif modality == "RTPLAN":
            out.rtplan.append((p, ds))
        else:
            out.other.append((p, ds))
    log.debug("%s: %d CT series, %d RTSTRUCT, %d RTDOSE, %d RTPLAN, %d other, %d non-DICOM", d,
              len(out.ct_series), len(out.rtstruct), len(out.rtdose), len(out.rtplan), len(out.other),
              len(out.not_dicom))
    return out


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def orientation_matrix(iop, where: str) -> np.ndarray:
    """3x3 direction matrix (columns: row cosine, column cosine, normal) from ImageOrientationPatient."""
    try:
        v = np.asarray([float(x) for x in iop], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{where}: ImageOrientationPatient {iop!r} is not six numbers") from None
    if v.size != 6:
        raise InputError(f"{where}: ImageOrientationPatient must have six values, got {v.size}")
    r, c = v[:3], v[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 0.9 or nc < 0.9 or abs(np.dot(r, c)) > 1e-3:
        raise InputError(f"{where}: ImageOrientationPatient {list(v)} is not two orthogonal unit vectors")
    r = r / nr
    c = c - np.dot(c, r) * r
    c = c / np.linalg.norm(c)
    m = np.column_stack([r, c, np.cross(r, c)])
    m[np.abs(m) < 1e-9] = 0.0
    return m


def _series_summary(folder: DicomFolder) -> str:
    return "; ".join(f"{uid} ({len(items)} slices"
                     + (f", '{items[0][1].get('SeriesDescription', '')}'" if items[0][1].get("SeriesDescription") else "")
                     + ")" for uid, items in folder.ct_series.items())


def select_ct_series(folder: DicomFolder, series_uid: str | None = None) -> tuple[str, list]:
    """The (uid, items) of the CT series to load; InputError when ambiguous or absent."""
    d = folder.directory
    if not folder.ct_series:
        if folder.n_dicom == 0:
            raise InputError(f"{d}: no DICOM files among its {len(folder.not_dicom)} file(s); "
                             "expected a CT series")
        found = Counter(str(ds.get("Modality", "?")) for _, ds in folder.rtstruct + folder.rtdose
                        + folder.rtplan + folder.other)
        raise InputError(f"{d}: no CT images (found {', '.join(f'{n} {m}' for m, n in found.items())})")
    if series_uid is not None:
        if series_uid not in folder.ct_series:
            raise InputError(f"{d}: no CT series with SeriesInstanceUID {series_uid}; "
                             f"available: {_series_summary(folder)}")
        return series_uid, folder.ct_series[series_uid]
    if len(folder.ct_series) > 1:
        raise InputError(f"{d}: {len(folder.ct_series)} CT series in one folder; choose one by "
                         f"SeriesInstanceUID: {_series_summary(folder)}")
    uid = next(iter(folder.ct_series))
    return uid, folder.ct_series[uid]


def _pixels(path: Path, ds):
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for truncated or compressed data
        raise InputError(f"{path}: cannot read the CT pixel data ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or use an unsupported compression") from None
    return arr


def read_ct_series(directory: str | Path, series_uid: str | None = None, *,
                   calibration: DensityCalibration | None = None, uneven: str = "resample",
                   timings: Timings | None = None, folder: DicomFolder | None = None) -> Case:
    """Read a CT series from a DICOM folder into a :class:`Case` (no structures).

    Parameters
    ----------
    directory : path
        Folder holding the CT slices (other DICOM files are ignored).
    series_uid : str, optional
        SeriesInstanceUID to load when the folder holds several CT series.
    calibration : DensityCalibration, optional
        HU -> relative electron density table (default table when None).
    uneven : {"resample", "error"}
        What to do when the slice gaps differ: interpolate linearly onto the
        most common gap, or raise :class:`InputError`.
    folder : DicomFolder, optional
        A scan of ``directory`` already made (avoids reading the headers twice).

    Returns
    -------
    Case
        ``hu`` float32 on a grid ``[k, j, i]`` = (slice along the normal, row,
        column); ``patient`` carries the DICOM UIDs and the slices'
        SOPInstanceUIDs in slice order.
    """
    if uneven not in ("resample", "error"):
        raise InputError(f"uneven must be 'resample' or 'error', got {uneven!r}")
    d = Path(directory)
    with timed("read CT series", log, timings):
        folder = folder if folder is not None else scan_folder(d)
        uid, items = select_ct_series(folder, series_uid)
        if folder.not_dicom:
            log.warning("%s: %d file(s) that are not DICOM ignored (%s)", d, len(folder.not_dicom),
                        ", ".join(p.name for p in folder.not_dicom[:5]))
        first_path, first = items[0]
        for p, ds in items:
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                raise InputError(f"{p}: multi-frame (enhanced) CT is not supported; expected one slice per file")
            for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
                if tag not in ds:
                    raise InputError(f"{p}: CT slice without {tag}")
            tilt = float(ds.get("GantryDetectorTilt", 0.0) or 0.0)
            if abs(tilt) > 1e-3:
                raise InputError(f"{p}: gantry tilt of {tilt:g} deg; tilted CT series are not supported "
                                 "(reconstruct without tilt or resample the series first)")
        direction = orientation_matrix(first.ImageOrientationPatient, str(first_path))
        rows, cols = int(first.Rows), int(first.Columns)
        ps = [float(x) for x in first.PixelSpacing]
        for p, ds in items[1:]:
            if not np.allclose(orientation_matrix(ds.ImageOrientationPatient, str(p)), direction, atol=1e-4):
                raise InputError(f"{p}: ImageOrientationPatient differs from {first_path.name}; "
                                 "expected one orientation per series")
            if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
                raise InputError(f"{p}: {ds.Rows} x {ds.Columns} pixels, but {first_path.name} has {rows} x {cols}")
            if not np.allclose([float(x) for x in ds.PixelSpacing], ps, atol=1e-4):
                raise InputError(f"{p}: PixelSpacing {list(ds.PixelSpacing)} differs from {ps} in {first_path.name}")
        normal = direction[:, 2]
        ipp = np.array([[float(x) for x in ds.ImagePositionPatient] for _, ds in items])
        pos = ipp @ normal
        order = np.argsort(pos, kind="stable")
        items = [items[i] for i in order]
        ipp, pos = ipp[order], pos[order]
        if len(items) > 1:
            gaps = np.diff(pos)
            dup = np.flatnonzero(gaps < _SAME_POSITION_MM)
            if dup.size:
                a, b = items[dup[0]][0].name, items[dup[0] + 1][0].name
                raise InputError(f"{d}: slices {a} and {b} lie at the same position ({pos[dup[0]]:.2f} mm); "
                                 "expected one slice per position (two series with one UID?)")
            inplane = (ipp - ipp[0]) - np.outer(pos - pos[0], normal)
            shift = np.linalg.norm(inplane, axis=1).max()
            if shift > _TILT_SHIFT_MM:
                raise InputError(f"{d}: slice origins move {shift:.2f} mm within the image plane along the "
                                 "series (gantry tilt or sheared series); tilted CT is not supported")
        # spacing (x, y, z): PixelSpacing is (row spacing = along j, column spacing = along i)
        sx, sy = ps[1], ps[0]
        hu_slices = []
        integral = True
        for p, ds in items:
            arr = _pixels(p, ds)
            if arr.shape != (rows, cols):
                raise InputError(f"{p}: pixel array {arr.shape} does not match Rows x Columns {rows} x {cols}")
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
            integral &= slope == round(slope) and intercept == round(intercept) and arr.dtype.kind in "iu"
            hu_slices.append(arr.astype(np.float32) * np.float32(slope) + np.float32(intercept))
        hu = np.stack(hu_slices)
        resampled = False
        if len(items) > 1:
            gaps = np.diff(pos)
            step = float(Counter(np.round(gaps, 2)).most_common(1)[0][0])
            if np.max(np.abs(gaps - step)) > _SPACING_RTOL * step:
                listing = ", ".join(f"{g:.2f}" for g in sorted(set(np.round(gaps, 2)))[:8])
                if uneven == "error":
                    raise InputError(f"{d}: unequal CT slice spacing ({listing} mm); expected one spacing")
                hu, step = _resample_slices(hu, pos, step)
                resampled = True
                log.warning("%s: unequal CT slice spacing (%s mm): resampled linearly to %.3f mm", d, listing, step)
            else:
                step = float((pos[-1] - pos[0]) / (len(pos) - 1))
        else:
            step = float(first.get("SliceThickness", 0) or 0) or min(sx, sy)
        grid = Grid(shape=hu.shape, spacing_mm=(sx, sy, step), origin_mm=tuple(ipp[0]), direction=direction)
        patient = PatientInfo(
            patient_id=str(first.get("PatientID", "") or "ANON"),
            patient_name=str(first.get("PatientName", "") or "Anonymous"),
            study_instance_uid=_opt(first, "StudyInstanceUID"),
            series_instance_uid=uid,
            frame_of_reference_uid=_opt(first, "FrameOfReferenceUID"),
            ct_sop_instance_uids=[str(ds.get("SOPInstanceUID", "")) for _, ds in items],
            study_description=str(first.get("StudyDescription", "") or ""),
        )
        cal = calibration or DensityCalibration.default()
        density = _density_lookup(hu, cal) if integral and not resampled else None
        pos_name = str(first.get("PatientPosition", "") or "HFS").upper()
        case = Case(name=patient.patient_id if patient.patient_id != "ANON" else d.name, grid=grid, hu=hu,
                    calibration=cal, density=density, patient_position=pos_name,
                    patient=patient, source=str(d),
                    metadata={"ct_resampled_along_normal": resampled,
                              "ct_files": [str(p) for p, _ in items],
                              "slice_positions_mm": [float(x) for x in pos]})
    log.info("%s: CT %s, %d slices, spacing %.3f x %.3f x %.3f mm", d, uid, len(items), sx, sy, step)
    return case


def _density_lookup(hu: np.ndarray, cal: DensityCalibration) -> np.ndarray | None:
    """Density of integer CT numbers through a per-HU table (several times faster than
    interpolating every voxel; identical values)."""
    lo, hi = int(hu.min()), int(hu.max())
    if hi - lo > 1 << 17:
        return None
    table = cal(np.arange(lo, hi + 1, dtype=np.float32))
    idx = hu.astype(np.int32)
    idx -= lo
    return np.take(table, idx)


def _opt(ds, tag: str) -> str | None:
    v = ds.get(tag)
    return str(v) if v not in (None, "") else None


def _resample_slices(hu: np.ndarray, pos: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """Linear interpolation of slices at ``pos`` onto a uniform spacing close to ``step``."""
    extent = float(pos[-1] - pos[0])
    n = int(round(extent / step)) + 1
    new_step = extent / (n - 1)
    z = pos[0] + new_step * np.arange(n)
    hi = np.clip(np.searchsorted(pos, z, side="right"), 1, len(pos) - 1)
    lo = hi - 1
    w = ((z - pos[lo]) / (pos[hi] - pos[lo])).astype(np.float32)
    out = np.empty((n,) + hu.shape[1:], dtype=np.float32)
    for k in range(n):  # one slice at a time keeps memory at one output copy
        out[k] = hu[lo[k]] * (1.0 - w[k]) + hu[hi[k]] * w[k]
    return out, float(new_step)


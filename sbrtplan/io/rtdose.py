"""RTDOSE import.

Frame positions follow DICOM PS3.3 C.8.8.3.2: when the first element of
GridFrameOffsetVector is 0 the offsets are relative to ImagePositionPatient
along the slice normal (any orientation); when it is not 0 and the image
orientation is axial (1,0,0,0,1,0), they are absolute z coordinates.  Frames
are sorted along the normal (decreasing offsets are allowed), unequal frame
spacing is resampled linearly, and the stored integers are multiplied by
DoseGridScaling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._log import get_logger
from ..case import Dose, Grid, resample_dose
from ..errors import InputError
from .dicom_ct import _resample_slices, orientation_matrix
from .validate import check_dose_values, dose_grid_scaling, refuse_malformed

log = get_logger(__name__)

_SPACING_RTOL = 0.01


@refuse_malformed("RTDOSE")
def read_rtdose(path: str | Path, grid: Grid | None = None) -> Dose:
    """Read an RTDOSE file (optionally resampled onto ``grid``).

    Parameters
    ----------
    path : path
        RTDOSE file (multi-frame, 16- or 32-bit, DoseUnits GY).
    grid : Grid, optional
        Destination grid; the dose is interpolated trilinearly onto it
        (zero outside the dose grid).

    Returns
    -------
    Dose
        ``per_fraction`` is True for DoseSummationType FRACTION; the
        description is the series description (or the file name).
    """
    import pydicom

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such RTDOSE file")
    try:
        ds = pydicom.dcmread(str(p))
    except pydicom.errors.InvalidDicomError:
        raise InputError(f"{p}: not a DICOM file; expected an RTDOSE") from None
    except Exception as exc:
        raise InputError(f"{p}: cannot read RTDOSE ({type(exc).__name__}: {exc})") from None
    if str(ds.get("Modality", "")).upper() != "RTDOSE":
        raise InputError(f"{p}: Modality is {ds.get('Modality', 'missing')!s}, expected RTDOSE")
    units = str(ds.get("DoseUnits", "GY")).upper()
    if units != "GY":
        raise InputError(f"{p}: DoseUnits {units}; only absolute dose in GY is supported")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        if tag not in ds:
            raise InputError(f"{p}: RTDOSE without {tag}")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(f"{p}: cannot read the dose pixel data ({type(exc).__name__}: {exc}); "
                         "the file may be truncated") from None
    rows, cols = int(ds.Rows), int(ds.Columns)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.asarray(arr).reshape(nframes, rows, cols)
    scaling = dose_grid_scaling(ds, p)  # present, finite, > 0: never assumed to be 1
    dose = arr.astype(np.float64) * scaling
    check_dose_values(dose, p)
    direction = orientation_matrix(ds.ImageOrientationPatient, str(p))
    normal = direction[:, 2]
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    ps = [float(v) for v in ds.PixelSpacing]
    if nframes > 1:
        if "GridFrameOffsetVector" not in ds:
            raise InputError(f"{p}: multi-frame RTDOSE without GridFrameOffsetVector")
        off = np.array([float(v) for v in ds.GridFrameOffsetVector])
        if off.size != nframes:
            raise InputError(f"{p}: GridFrameOffsetVector has {off.size} values for {nframes} frames")
        axial = np.allclose(direction, np.eye(3), atol=1e-6)
        if abs(off[0]) > 1e-6 and axial:
            rel = off - ipp[2]  # absolute z coordinates (allowed for axial grids only)
        else:
            rel = off - off[0] if abs(off[0]) > 1e-6 else off
            if abs(off[0]) > 1e-6:
                log.warning("%s: GridFrameOffsetVector starts at %g on a non-axial grid; read as relative", p, off[0])
        order = np.argsort(rel, kind="stable")
        rel, dose = rel[order], dose[order]
        gaps = np.diff(rel)
        if np.any(gaps < 1e-3):
            raise InputError(f"{p}: two dose frames at the same position")
        step = float(np.median(gaps))
        if np.max(np.abs(gaps - step)) > _SPACING_RTOL * step:
            dose32, step = _resample_slices(dose.astype(np.float32), rel, float(gaps.min()))
            dose = dose32
            log.warning("%s: unequal dose frame spacing resampled linearly to %.3f mm", p, step)
        else:
            step = float((rel[-1] - rel[0]) / (len(rel) - 1))
        origin = ipp + rel[0] * normal
    else:
        step = float(ds.get("SliceThickness", 0) or 0) or min(ps)
        origin = ipp
    dgrid = Grid(shape=dose.shape, spacing_mm=(ps[1], ps[0], step), origin_mm=tuple(origin), direction=direction)
    summation = str(ds.get("DoseSummationType", "PLAN")).upper()
    desc = str(ds.get("SeriesDescription", "") or "") or p.stem
    out = Dose(grid=dgrid, dose_gy=dose.astype(np.float32), description=desc, per_fraction=summation == "FRACTION")
    log.info("%s: RTDOSE %s, %s, max %.2f Gy", p, dgrid.shape, summation, out.max_gy)
    if grid is not None:
        out = resample_dose(out, grid)
    return out

"""Write a case's CT as a DICOM CT Image Storage series (one file per slice).

Phantoms and other cases that did not come from DICOM have no CT series for an
RTSTRUCT, RTPLAN or RTDOSE to refer to; this writes one, so a treatment planning
system can import the whole set.  Pixel values are stored as unsigned 16-bit
integers with ``RescaleIntercept = -1024`` (HU = stored - 1024), the usual CT
convention, rounded to 1 HU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._log import get_logger, timed
from ..case import Case
from ..errors import InputError
from .rtexport import CT_IMAGE_STORAGE, ds_list, ds_str, ensure_case_uids, new_file_dataset, save_dataset

log = get_logger(__name__)

_INTERCEPT_HU = -1024.0


def slice_geometry(grid) -> tuple[list[float], np.ndarray, np.ndarray]:
    """ImageOrientationPatient (6 values), slice normal and the ImagePositionPatient
    (nz, 3) of every slice of ``grid``."""
    d = np.asarray(grid.direction, float)
    iop = [float(v) for v in np.concatenate([d[:, 0], d[:, 1]])]
    normal = np.cross(d[:, 0], d[:, 1])
    k = np.arange(grid.nz)
    ipp = grid.patient_from_index(np.stack([k, np.zeros_like(k), np.zeros_like(k)], axis=-1))
    return iop, normal, np.atleast_2d(ipp)


def write_ct_series(case: Case, directory) -> list[str]:
    """Write ``case.hu`` as a CT series, one file ``CT_0001.dcm`` ... per slice.

    Study, series, frame-of-reference and per-slice SOP instance UIDs are taken
    from ``case.patient`` and created there when missing, so the RTSTRUCT,
    RTPLAN and RTDOSE written afterwards for the same case refer to this series.

    Parameters
    ----------
    case : Case
    directory : str or Path
        Output folder (created when needed).

    Returns
    -------
    list of str
        Paths of the written files, in slice order (index ``k``).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"CT output '{directory}' exists and is not a folder")
    g = case.grid
    d = np.asarray(g.direction, float)
    if np.dot(np.cross(d[:, 0], d[:, 1]), d[:, 2]) < 0.999:
        raise InputError(f"case '{case.name}': slices must be stacked along the normal of the image plane "
                         f"(a right-handed grid) to be written as CT images")
    ensure_case_uids(case)
    p = case.patient
    iop, normal, ipp = slice_geometry(g)
    stored = np.clip(np.rint(case.hu - _INTERCEPT_HU), 0, 65535).astype(np.uint16)
    sx, sy, sz = g.spacing_mm
    paths: list[str] = []
    with timed(f"write CT series ({g.nz} slices) to {directory}", log):
        for k in range(g.nz):
            ds = new_file_dataset(case, CT_IMAGE_STORAGE, "CT", series_description=f"{case.name} CT"[:64],
                                  sop_instance_uid=p.ct_sop_instance_uids[k],
                                  series_instance_uid=p.series_instance_uid, series_number=1)
            # General Series (CT needs the patient position)
            ds.PatientPosition = case.patient_position
            ds.Laterality = ""
            # General Image / CT Image
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = 1
            ds.ContentDate = ds.SeriesDate
            ds.ContentTime = ds.SeriesTime
            ds.KVP = ""
            # Image Plane
            ds.ImagePositionPatient = ds_list(ipp[k], 4)
            ds.ImageOrientationPatient = ds_list(iop, 8)
            ds.PixelSpacing = [ds_str(sy, 6), ds_str(sx, 6)]  # row spacing, column spacing
            ds.SliceThickness = ds_str(sz, 6)
            ds.SliceLocation = ds_str(float(np.dot(ipp[k], normal)), 4)
            # Image Pixel
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = g.ny
            ds.Columns = g.nx
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = ds_str(_INTERCEPT_HU)
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            out = directory / f"CT_{k + 1:04d}.dcm"
            save_dataset(ds, out)
            paths.append(str(out))
    log.info("CT series for '%s': %d slices in %s", case.name, g.nz, directory)
    return paths

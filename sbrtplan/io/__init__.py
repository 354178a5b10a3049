"""Patient data in and out: the Case model from DICOM / matRad / OpenKBP, and DICOM RT export.

Public API
----------
load_case(spec, rtstruct=None) -> Case
    ``"phantom:NAME"``, a DICOM folder, a matRad ``.mat`` file or an OpenKBP folder.
read_ct_series(directory, series_uid=None) -> Case
    CT series (sorted along the slice normal, HU, any orientation) without structures.
read_rtstruct(path, case_or_grid, names=None, occupancy=True) -> list[Structure]
    Contours -> masks at voxel centres (even-odd rule) + sub-voxel occupancy.
read_rtdose(path, grid=None) -> Dose
    DoseGridScaling, GridFrameOffsetVector, orientation; resampled onto ``grid`` if given.
body_outline(case) -> Structure
    Automatic external contour, couch excluded.
read_matrad(path) -> Case ; write_matrad(path, case, dose_gy=None, dij=None) -> Path
    matRad ``ct``/``cst`` (MATLAB v5 or v7.3) and a matRad-compatible v7.3 writer.
read_openkbp(directory) -> Case
    OpenKBP sparse CSV patient with its reference dose in ``case.doses``.
write_matrad_dij(path, influence) -> Path
    An influence matrix as a matRad ``dij`` (v7.3).

DICOM RT export and RTPLAN reading:
write_ct_series(case, directory), write_rtstruct(case, path), write_rtplan(beam_set, path, case=...),
write_rtdose(dose, grid, path, case=...), read_rtplan(path) -> BeamSet
"""

from .body import body_outline
from .ctwrite import write_ct_series
from .dicom_ct import read_ct_series
from .load import load_case
from .matrad_io import read_matrad, write_matrad, write_matrad_dij
from .openkbp import read_openkbp
from .rtdose import read_rtdose
from .rtexport import write_rtdose, write_rtstruct
from .rtplan import read_rtplan, write_rtplan
from .rtstruct import read_rtstruct

__all__ = ["load_case", "read_ct_series", "read_rtstruct", "read_rtdose", "body_outline",
           "read_matrad", "write_matrad", "write_matrad_dij", "read_openkbp",
           "write_ct_series", "write_rtstruct", "write_rtplan", "write_rtdose", "read_rtplan"]

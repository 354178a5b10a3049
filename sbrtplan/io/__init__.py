"""Import of patient data into the Case model.

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
"""

from .body import body_outline
from .dicom_ct import read_ct_series
from .load import load_case
from .matrad_io import read_matrad, write_matrad
from .openkbp import read_openkbp
from .rtdose import read_rtdose
from .rtstruct import read_rtstruct

__all__ = ["load_case", "read_ct_series", "read_rtstruct", "read_rtdose", "body_outline",
           "read_matrad", "write_matrad", "read_openkbp"]

from .ctwrite import write_ct_series  # noqa: E402  (RT export)
from .rtexport import write_rtdose, write_rtstruct  # noqa: E402
from .rtplan import read_rtplan, write_rtplan  # noqa: E402

__all__ += ["write_ct_series", "write_rtstruct", "write_rtplan", "write_rtdose", "read_rtplan"]
from .matrad_io import write_matrad_dij  # noqa: E402,F401  (influence matrix -> matRad dij)

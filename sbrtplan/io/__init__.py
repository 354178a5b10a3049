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
read_matrad(path) -> Case ; write_matrad(path, case, dose_gy=None, dij=None, mat_format='auto') -> Path
    matRad ``ct``/``cst`` (MATLAB v5 or v7.3); the writer uses matRad's own layout, MATLAB v5
    (compressed) by default and v7.3 (HDF5) beyond v5's 2 GiB per variable or on request.
read_openkbp(directory) -> Case
    OpenKBP sparse CSV patient with its reference dose in ``case.doses``.
write_matrad_dij(path, influence, mat_format='auto') -> Path
    An influence matrix as a matRad ``dij`` (with the beams in ``pln.propStf``).
MatFormat
    ``AUTO`` / ``V5`` / ``V73``: the MATLAB file format of the matRad writers.

DICOM RT export and RTPLAN reading:
write_ct_series(case, directory), write_rtstruct(case, path), write_rtplan(beam_set, path, case=...),
write_rtdose(dose, grid, path, case=...), read_rtplan(path) -> BeamSet
read_prescription(rtplan, rtstruct=None) -> PlanPrescription
    Target dose levels (DoseReferenceSequence) and fractions (FractionGroupSequence) of an RTPLAN.
"""

from .body import body_outline
from .ctwrite import write_ct_series
from .dicom_ct import read_ct_series
from .load import load_case
from .matrad_io import read_matrad
from .matrad_mat import MatFormat
from .matrad_write import write_matrad, write_matrad_dij
from .openkbp import read_openkbp
from .prescription import DoseLevel, PlanPrescription, read_prescription
from .rtdose import read_rtdose
from .rtexport import write_rtdose, write_rtstruct
from .rtplan import read_rtplan, write_rtplan
from .rtstruct import read_rtstruct

__all__ = ["load_case", "read_ct_series", "read_rtstruct", "read_rtdose", "body_outline",
           "read_matrad", "write_matrad", "write_matrad_dij", "MatFormat", "read_openkbp",
           "write_ct_series", "write_rtstruct", "write_rtplan", "write_rtdose", "read_rtplan",
           "read_prescription", "PlanPrescription", "DoseLevel"]

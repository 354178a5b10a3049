"""DICOM RT export: RT Structure Set and RT Dose, plus the modules every export shares.

Every object is written as a DICOM Part 10 file (128-byte preamble, file meta
information, explicit VR little endian) whose Patient, General Study and Frame
of Reference attributes come from the :class:`~sbrtplan.case.Case`, so that a
treatment planning system files the CT, RTSTRUCT, RTPLAN and RTDOSE under one
patient, one study and one frame of reference.

* :func:`write_rtstruct` turns structure masks into one closed planar contour
  per connected outline and slice (holes as separate contours), traced at the
  0.5 level of the mask between voxel centres, so that a voxel-centre
  point-in-polygon rasterisation of the contours gives back the mask.
* :func:`write_rtdose` writes a 3-D dose grid (32-bit unsigned integers with
  ``DoseGridScaling``) referencing the plan.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence

from .. import __version__ as _SBRTPLAN_VERSION
from .._log import atomic_output, get_logger, timed
from ..case import Case, Dose, Grid, StructureRole
from ..errors import InputError, StructureError

log = get_logger(__name__)

# SOP classes (DICOM PS3.4 Annex B)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
# Detached Study Management (retired) is what RTReferencedStudySequence has always referenced.
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"

_MANUFACTURER = "sbrtplan"
_IMPLEMENTATION_VERSION = f"SBRTPLAN_{_SBRTPLAN_VERSION}"[:16]

# StructureRole -> RT ROI Interpreted Type (PS3.3 C.8.8.8, defined terms).  DICOM has no ITV
# term; an ITV is a clinical-target-type volume, so CTV is what a TPS expects.
_INTERPRETED_TYPE = {
    StructureRole.EXTERNAL: "EXTERNAL",
    StructureRole.GTV: "GTV",
    StructureRole.CTV: "CTV",
    StructureRole.ITV: "CTV",
    StructureRole.PTV: "PTV",
    StructureRole.OAR: "ORGAN",
    StructureRole.PRV: "AVOIDANCE",
    StructureRole.CONTROL: "CONTROL",
    StructureRole.SUPPORT: "SUPPORT",
    StructureRole.OTHER: "",
}

# Distinct display colours for structures without one (RGB).
_PALETTE = [(255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 160, 0), (200, 0, 200), (0, 200, 200),
            (255, 255, 0), (128, 64, 255), (255, 96, 160), (128, 128, 0), (0, 128, 128), (160, 82, 45)]


# ----------------------------------------------------------------------------- shared helpers
def new_uid(*entropy: str) -> str:
    """A new DICOM UID; deterministic when ``entropy`` strings are given."""
    if entropy:
        return pydicom.uid.generate_uid(entropy_srcs=[str(e) for e in entropy])
    return pydicom.uid.generate_uid()


def ds_str(value: float, decimals: int = 6) -> str:
    """Decimal String (VR DS, at most 16 characters) of ``value`` with up to ``decimals`` decimals."""
    v = float(value)
    if not np.isfinite(v):
        raise InputError(f"cannot write a non-finite number ({v}) to a DICOM DS attribute")
    for d in range(decimals, -1, -1):
        s = f"{round(v, d):.{d}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        if s in ("-0", ""):
            s = "0"
        if len(s) <= 16:
            return s
    s = f"{v:.9e}"
    return s[:16]


def ds_list(values, decimals: int = 6) -> list[str]:
    return [ds_str(v, decimals) for v in np.asarray(values, float).ravel()]


def ensure_case_uids(case: Case) -> None:
    """Give ``case.patient`` study, CT series and frame-of-reference UIDs and one
    CT SOP instance UID per slice where they are missing (phantoms, NIfTI-like input).

    The UIDs are derived from the case name and grid, so repeated exports of the
    same case stay consistent with one another.
    """
    p = case.patient
    g = case.grid
    key = (case.name, str(g.shape), str(g.spacing_mm), str(g.origin_mm))
    if not p.study_instance_uid:
        p.study_instance_uid = new_uid("sbrtplan", "study", *key)
    if not p.series_instance_uid:
        p.series_instance_uid = new_uid("sbrtplan", "ct-series", *key)
    if not p.frame_of_reference_uid:
        p.frame_of_reference_uid = new_uid("sbrtplan", "frame-of-reference", *key)
    if len(p.ct_sop_instance_uids) != g.nz:
        if p.ct_sop_instance_uids:
            log.warning("case '%s': %d CT SOP instance UIDs for %d slices; new ones are generated",
                        case.name, len(p.ct_sop_instance_uids), g.nz)
        p.ct_sop_instance_uids = [new_uid("sbrtplan", "ct", p.series_instance_uid, str(k)) for k in range(g.nz)]


def _now() -> tuple[str, str]:
    t = _dt.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def new_file_dataset(case: Case, sop_class_uid: str, modality: str, *, series_description: str = "",
                     sop_instance_uid: str | None = None, series_instance_uid: str | None = None,
                     series_number: int = 1, include_frame_of_reference: bool = True) -> Dataset:
    """A dataset with file meta information and the modules every export shares:
    SOP Common, Patient, General Study, (RT/General) Series, General Equipment and,
    unless told otherwise, Frame of Reference -- all copied from ``case``."""
    ensure_case_uids(case)
    p = case.patient
    sop_uid = sop_instance_uid or new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    if int(pydicom.__version__.split(".")[0]) < 3:  # pydicom 3 takes these from the transfer syntax
        ds.is_little_endian = True
        ds.is_implicit_VR = False
    date, time = _now()
    study_date = str(case.metadata.get("study_date", date))
    study_time = str(case.metadata.get("study_time", time))
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    # Patient
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = str(case.metadata.get("patient_birth_date", ""))
    ds.PatientSex = str(case.metadata.get("patient_sex", ""))
    # General Study
    ds.StudyInstanceUID = p.study_instance_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = str(case.metadata.get("study_id", ""))[:16]
    ds.AccessionNumber = ""
    if p.study_description:
        ds.StudyDescription = p.study_description[:64]
    # Series (General Series for images, RT Series for RT objects: both need these)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_instance_uid or new_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDate = date
    ds.SeriesTime = time
    if series_description:
        ds.SeriesDescription = series_description[:64]
    ds.OperatorsName = ""
    # Frame of Reference
    if include_frame_of_reference:
        ds.FrameOfReferenceUID = p.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = _MANUFACTURER
    ds.ManufacturerModelName = "sbrtplan"
    ds.SoftwareVersions = str(_SBRTPLAN_VERSION)
    return ds


def save_dataset(ds: Dataset, path) -> Path:
    """Write ``ds`` as a DICOM Part 10 file through :func:`atomic_output`."""
    path = Path(path)
    with atomic_output(path) as tmp:
        try:
            pydicom.dcmwrite(str(tmp), ds, enforce_file_format=True)
        except TypeError:  # pydicom < 3
            pydicom.dcmwrite(str(tmp), ds, write_like_original=False)
    return path


def approval_module(ds: Dataset) -> None:
    # Approval module: exports are proposals, a physicist approves them in the TPS.
    ds.ApprovalStatus = "UNAPPROVED"

"""DICOM RT export: RT Structure Set and RT Dose, plus the modules every export shares.

Every object is written as a DICOM Part 10 file (128-byte preamble, file meta
information, explicit VR little endian) whose Patient, General Study and Frame
of Reference attributes come from the :class:`~sbrtplan.case.Case`, so that a
treatment planning system files the CT, RTSTRUCT, RTPLAN and RTDOSE under one
patient, one study and one frame of reference.

* :func:`write_rtstruct` turns structures into one closed planar contour
  per connected outline and slice (holes as separate contours), traced at the
  0.5 level of the sub-voxel occupancy when the structure has one (the
  contoured volume is then the structure's volume), else of the mask between
  voxel centres (a voxel-centre point-in-polygon rasterisation of the
  contours then gives back the mask).
* :func:`write_rtdose` writes a 3-D dose grid (32-bit unsigned integers with
  ``DoseGridScaling``) referencing the plan.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from .._version import __version__ as _SBRTPLAN_VERSION
from .._log import atomic_output, get_logger, timed
from ..case import Case, Dose, Grid, StructureRole
from ..errors import InputError, StructureError
from .contours import mask_contours, match_area

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


def set_ds_values(dataset: Dataset, keyword: str, values, decimals: int = 3) -> None:
    """Set a multi-valued DS attribute from many numbers quickly.

    pydicom validates every DS value on assignment, which dominates the time to
    write contours and MLC positions; the values are formatted here (each at
    most 16 characters) and stored as an already encoded element.
    """
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    v = np.asarray(values, float).ravel()
    if not np.all(np.isfinite(v)):
        raise InputError(f"cannot write non-finite numbers to the DICOM attribute {keyword}")
    text = []
    for x in v.tolist():
        t = f"{x:.{decimals}f}".rstrip("0").rstrip(".") if decimals > 0 else f"{x:.0f}"
        if t in ("-0", "", "-"):
            t = "0"
        if len(t) > 16:
            t = ds_str(x, decimals)
        text.append(t)
    raw = "\\".join(text).encode("ascii")
    if len(raw) % 2:
        raw += b" "
    tag = Tag(tag_for_keyword(keyword))
    dataset[tag] = RawDataElement(tag, "DS", len(raw), raw, 0, False, True)


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
            # the CT was resampled on import: its slices are no longer the original images, so they
            # form a new series (write it with write_ct_series) rather than borrow the old UIDs
            log.warning("case '%s': %d CT SOP instance UIDs for %d slices; a new CT series UID and new "
                        "image UIDs are generated (export the CT too)", case.name, len(p.ct_sop_instance_uids), g.nz)
            p.series_instance_uid = new_uid("sbrtplan", "ct-series-resampled", p.series_instance_uid, *key)
        p.ct_sop_instance_uids = [new_uid("sbrtplan", "ct", p.series_instance_uid, str(k)) for k in range(g.nz)]


_STUDY_KEYWORDS = ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                   "PatientBirthDate", "PatientSex")


_STUDY_VALID = {"StudyDate": r"\d{8}", "PatientBirthDate": r"\d{8}", "StudyTime": r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?",
                "PatientSex": r"[MFO]", "StudyID": r".{0,16}", "AccessionNumber": r".{0,16}"}


def _study_header(case: Case) -> dict[str, str]:
    """Study and patient attributes of the case's original CT (when it came from DICOM), so the
    exported objects repeat them exactly; cached in ``case.metadata['dicom_study_header']``."""
    cached = case.metadata.get("dicom_study_header")
    if isinstance(cached, dict):
        return cached
    header: dict[str, str] = {}
    files = case.metadata.get("ct_files") or []
    if files:
        try:
            ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True,
                                 specific_tags=["StudyInstanceUID", *_STUDY_KEYWORDS])
            if str(ds.get("StudyInstanceUID", "")) == str(case.patient.study_instance_uid):
                header = {k: str(ds.get(k, "") or "") for k in _STUDY_KEYWORDS}
                # anonymisers sometimes leave values that break their VR (a hash as a date):
                # those are not repeated, the attributes are written empty (type 2) instead
                for k, valid in _STUDY_VALID.items():
                    if header.get(k) and not re.fullmatch(valid, header[k]):
                        log.info("case '%s': %s %r of the CT is not a valid DICOM value; written empty",
                                 case.name, k, header[k])
                        header[k] = ""
        except Exception as e:  # the original CT may have moved; the export does not need it
            log.info("case '%s': study attributes of %s not read (%s)", case.name, files[0], e)
    case.metadata["dicom_study_header"] = header
    return header


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
    header = _study_header(case)
    # a DICOM case repeats its CT's study date and time (empty where the CT's were unusable)
    study_date = str(case.metadata.get("study_date") or (header.get("StudyDate", "") if header else date))
    study_time = str(case.metadata.get("study_time") or (header.get("StudyTime", "") if header else time))
    # every object of one export shares the study date and time (the CT's, or the first export's)
    case.metadata["study_date"], case.metadata["study_time"] = study_date, study_time
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    # Patient
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = str(case.metadata.get("patient_birth_date") or header.get("PatientBirthDate", ""))
    ds.PatientSex = str(case.metadata.get("patient_sex") or header.get("PatientSex", ""))
    # General Study
    ds.StudyInstanceUID = p.study_instance_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = header.get("ReferringPhysicianName", "")
    ds.StudyID = str(case.metadata.get("study_id") or header.get("StudyID", ""))[:16]
    ds.AccessionNumber = header.get("AccessionNumber", "")
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


# ----------------------------------------------------------------------------- RT Structure Set
def _contour_field(s) -> np.ndarray:
    """What :func:`write_rtstruct` traces at 0.5 for structure ``s``: its sub-voxel occupancy when it
    has one (so that the contoured volume is the structure's volume), else its mask.

    An occupancy that nowhere reaches 0.5 (a structure thinner than half a voxel) would give no
    contour at all; the mask is traced instead so that the structure is still written.
    """
    if s.fraction is not None and (s.fraction >= 0.5).any():
        return s.fraction
    if s.fraction is not None:
        log.warning("RTSTRUCT: structure '%s' is nowhere more than half a voxel thick; its voxel mask is "
                    "contoured instead of its occupancy", s.name)
    return s.mask


def write_rtstruct(case: Case, path, *, structures: Sequence[str] | None = None, label: str = "sbrtplan") -> str:
    """Write the case's structures as a DICOM RT Structure Set.

    Each structure becomes one ROI (numbered 1, 2, ... in the order written)
    with one ``CLOSED_PLANAR`` contour per outline and CT slice, holes as
    separate contours.  The contour is the 0.5 level of the structure's
    sub-voxel occupancy (``Structure.fraction``) when it has one, so that
    the contoured volume (polygon areas times slice thickness, what a TPS
    computes) is the structure's volume; without one it is the 0.5 level of
    the mask (half-way between voxel centres inside and outside), so that
    voxel-centre rasterisation gives back the mask.  Its RT ROI Interpreted Type follows its
    :class:`~sbrtplan.case.StructureRole`.  The structure set refers to the CT
    series of ``case.patient`` (frame of reference, study, series and one
    contour image per slice).

    Parameters
    ----------
    case : Case
    path : str or Path
        Output file.
    structures : sequence of str, optional
        Names of the structures to write (default: all, skipping empty ones).
    label : str
        StructureSetLabel (at most 16 characters).

    Returns
    -------
    str
        The SOP instance UID (also stored in ``case.metadata['rtstruct_uid']``,
        with the ROI numbers in ``case.metadata['rtstruct_roi_numbers']`` for
        :func:`~sbrtplan.io.write_rtplan`).
    """
    names = list(case.structures) if structures is None else [case.structure(n).name for n in structures]
    if not names:
        raise StructureError(f"RTSTRUCT '{path}': case '{case.name}' has no structures to write")
    ensure_case_uids(case)
    p = case.patient
    g = case.grid
    iop_ok = np.allclose(np.cross(g.direction[:, 0], g.direction[:, 1]), g.direction[:, 2], atol=1e-4)
    if not iop_ok:
        raise InputError(f"case '{case.name}': the slice axis is not the normal of the image plane; "
                         f"contours cannot be written per slice")
    with timed(f"write RTSTRUCT {Path(path).name} ({len(names)} structures)", log):
        ds = new_file_dataset(case, RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", series_description=f"{label} structures",
                              series_number=int(case.metadata.get("rtstruct_series_number", 2)))
        ds.InstanceNumber = 1
        ds.StructureSetLabel = str(label)[:16]
        ds.StructureSetName = f"{case.name} {label}"[:64]
        ds.StructureSetDate = ds.InstanceCreationDate
        ds.StructureSetTime = ds.InstanceCreationTime
        # Referenced frame of reference -> study -> CT series -> every slice
        images = []
        for uid in p.ct_sop_instance_uids:
            im = Dataset()
            im.ReferencedSOPClassUID = CT_IMAGE_STORAGE
            im.ReferencedSOPInstanceUID = uid
            images.append(im)
        series = Dataset()
        series.SeriesInstanceUID = p.series_instance_uid
        series.ContourImageSequence = DicomSequence(images)
        study = Dataset()
        study.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
        study.ReferencedSOPInstanceUID = p.study_instance_uid
        study.RTReferencedSeriesSequence = DicomSequence([series])
        rfor = Dataset()
        rfor.FrameOfReferenceUID = p.frame_of_reference_uid
        rfor.RTReferencedStudySequence = DicomSequence([study])
        ds.ReferencedFrameOfReferenceSequence = DicomSequence([rfor])

        rois, contours, observations = [], [], []
        numbers: dict[str, int] = {}
        for name in names:
            s = case.structures[name]
            if s.is_empty or not (s.mask.any() or (s.fraction is not None and (s.fraction >= 0.5).any())):
                log.warning("RTSTRUCT: structure '%s' is empty and is not written", name)
                continue
            number = len(numbers) + 1
            numbers[name] = number
            roi = Dataset()
            roi.ROINumber = number
            roi.ReferencedFrameOfReferenceUID = p.frame_of_reference_uid
            roi.ROIName = str(name)[:64]
            derived = s.role in (StructureRole.PRV, StructureRole.CONTROL) or bool(s.metadata.get("derived"))
            roi.ROIGenerationAlgorithm = "AUTOMATIC" if derived else ""
            rois.append(roi)

            level = _contour_field(s)
            items = []
            for k in np.flatnonzero((level >= 0.5).any(axis=(1, 2))):
                polys = mask_contours(level[k])
                if level.dtype != bool:
                    polys = match_area(polys, float(level[k].sum(dtype=np.float64)))
                for poly in polys:
                    kji = np.column_stack([np.full(len(poly), float(k)), poly[:, 1], poly[:, 0]])
                    xyz = g.patient_from_index(kji)
                    c = Dataset()
                    im = Dataset()
                    im.ReferencedSOPClassUID = CT_IMAGE_STORAGE
                    im.ReferencedSOPInstanceUID = p.ct_sop_instance_uids[k]
                    c.ContourImageSequence = DicomSequence([im])
                    c.ContourGeometricType = "CLOSED_PLANAR"
                    c.NumberOfContourPoints = len(poly)
                    c.ContourNumber = len(items) + 1
                    set_ds_values(c, "ContourData", xyz, 3)
                    items.append(c)
            rc = Dataset()
            color = s.color_rgb or _PALETTE[(number - 1) % len(_PALETTE)]
            rc.ROIDisplayColor = [int(v) for v in color]
            rc.ContourSequence = DicomSequence(items)
            rc.ReferencedROINumber = number
            contours.append(rc)

            obs = Dataset()
            obs.ObservationNumber = number
            obs.ReferencedROINumber = number
            obs.ROIObservationLabel = str(name)[:16]
            obs.RTROIInterpretedType = _INTERPRETED_TYPE.get(s.role, "")
            obs.ROIInterpreter = ""
            observations.append(obs)
        if not numbers:
            raise StructureError(f"RTSTRUCT '{path}': every requested structure of case '{case.name}' is empty")
        ds.StructureSetROISequence = DicomSequence(rois)
        ds.ROIContourSequence = DicomSequence(contours)
        ds.RTROIObservationsSequence = DicomSequence(observations)
        approval_module(ds)
        save_dataset(ds, path)
    case.metadata["rtstruct_uid"] = str(ds.SOPInstanceUID)
    case.metadata["rtstruct_roi_numbers"] = dict(numbers)
    log.info("RTSTRUCT %s: %d ROIs", Path(path).name, len(numbers))
    return str(ds.SOPInstanceUID)


# ----------------------------------------------------------------------------- RT Dose
def write_rtdose(dose: Dose | np.ndarray, grid: Grid, path, *, case: Case, rtplan_uid: str | None = None,
                 bits_allocated: int = 32) -> str:
    """Write a 3-D dose as a DICOM RT Dose (whole-plan physical dose in Gy).

    The dose is stored as 32-bit (or 16-bit) unsigned integers times
    ``DoseGridScaling``, chosen so the maximum nearly fills the range (a
    precision of about ``max / 4e9``, or ``max / 65000`` with 16 bits), frames
    along the slice axis of ``grid`` with ``GridFrameOffsetVector`` relative to
    the first frame.

    Parameters
    ----------
    dose : Dose or ndarray
        Total dose over the course in Gy, shape ``grid.shape``.  A
        :class:`Dose` marked ``per_fraction`` is written with
        ``DoseSummationType = FRACTION``.
    grid : Grid
        The dose grid (same frame of reference as the case's CT).
    path : str or Path
    case : Case
    rtplan_uid : str, optional
        SOP instance UID of the plan (default: the last one
        :func:`~sbrtplan.io.write_rtplan` wrote for ``case``).  Required.
    bits_allocated : {32, 16}
        Pixel size.  32 is what planning systems write; 16 suits viewers and
        validators that do not read 32-bit dose grids.

    Returns
    -------
    str
        The SOP instance UID.
    """
    per_fraction = False
    if isinstance(dose, Dose):
        if not dose.grid.same_as(grid):
            raise InputError(f"RTDOSE '{path}': dose '{dose.description}' lives on {dose.grid!r}, not on the "
                             f"grid given ({grid!r})")
        per_fraction = dose.per_fraction
        arr = dose.dose_gy
    else:
        arr = np.asarray(dose)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != grid.shape:
        raise InputError(f"RTDOSE '{path}': dose array shape {arr.shape} does not match grid {grid.shape} (z, y, x)")
    # interpolated doses may dip a hair below zero; anything beyond 0.01 % of the maximum is an error
    if not np.all(np.isfinite(arr)) or arr.min() < -1e-4 * max(1.0, float(arr.max())):
        raise InputError(f"RTDOSE '{path}': dose must be finite and non-negative (min {np.nanmin(arr):.4g} Gy)")
    arr = np.maximum(arr, 0.0)
    if bits_allocated not in (16, 32):
        raise InputError(f"RTDOSE '{path}': bits_allocated must be 16 or 32, got {bits_allocated}")
    rtplan_uid = rtplan_uid or case.metadata.get("rtplan_uid")
    if not rtplan_uid:
        raise InputError(f"RTDOSE '{path}': a plan dose must refer to its RTPLAN; pass rtplan_uid (the value "
                         f"write_rtplan returned, or beam.metadata['rtplan_uid'] of a plan read by read_rtplan)")
    d = np.asarray(grid.direction, float)
    normal = np.cross(d[:, 0], d[:, 1])
    if not np.allclose(normal, d[:, 2], atol=1e-4):
        raise InputError(f"RTDOSE '{path}': the dose grid's slice axis must be the normal of its image plane")
    with timed(f"write RTDOSE {Path(path).name}", log):
        ds = new_file_dataset(case, RT_DOSE_STORAGE, "RTDOSE", series_description="sbrtplan dose",
                              series_number=int(case.metadata.get("rtdose_series_number", 4)))
        ds.InstanceNumber = 1
        ds.ContentDate = ds.InstanceCreationDate
        ds.ContentTime = ds.InstanceCreationTime
        # Image Plane + Multi-frame
        sx, sy, sz = grid.spacing_mm
        ds.ImagePositionPatient = ds_list(grid.origin_mm, 4)
        ds.ImageOrientationPatient = ds_list(np.concatenate([d[:, 0], d[:, 1]]), 8)
        ds.PixelSpacing = [ds_str(sy, 6), ds_str(sx, 6)]
        ds.SliceThickness = ds_str(sz, 6)
        ds.NumberOfFrames = grid.nz
        ds.FrameIncrementPointer = Tag(0x3004, 0x000C)
        ds.GridFrameOffsetVector = ds_list(np.arange(grid.nz) * sz, 4)
        # Image Pixel
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = grid.ny
        ds.Columns = grid.nx
        ds.BitsAllocated = bits_allocated
        ds.BitsStored = bits_allocated
        ds.HighBit = bits_allocated - 1
        ds.PixelRepresentation = 0
        # RT Dose: the scaling is parsed back from its DS text so stored values use exactly it
        top = 4294967295.0 if bits_allocated == 32 else 65535.0
        dmax = float(arr.max())
        scale = dmax / (0.93 * top) if dmax > 0 else 1e-6
        scale_text = f"{scale:.9e}"
        scale = float(scale_text)
        ds.DoseGridScaling = scale_text
        ds.DoseUnits = "GY"
        ds.DoseType = "PHYSICAL"
        ds.DoseComment = "sbrtplan pencil-beam dose"
        ds.TissueHeterogeneityCorrection = "IMAGE"
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = rtplan_uid
        if per_fraction:
            ds.DoseSummationType = "FRACTION"
            fg = Dataset()
            fg.ReferencedFractionGroupNumber = 1
            ref.ReferencedFractionGroupSequence = DicomSequence([fg])
        else:
            ds.DoseSummationType = "PLAN"
        ds.ReferencedRTPlanSequence = DicomSequence([ref])
        stored = np.clip(np.rint(arr / scale), 0, top).astype("<u4" if bits_allocated == 32 else "<u2")
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        save_dataset(ds, path)
    log.info("RTDOSE %s: %s voxels, max %.3f Gy, scaling %s", Path(path).name, grid.shape, dmax, scale_text)
    return str(ds.SOPInstanceUID)

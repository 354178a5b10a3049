"""DICOM RT Plan of a permanent seed implant (RT Brachy Application Setups module) and its reader.

One treatment machine (the manual afterloading "machine" of a seed implant), one source item with
the isotope, half-life, reference air-kerma rate (uGy/h at 1 m, numerically the air-kerma strength
in U), its calibration date and a description carrying the seed registry (model, lot, ordered /
implanted / returned / lost), one application setup whose channels are the template needles: each
channel lists its seeds as control-point pairs (arrive, leave) at the seed's 3D position, with the
seed axis as ControlPointOrientation and the cumulative time weight stepping by one per seed.
Channels are numbered in the order of the needle indices; the needles' template labels are kept in
the pre-plan's ``plan.json`` (a source applicator item would need attributes a seed needle lacks).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from ..case import Case
from ..errors import InputError
from ..io.rtexport import approval_module, ds_list, ds_str, new_file_dataset, new_uid, save_dataset
from .registry import SeedRegistry
from .source import SourceData

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
MACHINE_NAME = "SEED_IMPLANT"


def write_brachy_rtplan(path, *, case: Case, source: SourceData, positions_mm: np.ndarray, directions: np.ndarray,
                        needle_of_seed: np.ndarray, needle_labels: list[str], depth_mm: np.ndarray | None,
                        strength_u: float, prescription_gy: float, registry: SeedRegistry | None = None,
                        rtstruct_uid: str | None = None, plan_label: str = "SEEDS",
                        reference_date: str | None = None) -> str:
    """Write the implant as an RT Plan (brachytherapy); returns its SOP instance UID."""
    pos = np.asarray(positions_mm, float).reshape(-1, 3)
    if len(pos) == 0:
        raise InputError(f"RTPLAN '{path}': an implant needs at least one seed")
    dirs = np.asarray(directions, float).reshape(-1, 3)
    if dirs.shape[0] == 1:
        dirs = np.repeat(dirs, len(pos), axis=0)
    ds = new_file_dataset(case, RT_PLAN_STORAGE, "RTPLAN", series_description="sbrtplan seed implant",
                          series_number=int(case.metadata.get("rtplan_series_number", 3)))
    date, time = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.RTPlanLabel = plan_label[:16]
    ds.RTPlanName = f"{source.isotope} {source.model}"[:64]
    ds.RTPlanDescription = (f"Permanent seed implant, {len(pos)} seeds of {strength_u:.3f} U, "
                            f"prescription {prescription_gy:g} Gy (TG-43U1)")[:1024]
    ds.RTPlanDate, ds.RTPlanTime = date, time
    ds.PlanIntent = "CURATIVE"
    # PATIENT geometry needs the structure set the plan refers to; without one the plan is device-based
    ds.RTPlanGeometry = "PATIENT" if rtstruct_uid else "TREATMENT_DEVICE"
    if rtstruct_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
        ref.ReferencedSOPInstanceUID = rtstruct_uid
        ds.ReferencedStructureSetSequence = DicomSequence([ref])
    # RT Prescription
    dr = Dataset()
    dr.DoseReferenceNumber = 1
    dr.DoseReferenceUID = new_uid()
    dr.DoseReferenceStructureType = "SITE"
    dr.DoseReferenceDescription = "minimum peripheral dose (D90 goal)"
    dr.DoseReferenceType = "TARGET"
    dr.TargetPrescriptionDose = ds_str(prescription_gy, 4)
    ds.DoseReferenceSequence = DicomSequence([dr])
    # RT Fraction Scheme: a permanent implant is a single "fraction"
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 1
    fg.NumberOfBeams = 0
    fg.NumberOfBrachyApplicationSetups = 1
    rbs = Dataset()
    rbs.ReferencedBrachyApplicationSetupNumber = 1
    rbs.BrachyApplicationSetupDose = ds_str(prescription_gy, 4)
    fg.ReferencedBrachyApplicationSetupSequence = DicomSequence([rbs])
    ds.FractionGroupSequence = DicomSequence([fg])
    # RT Brachy Application Setups
    ds.BrachyTreatmentTechnique = "INTERSTITIAL"
    ds.BrachyTreatmentType = "MANUAL"
    tm = Dataset()
    tm.TreatmentMachineName = MACHINE_NAME
    tm.Manufacturer = "manual seed implant"
    tm.InstitutionName = ""
    tm.InstitutionAddress = ""
    tm.InstitutionalDepartmentName = ""
    tm.ManufacturerModelName = ""
    tm.DeviceSerialNumber = ""
    ds.TreatmentMachineSequence = DicomSequence([tm])
    src = Dataset()
    src.SourceNumber = 1
    src.SourceType = "CYLINDER"
    src.SourceManufacturer = (registry.vendor if registry else source.vendor)[:64]
    src.ActiveSourceDiameter = ds_str(source.seed_diameter_mm, 3)
    src.ActiveSourceLength = ds_str(10.0 * source.active_length_cm, 3)
    src.SourceIsotopeName = source.isotope
    src.SourceIsotopeHalfLife = ds_str(source.half_life_days, 4)
    src.SourceStrengthUnits = "AIR_KERMA_RATE"
    src.ReferenceAirKermaRate = ds_str(strength_u, 5)  # uGy h^-1 at 1 m == U
    src.SourceStrength = ds_str(strength_u, 5)
    ref_date = reference_date or (registry.calibration_date if registry else None) or \
        _dt.date.today().isoformat()
    src.SourceStrengthReferenceDate = ref_date.replace("-", "")
    src.SourceStrengthReferenceTime = "120000"
    desc = f"model {source.model}"
    if registry:
        desc += (f"; lot {registry.lot}; ordered {registry.n_ordered}, implanted {registry.n_implanted}, "
                 f"returned {registry.n_returned}, lost {registry.n_lost}")
    src.SourceDescription = desc[:64]
    ds.SourceSequence = DicomSequence([src])
    mean_life_s = source.mean_life_h * 3600.0
    setup = Dataset()
    setup.ApplicationSetupType = "PERINEAL"
    setup.ApplicationSetupNumber = 1
    setup.ApplicationSetupName = "template needles"
    setup.TotalReferenceAirKerma = ds_str(strength_u * len(pos) * source.mean_life_h, 4)  # uGy at 1 m
    channels = []
    needle_of_seed = np.asarray(needle_of_seed, int)
    for ch_no, k in enumerate(np.unique(needle_of_seed), start=1):
        sel = np.flatnonzero(needle_of_seed == k)
        if depth_mm is not None:
            sel = sel[np.argsort(np.asarray(depth_mm)[sel])]
        ch = Dataset()
        ch.ChannelNumber = ch_no
        ch.ChannelLength = ""
        ch.ChannelTotalTime = ds_str(mean_life_s * len(sel), 1)
        ch.SourceMovementType = "FIXED"
        ch.ReferencedSourceNumber = 1
        ch.TransferTubeNumber = None
        ch.NumberOfControlPoints = 2 * len(sel)
        ch.FinalCumulativeTimeWeight = ds_str(len(sel), 1)
        cps = []
        for i, s in enumerate(sel):
            for half in (0, 1):
                cp = Dataset()
                cp.ControlPointIndex = 2 * i + half
                cp.CumulativeTimeWeight = ds_str(i + half, 1)
                rel = float(np.asarray(depth_mm)[s]) if depth_mm is not None else 0.0
                cp.ControlPointRelativePosition = ds_str(rel, 2)
                cp.ControlPoint3DPosition = ds_list(pos[s], 3)
                cp.ControlPointOrientation = [float(v) for v in dirs[s]]  # VR FL
                cps.append(cp)
        ch.BrachyControlPointSequence = DicomSequence(cps)
        channels.append(ch)
    setup.ChannelSequence = DicomSequence(channels)
    ds.ApplicationSetupSequence = DicomSequence([setup])
    approval_module(ds)
    save_dataset(ds, path)
    case.metadata["rtplan_uid"] = ds.SOPInstanceUID
    return str(ds.SOPInstanceUID)


def read_brachy_rtplan(path) -> dict:
    """Seeds, source and setup of a brachytherapy RT Plan written by :func:`write_brachy_rtplan`
    (or any RT Plan with an application setup of seed channels)."""
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # pydicom raises many types on a broken file
        raise InputError(f"RTPLAN '{path}': not a readable DICOM file ({e})") from None
    if str(ds.get("SOPClassUID", "")) != RT_PLAN_STORAGE or "ApplicationSetupSequence" not in ds:
        raise InputError(f"RTPLAN '{path}': not a brachytherapy RT Plan (no ApplicationSetupSequence)")
    src = ds.SourceSequence[0]
    pos, dirs, channel = [], [], []
    for setup in ds.ApplicationSetupSequence:
        for ch in setup.ChannelSequence:
            cps = list(ch.BrachyControlPointSequence)
            for cp in cps[::2]:
                pos.append([float(v) for v in cp.ControlPoint3DPosition])
                o = cp.get("ControlPointOrientation")
                dirs.append([float(v) for v in o] if o else [0.0, 0.0, 1.0])
                channel.append(int(ch.ChannelNumber))
    return {"positions_mm": np.array(pos), "directions": np.array(dirs), "channel": np.array(channel),
            "isotope": str(src.SourceIsotopeName), "half_life_days": float(src.SourceIsotopeHalfLife),
            "strength_u": float(src.ReferenceAirKermaRate), "description": str(src.get("SourceDescription", "")),
            "reference_date": str(src.SourceStrengthReferenceDate), "technique": str(ds.BrachyTreatmentTechnique),
            "type": str(ds.BrachyTreatmentType), "n_channels": sum(len(s.ChannelSequence)
                                                                    for s in ds.ApplicationSetupSequence),
            "sop_instance_uid": str(ds.SOPInstanceUID)}

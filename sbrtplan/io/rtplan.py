"""DICOM RT Plan (photon, RT Beams module) reading and writing.

:func:`read_rtplan` turns the treatment beams of an RTPLAN into a
:class:`~sbrtplan.beams.BeamSet`: static fields, step-and-shoot and
sliding-window IMRT and VMAT arcs.  Attributes a control point does not repeat
(gantry, jaws, isocentre) carry over from the previous one, as DICOM specifies.
MU per beam come from the fraction group (``BeamMeterset``); cumulative
meterset weights are normalised by ``FinalCumulativeMetersetWeight``.  The MLC
geometry is built from ``LeafPositionBoundaries`` (known Varian models are
recognised so their leakage figures apply).

:func:`write_rtplan` writes a :class:`BeamSet` as an RT Plan IOD: patient,
study and frame of reference of the case, RT General Plan (referencing the
RTSTRUCT), RT Prescription (target dose reference), RT Tolerance Tables, RT
Patient Setup, RT Fraction Scheme (MU per beam) and RT Beams with ``ASYMX``,
``ASYMY`` and ``MLCX`` positions at every control point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from .._log import get_logger, timed
from ..beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel, Technique
from ..case import Case
from ..errors import GeometryError, InputError
from .rtexport import (RT_PLAN_STORAGE, RT_STRUCTURE_SET_STORAGE, approval_module, ds_list, ds_str,
                       new_file_dataset, new_uid, save_dataset, set_ds_values)
from .validate import check_rtplan_dataset, refuse_malformed

log = get_logger(__name__)

# Positions are written to 1 um (machines resolve 0.01-0.1 mm); weights to 1e-7 of the beam MU.
_POS_DECIMALS = 3
_WEIGHT_DECIMALS = 7
_ANGLE_DECIMALS = 4

_ROTATION = {"CW": "CW", "CC": "CC", "CCW": "CC", "NONE": "NONE", "": "NONE"}


# =============================================================================== writing
def _aperture_equal(a: Aperture, b: Aperture, tol_mm: float = 1e-6) -> bool:
    return (np.allclose(a.leaf_x1_mm, b.leaf_x1_mm, atol=tol_mm) and np.allclose(a.leaf_x2_mm, b.leaf_x2_mm, atol=tol_mm)
            and np.allclose(a.jaw_x_mm, b.jaw_x_mm, atol=tol_mm) and np.allclose(a.jaw_y_mm, b.jaw_y_mm, atol=tol_mm))


def _device_positions(ap: Aperture) -> DicomSequence:
    items = []
    for kind, values in (("ASYMX", ap.jaw_x_mm), ("ASYMY", ap.jaw_y_mm),
                         ("MLCX", np.concatenate([ap.leaf_x1_mm, ap.leaf_x2_mm]))):
        it = Dataset()
        it.RTBeamLimitingDeviceType = kind
        set_ds_values(it, "LeafJawPositions", values, _POS_DECIMALS)
        items.append(it)
    return DicomSequence(items)


def _cumulative_weights(beam: Beam) -> list[float]:
    w = np.array([cp.cumulative_weight for cp in beam.control_points], float)
    if w.size == 1:
        return [0.0, 1.0]
    w = np.clip(w / w[-1] if w[-1] > 0 else w, 0.0, 1.0)
    w = np.round(w, _WEIGHT_DECIMALS)
    w = np.maximum.accumulate(w)  # rounding must not make the sequence decrease
    w[0], w[-1] = 0.0, 1.0
    return [float(v) for v in w]


def _beam_dataset(beam: Beam, number: int, machine_name: str, tolerance_table: bool) -> Dataset:
    cps = list(beam.control_points)
    if len(cps) == 1:  # DICOM needs at least two control points: start and end of delivery
        cps = [cps[0], ControlPoint(cps[0].gantry_deg, cps[0].aperture, 1.0)]
    weights = _cumulative_weights(beam)
    if any(cp.aperture.n_pairs != beam.mlc.n_pairs for cp in cps):
        raise GeometryError(f"beam '{beam.name}': control points have {cps[0].aperture.n_pairs} leaf pairs but the "
                            f"MLC '{beam.mlc.name}' has {beam.mlc.n_pairs}")
    arc = beam.is_arc
    moving = arc or any(not _aperture_equal(cps[0].aperture, cp.aperture) for cp in cps[1:])
    direction = _ROTATION.get(str(beam.arc_direction).upper(), "NONE")
    if arc and direction == "NONE":
        # no stated direction: the shorter way from the first to the second control point
        d = (cps[1].gantry_deg - cps[0].gantry_deg) % 360.0
        direction = "CW" if d <= 180.0 else "CC"

    b = Dataset()
    b.BeamNumber = number
    b.BeamName = str(beam.name)[:64]
    b.BeamDescription = f"{beam.technique.value} {'arc' if arc else 'field'}"[:64]
    b.BeamType = "DYNAMIC" if moving else "STATIC"
    b.RadiationType = "PHOTON"
    b.TreatmentMachineName = str(machine_name)[:16]
    b.PrimaryDosimeterUnit = "MU"
    b.SourceAxisDistance = ds_str(beam.sad_mm, 3)
    devices = []
    for kind, n in (("ASYMX", 1), ("ASYMY", 1), ("MLCX", beam.mlc.n_pairs)):
        d = Dataset()
        d.RTBeamLimitingDeviceType = kind
        d.NumberOfLeafJawPairs = n
        if kind == "MLCX":
            d.LeafPositionBoundaries = ds_list(beam.mlc.leaf_boundaries_mm, _POS_DECIMALS)
        devices.append(d)
    b.BeamLimitingDeviceSequence = DicomSequence(devices)
    b.ReferencedPatientSetupNumber = 1
    if tolerance_table:
        b.ReferencedToleranceTableNumber = 1
    b.TreatmentDeliveryType = "TREATMENT"
    b.NumberOfWedges = 0
    b.NumberOfCompensators = 0
    b.NumberOfBoli = 0
    b.NumberOfBlocks = 0
    b.FinalCumulativeMetersetWeight = "1"
    b.NumberOfControlPoints = len(cps)
    items = []
    prev_ap: Aperture | None = None
    for i, (cp, w) in enumerate(zip(cps, weights)):
        c = Dataset()
        c.ControlPointIndex = i
        c.CumulativeMetersetWeight = ds_str(w, _WEIGHT_DECIMALS)
        if i == 0:
            c.NominalBeamEnergy = ds_str(beam.energy_mv, 3)
        if prev_ap is None or not _aperture_equal(prev_ap, cp.aperture):
            c.BeamLimitingDevicePositionSequence = _device_positions(cp.aperture)
        prev_ap = cp.aperture
        if i == 0 or arc:
            c.GantryAngle = ds_str(cp.gantry_deg % 360.0, _ANGLE_DECIMALS)
            c.GantryRotationDirection = direction if (arc and i < len(cps) - 1) else "NONE"
        if i == 0:
            c.BeamLimitingDeviceAngle = ds_str(beam.collimator_deg % 360.0, _ANGLE_DECIMALS)
            c.BeamLimitingDeviceRotationDirection = "NONE"
            c.PatientSupportAngle = ds_str(beam.couch_deg % 360.0, _ANGLE_DECIMALS)
            c.PatientSupportRotationDirection = "NONE"
            c.TableTopEccentricAngle = "0"
            c.TableTopEccentricRotationDirection = "NONE"
            c.TableTopPitchAngle = 0.0
            c.TableTopPitchRotationDirection = "NONE"
            c.TableTopRollAngle = 0.0
            c.TableTopRollRotationDirection = "NONE"
            c.TableTopVerticalPosition = None
            c.TableTopLongitudinalPosition = None
            c.TableTopLateralPosition = None
            c.IsocenterPosition = ds_list(beam.isocenter_mm, _POS_DECIMALS)
        items.append(c)
    b.ControlPointSequence = DicomSequence(items)
    return b


def write_rtplan(beam_set: BeamSet, path, *, case: Case, rtstruct_uid: str | None = None, plan_label: str = "SBRT",
                 target_name: str | None = None, tolerance_table: bool = True,
                 targets: Sequence[tuple[str, float]] | None = None) -> str:
    """Write ``beam_set`` as a DICOM RT Plan.

    Parameters
    ----------
    beam_set : BeamSet
        Beams or arcs with control points; MU per fraction.
    path : str or Path
        Output file.
    case : Case
        Supplies patient, study and frame of reference (UIDs are created in
        ``case.patient`` when missing, see :func:`~sbrtplan.io.rtexport.ensure_case_uids`).
    rtstruct_uid : str, optional
        SOP instance UID of the RTSTRUCT the plan refers to (default: the last
        one :func:`~sbrtplan.io.write_rtstruct` wrote for ``case``).  Without
        one the plan geometry is ``TREATMENT_DEVICE``.
    plan_label : str
        RTPlanLabel (at most 16 characters).
    target_name : str, optional
        Structure the prescription refers to (a VOLUME dose reference when the
        RTSTRUCT contains it, otherwise a SITE).
    tolerance_table : bool
        Include a tolerance table (referenced by every beam).
    targets : sequence of (str, float), optional
        Several targets of one course, each with its total prescription dose in Gy (a plan of
        several targets, ``workflow.targets``): one TARGET dose reference per target, all named by
        the fraction group.  Default: ``target_name`` at ``beam_set.prescription_gy``.

    Returns
    -------
    str
        The RTPLAN SOP instance UID (also stored in ``case.metadata['rtplan_uid']``).
    """
    if not beam_set.beams:
        raise InputError(f"RTPLAN '{path}': the beam set has no beams")
    if beam_set.n_fractions < 1:
        raise InputError(f"RTPLAN '{path}': number of fractions must be >= 1, got {beam_set.n_fractions}")
    for t in targets or ():
        if (not isinstance(t, (tuple, list)) or len(t) != 2 or not isinstance(t[0], str)
                or not isinstance(t[1], (int, float)) or not np.isfinite(t[1]) or t[1] <= 0):
            raise InputError(f"RTPLAN '{path}': targets: expected (ROI name, prescription Gy > 0) pairs, got {t!r}")
    with timed(f"write RTPLAN {Path(path).name}", log):
        ds = new_file_dataset(case, RT_PLAN_STORAGE, "RTPLAN", series_description=f"sbrtplan {plan_label}"[:64],
                              series_number=int(case.metadata.get("rtplan_series_number", 3)))
        rtstruct_uid = rtstruct_uid or case.metadata.get("rtstruct_uid")
        roi_numbers: dict = case.metadata.get("rtstruct_roi_numbers", {}) if rtstruct_uid else {}
        date, time = ds.InstanceCreationDate, ds.InstanceCreationTime
        # RT General Plan
        ds.RTPlanLabel = str(plan_label)[:16]
        ds.RTPlanName = str(beam_set.label or plan_label)[:64]
        ds.RTPlanDescription = (f"{beam_set.prescription_gy:g} Gy in {beam_set.n_fractions} fractions, "
                                f"{len(beam_set.beams)} {beam_set.beams[0].technique.value} beams")[:1024]
        ds.RTPlanDate = date
        ds.RTPlanTime = time
        ds.InstanceNumber = 1
        if rtstruct_uid:
            ds.RTPlanGeometry = "PATIENT"
            ref = Dataset()
            ref.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
            ref.ReferencedSOPInstanceUID = rtstruct_uid
            ds.ReferencedStructureSetSequence = DicomSequence([ref])
        else:
            ds.RTPlanGeometry = "TREATMENT_DEVICE"
        # RT Prescription
        ds.PrescriptionDescription = f"{beam_set.prescription_gy:g} Gy / {beam_set.n_fractions} fx"[:64]
        levels = list(targets) if targets else [(target_name, float(beam_set.prescription_gy))]
        drefs = []
        for number, (roi_name, dose_gy) in enumerate(levels, start=1):
            dref = Dataset()
            dref.DoseReferenceNumber = number
            dref.DoseReferenceUID = new_uid()
            if roi_name is not None and roi_name in roi_numbers:
                dref.DoseReferenceStructureType = "VOLUME"
                dref.ReferencedROINumber = int(roi_numbers[roi_name])
            else:
                dref.DoseReferenceStructureType = "SITE"
            dref.DoseReferenceDescription = str(roi_name or "target")[:64]
            dref.DoseReferenceType = "TARGET"
            dref.TargetPrescriptionDose = ds_str(dose_gy, 4)
            drefs.append(dref)
        ds.DoseReferenceSequence = DicomSequence(drefs)
        # RT Tolerance Tables
        if tolerance_table:
            tt = Dataset()
            tt.ToleranceTableNumber = 1
            tt.ToleranceTableLabel = "SBRT"
            tt.GantryAngleTolerance = "1"
            tt.BeamLimitingDeviceAngleTolerance = "1"
            tt.PatientSupportAngleTolerance = "1"
            tols = []
            for kind, tol in (("ASYMX", "2"), ("ASYMY", "2"), ("MLCX", "1")):
                t = Dataset()
                t.RTBeamLimitingDeviceType = kind
                t.BeamLimitingDevicePositionTolerance = tol
                tols.append(t)
            tt.BeamLimitingDeviceToleranceSequence = DicomSequence(tols)
            ds.ToleranceTableSequence = DicomSequence([tt])
        # RT Patient Setup
        setup = Dataset()
        setup.PatientSetupNumber = 1
        setup.PatientPosition = beam_set.beams[0].patient_position or case.patient_position
        setup.SetupTechnique = "ISOCENTRIC"
        ds.PatientSetupSequence = DicomSequence([setup])
        # RT Fraction Scheme
        fg = Dataset()
        fg.FractionGroupNumber = 1
        fg.NumberOfFractionsPlanned = int(beam_set.n_fractions)
        fg.NumberOfBeams = len(beam_set.beams)
        fg.NumberOfBrachyApplicationSetups = 0
        rdrs = []
        for number in range(1, len(drefs) + 1):
            rdr = Dataset()
            rdr.ReferencedDoseReferenceNumber = number
            rdrs.append(rdr)
        fg.ReferencedDoseReferenceSequence = DicomSequence(rdrs)
        refs = []
        for i, beam in enumerate(beam_set.beams, start=1):
            r = Dataset()
            r.ReferencedBeamNumber = i
            r.BeamMeterset = ds_str(beam.mu, 5)
            refs.append(r)
        fg.ReferencedBeamSequence = DicomSequence(refs)
        ds.FractionGroupSequence = DicomSequence([fg])
        # RT Beams
        ds.BeamSequence = DicomSequence([_beam_dataset(b, i, beam_set.machine_name, tolerance_table)
                                         for i, b in enumerate(beam_set.beams, start=1)])
        approval_module(ds)
        save_dataset(ds, path)
    case.metadata["rtplan_uid"] = ds.SOPInstanceUID
    log.info("RTPLAN %s: %d beams, %.1f MU per fraction, %d fractions", Path(path).name, len(beam_set.beams),
             beam_set.total_mu_per_fraction, beam_set.n_fractions)
    return str(ds.SOPInstanceUID)


# =============================================================================== reading
def _f(value, default: float | None = None) -> float | None:
    if value is None or value == "":
        return default
    return float(value)


def _ds_array(item: Dataset, keyword: str) -> np.ndarray:
    """A multi-valued DS attribute as floats, parsed from the raw bytes when pydicom has not
    converted it yet (converting 120 leaf positions x thousands of control points value by
    value takes seconds)."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    elem = item.get_item(tag_for_keyword(keyword))
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        text = elem.value.strip(b" \0")
        try:
            return np.array(text.split(b"\\"), dtype=float) if text else np.zeros(0)
        except ValueError:
            pass  # unusual formatting: let pydicom parse it
    return np.asarray(item.get(keyword, []), dtype=float)


def _mlc_from_boundaries(boundaries: np.ndarray) -> MLCModel:
    for known in (MLCModel.millennium120(), MLCModel.hd120()):
        if known.leaf_boundaries_mm.size == boundaries.size and np.allclose(known.leaf_boundaries_mm, boundaries,
                                                                             atol=0.01):
            return known
    return MLCModel(f"MLCX{boundaries.size - 1}", boundaries)


def _classify(cps: list[ControlPoint], arc: bool) -> Technique:
    if arc:
        return Technique.VMAT
    if len(cps) <= 2 and all(_aperture_equal(cps[0].aperture, cp.aperture) for cp in cps[1:]):
        return Technique.STATIC
    w = np.array([cp.cumulative_weight for cp in cps])
    delivering = [i for i in range(len(cps) - 1) if w[i + 1] - w[i] > 1e-9]
    if all(_aperture_equal(cps[i].aperture, cps[i + 1].aperture, 1e-3) for i in delivering):
        shapes: list[Aperture] = []
        for i in delivering:
            if not any(_aperture_equal(cps[i].aperture, a, 1e-3) for a in shapes):
                shapes.append(cps[i].aperture)
        if len(shapes) <= 1:
            return Technique.STATIC
        return Technique.STEP_AND_SHOOT
    return Technique.SLIDING_WINDOW


def _read_beam(b: Dataset, mu: float, setups: dict, where: str) -> Beam:
    name = str(b.get("BeamName", "") or f"Beam {b.BeamNumber}")
    label = f"{where}: beam {b.BeamNumber} '{name}'"
    if str(b.get("RadiationType", "PHOTON")).upper() != "PHOTON":
        raise InputError(f"{label}: radiation type {b.get('RadiationType')!r} is not supported (photons only)")
    mlc: MLCModel | None = None
    for dev in b.get("BeamLimitingDeviceSequence", []):
        kind = str(dev.RTBeamLimitingDeviceType).upper()
        if kind == "MLCX":
            bounds = np.asarray(dev.get("LeafPositionBoundaries", []), float)
            n = int(dev.NumberOfLeafJawPairs)
            if bounds.size != n + 1:
                raise InputError(f"{label}: MLCX has {n} leaf pairs but {bounds.size} leaf position boundaries "
                                 f"(expected {n + 1})")
            mlc = _mlc_from_boundaries(bounds)
        elif kind == "MLCY":
            raise InputError(f"{label}: MLCY (leaves moving along Y) is not supported; expected an MLCX collimator")
    cps_ds = b.get("ControlPointSequence", [])
    if not cps_ds:
        raise InputError(f"{label}: no control points")
    cp0 = cps_ds[0]
    final = _f(b.get("FinalCumulativeMetersetWeight"), 1.0) or 1.0
    state = {
        "gantry": _f(cp0.get("GantryAngle"), 0.0),
        "collimator": _f(cp0.get("BeamLimitingDeviceAngle"), 0.0),
        "couch": _f(cp0.get("PatientSupportAngle"), 0.0),
        "iso": cp0.get("IsocenterPosition"),
        "energy": _f(cp0.get("NominalBeamEnergy")),
        "ASYMX": None, "ASYMY": None, "MLCX": None,
    }
    if state["iso"] is None:
        raise InputError(f"{label}: the first control point has no IsocenterPosition")
    if state["energy"] is None:
        log.warning("%s: no NominalBeamEnergy; assuming 6 MV", label)
        state["energy"] = 6.0
    direction = "NONE"
    cps: list[ControlPoint] = []
    for i, c in enumerate(cps_ds):
        if c.get("GantryAngle") not in (None, ""):
            state["gantry"] = float(c.GantryAngle)
        rot = str(c.get("GantryRotationDirection", "") or "").upper()
        if direction == "NONE" and rot in ("CW", "CC"):
            direction = rot
        for p in c.get("BeamLimitingDevicePositionSequence", []):
            kind = str(p.RTBeamLimitingDeviceType).upper()
            pos = _ds_array(p, "LeafJawPositions")
            if kind in ("X", "ASYMX"):
                state["ASYMX"] = pos
            elif kind in ("Y", "ASYMY"):
                state["ASYMY"] = pos
            elif kind == "MLCX":
                state["MLCX"] = pos
        w = c.get("CumulativeMetersetWeight")
        if w in (None, ""):
            raise InputError(f"{label}: control point {i} has no CumulativeMetersetWeight")
        if mlc is None:
            # jaws-only field: an idealised open MLC behind the jaws
            mlc = MLCModel.millennium120()
        leaves = state["MLCX"]
        if leaves is None:
            jx = state["ASYMX"] if state["ASYMX"] is not None else (-mlc.max_position_mm, mlc.max_position_mm)
            leaves = np.concatenate([np.full(mlc.n_pairs, jx[0]), np.full(mlc.n_pairs, jx[1])])
        if leaves.size != 2 * mlc.n_pairs:
            raise InputError(f"{label}: control point {i} has {leaves.size} MLCX positions, expected "
                             f"{2 * mlc.n_pairs}")
        x1, x2 = leaves[:mlc.n_pairs].copy(), leaves[mlc.n_pairs:].copy()
        crossed = x1 > x2
        if np.any(crossed):  # closed pairs written with a tiny overlap: close them at their midpoint
            mid = 0.5 * (x1[crossed] + x2[crossed])
            x1[crossed], x2[crossed] = mid, mid
        jx = state["ASYMX"] if state["ASYMX"] is not None else (float(min(x1.min(), -mlc.max_position_mm)),
                                                               float(max(x2.max(), mlc.max_position_mm)))
        b_ = mlc.leaf_boundaries_mm
        jy = state["ASYMY"] if state["ASYMY"] is not None else (float(b_[0]), float(b_[-1]))
        try:
            ap = Aperture(x1, x2, (float(jx[0]), float(jx[1])), (float(jy[0]), float(jy[1])))
        except GeometryError as e:
            raise InputError(f"{label}: control point {i}: {e}") from None
        cps.append(ControlPoint(float(state["gantry"]), ap, float(w) / final))
    accessories = {k: int(b.get(k, 0) or 0) for k in ("NumberOfWedges", "NumberOfBlocks", "NumberOfCompensators",
                                                        "NumberOfBoli")}
    if accessories["NumberOfCompensators"] and "CompensatorSequence" in b:
        # Eclipse stores the optimal and actual fluence of an IMRT field as "compensators" without a
        # material; only those with a material are physical devices in the beam.
        accessories["NumberOfCompensators"] = sum(1 for c in b.CompensatorSequence
                                                  if str(c.get("MaterialID", "") or "").strip())
    present = [f"{v} {k[8:].lower()}" for k, v in accessories.items() if v > 0]
    if present:
        # read with allow_unmodelled: the dose engine models open MLC fields only, say so
        log.warning("%s: %s in the beam are not modelled; a dose computed from it would be without them",
                    label, ", ".join(present))
    fluence = "STANDARD"
    for fm in b.get("PrimaryFluenceModeSequence", []):
        if str(fm.get("FluenceMode", "")).upper() == "NON_STANDARD":
            fluence = str(fm.get("FluenceModeID", "NON_STANDARD"))
    iso = tuple(float(v) for v in state["iso"])
    ref_setup = b.get("ReferencedPatientSetupNumber")
    position = setups.get(int(ref_setup) if ref_setup not in (None, "") else None) or \
        (next(iter(setups.values())) if setups else "HFS")
    gantries = [cp.gantry_deg for cp in cps]
    arc = len(gantries) > 1 and any(abs(((g - gantries[0]) + 180) % 360 - 180) > 1e-3 for g in gantries)
    technique = _classify(cps, arc)
    return Beam(name=name, control_points=cps, mu=float(mu), mlc=mlc, isocenter_mm=iso,
                collimator_deg=float(state["collimator"]), couch_deg=float(state["couch"]),
                sad_mm=_f(b.get("SourceAxisDistance"), 1000.0), technique=technique,
                energy_mv=float(state["energy"]), patient_position=str(position),
                arc_direction=direction if arc else "NONE",
                metadata={"beam_number": int(b.BeamNumber), "beam_type": str(b.get("BeamType", "")),
                          "treatment_machine": str(b.get("TreatmentMachineName", "")),
                          "n_control_points_in_file": len(cps_ds), "fluence_mode": fluence,
                          "accessories": present})


def _prescription_gy(ds: Dataset, fg: Dataset, n_fractions: int) -> float:
    refs = {int(r.ReferencedDoseReferenceNumber) for r in fg.get("ReferencedDoseReferenceSequence", [])
            if r.get("ReferencedDoseReferenceNumber") not in (None, "")}
    targets = [d for d in ds.get("DoseReferenceSequence", [])
               if str(d.get("DoseReferenceType", "")).upper() == "TARGET"
               and d.get("TargetPrescriptionDose") not in (None, "")]
    if refs:
        referenced = [d for d in targets if int(d.DoseReferenceNumber) in refs]
        targets = referenced or targets
    volumes = [d for d in targets if str(d.get("DoseReferenceStructureType", "")).upper() in ("VOLUME", "SITE")]
    chosen = volumes or targets
    if chosen:
        return float(chosen[0].TargetPrescriptionDose)
    beam_dose = [float(r.BeamDose) for r in fg.get("ReferencedBeamSequence", [])
                 if r.get("BeamDose") not in (None, "")]
    return float(sum(beam_dose)) * n_fractions if beam_dose else 0.0


@refuse_malformed("RTPLAN")
def read_rtplan(path, *, fraction_group: int | None = None, allow_unmodelled: bool = False) -> BeamSet:
    """Read the treatment beams of a photon RTPLAN.

    Parameters
    ----------
    path : str or Path
        RTPLAN file.
    fraction_group : int, optional
        ``FractionGroupNumber`` to read (default: the first fraction group).
    allow_unmodelled : bool
        Read beams that carry what the dose engine does not model (wedges, physical
        compensators, blocks, applicators, boli; :func:`~sbrtplan.io.validate.unmodelled_devices`),
        listing them in ``metadata["accessories"]``.  By default such a plan is refused, naming
        the beam: every reader of an RTPLAN in sbrtplan computes its dose (recompute, mucheck,
        qa-plan), which would be wrong without the device.

    Returns
    -------
    BeamSet
        One :class:`Beam` per treatment beam that has a ``BeamMeterset`` in the
        fraction group (setup and portal-image beams are left out); MU per
        fraction; every control point of the file is kept.  Each beam's
        ``metadata`` holds its ``beam_number``, the plan's SOP instance UID
        (``rtplan_uid``, for :func:`~sbrtplan.io.write_rtdose`), the
        ``fluence_mode`` (``FFF`` ...) and any physical ``accessories``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"RTPLAN file not found: {path}")
    with timed(f"read RTPLAN {path.name}", log):
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as e:  # pydicom raises several types for non-DICOM input
            raise InputError(f"RTPLAN '{path}': not a readable DICOM file ({e})") from None
        if str(ds.get("Modality", "")) != "RTPLAN" and str(ds.get("SOPClassUID", "")) != RT_PLAN_STORAGE:
            raise InputError(f"'{path}' is not an RTPLAN (Modality {ds.get('Modality')!r}, "
                             f"SOP class {ds.get('SOPClassUID')!r})")
        if "BeamSequence" not in ds:
            raise InputError(f"RTPLAN '{path}': no BeamSequence (ion and brachytherapy plans are not supported)")
        # fractions, MU, angles, leaves, jaws, radiation type; wedges, blocks and other devices not modelled
        check_rtplan_dataset(ds, path, fraction_group, allow_unmodelled=allow_unmodelled)
        groups = list(ds.get("FractionGroupSequence", []))
        if not groups:
            raise InputError(f"RTPLAN '{path}': no FractionGroupSequence, so no MU per beam")
        if fraction_group is None:
            fg = groups[0]
        else:
            match = [g for g in groups if int(g.FractionGroupNumber) == int(fraction_group)]
            if not match:
                have = ", ".join(str(g.FractionGroupNumber) for g in groups)
                raise InputError(f"RTPLAN '{path}': no fraction group {fraction_group} (have {have})")
            fg = match[0]
        n_fx = int(fg.get("NumberOfFractionsPlanned") or 1)
        meterset = {int(r.ReferencedBeamNumber): float(r.BeamMeterset) for r in fg.get("ReferencedBeamSequence", [])
                    if r.get("BeamMeterset") not in (None, "")}
        setups = {int(s.PatientSetupNumber): str(s.get("PatientPosition", "") or "HFS")
                  for s in ds.get("PatientSetupSequence", []) if s.get("PatientSetupNumber") not in (None, "")}
        beams: list[Beam] = []
        machine = ""
        for b in ds.BeamSequence:
            kind = str(b.get("TreatmentDeliveryType", "TREATMENT") or "TREATMENT").upper()
            number = int(b.BeamNumber)
            if kind != "TREATMENT" or number not in meterset:
                log.info("RTPLAN %s: skipping beam %d '%s' (%s, %s)", path.name, number, b.get("BeamName", ""),
                         kind, "MU %.1f" % meterset[number] if number in meterset else "no meterset")
                continue
            beam = _read_beam(b, meterset[number], setups, f"RTPLAN '{path}'")
            # what an RTDOSE computed from this plan must refer to (write_rtdose(rtplan_uid=...))
            beam.metadata["rtplan_uid"] = str(ds.get("SOPInstanceUID", ""))
            beam.metadata["rtplan_path"] = str(path)
            beams.append(beam)
            machine = machine or str(b.get("TreatmentMachineName", ""))
        if not beams:
            raise InputError(f"RTPLAN '{path}': no treatment beam with a BeamMeterset in fraction group "
                             f"{fg.get('FractionGroupNumber')}")
        bs = BeamSet(beams=beams, n_fractions=n_fx, prescription_gy=_prescription_gy(ds, fg, n_fx),
                     machine_name=machine or "unknown", label=str(ds.get("RTPlanLabel", "") or path.stem))
    log.info("RTPLAN %s: %d beams (%s), %.1f MU per fraction, %d fractions, %.2f Gy", path.name, len(beams),
             ", ".join(sorted({b.technique.value for b in beams})), bs.total_mu_per_fraction, n_fx, bs.prescription_gy)
    return bs

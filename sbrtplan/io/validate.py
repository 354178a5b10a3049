"""Checks of the values read from DICOM files, and of the agreement between files.

Readers call these before they compute anything from a file; commands call
:func:`check_same_patient` on every file they combine.  Every failure is an
:class:`~sbrtplan.errors.InputError` (or its :class:`~sbrtplan.errors.ConsistencyError`
subclass) whose one-line message names the file, the element, the value and
what was expected.  The bounds come from ``sbrtplan/data/input_limits.yaml``.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .._limits import limit
from .._log import get_logger
from ..errors import ConsistencyError, InputError, SbrtplanError

log = get_logger(__name__)

def refuse_malformed(kind: str):
    """Decorator of a reader ``fn(path, ...)``: a value pydicom or the reader cannot interpret (a text
    where a number belongs, a missing nested element, a cut file) becomes one :class:`InputError`
    naming the file, instead of a traceback.  The original traceback is logged at debug level."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except SbrtplanError:
                raise
            except (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError, EOFError, OverflowError,
                    ZeroDivisionError, struct.error) as exc:
                log.debug("%s: malformed %s", path, kind, exc_info=True)
                msg = " ".join(str(exc).split())[:200]
                raise InputError(f"{path}: malformed {kind} ({type(exc).__name__}: {msg}); expected a valid "
                                 f"DICOM {kind}") from None
        return wrapper
    return deco


#: Beam limiting devices the reader models (DICOM C.8.8.14.1 RTBeamLimitingDeviceType).
KNOWN_DEVICES = ("X", "Y", "ASYMX", "ASYMY", "MLCX")


def _float(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{what}: expected a finite number, got {value!r}")
    return v


def _floats(value, what: str) -> np.ndarray:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected numbers, got {str(value)[:60]!r}") from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what}: holds non-finite values (NaN or inf)")
    return arr


# ----------------------------------------------------------------------------- RTDOSE

def dose_grid_scaling(ds, path) -> float:
    """DoseGridScaling of an RTDOSE: present, finite and > 0 (Type 1C; 1.0 is never assumed)."""
    if "DoseGridScaling" not in ds or str(ds.get("DoseGridScaling", "")).strip() == "":
        raise InputError(f"{path}: RTDOSE without DoseGridScaling; expected the factor (Gy per stored unit) "
                         "that converts the pixel values to dose")
    v = ds.get("DoseGridScaling")
    try:
        s = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{path}: DoseGridScaling {v!r} is not a number") from None
    if not math.isfinite(s) or s <= 0.0:
        raise InputError(f"{path}: DoseGridScaling {v!s}; expected a finite number > 0")
    return s


def check_dose_values(dose_gy: np.ndarray, path) -> None:
    """Every dose finite and none clearly negative (a dose cannot be negative)."""
    if dose_gy.size == 0:
        raise InputError(f"{path}: RTDOSE has no dose values")
    lo, hi = float(np.min(dose_gy)), float(np.max(dose_gy))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{path}: RTDOSE holds non-finite dose values (NaN or inf)")
    tol = float(limit("rtdose", "negative_tolerance"))
    if lo < -tol * max(hi, 0.0) and lo < 0.0:
        raise InputError(f"{path}: RTDOSE holds negative doses (min {lo:.4g} Gy); expected doses >= 0 "
                         "(check PixelRepresentation and DoseGridScaling)")


# ----------------------------------------------------------------------------- RTSTRUCT

def check_unique_roi_names(rois: Sequence[dict], path) -> None:
    """Two contoured ROIs with the same name (case and spaces ignored) are ambiguous: refuse them."""
    seen: dict[str, dict] = {}
    for r in rois:
        key = " ".join(str(r["name"]).split()).casefold()
        if key in seen:
            raise InputError(f"{path}: two ROIs are named '{r['name']}' (ROI numbers {seen[key]['number']} and "
                             f"{r['number']}); expected unique ROI names (rename one in the planning system)")
        seen[key] = r


def check_rtstruct_dataset(ds, path) -> None:
    """Structure of the contour sequences: every item names its ROI, every contour has the points it
    announces (a truncated file ends in a cut item, which pydicom reads without complaint)."""
    try:
        for i, item in enumerate(ds.get("ROIContourSequence", []) or []):
            if item.get("ReferencedROINumber") in (None, ""):
                raise InputError(f"{path}: ROIContourSequence item {i + 1} has no ReferencedROINumber "
                                 "(truncated or corrupt structure set)")
            for j, c in enumerate(item.get("ContourSequence", []) or []):
                n = c.get("NumberOfContourPoints")
                if n in (None, ""):
                    continue
                try:
                    raw = c.get_item(0x30060050)
                except KeyError:
                    raw = None
                if raw is None:
                    raise InputError(f"{path}: ROI number {item.ReferencedROINumber}, contour {j + 1}: no "
                                     "ContourData (truncated or corrupt structure set)")
                value = getattr(raw, "value", None)
                if isinstance(value, (bytes, bytearray)):
                    count = value.count(b"\\") + 1 if value.strip() else 0
                else:
                    count = len(c.ContourData) if c.ContourData is not None else 0
                if count != 3 * int(n):
                    raise InputError(f"{path}: ROI number {item.ReferencedROINumber}, contour {j + 1}: "
                                     f"{count} ContourData values for NumberOfContourPoints {n} (expected "
                                     f"{3 * int(n)}; truncated or corrupt structure set?)")
    except InputError:
        raise
    except (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise InputError(f"{path}: unreadable RTSTRUCT ({type(exc).__name__}: {exc}); the file may be "
                         "truncated") from None


def check_contour_points(pts: np.ndarray, path, roi_name: str) -> None:
    """ContourData finite (a NaN vertex would silently empty or warp the mask)."""
    if not np.all(np.isfinite(pts)):
        raise InputError(f"{path}: ROI '{roi_name}': ContourData holds non-finite values (NaN or inf)")


# ----------------------------------------------------------------------------- RTPLAN

def _beam_label(path, b) -> str:
    return f"RTPLAN '{path}': beam {b.get('BeamNumber', '?')} '{b.get('BeamName', '') or ''}'"


def check_rtplan_dataset(ds, path, fraction_group=None, *, allow_unmodelled: bool = False) -> None:
    """Values of an RTPLAN that the reader would otherwise take on trust.

    Fractions planned (present, 1..max), MU per beam (finite, > 0, below the
    absurd bound), photons only, only modelled beam limiting
    devices, finite angles, energies and isocentres, leaf and jaw positions
    finite, within the travel range and not crossed.  Every treatment beam is
    also checked for what the dose engine cannot compute (:func:`unmodelled_devices`:
    wedges, physical compensators, blocks, applicators, boli, a dosimeter unit other
    than MU): refused, naming the beam, unless ``allow_unmodelled`` (reading a plan
    without computing its dose).
    """
    try:
        _check_rtplan(ds, path, fraction_group, allow_unmodelled)
    except InputError:
        raise
    except (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        # pydicom parses sequences lazily: a truncated file fails here, on first access
        raise InputError(f"RTPLAN '{path}': unreadable ({type(exc).__name__}: {exc}); the file may be "
                         "truncated") from None


def _check_rtplan(ds, path, fraction_group, allow_unmodelled: bool = False) -> None:
    for _ in ds.iterall():  # decode every nested element now, so that a truncated file fails here
        pass
    modality = str(ds.get("Modality", "") or "").upper()
    if modality and modality != "RTPLAN":
        raise InputError(f"'{path}' is not an RTPLAN (Modality {modality}); expected an RTPLAN")
    groups = list(ds.get("FractionGroupSequence", []) or [])
    if fraction_group is not None:
        groups = [g for g in groups if str(g.get("FractionGroupNumber", "")) == str(fraction_group)] or groups
    if not groups:
        return  # the reader reports the missing fraction group in its own words
    fg = groups[0]
    nfx = fg.get("NumberOfFractionsPlanned")
    if nfx in (None, ""):
        raise InputError(f"RTPLAN '{path}': fraction group {fg.get('FractionGroupNumber', '?')} has no "
                         "NumberOfFractionsPlanned; expected the number of fractions (>= 1)")
    n = _float(nfx, f"RTPLAN '{path}': NumberOfFractionsPlanned")
    max_fx = int(limit("rtplan", "max_fractions"))
    if n < 1 or n != int(n) or n > max_fx:
        raise InputError(f"RTPLAN '{path}': NumberOfFractionsPlanned {nfx}; expected a whole number from 1 to "
                         f"{max_fx}")
    max_mu = float(limit("rtplan", "max_mu_per_beam"))
    metersets: dict[int, float] = {}
    for r in fg.get("ReferencedBeamSequence", []) or []:
        mu = r.get("BeamMeterset")
        if mu in (None, ""):
            continue
        num = r.get("ReferencedBeamNumber", "?")
        v = _float(mu, f"RTPLAN '{path}': beam {num}: BeamMeterset")
        if v <= 0.0 or v > max_mu:
            raise InputError(f"RTPLAN '{path}': beam {num}: BeamMeterset {mu} MU; expected > 0 and <= {max_mu:g} MU "
                             "per fraction")
        try:
            metersets[int(num)] = v
        except (TypeError, ValueError):
            raise InputError(f"RTPLAN '{path}': ReferencedBeamNumber {num!r} is not a number") from None
    for b in ds.get("BeamSequence", []) or []:
        try:
            number = int(b.get("BeamNumber"))
        except (TypeError, ValueError):
            raise InputError(f"RTPLAN '{path}': BeamNumber {b.get('BeamNumber')!r} is not a number") from None
        kind = str(b.get("TreatmentDeliveryType", "TREATMENT") or "TREATMENT").upper()
        if kind != "TREATMENT" or number not in metersets:
            continue  # setup and portal beams are skipped by the reader
        _check_beam(b, path)
        if not allow_unmodelled:
            found = unmodelled_devices(b)
            if found:
                raise InputError(f"{_beam_label(path, b)}: {'; '.join(found)}: not modelled by the dose engine "
                                 "(refused rather than computed without it)")


def _count(b, keyword: str) -> int:
    v = b.get(keyword, 0)
    try:
        return int(float(v)) if v not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def unmodelled_devices(b) -> list[str]:
    """What a photon beam of an RTPLAN carries that the dose engine does not model (it computes open
    MLC / jaw fields): physical and enhanced dynamic (or motorized) wedges, physical compensators,
    shielding or aperture blocks, applicators (cones), boli, and a dosimeter unit other than MU.

    Eclipse stores the optimal and actual fluence of an IMRT field as "compensators" without a
    material (``MaterialID`` empty): those are fluence descriptions, not devices, and pass.
    """
    out = []
    wedges = list(b.get("WedgeSequence", []) or [])
    for w in wedges:
        kind = str(w.get("WedgeType", "") or "").upper()
        name = {"DYNAMIC": "enhanced dynamic wedge", "MOTORIZED": "motorized wedge"}.get(kind, "physical wedge")
        angle = str(w.get("WedgeAngle", "") or "").strip()
        wid = str(w.get("WedgeID", "") or "").strip()
        out.append(f"{name}{f' {wid}' if wid else ''}{f' ({angle} deg)' if angle else ''}")
    if not wedges and _count(b, "NumberOfWedges") > 0:
        out.append(f"{_count(b, 'NumberOfWedges')} wedge(s)")
    comps = list(b.get("CompensatorSequence", []) or [])
    physical = [c for c in comps if str(c.get("MaterialID", "") or "").strip()]
    if physical:
        out.append(f"{len(physical)} physical compensator(s) ({', '.join(str(c.get('MaterialID')) for c in physical)})")
    elif not comps and _count(b, "NumberOfCompensators") > 0:
        out.append(f"{_count(b, 'NumberOfCompensators')} compensator(s)")
    blocks = list(b.get("BlockSequence", []) or [])
    for bl in blocks:
        kind = str(bl.get("BlockType", "") or "").lower() or "physical"
        name = str(bl.get("BlockName", "") or "").strip()
        out.append(f"{kind} block{f' {name}' if name else ''}")
    if not blocks and _count(b, "NumberOfBlocks") > 0:
        out.append(f"{_count(b, 'NumberOfBlocks')} block(s)")
    for a in b.get("ApplicatorSequence", []) or []:
        aid = str(a.get("ApplicatorID", "") or "").strip()
        kind = str(a.get("ApplicatorType", "") or "").strip()
        out.append(f"applicator{f' {aid}' if aid else ''}{f' ({kind})' if kind else ''}")
    boli = len(list(b.get("ReferencedBolusSequence", []) or [])) or _count(b, "NumberOfBoli")
    if boli:
        out.append(f"{boli} bolus(es)")
    unit = str(b.get("PrimaryDosimeterUnit", "") or "").strip().upper()
    if unit and unit != "MU":
        out.append(f"dosimeter unit {unit} (expected MU)")
    return out


def _check_beam(b, path) -> None:
    label = _beam_label(path, b)
    rt = str(b.get("RadiationType", "PHOTON") or "PHOTON").upper()
    if rt != "PHOTON":
        raise InputError(f"{label}: radiation type {rt!r} is not supported (photons only)")
    for tag in ("NumberOfWedges", "NumberOfCompensators", "NumberOfBlocks", "NumberOfBoli"):
        n = b.get(tag, 0)
        if n not in (None, "") and _float(n, f"{label}: {tag}") < 0:
            raise InputError(f"{label}: {tag} {n}; expected a count >= 0")
    sad = b.get("SourceAxisDistance")
    if sad not in (None, ""):
        lo, hi = limit("rtplan", "sad_mm")
        v = _float(sad, f"{label}: SourceAxisDistance")
        if not lo <= v <= hi:
            raise InputError(f"{label}: SourceAxisDistance {sad} mm; expected {lo:g}-{hi:g} mm")
    n_pairs = None
    for dev in b.get("BeamLimitingDeviceSequence", []) or []:
        kind = str(dev.get("RTBeamLimitingDeviceType", "") or "").upper()
        if kind not in KNOWN_DEVICES + ("MLCY",):  # MLCY has its own message in the reader
            raise InputError(f"{label}: beam limiting device {kind or '(none)'!s} is not supported; expected "
                             f"{', '.join(KNOWN_DEVICES)}")
        if kind == "MLCX":
            n_pairs = int(_float(dev.get("NumberOfLeafJawPairs"), f"{label}: MLCX NumberOfLeafJawPairs"))
            if n_pairs < 1:
                raise InputError(f"{label}: MLCX with {n_pairs} leaf pairs")
            bounds = _floats(dev.get("LeafPositionBoundaries", []) or [], f"{label}: LeafPositionBoundaries")
            if bounds.size > 1 and np.any(np.diff(bounds) <= 0):
                raise InputError(f"{label}: LeafPositionBoundaries are not increasing")
    max_leaf = float(limit("rtplan", "max_leaf_position_mm"))
    max_jaw = float(limit("rtplan", "max_jaw_position_mm"))
    overlap = float(limit("rtplan", "max_leaf_overlap_mm"))
    for i, cp in enumerate(b.get("ControlPointSequence", []) or []):
        where = f"{label}: control point {i}"
        for tag in ("GantryAngle", "BeamLimitingDeviceAngle", "PatientSupportAngle"):
            v = cp.get(tag)
            if v not in (None, ""):
                a = _float(v, f"{where}: {tag}")
                if not -360.0 <= a <= 360.0:
                    raise InputError(f"{where}: {tag} {v} deg; expected 0-360 deg")
        for tag in ("NominalBeamEnergy", "CumulativeMetersetWeight"):
            v = cp.get(tag)
            if v not in (None, ""):
                x = _float(v, f"{where}: {tag}")
                if x < 0 or (tag == "NominalBeamEnergy" and x == 0):
                    raise InputError(f"{where}: {tag} {v}; expected a positive number")
        iso = cp.get("IsocenterPosition")
        if iso not in (None, ""):
            vals = _floats(iso, f"{where}: IsocenterPosition")
            if vals.size != 3:
                raise InputError(f"{where}: IsocenterPosition has {vals.size} values, expected 3")
        for p in cp.get("BeamLimitingDevicePositionSequence", []) or []:
            kind = str(p.get("RTBeamLimitingDeviceType", "") or "").upper()
            pos = _floats(p.get("LeafJawPositions", []) or [], f"{where}: {kind} LeafJawPositions")
            if kind == "MLCX":
                if pos.size % 2:
                    raise InputError(f"{where}: {pos.size} MLCX positions; expected two per leaf pair")
                if np.any(np.abs(pos) > max_leaf):
                    raise InputError(f"{where}: MLCX leaf at {pos[np.argmax(np.abs(pos))]:g} mm; expected within "
                                     f"+-{max_leaf:g} mm of the central axis")
                half = pos.size // 2
                cross = pos[:half] - pos[half:]
                if np.any(cross > overlap):
                    k = int(np.argmax(cross))
                    raise InputError(f"{where}: MLCX leaf pair {k + 1} crossed by {cross[k]:.1f} mm (bank A "
                                     f"{pos[k]:g} mm > bank B {pos[half + k]:g} mm); expected x1 <= x2")
            elif kind in ("X", "Y", "ASYMX", "ASYMY"):
                if np.any(np.abs(pos) > max_jaw):
                    raise InputError(f"{where}: {kind} jaw at {pos[np.argmax(np.abs(pos))]:g} mm; expected within "
                                     f"+-{max_jaw:g} mm")
                if pos.size == 2 and pos[0] > pos[1] + overlap:
                    raise InputError(f"{where}: {kind} jaws crossed ({pos[0]:g} > {pos[1]:g} mm); expected "
                                     "jaw 1 <= jaw 2")
            elif kind not in ("MLCY",):
                raise InputError(f"{where}: beam limiting device {kind or '(none)'} is not supported")


def check_beams_for_model(beam_set, model, source) -> None:
    """Every beam can be computed with ``model``: its nominal energy is the model's (an 18 MV beam is not
    computed with a 6 MV model).  Wedges, blocks and the other devices the engine does not model are
    refused by the RTPLAN reader itself (:func:`unmodelled_devices`)."""
    tol = float(limit("rtplan", "energy_tolerance_mv"))
    e_model = float(getattr(model, "energy_mv", 6.0))
    for b in beam_set.beams:
        if abs(float(b.energy_mv) - e_model) > tol:
            raise InputError(f"{source}: beam '{b.name}' is {b.energy_mv:g} MV but the beam model "
                             f"'{getattr(model, 'name', '?')}' is {e_model:g} MV; give --model/--machine of that "
                             "energy")


def check_isocentres_inside(beam_set, grid, source, ct_label: str = "the CT") -> None:
    """Every isocentre inside the CT volume (outside it the computed dose would be meaningless)."""
    margin = float(limit("geometry", "isocentre_outside_ct_mm"))
    lo, hi = grid.bounds_mm()
    lo, hi = np.asarray(lo, float) - margin, np.asarray(hi, float) + margin
    for b in beam_set.beams:
        iso = np.asarray(b.isocenter_mm, float)
        if not np.all(np.isfinite(iso)) or np.any(iso < lo) or np.any(iso > hi):
            raise InputError(f"{source}: beam '{b.name}' isocentre ({iso[0]:.1f}, {iso[1]:.1f}, {iso[2]:.1f}) mm "
                             f"lies outside {ct_label} (x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}, "
                             f"z {lo[2]:.0f}..{hi[2]:.0f} mm)")


# ----------------------------------------------------------------------------- consistency

@dataclass(frozen=True)
class Identity:
    """Who and where a DICOM object belongs to: its frames of reference and patient ID."""

    label: str
    frames: frozenset[str]
    patient_id: str | None


def _first_ct(folder: Path):
    import pydicom

    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True,
                                 specific_tags=["Modality", "FrameOfReferenceUID", "PatientID"])
        except Exception:  # not DICOM: the CT reader reports what it finds
            continue
        if str(ds.get("Modality", "")).upper() == "CT":
            return ds
    return None


def dicom_identity(path, label: str) -> Identity | None:
    """Frames of reference and patient ID of a DICOM file (or a CT folder's first slice); None if unreadable."""
    import pydicom

    p = Path(path)
    try:
        if p.is_dir():
            ds = _first_ct(p)
            if ds is None:
                return None
        else:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True,
                                 specific_tags=["Modality", "FrameOfReferenceUID", "PatientID",
                                                "ReferencedFrameOfReferenceSequence", "StructureSetROISequence"])
    except Exception:  # unreadable here: the reader of that file gives the precise message
        return None
    frames = set()
    if str(ds.get("Modality", "")).upper() == "RTSTRUCT":
        frames |= {str(r.get("ReferencedFrameOfReferenceUID", "") or "").strip()
                   for r in ds.get("StructureSetROISequence", []) or []}
        if not frames - {""}:
            frames |= {str(r.get("FrameOfReferenceUID", "") or "").strip()
                       for r in ds.get("ReferencedFrameOfReferenceSequence", []) or []}
    else:
        frames.add(str(ds.get("FrameOfReferenceUID", "") or "").strip())
    pid = str(ds.get("PatientID", "") or "").strip() or None
    return Identity(label, frozenset(frames - {""}), pid)


def check_same_patient(items: Iterable[tuple[str, object]], *, frames: bool = True) -> None:
    """Refuse files of different patients or frames of reference.

    Parameters
    ----------
    items : iterable of (label, path)
        e.g. ``[("--ct " + ct, ct), ("--rtplan " + plan, plan)]``; files that
        are absent or give no identifiers are skipped.
    frames : bool
        Also compare the frames of reference (False: patient IDs only, where a
        caller checks the frames itself with a more precise message).
    """
    ids = [dicom_identity(p, lab) for lab, p in items if p is not None]
    ids = [i for i in ids if i is not None]
    for a_i, a in enumerate(ids):
        for b in ids[a_i + 1:]:
            if a.patient_id and b.patient_id and a.patient_id != b.patient_id:
                raise ConsistencyError(f"{a.label} is patient '{a.patient_id}' but {b.label} is patient "
                                       f"'{b.patient_id}'; refused (files of one patient expected)")
            if frames and a.frames and b.frames and not (a.frames & b.frames):
                raise ConsistencyError(f"{a.label} is in frame of reference {', '.join(sorted(a.frames))} but "
                                       f"{b.label} is in {', '.join(sorted(b.frames))}; refused (register them or "
                                       "give files of the same images)")


def check_case_identity(case, label: str, items: Iterable[tuple[str, object]]) -> None:
    """:func:`check_same_patient` between a loaded case (its CT identifiers) and files."""
    pat = getattr(case, "patient", None)
    frames = {pat.frame_of_reference_uid} if pat is not None and pat.frame_of_reference_uid else set()
    pid = pat.patient_id if pat is not None and pat.patient_id not in (None, "", "ANON") else None
    mine = Identity(label, frozenset(frames), pid)
    for lab, p in items:
        if p is None:
            continue
        other = dicom_identity(p, lab)
        if other is None:
            continue
        if mine.patient_id and other.patient_id and mine.patient_id != other.patient_id:
            raise ConsistencyError(f"{mine.label} is patient '{mine.patient_id}' but {other.label} is patient "
                                   f"'{other.patient_id}'; refused (files of one patient expected)")
        if mine.frames and other.frames and not (mine.frames & other.frames):
            raise ConsistencyError(f"{mine.label} is in frame of reference {', '.join(sorted(mine.frames))} but "
                                   f"{other.label} is in {', '.join(sorted(other.frames))}; refused")


def check_dose_overlaps(dose_grid, structures, source) -> None:
    """At least one structure has volume on the dose grid (else the dose is for another region or patient)."""
    nonempty = [s for s in (structures.values() if isinstance(structures, dict) else structures)
                if s.mask.any() or (getattr(s, "fraction", None) is not None and s.fraction.any())]
    if structures and not nonempty:
        lo, hi = dose_grid.bounds_mm()
        raise InputError(f"{source}: the dose grid (x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}, "
                         f"z {lo[2]:.0f}..{hi[2]:.0f} mm) does not overlap any structure; expected a dose of "
                         "these structures")


def check_reference_dose(dose, case, source) -> None:
    """A dose read to be compared with a computed one (``--reference-rtdose``, ``--clinical-rtdose``), checked
    before any dose is computed: it holds some dose, and its grid covers the case's targets (without
    targets: at least one structure).  Its scaling and values were checked by the reader."""
    hi_gy = float(np.max(dose.dose_gy)) if dose.dose_gy.size else 0.0
    if not hi_gy > 0.0:
        raise InputError(f"{source}: the dose is zero everywhere; expected the dose of this plan")
    lo, hi = dose.grid.bounds_mm()
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    idx = case.grid.index_from_patient(corners)  # (k, j, i)
    a = np.maximum(np.floor(idx.min(axis=0) + 0.5).astype(int), 0)
    b = np.minimum(np.floor(idx.max(axis=0) + 0.5).astype(int) + 1, np.asarray(case.grid.shape))
    box = tuple(slice(int(x), int(y)) for x, y in zip(a, b))
    structures = [st for st in case.structures.values() if st.grid.same_as(case.grid) and st.mask.any()]
    targets = [st for st in structures if getattr(st.role, "is_target", False)]
    wanted = targets or [st for st in structures if str(getattr(st.role, "value", "")) != "EXTERNAL"] or structures
    if not wanted:
        return
    if np.any(b <= a) or not any(st.mask[box].any() for st in wanted):
        names = ", ".join(st.name for st in wanted[:6]) + (", ..." if len(wanted) > 6 else "")
        raise InputError(f"{source}: the dose grid (x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}, "
                         f"z {lo[2]:.0f}..{hi[2]:.0f} mm) does not overlap {'the targets' if targets else 'any structure'}"
                         f" ({names}); expected the dose of this plan on this CT")

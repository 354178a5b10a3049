"""Prescriptions of an RTPLAN: dose levels per target ROI and the number of fractions.

An RTPLAN states its prescription in the DoseReferenceSequence (one item per
dose reference: ``DoseReferenceType`` TARGET or ORGAN_AT_RISK, a structure type
VOLUME with its ``ReferencedROINumber``, SITE with a description, or
POINT/COORDINATES, and ``TargetPrescriptionDose`` in Gy for the whole course)
and the fractionation in the FractionGroupSequence (``NumberOfFractionsPlanned``,
``ReferencedDoseReferenceSequence`` naming the dose references of the group).

:func:`read_prescription` returns one :class:`DoseLevel` per target ROI:

* VOLUME references give their ROI by number; it must exist in the RTSTRUCT;
* SITE references without an ROI number are kept when their description is the
  name of an ROI of the RTSTRUCT (as planning systems write it), else skipped;
* POINT/COORDINATES references (calculation points) are skipped.

Several dose levels (simultaneous integrated boosts, several lesions) are
returned in decreasing dose order.  The checks are the boundary's: a dose
reference naming an ROI absent from the RTSTRUCT, an RTPLAN without fractions,
a non-positive or non-finite dose, or one ROI prescribed twice with different
doses are one-line :class:`~sbrtplan.errors.InputError` messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

__all__ = ["DoseLevel", "PlanPrescription", "read_prescription", "rtstruct_roi_names"]


@dataclass(frozen=True)
class DoseLevel:
    """One target's prescription: ``dose_gy`` (whole course) to the ROI ``roi_name``."""

    roi_name: str
    dose_gy: float
    roi_number: int | None = None
    description: str = ""
    structure_type: str = "VOLUME"


@dataclass(frozen=True)
class PlanPrescription:
    """The dose levels and the fractions of one fraction group of an RTPLAN."""

    fractions: int
    levels: tuple[DoseLevel, ...]
    fraction_group: int
    source: str

    @property
    def primary(self) -> DoseLevel:
        """The highest dose level."""
        return self.levels[0]

    def scheme_text(self, level: DoseLevel | None = None) -> str:
        """``TOTAL/FRACTIONS`` of a level (the primary by default), e.g. ``"27/3"``."""
        lv = level or self.primary
        return f"{lv.dose_gy:g}/{self.fractions}"


def _read(path: Path, what: str, tags=None):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise InputError(f"{what}: no such file: {path}")
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{what} {path}: not a readable DICOM file ({type(exc).__name__})") from None


def rtstruct_roi_names(path: str | Path) -> dict[int, str]:
    """ROI number -> ROI name of an RTSTRUCT's StructureSetROISequence (no contour is read)."""
    p = Path(path)
    ds = _read(p, "--rtstruct", ["Modality", "StructureSetROISequence"])
    if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise InputError(f"--rtstruct {p}: Modality is {ds.get('Modality', 'missing')!s}, expected RTSTRUCT")
    out = {}
    for item in ds.get("StructureSetROISequence", []) or []:
        try:
            out[int(item.ROINumber)] = str(item.get("ROIName", "")).strip()
        except (AttributeError, TypeError, ValueError):
            continue
    return out


def _dose_gy(item, path: Path) -> float | None:
    raw = item.get("TargetPrescriptionDose")
    if raw in (None, ""):
        return None
    try:
        d = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"--rtplan {path}: dose reference {item.get('DoseReferenceNumber', '?')} has "
                         f"TargetPrescriptionDose {raw!r}, expected a number of Gy") from None
    if not (math.isfinite(d) and d > 0):
        raise InputError(f"--rtplan {path}: dose reference {item.get('DoseReferenceNumber', '?')} has "
                         f"TargetPrescriptionDose {raw!s} Gy, expected a positive dose")
    return d


def read_prescription(path: str | Path, rtstruct: str | Path | dict[int, str] | None = None, *,
                      fraction_group: int | None = None) -> PlanPrescription:
    """Target dose levels and number of fractions of an RTPLAN.

    Parameters
    ----------
    path : str or Path
        The RTPLAN.
    rtstruct : str, Path or dict, optional
        The RTSTRUCT (or its ROI number -> name table) that the dose references
        point into; without it VOLUME references keep the ROI number as name.
    fraction_group : int, optional
        FractionGroupNumber to read; default the first group.

    Returns
    -------
    PlanPrescription
    """
    p = Path(path)
    ds = _read(p, "--rtplan")
    if str(ds.get("Modality", "")).upper() != "RTPLAN":
        raise InputError(f"--rtplan {p}: Modality is {ds.get('Modality', 'missing')!s}, expected RTPLAN")
    groups = list(ds.get("FractionGroupSequence", []) or [])
    if not groups:
        raise InputError(f"--rtplan {p}: no FractionGroupSequence, so no number of fractions; expected a "
                         "fraction group with NumberOfFractionsPlanned >= 1")
    if fraction_group is None:
        fg = groups[0]
    else:
        hits = [g for g in groups if str(g.get("FractionGroupNumber", "")) == str(fraction_group)]
        if not hits:
            raise InputError(f"--rtplan {p}: no fraction group {fraction_group} (groups: "
                             f"{', '.join(str(g.get('FractionGroupNumber', '?')) for g in groups)})")
        fg = hits[0]
    raw_n = fg.get("NumberOfFractionsPlanned")
    try:
        n = int(raw_n)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise InputError(f"--rtplan {p}: NumberOfFractionsPlanned is {raw_n!s} in fraction group "
                         f"{fg.get('FractionGroupNumber', 1)}, expected an integer >= 1")
    names = rtstruct if isinstance(rtstruct, dict) else (rtstruct_roi_names(rtstruct) if rtstruct else None)
    by_name = {v.lower(): k for k, v in (names or {}).items()}
    refs = set()
    for r in fg.get("ReferencedDoseReferenceSequence", []) or []:
        try:
            refs.add(int(r.ReferencedDoseReferenceNumber))
        except (AttributeError, TypeError, ValueError):
            continue
    levels: dict[str, DoseLevel] = {}
    for item in ds.get("DoseReferenceSequence", []) or []:
        if str(item.get("DoseReferenceType", "")).upper() != "TARGET":
            continue
        try:
            number = int(item.get("DoseReferenceNumber", -1))
        except (TypeError, ValueError):
            number = -1
        if refs and number not in refs:
            continue  # a dose reference of another fraction group
        kind = str(item.get("DoseReferenceStructureType", "")).upper()
        desc = str(item.get("DoseReferenceDescription", "") or "").strip()
        dose = _dose_gy(item, p)
        if dose is None or kind in ("POINT", "COORDINATES"):
            continue
        roi = item.get("ReferencedROINumber")
        if roi not in (None, ""):
            roi = int(roi)
            if names is not None and roi not in names:
                raise InputError(f"--rtplan {p}: dose reference {number} ({desc or kind}) names ROI number {roi}, "
                                 f"which the RTSTRUCT does not have (ROIs: "
                                 f"{', '.join(f'{k} {v}' for k, v in sorted(names.items())) or 'none'})")
            name = names[roi] if names is not None else f"ROI {roi}"
        elif kind == "SITE" and desc and desc.lower() in by_name:
            roi, name = by_name[desc.lower()], names[by_name[desc.lower()]]
        else:
            continue  # a site without an ROI of that name: nothing to evaluate it on
        prev = levels.get(name.lower())
        if prev is not None and abs(prev.dose_gy - dose) > 1e-6:
            raise InputError(f"--rtplan {p}: ROI '{name}' is prescribed twice ({prev.dose_gy:g} and {dose:g} Gy); "
                             "expected one dose per target")
        levels[name.lower()] = DoseLevel(name, dose, roi, desc, kind or "VOLUME")
    if not levels:
        raise InputError(f"--rtplan {p}: no target dose reference with a TargetPrescriptionDose on an ROI of "
                         f"the structure set (give --scheme and --target instead)")
    ordered = tuple(sorted(levels.values(), key=lambda lv: -lv.dose_gy))
    return PlanPrescription(n, ordered, int(fg.get("FractionGroupNumber", 1) or 1), str(p))

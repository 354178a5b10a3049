"""``sbrtplan evaluate``: evaluate any RTDOSE (ours or a clinical one) against a protocol.

The RTSTRUCT is rasterised directly onto the RTDOSE grid with sub-voxel
occupancy, so the evaluation does not depend on the CT (a clinical export may
come with a single CT slice); a structure set in another frame of reference
than the RTDOSE is refused; ``--ct`` adds a check that the dose grid lies on
the CT.  ``--case SPEC`` takes the structures from any case ``io.load_case``
reads (DICOM folder, matRad ``.mat``, OpenKBP folder, ``phantom:NAME``),
resampled onto the dose grid; without ``--rtdose`` the case's own reference
dose is evaluated (OpenKBP).  Without ``--protocol`` only the metrics are computed (DVH points,
CI/GI/R50/D2cm for ``--target`` at the ``--scheme`` prescription).
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate an RTDOSE + RTSTRUCT against a protocol",
                       description="Rasterise the RTSTRUCT onto the RTDOSE grid (sub-voxel occupancy), compute DVH "
                                   "metrics, CI/GI/R50/D2cm and every goal of the protocol for the scheme; print a "
                                   "compliance table and optionally write metrics.json.")
    p.add_argument("--rtdose", help="RTDOSE file (total dose of the course, or per fraction when its "
                                    "DoseSummationType says FRACTION); default with --case: the case's reference dose")
    p.add_argument("--rtstruct", help="RTSTRUCT file (required without --case)")
    p.add_argument("--case", metavar="SPEC", help="take the structures from a case: DICOM folder, matRad .mat, OpenKBP "
                                                  "folder or phantom:NAME (with --rtstruct for a DICOM folder)")
    p.add_argument("--ct", help="CT folder (optional: checks that the dose grid lies on the CT)")
    p.add_argument("--protocol", help="protocol name (see 'sbrtplan protocols') or YAML file; without it only the "
                                      "metrics are computed")
    p.add_argument("--scheme", help="fractionation scheme TOTAL/FRACTIONS, e.g. 27/3 (required with --protocol)")
    p.add_argument("--target", help="prescription target structure (needed when several PTVs exist); its DICOM "
                                    "name or its normalised one")
    p.add_argument("--rtplan", help="RTPLAN whose DoseReferenceSequence and fractions give the prescription: "
                                    "--scheme and --target default to its highest dose level, and every target "
                                    "dose level gets per-lesion indices at its own prescription")
    p.add_argument("--lesion", action="append", default=[], metavar="NAME=GY",
                   help="a target and its prescription (total Gy) for per-lesion indices; repeatable")
    p.add_argument("--condition", action="append", default=[], metavar="NAME",
                   help="declare a protocol condition (e.g. renal_cell); repeatable")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="rename a structure before TG-263 matching (e.g. --map 'cord prv=SpinalCord_PRV02'); repeatable")
    p.add_argument("--prior-rtdose", help="RTDOSE of a prior course (re-irradiation check, Michigan table)")
    p.add_argument("--prior-fractions", type=int, help="number of fractions of the prior course")
    p.add_argument("--interval-months", type=float, help="months since the prior course")
    p.add_argument("--json", metavar="OUT", help="write metrics.json here")
    p.add_argument("--dvh-csv", metavar="OUT", help="write the cumulative DVHs (0.1 Gy steps, %% volume) as CSV here")
    p.add_argument("--sources", action="store_true", help="show the source of every goal")
    p.set_defaults(func=run)


def _io():
    """The DICOM readers of ``sbrtplan.io`` (a clear error when they are missing)."""
    from ..errors import InputError

    try:
        from .. import io as sio
        read_rtdose = sio.read_rtdose
    except (ImportError, AttributeError) as exc:
        raise InputError(f"the RTDOSE reader (sbrtplan.io.read_rtdose) is not available: {exc}") from None
    read_rtstruct = getattr(sio, "read_rtstruct", None)
    if read_rtstruct is None:
        try:
            from ..io.rtstruct import read_rtstruct
        except ImportError as exc:
            raise InputError(f"the RTSTRUCT reader (sbrtplan.io.read_rtstruct) is not available: {exc}") from None
    return sio, read_rtdose, read_rtstruct


def _frame_of_reference(rtdose_path) -> str | None:
    """FrameOfReferenceUID of an RTDOSE header (None when the file does not give one)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(rtdose_path), stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"])
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError):
        return None  # the dose reader accepted the file; without a readable header there is nothing to compare
    uid = str(ds.get("FrameOfReferenceUID", "") or "").strip()
    return uid or None


def _check_same_frame(rtstruct_path, rtdose_path, frame_uid: str) -> None:
    """Refuse a structure set whose ROIs lie in another frame of reference than the dose."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from ..errors import InputError

    try:
        ds = pydicom.dcmread(str(rtstruct_path), stop_before_pixels=True,
                             specific_tags=["StructureSetROISequence", "ReferencedFrameOfReferenceSequence"])
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError):
        return  # the RTSTRUCT reader reports an unreadable file in its own words
    rois = list(ds.get("StructureSetROISequence", []) or [])
    foreign = [(str(r.get("ROIName", "")).strip(), str(r.get("ReferencedFrameOfReferenceUID", "") or "").strip())
               for r in rois]
    foreign = [(n, u) for n, u in foreign if u and u != frame_uid]
    if not rois:  # no ROI-level reference: the structure set's own referenced frame decides
        refs = {str(i.get("FrameOfReferenceUID", "") or "").strip()
                for i in ds.get("ReferencedFrameOfReferenceSequence", []) or []} - {""}
        if refs and frame_uid not in refs:
            foreign = [("(structure set)", u) for u in sorted(refs)]
    if foreign:
        names = ", ".join(n for n, _ in foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        uids = ", ".join(sorted({u for _, u in foreign}))
        raise InputError(f"--rtstruct {rtstruct_path}: ROI(s) {names} are in frame of reference {uids}, but "
                         f"--rtdose {rtdose_path} is in {frame_uid}; refused (the structures must be contoured on "
                         f"the images the dose was computed on, or registered to them)")


def _lesions_from_args(args) -> list[tuple[str, float]]:
    """Targets and their prescriptions from ``--rtplan`` and ``--lesion`` (each target once).

    An RTPLAN's highest dose level becomes ``--scheme`` and ``--target`` when they are not given.
    """
    import math

    from ..errors import InputError

    out: list[tuple[str, float]] = []
    if args.rtplan:
        from ..io.prescription import read_prescription

        if not args.rtstruct:
            raise InputError("--rtplan needs --rtstruct (its dose references name ROIs of the structure set)")
        rx = read_prescription(args.rtplan, args.rtstruct)
        out += [(lv.roi_name, lv.dose_gy) for lv in rx.levels]
        if not args.scheme:
            args.scheme = rx.scheme_text()
        if not args.target:
            args.target = rx.primary.roi_name
    for item in args.lesion:
        name, sep, gy = item.rpartition("=")
        try:
            dose = float(gy)
        except ValueError:
            dose = float("nan")
        if not sep or not name.strip() or not (math.isfinite(dose) and dose > 0):
            raise InputError(f"--lesion {item!r}: expected NAME=GY with a positive total dose, e.g. PTV1=27")
        out.append((name.strip(), dose))
    seen: dict[str, float] = {}
    for name, dose in out:
        if name.lower() in seen:
            raise InputError(f"target '{name}' is given twice (at {seen[name.lower()]:g} and {dose:g} Gy) by "
                             "--rtplan/--lesion; expected each target once")
        seen[name.lower()] = dose
    return out


def _lesion_indices(dose, structures: dict, lesions: list[tuple[str, float]], report):
    """Per-lesion indices of the named targets, each at its own prescription."""
    from ..case import StructureRole
    from ..errors import StructureError
    from ..evaluation import lesion_indices

    chosen, rx = [], []
    for name, gy in lesions:
        key = name.lower()
        hits = [s for n, s in structures.items() if n.lower() == key or (s.original_name or "").lower() == key]
        if not hits:
            raise StructureError(f"lesion '{name}' not found; structures: {', '.join(structures)}")
        if any(hits[0] is c for c in chosen):
            raise StructureError(f"lesion '{name}' names the structure {hits[0].name} a second time")
        chosen.append(hits[0])
        rx.append(gy)
    body = next((s for s in structures.values() if s.role is StructureRole.EXTERNAL), None)
    dvhs = [report.dvhs.get(s.name) for s in chosen]
    return lesion_indices(dose, chosen, rx, body=body,
                          dvhs=dvhs if all(d is not None for d in dvhs) else None)


def run(args) -> int:
    import sys
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from ..errors import InputError
    from ..evaluation import (PriorCourse, evaluate_plan, format_lesion_table, format_report, parse_name_map,
                              write_dvh_csv, write_metrics)
    from ..io.validate import check_case_identity, check_dose_overlaps
    from ..protocols import Scheme, load_protocol
    from ._validate import check_evaluate_args, check_something_evaluable

    if args.prior_rtdose and (args.prior_fractions is None or args.interval_months is None):
        raise InputError("--prior-rtdose needs --prior-fractions and --interval-months (the prior course's "
                         "fraction number and the months since it)")
    if (args.prior_fractions is not None or args.interval_months is not None) and not args.prior_rtdose:
        raise InputError("--prior-fractions / --interval-months need --prior-rtdose")
    protocol = load_protocol(args.protocol) if args.protocol else None
    lesions = _lesions_from_args(args)  # --rtplan / --lesion: (name, Rx Gy); fills --scheme and --target
    if protocol is not None and not args.scheme:
        raise InputError(f"--protocol {protocol.name} needs --scheme TOTAL/FRACTIONS (e.g. 27/3)")
    scheme = None
    if args.scheme:
        scheme = protocol.scheme(args.scheme) if protocol is not None else Scheme.parse(args.scheme)
    if args.prior_rtdose and scheme is None:
        raise InputError("a re-irradiation check (--prior-rtdose) needs --scheme of the new course")
    name_map = parse_name_map(args.map)
    if not args.case and not (args.rtdose and args.rtstruct):
        raise InputError("give --rtdose and --rtstruct, or --case SPEC (with --rtdose, or a case that carries a dose)")
    check_evaluate_args(args)  # ranges, output files, one patient and frame of reference, before any reading
    for f, what in ((args.rtdose, "--rtdose"), (args.rtstruct, "--rtstruct"), (args.prior_rtdose, "--prior-rtdose")):
        if f and not Path(f).is_file():
            raise InputError(f"{what}: no such file: {f}")

    sio, read_rtdose, read_rtstruct = _io()
    if args.case:
        from ..case import resample_structure

        case = sio.load_case(args.case, rtstruct=args.rtstruct)
        check_case_identity(case, f"--case {args.case}", [(f"--rtdose {args.rtdose}", args.rtdose)])
        if args.rtdose:
            dose = read_rtdose(args.rtdose)
        elif case.doses:
            key = next(iter(case.doses))
            dose = case.doses[key]
            print(f"evaluating the dose '{key}' of case {case.name}")
        else:
            raise InputError(f"--case {args.case}: the case carries no dose; give --rtdose")
        structures = {n: (s if s.grid.same_as(dose.grid) else resample_structure(s, dose.grid))
                      for n, s in case.structures.items()}
    else:
        dose = read_rtdose(args.rtdose)
        # the structures are rasterised straight onto the dose grid: they must share its frame of reference
        frame_uid = _frame_of_reference(args.rtdose)
        if frame_uid:
            _check_same_frame(args.rtstruct, args.rtdose, frame_uid)
        structures = read_rtstruct(args.rtstruct, dose.grid, occupancy=True, frame_of_reference_uid=frame_uid)
        if isinstance(structures, (list, tuple)):
            structures = {s.name: s for s in structures}
    check_dose_overlaps(dose.grid, structures, f"--rtdose {args.rtdose or args.case}")
    if args.ct:
        read_ct = getattr(sio, "read_ct_series", None) or getattr(sio, "load_case", None)
        if read_ct is None:
            raise InputError("--ct: the CT reader (sbrtplan.io.read_ct_series) is not available")
        ct_grid = read_ct(args.ct).grid
        lo, hi = ct_grid.bounds_mm() if hasattr(ct_grid, "bounds_mm") else (None, None)
        if lo is not None:
            dlo, dhi = dose.grid.bounds_mm()
            if np.any(np.asarray(dlo) < np.asarray(lo) - 1.0) or np.any(np.asarray(dhi) > np.asarray(hi) + 1.0):
                print(f"sbrtplan evaluate: warning: the dose grid extends beyond the CT in {args.ct}", file=sys.stderr)
    prior = None
    if args.prior_rtdose:
        prior = PriorCourse(read_rtdose(args.prior_rtdose), int(args.prior_fractions), float(args.interval_months))

    bar = tqdm(total=1, desc="evaluate", unit="step", disable=not sys.stderr.isatty(), leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        report = evaluate_plan(dose, structures, protocol, scheme, target=args.target, conditions=args.condition,
                               name_map=name_map, prior=prior, progress=progress)
    finally:
        bar.close()
    if protocol is not None:
        check_something_evaluable(report, f"--protocol {protocol.name}")
    print(format_report(report, show_sources=args.sources))
    if lesions:
        report.lesions = _lesion_indices(dose, structures, lesions, report)
        print()
        print(format_lesion_table(report.lesions))
    if args.json:
        write_metrics(args.json, report)
        print(f"metrics written to {args.json}")
    if args.dvh_csv:
        write_dvh_csv(args.dvh_csv, report)
        print(f"DVHs written to {args.dvh_csv}")
    return 0

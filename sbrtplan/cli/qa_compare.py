"""``sbrtplan qa-compare``: a measurement against the verification plan of ``sbrtplan qa-plan``.

Reads the calculated plane and chamber dose from the ``qa-plan`` output folder
and a measured dose plane (PTW .mcc of a 2D array, a CSV grid, an RTDOSE of a
measurement) and / or a measured chamber dose; registers the measurement on the
phantom's reference point (plus an optional manual shift); computes the gamma
2 %/2 mm and 3 %/2 mm, global and local, 10 % threshold, and the point-dose
difference; writes ``metrics.json`` and ``qa_report.html`` with the verdict
against the standards (point < 3 %, gamma >= 95 % pass, >= 90 % review).
With ``--report`` (the plan's ``report.html``) the same QA page is put into the
plan report, replacing an earlier QA page.
"""

from __future__ import annotations


def register(sub) -> None:
    from .qa_plan import add_measurement_arguments

    p = sub.add_parser("qa-compare", help="measured versus calculated for a verification plan (gamma, point dose)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--qa-dir", required=True, help="output folder of 'sbrtplan qa-plan'")
    p.add_argument("--out", help="output folder (default: --qa-dir)")
    add_measurement_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..qa import (PlaneOrientation, compare_measurement, load_criteria, read_measured_plane, read_verification,
                      write_comparison)
    from .qa_plan import format_comparison, parse_vector

    if not args.measured and args.measured_point_gy is None:
        raise InputError("qa-compare: give --measured and/or --measured-point-gy")
    crit = load_criteria(args.criteria)
    shift = parse_vector(args.shift_mm, 2, "--shift-mm") or (0.0, 0.0)
    report = Path(args.report) if args.report else None
    if report is not None and not report.is_file():
        raise InputError(f"--report {report}: no such plan report")
    summary, calculated = read_verification(args.qa_dir)
    ref = summary.get("reference_point_mm") or (0.0, 0.0, 0.0)
    measured = None
    if args.measured:
        measured = read_measured_plane(args.measured, fmt=args.measured_format, reference_point_mm=ref,
                                       orientation=PlaneOrientation(calculated.orientation),
                                       offset_mm=calculated.offset_mm)
    chamber_gy = (summary.get("chamber") or {}).get("volume_averaged_dose_gy")
    comparison = compare_measurement(calculated, measured, calculated_point_gy=chamber_gy,
                                     measured_point_gy=args.measured_point_gy, shift_mm=shift, criteria=crit)
    out = Path(args.out or args.qa_dir)
    write_comparison(comparison, out, verification=summary, measured=measured, calculated=calculated,
                     report=report)
    print(format_comparison(comparison))
    print(f"metrics.json and qa_report.html written to {out}" + (f"; QA page added to {report}" if report else ""))
    return 0

"""``sbrtplan qa-plan``: the verification plan of an RTPLAN on a QA phantom (one plan or a cohort).

The beams or arcs are transferred unchanged (MU, control points) onto a
built-in phantom (``qa_slab``: 30 x 30 x 20 cm solid-water slabs;
``qa_cylinder``: 30 cm diameter, 18 cm long) or the CT of a physical phantom,
with the isocentre on the chamber position and the gantry / couch as planned
or collapsed to 0.  Written: ``CT/`` (built-in phantoms), ``RTPLAN.dcm``,
``RTDOSE.dcm`` (one fraction, <= 2 mm grid), ``calculated_plane.csv`` (the dose
plane at the detector) and ``verification.json`` (chamber dose averaged over
the chamber's sensitive volume, and at its centre).  With ``--measured`` and /
or ``--measured-point-gy`` the comparison of ``sbrtplan qa-compare`` follows.
With ``--cohort LIST.csv`` every plan of the list is verified (and compared
where the list names measurements) and ``qa_summary.csv`` / ``.json`` give the
pass rates.  With ``--plan-dir`` (a plan output folder of ``sbrtplan plan`` or
``demo``) the plan is its ``RTPLAN.dcm``, the outputs go to ``PLAN_DIR/qa/``
and the QA page (verdict, planes, gamma map, profiles) is added to its
``report.html``; ``--report FILE`` adds it to another report.
"""

from __future__ import annotations

from ..errors import InputError


def parse_vector(text: str | None, n: int, option: str) -> tuple[float, ...] | None:
    """``'1,2,3'`` -> (1.0, 2.0, 3.0) with a one-line error naming the option."""
    if text is None:
        return None
    import math

    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise InputError(f"{option}: {text!r}; expected {n} comma-separated numbers in mm")
    return vals


def add_measurement_arguments(p) -> None:
    p.add_argument("--measured", help="measured dose plane: PTW .mcc (2D array), CSV grid or RTDOSE")
    p.add_argument("--measured-format", default="auto", choices=["auto", "mcc", "csv", "rtdose"],
                   help="format of --measured (default: detected from the content)")
    p.add_argument("--measured-point-gy", type=float, help="measured chamber dose in Gy (one fraction)")
    p.add_argument("--shift-mm", help="manual registration correction DU,DV (mm) added to the measured "
                                      "plane's coordinates (u, v: x, z for a coronal plane)")
    p.add_argument("--criteria", help="QA criteria YAML (default: the shipped qa_criteria.yaml)")
    p.add_argument("--report", help="plan report.html to which the QA page is added (replacing an earlier one)")


def register(sub) -> None:
    p = sub.add_parser("qa-plan", help="verification plan of an RTPLAN on a QA phantom (+ measured comparison)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rtplan", help="the patient RTPLAN")
    src.add_argument("--cohort", help="CSV list: name,rtplan[,measured,measured_point_gy,shift_u_mm,shift_v_mm]")
    src.add_argument("--plan-dir", help="a plan output folder: its RTPLAN.dcm is verified, the outputs go to "
                                        "PLAN_DIR/qa (unless --out) and the QA page is added to its report.html")
    p.add_argument("--phantom", default="qa_slab", help="qa_slab (default), qa_cylinder, or a phantom CT folder")
    p.add_argument("--out", help="output folder (required, except with --plan-dir: PLAN_DIR/qa)")
    p.add_argument("--gantry", choices=["planned", "zero"], default="planned",
                   help="gantry as planned or collapsed to 0")
    p.add_argument("--couch", choices=["planned", "zero"], default="planned", help="couch as planned or collapsed to 0")
    p.add_argument("--grid-mm", type=float, default=None, help="dose grid spacing in mm (default and maximum 2)")
    p.add_argument("--chamber", default=None, help="chamber model of the criteria file (default pinpoint3d)")
    p.add_argument("--reference-point", help="chamber centre X,Y,Z in mm in the phantom's coordinates "
                                             "(default: the built-in phantom's, or the centre of a phantom CT)")
    p.add_argument("--plane", default=None, choices=["coronal", "axial", "sagittal"],
                   help="detector plane orientation (default: the phantom's, coronal)")
    p.add_argument("--plane-offset-mm", type=float, default=0.0,
                   help="detector plane offset from the reference point along its normal (mm)")
    p.add_argument("--no-ct", action="store_true", help="do not write the phantom CT series")
    p.add_argument("--machine", default=None, help="beam model: shipped name or a .yaml/.json model file")
    add_measurement_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..dose_engine import load_beam_model
    from ..io import read_rtplan
    from ..qa import (AxisMode, compare_measurement, load_criteria, load_qa_phantom, read_measured_plane,
                      read_qa_list, run_qa_batch, verify_on_phantom, write_batch_summary, write_comparison,
                      write_verification)
    from ._common import StageBar
    from ._validate import check_output_dir

    crit = load_criteria(args.criteria)
    ref = parse_vector(args.reference_point, 3, "--reference-point")
    shift = parse_vector(args.shift_mm, 2, "--shift-mm") or (0.0, 0.0)
    model = load_beam_model(args.machine) if args.machine else None
    gantry, couch = AxisMode(args.gantry), AxisMode(args.couch)
    report = Path(args.report) if args.report else None
    if args.plan_dir:
        args.rtplan, report, default_out = plan_dir_inputs(args.plan_dir, report)
        args.out = args.out or str(default_out)
    if not args.out:
        raise InputError("--out: required with --rtplan and --cohort (the output folder)")
    check_output_dir(args.out)
    out = Path(args.out)
    if report is not None and not report.is_file():
        raise InputError(f"--report {report}: no such plan report")
    if args.cohort:
        if report is not None:
            raise InputError("--report applies to one plan; with --cohort each plan's QA page is its "
                             "OUT/<name>/qa_report.html")
        if args.measured or args.measured_point_gy is not None or args.shift_mm:
            raise InputError("--measured, --measured-point-gy and --shift-mm apply to one plan; with --cohort give "
                             "them per plan in the list (columns measured, measured_point_gy, shift_u_mm, shift_v_mm)")
        entries = read_qa_list(args.cohort)
        phantom = load_qa_phantom(args.phantom, grid_mm=args.grid_mm, reference_point_mm=ref, criteria=crit)
        with StageBar("qa batch", len(entries)) as bar:
            rows = run_qa_batch(entries, phantom, out, gantry=gantry, couch=couch, chamber=args.chamber,
                                criteria=crit, write_ct=False, model=model,
                                progress=lambda d, t: bar(f"{d}/{t} plans", d, t))
        stats = write_batch_summary(rows, out)
        for r in rows:
            print(f"{r['name']}: {r['verdict']}" + (f" ({r['error']})" if r["error"] else "")
                  + (f", point {r['point_diff_pct']:+.2f} %" if r["point_diff_pct"] is not None else "")
                  + (f", gamma 2%/2mm {r['gamma_2pct_2mm_global']:.1f} %" if r["gamma_2pct_2mm_global"] is not None
                     else ""))
        share = ("no plan fully measured" if stats["plans_passing_pct"] is None
                 else f"{stats['plans_passing_pct']:g} % of the fully measured plans pass")
        counts = ", ".join(f"{k} {v}" for k, v in stats["by_verdict"].items() if v)
        print(f"{stats['n_plans']} plans: {counts}; {share}; summary in {out / 'qa_summary.csv'}")
        return 0
    # one plan: check everything the user gave before the dose is computed
    beam_set = read_rtplan(args.rtplan)  # refuses wedges, blocks, electrons... naming the beam
    from ..dose_engine import default_beam_model
    from ..io.validate import check_beams_for_model
    from ..qa import check_plan_mu

    check_plan_mu(beam_set, args.rtplan)
    check_beams_for_model(beam_set, model or default_beam_model(), f"--rtplan {args.rtplan}")  # its energy
    if args.measured and not Path(args.measured).is_file():
        raise InputError(f"--measured: no such file: {args.measured}")
    with StageBar("qa-plan", 4) as bar:
        bar("phantom", 0, 4)
        phantom = load_qa_phantom(args.phantom, grid_mm=args.grid_mm, reference_point_mm=ref, criteria=crit)
        bar("dose", 1, 4)
        res = verify_on_phantom(phantom, beam_set, gantry=gantry, couch=couch, chamber=args.chamber,
                                plane_orientation=args.plane, plane_offset_mm=args.plane_offset_mm, criteria=crit,
                                model=model, source=args.rtplan)
        bar("write", 2, 4)
        summary = write_verification(res, out, write_ct=not args.no_ct, source_rtplan=args.rtplan)
        comparison = None
        if args.measured or args.measured_point_gy is not None or report is not None:
            bar("compare", 3, 4)
            measured = (read_measured_plane(args.measured, fmt=args.measured_format,
                                            reference_point_mm=res.reference_point_mm,
                                            orientation=res.plane.orientation, offset_mm=res.plane.offset_mm)
                        if args.measured else None)
            comparison = compare_measurement(res.plane, measured, calculated_point_gy=res.chamber_dose_gy,
                                             measured_point_gy=args.measured_point_gy, shift_mm=shift, criteria=crit)
            write_comparison(comparison, out, verification=summary, measured=measured, calculated=res.plane,
                             report=report)
    ch = summary["chamber"]
    print(f"verification of {args.rtplan} on {phantom.name}: {summary['n_beams']} beams, "
          f"{summary['mu_per_fraction']:.1f} MU; chamber ({res.chamber.label}) {ch['volume_averaged_dose_gy']:.4f} Gy "
          f"(centre {ch['centre_dose_gy']:.4f} Gy); written to {out}")
    if comparison is not None:
        print(format_comparison(comparison))
    if report is not None:
        print(f"QA page added to {report}")
    return 0


def plan_dir_inputs(plan_dir: str, report):
    """(RTPLAN, report, default output folder) of a plan output folder, with one-line errors."""
    from pathlib import Path

    d = Path(plan_dir)
    if not d.is_dir():
        raise InputError(f"--plan-dir {d}: no such folder")
    rtplan = d / "RTPLAN.dcm"
    if not rtplan.is_file():
        raise InputError(f"--plan-dir {d}: no RTPLAN.dcm (expected the output folder of 'sbrtplan plan' or 'demo')")
    if report is None:
        report = d / "report.html"
        if not report.is_file():
            raise InputError(f"--plan-dir {d}: no report.html to add the QA page to (give --report FILE)")
    return str(rtplan), report, d / "qa"


def format_comparison(comparison) -> str:
    lines = [f"QA verdict: {comparison.verdict.value}"]
    if comparison.point is not None:
        p = comparison.point
        lines.append(f"  point dose: measured {p.measured_gy:.4f} Gy, calculated {p.calculated_gy:.4f} Gy, "
                     f"difference {p.diff_pct:+.2f} % (tolerance {p.tolerance_pct:g} %)")
    for g in comparison.gammas:
        lines.append(f"  gamma {g.criterion.label}: {g.pass_rate_pct:.1f} % of {g.n_evaluated} points pass")
    return "\n".join(lines)

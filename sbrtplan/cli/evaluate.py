"""``sbrtplan evaluate``: evaluate an RTDOSE against a protocol (compliance table, metrics.json)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate an RTDOSE + RTSTRUCT against a protocol",
                       description="Rasterise the RTSTRUCT onto the RTDOSE grid (sub-voxel occupancy), compute DVH "
                                   "metrics, CI/GI/R50/D2cm and every goal of the protocol for the scheme; print a "
                                   "compliance table and optionally write metrics.json.")
    p.add_argument("--rtdose", required=True, help="RTDOSE file (total dose of the course)")
    p.add_argument("--rtstruct", required=True, help="RTSTRUCT file")
    p.add_argument("--ct", help="CT folder (optional: checks that the dose grid lies on the CT)")
    p.add_argument("--protocol", required=True, help="protocol name (see 'sbrtplan protocols') or YAML file")
    p.add_argument("--scheme", required=True, help="fractionation scheme TOTAL/FRACTIONS, e.g. 27/3")
    p.add_argument("--target", help="prescription target structure (needed when several PTVs exist)")
    p.add_argument("--condition", action="append", default=[], metavar="NAME",
                   help="declare a protocol condition (e.g. renal_cell); repeatable")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="rename a structure before TG-263 matching (e.g. --map 'cord prv=SpinalCord_PRV02'); repeatable")
    p.add_argument("--prior-rtdose", help="RTDOSE of a prior course (re-irradiation check, Michigan table)")
    p.add_argument("--prior-fractions", type=int, help="number of fractions of the prior course")
    p.add_argument("--interval-months", type=float, help="months since the prior course")
    p.add_argument("--json", metavar="OUT", help="write metrics.json here")
    p.add_argument("--sources", action="store_true", help="show the source of every goal")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from ..errors import InputError
    from ..evaluation import (PriorCourse, evaluate_plan, format_report, parse_name_map, write_metrics)
    from ..protocols import load_protocol

    try:
        from ..io import read_rtdose, read_rtstruct
    except ImportError as exc:  # the DICOM readers are part of sbrtplan.io
        raise InputError(f"the DICOM readers (sbrtplan.io) are not available: {exc}") from None

    if args.prior_rtdose and (args.prior_fractions is None or args.interval_months is None):
        raise InputError("--prior-rtdose needs --prior-fractions and --interval-months")
    if (args.prior_fractions is not None or args.interval_months is not None) and not args.prior_rtdose:
        raise InputError("--prior-fractions / --interval-months need --prior-rtdose")
    protocol = load_protocol(args.protocol)
    scheme = protocol.scheme(args.scheme)
    name_map = parse_name_map(args.map)

    dose = read_rtdose(args.rtdose)
    structures = read_rtstruct(args.rtstruct, dose.grid, occupancy=True)
    if args.ct:
        from ..io import read_ct_series

        ct = read_ct_series(args.ct)
        ct_grid = ct.grid if hasattr(ct, "grid") else ct[0]
        lo, hi = ct_grid.bounds_mm()
        dlo, dhi = dose.grid.bounds_mm()
        if (dlo < lo - 1.0).any() or (dhi > hi + 1.0).any():
            print(f"sbrtplan evaluate: warning: the dose grid extends beyond the CT ({args.ct})", file=sys.stderr)
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
    print(format_report(report, show_sources=args.sources))
    if args.json:
        write_metrics(args.json, report)
        print(f"metrics written to {args.json}")
    return 0

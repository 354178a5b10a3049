"""``sbrtplan compare-fractions``: one plan per fractionation scheme on the same case."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_plan_arguments

    p = sub.add_parser("compare-fractions", help="plan one case with several schemes and compare BED/EQD2 and goals",
                       description="Make one automatic plan per scheme and write a table, a CSV and a PNG of target "
                                   "BED10/EQD2, organ EQD2, goals passed/failed and MU.")
    add_plan_arguments(p)
    p.add_argument("--schemes", required=True, help="comma-separated schemes, e.g. 24/1,27/3,30/3,35/5,30/5,50/10")
    p.add_argument("--out", default="sbrtplan-fractions", help="output folder (default ./sbrtplan-fractions)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from .._log import atomic_output
    from ..io import load_case
    from ..report.fractions import fraction_comparison, plot_fraction_comparison, rows_from_plan
    from ..workflow import plan, write_plan
    from .._staging import staged_dir
    from ..errors import InputError
    from ..protocols import load_protocol
    from ._common import StageBar, plan_kwargs
    from ._validate import check_output_dir, check_plan_memory, check_plan_options

    check_plan_options(args)
    out = check_output_dir(args.out)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if not schemes:
        raise InputError(f"--schemes {args.schemes!r}: expected comma-separated TOTAL/FRACTIONS, e.g. 27/3,30/5")
    protocol = load_protocol(args.protocol)
    for scheme in schemes:  # every scheme refused before the case is read and any folder is made
        protocol.scheme(scheme)
    case = load_case(args.case, rtstruct=args.rtstruct)
    check_plan_memory(case, args)
    rows = []
    plans = []
    for scheme in schemes:
        with StageBar(f"plan {scheme}", 8) as bar:
            p = plan(case, args.protocol, scheme, args.technique, args.beams, progress=bar, **plan_kwargs(args))
        plans.append((scheme, p))
        rows.append(rows_from_plan(p))
    table, csv_text = fraction_comparison(rows)
    with staged_dir(out) as stage:  # every plan folder, the table and the figure, or nothing
        for scheme, p in plans:
            write_plan(p, stage / scheme.replace("/", "-"))
        with atomic_output(stage / "fractions.csv") as tmp:
            Path(tmp).write_text(csv_text)
        plot_fraction_comparison(rows, stage / "fractions.png")
    print(table)
    print(f"written: {out / 'fractions.csv'}, {out / 'fractions.png'} and one plan folder per scheme")
    return 0

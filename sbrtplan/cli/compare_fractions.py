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
    from ._common import StageBar, plan_kwargs

    case = load_case(args.case, rtstruct=args.rtstruct)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for scheme in schemes:
        with StageBar(f"plan {scheme}", 8) as bar:
            p = plan(case, args.protocol, scheme, args.technique, args.beams, progress=bar, **plan_kwargs(args))
        write_plan(p, out / scheme.replace("/", "-"))
        rows.append(rows_from_plan(p))
    table, csv_text = fraction_comparison(rows)
    with atomic_output(out / "fractions.csv") as tmp:
        Path(tmp).write_text(csv_text)
    plot_fraction_comparison(rows, out / "fractions.png")
    print(table)
    print(f"written: {out / 'fractions.csv'}, {out / 'fractions.png'} and one plan folder per scheme")
    return 0

"""``sbrtplan compare-techniques``: VMAT and non-coplanar IMRT plans of one case, side by side."""

from __future__ import annotations

#: Sections printed on the terminal; the CSV holds every section (all structures too).
PRINTED_SECTIONS = ("prescription", "target", "goal", "delivery", "summary")


def register(sub) -> None:
    from ._common import add_plan_arguments

    p = sub.add_parser("compare-techniques", help="plan one case with VMAT and with non-coplanar IMRT and compare",
                       description="Make a VMAT plan (two arcs) and a 5-9 beam non-coplanar IMRT plan of the same "
                                   "case, protocol and scheme, write both plan folders, and print / write a "
                                   "side-by-side table: coverage, CI, GI, R50%, D2cm, organ doses and goals, total "
                                   "MU and estimated delivery time.")
    add_plan_arguments(p, technique=False)
    p.add_argument("--scheme", required=True, help="dose/fractions, e.g. 27/3")
    p.add_argument("--out", default="sbrtplan-techniques", help="output folder (default ./sbrtplan-techniques)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from .._log import atomic_output
    from ..evaluation import compare_reports
    from ..io import load_case
    from ..workflow import plan, write_plan
    from ._common import StageBar, plan_kwargs, print_summary

    case = load_case(args.case, rtstruct=args.rtstruct)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plans = {}
    for technique in ("vmat", "imrt"):
        with StageBar(f"plan {technique.upper()}", 8) as bar:
            p = plan(case, args.protocol, args.scheme, technique, args.beams, progress=bar, **plan_kwargs(args))
        write_plan(p, out / technique)
        print_summary(p, out / technique)
        plans[technique] = p
    n_beams = len(plans["imrt"].beam_set.beams)
    table = compare_reports(plans["vmat"].metrics, plans["imrt"].metrics, labels=("VMAT", f"IMRT-{n_beams}"))
    text = table.format(PRINTED_SECTIONS)
    with atomic_output(out / "techniques.txt") as tmp:
        Path(tmp).write_text(table.format() + "\n", encoding="utf-8")
    table.to_csv(out / "techniques.csv")
    print()
    print(text)
    print(f"\nwritten: {out / 'techniques.txt'}, {out / 'techniques.csv'}, {out / 'vmat'}, {out / 'imrt'}")
    return 0

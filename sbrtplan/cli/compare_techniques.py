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
    from .._staging import staged_dir
    from ..protocols import load_protocol
    from ._common import StageBar, plan_kwargs, print_summary
    from ._validate import check_output_dir, check_plan_memory, check_plan_options

    check_plan_options(args)  # --beams: the IMRT plan's beam count (VMAT uses the site's arcs)
    out = check_output_dir(args.out)
    load_protocol(args.protocol).scheme(args.scheme)
    case = load_case(args.case, rtstruct=args.rtstruct)
    check_plan_memory(case, args, techniques=("vmat", "imrt"))  # the larger of the two plans
    plans = {}
    for technique in ("vmat", "imrt"):
        with StageBar(f"plan {technique.upper()}", 8) as bar:
            p = plan(case, args.protocol, args.scheme, technique, args.beams if technique == "imrt" else None,
                     progress=bar, **plan_kwargs(args))
        print_summary(p, out / technique)
        plans[technique] = p
    n_beams = len(plans["imrt"].beam_set.beams)
    table = compare_reports(plans["vmat"].metrics, plans["imrt"].metrics, labels=("VMAT", f"IMRT-{n_beams}"))
    text = table.format(PRINTED_SECTIONS)
    with staged_dir(out) as stage:  # both plan folders and the tables, or nothing
        for technique, p in plans.items():
            write_plan(p, stage / technique)
        with atomic_output(stage / "techniques.txt") as tmp:
            Path(tmp).write_text(table.format() + "\n", encoding="utf-8")
        table.to_csv(stage / "techniques.csv")
    print()
    print(text)
    print(f"\nwritten: {out / 'techniques.txt'}, {out / 'techniques.csv'}, {out / 'vmat'}, {out / 'imrt'}")
    return 0

"""``sbrtplan protocols [NAME] [--scheme S]``: list protocol templates, schemes and goals."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("protocols", help="list protocol templates and their schemes, or one protocol's goals",
                       description="Without NAME: list the protocol templates shipped with sbrtplan and their "
                                   "fractionation schemes. With NAME (or a YAML file): validate it and print its "
                                   "goals for a scheme (priority, stage, source).")
    p.add_argument("name", nargs="?", help="protocol name (e.g. bone_spine) or path to a YAML template")
    p.add_argument("--scheme", help="fractionation scheme TOTAL/FRACTIONS, e.g. 27/3 (default: the first listed)")
    p.add_argument("--condition", action="append", default=[], metavar="NAME",
                   help="declare a protocol condition (e.g. renal_cell); repeatable")
    p.add_argument("--refuse-conversion", action="store_true",
                   help="refuse fraction numbers without a limit table instead of converting through EQD2")
    p.set_defaults(func=run)


def _goal_rows(goals):
    rows = []
    for g in goals:
        where = g.structure + ("".join(f" - {m}" for m in g.minus)) + (" (PRV)" if g.apply_to.value == "prv" else "")
        rows.append([where, g.metric_label, g.limit_label, f"{int(g.priority)} {g.priority.name.lower()}",
                     g.stage.value, "yes" if g.mandatory else "no",
                     g.source + (f" [converted from {g.converted_from_fractions} fx]" if g.converted_from_fractions
                                 else "")])
    return rows


def run(args) -> int:
    from ..evaluation.report import _table
    from ..protocols import ConversionPolicy, list_protocols, load_protocol

    if not args.name:
        for name in list_protocols():
            print(load_protocol(name).summary())
            print()
        return 0
    proto = load_protocol(args.name)
    print(proto.summary())
    if proto.schemes:
        scheme = args.scheme or proto.schemes[0].scheme
    elif args.scheme:
        scheme = args.scheme
    else:
        print("(give --scheme to list the goals)")
        return 0
    scheme = proto.scheme(scheme)
    conv = ConversionPolicy.REFUSE if args.refuse_conversion else None
    goals = proto.goals_for(scheme, conditions=args.condition, conversion=conv)
    print(f"\nGoals for {scheme} ({len(goals)}):")
    print("\n".join(_table(["structure", "metric", "limit", "priority", "stage", "mandatory", "source"],
                           _goal_rows(goals), set())))
    roles = [f"  {k}: {', '.join(v.names + tuple(p + '*' for p in v.prefixes))}"
             + (f" (PRV margin {v.prv_margin_mm:g} mm)" if v.prv_margin_mm else "") for k, v in proto.roles.items()]
    print("\nStructure roles:")
    print("\n".join(roles))
    for n in proto.notes:
        print(f"note: {n}")
    return 0

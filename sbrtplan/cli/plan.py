"""``sbrtplan plan``: an automatic plan for a case, written with all its outputs."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_mat_format_argument, add_plan_arguments

    p = sub.add_parser("plan", help="make an automatic SBRT plan and write RTPLAN/RTDOSE/RTSTRUCT/report",
                       description="Build the planning structures, place beams or arcs, compute the dose-influence "
                                   "matrix, optimise the protocol's goals by priority, make deliverable MLC "
                                   "apertures, recompute the dose from them and evaluate it.")
    add_plan_arguments(p, multi_target=True)
    p.add_argument("--scheme", help="fractionation TOTAL/FRACTIONS, e.g. 27/3 (required unless every --target "
                                    "carries its prescription)")
    p.add_argument("--out", required=True, help="output folder")
    add_mat_format_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import load_case
    from ..workflow import plan, write_plan
    from ..workflow.precompile import start_background_compile
    from ._common import StageBar, plan_kwargs, print_summary
    from ._validate import check_output_dir, check_plan_memory, check_plan_options

    from ..protocols import load_protocol

    from ..errors import InputError
    from ..workflow.targets import course, target_structures

    check_plan_options(args)
    check_output_dir(args.out)
    protocol = load_protocol(args.protocol)
    kwargs = plan_kwargs(args)
    targets = kwargs.get("targets", ())
    if args.scheme is None and not targets:
        raise InputError("--scheme is required (or every --target as NAME:TOTAL/FRACTIONS)")
    # refuse a bad protocol, scheme, target list or beam model before loading the case
    course(protocol, args.scheme, kwargs.get("target"), targets)
    case = load_case(args.case, rtstruct=args.rtstruct)
    if targets:
        target_structures(case.structures, targets)   # every target contoured, a target role, once
    check_plan_memory(case, args)
    start_background_compile()     # the late stages' kernels, compiled beside the plan's start
    with StageBar("plan", 8) as bar:
        p = plan(case, protocol, args.scheme, args.technique, args.beams, progress=bar, **kwargs)
    with StageBar("write", 7) as wbar:
        write_plan(p, args.out, mat_format=args.mat_format, progress=wbar)
    print_summary(p, args.out)
    return 0

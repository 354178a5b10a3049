"""``sbrtplan demo``: the main job on the built-in spine phantom."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_mat_format_argument

    p = sub.add_parser("demo", help="plan the built-in spine phantom end to end (VMAT, 27 Gy / 3 fx)",
                       description="Plan the built-in spine phantom with the bone_spine protocol, 27 Gy in 3 "
                                   "fractions, and write RTPLAN, RTDOSE, RTSTRUCT, CT, a matRad .mat, report.html "
                                   "and metrics.json into the output folder.")
    p.add_argument("--out", default="sbrtplan-demo", help="output folder (default ./sbrtplan-demo)")
    p.add_argument("--technique", choices=["vmat", "imrt"], default="vmat", help="vmat (default) or imrt")
    p.add_argument("--scheme", default="27/3", help="fractionation (default 27/3)")
    p.add_argument("--phantom", default="spine", help="built-in phantom (default spine)")
    p.add_argument("--max-memory-gib", type=float, default=None,
                   help="refuse the job when its estimated memory exceeds this (default: the available memory)")
    from ._common import add_recipe_argument

    add_recipe_argument(p)
    add_mat_format_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..phantoms import make_phantom
    from ..workflow import plan, write_plan
    from ..workflow.precompile import start_background_compile
    from ._common import StageBar, print_summary, recipe_kwargs

    from ._validate import check_max_memory, check_output_dir, check_plan_memory

    check_max_memory(args)
    check_output_dir(args.out)
    recipe = recipe_kwargs(args)   # a bad recipe is refused before the phantom is built
    protocol = {"spine": "bone_spine", "liver": "liver_hcc"}.get(args.phantom, "bone_spine")
    case = make_phantom(args.phantom)
    check_plan_memory(case, args)  # the dose grid and the influence matrix, before anything is built
    start_background_compile()     # the late stages' kernels, compiled beside the plan's start
    print(case.summary())
    with StageBar("plan", 8) as bar:
        # The phantom holds the organs near its target; far ones the protocol names (brainstem,
        # cauda, plexus, skin) are not modelled, so their goals are reported as not evaluable.
        p = plan(case, protocol, args.scheme, args.technique, progress=bar, allow_missing=True, **recipe)
    with StageBar("write", 7) as wbar:
        write_plan(p, args.out, mat_format=args.mat_format, progress=wbar)
    print_summary(p, args.out)
    return 0

"""Shared pieces of the planning commands: case arguments, progress bars, the closing summary."""

from __future__ import annotations

import sys


class StageBar:
    """A tqdm bar over the stages of a long job: ``bar(stage, done, total)``."""

    def __init__(self, desc: str, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="stage", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}")

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.set_postfix_str(stage)
        self.bar.update(max(done - self.bar.n, 0))

    def close(self, completed: bool = True) -> None:
        if completed:
            self.bar.set_postfix_str("done")
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()

    def __enter__(self) -> "StageBar":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # a failed job leaves its bar where it stopped; the error is printed after it
        self.close(completed=exc_type is None)


def add_plan_arguments(p, *, case_required: bool = True, technique: bool = True,
                       multi_target: bool = False) -> None:
    p.add_argument("--case", required=case_required,
                   help="DICOM folder (CT + RTSTRUCT), matRad .mat, OpenKBP patient folder or phantom:NAME")
    p.add_argument("--rtstruct", help="RTSTRUCT file when the folder holds several or none")
    p.add_argument("--protocol", default="bone_spine", help="protocol (see 'sbrtplan protocols'; default bone_spine)")
    if multi_target:
        p.add_argument("--target", action="append", default=None, metavar="NAME[:TOTAL/FRACTIONS]",
                       help="prescription target when several PTVs exist; repeat as NAME:TOTAL/FRACTIONS to plan "
                            "several targets in one plan, each at its own prescription (--target PTV1:27/3 "
                            "--target PTV2:24/3)")
        p.add_argument("--targets", metavar="FILE",
                       help="YAML of the targets and their prescriptions ({PTV1: 27/3, PTV2: 24/3})")
    else:
        p.add_argument("--target", help="prescription target when several PTVs exist")
    if technique:
        p.add_argument("--technique", choices=["vmat", "imrt"], default="vmat", help="vmat (default) or imrt")
    p.add_argument("--beams", type=int, help="IMRT: number of beams, 5-9 (default 7, chosen automatically)")
    p.add_argument("--template-beams", action="store_true", help="IMRT: use the site template instead of selection")
    p.add_argument("--grid-mm", type=float, default=2.0, help="dose grid spacing in mm (default 2; <= 2 for SBRT)")
    p.add_argument("--condition", action="append", default=[], metavar="NAME",
                   help="declare a protocol condition (e.g. renal_cell); repeatable")
    p.add_argument("--allow-missing", action="store_true",
                   help="plan even if organs the protocol names are missing (their goals are reported as not evaluable)")
    p.add_argument("--max-memory-gib", type=float, default=None,
                   help="refuse the job when its estimated memory exceeds this (default: the available memory)")
    p.add_argument("--machine", default=None,
                   help="beam model: shipped name (generic-6MV-sf, the default, commissioned on the scans, "
                        "small fields and a lung slab; generic-6MV, on the scans only) or a .yaml/.json model file")
    add_recipe_argument(p)


def add_recipe_argument(p) -> None:
    """``--recipe FILE``: the planning recipe (tuning values; see :mod:`sbrtplan.workflow.recipe`)."""
    p.add_argument("--recipe", default=None, metavar="FILE",
                   help="planning recipe YAML (weights, margins, iterations, time budgets; keys left out keep "
                        "the shipped default's values); its name, version and hash go into metrics.json")


def recipe_kwargs(args) -> dict:
    """``{"recipe": PlanningRecipe}`` when ``--recipe`` was given (checked here, before any planning)."""
    path = getattr(args, "recipe", None)
    if path is None:
        return {}
    from ..workflow import load_recipe

    return {"recipe": load_recipe(path)}


def add_mat_format_argument(p) -> None:
    """``--mat-format``: the MATLAB format of a matRad file (see :func:`sbrtplan.io.write_matrad`)."""
    p.add_argument("--mat-format", choices=["auto", "v5", "v7.3"], default="auto",
                   help="matRad file format: auto (v5 when it fits, as matRad/pyRadPlan read; default), v5, v7.3")


def target_kwargs(args) -> dict:
    """``target`` or ``targets`` of a plan from ``--target`` (one name, or NAME:TOTAL/FRACTIONS, repeatable)
    and ``--targets FILE``; checked here, before any planning."""
    from ..errors import InputError
    from ..workflow.targets import check_targets, load_targets_file, parse_target_arg

    given = getattr(args, "target", None)
    path = getattr(args, "targets", None)
    if path is not None:
        if given:
            raise InputError("--targets and --target both name targets; give them in one place")
        return {"targets": load_targets_file(path)}
    if not given or isinstance(given, str):
        return {"target": given or None}
    with_rx = [":" in g for g in given]
    if len(given) == 1 and not with_rx[0]:
        return {"target": given[0]}
    if not all(with_rx):
        plain = next(g for g, w in zip(given, with_rx) if not w)
        raise InputError(f"--target {plain!r}: several targets each need their prescription, expected "
                         "NAME:TOTAL/FRACTIONS (e.g. --target PTV1:27/3 --target PTV2:24/3)")
    return {"targets": check_targets([parse_target_arg(g) for g in given])}


def plan_kwargs(args) -> dict:
    from ..dose_engine import load_beam_model

    model = load_beam_model(args.machine) if getattr(args, "machine", None) else None
    return dict(grid_mm=args.grid_mm, allow_missing=args.allow_missing,
                conditions=tuple(args.condition), select_beams=not args.template_beams, model=model,
                **target_kwargs(args), **recipe_kwargs(args))


def print_summary(p, out_dir=None) -> None:
    from ..workflow import summary_line

    s = summary_line(p)
    m = p.metrics
    tgt = p.report.target
    print(f"\n{p.case.name}: {p.protocol_name} {p.scheme}, {p.options.technique.value.upper()}, "
          f"{len(p.beam_set.beams)} {'arcs' if p.options.technique.value == 'vmat' else 'beams'}, "
          f"{s['total_mu']:.0f} MU/fraction")

    def f(v, nd=2):
        return "n/a" if v is None else f"{v:.{nd}f}"

    print(f"  {tgt}: V100% {f(s['ptv_V100_pct'], 1)}%  D95 {f(s['ptv_D95_gy'])} Gy  CI(Paddick) {f(s['CI_paddick'])}"
          f"  GI {f(s['GI'])}  R50% {f(s['R50'])}  D2cm {f(s['D2cm_pct'], 1)}%  RTOG: {s['rtog_class']}")
    for t in ((m.get("prescription") or {}).get("targets") or [])[1:]:   # several targets: the others
        x = m["targets"].get(t["name"], {})
        print(f"  {t['name']} ({t['dose_gy']:g} Gy): V100% {f(x.get('V100_pct'), 1)}%  D95 {f(x.get('D95_gy'))} Gy  "
              f"CI(Paddick) {f(x.get('CI_paddick'))}  GI {f(x.get('GI'))}  R50% {f(x.get('R50'))}  "
              f"D2cm {f(x.get('D2cm_pct'), 1)}%  RTOG: {x.get('rtog_class')}")
    print(f"  goals: {s['goals_passed']} passed, {s['goals_failed']} failed "
          f"({s['hard_failures']} hard organ-limit failures); acceptable: {m['summary'].get('acceptable')}")
    for h in m["summary"].get("hard_failures", []):
        print(f"    FAILED (hard): {h}")
    qa = p.qa
    if qa:
        dl = qa.get("deliverability", {})
        print(f"  QA: deliverable {'yes' if dl.get('passed') else 'NO'}; delivery time "
              f"{qa.get('delivery_time_s', {}).get('total', float('nan')):.0f} s", end="")
        mc = qa.get("mu_check")
        if isinstance(mc, dict) and "passed" in mc:
            print(f"; independent MU check {'passed' if mc['passed'] else 'FAILED'}", end="")
        print()
    print(f"  time: {sum(v for k, v in p.timings_s.items() if k in ('dose grid', 'planning structures', 'optimisation problem', 'final dose', 'normalisation', 'evaluation', 'QA') or k.startswith(('influence', 'fluence', 'leaf', 'segment', 'beam selection', 'vmat'))):.0f} s of planning")
    if out_dir is not None:
        print(f"  outputs: {out_dir}")

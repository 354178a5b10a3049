"""``sbrtplan demo``: the main job on the built-in spine phantom."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="plan the built-in spine phantom end to end",
                       description="Run the main job on the built-in spine phantom.")
    p.add_argument("--out", default="sbrtplan-demo", help="output folder (default ./sbrtplan-demo)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..phantoms import make_phantom

    case = make_phantom("spine")
    print(case.summary())
    return 0

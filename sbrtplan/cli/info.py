"""``sbrtplan info PATH|phantom:NAME``: grid, frame of reference and structure volumes."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="print a case's grid, frame of reference and structure volumes",
                       description="Load a case (DICOM folder, matRad .mat, OpenKBP folder or phantom:NAME) "
                                   "and print its grid, frame of reference and each structure with its volume.")
    p.add_argument("case", help="DICOM folder, matRad .mat file, OpenKBP patient folder or phantom:NAME")
    p.add_argument("--rtstruct", help="RTSTRUCT file when the folder holds several")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import load_case

    case = load_case(args.case, rtstruct=args.rtstruct)
    print(case.summary())
    return 0

"""``sbrtplan mucheck``: independent MU / dose check of every beam of an RTPLAN.

Exit status: 0 when every beam is within the tolerance, 1 when a beam is
outside it, 2 on bad input (as every command).
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("mucheck", help="independent MU check of each beam of an RTPLAN (Clarkson, +-3 %%)",
                       description="Compare, per beam or arc, the main engine's dose at a reference point with an "
                                   "independent Clarkson sector-integration calculation on equivalent-path depth; "
                                   "flag differences outside the tolerance (default 3 %, the SBRT QA rule).")
    p.add_argument("--ct", required=True, help="CT folder")
    p.add_argument("--rtstruct", required=True, help="RTSTRUCT file")
    p.add_argument("--rtplan", required=True, help="RTPLAN file")
    p.add_argument("--point", help="reference point x,y,z in mm (DICOM patient coordinates; default: the isocentre)")
    p.add_argument("--tolerance", type=float, default=3.0, help="tolerance in percent (default 3)")
    p.add_argument("--model", default=None, help="beam model name or file (default: the shipped generic 6 MV)")
    p.add_argument("--out", help="write the check as JSON to this file")
    p.set_defaults(func=run)


def parse_point(text: str | None):
    """``"x,y,z"`` (mm) -> tuple of floats; None stays None."""
    from ..errors import InputError

    if text is None:
        return None
    parts = [s for s in str(text).replace(";", ",").split(",") if s.strip()]
    try:
        vals = tuple(float(s) for s in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(abs(v) < 1e5 for v in vals):
        raise InputError(f"--point must be three numbers x,y,z in mm (e.g. --point 0,-20.5,35), got {text!r}")
    return vals


def _load_case(ct: str, rtstruct: str):
    """CT + RTSTRUCT through sbrtplan.io (``load_case`` when the io API offers it)."""
    from .. import io
    from ..errors import InputError

    if hasattr(io, "load_case"):
        return io.load_case(ct, rtstruct=rtstruct)
    read_ct = getattr(io, "read_ct_series", None)
    read_rs = getattr(io, "read_rtstruct", None)
    if read_ct is None:  # io API still being assembled: use its modules directly
        try:
            from ..io.dicom_ct import read_ct_series as read_ct
            from ..io.rtstruct import read_rtstruct as read_rs
        except ImportError:
            raise InputError("this installation of sbrtplan has no DICOM CT reader (sbrtplan.io)") from None
    case = read_ct(ct)
    if read_rs is not None:
        for s in read_rs(rtstruct, case):
            case.add_structure(s, replace=True)
    return case


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from .._json import write_json
    from ..dose_engine import load_beam_model
    from ..dose_engine.mucheck import engine_point_dose, mu_check
    from ..errors import InputError

    point = parse_point(args.point)
    if not args.tolerance > 0:
        raise InputError(f"--tolerance must be a positive percentage, got {args.tolerance}")
    for flag, path in (("--ct", args.ct), ("--rtstruct", args.rtstruct), ("--rtplan", args.rtplan)):
        if not Path(path).exists():
            raise InputError(f"{flag} {path}: no such file or folder")
    from .. import io

    read_rtplan = getattr(io, "read_rtplan", None)
    if read_rtplan is None:
        raise InputError("this installation of sbrtplan has no RTPLAN reader (sbrtplan.io.read_rtplan)")
    from ..dose_engine import default_beam_model
    from ..io.validate import check_beams_for_model, check_isocentres_inside, check_same_patient
    from ._validate import check_output_file

    check_output_file(args.out, "--out")
    check_same_patient([(f"--ct {args.ct}", args.ct), (f"--rtstruct {args.rtstruct}", args.rtstruct),
                        (f"--rtplan {args.rtplan}", args.rtplan)])
    model = load_beam_model(args.model) if args.model else None
    beam_set = read_rtplan(args.rtplan)  # before the CT: a bad plan is refused in a second
    check_beams_for_model(beam_set, model or default_beam_model(), f"--rtplan {args.rtplan}")
    case = _load_case(args.ct, args.rtstruct)
    check_isocentres_inside(beam_set, case.grid, f"--rtplan {args.rtplan}", f"the CT of --ct {args.ct}")
    density, grid = case.density, case.grid

    def main(beam, p):
        return engine_point_dose(beam, density, grid, p, model=model)

    report = mu_check(beam_set, density, grid, main, point_mm=point, tolerance_pct=args.tolerance, model=model)
    p0 = np.asarray(report.rows[0].point_mm)
    where = []
    for s in case.targets() if hasattr(case, "targets") else []:
        idx = np.rint(grid.index_from_patient(p0)).astype(int)
        if np.all(idx >= 0) and np.all(idx < np.asarray(grid.shape)) and bool(s.mask[tuple(idx)]):
            where.append(s.name)
    print(f"independent MU check of {Path(args.rtplan).name}: {len(beam_set.beams)} beams, reference point "
          f"({p0[0]:.1f}, {p0[1]:.1f}, {p0[2]:.1f}) mm" + (f" in {', '.join(where)}" if where else ""))
    print(report.to_text())
    print("all beams within tolerance" if report.passed
          else f"{len(report.failed())} beam(s) outside +-{report.tolerance_pct:g} %")
    if args.out:
        doc = {"rtplan": str(args.rtplan), **report.as_dict()}
        write_json(Path(args.out), doc)
    return 0 if report.passed else 1

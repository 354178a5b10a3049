"""``sbrtplan recompute``: forward dose of an existing plan (any technique) with our engine, then evaluation."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("recompute", help="recompute the dose of an existing RTPLAN on its CT and evaluate it",
                       description="Read a CT series, RTSTRUCT and RTPLAN (static, step-and-shoot, sliding-window "
                                   "IMRT or VMAT), compute the dose from the MLC apertures with the heterogeneity-"
                                   "corrected pencil beam, write RTDOSE + metrics.json + report.html.")
    p.add_argument("--ct", required=True, help="CT folder")
    p.add_argument("--rtstruct", required=True, help="RTSTRUCT file")
    p.add_argument("--rtplan", required=True, help="RTPLAN file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--grid-mm", type=float, default=2.5, help="dose grid spacing in mm (default 2.5)")
    p.add_argument("--protocol", help="protocol for the compliance table (optional)")
    p.add_argument("--scheme", help="scheme TOTAL/FRACTIONS (default: from the RTPLAN's prescription)")
    p.add_argument("--target", help="prescription target structure")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..case import Dose, resample_case
    from ..dose_engine import forward_dose
    from ..evaluation import evaluate_plan, format_report
    from ..io import load_case, read_rtplan, write_rtdose
    from ..workflow.outputs import write_metrics_json
    from ._common import StageBar

    t0 = time.perf_counter()
    with StageBar("recompute", 5) as bar:
        bar("read", 0, 5)
        case = load_case(args.ct, rtstruct=args.rtstruct)
        beam_set = read_rtplan(args.rtplan)
        bar("dose grid", 1, 5)
        cg = resample_case(case, args.grid_mm, region=case.body, margin_mm=5.0)
        bar("dose", 2, 5)
        dose = Dose(cg.grid, forward_dose(cg.density, cg.grid, beam_set), description="sbrtplan recompute")
        bar("evaluate", 3, 5)
        scheme = args.scheme or (f"{beam_set.prescription_gy:g}/{beam_set.n_fractions}"
                                 if beam_set.prescription_gy else None)
        report = evaluate_plan(dose, cg.structures, args.protocol, scheme if args.protocol else None,
                               target=args.target, rx_gy=None if args.protocol else beam_set.prescription_gy or None)
        bar("write", 4, 5)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_rtdose(dose, cg.grid, out / "RTDOSE.dcm", case=case,
                     rtplan_uid=beam_set.beams[0].metadata.get("rtplan_uid"))
        metrics = report.as_dict()
        metrics["plan"] = {"source_rtplan": str(args.rtplan), "n_beams": len(beam_set.beams),
                           "total_mu_per_fraction": round(beam_set.total_mu_per_fraction, 1),
                           "n_fractions": beam_set.n_fractions, "seconds": round(time.perf_counter() - t0, 1)}
        write_metrics_json(out / "metrics.json", metrics)
    print(format_report(report))
    print(f"{len(beam_set.beams)} beams, {beam_set.total_mu_per_fraction:.0f} MU per fraction x {beam_set.n_fractions};"
          f" dose written to {out / 'RTDOSE.dcm'} ({time.perf_counter() - t0:.0f} s)")
    return 0

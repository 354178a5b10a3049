"""``sbrtplan tbi``: total-body irradiation plan at extended distance (standard 003, annex 2).

Exit status: 0 when every rule of the standard passes, 1 when the plan was made but a rule
fails (e.g. a lung block leaving the mean lung dose above 8 Gy), 2 on input the standard
forbids (distance, field size, spoiler, patient outline) or other bad input.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("tbi", help="total-body irradiation plan: midline dose per region, compensators, lung blocks",
                       description="Plan TBI at extended distance from a CT or phantom:tbi: separation and midline "
                                   "dose per body region from TMR, MU, compensators, lung blocks, 3D broad-beam dose, "
                                   "dose rate; writes metrics.json, compensator.csv, report.html and rtplan.dcm.")
    p.add_argument("--case", required=True, help="CT folder (with its RTSTRUCT) or phantom:tbi")
    p.add_argument("--rtstruct", help="RTSTRUCT file (when not in the CT folder)")
    p.add_argument("--rx", required=True, help="total dose / fractions, e.g. 12/6, 2/1, 13.2/8")
    p.add_argument("--technique", default="ap-pa", help="ap-pa (default) or lateral")
    p.add_argument("--distance-cm", type=float, default=400.0, help="source-to-midline distance (default 400 cm)")
    p.add_argument("--jaw-cm", type=float, help="square jaw opening at the SAD (default: the machine maximum)")
    p.add_argument("--spoiler-cm", type=float, help="beam spoiler thickness (default: the calibrated one)")
    p.add_argument("--lung-block-mm", type=float,
                   help="lung block thickness (default: designed for the mean lung dose; 0 = no blocks)")
    p.add_argument("--lung-block-fractions", type=int, help="fractions given with lung blocks (default: all)")
    p.add_argument("--block", action="append", default=[], metavar="STRUCTURE:MM",
                   help="extra block on request, e.g. --block Liver:10 (repeatable)")
    p.add_argument("--no-compensator", action="store_true", help="plan without compensators (for comparison)")
    p.add_argument("--beam-data", help="TBI beam-data YAML (default: the shipped generic 6 MV example)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-rtplan", action="store_true", help="do not write the RTPLAN")
    p.set_defaults(func=run)


def parse_rx(text: str) -> tuple[float, int]:
    from ..errors import InputError

    try:
        dose, fx = str(text).split("/")
        dose_gy, n = float(dose), int(fx)
    except ValueError:
        raise InputError(f"--rx {text!r}: expected TOTAL_GY/FRACTIONS, e.g. 12/6") from None
    return dose_gy, n


def parse_blocks(items: list[str]) -> dict[str, float]:
    from ..errors import InputError

    out = {}
    for item in items:
        name, _, mm = str(item).rpartition(":")
        try:
            out[name] = float(mm)
        except ValueError:
            name = ""
        if not name:
            raise InputError(f"--block {item!r}: expected STRUCTURE:THICKNESS_MM, e.g. Liver:10")
    return out


def run(args) -> int:
    import sys
    import time

    from .._log import Timings
    from ..io import load_case
    from ..tbi import TbiRequest, load_beam_data, parse_technique, plan_tbi, write_outputs

    rx, n = parse_rx(args.rx)
    request = TbiRequest(prescription_gy=rx, n_fractions=n, technique=parse_technique(args.technique),
                         distance_cm=args.distance_cm, jaw_cm=args.jaw_cm, spoiler_cm=args.spoiler_cm,
                         lung_block_mm=args.lung_block_mm, lung_block_fractions=args.lung_block_fractions,
                         organ_blocks_mm=parse_blocks(args.block), compensate=not args.no_compensator)
    beam = load_beam_data(args.beam_data)
    t0 = time.perf_counter()
    timings = Timings()
    case = load_case(args.case, rtstruct=args.rtstruct)
    plan = plan_tbi(case, request, beam=beam, timings=timings)
    planning_s = time.perf_counter() - t0
    paths = write_outputs(plan, args.out, rtplan=not args.no_rtplan,
                          timings={**timings.as_dict(), "load and plan": planning_s})
    for r in plan.rules_results:
        mark = "pass" if r.passed else "FAIL"
        print(f"  [{mark}] {r.rule}: {r.value if isinstance(r.value, str) else round(r.value, 3)} ({r.limit})")
    print(f"MU per field {plan.mu_per_field:.1f}, dose rate {plan.dose_rate_mu_per_min:g} MU/min "
          f"({plan.midline_dose_rate_cgy_min:.2f} cGy/min at midline); MLD "
          f"{'-' if plan.mld_gy is None else f'{plan.mld_gy:.2f} Gy'}; planned in {planning_s:.1f} s")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if not plan.passed:
        print("sbrtplan tbi: some rules of the standard FAIL (see metrics.json)", file=sys.stderr)
        return 1
    return 0

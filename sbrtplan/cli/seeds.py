"""``sbrtplan seeds``: permanent seed implants (pre-plan, post-implant verification, cohort summary).

``seeds preplan --case CT|phantom:prostate_seeds --protocol prostate_i125 --out DIR``
``seeds verify --ct POSTIMPLANT --rtstruct F [--preplan DIR] [--registry R.json] --out DIR``
``seeds cohort METRICS.json ...`` (post-implant verification rate, unaccounted seeds)
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("seeds", help="permanent seed implants: TG-43 pre-plan, post-implant verification, registry",
                       description="Seed-implant planning (TG-43U1): 'preplan' optimises the seed loading on a "
                                   "needle template, 'verify' finds the seeds on a post-implant CT and reports "
                                   "D90/V100/V150/V200 and organ doses, 'cohort' reports the verification rate.")
    ss = p.add_subparsers(dest="seeds_command", metavar="STEP")
    pre = ss.add_parser("preplan", help="optimise the seed loading of a case")
    pre.add_argument("--case", required=True, help="DICOM folder (CT + RTSTRUCT) or phantom:prostate_seeds")
    pre.add_argument("--rtstruct", help="RTSTRUCT file when the folder holds several or none")
    pre.add_argument("--protocol", default="prostate_i125",
                     help="seed protocol: prostate_i125 (default), solid_tumour_i125 or a YAML file")
    pre.add_argument("--prescription-gy", type=float, help="prescription (Gy) where the protocol takes it as a parameter")
    pre.add_argument("--source", help="seed model (6711, 2301, 200) or TG-43 source JSON (default: the protocol's)")
    pre.add_argument("--target", help="planning target structure (default: the protocol's target names)")
    pre.add_argument("--registry", help="seed registry JSON (model, vendor, lot, strength, calibration date, counts)")
    pre.add_argument("--no-dicom", action="store_true", help="do not write RTSTRUCT/RTPLAN/RTDOSE")
    pre.add_argument("--no-report", action="store_true", help="do not write report.html")
    pre.add_argument("--out", required=True, help="output folder")
    pre.set_defaults(func=run_preplan)
    ver = ss.add_parser("verify", help="post-implant dosimetry from a CT or a seed list")
    ver.add_argument("--ct", required=True, help="post-implant CT folder (or phantom:prostate_seeds_postimplant)")
    ver.add_argument("--rtstruct", help="RTSTRUCT of the post-implant CT")
    ver.add_argument("--seed-list", help="CSV of seed coordinates (x_mm,y_mm,z_mm[,dx,dy,dz]) instead of detection")
    ver.add_argument("--preplan", help="pre-plan output folder to compare with")
    ver.add_argument("--protocol", default="prostate_i125", help="seed protocol (default prostate_i125)")
    ver.add_argument("--prescription-gy", type=float, help="prescription (Gy) for a parametric protocol")
    ver.add_argument("--source", help="seed model or source JSON (default: the pre-plan's, else the protocol's)")
    ver.add_argument("--strength-u", type=float, help="air-kerma strength per seed (U); default: registry, pre-plan")
    ver.add_argument("--registry", help="seed registry JSON; its implanted count is checked against the CT")
    ver.add_argument("--no-dicom", action="store_true", help="do not write RTSTRUCT/RTPLAN/RTDOSE")
    ver.add_argument("--no-report", action="store_true", help="do not write report.html")
    ver.add_argument("--out", required=True, help="output folder")
    ver.set_defaults(func=run_verify)
    coh = ss.add_parser("cohort", help="verification rate and seed accounting over many cases")
    coh.add_argument("metrics", nargs="+", help="metrics.json files of pre-plans and verifications")
    coh.add_argument("--json", help="write the summary here")
    coh.set_defaults(func=run_cohort)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _load(spec: str, rtstruct: str | None):
    from ..io import load_case

    return load_case(spec, rtstruct)


def run_preplan(args) -> int:
    from ..brachy import SeedRegistry, load_seed_protocol, run_preplan as plan, write_preplan
    from ._validate import check_output_dir

    check_output_dir(args.out)
    protocol = load_seed_protocol(args.protocol).with_prescription(args.prescription_gy)
    registry = SeedRegistry.read(args.registry) if args.registry else None
    case = _load(args.case, args.rtstruct)
    source = args.source or (registry.model if registry else None)
    from ._common import StageBar

    with StageBar("seed pre-plan", len(protocol.strength_u_choices)) as bar:
        pp = plan(case, protocol, source=source, target_name=args.target, progress=bar)
    out = write_preplan(args.out, pp, registry, report=not args.no_report, dicom=not args.no_dicom)
    t = pp.metrics["target"]
    print(f"{case.name}: {pp.n_seeds} seeds of {pp.strength_u:.2f} U ({pp.source.isotope} {pp.source.model}) in "
          f"{pp.n_needles} needles; {t['structure']} {t['volume_cc']:.1f} cc: D90 {t['D90_pct']:.1f}%  "
          f"V100 {t['V100_pct']:.1f}%  V150 {t['V150_pct']:.1f}%")
    for g in pp.goals:
        res = {True: "pass", False: "FAIL", None: "n/a"}[g.passed]
        val = "n/a" if g.value_pct is None else f"{g.value_pct:.1f}%"
        print(f"  {g.label:<28s} {val:>8s}  {res}")
    print(f"written to {out}")
    return 0 if all(g.passed is not False for g in pp.goals) else 1


def run_verify(args) -> int:
    import json
    from pathlib import Path

    from ..brachy import (SeedRegistry, load_seed_protocol, load_source, read_seed_list, verify_implant,
                          write_verification)
    from ..errors import InputError
    from ._validate import check_output_dir

    check_output_dir(args.out)
    protocol = load_seed_protocol(args.protocol).with_prescription(args.prescription_gy)
    registry = SeedRegistry.read(args.registry) if args.registry else None
    pre = None
    if args.preplan:
        f = Path(args.preplan) / "plan.json"
        try:
            pre = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"--preplan '{args.preplan}': no readable plan.json ({e})") from None
    strength = args.strength_u or (registry.strength_u if registry else None) or (pre or {}).get("strength_u")
    if strength is None:
        raise InputError("--strength-u: the seed strength is needed (give it, a --registry or a --preplan)")
    source = load_source(args.source or (registry.model if registry else None) or (pre or {}).get("source_model")
                         or protocol.default_source)
    case = _load(args.ct, args.rtstruct)
    pos = dirs = None
    if args.seed_list:
        pos, dirs = read_seed_list(args.seed_list)
    ver = verify_implant(case, protocol, strength_u=float(strength), source=source, positions_mm=pos,
                         directions=dirs, expected_count=registry.n_implanted if registry else None, preplan=pre)
    out = write_verification(args.out, case, protocol, ver, registry, source, report=not args.no_report,
                             dicom=not args.no_dicom)
    t = ver.metrics["target"]
    print(f"{case.name}: {len(ver.seeds)} seeds; {t['structure']}: D90 {t['D90_gy']:.1f} Gy ({t['D90_pct']:.1f}%)  "
          f"V100 {t['V100_pct']:.1f}%  V150 {t['V150_pct']:.1f}%  V200 {t['V200_pct']:.1f}%")
    for d in ver.discrepancies:
        print(f"DISCREPANCY: {d}", file=sys.stderr)
    print(f"written to {out}")
    return 1 if ver.discrepancies else 0


def run_cohort(args) -> int:
    from .._json import write_json
    from ..brachy import cohort_summary

    s = cohort_summary(args.metrics)
    print(f"{s['n_cases']} cases, {s['n_verified']} with post-implant verification: "
          f"{100 * s['verification_rate']:.1f}% (required > {100 * s['required_rate']:.0f}%): "
          f"{'met' if s['rate_met'] else 'NOT MET'}")
    for case, n in s["unaccounted_seeds"].items():
        print(f"UNACCOUNTED: {case}: {n} seeds", file=sys.stderr)
    if args.json:
        write_json(args.json, s)
    return 0 if s["rate_met"] and not s["unaccounted_seeds"] else 1

"""``sbrtplan commission``: fit a beam model to water-tank scans and print the agreement.

Exit status: 0 when every curve and output factor is within its limit, 1 when
one is not (the model is written all the same, so it can be inspected), 2 on
bad input (as every command).
"""

from __future__ import annotations

SUMMARY_FIELDS_MM = (10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 100.0)


def register(sub) -> None:
    p = sub.add_parser("commission", help="fit a 6 MV beam model to PTW .mcc scans (+ output factors), print agreement",
                       description="Fit the Gaussian pencil-beam model to PTW .mcc water-tank scans (PDDs and "
                                   "profiles of one energy and SSD) and, optionally, measured output factors; print "
                                   "the agreement (PDD local difference beyond d_max, build-up DTA, profile gamma "
                                   "2 %%/2 mm, output ratios) and write the model as YAML or JSON.")
    p.add_argument("mcc", nargs="+", help="PTW .mcc files")
    p.add_argument("--out", required=True, help="model file to write (.yaml, .yml or .json)")
    p.add_argument("--name", default=None, help="model name (default: the output file's stem)")
    p.add_argument("--output-factors", default=None,
                   help="measured output factors, .csv (columns field_mm, output_factor[, depth_mm, ssd_mm, "
                        "reference_field_mm]) or .yaml; small fields need detector-corrected values")
    p.add_argument("--base", default=None,
                   help="model supplying SAD, MLC/jaw transmission and calibration (default: the shipped generic 6 MV)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..dose_engine import commission, load_beam_model, output_factor, read_output_factors
    from ..errors import InputError
    from ._validate import check_output_file

    out = Path(args.out)
    if out.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise InputError(f"--out {out}: the model file must end in .yaml, .yml or .json")
    check_output_file(out, "--out")
    for f in args.mcc:
        if not Path(f).is_file():
            raise InputError(f"{f}: no such .mcc file")
    ofs = read_output_factors(args.output_factors) if args.output_factors else None
    base = load_beam_model(args.base) if args.base else None
    model, report = commission(args.mcc, name=args.name or out.stem, base=base, output_factors=ofs)
    print(report.table())
    print(model.summary())
    print("output factors of the model (10 cm depth, SSD 90 cm, relative to 10 x 10 cm):")
    print("  " + "  ".join(f"{f / 10:g} cm {output_factor(model, f, 100.0, 900.0):.3f}" for f in SUMMARY_FIELDS_MM))
    model.to_file(out)
    print(f"model written to {out}")
    if not report.passed:
        print("commissioning FAILED: at least one curve or output factor is outside its limit (see above)")
        return 1
    return 0

"""``sbrtplan benchmark``: our automatic plan against a clinical dose on the same structures."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_plan_arguments

    p = sub.add_parser("benchmark", help="automatic plan vs a clinical RTDOSE: side-by-side metrics and DVHs",
                       description="Plan the case automatically, evaluate our dose and the clinical RTDOSE on the "
                                   "same structures and grid, print the differences and write a report with "
                                   "overlaid DVHs.")
    add_plan_arguments(p)
    p.add_argument("--scheme", required=True, help="fractionation TOTAL/FRACTIONS")
    p.add_argument("--clinical-rtdose", required=True, help="RTDOSE of the clinical plan (total course)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from .._staging import staged_dir
    from ..case import resample_dose
    from ..io import load_case, read_rtdose
    from ..io.validate import check_case_identity, check_reference_dose
    from ..workflow import plan
    from ._common import StageBar, plan_kwargs, print_summary
    from ._validate import check_input_path, check_output_dir, check_plan_memory, check_plan_options

    check_plan_options(args)
    out = check_output_dir(args.out)
    check_input_path(args.clinical_rtdose, "--clinical-rtdose", folder=False)
    clinical_native = read_rtdose(args.clinical_rtdose)  # a bad clinical dose is refused before planning
    case = load_case(args.case, rtstruct=args.rtstruct)
    check_case_identity(case, f"--case {args.case}", [(f"--clinical-rtdose {args.clinical_rtdose}",
                                                       args.clinical_rtdose)])
    check_reference_dose(clinical_native, case, f"--clinical-rtdose {args.clinical_rtdose}")
    check_plan_memory(case, args)
    with StageBar("plan", 8) as bar:
        p = plan(case, args.protocol, args.scheme, args.technique, args.beams, progress=bar, **plan_kwargs(args))
    clinical = resample_dose(clinical_native, p.case.grid)
    with staged_dir(out) as stage:  # plan, comparison and report appear together or not at all
        _write(p, clinical, stage, args)
    print_summary(p, out)
    return 0


def _write(p, clinical, out, args) -> None:
    from pathlib import Path

    from .._log import atomic_output
    from ..evaluation import evaluate_plan
    from ..evaluation.compare import compare_reports
    from ..report import render_report
    from ..workflow import write_plan
    from ..workflow.outputs import write_metrics_json

    write_plan(p, out)
    ref = evaluate_plan(clinical, p.case.structures, p.protocol_name, p.scheme, target=p.report.target,
                        conditions=p.options.conditions)
    table = compare_reports(p.report, ref, labels=("sbrtplan", "clinical"))
    with atomic_output(out / "comparison.csv") as tmp:
        Path(tmp).write_text(table.to_csv())
    write_metrics_json(out / "clinical_metrics.json", ref.as_dict())
    render_report(out / "report.html", case=p.case, dose=p.dose, metrics=p.metrics,
                  prescription_gy=p.beam_set.prescription_gy, n_fractions=p.beam_set.n_fractions,
                  title=f"sbrtplan vs clinical: {p.case.name}", qa=p.qa, reference_dose=clinical,
                  reference_label="clinical")
    print(table.format())

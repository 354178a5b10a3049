"""Writing a plan to a folder: DICOM RT objects, matRad file, HTML report, metrics.json.

Layout of ``out/``::

    CT/            planning CT on the dose grid (CT Image Storage, one file per slice)
    RTSTRUCT.dcm   every structure, derived ones included (PRVs, PTV!, rings)
    RTPLAN.dcm     beams or arcs with MLC control points and MU
    RTDOSE.dcm     final dose from the deliverable apertures (total course, Gy)
    plan.mat       matRad-compatible (ct, cst, resultGUI.physicalDose)
    report.html    the physicist's report (DVH, slices, goals, QA)
    metrics.json   machine-readable metrics (schema in docs/metrics.md)

The CT is written on the dose grid so that the four DICOM objects share one
frame of reference and the contours lie on CT slices; the original CT's
study, patient and frame-of-reference identifiers are kept when known.
Every file is written into a staging folder next to ``out/`` that replaces the
previous outputs only once complete (:func:`sbrtplan._staging.staged_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .._json import write_json
from .._log import get_logger
from .._staging import staged_dir
from .plan import Plan

log = get_logger(__name__)

OUTPUT_FILES = ("CT", "RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm", "plan.mat", "report.html", "metrics.json")


def write_metrics_json(path, metrics: dict) -> Path:
    """metrics.json, atomically, as strict JSON (:func:`sbrtplan._json.write_json`: NaN as null)."""
    return write_json(path, metrics)


def write_plan(plan: Plan, out_dir, *, title: str | None = None, mat_format: str = "auto",
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, Path]:
    """Write every output of ``plan`` into ``out_dir`` (created); returns name -> path.

    ``mat_format`` is the MATLAB format of ``plan.mat``: ``auto`` (v5 whenever it fits v5's
    limits, the form matRad and pyRadPlan read), ``v5`` or ``v7.3`` (HDF5).
    """
    from ..io import write_ct_series, write_matrad, write_rtdose, write_rtplan, write_rtstruct
    from ..report import render_report

    final = Path(out_dir)
    # every file goes to a staging folder first; the folder replaces the outputs only when complete
    with staged_dir(final) as out:
        case = plan.case
        steps = ["CT", "RTSTRUCT", "RTPLAN", "RTDOSE", "matRad", "metrics", "report"]
        paths: dict[str, Path] = {}

        def tick(i):
            if progress is not None:
                progress(steps[i], i + 1, len(steps))

        write_ct_series(case, out / "CT")
        paths["CT"] = out / "CT"
        tick(0)
        ss_uid = write_rtstruct(case, out / "RTSTRUCT.dcm")
        paths["RTSTRUCT"] = out / "RTSTRUCT.dcm"
        tick(1)
        # a plan of several targets prescribes each at its own dose level (one dose reference each)
        levels = [(t["name"], float(t["dose_gy"]))
                  for t in ((plan.metrics.get("prescription") or {}).get("targets") or [])]
        plan_uid = write_rtplan(plan.beam_set, out / "RTPLAN.dcm", case=case, rtstruct_uid=ss_uid,
                                target_name=plan.report.target, targets=levels or None)
        paths["RTPLAN"] = out / "RTPLAN.dcm"
        tick(2)
        # 16-bit dose (resolution max/65535, ~0.5 mGy at 30 Gy): the form every DICOM validator accepts
        write_rtdose(plan.dose, case.grid, out / "RTDOSE.dcm", case=case, rtplan_uid=plan_uid, bits_allocated=16)
        paths["RTDOSE"] = out / "RTDOSE.dcm"
        tick(3)
        write_matrad(out / "plan.mat", case, dose_gy=plan.dose.dose_gy, mat_format=mat_format)
        paths["matRad"] = out / "plan.mat"
        tick(4)
        write_metrics_json(out / "metrics.json", plan.metrics)
        paths["metrics"] = out / "metrics.json"
        tick(5)
        rx = plan.beam_set.prescription_gy
        render_report(out / "report.html", case=case, dose=plan.dose, metrics=plan.metrics, prescription_gy=rx,
                      n_fractions=plan.beam_set.n_fractions,
                      title=title or f"sbrtplan {plan.options.technique.value.upper()} plan: {case.name}, "
                                     f"{plan.protocol_name} {plan.scheme}",
                      qa=plan.qa)
        paths["report"] = out / "report.html"
        tick(6)
    return {k: final / v.relative_to(out) for k, v in paths.items()}


def summary_line(plan: Plan) -> dict:
    """The closing summary of a plan (also the cohort summary row)."""
    m = plan.metrics
    t = m["targets"].get(plan.report.target, {}) if plan.report.target else {}
    s = m.get("summary", {})
    return {"ptv_V100_pct": t.get("V100_pct"), "ptv_D95_gy": t.get("D95_gy"), "CI_paddick": t.get("CI_paddick"),
            "GI": t.get("GI"), "R50": t.get("R50"), "D2cm_pct": t.get("D2cm_pct"), "rtog_class": t.get("rtog_class"),
            "goals_passed": s.get("n_passed"), "goals_failed": s.get("n_failed"),
            "hard_failures": len(s.get("hard_failures", [])), "total_mu": round(plan.total_mu, 1)}

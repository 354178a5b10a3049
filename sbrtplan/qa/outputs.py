"""Files of a QA run: the verification plan (CT, RTPLAN, RTDOSE, plane) and the comparison (metrics, page)."""

from __future__ import annotations

import json
from pathlib import Path

from .._json import write_json
from .._log import get_logger
from .compare import QAComparison
from .plane import DosePlane, write_plane_csv
from .verification import VerificationResult

log = get_logger(__name__)

VERIFICATION_JSON = "verification.json"
CALCULATED_PLANE_CSV = "calculated_plane.csv"


def write_verification(result: VerificationResult, out_dir, *, write_ct: bool = True,
                       source_rtplan: str | None = None) -> dict:
    """Write CT/ (phantom), RTPLAN.dcm, RTDOSE.dcm, calculated_plane.csv and verification.json.

    Returns the verification summary written to ``verification.json``.
    """
    from ..io import write_ct_series, write_rtdose, write_rtplan

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case = result.case
    if write_ct:
        write_ct_series(case, out / "CT")
    uid = write_rtplan(result.beam_set, out / "RTPLAN.dcm", case=case, plan_label="QA",
                       target_name="QA reference point")
    write_rtdose(result.dose, result.dose.grid, out / "RTDOSE.dcm", case=case, rtplan_uid=uid)
    write_plane_csv(result.plane, out / CALCULATED_PLANE_CSV)
    summary = result.summary()
    summary["source_rtplan"] = source_rtplan
    summary["files"] = {"rtplan": "RTPLAN.dcm", "rtdose": "RTDOSE.dcm", "calculated_plane": CALCULATED_PLANE_CSV,
                        "ct": "CT" if write_ct else None}
    write_json(out / VERIFICATION_JSON, summary)
    log.info("QA verification written to %s", out)
    return summary


def read_verification(qa_dir) -> tuple[dict, DosePlane]:
    """The summary and the calculated plane a :func:`write_verification` folder holds."""
    from ..errors import InputError
    from .plane import read_plane_csv

    d = Path(qa_dir)
    js = d / VERIFICATION_JSON
    if not js.is_file():
        raise InputError(f"--qa-dir {d}: no {VERIFICATION_JSON}; run 'sbrtplan qa-plan' into it first")
    try:
        summary = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{js}: cannot read the verification summary ({exc})") from None
    return summary, read_plane_csv(d / CALCULATED_PLANE_CSV)


def write_comparison(comparison: QAComparison, out_dir, *, verification: dict | None = None,
                     measured: DosePlane | None = None, calculated: DosePlane | None = None,
                     title: str = "Patient-specific QA", report=None) -> dict:
    """metrics.json (``qa`` section: verification and comparison) and qa_report.html.

    With ``report`` (the plan's ``report.html``) the same QA page is also put into that report
    (replacing an earlier QA page of it).
    """
    from .page import add_qa_page_to_report, render_qa_page

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"qa": {"verification": verification, "comparison": comparison.as_dict()}}
    write_json(out / "metrics.json", metrics)
    render_qa_page(out / "qa_report.html", comparison, measured=measured, calculated=calculated,
                   verification=verification, title=title)
    if report is not None:
        add_qa_page_to_report(report, comparison, measured=measured, calculated=calculated,
                              verification=verification, title=title)
        log.info("QA page added to %s", report)
    return metrics

"""The self-contained HTML plan report.

One file, no external resources: inline CSS, figures as base64 PNG data URIs.
Sections: header (case, protocol, scheme, prescription, date), verdict and
target metrics (coverage, CI, GI, R50%, D2cm, RTOG class), DVH (with an
optional reference dose dashed), dose on CT in three planes through the target
centroid, the goal compliance table coloured by status, QA, timings.

The metrics come from ``sbrtplan.evaluation.metrics_dict`` (the metrics.json
layout); the report recomputes only the DVH curves and the slices.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import time
from pathlib import Path

import numpy as np

from .._log import atomic_output, get_logger, timed
from ..case import Case, Dose, Structure, StructureRole, resample_dose, resample_structure
from ..errors import InputError, StructureError
from ..evaluation import DoseField, compute_dvh
from .figures import dvh_figure, slice_figure, structure_colours

log = get_logger(__name__)

# Most DVH curves drawn by default (a legend beyond that is unreadable).
_MAX_DEFAULT_DVH = 14

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #d0d0d0;padding:3px 7px;text-align:left}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.status-pass td.result{background:#d8f3dc;color:#1b5e20;font-weight:600}
tr.status-fail td.result{background:#fbd5d5;color:#9b1c1c;font-weight:600}
tr.status-fail.optional td.result{background:#fdebd0;color:#8a4b00}
tr.status-not_evaluable td.result{background:#eee;color:#666}
.meta{color:#555;font-size:13px}.verdict{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:700}
.verdict.ok{background:#d8f3dc;color:#1b5e20}.verdict.bad{background:#fbd5d5;color:#9b1c1c}
.verdict.none{background:#eee;color:#555}img{max-width:100%;height:auto;border:1px solid #ddd}
.note{color:#555;font-size:12px}
"""


# ------------------------------------------------------------------ helpers
def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, nd: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        return f"{float(value):.{nd}f}"
    except (TypeError, ValueError):
        return _e(value)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
           row_classes: list[str] | None = None) -> str:
    """HTML table; cells are already escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# -------------------------------------------------------------- sections
def _header(case: Case, metrics: dict, prescription_gy: float, n_fractions: int, title: str) -> str:
    proto = metrics.get("protocol") or {}
    rx = metrics.get("prescription") or {}
    target = rx.get("target") or metrics.get("target") or "-"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"<h1>{_e(title)}</h1>",
             '<p class="meta">'
             f"Case <b>{_e(case.name)}</b>" + (f" ({_e(case.source)})" if case.source else "")
             + f" &middot; patient {_e(case.patient.patient_id)} &middot; {_e(case.patient_position)}<br>"
             f"Protocol <b>{_e(proto.get('name', '-'))}</b>"
             + (f" &ndash; {_e(proto.get('title'))}" if proto.get("title") else "")
             + f" &middot; scheme <b>{_num(prescription_gy, 4).rstrip('0').rstrip('.')} Gy / {int(n_fractions)} fx</b>"
             f" ({_num(prescription_gy / n_fractions)} Gy per fraction)"
             + (f", BED10 {_num(rx.get('bed10_gy'), 1)} Gy" if rx.get("bed10_gy") is not None else "")
             + f" &middot; prescription target <b>{_e(target)}</b><br>"
             f"Generated {now} by {_e(metrics.get('generator', 'sbrtplan'))}"
             f" (metrics schema {_e(metrics.get('schema_version', '-'))})</p>"]
    return "\n".join(lines)


def _verdict(metrics: dict) -> str:
    s = metrics.get("summary") or {}
    acc = s.get("acceptable")
    cls, text = {True: ("ok", "ACCEPTABLE"), False: ("bad", "NOT ACCEPTABLE")}.get(acc, ("none", "no verdict"))
    out = f'<p><span class="verdict {cls}">{text}</span> '
    if s:
        out += (f"{_e(s.get('n_passed', 0))} goals passed, {_e(s.get('n_failed', 0))} failed "
                f"({_e(s.get('n_failed_mandatory', 0))} mandatory), {_e(s.get('n_not_evaluable', 0))} not evaluable")
    cov = metrics.get("coverage")
    if cov:
        out += f" &middot; coverage: <b>{_e(cov.get('status'))}</b> <span class=\"note\">{_e(cov.get('note'))}</span>"
    out += "</p>"
    if s.get("hard_failures"):
        out += '<p class="note">Hard failures: ' + ", ".join(_e(h) for h in s["hard_failures"]) + "</p>"
    return out


def _targets_table(metrics: dict) -> str:
    targets = metrics.get("targets") or {}
    if not targets:
        return '<p class="note">No target metrics.</p>'
    headers = ["target", "volume (cc)", "D98 (Gy)", "D95 (Gy)", "D50 (Gy)", "D2 (Gy)", "Dmax (Gy)", "V100 (%)",
               "CI RTOG", "CI Paddick", "GI", "R50%", "D2cm (%Rx)", "HI", "RTOG class"]
    rows = []
    for name, t in targets.items():
        rows.append([_e(name), _num(t.get("volume_cc")), _num(t.get("D98_gy")), _num(t.get("D95_gy")),
                     _num(t.get("D50_gy")), _num(t.get("D2_gy")), _num(t.get("Dmax_gy")), _num(t.get("V100_pct"), 1),
                     _num(t.get("CI_rtog"), 3), _num(t.get("CI_paddick"), 3), _num(t.get("GI"), 2),
                     _num(t.get("R50"), 2), _num(t.get("D2cm_pct"), 1), _num(t.get("HI"), 3),
                     _e(t.get("rtog_class") or "-")])
    return _table(headers, rows, numeric=set(range(1, 14)))


def _goal_value(g: dict, key: str) -> str:
    v = g.get(key)
    if v is None:
        return "-"
    unit = g.get("limit_unit" if key == "limit" else "unit") or ""
    if unit in ("ratio", ""):
        text = f"{float(v):.3f}"
    elif unit in ("%", "%Rx"):
        text = f"{float(v):.1f}{unit}"
    else:
        text = f"{float(v):.2f} {unit}"
    return _e(text)


def _goals_table(metrics: dict) -> str:
    goals = metrics.get("goals") or []
    if not goals:
        return '<p class="note">No protocol goals (no protocol given).</p>'
    rows, classes = [], []
    for g in goals:
        status = str(g.get("status") or "not_evaluable")
        mandatory = bool(g.get("mandatory", True))
        result = {"pass": "PASS", "fail": "FAIL" if mandatory else "fail (optional)"}.get(status, "not evaluable")
        limit = _e(g.get("comparator", "")) + " " + _goal_value(g, "limit") if g.get("limit") is not None else "-"
        prio = f"{_e(g.get('priority', '-'))} {_e(g.get('priority_class', ''))}"
        rows.append([_e(g.get("structure")), _e(g.get("metric_label") or g.get("metric")), limit,
                     _goal_value(g, "value"), prio, result, f'<span class="note">{_e(g.get("note", ""))}</span>'])
        classes.append(f"goal status-{status}" + ("" if mandatory else " optional"))
    table = _table(["structure", "metric", "limit", "value", "priority", "result", "note"], rows,
                   numeric={3}, row_classes=classes)
    # The result cell carries the colour.
    return table.replace("<td>PASS</td>", '<td class="result">PASS</td>').replace(
        "<td>FAIL</td>", '<td class="result">FAIL</td>').replace(
        "<td>fail (optional)</td>", '<td class="result">fail (optional)</td>').replace(
        "<td>not evaluable</td>", '<td class="result">not evaluable</td>')


def _render_value(value, depth: int = 0) -> str:
    """Generic rendering of QA content: lists of dicts as tables, dicts as key/value tables."""
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            keys = list(dict.fromkeys(k for v in value.values() for k in v))
            rows = [[_e(name)] + [_render_scalar(v.get(k)) for k in keys] for name, v in value.items()]
            return _table([""] + keys, rows)
        rows = [[_e(k), _render_value(v, depth + 1)] for k, v in value.items()]
        return _table(["item", "value"], rows)
    if isinstance(value, (list, tuple)):
        if not value:
            return '<span class="note">none</span>'
        if all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            return _table(keys, [[_render_scalar(v.get(k)) for k in keys] for v in value])
        return "<ul>" + "".join(f"<li>{_render_value(v, depth + 1)}</li>" for v in value) + "</ul>"
    return _render_scalar(value)


def _render_scalar(value) -> str:
    if isinstance(value, (dict, list, tuple)):
        return _render_value(value)
    if isinstance(value, (float, np.floating)):
        return _num(float(value), 3)
    return _num(value) if isinstance(value, (bool, int, np.integer)) or value is None else _e(value)


def _qa_section(qa: dict | None) -> str:
    if not qa:
        return '<p class="note">No QA results were supplied.</p>'
    parts = []
    for key, value in qa.items():
        parts.append(f"<h3>{_e(key.replace('_', ' '))}</h3>{_render_value(value)}")
    return "\n".join(parts)


def _timings_section(metrics: dict, render_s: float) -> str:
    timings = dict(metrics.get("timings_s") or {})
    timings["report.render (this page)"] = round(render_s, 3)
    rows = [[_e(k), _num(v, 3)] for k, v in timings.items()]
    return _table(["step", "seconds"], rows, numeric={1})


# ---------------------------------------------------------------- structures
def _default_dvh_names(case: Case, metrics: dict) -> list[str]:
    names = [n for n in (metrics.get("targets") or {}) if n in case.structures]
    for g in metrics.get("goals") or []:
        n = g.get("structure")
        if n in case.structures and n not in names and case.structures[n].role is not StructureRole.EXTERNAL:
            names.append(n)
    if not names:
        names = [n for n, s in case.structures.items() if s.role is not StructureRole.EXTERNAL]
    else:  # targets and goal organs first, then other organs
        names += [n for n, s in case.structures.items()
                  if n not in names and s.role in (StructureRole.OAR, StructureRole.PRV)]
    return names[:_MAX_DEFAULT_DVH]


def _on_grid(structure: Structure, dose: Dose) -> Structure:
    return structure if structure.grid.same_as(dose.grid) else resample_structure(structure, dose.grid)


def _target_centre(case: Case, metrics: dict, dvh_names: list[str]) -> np.ndarray:
    rx = metrics.get("prescription") or {}
    for name in [rx.get("target"), *(metrics.get("targets") or {})]:
        if name and name in case.structures and not case.structures[name].is_empty:
            return case.structures[name].centroid_mm()
    for s in case.targets():
        if not s.is_empty:
            return s.centroid_mm()
    lo, hi = case.grid.bounds_mm()
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------- API
def render_report(path, *, case: Case, dose: Dose, metrics: dict, prescription_gy: float, n_fractions: int,
                  title: str = "SBRT plan report", dvh_structures: list[str] | None = None, qa: dict | None = None,
                  reference_dose: Dose | None = None, reference_label: str = "clinical") -> Path:
    """Write the self-contained HTML report of a plan.

    Parameters
    ----------
    path : str or Path
        Output ``.html`` file (written atomically).
    case : Case
        CT and structures (CT grid).
    dose : Dose
        Total plan dose, on any grid (usually the dose grid).
    metrics : dict
        ``sbrtplan.evaluation.metrics_dict(evaluate_plan(...))`` (the metrics.json content).
    prescription_gy : float
        Total prescription dose; the isodoses are drawn at 50/90/100/110 % of it.
    n_fractions : int
    title : str
    dvh_structures : list of str, optional
        Structures in the DVH and on the slices.  Default: the targets, the
        structures named by the goals, then other organs (at most 14).
    qa : dict, optional
        QA results rendered generically (lists of dicts as tables, dicts as
        key/value tables), e.g. ``{"mu_check": [...], "deliverability": [...],
        "delivery_time_s": 312.0, "total_mu": 5400}``.
    reference_dose : Dose, optional
        A dose to compare with (e.g. the clinical plan); its DVHs are drawn dashed.
    reference_label : str

    Returns
    -------
    Path
        The written file.

    DVHs are computed on the dose grid: structures on another grid are
    resampled onto it with sub-voxel occupancy (as ``evaluate_plan`` does for
    its metrics), and a reference dose on yet another grid is interpolated
    trilinearly onto the plan's dose grid.
    """
    t0 = time.perf_counter()
    if not (isinstance(prescription_gy, (int, float)) and math.isfinite(prescription_gy) and prescription_gy > 0):
        raise InputError(f"render_report: prescription_gy must be a positive number of Gy, got {prescription_gy!r}")
    if int(n_fractions) != n_fractions or n_fractions < 1:
        raise InputError(f"render_report: n_fractions must be a positive integer, got {n_fractions!r}")
    if not isinstance(metrics, dict):
        raise InputError("render_report: metrics must be the dict of sbrtplan.evaluation.metrics_dict(...)")
    out_path = Path(path)
    names = list(dvh_structures) if dvh_structures is not None else _default_dvh_names(case, metrics)
    missing = [n for n in names if not case.has(n)]
    if missing:
        raise StructureError(f"render_report: no structure {', '.join(repr(m) for m in missing)} in case "
                             f"'{case.name}' (available: {', '.join(case.structures)})")
    structures = [case.structure(n) for n in names]
    colours = structure_colours(structures)

    with timed(f"render report '{out_path.name}'", log):
        dvhs, ref_dvhs = {}, {}
        ref = None
        if reference_dose is not None:
            ref = reference_dose if reference_dose.grid.same_as(dose.grid) else resample_dose(reference_dose, dose.grid)
        # One DoseField per dose: its neighbourhood bounds are shared by every DVH.
        field = DoseField.of(dose)
        ref_field = DoseField.of(ref) if ref is not None else None
        for s in structures:
            on = _on_grid(s, dose)
            if on.is_empty:
                log.warning("structure '%s' does not overlap the dose grid; left out of the DVH", s.name)
                continue
            dvhs[s.name] = compute_dvh(field, on)
            if ref_field is not None:
                ref_dvhs[s.name] = compute_dvh(ref_field, on)
        dvh_png = dvh_figure(dvhs, colours, prescription_gy, ref_dvhs or None, reference_label)
        centre = _target_centre(case, metrics, names)
        slices_png = slice_figure(case, dose, centre, prescription_gy, structures, colours)
        c = ", ".join(f"{v:.1f}" for v in centre)
        body = [
            _header(case, metrics, prescription_gy, n_fractions, title),
            "<h2>Summary</h2>", _verdict(metrics), _targets_table(metrics),
            "<h2>Dose-volume histograms</h2>", _img(dvh_png, "cumulative DVH"),
            f"<h2>Dose on CT</h2><p class=\"note\">Planes through ({c}) mm; isodoses at "
            f"50/90/100/110 % of {prescription_gy:g} Gy; structure outlines in the DVH colours.</p>",
            _img(slices_png, "dose on CT, axial, coronal and sagittal"),
            "<h2>Protocol compliance</h2>", _goals_table(metrics),
        ]
        notes = metrics.get("notes") or []
        if notes:
            body.append("<ul class=\"note\">" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
        body += ["<h2>QA</h2>", _qa_section(qa)]
        body += ["<h2>Timings</h2>", _timings_section(metrics, time.perf_counter() - t0)]
        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{_e(title)} - {_e(case.name)}</title><style>{_CSS}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")
        with atomic_output(out_path) as tmp:
            tmp.write_text(page, encoding="utf-8")
    return out_path


# ------------------------------------------------------- sections added later
def _section_markers(section_id: str) -> tuple[str, str]:
    return f"<!-- sbrtplan-section:{section_id}:begin -->", f"<!-- sbrtplan-section:{section_id}:end -->"


def set_report_section(path, section_id: str, fragment: str) -> Path:
    """Put a page into a report already written (e.g. the patient-specific QA page, after the plan).

    The fragment (HTML that starts with its own ``<h2>`` heading) is placed between two
    comment markers carrying ``section_id``: a later call with the same id replaces it, so
    re-running the QA updates the page instead of appending a second one.  A new section goes
    before the report's timings (the last section), or before ``</body>``.  Written atomically.

    Raises
    ------
    InputError
        When ``path`` is not a readable HTML report.
    """
    import re

    path = Path(path)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", section_id or ""):
        raise InputError(f"report section id {section_id!r}: expected lower-case letters, digits and '-'")
    try:
        page = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--report {path}: cannot read the plan report ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"--report {path}: not a UTF-8 HTML report") from None
    if "</body>" not in page:
        raise InputError(f"--report {path}: not an HTML report (no </body>)")
    begin, end = _section_markers(section_id)
    block = f'{begin}\n<section id="{section_id}">\n{fragment}\n</section>\n{end}'
    i, j = page.find(begin), page.find(end)
    if i >= 0 and j > i:
        page = page[:i] + block + page[j + len(end):]
    else:
        anchor = page.rfind("<h2>Timings</h2>")
        if anchor < 0:
            anchor = page.rfind("</body>")
        page = page[:anchor] + block + "\n" + page[anchor:]
    with atomic_output(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path

"""Compliance report output: terminal table and ``metrics.json``.

``metrics.json`` is read by other tools and by the HTML report: its layout is
versioned by ``schema_version`` (``MAJOR.MINOR``; MINOR grows when keys are
added, MAJOR when a key changes meaning or disappears).  See ``docs/metrics.md``.
"""

from __future__ import annotations

import math

from .._json import json_safe, write_json
from .._log import atomic_output
from .compliance import GoalResult, PlanReport, Status
from .results import SCHEMA_VERSION


def metrics_dict(report: PlanReport) -> dict:
    """The metrics.json content of ``report`` (JSON-safe); per-lesion indices under ``lesions`` when attached."""
    data = report.as_dict()
    lesions = getattr(report, "lesions", None)
    if lesions is not None:
        data["lesions"] = lesions.as_dict()
    return json_safe(data)


def write_metrics(path, report: PlanReport) -> None:
    """Write ``report`` as metrics.json to ``path`` atomically (temporary file, then rename)."""
    write_json(path, metrics_dict(report))


def dvh_table(report: PlanReport, step_gy: float = 0.1) -> tuple[list[float], dict[str, list[float]]]:
    """Cumulative DVHs of every evaluated structure on a common dose axis.

    Returns the dose axis (Gy, from 0 to one step past the highest maximum, ``step_gy`` steps)
    and, per structure, the volume (% of the structure) receiving at least each dose.
    """
    import numpy as np

    if not (step_gy > 0 and math.isfinite(step_gy)):
        raise ValueError(f"step_gy must be > 0, got {step_gy!r}")
    dvhs = {n: d for n, d in report.dvhs.items() if n in report.structures}
    top = max((d.max_gy for d in dvhs.values()), default=0.0)
    axis = np.arange(0.0, top + 1.5 * step_gy, step_gy)   # one step past the maximum: the curves end at 0 %
    return [round(float(x), 6) for x in axis], {n: [float(v) for v in d.curve(axis)] for n, d in dvhs.items()}


def write_dvh_csv(path, report: PlanReport, step_gy: float = 0.1) -> None:
    """Write the cumulative DVHs as CSV (``dose_gy`` then one column of % volume per structure), atomically."""
    import csv

    axis, curves = dvh_table(report, step_gy)
    names = list(curves)
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["dose_gy"] + [f"{n} [%]" for n in names])
            for i, x in enumerate(axis):
                w.writerow([f"{x:g}"] + [f"{curves[n][i]:.4f}" for n in names])


def _fmt(v, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    return [s.rstrip() for s in out]


def _result_text(r: GoalResult) -> str:
    if r.status is Status.NOT_EVALUABLE:
        return r.note.split(";")[0] if r.note.startswith("not evaluable") else "not evaluable"
    text = "PASS" if r.status is Status.PASS else ("FAIL" if r.goal.mandatory else "fail (optional)")
    if "no PRV structure" in r.note:
        text += " (on organ, no PRV)"
    if "whole dose grid" in r.note:
        text += " (whole grid)"
    return text


def _value_text(r: GoalResult) -> str:
    if r.value is None:
        return "-"
    unit = r.unit
    if unit in ("ratio", ""):
        return f"{r.value:.3f}"
    if unit in ("%", "%Rx"):
        return f"{r.value:.1f}{unit}"
    return f"{r.value:.2f} {unit}"


def _limit_text(r: GoalResult) -> str:
    g = r.goal
    if r.limit is None:
        return g.limit_label
    unit = r.unit or (g.limit.unit.value if g.limit else "")
    if unit in ("ratio", ""):
        return f"{g.comparator.value} {r.limit:.3g}"
    if unit in ("%", "%Rx"):
        return f"{g.comparator.value} {r.limit:.4g}{unit}"
    return f"{g.comparator.value} {r.limit:.4g} {unit}"


def format_report(report: PlanReport, show_sources: bool = False) -> str:
    """Aligned terminal text: prescription, targets, organs, goals with pass/fail, coverage, summary."""
    lines: list[str] = []
    p = report.protocol
    head = f"Protocol {p.name} ({p.title})" if p else "No protocol"
    if report.scheme is not None:
        head += f", {report.scheme}"
    if report.target:
        head += f", prescription target {report.target}"
    lines += [head, ""]

    if report.targets:
        rows = []
        for name, t in report.targets.items():
            ix = t.indices
            rows.append([name, _fmt(t.volume_cc), _fmt(t.d98_gy), _fmt(t.d95_gy), _fmt(t.d50_gy), _fmt(t.d2_gy),
                         _fmt(t.dmax_gy), _fmt(t.v100_pct, 1), _fmt(ix.ci_rtog if ix else None, 3),
                         _fmt(ix.ci_paddick if ix else None, 3), _fmt(ix.gi if ix else None, 2),
                         _fmt(ix.r50 if ix else None, 2), _fmt(ix.d2cm_pct if ix else None, 1),
                         (ix.rtog.overall.value + ("" if ix.rtog.in_range else " (out of table)"))
                         if ix and ix.rtog else "-"])
        lines.append("Targets (doses in Gy)")
        lines += _table(["target", "vol cc", "D98", "D95", "D50", "D2", "Dmax", "V100%", "CI", "Paddick", "GI",
                         "R50", "D2cm%", "RTOG"], rows, set(range(1, 13)))
        lines.append("")
    if report.targets and report.scheme is not None and report.rx_gy:
        sch = report.scheme
        lines.append(f"ICRU 91 report: Rx {sch.total_gy:g} Gy in {sch.fractions} fx ({sch.dose_per_fraction_gy:.4g} Gy/fx)"
                     f" to {report.target or '-'}; D98/D95/D50/D2 in % Rx")
        rows = [[name, _fmt(t.volume_cc), _fmt(100 * t.d98_gy / report.rx_gy, 1),
                 _fmt(100 * t.d95_gy / report.rx_gy, 1), _fmt(100 * t.d50_gy / report.rx_gy, 1),
                 _fmt(100 * t.d2_gy / report.rx_gy, 1), _fmt(t.indices.hi if t.indices else None, 3)]
                for name, t in report.targets.items()]
        lines += _table(["target", "vol cc", "D98%", "D95%", "D50%", "D2%", "HI"], rows, set(range(1, 7)))
        lines.append("")
    if report.structures:
        rows = [[n, s.role, _fmt(s.volume_cc), _fmt(s.mean_gy), _fmt(s.max_gy), _fmt(s.d0035_gy)]
                for n, s in report.structures.items()]
        lines.append("Structures (doses in Gy)")
        lines += _table(["structure", "role", "vol cc", "mean", "max", "D0.035cc"], rows, {2, 3, 4, 5})
        lines.append("")
    if report.goals:
        rows = []
        for r in report.goals:
            g = r.goal
            where = r.structure or g.structure
            label = g.metric_label + (" [fallback]" if g.fallback else "") + (
                f" [from {g.converted_from_fractions} fx]" if g.converted_from_fractions else "")
            row = [where, label, _value_text(r), _limit_text(r), f"{int(g.priority)} {g.priority.name.lower()}",
                   _result_text(r)]
            if show_sources:
                row.append(g.source)
            rows.append(row)
        headers = ["structure", "metric", "value", "limit", "priority", "result"] + (["source"] if show_sources else [])
        lines.append("Goals")
        lines += _table(headers, rows, {2})
        lines.append("")
    if report.coverage is not None:
        lines.append(f"Coverage: {report.coverage.status} ({report.coverage.note})")
    if report.reirradiation:
        rows = [[r.structure, r.organ, f"{r.discount_pct:g}%", _fmt(r.prior_eqd2_d01_gy), _fmt(r.new_eqd2_d01_gy),
                 _fmt(r.cumulative_eqd2_d01_gy), _fmt(r.limit_gy, 1),
                 "-" if r.passed is None else ("PASS" if r.passed else "FAIL")] for r in report.reirradiation]
        lines.append("")
        lines.append("Re-irradiation (EQD2 on 0.1 cc, alpha/beta 2.5 Gy, Michigan table)")
        lines += _table(["structure", "organ", "discount", "prior", "new", "cumulative", "limit", "result"], rows,
                        {2, 3, 4, 5, 6})
    if report.protocol is not None:
        d = report.as_dict()["summary"]
        verdict = {True: "ACCEPTABLE", False: "NOT ACCEPTABLE", None: "-"}[report.acceptable]
        lines.append(f"Summary: {d['n_passed']} passed, {d['n_failed']} failed ({d['n_failed_mandatory']} mandatory), "
                     f"{d['n_not_evaluable']} not evaluable; plan {verdict}")
    if report.protocol is not None and report.scheme is not None:
        for n in report.protocol.resolution_notes(report.scheme):
            if "converted" in n or "not applied" in n or "not available" in n:
                lines.append(f"note: {n}")
    for n in report.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)

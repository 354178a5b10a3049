"""Side-by-side comparison of two evaluations (ours against a clinical dose, two plans, two schemes).

:func:`compare_reports` takes two :class:`PlanReport` objects or their
``metrics.json`` content (a dict, or the path of the file) evaluated on the same
structures and returns a :class:`ComparisonTable`: one row per metric with the
two values and their difference ``a - b`` (absolute, and relative to ``b`` in %).

Rows come in sections:

* ``prescription``: dose, fractions, BED10;
* ``target``: the ICRU 91 items and plan indices of every target
  (volume, D98/D95/D50/D2, Dmax, Dmean, V100, V90, CI, Paddick, GI, R50, D2cm,
  HI, V105 outside, RTOG class);
* ``structure``: volume, mean, max, D0.035cc, D0.1cc of every structure;
* ``goal``: every protocol goal (matched on structure, metric and limit) with
  both values and both verdicts;
* ``delivery``: technique, beams or arcs, control points, total MU per fraction,
  estimated delivery time, deliverability and the independent MU check, when the
  metrics carry the ``plan`` and ``qa`` keys of a sbrtplan plan;
* ``summary``: goals passed / failed and the acceptability of each plan.

A metric present in only one report has an empty cell on the other side (and no
difference).  The volumes of a structure should agree to a few percent when both
sides used the same structure set; a larger difference is flagged in the row's
note, because every dose-volume difference of that structure is then suspect.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .._log import atomic_output
from ..errors import InputError
from .compliance import PlanReport
from .report import SCHEMA_VERSION, _table, metrics_dict

#: Target metrics compared (metrics.json key, label, unit).
TARGET_KEYS: tuple[tuple[str, str, str], ...] = (
    ("volume_cc", "volume", "cc"), ("D98_gy", "D98%", "Gy"), ("D95_gy", "D95%", "Gy"), ("D50_gy", "D50%", "Gy"),
    ("D2_gy", "D2%", "Gy"), ("Dmax_gy", "Dmax", "Gy"), ("Dmean_gy", "Dmean", "Gy"), ("V100_pct", "V100%Rx", "%"),
    ("V90_pct", "V90%Rx", "%"), ("CI_rtog", "CI (RTOG)", "ratio"), ("CI_paddick", "CI (Paddick)", "ratio"),
    ("GI", "GI (Paddick)", "ratio"), ("R50", "R50%", "ratio"), ("D2cm_pct", "D2cm", "%Rx"), ("HI", "HI (ICRU 83)",
                                                                                            "ratio"),
    ("V105_outside_pct", "V105% outside PTV", "% PTV"), ("rtog_class", "RTOG class", ""))
#: Structure metrics compared.
STRUCTURE_KEYS: tuple[tuple[str, str, str], ...] = (
    ("volume_cc", "volume", "cc"), ("mean_gy", "Dmean", "Gy"), ("max_gy", "Dmax", "Gy"),
    ("D0.035cc_gy", "D0.035cc", "Gy"), ("D0.1cc_gy", "D0.1cc", "Gy"))
#: Relative volume difference above which a structure row is flagged (different contours or grids).
VOLUME_MISMATCH_PCT = 5.0


@dataclass
class ComparisonRow:
    """One metric of two evaluations.

    ``a`` and ``b`` are numbers, strings (verdicts, classes) or None (absent);
    ``diff = a - b`` and ``rel_diff_pct = 100 (a - b) / |b|`` when both are numbers.
    """

    section: str
    name: str
    metric: str
    unit: str
    a: float | str | None
    b: float | str | None
    note: str = ""
    status_a: str = ""          # goals: pass / fail / not_evaluable
    status_b: str = ""

    @property
    def diff(self) -> float | None:
        if _is_num(self.a) and _is_num(self.b):
            return float(self.a) - float(self.b)
        return None

    @property
    def rel_diff_pct(self) -> float | None:
        d = self.diff
        if d is None or float(self.b) == 0.0:
            return None
        return 100.0 * d / abs(float(self.b))


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass
class ComparisonTable:
    """Rows of a two-way comparison; see the module docstring."""

    labels: tuple[str, str]
    rows: list[ComparisonRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def section(self, name: str) -> list[ComparisonRow]:
        return [r for r in self.rows if r.section == name]

    def get(self, section: str, name: str, metric: str) -> ComparisonRow:
        """The row of ``metric`` for ``name`` in ``section`` (KeyError when absent)."""
        for r in self.rows:
            if r.section == section and r.name == name and r.metric == metric:
                return r
        raise KeyError(f"no {section} row {name} {metric}")

    # -------------------------------------------------------------- output
    def format(self, sections: tuple[str, ...] | None = None) -> str:
        """Aligned terminal text, one block per section.

        Parameters
        ----------
        sections : tuple of str, optional
            Sections to print, in the standard order (default: all); names as in
            the module docstring.
        """
        la, lb = self.labels
        titles = {"prescription": "Prescription", "target": "Targets", "structure": "Structures",
                  "goal": "Goals", "delivery": "Delivery", "summary": "Summary"}
        if sections is not None:
            unknown = set(sections) - set(titles)
            if unknown:
                raise InputError(f"unknown comparison section(s) {sorted(unknown)}; expected some of {list(titles)}")
        out: list[str] = [f"Comparison: {la} (a) vs {lb} (b); diff = a - b"]
        for sec, title in titles.items():
            if sections is not None and sec not in sections:
                continue
            rows = self.section(sec)
            if not rows:
                continue
            body = []
            for r in rows:
                cells = [r.name, r.metric + (f" [{r.unit}]" if r.unit else ""), _cell(r.a, r.status_a),
                         _cell(r.b, r.status_b), _num(r.diff), _num(r.rel_diff_pct, 1)]
                body.append(cells + [r.note])
            out += ["", title]
            out += _table(["name", "metric", la, lb, "diff", "diff %", "note"], body, {2, 3, 4, 5})
        for n in self.notes:
            out.append(f"note: {n}")
        return "\n".join(out)

    def to_csv(self, path=None) -> str:
        """CSV text (``section, name, metric, unit, <a>, <b>, diff, rel_diff_pct, status_<a>, status_<b>, note``).

        Written atomically to ``path`` when given.  Numbers are written in full
        precision; absent values are empty cells.
        """
        la, lb = self.labels
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["section", "name", "metric", "unit", la, lb, "diff", "rel_diff_pct", f"status_{la}",
                    f"status_{lb}", "note"])
        for r in self.rows:
            w.writerow([r.section, r.name, r.metric, r.unit, _csv(r.a), _csv(r.b), _csv(r.diff),
                        _csv(r.rel_diff_pct), r.status_a, r.status_b, r.note])
        text = buf.getvalue()
        if path is not None:
            with atomic_output(path) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
        return text


def _csv(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def _num(v, nd: int = 3) -> str:
    return "-" if v is None else f"{v:+.{nd}f}"


def _cell(v, status: str = "") -> str:
    if v is None:
        text = "-"
    elif isinstance(v, bool):
        text = "yes" if v else "no"
    elif isinstance(v, int):
        text = str(v)
    elif _is_num(v):
        text = f"{float(v):.3f}" if abs(float(v)) < 1000 else f"{float(v):.1f}"
    else:
        text = str(v)
    if status:
        text += {"pass": " PASS", "fail": " FAIL", "not_evaluable": " n/e"}.get(status, f" {status}")
    return text


def _as_metrics(x, which: str) -> dict:
    if isinstance(x, PlanReport):
        return metrics_dict(x)
    if isinstance(x, (str, Path)):
        p = Path(x)
        try:
            x = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{which}: metrics file not found: {p}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{which}: {p} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(x, dict):
        raise InputError(f"{which}: expected a PlanReport, a metrics dict or a metrics.json path, "
                         f"got {type(x).__name__}")
    ver = str(x.get("schema_version", ""))
    if not ver:
        raise InputError(f"{which}: no 'schema_version': not a sbrtplan metrics.json")
    if ver.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(f"{which}: metrics schema version {ver} is not compatible with {SCHEMA_VERSION} "
                         f"(different major version)")
    return x


def _goal_key(g: dict) -> tuple:
    return (g.get("structure"), g.get("metric_label") or g.get("metric"), g.get("comparator"), g.get("limit"),
            g.get("limit_unit"), g.get("stage"))


def compare_reports(a, b, labels: tuple[str, str] = ("sbrtplan", "clinical")) -> ComparisonTable:
    """Side-by-side metrics of two evaluations with their differences.

    Parameters
    ----------
    a, b : PlanReport, dict or path
        Evaluations of two doses, ideally on the same structures and against the
        same protocol and scheme (``metrics_dict`` output or ``metrics.json``).
    labels : (str, str)
        Column names of ``a`` and ``b``.

    Returns
    -------
    ComparisonTable
        ``diff = a - b``.

    Raises
    ------
    InputError
        A dict that is not a metrics.json of a compatible schema version, or equal labels.
    """
    if len(labels) != 2 or labels[0] == labels[1]:
        raise InputError(f"compare_reports needs two different labels, got {labels!r}")
    ma, mb = _as_metrics(a, labels[0]), _as_metrics(b, labels[1])
    table = ComparisonTable(labels=(str(labels[0]), str(labels[1])))

    pa, pb = ma.get("prescription") or {}, mb.get("prescription") or {}
    for key, label, unit in (("dose_gy", "dose", "Gy"), ("fractions", "fractions", ""),
                             ("bed10_gy", "BED10", "Gy")):
        if key in pa or key in pb:
            table.rows.append(ComparisonRow("prescription", pa.get("target") or pb.get("target") or "-", label, unit,
                                            pa.get(key), pb.get(key)))
    if pa and pb and (pa.get("dose_gy"), pa.get("fractions")) != (pb.get("dose_gy"), pb.get("fractions")):
        table.notes.append("the two evaluations use different prescriptions: %Rx metrics and goals differ in "
                           "meaning")
    proto = [(m.get("protocol") or {}).get("name") for m in (ma, mb)]
    if proto[0] != proto[1]:
        table.notes.append(f"different protocols: {proto[0]} vs {proto[1]}")

    ta, tb = ma.get("targets") or {}, mb.get("targets") or {}
    for name in _union(ta, tb):
        xa, xb = ta.get(name) or {}, tb.get(name) or {}
        for key, label, unit in TARGET_KEYS:
            va, vb = xa.get(key), xb.get(key)
            if va is None and vb is None:
                continue
            table.rows.append(ComparisonRow("target", name, label, unit, va, vb))

    sa, sb = ma.get("structures") or {}, mb.get("structures") or {}
    for name in _union(sa, sb):
        xa, xb = sa.get(name) or {}, sb.get(name) or {}
        note = ""
        if not xa or not xb:
            note = f"only in {labels[0] if xa else labels[1]}"
        else:
            va, vb = xa.get("volume_cc"), xb.get("volume_cc")
            if _is_num(va) and _is_num(vb) and vb > 0 and abs(va - vb) / vb * 100 > VOLUME_MISMATCH_PCT:
                note = f"volumes differ by {100 * (va - vb) / vb:+.1f} %: not the same structure"
        for key, label, unit in STRUCTURE_KEYS:
            va, vb = xa.get(key), xb.get(key)
            if va is None and vb is None:
                continue
            table.rows.append(ComparisonRow("structure", name, label, unit, va, vb, note if key == "volume_cc"
                                            else ""))

    ga = {}
    for g in ma.get("goals") or []:
        ga.setdefault(_goal_key(g), g)
    gb = {}
    for g in mb.get("goals") or []:
        gb.setdefault(_goal_key(g), g)
    for key in list(ga) + [k for k in gb if k not in ga]:
        xa, xb = ga.get(key) or {}, gb.get(key) or {}
        ref = xa or xb
        label = f"{ref.get('metric_label') or ref.get('metric')} {ref.get('comparator')} {_limit_text(ref)}"
        note = "mandatory" if ref.get("mandatory") else "optional"
        if not xa or not xb:
            note += f"; only in {labels[0] if xa else labels[1]}"
        table.rows.append(ComparisonRow("goal", str(ref.get("structure")), label, ref.get("unit") or "",
                                        xa.get("value"), xb.get("value"), note,
                                        status_a=str(xa.get("status", "")), status_b=str(xb.get("status", ""))))

    table.rows.extend(_delivery_rows(ma, mb))
    ua, ub = ma.get("summary") or {}, mb.get("summary") or {}
    for key, label in (("n_passed", "goals passed"), ("n_failed", "goals failed"),
                       ("n_failed_mandatory", "mandatory goals failed"), ("n_not_evaluable", "not evaluable"),
                       ("acceptable", "acceptable")):
        if key in ua or key in ub:
            table.rows.append(ComparisonRow("summary", "plan", label, "", ua.get(key), ub.get(key)))
    ca, cb = ((m.get("coverage") or {}).get("status") for m in (ma, mb))
    if ca or cb:
        table.rows.append(ComparisonRow("summary", "plan", "coverage", "", ca, cb))
    return table


def delivery_summary(metrics: dict) -> dict:
    """Delivery figures of a plan's metrics (``plan`` and ``qa`` keys); empty when absent.

    Keys: ``technique``, ``beams`` (beams or arcs), ``control_points``,
    ``total_mu`` (per fraction), ``mu_per_gy`` (MU per fraction over the dose per
    fraction, a modulation figure independent of the scheme), ``delivery_time_s``
    (estimate from the machine's delivery limits, beam-on and gantry motion, per
    fraction, without imaging or couch moves), ``deliverable`` and ``mu_check``
    (independent check passed).
    """
    plan, qa = metrics.get("plan") or {}, metrics.get("qa") or {}
    if not plan and not qa:
        return {}
    out: dict = {}
    if plan:
        out["technique"] = plan.get("technique")
        out["beams"] = plan.get("n_beams")
        beams = plan.get("beams") or []
        if beams:
            out["control_points"] = int(sum(int(b.get("control_points", 0)) for b in beams))
        mu = plan.get("total_mu_per_fraction")
        out["total_mu"] = mu
        pres = metrics.get("prescription") or {}
        if _is_num(mu) and _is_num(pres.get("dose_gy")) and _is_num(pres.get("fractions")) and pres["dose_gy"] > 0:
            out["mu_per_gy"] = float(mu) / (float(pres["dose_gy"]) / float(pres["fractions"]))
    t = (qa.get("delivery_time_s") or {}).get("total")
    if t is not None:
        out["delivery_time_s"] = t
    if "deliverability" in qa:
        out["deliverable"] = bool(qa["deliverability"].get("passed"))
    mc = qa.get("mu_check")
    if isinstance(mc, dict) and "passed" in mc:
        out["mu_check"] = bool(mc["passed"])
    return out


#: Delivery rows (delivery_summary key, label, unit).
DELIVERY_KEYS: tuple[tuple[str, str, str], ...] = (
    ("technique", "technique", ""), ("beams", "beams / arcs", ""), ("control_points", "control points", ""),
    ("total_mu", "total MU per fraction", "MU"), ("mu_per_gy", "MU per Gy (per fraction)", "MU/Gy"),
    ("delivery_time_s", "estimated delivery time per fraction", "s"), ("deliverable", "deliverable", ""),
    ("mu_check", "independent MU check passed", ""))


def _delivery_rows(ma: dict, mb: dict) -> list[ComparisonRow]:
    da, db = delivery_summary(ma), delivery_summary(mb)
    rows = []
    for key, label, unit in DELIVERY_KEYS:
        va, vb = da.get(key), db.get(key)
        if va is None and vb is None:
            continue
        rows.append(ComparisonRow("delivery", "plan", label, unit, va, vb))
    return rows


def _limit_text(g: dict) -> str:
    lim, unit = g.get("limit"), g.get("limit_unit") or ""
    if lim is None:
        return "-"
    if unit in ("ratio", ""):
        return f"{lim:g}"
    return f"{lim:g}{unit}" if unit.startswith("%") else f"{lim:g} {unit}"


def _union(x: dict, y: dict) -> list[str]:
    return list(x) + [k for k in y if k not in x]

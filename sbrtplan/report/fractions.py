"""Fractionation comparison: one plan per scheme on the same case, side by side.

Used by ``sbrtplan compare-fractions``.  Each scheme contributes one *row*::

    {"scheme": "27/3",                 # TOTAL/FRACTIONS (as given to the planner)
     "metrics": {...},                 # metrics.json content of that plan (evaluation.metrics_dict)
     "mu_per_fraction": 2450.0,        # delivery MU per fraction, all beams (None: not planned)
     "label": "27/3 VMAT"}             # optional display name (default: the scheme)

(:func:`rows_from_plan` builds it from a ``workflow.Plan``.)  From the rows,
:func:`fraction_comparison` derives per scheme:

* **prescription**: BED10 and EQD2 (alpha/beta 10 Gy) of the prescription;
* **target**: D95 and D98 of the prescription target with their BED10 / EQD2
  (per-voxel LQ conversion commutes with D_x because it is monotone, so
  ``EQD2(D95) = D95`` of the EQD2 distribution);
* **organ**: EQD2 of the near-maximum (D0.035cc) and mean EQD2 of every organ a
  goal was evaluated on, with the organ's alpha/beta from the protocol (the
  ``radiobiology`` entry of metrics.json; cord 2 Gy in the bone standard, other
  organs 2.5 Gy);
* **goal**: value, limit and verdict of every goal (limits change with the
  fraction number: TG-101 1 / 3 / 5 fx tables, EQD2-converted for 10 fx);
* **summary**: goals passed / failed / not evaluable, acceptability, coverage;
* **delivery**: MU per fraction and over the course.

Outputs: an aligned text table and a tidy CSV (one value per line:
``scheme, fractions, total_gy, section, structure, metric, value, unit, limit,
alpha_beta_gy, passed, note``), and a PNG of four panels
(:func:`plot_fraction_comparison`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from .._log import atomic_output
from ..errors import InputError, ProtocolError
from ..evaluation.report import _table
from ..protocols import ALPHA_BETA_MICHIGAN_GY, ALPHA_BETA_TUMOUR_GY, Scheme, bed_gy, eqd2_gy

CSV_COLUMNS = ("scheme", "fractions", "total_gy", "section", "structure", "metric", "value", "unit", "limit",
               "alpha_beta_gy", "passed", "note")


def rows_from_plan(plan) -> dict:
    """The row of one ``workflow.Plan`` (``scheme``, ``metrics``, ``total_mu``)."""
    return {"scheme": str(plan.scheme), "metrics": plan.metrics, "mu_per_fraction": float(plan.total_mu)}


@dataclass
class _Scheme:
    label: str
    scheme: Scheme
    metrics: dict
    mu_per_fraction: float | None
    target: str | None
    values: list[dict] = field(default_factory=list)   # CSV records

    def add(self, section, structure, metric, value, unit="", limit=None, alpha_beta=None, passed=None, note=""):
        self.values.append({"section": section, "structure": structure, "metric": metric, "value": value,
                            "unit": unit, "limit": limit, "alpha_beta_gy": alpha_beta, "passed": passed,
                            "note": note})

    def get(self, section, structure, metric):
        for v in self.values:
            if (v["section"], v["structure"], v["metric"]) == (section, structure, metric):
                return v["value"]
        return None


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _parse_rows(rows) -> list[_Scheme]:
    if not isinstance(rows, (list, tuple)) or not rows:
        raise InputError("fraction comparison: expected a non-empty list of rows "
                         "({'scheme': '27/3', 'metrics': {...}, 'mu_per_fraction': MU})")
    out = []
    for i, r in enumerate(rows):
        where = f"fraction comparison, row #{i + 1}"
        if not isinstance(r, dict) or "scheme" not in r or "metrics" not in r:
            raise InputError(f"{where}: expected a dict with 'scheme' and 'metrics' (and 'mu_per_fraction')")
        try:
            sch = Scheme.parse(r["scheme"])
        except ProtocolError as exc:
            raise InputError(f"{where}: {exc}") from None
        m = r["metrics"]
        if not isinstance(m, dict) or "schema_version" not in m:
            raise InputError(f"{where} ({sch.short}): 'metrics' must be the metrics.json content "
                             f"(evaluation.metrics_dict), got {type(m).__name__}")
        p = m.get("prescription") or {}
        if p and (abs(float(p.get("dose_gy", sch.total_gy)) - sch.total_gy) > 1e-6
                  or int(p.get("fractions", sch.fractions)) != sch.fractions):
            raise InputError(f"{where}: scheme {sch.short} does not match the metrics' prescription "
                             f"{p.get('dose_gy')} Gy / {p.get('fractions')} fx")
        mu = r.get("mu_per_fraction")
        if mu is not None and not (_num(mu) and mu >= 0):
            raise InputError(f"{where} ({sch.short}): mu_per_fraction must be a number >= 0, got {mu!r}")
        out.append(_Scheme(str(r.get("label") or sch.short), sch, m, None if mu is None else float(mu),
                           p.get("target")))
    return out


def _organ_names(m: dict, target_names: set[str]) -> list[str]:
    """Organs a goal was evaluated on (targets, plan indices and the body left out)."""
    names: list[str] = []
    structures = m.get("structures") or {}
    for g in m.get("goals") or []:
        s = g.get("structure")
        if s is None or s in target_names or g.get("value") is None or s not in structures:
            continue
        role = str((structures.get(s) or {}).get("role", "")).upper()
        if role in ("EXTERNAL", "PTV", "CTV", "GTV", "ITV"):
            continue
        if s not in names:
            names.append(s)
    return names


def _derive(s: _Scheme) -> None:
    n, total = s.scheme.fractions, s.scheme.total_gy
    s.add("prescription", s.target or "-", "BED10_Rx", bed_gy(total, n, ALPHA_BETA_TUMOUR_GY), "Gy",
          alpha_beta=ALPHA_BETA_TUMOUR_GY)
    s.add("prescription", s.target or "-", "EQD2_10_Rx", eqd2_gy(total, n, ALPHA_BETA_TUMOUR_GY), "Gy",
          alpha_beta=ALPHA_BETA_TUMOUR_GY)
    targets = s.metrics.get("targets") or {}
    t = targets.get(s.target) if s.target else None
    if t:
        rb = t.get("radiobiology") or {}
        ab = float(rb.get("alpha_beta_gy", ALPHA_BETA_TUMOUR_GY))
        for key in ("D95", "D98"):
            d = t.get(f"{key}_gy")
            if not _num(d):
                continue
            s.add("target", s.target, f"{key}_gy", d, "Gy")
            s.add("target", s.target, f"{key}_pct_rx", 100.0 * d / total, "%Rx")
            s.add("target", s.target, f"BED_{key}", bed_gy(d, n, ab), "Gy", alpha_beta=ab)
            s.add("target", s.target, f"EQD2_{key}", eqd2_gy(d, n, ab), "Gy", alpha_beta=ab)
        for key in ("V100_pct", "CI_paddick", "GI", "R50", "D2cm_pct"):
            if _num(t.get(key)):
                s.add("target", s.target, key, t[key], {"V100_pct": "%", "D2cm_pct": "%Rx"}.get(key, "ratio"))
    structures = s.metrics.get("structures") or {}
    for name in _organ_names(s.metrics, set(targets)):
        st = structures[name]
        rb = st.get("radiobiology") or {}
        ab = float(rb.get("alpha_beta_gy", ALPHA_BETA_MICHIGAN_GY))
        note = rb.get("alpha_beta_source", "" if rb else "alpha/beta not in metrics: organ default 2.5 Gy")
        near = st.get("D0.035cc_gy")
        if _num(near):
            s.add("organ", name, "D0.035cc_gy", near, "Gy")
            s.add("organ", name, "EQD2_D0.035cc", eqd2_gy(near, n, ab), "Gy", alpha_beta=ab, note=note)
        mean_eq = (rb.get("eqd2_gy") or {}).get("mean")
        if _num(mean_eq):
            s.add("organ", name, "EQD2_mean", mean_eq, "Gy", alpha_beta=ab, note="mean of the per-voxel EQD2")
    for g in s.metrics.get("goals") or []:
        label = g.get("metric_label") or g.get("metric")
        if g.get("stage") == "coverage_fallback":
            label += " [fallback]"
        s.add("goal", g.get("structure"), label, g.get("value"), g.get("unit") or "", g.get("limit"),
              passed=g.get("passed"), note=("mandatory" if g.get("mandatory") else "optional")
              + (f"; converted from {g['converted_from_fractions']} fx" if g.get("converted_from_fractions") else ""))
    summ = s.metrics.get("summary") or {}
    for key in ("n_passed", "n_failed", "n_failed_mandatory", "n_not_evaluable", "acceptable"):
        if key in summ:
            s.add("summary", "plan", key, summ[key])
    cov = (s.metrics.get("coverage") or {}).get("status")
    if cov:
        s.add("summary", "plan", "coverage", cov)
    if s.mu_per_fraction is not None:
        s.add("delivery", "plan", "MU_per_fraction", s.mu_per_fraction, "MU")
        s.add("delivery", "plan", "MU_total", s.mu_per_fraction * n, "MU")


def _f(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _num(v):
        return f"{float(v):.{nd}f}"
    return str(v)


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def fraction_comparison(rows: list[dict]) -> tuple[str, str]:
    """Table text and CSV text comparing one plan per fractionation scheme.

    Parameters
    ----------
    rows : list of dict
        One per scheme, see the module docstring (``scheme``, ``metrics``,
        ``mu_per_fraction``, optional ``label``).

    Returns
    -------
    (str, str)
        The aligned terminal table and the tidy CSV (columns :data:`CSV_COLUMNS`).

    Raises
    ------
    InputError
        A row without scheme or metrics, or whose metrics belong to another prescription.
    """
    schemes = _parse_rows(rows)
    for s in schemes:
        _derive(s)
    protos = {(s.metrics.get("protocol") or {}).get("name") for s in schemes}
    lines = [f"Fractionation comparison: protocol {', '.join(sorted(str(p) for p in protos))}; "
             f"target {', '.join(sorted({str(s.target) for s in schemes}))}"]
    head = ["scheme", "fx", "Gy/fx", "BED10 Rx", "EQD2 Rx", "D95 %Rx", "BED10 D95", "EQD2 D95", "passed", "failed",
            "mand. failed", "n/e", "coverage", "acceptable", "MU/fx", "MU total"]
    body = []
    for s in schemes:
        t = s.target
        body.append([s.label, str(s.scheme.fractions), _f(s.scheme.dose_per_fraction_gy, 2),
                     _f(s.get("prescription", t or "-", "BED10_Rx")), _f(s.get("prescription", t or "-", "EQD2_10_Rx")),
                     _f(s.get("target", t, "D95_pct_rx")), _f(s.get("target", t, "BED_D95")),
                     _f(s.get("target", t, "EQD2_D95")), _f(s.get("summary", "plan", "n_passed"), 0),
                     _f(s.get("summary", "plan", "n_failed"), 0), _f(s.get("summary", "plan", "n_failed_mandatory"), 0),
                     _f(s.get("summary", "plan", "n_not_evaluable"), 0), _f(s.get("summary", "plan", "coverage")),
                     _f(s.get("summary", "plan", "acceptable")), _f(s.get("delivery", "plan", "MU_per_fraction"), 0),
                     _f(s.get("delivery", "plan", "MU_total"), 0)])
    lines += [""] + _table(head, body, set(range(1, 12)) | {14, 15})

    organs: list[tuple[str, float | None]] = []
    for s in schemes:
        for v in s.values:
            if v["section"] == "organ" and v["metric"] == "EQD2_D0.035cc" and v["structure"] not in \
                    [o for o, _ in organs]:
                organs.append((v["structure"], v["alpha_beta_gy"]))
    if organs:
        lines += ["", "Organ near-maximum EQD2 (D0.035cc converted per scheme, Gy)"]
        body = [[f"{o} (a/b {ab:g})" if ab else o] + [_f(s.get("organ", o, "EQD2_D0.035cc")) for s in schemes]
                for o, ab in organs]
        lines += _table(["organ"] + [s.label for s in schemes], body, set(range(1, len(schemes) + 1)))

    goal_keys: list[tuple[str, str]] = []
    for s in schemes:
        for v in s.values:
            k = (v["structure"], v["metric"])
            if v["section"] == "goal" and k not in goal_keys:
                goal_keys.append(k)
    if goal_keys:
        lines += ["", "Goals per scheme (value, verdict; limits follow each scheme's fraction number)"]
        body = []
        for st, met in goal_keys:
            cells = []
            for s in schemes:
                hits = [v for v in s.values if v["section"] == "goal" and (v["structure"], v["metric"]) == (st, met)]
                if not hits:
                    cells.append("")
                    continue
                worst = min(hits, key=lambda v: {False: 0, True: 2, None: 1}[v["passed"]])
                verdict = {True: "PASS", False: "FAIL", None: "n/e"}[worst["passed"]]
                cells.append(verdict if worst["value"] is None else f"{_f(worst['value'], 2)} {verdict}")
            body.append([str(st), met] + cells)
        lines += _table(["structure", "metric"] + [s.label for s in schemes], body, set(range(2, len(schemes) + 2)))

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in schemes:
        for v in s.values:
            w.writerow([s.label, s.scheme.fractions, s.scheme.total_gy, v["section"], v["structure"], v["metric"],
                        _csv_cell(v["value"]), v["unit"], _csv_cell(v["limit"]), _csv_cell(v["alpha_beta_gy"]),
                        _csv_cell(v["passed"]), v["note"]])
    return "\n".join(lines), buf.getvalue()


def plot_fraction_comparison(rows: list[dict], path_png) -> Path:
    """PNG of four panels: target BED10/EQD2, organ near-max EQD2, goals passed/failed, MU.

    Parameters
    ----------
    rows : list of dict
        As for :func:`fraction_comparison`.
    path_png : str or Path
        Written atomically.

    Returns
    -------
    Path
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    schemes = _parse_rows(rows)
    for s in schemes:
        _derive(s)
    labels = [s.label for s in schemes]
    x = np.arange(len(schemes))
    fig = Figure(figsize=(11, 8), dpi=96, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 2)

    a = ax[0, 0]
    series = [("BED10 Rx", "prescription", "BED10_Rx"), ("EQD2 Rx", "prescription", "EQD2_10_Rx"),
              ("BED10 D95", "target", "BED_D95"), ("EQD2 D95", "target", "EQD2_D95")]
    wdt = 0.8 / len(series)
    for k, (name, sec, met) in enumerate(series):
        vals = [s.get(sec, s.target or "-", met) for s in schemes]
        vals = [np.nan if v is None else float(v) for v in vals]
        a.bar(x + (k - (len(series) - 1) / 2) * wdt, vals, wdt, label=name)
    a.set_title("Target (alpha/beta 10 Gy)")
    a.set_ylabel("Gy")
    a.legend(fontsize=8)

    a = ax[0, 1]
    organs: list[str] = []
    for s in schemes:
        for v in s.values:
            if v["section"] == "organ" and v["metric"] == "EQD2_D0.035cc" and v["structure"] not in organs:
                organs.append(v["structure"])
    for o in organs:
        vals = [s.get("organ", o, "EQD2_D0.035cc") for s in schemes]
        a.plot(x, [np.nan if v is None else float(v) for v in vals], marker="o", label=o)
    a.set_title("Organ near-maximum EQD2 (D0.035cc)")
    a.set_ylabel("Gy")
    if organs:
        a.legend(fontsize=7, ncol=2)

    a = ax[1, 0]
    passed = np.array([float(s.get("summary", "plan", "n_passed") or 0) for s in schemes])
    failed = np.array([float(s.get("summary", "plan", "n_failed") or 0) for s in schemes])
    ne = np.array([float(s.get("summary", "plan", "n_not_evaluable") or 0) for s in schemes])
    a.bar(x, passed, color="#2ca02c", label="passed")
    a.bar(x, failed, bottom=passed, color="#d62728", label="failed")
    a.bar(x, ne, bottom=passed + failed, color="#bbbbbb", label="not evaluable")
    a.set_title("Goals")
    a.set_ylabel("number of goals")
    a.legend(fontsize=8)

    a = ax[1, 1]
    mu = [s.get("delivery", "plan", "MU_per_fraction") for s in schemes]
    tot = [s.get("delivery", "plan", "MU_total") for s in schemes]
    a.bar(x - 0.2, [np.nan if v is None else v for v in mu], 0.4, label="MU per fraction")
    a.bar(x + 0.2, [np.nan if v is None else v for v in tot], 0.4, label="MU over the course")
    a.set_title("Delivery")
    a.set_ylabel("MU")
    a.legend(fontsize=8)
    for a in ax.ravel():
        a.set_xticks(x, labels)
        a.grid(axis="y", alpha=0.3)

    path = Path(path_png)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path

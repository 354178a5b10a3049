"""QA of every plan of a cohort: a verification plan per RTPLAN, the comparison where a measurement
is given, and a pass-rate summary.

The cohort is a CSV list with a header: ``name,rtplan`` and optionally
``measured`` (a plane file), ``measured_point_gy``, ``shift_u_mm``, ``shift_v_mm``;
relative paths are relative to the list's folder.  Every plan gets its own
folder ``OUT/<name>/``; a plan whose QA raises an input error is recorded with
the error and the batch goes on.
"""

from __future__ import annotations

import csv
import io as _io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .._log import atomic_output, get_logger
from ..case import Case
from ..errors import InputError, SbrtplanError
from .compare import Verdict, compare_measurement
from .criteria import QACriteria, load_criteria
from .measured import read_measured_plane
from .outputs import write_comparison, write_json, write_verification
from .verification import AxisMode, verify_on_phantom

log = get_logger(__name__)

SUMMARY_COLUMNS = ["name", "verdict", "chamber_dose_gy", "measured_point_gy", "point_diff_pct", "gamma_2pct_2mm_global",
                   "gamma_2pct_2mm_local", "gamma_3pct_2mm_global", "gamma_3pct_2mm_local", "mu", "error"]


@dataclass
class QAEntry:
    name: str
    rtplan: Path
    measured: Path | None = None
    measured_point_gy: float | None = None
    shift_mm: tuple[float, float] = (0.0, 0.0)
    report: Path | None = None      # the plan's report.html that gets the QA page


def _opt_float(value: str | None, where: str) -> float | None:
    if value is None or not str(value).strip():
        return None
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{where}: {value!r} is not finite")
    return v


def read_qa_list(path) -> list[QAEntry]:
    """Read the cohort list (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"--cohort {path}: cannot read ({exc.strerror})") from None
    rows = list(csv.DictReader(_io.StringIO(text)))
    if not rows or "rtplan" not in rows[0] or "name" not in rows[0]:
        raise InputError(f"--cohort {path}: expected a CSV with at least the columns name,rtplan and one row")
    base = path.parent
    out, seen = [], set()
    for n, r in enumerate(rows, 2):
        where = f"{path}:{n}"
        name = (r.get("name") or "").strip()
        if not name or name in seen or any(c in name for c in "/\\"):
            raise InputError(f"{where}: name {name!r} must be non-empty, unique and without slashes")
        seen.add(name)
        rt = (r.get("rtplan") or "").strip()
        if not rt:
            raise InputError(f"{where}: empty rtplan")
        meas = (r.get("measured") or "").strip()
        out.append(QAEntry(name, base / rt, (base / meas) if meas else None,
                           _opt_float(r.get("measured_point_gy"), f"{where} measured_point_gy"),
                           (_opt_float(r.get("shift_u_mm"), where) or 0.0,
                            _opt_float(r.get("shift_v_mm"), where) or 0.0)))
    return out


def _rate(comparison, key: str):
    for g in comparison.gammas:
        if g.criterion.key == key:
            return round(g.pass_rate_pct, 2)
    return None


def run_qa_batch(entries: list[QAEntry], phantom: Case, out_dir, *, gantry: AxisMode = AxisMode.PLANNED,
                 couch: AxisMode = AxisMode.PLANNED, chamber: str | None = None,
                 criteria: QACriteria | None = None, write_ct: bool = False, model=None,
                 progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """QA of every entry on ``phantom``; returns one summary row per plan (``SUMMARY_COLUMNS``)."""
    from ..io import read_rtplan

    crit = criteria or load_criteria()
    out = Path(out_dir)
    rows = []
    for k, e in enumerate(entries):
        row = {c: None for c in SUMMARY_COLUMNS}
        row["name"] = e.name
        try:
            bs = read_rtplan(e.rtplan)
            res = verify_on_phantom(phantom, bs, gantry=gantry, couch=couch, chamber=chamber, criteria=crit,
                                    model=model, source=str(e.rtplan))
            summary = write_verification(res, out / e.name, write_ct=write_ct, source_rtplan=str(e.rtplan))
            measured = None
            if e.measured is not None:
                measured = read_measured_plane(e.measured, reference_point_mm=res.reference_point_mm,
                                               orientation=res.plane.orientation)
            cmp_ = compare_measurement(res.plane, measured, calculated_point_gy=res.chamber_dose_gy,
                                       measured_point_gy=e.measured_point_gy, shift_mm=e.shift_mm, criteria=crit)
            write_comparison(cmp_, out / e.name, verification=summary, measured=measured, calculated=res.plane,
                             title=f"Patient-specific QA: {e.name}", report=e.report)
            row.update(verdict=cmp_.verdict.value, chamber_dose_gy=round(res.chamber_dose_gy, 5),
                       measured_point_gy=e.measured_point_gy,
                       point_diff_pct=None if cmp_.point is None else round(cmp_.point.diff_pct, 3),
                       mu=round(bs.total_mu_per_fraction, 1))
            for key in ("2pct_2mm_global", "2pct_2mm_local", "3pct_2mm_global", "3pct_2mm_local"):
                row[f"gamma_{key}"] = _rate(cmp_, key)
        except SbrtplanError as exc:
            log.warning("QA of '%s' failed: %s", e.name, exc)
            row.update(verdict="ERROR", error=str(exc))
        rows.append(row)
        if progress is not None:
            progress(k + 1, len(entries))
    return rows


def batch_statistics(rows: list[dict]) -> dict:
    """Pass rates over the cohort: plans by verdict, the share passing, mean gamma pass rates."""
    n = len(rows)
    by = {v.value: sum(1 for r in rows if r["verdict"] == v.value) for v in Verdict}
    by["ERROR"] = sum(1 for r in rows if r["verdict"] == "ERROR")
    # plans with both measurements (a verdict of PASS, REVIEW or FAIL); INCOMPLETE and ERROR rows are not counted
    measured = [r for r in rows if r["verdict"] in ("PASS", "REVIEW", "FAIL")]
    stats = {"n_plans": n, "by_verdict": by,
             "plans_passing_pct": round(100.0 * by["PASS"] / len(measured), 1) if measured else None}
    for key in ("point_diff_pct", "gamma_2pct_2mm_global", "gamma_3pct_2mm_global"):
        vals = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        stats[f"mean_{key}"] = round(float(vals.mean()), 3) if vals.size else None
    return stats


def write_batch_summary(rows: list[dict], out_dir) -> dict:
    """``qa_summary.csv`` (one row per plan) and ``qa_summary.json`` (the rows and the statistics)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in SUMMARY_COLUMNS})
    with atomic_output(out / "qa_summary.csv") as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    stats = batch_statistics(rows)
    write_json(out / "qa_summary.json", {"statistics": stats, "plans": rows})
    return stats


# ------------------------------------------------------------- QA inside `sbrtplan batch`
#: keys of a cohort file's ``qa`` mapping (top level or per case; the measurement keys per case)
COHORT_QA_KEYS = {"phantom": str, "grid_mm": float, "gantry": str, "couch": str, "chamber": str, "criteria": str,
                  "measured": str, "measured_point_gy": float, "shift_mm": list}


def cohort_qa_options(value, where: str, base: Path) -> tuple:
    """Validate a cohort file's ``qa`` value (``true``, ``false`` or a mapping of COHORT_QA_KEYS).

    Returns the options as sorted ``(key, value)`` pairs (hashable, for the frozen cohort task);
    ``()`` for no QA.  Relative paths (``criteria``, ``measured``) are resolved against ``base``.
    """
    if value is None or value is False:
        return ()
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: qa {value!r}; expected true, false or a mapping of {sorted(COHORT_QA_KEYS)}")
    bad = set(value) - set(COHORT_QA_KEYS)
    if bad:
        raise InputError(f"{where}: unknown qa key(s) {sorted(bad)}; allowed: {sorted(COHORT_QA_KEYS)}")
    out = {"phantom": "qa_slab"}
    for k, v in value.items():
        kind = COHORT_QA_KEYS[k]
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise InputError(f"{where}: qa.{k} {v!r}; expected a number")
            v = float(v)
        elif kind is list:
            if (not isinstance(v, (list, tuple)) or len(v) != 2
                    or not all(isinstance(x, (int, float)) and math.isfinite(float(x)) for x in v)):
                raise InputError(f"{where}: qa.{k} {v!r}; expected [DU, DV] in mm")
            v = (float(v[0]), float(v[1]))
        else:
            v = str(v)
        out[k] = v
    for k in ("gantry", "couch"):
        if k in out and out[k] not in ("planned", "zero"):
            raise InputError(f"{where}: qa.{k} {out[k]!r}; expected planned or zero")
    for k in ("criteria", "measured"):
        if k in out:
            p = Path(out[k])
            out[k] = str(p if p.is_absolute() else (base / p).resolve())
    return tuple(sorted(out.items()))


def qa_plan_folder(plan_dir, options: tuple | dict, *, model=None) -> dict:
    """Patient-specific QA of a written plan: its ``RTPLAN.dcm`` verified on the phantom into
    ``PLAN_DIR/qa/``, compared with the measurement where the options name one, and the QA page put
    into ``PLAN_DIR/report.html``.  Returns the summary row (:data:`SUMMARY_COLUMNS`), never raises
    an input error (it is recorded in the row's ``error``)."""
    opts = dict(options)
    d = Path(plan_dir)
    try:
        crit = load_criteria(opts.get("criteria"))
        from .phantom import load_qa_phantom

        phantom = load_qa_phantom(opts.get("phantom", "qa_slab"), grid_mm=opts.get("grid_mm"), criteria=crit)
    except SbrtplanError as exc:
        row = {c: None for c in SUMMARY_COLUMNS}
        row.update(name="qa", verdict="ERROR", error=str(exc))
        return row
    report = d / "report.html"
    entry = QAEntry("qa", d / "RTPLAN.dcm", Path(opts["measured"]) if opts.get("measured") else None,
                    opts.get("measured_point_gy"), tuple(opts.get("shift_mm", (0.0, 0.0))),
                    report if report.is_file() else None)
    return run_qa_batch([entry], phantom, d, gantry=AxisMode(opts.get("gantry", "planned")),
                        couch=AxisMode(opts.get("couch", "planned")), chamber=opts.get("chamber"), criteria=crit,
                        model=model)[0]

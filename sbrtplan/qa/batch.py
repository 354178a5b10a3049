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
                             title=f"Patient-specific QA: {e.name}")
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

"""TBI plans inside ``sbrtplan batch``: the cohort file's ``tbi`` options, one plan per case, and the
standard's two quality indicators over the cohort.

A cohort task with ``technique: tbi`` plans TBI instead of SBRT; its scheme is the TBI prescription
(``12/6``) and the ``tbi`` mapping (top level or per case) carries the options of ``sbrtplan tbi``::

    technique: tbi
    schemes: [12/6]
    tbi: {technique: ap-pa, distance_cm: 400}
    cases:
      - {name: p01, case: phantom:tbi}
      - {name: p02, case: ../ct/p02, tbi: {lung_block_mm: 12}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError

#: keys of a cohort file's ``tbi`` mapping and their types (the options of ``sbrtplan tbi``)
COHORT_TBI_KEYS = {"technique": str, "distance_cm": float, "jaw_cm": float, "spoiler_cm": float,
                   "lung_block_mm": float, "lung_block_fractions": int, "compensate": bool, "beam_data": str}


def cohort_tbi_options(value, where: str, base: Path) -> tuple:
    """Validate a cohort file's ``tbi`` mapping; sorted ``(key, value)`` pairs (``()`` when absent)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InputError(f"{where}: tbi {value!r}; expected a mapping of {sorted(COHORT_TBI_KEYS)}")
    bad = set(value) - set(COHORT_TBI_KEYS)
    if bad:
        raise InputError(f"{where}: unknown tbi key(s) {sorted(bad)}; allowed: {sorted(COHORT_TBI_KEYS)}")
    out = {}
    for k, v in value.items():
        kind = COHORT_TBI_KEYS[k]
        if kind is bool:
            if not isinstance(v, bool):
                raise InputError(f"{where}: tbi.{k} {v!r}; expected true or false")
        elif kind in (int, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or \
                    (kind is int and int(v) != v):
                raise InputError(f"{where}: tbi.{k} {v!r}; expected {'a whole number' if kind is int else 'a number'}")
            v = kind(v)
        else:
            v = str(v)
        out[k] = v
    if "technique" in out:
        from .geometry import parse_technique

        parse_technique(out["technique"])
    if "beam_data" in out:
        p = Path(out["beam_data"])
        out["beam_data"] = str(p if p.is_absolute() else (base / p).resolve())
    return tuple(sorted(out.items()))


def tbi_plan_to_directory(case_spec: str, out_dir, scheme: str, options: tuple | dict = (),
                          rtstruct: str | None = None) -> dict:
    """Plan one TBI case of a cohort and write its outputs; returns the cohort summary fields."""
    from ..io import load_case
    from ..protocols import Scheme
    from .beamdata import load_beam_data
    from .geometry import parse_technique
    from .outputs import write_outputs
    from .plan import TbiRequest, plan_tbi

    opts = dict(options)
    sch = Scheme.parse(scheme)
    request = TbiRequest(prescription_gy=float(sch.total_gy), n_fractions=int(sch.fractions),
                         technique=parse_technique(opts.get("technique", "ap-pa")),
                         distance_cm=float(opts.get("distance_cm", 400.0)), jaw_cm=opts.get("jaw_cm"),
                         spoiler_cm=opts.get("spoiler_cm"), lung_block_mm=opts.get("lung_block_mm"),
                         lung_block_fractions=opts.get("lung_block_fractions"),
                         compensate=bool(opts.get("compensate", True)))
    plan = plan_tbi(load_case(case_spec, rtstruct=rtstruct), request, beam=load_beam_data(opts.get("beam_data")))
    paths = write_outputs(plan, out_dir)
    m = json.loads(Path(paths["metrics"]).read_text())
    qi = m["quality_indicators"]
    return {"tbi_mld_gy": m["lung"]["mean_dose_gy"], "total_mu": round(2 * plan.mu_per_field, 1),
            "tbi_midline_dose_control_passed": qi["midline_dose_control_passed"],
            "tbi_lung_block_placement_passed": qi["lung_block_placement_passed"],
            "goals_passed": sum(r["passed"] for r in m["rules"]),
            "goals_failed": sum(not r["passed"] for r in m["rules"])}


def cohort_quality_indicators(metrics_paths) -> dict:
    """The two quality indicators (:func:`sbrtplan.tbi.quality_indicators`) over the cohort's
    TBI ``metrics.json`` files, with the patients counted in each."""
    from .outputs import quality_indicators

    metrics = []
    for p in metrics_paths:
        try:
            metrics.append(json.loads(Path(p).read_text()))
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read the TBI metrics ({exc})") from None
    return quality_indicators(metrics)

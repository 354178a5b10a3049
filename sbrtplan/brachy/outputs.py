"""Output folders of ``sbrtplan seeds preplan`` and ``seeds verify``.

``metrics.json`` (kind ``seed-preplan`` / ``seed-verify``), ``seeds.csv`` (one row per seed),
``plan.json`` (what a verification needs from its pre-plan), ``report.html`` and DICOM
(``dicom/RS.dcm``, ``RP.dcm``, ``RD.dcm``, and the CT series for a phantom).  Every file is written
through :func:`sbrtplan._log.atomic_output`; the folder is staged and renamed at the end so that an
interrupted run leaves no half-filled output folder.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from .._json import write_json
from .._log import atomic_output, get_logger
from ..case import Case, Dose
from ..io import write_ct_series, write_rtdose, write_rtstruct
from ..report import render_report
from .dicom import write_brachy_rtplan
from .dosimetry import GoalOutcome, all_passed, goals_dict
from .preplan import PrePlan, activity_mci
from .registry import SeedRegistry

log = get_logger(__name__)
SCHEMA = "sbrtplan-seeds/1"


def _seeds_csv(path: Path, positions: np.ndarray, directions: np.ndarray, needles: list[str] | None) -> None:
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seed", "needle", "x_mm", "y_mm", "z_mm", "dx", "dy", "dz"])
        for i, (p, d) in enumerate(zip(positions, directions)):
            w.writerow([i + 1, needles[i] if needles else "", *(f"{v:.2f}" for v in p), *(f"{v:.4f}" for v in d)])


def _report_metrics(case: Case, kind: str, protocol, target: str, goals: list[GoalOutcome], target_m: dict,
                    timings: dict) -> dict:
    """The subset of the metrics.json layout the HTML report reads (targets, goals, verdict)."""
    status = {True: "pass", False: "fail", None: "not_evaluable"}
    return {
        "generator": "sbrtplan seeds", "schema_version": SCHEMA,
        "protocol": {"name": protocol.name, "title": protocol.title},
        "prescription": {"target": target, "total_gy": protocol.prescription_gy, "fractions": 1},
        "summary": {"acceptable": all_passed(goals), "n_passed": sum(g.passed is True for g in goals),
                    "n_failed": sum(g.passed is False for g in goals),
                    "n_failed_mandatory": sum(g.passed is False for g in goals),
                    "n_not_evaluable": sum(g.passed is None for g in goals)},
        "targets": {target: {"volume_cc": target_m["volume_cc"], "V100_pct": target_m["V100_pct"]}},
        "goals": [{"structure": g.structure, "metric": g.metric, "comparator": g.label.split()[-2],
                   "limit": float(g.label.split()[-1].rstrip("%")), "value": g.value_pct, "unit": "%",
                   "limit_unit": "%", "status": status[g.passed], "mandatory": True, "note": g.source}
                  for g in goals],
        "timings_s": timings, "kind": kind, "case": case.name}


def write_dicom(out: Path, case: Case, dose: Dose, rtplan_kwargs: dict, write_ct: bool) -> dict:
    d = out / "dicom"
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    if write_ct:
        write_ct_series(case, d / "ct")
        files["ct"] = "dicom/ct"
    rs_uid = write_rtstruct(case, d / "RS.dcm")
    files["rtstruct"] = "dicom/RS.dcm"
    rp_uid = write_brachy_rtplan(d / "RP.dcm", case=case, rtstruct_uid=rs_uid, **rtplan_kwargs)
    files["rtplan"] = "dicom/RP.dcm"
    # 16 bits: the dose next to a seed reaches thousands of Gy, so the step is about max/65000 (a few
    # hundredths of a Gy, < 0.05 % of a 145 Gy prescription), and 16-bit dose grids are read by every
    # viewer and validator
    write_rtdose(dose, dose.grid, d / "RD.dcm", case=case, rtplan_uid=rp_uid, bits_allocated=16)
    files["rtdose"] = "dicom/RD.dcm"
    return files


def _stage(out_dir) -> tuple[Path, Path]:
    out = Path(out_dir)
    stage = out.with_name(f".staging-{out.name}")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return out, stage


def _commit(stage: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    return out


def write_preplan(out_dir, pp: PrePlan, registry: SeedRegistry | None, *, report: bool = True,
                  dicom: bool = True) -> Path:
    """Write the pre-plan folder; returns it."""
    out, stage = _stage(out_dir)
    try:
        rx = float(pp.protocol.prescription_gy)
        labels = [pp.needle_labels[k] for k in pp.needle_of_seed]
        implant = {"n_seeds": pp.n_seeds, "n_needles": pp.n_needles, "strength_u": pp.strength_u,
                   "activity_mci_apparent": activity_mci(pp.strength_u, pp.source.isotope),
                   "total_strength_u": pp.strength_u * pp.n_seeds,
                   "needles": sorted(set(labels)), "seeds_to_order": pp.n_seeds}
        timings = pp.timings.as_dict()
        metrics = {"schema_version": SCHEMA, "kind": "seed-preplan", "case": pp.case.name,
                   "protocol": {"name": pp.protocol.name, "title": pp.protocol.title,
                                "sources": list(pp.protocol.sources)},
                   "prescription_gy": rx,
                   "source": {"model": pp.source.model, "name": pp.source.name, "isotope": pp.source.isotope,
                              "half_life_days": pp.source.half_life_days, "citation": pp.source.citation},
                   "implant": implant, "target": pp.metrics["target"], "organs": pp.metrics["organs"],
                   "goals": goals_dict(pp.goals), "all_goals_passed": all_passed(pp.goals),
                   "registry": registry.as_dict() if registry else None, "timings_s": timings}
        write_json(stage / "metrics.json", metrics)
        write_json(stage / "plan.json", {"schema_version": SCHEMA, "case": pp.case.name, "protocol": pp.protocol.name,
                                    "source_model": pp.source.model, "strength_u": pp.strength_u,
                                    "positions_mm": pp.seeds.positions_mm, "directions": pp.seeds.directions,
                                    "needles": labels, "target": pp.metrics["target"]})
        _seeds_csv(stage / "seeds.csv", pp.seeds.positions_mm, pp.seeds.directions, labels)
        if dicom:
            metrics["dicom"] = write_dicom(stage, pp.case, pp.dose, dict(
                source=pp.source, positions_mm=pp.seeds.positions_mm, directions=pp.seeds.directions,
                needle_of_seed=pp.needle_of_seed, needle_labels=pp.needle_labels, depth_mm=None,
                strength_u=pp.strength_u, prescription_gy=rx, registry=registry),
                write_ct=pp.case.source.startswith("phantom:"))
            write_json(stage / "metrics.json", metrics)
        if report:
            rm = _report_metrics(pp.case, "seed-preplan", pp.protocol, pp.target.name, pp.goals, pp.metrics["target"],
                                 timings)
            qa = {"implant": implant, "target_metrics": pp.metrics["target"],
                  "registry": registry.as_dict() if registry else {"note": "no registry given"},
                  "source": metrics["source"]}
            render_report(stage / "report.html", case=pp.case, dose=pp.dose, metrics=rm, prescription_gy=rx,
                          n_fractions=1, title="Seed implant pre-plan",
                          dvh_structures=[s for s in pp.structures if pp.case.has(s)], qa=qa)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return _commit(stage, out)


def write_verification(out_dir, case: Case, protocol, ver, registry: SeedRegistry | None, source, *,
                       report: bool = True, dicom: bool = True) -> Path:
    out, stage = _stage(out_dir)
    try:
        rx = float(protocol.prescription_gy)
        timings = ver.timings.as_dict()
        metrics = {"schema_version": SCHEMA, "kind": "seed-verify", "case": case.name,
                   "protocol": {"name": protocol.name, "title": protocol.title}, "prescription_gy": rx,
                   "source": {"model": source.model, "isotope": source.isotope, "citation": source.citation},
                   **ver.metrics, "goals": goals_dict(ver.goals), "all_goals_passed": all_passed(ver.goals),
                   "discrepancies": list(ver.discrepancies), "registry": registry.as_dict() if registry else None,
                   "post_implant_verified": True, "timings_s": timings}
        write_json(stage / "metrics.json", metrics)
        _seeds_csv(stage / "seeds.csv", ver.seeds.positions_mm, ver.seeds.directions, None)
        if dicom:
            metrics["dicom"] = write_dicom(stage, case, ver.dose, dict(
                source=source, positions_mm=ver.seeds.positions_mm, directions=ver.seeds.directions,
                needle_of_seed=np.zeros(len(ver.seeds), int), needle_labels=["post-implant"], depth_mm=None,
                strength_u=float(ver.seeds.strength_u[0]), prescription_gy=rx, registry=registry,
                plan_label="POSTIMPLANT"), write_ct=False)
            write_json(stage / "metrics.json", metrics)
        if report:
            target = ver.metrics["target"]["structure"]
            rm = _report_metrics(case, "seed-verify", protocol, target, ver.goals, ver.metrics["target"], timings)
            qa = {"post_implant": {k: v for k, v in ver.metrics.items() if not isinstance(v, (list, dict))},
                  "target_metrics": ver.metrics["target"],
                  "discrepancies": [{"discrepancy": d} for d in ver.discrepancies] or {"none": "no discrepancy"},
                  "registry": registry.as_dict() if registry else {"note": "no registry given"}}
            if "comparison_with_preplan" in ver.metrics:
                qa["comparison_with_preplan"] = {k: v for k, v in ver.metrics["comparison_with_preplan"].items()
                                                 if not isinstance(v, dict)}
            render_report(stage / "report.html", case=case, dose=ver.dose, metrics=rm, prescription_gy=rx,
                          n_fractions=1, title="Seed implant post-implant verification",
                          dvh_structures=[s for s in ver.structures if case.has(s)], qa=qa)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return _commit(stage, out)

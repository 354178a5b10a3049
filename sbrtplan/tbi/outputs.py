"""TBI plan outputs: metrics.json, the compensator table, report.html and an RTPLAN.

``metrics.json`` layout (``tbi_schema`` 1): prescription, technique, geometry, per-region rows
(separation, midline dose with and without compensation, compensator), sampling points,
blocks, mean lung dose, dose rate and beam-on time per field, organ doses, body V90/V110, every
rule with pass/fail, and the two quality indicators of the standard for this patient.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .._json import write_json
from .._log import atomic_output, get_logger
from ..errors import InputError
from .lungs import attenuator_of
from .plan import TbiPlan, region_summary

log = get_logger(__name__)

TBI_SCHEMA = 1


def _r(v, nd=3):
    if v is None:
        return None
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def metrics_dict(plan: TbiPlan, timings: dict | None = None) -> dict:
    """Everything the physicist signs, as plain JSON types."""
    req, beam = plan.request, plan.beam
    n = req.n_fractions
    comp = beam.compensator
    fields = []
    for f in plan.fields:
        fields.append({"name": f.name, "gantry_deg": f.gantry_deg, "mu_per_fraction": _r(plan.mu_per_field, 1),
                       "source_mm": [_r(c, 1) for c in f.source_mm],
                       "beam_on_time_min": _r(plan.mu_per_field / plan.dose_rate_mu_per_min, 2)})
    samples = []
    for sd in plan.samples:
        s = sd.sample
        samples.append({"region": s.region, "z_mm": [_r(s.z_lo_mm, 1), _r(s.z_hi_mm, 1)],
                        "point_mm": [_r(c, 1) for c in s.point_mm], "separation_cm": _r(s.separation_cm, 2),
                        "water_depth_cm": {k: _r(v, 2) for k, v in sd.depth_cm.items()},
                        "dose_per_mu_cgy": {k: _r(v, 5) for k, v in sd.dose_per_mu.items()},
                        "midline_dose_uncompensated_gy": _r(sd.open_gy_per_fx * n),
                        "compensator_mm": _r(sd.compensator_mm, 2),
                        "midline_dose_gy": _r(sd.final_gy_per_fx * n),
                        "under_organ_blocks": list(sd.under_blocks)})
    mag = comp.distance_cm / req.distance_cm
    blocks = []
    for b in plan.blocks:
        att = attenuator_of(beam, b)       # a lateral lung compensator is cut from compensator sheets on the tray
        blocks.append({"name": b.name, "kind": b.meta.get("kind", f"{b.name} block"), "field": b.field_name,
                       "material": att.material, "thickness_mm": _r(b.thickness_mm, 1),
                       "transmission": _r(b.transmission, 4), "fractions": b.meta.get("fractions"),
                       "area_at_treatment_plane_cm2": _r(b.area_cm2, 1),
                       "area_at_block_screen_cm2": _r(b.area_cm2 * (att.distance_cm / req.distance_cm) ** 2, 1),
                       "block_screen_distance_cm": att.distance_cm})
    rules = [r.as_dict() for r in plan.rules_results]
    midline_ok = all(r["passed"] for r in rules if r["rule"].startswith("midline dose within limit"))
    lung_blocks = [b for b in plan.blocks if b.name == "lung"]
    lung_ok = bool(lung_blocks) and plan.mld_gy is not None and plan.mld_gy <= plan.rules.mld_limit_gy
    out = {
        "tbi_schema": TBI_SCHEMA,
        "case": plan.case.name, "source": plan.case.source,
        "prescription": {"total_gy": req.prescription_gy, "fractions": n,
                         "per_fraction_gy": _r(req.prescription_gy / n, 4),
                         "point": plan.prescription_point},
        "technique": req.technique.value,
        "beam_data": {"name": beam.name, "file": Path(beam.source).name, "energy_mv": beam.energy_mv,
                      "modality": beam.modality},
        "geometry": {"source_to_midline_cm": req.distance_cm, "field_cm": _r(plan.field_cm, 1),
                     "collimator_deg": beam.collimator_deg, "spoiler_cm": plan.spoiler_cm,
                     "spoiler_material": beam.spoiler.material},
        "fields": fields,
        "regions": region_summary(plan),
        "sampling_points": samples,
        "compensator": {"material": comp.material, "mu_per_cm": comp.mu_per_cm, "step_mm": comp.step_mm,
                        "tray_distance_cm": comp.distance_cm, "magnification_tray_over_midline": _r(mag, 4)},
        "blocks": blocks,
        "lung": {"mean_dose_gy": _r(plan.mld_gy), "mean_dose_without_blocks_gy": _r(plan.mld_open_gy),
                 "block_fractions": plan.lung_block_fractions, "shielding": plan.lung_shielding or None},
        "dose_rate": {"machine_mu_per_min": plan.dose_rate_mu_per_min,
                      "midline_cgy_per_min": _r(plan.midline_dose_rate_cgy_min, 2)},
        "organs": plan.organ_doses,
        "body": {"v90_percent": _r(plan.body_v90 * 100, 2), "v110_percent": _r(plan.body_v110 * 100, 2)},
        "rules": rules,
        "all_rules_passed": all(r["passed"] for r in rules),
        "quality_indicators": {"midline_dose_control_passed": bool(midline_ok),
                               "lung_block_placement_passed": bool(lung_ok) if lung_blocks else None},
    }
    if timings:
        out["timings_s"] = {k: _r(v, 2) for k, v in timings.items()}
    return out


def quality_indicators(metrics_list: list[dict]) -> dict:
    """The standard's two TBI quality indicators over a cohort of ``metrics.json`` dicts.

    * midline-dose control pass rate = patients whose midline dose met the limit / all patients;
    * lung-block placement accuracy rate = patients whose lung blocks were placed from the lung
      outline and kept the MLD within the limit / patients with lung blocks.
    """
    tbi = [m for m in metrics_list if isinstance(m, dict) and m.get("tbi_schema")]
    if not tbi:
        raise InputError("quality indicators: no TBI metrics.json in the cohort")
    mid = [bool(m["quality_indicators"]["midline_dose_control_passed"]) for m in tbi]
    lung = [m["quality_indicators"]["lung_block_placement_passed"] for m in tbi
            if m["quality_indicators"].get("lung_block_placement_passed") is not None]
    return {"patients": len(tbi),
            "midline_dose_control_pass_rate_percent": _r(100.0 * sum(mid) / len(mid), 2),
            "lung_block_patients": len(lung),
            "lung_block_placement_accuracy_rate_percent": _r(100.0 * sum(lung) / len(lung), 2) if lung else None}


def write_compensator_csv(path, plan: TbiPlan) -> Path:
    """One row per compensator strip: z range at the midline and at the tray, thickness."""
    mag = plan.beam.compensator.distance_cm / plan.request.distance_cm
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["region", "z_lo_mm", "z_hi_mm", "tray_lo_mm", "tray_hi_mm", "separation_cm",
                        "midline_dose_uncompensated_gy", "compensator_mm", "midline_dose_gy"])
            ref_z = plan.fields[0].reference_mm[2]
            n = plan.request.n_fractions
            for sd in sorted(plan.samples, key=lambda s: -s.sample.z_hi_mm):
                s = sd.sample
                w.writerow([s.region, f"{s.z_lo_mm:.1f}", f"{s.z_hi_mm:.1f}", f"{(s.z_lo_mm - ref_z) * mag:.1f}",
                            f"{(s.z_hi_mm - ref_z) * mag:.1f}", f"{s.separation_cm:.2f}",
                            f"{sd.open_gy_per_fx * n:.3f}", f"{sd.compensator_mm:.1f}", f"{sd.final_gy_per_fx * n:.3f}"])
    return Path(path)


def write_tbi_rtplan(plan: TbiPlan, path) -> str:
    """An RTPLAN of the open extended-distance fields (jaws fully open, collimator rotated).

    The isocentre of each beam is the point at the SAD on its central axis (outside the patient,
    as for any extended-SSD set-up); the MU are per fraction.  Compensators and blocks are
    described in metrics.json and the report, not in the RTPLAN.
    """
    from ..beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
    from ..io import write_rtplan

    mlc = MLCModel.millennium120()
    half = plan.beam.max_field_at_sad_cm * 10.0 / 2.0 if plan.request.jaw_cm is None else plan.request.jaw_cm * 5.0
    half = min(half, mlc.max_position_mm)
    ap = Aperture.rectangle(mlc, (-half, half), (-half, half))
    beams = []
    for f in plan.fields:
        iso = tuple(float(c) for c in np.asarray(f.source_mm) + np.asarray(f.direction) * plan.beam.sad_cm * 10.0)
        beams.append(Beam(name=f"TBI {f.name}", control_points=[ControlPoint(f.gantry_deg, ap, 0.0),
                                                                 ControlPoint(f.gantry_deg, ap, 1.0)],
                          mu=plan.mu_per_field, mlc=mlc, isocenter_mm=iso, collimator_deg=plan.beam.collimator_deg,
                          sad_mm=plan.beam.sad_cm * 10.0, energy_mv=plan.beam.energy_mv,
                          patient_position=plan.case.patient_position))
    bs = BeamSet(beams=beams, n_fractions=plan.request.n_fractions, prescription_gy=plan.request.prescription_gy,
                 machine_name=plan.beam.name[:16], label="TBI")
    return write_rtplan(bs, path, case=plan.case, plan_label="TBI", target_name="TBI midline")


def write_outputs(plan: TbiPlan, out_dir, *, rtplan: bool = True, report: bool = True,
                  timings: dict | None = None) -> dict[str, Path]:
    """Write metrics.json, compensator.csv, report.html and rtplan.dcm into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    metrics = metrics_dict(plan, timings)
    paths["compensator"] = write_compensator_csv(out / "compensator.csv", plan)
    if rtplan:
        write_tbi_rtplan(plan, out / "rtplan.dcm")
        paths["rtplan"] = out / "rtplan.dcm"
    if report:
        from .html import render_tbi_report
        paths["report"] = render_tbi_report(out / "report.html", plan, metrics)
    paths["metrics"] = write_json(out / "metrics.json", metrics)
    return paths

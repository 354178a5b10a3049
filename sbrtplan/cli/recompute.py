"""``sbrtplan recompute``: forward dose of an existing plan (any technique) with our engine, then evaluation.

The dose is computed from the MLC and jaw positions of every control point
(:func:`~sbrtplan.dose_engine.forward_dose`) on every body voxel of the dose
grid: the MU-weighted fluence of each beam (of each 2-degree gantry bin of an
arc), leaf motion integrated exactly between control points with the machine
file's MLC model (transmission, dosimetric leaf gap, tongue-and-groove), then
one pencil-beam dose per fluence map.  Absolute dose follows the beam model's
calibration (the generic 6 MV model: 1 cGy/MU on the central axis at 15 mm
depth in water, 10 x 10 cm2 field at SSD 100 cm); ``--calibration`` states the
clinic's convention when it differs (e.g. ``sad100-10cm``: 1 cGy/MU at 10 cm
depth at the isocentre), and metrics.json records the one used.

With ``--reference-rtdose`` the dose of the planning system is read as well
and compared: DVH metrics of both and the 3D gamma index (3 %/3 mm, 10 %
cut-off, global) on our dose grid.
"""

from __future__ import annotations

import numpy as np

from .._log import get_logger
from ..beams import BeamSet
from ..case import Case

log = get_logger(__name__)

#: Sub-field sampling of dynamic deliveries (finer than the planner's final dose: an imported plan's
#: control points may be far apart).
MAX_GANTRY_STEP_DEG = 1.0
MAX_LEAF_STEP_MM = 2.0


def recompute_dose(case: Case, beam_set: BeamSet, *, model=None, max_gantry_step_deg: float = MAX_GANTRY_STEP_DEG,
                   max_leaf_step_mm: float = MAX_LEAF_STEP_MM, progress=None,
                   method: str | None = None) -> np.ndarray:
    """Total course dose (Gy) of ``beam_set`` on ``case.grid``, every body voxel computed.

    Parameters
    ----------
    case : Case
        Density and grid (usually the dose-grid case from
        :func:`~sbrtplan.case.resample_case`); ``case.body`` limits the
        voxels (default: density > 0.05).
    beam_set : BeamSet
        Beams as read by :func:`~sbrtplan.io.read_rtplan` (MU per fraction).
    model : BeamModel, optional
        Default: the shipped generic 6 MV model.
    max_gantry_step_deg, max_leaf_step_mm : float
        Sub-field sampling of the ``"control_points"`` reference method.
    progress : callable(done, total), optional
    method : {None, "fluence", "control_points"}
        See :func:`~sbrtplan.dose_engine.forward_dose` (default: fluence maps; the last only as a reference).

    Returns
    -------
    (nz, ny, nx) float32 array, 0 outside the body; negative sums of the kernel's negative terms far
    out of the field (a few mGy) are set to 0.
    """
    from ..dose_engine import forward_dose

    idx = case.body.flat_indices() if case.body is not None else None
    dose = forward_dose(case.density, case.grid, beam_set, model=model, voxel_indices=idx,
                        max_gantry_step_deg=max_gantry_step_deg, max_leaf_step_mm=max_leaf_step_mm,
                        progress=progress, method=method)
    dose = np.asarray(dose, dtype=np.float32).reshape(case.grid.shape)
    lo = float(dose.min()) if dose.size else 0.0
    if lo < 0.0:
        # Out of the field in the outermost slices of the grid the engine's sum can dip a few mGy below
        # zero (thorax plan: 107 voxels, -8 mGy at worst, max 50 Gy; the ray lookup at the grid's end faces).
        # A dose is non-negative (and an RTDOSE must be): set them to zero, and say so when it is not tiny.
        hi = float(dose.max())
        (log.warning if -lo > 1e-3 * hi else log.info)(
            "recompute: %d voxels below zero (min %.4g Gy, max dose %.4g Gy) set to 0",
            int(np.count_nonzero(dose < 0)), lo, hi)
        np.maximum(dose, 0.0, out=dose)
    return dose


def stage_progress(bar, stage: str, step: int, n_steps: int):
    """A ``progress(done, total)`` callback showing the inner progress of a long stage with its ETA."""
    import time

    t0 = time.perf_counter()

    def report(done: int, total: int) -> None:
        el = time.perf_counter() - t0
        eta = f", ETA {el / done * (total - done):.0f} s" if done else ""
        bar(f"{stage} {done}/{total}{eta}", step, n_steps)

    return report


def register(sub) -> None:
    p = sub.add_parser("recompute", help="recompute the dose of an existing RTPLAN on its CT and evaluate it",
                       description="Read a CT series, RTSTRUCT and RTPLAN (static, step-and-shoot, sliding-window "
                                   "IMRT or VMAT), compute the dose from the MLC apertures with the heterogeneity-"
                                   "corrected pencil beam, write RTDOSE + metrics.json. Absolute dose assumes the "
                                   "generic model's calibration (1 cGy/MU at 15 mm depth, 10x10 cm2, SSD 100 cm) "
                                   "unless --calibration says otherwise.")
    p.add_argument("--ct", required=True, help="CT folder")
    p.add_argument("--rtstruct", required=True, help="RTSTRUCT file")
    p.add_argument("--rtplan", required=True, help="RTPLAN file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--grid-mm", type=float, default=2.5, help="dose grid spacing in mm (default 2.5)")
    p.add_argument("--protocol", help="protocol for the compliance table (optional)")
    p.add_argument("--scheme", help="scheme TOTAL/FRACTIONS (default: from the RTPLAN's prescription)")
    p.add_argument("--target", help="prescription target structure")
    p.add_argument("--reference-rtdose", help="the planning system's RTDOSE of this plan: DVH metrics and "
                                              "gamma 3%%/3 mm against it")
    p.add_argument("--calibration", help="the clinic's calibration convention: ssd100-dmax (default of the "
                                         "machine file: 1 cGy/MU at 15 mm, SSD 100 cm), sad100-dmax (at 15 mm, SSD "
                                         "98.5 cm), sad100-10cm (1 cGy/MU at 10 cm depth, SSD 90 cm), ssd100-10cm, "
                                         "or CGY_PER_MU@DEPTH_MM,SSD_MM")
    p.set_defaults(func=run)


def compare_with_reference(dose_gy: np.ndarray, case: Case, reference_gy: np.ndarray, *, dose_percent: float = 3.0,
                           dta_mm: float = 3.0, cutoff_percent: float = 10.0) -> dict:
    """Gamma of ``dose_gy`` against a reference dose on the same grid (global, normalised to the reference
    maximum): pass rates over the whole cut-off region and within each target."""
    from ..case import StructureRole
    from ..evaluation import gamma_index, gamma_pass_rate

    g = gamma_index(reference_gy, dose_gy, case.grid.spacing_mm, dose_percent, dta_mm, cutoff_percent)
    out = {"criteria": f"{dose_percent:g}%/{dta_mm:g} mm, global, {cutoff_percent:g}% cut-off",
           "pass_rate_pct": round(gamma_pass_rate(g), 2), "mean_gamma": round(float(np.nanmean(g)), 3),
           "per_structure": {}}
    for name, s in case.structures.items():
        if s.role in (StructureRole.PTV, StructureRole.CTV, StructureRole.GTV, StructureRole.ITV):
            out["per_structure"][name] = round(gamma_pass_rate(g, s.mask), 2)
    return out


def read_course(args, beam_set: BeamSet):
    """The prescription of the plan: ``(scheme text, target, dose levels, fractions)``.

    Dose levels and fractions come from the RTPLAN's DoseReferenceSequence and FractionGroupSequence
    (:func:`sbrtplan.io.prescription.read_prescription`, the reader ``evaluate --rtplan`` uses);
    ``--scheme`` and ``--target`` replace the highest level's.  A prescription on no ROI of the
    structure set (a SITE the RTSTRUCT does not name, as the thorax plan writes it) keeps the plan's
    stated dose without a target; an RTPLAN that states none is recomputed without one (metrics only)
    unless a protocol needs it.  Other faults of the prescription (an ROI the RTSTRUCT lacks, no
    fractions) are refused unless ``--scheme`` states the prescription.
    """
    from ..errors import InputError
    from ..io.prescription import read_prescription

    rx = None
    stated = None
    try:
        rx = read_prescription(args.rtplan, args.rtstruct)
    except InputError as exc:
        if args.scheme:
            log.warning("recompute: --scheme %s replaces the RTPLAN's prescription (%s)", args.scheme, exc)
        elif "no target dose reference" in str(exc):
            stated = f"{beam_set.prescription_gy:g}/{beam_set.n_fractions}" if beam_set.prescription_gy else None
        else:
            raise
    scheme = args.scheme or (rx.scheme_text() if rx is not None else stated)
    target = args.target or (rx.primary.roi_name if rx is not None else None)
    levels = [(lv.roi_name, lv.dose_gy) for lv in rx.levels] if rx is not None else []
    if args.protocol and scheme is None:
        raise InputError(f"--protocol {args.protocol}: the RTPLAN {args.rtplan} states no target prescription; "
                         "give --scheme TOTAL/FRACTIONS")
    return scheme, target, levels, (rx.fractions if rx is not None else beam_set.n_fractions)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..case import Dose, resample_case
    from ..evaluation import evaluate_plan, format_report
    from ..io import load_case, read_rtplan, write_rtdose
    from ..workflow.outputs import write_metrics_json
    from ._common import StageBar

    from .._staging import staged_dir
    from ..dose_engine import default_beam_model
    from ..io.validate import check_beams_for_model, check_isocentres_inside, check_reference_dose
    from ._validate import check_plan_memory, check_recompute_args

    # options, paths, one patient and frame of reference, the reference dose's values: before any computation
    ref_native = check_recompute_args(args)
    model = default_beam_model()
    if getattr(args, "calibration", None):
        from ..dose_engine import parse_calibration

        model = model.with_calibration(parse_calibration(args.calibration))
    t0 = time.perf_counter()
    n_steps = 6 if args.reference_rtdose else 5
    with StageBar("recompute", n_steps) as bar:
        bar("read", 0, n_steps)
        beam_set = read_rtplan(args.rtplan)  # before the CT: a bad plan is refused in a second
        check_beams_for_model(beam_set, default_beam_model(), f"--rtplan {args.rtplan}")
        scheme, target, levels, n_fractions = read_course(args, beam_set)
        case = load_case(args.ct, rtstruct=args.rtstruct)
        check_isocentres_inside(beam_set, case.grid, f"--rtplan {args.rtplan}", f"the CT of --ct {args.ct}")
        if ref_native is not None:  # a reference dose that misses the targets is refused before the dose
            check_reference_dose(ref_native, case, f"--reference-rtdose {args.reference_rtdose}")
        check_plan_memory(case, args)
        if args.protocol:
            # the target must be clear before the dose (minutes on a large grid) is computed
            from ..evaluation.matching import match_roles, rename_structures
            from ..protocols import load_protocol

            match_roles(load_protocol(args.protocol), rename_structures(case.structures), target)
        bar("dose grid", 1, n_steps)
        cg = resample_case(case, args.grid_mm, region=case.body, margin_mm=5.0)
        bar("dose", 2, n_steps)
        dose = Dose(cg.grid, recompute_dose(cg, beam_set, model=model,
                                            progress=stage_progress(bar, "dose", 2, n_steps)),
                    description="sbrtplan recompute")
        bar("evaluate", 3, n_steps)
        from ..protocols import Scheme

        rx_gy = Scheme.parse(scheme).total_gy if scheme else None
        report = evaluate_plan(dose, cg.structures, args.protocol, scheme if args.protocol else None,
                               target=target, rx_gy=None if args.protocol else rx_gy)
        if len(levels) > 1:  # several dose levels: each target's indices at its own prescription
            from .evaluate import _lesion_indices

            report.lesions = _lesion_indices(dose, cg.structures, levels, report)
        comparison = None
        if args.reference_rtdose:
            from ..case import resample_dose

            bar("reference", 4, n_steps)
            ref = resample_dose(ref_native, cg.grid)  # read and checked before the dose
            if ref.per_fraction:  # a FRACTION dose: compare course totals
                ref = Dose(cg.grid, ref.dose_gy * n_fractions, description=ref.description)
            ref_report = evaluate_plan(ref, cg.structures, args.protocol, scheme if args.protocol else None,
                                       target=target, rx_gy=None if args.protocol else rx_gy)
            comparison = {"reference_rtdose": str(args.reference_rtdose),
                          "gamma": compare_with_reference(dose.dose_gy, cg, ref.dose_gy),
                          "reference_metrics": ref_report.as_dict()}
        bar("write", n_steps - 1, n_steps)
        out = Path(args.out)
        with staged_dir(out) as stage:  # RTDOSE and metrics.json appear together or not at all
            write_rtdose(dose, cg.grid, stage / "RTDOSE.dcm", case=case,
                         rtplan_uid=beam_set.beams[0].metadata.get("rtplan_uid"))
            metrics = report.as_dict()
            metrics["plan"] = {"source_rtplan": str(args.rtplan), "n_beams": len(beam_set.beams),
                               "total_mu_per_fraction": round(beam_set.total_mu_per_fraction, 1),
                               "n_fractions": n_fractions, "seconds": round(time.perf_counter() - t0, 1),
                               "dose_levels": [{"target": n, "dose_gy": gy} for n, gy in levels],
                               "calibration": model.calibration.describe(),
                               "calibration_convention": {"name": model.calibration.convention or "custom",
                                                          "dose_cgy_per_mu": model.calibration.dose_cgy_per_mu,
                                                          "depth_mm": model.calibration.depth_mm,
                                                          "ssd_mm": model.calibration.ssd_mm,
                                                          "field_mm": model.calibration.field_mm},
                               "beam_model": model.name,
                               "dose_method": "fluence maps (one pencil-beam dose per beam / arc bin)",
                               "mlc_models": {b.mlc.name: {"transmission": m.transmission, "dlg_mm": m.dlg_mm,
                                                           "tongue_groove_mm": m.tongue_groove_mm}
                                              for b in beam_set.beams for m in [model.mlc_for(b.mlc)]}}
            if comparison is not None:
                metrics["comparison"] = comparison
            if getattr(report, "lesions", None) is not None:
                metrics["lesions"] = report.lesions.as_dict()
            write_metrics_json(stage / "metrics.json", metrics)
    print(format_report(report))
    if getattr(report, "lesions", None) is not None:
        from ..evaluation import format_lesion_table

        print(format_lesion_table(report.lesions))
    if comparison is not None:
        g = comparison["gamma"]
        print(f"gamma {g['criteria']} against {args.reference_rtdose}: {g['pass_rate_pct']:.1f} % pass"
              + "".join(f"; {k} {v:.1f} %" for k, v in g["per_structure"].items()))
    print(f"{len(beam_set.beams)} beams, {beam_set.total_mu_per_fraction:.0f} MU per fraction x {n_fractions};"
          f" dose written to {out / 'RTDOSE.dcm'} ({time.perf_counter() - t0:.0f} s)")
    return 0

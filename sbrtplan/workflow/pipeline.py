"""``sbrtplan.plan``: one automatic plan from a case, a protocol and a scheme.

Stages (each timed; ``progress(stage, done, total)`` is called between them):

1. dose grid: the case resampled to ``grid_mm`` over the body (trilinear
   density, sub-voxel structure occupancy);
2. planning structures from the protocol (PRVs, PTV!, hot-spot region, rings);
3. goals of the protocol for the scheme, resolved to structures (missing
   organs refused unless ``allow_missing``);
4. optimisation problem (voxels, regions, prioritised stages);
5. IMRT (beam selection, fluence, sequencing, segment weights) or VMAT
   (arc sectors, direct aperture optimisation, control points);
6. final dose from the deliverable apertures with the forward engine;
7. normalisation (:mod:`~sbrtplan.workflow.normalisation`): MU scaled in the protocol's priority
   order: to the coverage goals (V100 and V90), never beyond a limit of higher
   priority (hard organ limits, PTV maximum: coverage yields, and the binding
   limit is named in ``metrics.json``), never moved by a lower one (hot spots);
8. evaluation against the protocol and QA (deliverability, delivery time,
   independent MU check).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .._log import Timings, get_logger, timed
from ..beams import BeamSet, DeliveryLimits, MLCModel, check_deliverability, estimate_delivery_time, with_mu
from ..case import Case, Dose, resample_case
from ..dose_engine.model import default_beam_model
from ..errors import SbrtplanError, StructureError
from ..evaluation import evaluate_plan
from ..protocols import Protocol, load_protocol
from ..dose_engine import BeamModel, forward_dose, mu_check
from .goals import resolve_goals
from .normalisation import normalisation
from .plan import Plan, PlanOptions, PlanTechnique
from .problem import build_problem, dose_difference_pct_rx
from .structures import build_planning_structures
from .target_eval import evaluate_targets, target_metrics
from .targets import course

log = get_logger(__name__)

STAGES = ("dose grid", "planning structures", "optimisation problem", "optimisation", "final dose",
          "normalisation", "evaluation", "QA")


def _dose_grid_case(case: Case, grid_mm: float) -> Case:
    """The case on an axis-aligned grid of ``grid_mm`` (the case itself, copied, when it already is one)."""
    sp = np.asarray(case.grid.spacing_mm, float)
    if case.grid.is_axis_aligned and np.allclose(sp, grid_mm, atol=1e-6):
        return Case(name=case.name, grid=case.grid, hu=case.hu, structures=dict(case.structures),
                    calibration=case.calibration, density=case.density, patient_position=case.patient_position,
                    patient=case.patient, doses=dict(case.doses), source=case.source, metadata=dict(case.metadata))
    cg = resample_case(case, grid_mm, region=case.body, margin_mm=4.0 * grid_mm)
    if len(cg.patient.ct_sop_instance_uids) != cg.grid.nz:
        # the planning CT on the dose grid is a new series (written with the plan): its slices get
        # new image identifiers, the study, patient and frame of reference stay those of the CT
        from dataclasses import replace

        cg.patient = replace(cg.patient, series_instance_uid=None, ct_sop_instance_uids=[])
    return cg


def _scale_beams(beam_set: BeamSet, s: float) -> BeamSet:
    return BeamSet([with_mu(b, b.mu * s) for b in beam_set.beams], beam_set.n_fractions, beam_set.prescription_gy,
                   beam_set.machine_name, beam_set.label)


def plan(case: Case, protocol: Protocol | str = "bone_spine", scheme: str | None = None,
         technique: PlanTechnique | str | None = None, n_beams: int | None = None, *,
         options: PlanOptions | None = None, model=None, limits: DeliveryLimits | None = None,
         progress: Callable[[str, int, int], None] | None = None, **overrides) -> Plan:
    """Make an automatic plan.

    Parameters
    ----------
    case : Case
        CT (density) and structures; a PTV is required.
    protocol : Protocol or str
        ``bone_spine``, ``bone_nonspine``, ``liver_hcc``, ``cholangiocarcinoma`` or a loaded protocol.
    scheme : str, optional
        Fractionation, ``"total/fractions"`` (default ``"27/3"``); must be allowed by the protocol.
        With several targets (``targets=["PTV1:27/3", "PTV2:24/3"]``, ``workflow.targets``) each
        target carries its prescription and ``scheme`` may be left out.
    technique : {"vmat", "imrt"}, optional
        Replaces ``options.technique`` when given (default: ``options.technique``, VMAT).
    n_beams : int, optional
        IMRT beam count in [5, 9] (default 7).
    options : PlanOptions, optional
        Everything else, the planning recipe included (``options.recipe``); keyword ``overrides``
        replace single fields (``grid_mm=2.5``, ``recipe=load_recipe(path)``).
    model : BeamModel, optional
        Default: the shipped commissioned 6 MV model.
    limits : DeliveryLimits, optional
        Machine delivery limits (default: flattened 6 MV, 600 MU/min).
    progress : callable(stage, done, total), optional

    Returns
    -------
    Plan
    """
    opts = resolve_options(options, technique, n_beams, **overrides)
    n_beams = opts.n_beams or 7
    if opts.technique is PlanTechnique.IMRT and not 5 <= n_beams <= 9:
        from ..errors import InputError
        raise InputError(f"n_beams must be in [5, 9] for SBRT IMRT, got {n_beams}")
    if opts.grid_mm > 2.0 + 1e-9:
        log.warning("dose grid %.2f mm is coarser than the 2 mm the SBRT standards require", opts.grid_mm)
    protocol = load_protocol(protocol) if isinstance(protocol, str) else protocol
    sch, target, targets = course(protocol, scheme, opts.target, opts.targets)  # several targets: workflow.targets
    model = model or default_beam_model()
    limits = limits or DeliveryLimits()
    # the machine file's leakage of this MLC (transmission, DLG): the sequencer places leaves for it
    mlc = model.mlc_for(MLCModel.by_name(opts.mlc))
    timings = Timings()
    notes: list[str] = []
    t_start = time.perf_counter()

    def step(i: int) -> None:
        if progress is not None:
            progress(STAGES[i], i, len(STAGES))

    def inner(i: int):
        """Progress inside stage ``i`` (iterations, beams, sectors) with its ETA, as the stage's label."""
        if progress is None:
            return None
        start = time.perf_counter()
        clock = {"t0": start, "last": start, "done": 0}

        def report(done: int, total: int) -> None:
            # a stage may run several counted phases (VMAT: DAO iterations, sector doses, MU re-solve
            # rounds): a counter that starts again is a new phase, timed from the previous report
            now = time.perf_counter()
            if done <= clock["done"]:
                clock["t0"] = clock["last"]
            clock["done"], clock["last"] = done, now
            elapsed = now - clock["t0"]
            eta = f", ETA {elapsed / done * (total - done):.0f} s" if 0 < done <= total else ""
            progress(f"{STAGES[i]} {done}/{total}{eta}", i, len(STAGES))
        return report

    step(0)
    with timed("dose grid", log, timings):
        cg = _dose_grid_case(case, opts.grid_mm)
    step(1)
    with timed("planning structures", log, timings):
        ps = build_planning_structures(cg, protocol, target, targets=targets)
        goals = protocol.goals_for(sch, conditions=opts.conditions)
        resolved = resolve_goals(goals, protocol, ps.match)
    if resolved.missing:
        msg = (f"case '{case.name}': protocol '{protocol.name}' names structures that are not contoured, so these "
               f"goals cannot be planned or evaluated: {resolved.missing_text()}")
        if not opts.allow_missing:
            raise StructureError(msg + "; contour them or pass allow_missing (--allow-missing) to plan without them")
        log.warning(msg)
        notes.append(msg)
    step(2)
    with timed("optimisation problem", log, timings):
        problem = build_problem(cg, ps, resolved, sch.total_gy, sch.fractions, recipe=opts.recipe)
    step(3)
    if opts.technique is PlanTechnique.IMRT:
        from .imrt import plan_imrt
        res = plan_imrt(cg, ps, problem, site=protocol.site, n_beams=n_beams, select=opts.select_beams,
                        beamlet_mm=opts.beamlet_mm, max_segments=opts.max_segments,
                        min_segment_mu=opts.min_segment_mu, model=model, mlc=mlc, prescription_gy=sch.total_gy,
                        n_fractions=sch.fractions, timings=timings, optimizer=opts.optimizer, seed=opts.seed,
                        progress=inner(3))
        beam_set, opt_rows = res.beam_set, res.optimizer_dose_rows
        extra = {"beam_selection": res.selection}
    else:
        from .vmat import plan_vmat
        res = plan_vmat(cg, ps, problem, n_arcs=opts.n_arcs, cp_spacing_deg=opts.cp_spacing_deg,
                        beamlet_mm=opts.beamlet_mm, model=model, mlc=mlc, limits=limits,
                        prescription_gy=sch.total_gy, n_fractions=sch.fractions, timings=timings,
                        optimizer=opts.optimizer, progress=inner(3))
        beam_set, opt_rows = res.beam_set, res.optimizer_dose_rows
        extra = {"dao": res.info}
        vmat_final = res.final_dose_gy
    notes.extend(res.notes)
    step(4)
    with timed("final dose", log, timings):
        if opts.technique is PlanTechnique.VMAT:
            # computed sector by sector with the VMAT optimisation (its MU were re-solved on it)
            dose = vmat_final
        else:
            # static fields keep sharp edges far from the target: every body voxel is computed
            dose = np.asarray(forward_dose(cg.density, cg.grid, beam_set, model=model,
                                           voxel_indices=cg.body.flat_indices() if cg.body is not None else None),
                              dtype=np.float32).reshape(cg.grid.shape)
    step(5)
    with timed("normalisation", log, timings):
        norm = normalisation(dose, cg, ps, protocol, sch, opts.conditions, opts.recipe)
        s = norm.scale
        b = norm.binding
        if b is not None:
            notes.append(f"normalisation limited by {b['goal']} ({b['priority_class']}, above coverage): "
                         f"{b['value_at_coverage_scale']:g} {b['unit']} at the coverage scale "
                         f"{norm.coverage_scale:.3f} ({b['excess_pct']:+.1f} %), so the MU are scaled by "
                         f"{s:.3f} and coverage yields" +
                         (f" (below the coverage goal: {', '.join(norm.below_coverage)})" if norm.below_coverage
                          else ""))
        # an arc's MU per degree must stay inside the machine's range after scaling; the DAO reports
        # which common scale keeps every control point deliverable
        mu_range = (extra.get("dao") or {}).get("deliverable_mu_scale_range")
        norm_info = norm.as_dict()
        if mu_range and not mu_range[0] <= s <= mu_range[1]:
            notes.append(f"MU scale {s:.3f} limited to {mu_range[0]:.3f}-{mu_range[1]:.3f} so that every "
                         f"control point keeps its MU per degree inside the machine's range")
            s = min(max(s, mu_range[0]), mu_range[1])
            norm_info["machine_mu_range"] = [float(mu_range[0]), float(mu_range[1])]
        norm_info["scale"] = float(s)
        notes.append(f"MU scaled by {s:.4f} ({norm.set_by} at {norm.coverage_scale:.4f})")
        for u in norm.unmet_lower_priority:
            notes.append(f"{u['goal']} not met at the normalised dose: {u['value']:g} {u['unit']} "
                         f"({u['excess_pct']:+.1f} %); {u['priority_class']} ranks below coverage, so the "
                         f"normalisation does not trade coverage for it")
        dose *= np.float32(s)
        opt_rows = np.asarray(opt_rows) * s
        beam_set = _scale_beams(beam_set, s)
    step(6)
    timings.add("total before evaluation", time.perf_counter() - t_start)
    with timed("evaluation", log, timings):
        final = Dose(cg.grid, dose, description=f"sbrtplan {opts.technique.value} final dose")
        if ps.parts:  # several targets: each at its prescription on its share, organs on the sum
            report = evaluate_targets(final, cg, ps, protocol, fractions=sch.fractions, conditions=opts.conditions,
                                      plan_timings=timings.as_dict())
        else:
            report = evaluate_plan(final, cg.structures, protocol, sch, target=ps.target.name,
                                   conditions=opts.conditions, plan_timings=timings.as_dict())
    step(7)
    with timed("QA", log, timings):
        qa = plan_qa(beam_set, limits, cg, model)
    opt_full = np.zeros(cg.grid.size, np.float32)
    opt_full[problem.voxels.indices] = opt_rows
    optimizer_dose = Dose(cg.grid, opt_full.reshape(cg.grid.shape), description="optimiser dose (optimisation voxels)")
    metrics = report.as_dict()
    if ps.parts:  # per-lesion indices and every target's prescription (workflow.target_eval)
        metrics.update(target_metrics(report, ps))
    p = Plan(case=cg, protocol_name=protocol.name, scheme=sch.short, options=opts, beam_set=beam_set, dose=final,
             optimizer_dose=optimizer_dose, report=report, metrics=metrics, qa=qa, timings_s=timings.as_dict(),
             log=notes)
    metrics["plan"] = {"technique": opts.technique.value, "n_beams": len(beam_set.beams),
                       "total_mu_per_fraction": round(p.total_mu, 1), "grid_mm": opts.grid_mm,
                       "beam_model": model.name, "recipe": opts.recipe.as_metrics(),
                       "beams": [_beam_summary(b) for b in beam_set.beams],
                       "optimizer_vs_delivered": dose_difference_pct_rx(final.dose_gy.ravel()[problem.voxels.indices],
                                                                           opt_rows, problem),
                       "planning_structures": ps.derived, **extra}
    names = [q.target.name for q in ps.parts] if ps.parts else [ps.target.name]
    tm = metrics.get("targets", {})
    norm_info["coverage"] = {"status": (metrics.get("coverage") or {}).get("status"),
                             **({"V100_pct": tm.get(names[0], {}).get("V100_pct"),
                                 "V90_pct": tm.get(names[0], {}).get("V90_pct")} if not ps.parts else
                                {"targets": {n: {"V100_pct": tm.get(n, {}).get("V100_pct"),
                                                 "V90_pct": tm.get(n, {}).get("V90_pct")} for n in names}})}
    metrics["normalisation"] = norm_info
    metrics["qa"] = qa
    metrics["timings_s"] = timings.as_dict()
    metrics.setdefault("notes", []).extend(notes)
    return p


def resolve_options(options: PlanOptions | None = None, technique: PlanTechnique | str | None = None,
                    n_beams: int | None = None, **overrides) -> PlanOptions:
    """The options a :func:`plan` call runs with: ``options`` (default :class:`PlanOptions`), then
    ``technique`` and ``n_beams`` where given (not None), then the keyword ``overrides``.

    A ``technique`` left out keeps ``options.technique`` (formerly the argument's own default
    replaced it, so ``plan(case, options=PlanOptions(technique="imrt"))`` planned VMAT).
    """
    from dataclasses import fields, replace

    from ..errors import InputError

    opts = options or PlanOptions()
    known = {f.name for f in fields(PlanOptions)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise InputError(f"plan: unknown option '{bad[0]}' (expected one of {sorted(known)})")
    if technique is not None:
        overrides["technique"] = technique
    if n_beams is not None:
        overrides["n_beams"] = int(n_beams)
    opts = replace(opts, **overrides)
    opts = replace(opts, technique=PlanTechnique.parse(opts.technique))
    from .recipe import PlanningRecipe

    if not isinstance(opts.recipe, PlanningRecipe):
        raise InputError(f"plan: recipe must be a PlanningRecipe (workflow.recipe.load_recipe), "
                         f"got {type(opts.recipe).__name__}")
    if isinstance(opts.seed, bool) or not isinstance(opts.seed, (int, np.integer)) or opts.seed < 0:
        raise InputError(f"plan: seed must be an integer >= 0, got {opts.seed!r}")
    return opts


def _beam_summary(beam) -> dict:
    return {"name": beam.name, "gantry_deg": [round(beam.control_points[0].gantry_deg, 1),
                                              round(beam.control_points[-1].gantry_deg, 1)],
            "couch_deg": beam.couch_deg, "collimator_deg": beam.collimator_deg, "mu": round(beam.mu, 1),
            "control_points": len(beam.control_points), "technique": beam.technique.value}


def plan_qa(beam_set: BeamSet, limits: DeliveryLimits, case: Case, model: BeamModel) -> dict:
    """Deliverability, estimated delivery time and the independent MU check of a plan."""
    viol = check_deliverability(beam_set, limits)
    qa = {"deliverability": {"passed": not viol, "n_violations": len(viol),
                             "violations": [getattr(v, "message", str(v)) for v in viol[:50]]},
          "delivery_time_s": {b.name: round(float(estimate_delivery_time(b, limits)), 1) for b in beam_set.beams}}
    qa["delivery_time_s"]["total"] = round(sum(qa["delivery_time_s"].values()), 1)
    try:
        # the plan's own beam model: the check compares that model's dose with the independent one
        rep = mu_check(beam_set, case.density, case.grid, None, model=model)
        qa["mu_check"] = rep.as_dict()
    except SbrtplanError as exc:  # a point the check cannot handle is reported; it never blocks a plan
        log.warning("independent MU check could not be computed: %s", exc)
        qa["mu_check"] = {"error": str(exc)}
    return qa

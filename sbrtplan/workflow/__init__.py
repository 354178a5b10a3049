"""The automatic planning workflow: case + protocol + scheme -> deliverable plan, dose, evaluation, files.

Public API
----------
plan, Plan, PlanOptions, PlanTechnique, build_planning_structures, PlanningStructures,
write_plan, summary_line, plan_to_directory,
stages_from_goals, ring_dose_fraction (protocol goals -> optimisation terms),
PlanningRecipe, load_recipe, default_recipe (the planner's tuning values, ``recipes/default.yaml``)

Several targets in one plan: ``plan(case, protocol, targets=["PTV1:27/3", "PTV2:24/3"])``
(:mod:`~sbrtplan.workflow.targets`; normalisation and evaluation in :mod:`~sbrtplan.workflow.target_eval`).
"""

from .goal_stages import ring_dose_fraction, stages_from_goals
from .outputs import summary_line, write_plan
from .pipeline import plan
from .plan import Plan, PlanOptions, PlanTechnique
from .recipe import PlanningRecipe, default_recipe, load_recipe
from .structures import PlanningStructures, build_planning_structures


def plan_to_directory(case_spec, out, *, protocol: str, scheme: str, technique: str = "vmat", rtstruct=None,
                      target: str | None = None, n_beams: int | None = None, grid_mm: float = 2.0,
                      allow_missing: bool = False, conditions=(), select_beams: bool = True,
                      progress=None, targets=()) -> dict:
    """Load a case, plan it and write every output into ``out``; returns :func:`summary_line`.

    ``case_spec`` is anything :func:`sbrtplan.io.load_case` accepts (``phantom:spine``, a DICOM
    folder, a matRad ``.mat`` file, an OpenKBP patient folder); ``targets``: several targets with
    their prescriptions (``workflow.targets``).
    """
    from ..io import load_case

    case = load_case(case_spec, rtstruct=rtstruct)
    p = plan(case, protocol, scheme, technique, n_beams, target=target, grid_mm=grid_mm,
             allow_missing=allow_missing, conditions=tuple(conditions or ()), select_beams=select_beams,
             progress=progress, **({"targets": tuple(targets)} if targets else {}))
    write_plan(p, out)
    return summary_line(p)


__all__ = ["plan", "Plan", "PlanOptions", "PlanTechnique", "build_planning_structures", "PlanningStructures",
           "write_plan", "summary_line", "plan_to_directory", "stages_from_goals", "ring_dose_fraction",
           "PlanningRecipe", "load_recipe", "default_recipe"]

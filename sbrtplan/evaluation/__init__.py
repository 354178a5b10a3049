"""Plan evaluation on any dose: DVH, conformity indices, protocol compliance, re-irradiation.

Depends only on ``sbrtplan.case`` and ``sbrtplan.protocols``; works on any dose
(ours, a clinical RTDOSE) on any grid.

Public API
----------
DVH, Refinement, DoseField, compute_dvh,
isodose_volume_cc, d2cm_gy, plan_indices, PlanIndices,
evaluate_plan, PlanReport, GoalResult, Status, TargetMetrics, StructureMetrics, CoverageVerdict, PriorCourse,
cumulative_eqd2, check_reirradiation, ReirradiationResult,
format_report, metrics_dict, write_metrics, write_dvh_csv, dvh_table, SCHEMA_VERSION,
parse_name_map, rename_structures, goal_structures (a goal's structures, PRV and 'minus' applied),
compare_reports, ComparisonTable, ComparisonRow,
gamma_index, gamma_pass_rate,
lesion_indices, split_by_nearest_target, LesionIndices, MultiTargetIndices, format_lesion_table
"""

from .compare import ComparisonRow, ComparisonTable, compare_reports
from .compliance import (CoverageVerdict, GoalResult, PlanReport, PriorCourse, Status, StructureMetrics,
                         TargetMetrics, evaluate_plan)
from .conformity import PlanIndices, d2cm_gy, isodose_volume_cc, plan_indices
from .dvh import DVH, DoseField, Refinement, compute_dvh
from .gamma import gamma_index, gamma_pass_rate
from .lesions import (LesionIndices, MultiTargetIndices, format_lesion_table, lesion_indices,
                      split_by_nearest_target)
from .matching import goal_structures, parse_name_map, rename_structures
from .reirradiation import ReirradiationResult, check_reirradiation, cumulative_eqd2
from .report import SCHEMA_VERSION, dvh_table, format_report, metrics_dict, write_dvh_csv, write_metrics

__all__ = ["DVH", "Refinement", "DoseField", "compute_dvh", "isodose_volume_cc", "d2cm_gy", "plan_indices",
           "PlanIndices", "evaluate_plan", "PlanReport", "GoalResult", "Status", "TargetMetrics", "StructureMetrics",
           "CoverageVerdict", "PriorCourse", "cumulative_eqd2", "check_reirradiation", "ReirradiationResult",
           "format_report", "metrics_dict", "write_metrics", "write_dvh_csv", "dvh_table", "SCHEMA_VERSION", "parse_name_map",
           "rename_structures", "goal_structures", "compare_reports", "ComparisonTable", "ComparisonRow"]
__all__ += ["gamma_index", "gamma_pass_rate", "lesion_indices", "split_by_nearest_target", "LesionIndices",
            "MultiTargetIndices", "format_lesion_table"]

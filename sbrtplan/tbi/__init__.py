"""Total-body irradiation (TBI) planning at extended distance (seed standard 003, annex 2).

Sits at the workflow level: uses ``case``, ``io``, ``dose_engine`` (ray tracing), ``beams``
(RTPLAN beams) and ``evaluation`` (DVH); only the CLI imports it.

Public API
----------
Beam data: TbiBeamData, Attenuator, load_beam_data(path=None), DEFAULT_BEAM_DATA
Rules: TbiRules, load_rules(path=None), RuleResult
Geometry: Technique, Field, parse_technique, make_fields
Planning: TbiRequest, TbiPlan, plan_tbi(case, request, beam=None, rules=None, progress=None, timings=None),
          region_summary(plan)
Dose formula: open_dose_per_mu, equivalent_square_cm, water_depth_cm
Lung shielding: LungShielding, design_lung_shielding (AP/PA lung blocks, lateral lung compensators)
Outputs: metrics_dict(plan), write_outputs(plan, out_dir, *, rtplan=True, report=True) -> dict of paths
Quality indicators: quality_indicators(metrics_list) -> dict
Cohorts (``sbrtplan batch``): cohort_tbi_options, tbi_plan_to_directory, cohort_quality_indicators
"""

from .batch import cohort_quality_indicators, cohort_tbi_options, tbi_plan_to_directory
from .beamdata import DEFAULT_BEAM_DATA, Attenuator, TbiBeamData, load_beam_data
from .dosecalc import equivalent_square_cm, open_dose_per_mu, water_depth_cm
from .geometry import Field, Technique, make_fields, parse_technique
from .lungs import LungShielding, design_lung_shielding
from .outputs import metrics_dict, quality_indicators, write_outputs
from .plan import TbiPlan, TbiRequest, plan_tbi, region_summary
from .rules import RuleResult, TbiRules, load_rules

__all__ = ["TbiBeamData", "Attenuator", "load_beam_data", "DEFAULT_BEAM_DATA", "TbiRules", "load_rules", "RuleResult",
           "Technique", "Field", "parse_technique", "make_fields", "TbiRequest", "TbiPlan", "plan_tbi",
           "region_summary", "open_dose_per_mu", "equivalent_square_cm", "water_depth_cm", "metrics_dict",
           "write_outputs", "quality_indicators", "cohort_tbi_options", "tbi_plan_to_directory",
           "cohort_quality_indicators", "LungShielding", "design_lung_shielding"]

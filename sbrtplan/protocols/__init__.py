"""Protocols from the standards: templates, typed goals, radiobiology, RTOG table.

Public API
----------
Protocol, Scheme, SchemeOption, SchemeRange, Goal, Metric, Comparator, Priority, Stage, Unit,
Quantity, ApplyTo, RtogLevel, ConversionPolicy, RoleSpec, CoverageRule,
load_protocol, list_protocols,
bed_gy, eqd2_gy, bed_to_eqd2_gy, total_dose_for_bed_gy, isoeffective_dose_gy,
ReirradiationLimit, michigan_table, reirradiation_limit, discount_pct_for,
ALPHA_BETA_TUMOUR_GY, ALPHA_BETA_CORD_BONE_GY, ALPHA_BETA_MICHIGAN_GY,
RtogClass, RtogLimits, RtogAssessment, rtog_limits, rtog_class, rtog_goal
"""

from .library import list_protocols, load_protocol
from .model import (ApplyTo, Comparator, ConversionPolicy, CoverageRule, Goal, Metric, Priority, Protocol, Quantity,
                    RoleSpec, RtogLevel, Scheme, SchemeOption, SchemeRange, Stage, Unit)
from .radiobiology import (ALPHA_BETA_CORD_BONE_GY, ALPHA_BETA_MICHIGAN_GY, ALPHA_BETA_TUMOUR_GY,
                           ReirradiationLimit, bed_gy, bed_to_eqd2_gy, discount_pct_for, eqd2_gy,
                           isoeffective_dose_gy, michigan_table, reirradiation_limit, total_dose_for_bed_gy)
from .rtog import RtogAssessment, RtogClass, RtogLimits, rtog_class, rtog_goal, rtog_limits

__all__ = ["Protocol", "Scheme", "SchemeOption", "SchemeRange", "Goal", "Metric", "Comparator", "Priority", "Stage",
           "Unit", "Quantity", "ApplyTo", "RtogLevel", "ConversionPolicy", "RoleSpec", "CoverageRule",
           "load_protocol", "list_protocols", "bed_gy", "eqd2_gy", "bed_to_eqd2_gy", "total_dose_for_bed_gy",
           "isoeffective_dose_gy", "ReirradiationLimit", "michigan_table", "reirradiation_limit",
           "discount_pct_for", "ALPHA_BETA_TUMOUR_GY", "ALPHA_BETA_CORD_BONE_GY", "ALPHA_BETA_MICHIGAN_GY",
           "RtogClass", "RtogLimits", "RtogAssessment", "rtog_limits", "rtog_class", "rtog_goal"]

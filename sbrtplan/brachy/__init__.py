"""Permanent seed implant planning: TG-43U1 dose, pre-plan optimisation, post-implant verification,
seed traceability and DICOM brachytherapy RT Plan.

Sits at the workflow level: imports case, io, evaluation and report; only the CLI imports it.

Public API
----------
Source data and dose:
    SourceData, load_source(model_or_file), list_sources(), derive_phi_an, geometry_line,
    Tg43Model(source, geometry), SourceGeometry (LINE | POINT), SeedSet
Protocols:
    SeedProtocol, SeedGoal, load_seed_protocol(name_or_file), list_seed_protocols()
Planning and verification:
    run_preplan(case, protocol, ...) -> PrePlan, activity_mci,
    detect_seeds(case, ...) -> DetectedSeeds, read_seed_list(path), verify_implant(case, protocol, ...) -> Verification,
    position_differences(a_mm, b_mm, tolerance_mm)
Records and files:
    SeedRegistry, cohort_summary(metrics_files), REQUIRED_VERIFICATION_RATE,
    write_brachy_rtplan(path, ...), read_brachy_rtplan(path), write_preplan(out_dir, ...),
    write_verification(out_dir, ...)
"""

from .dicom import read_brachy_rtplan, write_brachy_rtplan
from .dosimetry import position_differences
from .outputs import write_preplan, write_verification
from .postimplant import DetectedSeeds, Verification, detect_seeds, read_seed_list, verify_implant
from .preplan import PrePlan, activity_mci, run_preplan
from .protocol import SeedGoal, SeedProtocol, list_seed_protocols, load_seed_protocol
from .registry import REQUIRED_VERIFICATION_RATE, SeedRegistry, cohort_summary
from .source import SourceData, derive_phi_an, geometry_line, list_sources, load_source
from .tg43 import SeedSet, SourceGeometry, Tg43Model

__all__ = ["SourceData", "load_source", "list_sources", "derive_phi_an", "geometry_line", "Tg43Model",
           "SourceGeometry", "SeedSet", "SeedProtocol", "SeedGoal", "load_seed_protocol", "list_seed_protocols",
           "run_preplan", "PrePlan", "activity_mci", "detect_seeds", "DetectedSeeds", "read_seed_list",
           "verify_implant", "Verification", "position_differences", "SeedRegistry", "cohort_summary",
           "REQUIRED_VERIFICATION_RATE", "write_brachy_rtplan", "read_brachy_rtplan", "write_preplan",
           "write_verification"]

"""Patient-specific plan QA: verification plans on a phantom, measured versus calculated, batches.

The standards (SBRT_REQUIREMENTS.md section 2) ask that every plan be delivered
on a phantom before treatment: absolute point dose (micro ion chamber) within
3 %, and a 2D dose distribution (detector array) with gamma 2 %/2 mm, 10 %
threshold, passing > 90-95 %.  Criteria, chamber models and calculation
settings live in ``qa/data/qa_criteria.yaml``.

Sits beside ``workflow``: uses ``case``, ``beams``, ``io``, ``dose_engine`` (the
forward dose of ``sbrtplan recompute``), ``evaluation`` (gamma) and
``phantoms``.

Public API
----------
Criteria: load_criteria, QACriteria, GammaCriterion, Normalisation, Chamber
Planes: DosePlane, PlaneOrientation, plane_from_volume, read_plane_csv, write_plane_csv
Verification: verify_on_phantom, transfer_beams, check_plan_mu, AxisMode, VerificationResult,
    chamber_samples, interpolate_dose, write_verification
Measurements: read_measured_plane, read_array_mcc, read_rtdose_plane, detect_format, MeasurementFormat
Comparison: compare_measurement, plane_gamma, QAComparison, GammaResult, PointComparison, Verdict,
    write_comparison, read_verification, render_qa_page, add_qa_page_to_report, qa_page_fragment
Phantom: load_qa_phantom
Batch: QAEntry, read_qa_list, run_qa_batch, write_batch_summary, batch_statistics, SUMMARY_COLUMNS,
    cohort_qa_options, qa_plan_folder (the QA of every plan of ``sbrtplan batch``)
"""

from .batch import (SUMMARY_COLUMNS, QAEntry, batch_statistics, cohort_qa_options, qa_plan_folder, read_qa_list,
                    run_qa_batch, write_batch_summary)
from .compare import GammaResult, PointComparison, QAComparison, Verdict, compare_measurement, plane_gamma
from .criteria import Chamber, GammaCriterion, Normalisation, QACriteria, load_criteria
from .measured import MeasurementFormat, detect_format, read_array_mcc, read_measured_plane, read_rtdose_plane
from .outputs import read_verification, write_comparison, write_verification
from .page import add_qa_page_to_report, qa_page_fragment, render_qa_page
from .phantom import load_qa_phantom
from .plane import DosePlane, PlaneOrientation, plane_from_volume, read_plane_csv, write_plane_csv
from .verification import (AxisMode, VerificationResult, chamber_samples, check_plan_mu, interpolate_dose,
                           transfer_beams, verify_on_phantom)

__all__ = ["load_criteria", "QACriteria", "GammaCriterion", "Normalisation", "Chamber",
           "DosePlane", "PlaneOrientation", "plane_from_volume", "read_plane_csv", "write_plane_csv",
           "verify_on_phantom", "transfer_beams", "check_plan_mu", "AxisMode", "VerificationResult",
           "chamber_samples", "interpolate_dose", "write_verification",
           "read_measured_plane", "read_array_mcc", "read_rtdose_plane", "detect_format", "MeasurementFormat",
           "compare_measurement", "plane_gamma", "QAComparison", "GammaResult", "PointComparison", "Verdict",
           "write_comparison", "read_verification", "render_qa_page", "add_qa_page_to_report", "qa_page_fragment",
           "QAEntry", "read_qa_list", "run_qa_batch", "write_batch_summary", "batch_statistics",
           "SUMMARY_COLUMNS", "cohort_qa_options", "qa_plan_folder", "load_qa_phantom"]

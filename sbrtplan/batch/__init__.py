"""Cohorts on Dask distributed: one plan per case x scheme, resumable, with a summary CSV.

Public API
----------
Cohort, CohortTask, load_cohort, run_cohort, run_task, write_summary, SUMMARY_COLUMNS
"""

from .cohort import Cohort, CohortTask, load_cohort
from .run import SUMMARY_COLUMNS, run_cohort, run_task, write_summary

__all__ = ["Cohort", "CohortTask", "load_cohort", "run_cohort", "run_task", "write_summary", "SUMMARY_COLUMNS"]

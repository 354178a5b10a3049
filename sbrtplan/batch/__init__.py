"""Cohorts on Dask distributed: one plan per case x scheme, resumable, with a summary CSV.

Public API
----------
Cohort, CohortTask, load_cohort, run_cohort, run_task, write_summary, SUMMARY_COLUMNS
connect_scheduler(address, timeout_s) -> dask Client, SchedulerConnectError, CONNECT_TIMEOUT_S
"""

from .cohort import Cohort, CohortTask, load_cohort
from .run import (CONNECT_TIMEOUT_S, SUMMARY_COLUMNS, SchedulerConnectError, connect_scheduler, run_cohort, run_task,
                  write_summary)

__all__ = ["Cohort", "CohortTask", "load_cohort", "run_cohort", "run_task", "write_summary", "SUMMARY_COLUMNS",
           "connect_scheduler", "SchedulerConnectError", "CONNECT_TIMEOUT_S"]

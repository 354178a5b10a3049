"""Run a cohort on Dask distributed: one task per case x scheme, resumable.

Each task writes its outputs into ``<output>/<case>/<scheme>/`` and, last, a
``done.json`` marker (atomically).  A rerun skips every task whose marker
exists, so an interrupted cohort resumes where it stopped.  A task that fails
records its error in ``<case>/<scheme>/error.txt`` and in the summary; the
other tasks go on.
"""

from __future__ import annotations

import csv
import json
import time
import traceback
from pathlib import Path
from typing import Callable

from .._log import atomic_output, get_logger
from .cohort import Cohort, CohortTask

log = get_logger(__name__)

DONE_MARKER = "done.json"

#: Columns of ``summary.csv``, in order.
SUMMARY_COLUMNS = ["case", "scheme", "protocol", "technique", "status", "seconds", "ptv_V100_pct", "ptv_D95_gy",
                   "CI_paddick", "GI", "R50", "D2cm_pct", "rtog_class", "goals_passed", "goals_failed",
                   "hard_failures", "total_mu", "error"]


def run_task(task: CohortTask, output_dir: str) -> dict:
    """Plan one case x scheme and write its outputs; never raises.

    Returns the summary row (``status`` ``done``, ``skipped`` or ``failed``).
    """
    out = Path(output_dir) / task.key
    marker = out / DONE_MARKER
    if marker.exists():
        row = json.loads(marker.read_text())
        row["status"] = "skipped"
        return row
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = {"case": task.case_name, "scheme": task.scheme, "protocol": task.protocol, "technique": task.technique}
    try:
        from ..workflow import plan_to_directory  # imported in the worker process

        summary = plan_to_directory(task.case_spec, out, protocol=task.protocol, scheme=task.scheme,
                                    technique=task.technique, rtstruct=task.rtstruct, target=task.target,
                                    n_beams=task.n_beams, grid_mm=task.grid_mm,
                                    allow_missing=task.allow_missing, conditions=task.conditions,
                                    select_beams=task.select_beams)
        row = {**base, "status": "done", "seconds": round(time.perf_counter() - t0, 2), **summary, "error": ""}
        with atomic_output(marker) as tmp:
            Path(tmp).write_text(json.dumps(row, indent=1))
        (out / "error.txt").unlink(missing_ok=True)
        return row
    except Exception as exc:  # one failing case must not stop the cohort
        msg = f"{type(exc).__name__}: {exc}"
        (out / "error.txt").write_text(msg + "\n\n" + traceback.format_exc())
        log.error("cohort task %s failed: %s", task.key, msg)
        return {**base, "status": "failed", "seconds": round(time.perf_counter() - t0, 2), "error": msg}


def run_cohort(cohort: Cohort, scheduler: str | None = None, n_workers: int = 2,
               progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run every task of ``cohort`` on Dask and write ``summary.csv``.

    Parameters
    ----------
    cohort : Cohort
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); default: a
        LocalCluster with ``n_workers`` single-threaded worker processes
        (numba kernels already use the cores of each worker).
    n_workers : int
    progress : callable(done, total), optional

    Returns
    -------
    list of dict
        One summary row per task, in cohort order.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    cohort.output_dir.mkdir(parents=True, exist_ok=True)
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    log.info("cohort %s: %d tasks on %s", cohort.path, len(cohort.tasks), client.scheduler.address)
    rows: dict[str, dict] = {}
    try:
        futures = {client.submit(run_task, t, str(cohort.output_dir), key=f"sbrtplan-{t.key}-{i}", pure=False): t
                   for i, t in enumerate(cohort.tasks)}
        for n, fut in enumerate(as_completed(futures), 1):
            task = futures[fut]
            try:
                rows[task.key] = fut.result()
            except Exception as exc:  # a worker died: report, keep going
                rows[task.key] = {"case": task.case_name, "scheme": task.scheme, "protocol": task.protocol,
                                  "technique": task.technique, "status": "failed", "error": f"worker: {exc}"}
            if progress:
                progress(n, len(futures))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [rows[t.key] for t in cohort.tasks]
    write_summary(cohort.output_dir / "summary.csv", ordered)
    return ordered


def write_summary(path: Path, rows: list[dict]) -> None:
    """Write the cohort summary CSV (one row per task, :data:`SUMMARY_COLUMNS`)."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in SUMMARY_COLUMNS})

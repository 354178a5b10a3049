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

from .._json import write_json
from .._log import atomic_output, get_logger
from .cohort import Cohort, CohortTask

log = get_logger(__name__)

DONE_MARKER = "done.json"

#: Columns of ``summary.csv``, in order.
SUMMARY_COLUMNS = ["case", "scheme", "protocol", "technique", "status", "seconds", "ptv_V100_pct", "ptv_D95_gy",
                   "CI_paddick", "GI", "R50", "D2cm_pct", "rtog_class", "goals_passed", "goals_failed",
                   "hard_failures", "total_mu", "qa_verdict", "qa_chamber_dose_gy", "qa_point_diff_pct",
                   "qa_gamma_2pct_2mm_global", "tbi_mld_gy", "tbi_midline_dose_control_passed",
                   "tbi_lung_block_placement_passed", "error"]


def run_task(task: CohortTask, output_dir: str, max_memory_gib: float | None = None) -> dict:
    """Plan one case x scheme and write its outputs; never raises.

    Returns the summary row (``status`` ``done``, ``skipped`` or ``failed``).  A plan whose estimated
    memory exceeds ``max_memory_gib`` or the Dask worker's memory limit fails at once, with the estimate
    in its error, instead of the worker being killed minutes later.
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
        if task.technique == "tbi":
            from ..tbi import tbi_plan_to_directory

            summary = tbi_plan_to_directory(task.case_spec, out, task.scheme, task.tbi, rtstruct=task.rtstruct)
        else:
            summary = _plan_task(task, out, max_memory_gib)
        if task.qa:  # patient-specific QA of the written plan (an error is recorded in its row, not raised)
            from ..qa import qa_plan_folder

            q = qa_plan_folder(out, task.qa)
            summary.update(qa_verdict=q["verdict"], qa_chamber_dose_gy=q["chamber_dose_gy"],
                           qa_point_diff_pct=q["point_diff_pct"], qa_gamma_2pct_2mm_global=q["gamma_2pct_2mm_global"],
                           qa_error=q["error"])
        row = {**base, "status": "done", "seconds": round(time.perf_counter() - t0, 2), **summary, "error": ""}
        write_json(marker, row)
        (out / "error.txt").unlink(missing_ok=True)
        return row
    except Exception as exc:  # one failing case must not stop the cohort
        msg = f"{type(exc).__name__}: {exc}"
        (out / "error.txt").write_text(msg + "\n\n" + traceback.format_exc())
        log.error("cohort task %s failed: %s", task.key, msg)
        return {**base, "status": "failed", "seconds": round(time.perf_counter() - t0, 2), "error": msg}


def _plan_task(task: CohortTask, out: Path, max_memory_gib: float | None) -> dict:
    """``workflow.plan_to_directory`` with the memory check between loading the case and planning it
    (the same calls; the case is loaded once)."""
    from .._resources import check_plan_memory, plan_targets
    from ..io import load_case
    from ..workflow import plan, summary_line, write_plan  # imported in the worker process

    case = load_case(task.case_spec, rtstruct=task.rtstruct)
    limit, label = _memory_limit(max_memory_gib)
    names = [t.name for t in task.targets] if task.targets else ([task.target] if task.target else [])
    check_plan_memory(case, plan_targets(case, names, task.protocol), techniques=(task.technique,),
                      grid_mm=task.grid_mm, max_memory_gib=limit, limit_label=label, n_beams=task.n_beams,
                      select_beams=task.select_beams)
    p = plan(case, task.protocol, task.scheme, task.technique, task.n_beams, target=task.target,
             grid_mm=task.grid_mm, allow_missing=task.allow_missing, conditions=tuple(task.conditions or ()),
             select_beams=task.select_beams, **({"targets": tuple(task.targets)} if task.targets else {}))
    write_plan(p, out)
    return summary_line(p)


def _memory_limit(max_memory_gib: float | None) -> tuple[float | None, str]:
    """The memory limit of a task and what sets it: ``--max-memory-gib``, or the Dask worker's memory limit
    when lower (the nanny terminates a worker that exceeds it)."""
    from .._resources import GIB

    limit, label = max_memory_gib, "--max-memory-gib"
    try:
        from distributed import get_worker

        worker_bytes = get_worker().memory_limit
    except (ImportError, ValueError, AttributeError):  # not in a Dask worker
        worker_bytes = None
    if worker_bytes and (limit is None or worker_bytes / GIB < limit):
        limit, label = worker_bytes / GIB, "the Dask worker's memory limit"
    return limit, label


#: seconds to wait for a Dask scheduler (``--connect-timeout``); dask's own default is 30 s
CONNECT_TIMEOUT_S = 5.0


class SchedulerConnectError(ConnectionError):
    """The Dask scheduler at ``address`` could not be reached within ``timeout_s``."""

    def __init__(self, address: str, timeout_s: float, reason: str):
        super().__init__(f"cannot connect to {address} within {timeout_s:g} s ({reason})")
        self.address, self.timeout_s, self.reason = address, timeout_s, reason


def connect_scheduler(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A ``dask.distributed.Client`` of the scheduler at ``address``, or :class:`SchedulerConnectError`
    within about ``timeout_s`` seconds.

    A TCP address is probed first with a plain socket: a refused connection (nothing listens on the port)
    is known at once, where dask retries it until its connect timeout; the client is then opened with
    ``timeout_s`` as its own connect timeout, and abandoned 5 s after it (a silent port).
    """
    import socket
    import threading
    from urllib.parse import urlsplit

    from dask.distributed import Client

    parts = urlsplit(str(address))
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme in ("tcp", "tls") and parts.hostname and port:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
        except OSError as exc:  # refused, unreachable, unknown host, or no answer within the timeout
            reason = "no answer" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise SchedulerConnectError(str(address), timeout_s, " ".join(reason.split())[:200]) from None
    # dask's timeout covers the TCP connection, not its handshake: a port that accepts and stays silent
    # would hold the client for ever, so the client starts in a thread given the timeout plus 5 s
    box: dict = {}

    def start() -> None:
        try:
            box["client"] = Client(address, timeout=timeout_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    th = threading.Thread(target=start, name="sbrtplan-scheduler-connect", daemon=True)
    th.start()
    th.join(timeout_s + 5.0)
    if th.is_alive():
        raise SchedulerConnectError(str(address), timeout_s, "the port accepts connections but no Dask scheduler "
                                    "answers")
    exc = box.get("error")
    if isinstance(exc, (OSError, TimeoutError)):  # no scheduler answer in time
        raise SchedulerConnectError(str(address), timeout_s,
                                    f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    if exc is not None:  # something answers that is not a Dask scheduler: dask reads its reply as a frame
        # length (an HTTP server's reply made it ask for 3 EiB: MemoryError)
        raise SchedulerConnectError(str(address), timeout_s, f"the address answers but not as a Dask scheduler: "
                                    f"{type(exc).__name__}") from None
    return box["client"]


def run_cohort(cohort: Cohort, scheduler: str | None = None, n_workers: int = 2,
               progress: Callable[[int, int], None] | None = None, *,
               connect_timeout_s: float = CONNECT_TIMEOUT_S, max_memory_gib: float | None = None) -> list[dict]:
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
    connect_timeout_s : float
        How long to wait for ``scheduler`` (:func:`connect_scheduler`); nothing is written when it is
        unreachable.
    max_memory_gib : float, optional
        Memory limit of one plan (also bounded by each worker's memory limit).

    Returns
    -------
    list of dict
        One summary row per task, in cohort order.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = connect_scheduler(scheduler, connect_timeout_s)
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    log.info("cohort %s: %d tasks on %s", cohort.path, len(cohort.tasks), client.scheduler.address)
    rows: dict[str, dict] = {}
    try:
        cohort.output_dir.mkdir(parents=True, exist_ok=True)
        futures = {client.submit(run_task, t, str(cohort.output_dir), max_memory_gib,
                                 key=f"sbrtplan-{t.key}-{i}", pure=False): t
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
    write_job_summaries(cohort, ordered)
    return ordered


def write_job_summaries(cohort: Cohort, rows: list[dict]) -> dict:
    """The cohort-level summaries of the QA and TBI tasks (beside ``summary.csv``).

    * ``qa_summary.csv`` / ``.json`` (:func:`sbrtplan.qa.write_batch_summary`): the QA verdict of
      every plan with QA and the pass rates over the cohort;
    * ``tbi_quality_indicators.json``: the TBI standard's midline-dose control pass rate and
      lung-block placement accuracy rate over the TBI plans that were made.

    Returns ``{"qa": statistics or None, "tbi": indicators or None}``.
    """
    out = {"qa": None, "tbi": None}
    qa_rows = []
    for t, r in zip(cohort.tasks, rows):
        if t.qa:
            qa_rows.append({"name": t.key, "verdict": r.get("qa_verdict") or "ERROR",
                            "chamber_dose_gy": r.get("qa_chamber_dose_gy"),
                            "point_diff_pct": r.get("qa_point_diff_pct"),
                            "gamma_2pct_2mm_global": r.get("qa_gamma_2pct_2mm_global"),
                            "error": r.get("qa_error") or (r.get("error") if r.get("status") == "failed" else None)})
    if qa_rows:
        from ..qa import SUMMARY_COLUMNS as QA_COLUMNS, write_batch_summary

        out["qa"] = write_batch_summary([{c: q.get(c) for c in QA_COLUMNS} for q in qa_rows], cohort.output_dir)
    tbi = [cohort.output_dir / t.key / "metrics.json" for t, r in zip(cohort.tasks, rows)
           if t.technique == "tbi" and r.get("status") in ("done", "skipped")]
    if tbi:
        from ..tbi import cohort_quality_indicators

        out["tbi"] = cohort_quality_indicators(tbi)
        write_json(cohort.output_dir / "tbi_quality_indicators.json", out["tbi"])
    return out


def write_summary(path: Path, rows: list[dict]) -> None:
    """Write the cohort summary CSV (one row per task, :data:`SUMMARY_COLUMNS`)."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in SUMMARY_COLUMNS})

"""``sbrtplan batch cohort.yaml``: plan a cohort on Dask (one task per case x scheme)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("batch", help="plan a cohort of cases on Dask (resumable)",
                       description="Plan every case x scheme of a cohort YAML file on a Dask cluster "
                                   "(a LocalCluster by default). Finished tasks are skipped on a rerun; a "
                                   "failing case is reported in summary.csv without stopping the others.")
    p.add_argument("cohort", help="cohort YAML file (see sbrtplan.batch.cohort for the format)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait for --scheduler before giving up (default 5)")
    p.add_argument("--workers", type=int, default=2, help="workers of the LocalCluster (default 2)")
    p.add_argument("--max-memory-gib", type=float, default=None,
                   help="refuse a plan whose estimated memory exceeds this (default: the worker's memory limit "
                        "and the available memory); the plan fails at once, the others go on")
    p.add_argument("--out", help="output folder (default: the cohort file's 'output')")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from ..batch import CONNECT_TIMEOUT_S, SchedulerConnectError, load_cohort, run_cohort
    from ..errors import InputError
    from ._validate import (check_connect_timeout, check_max_memory, check_output_dir, check_scheduler,
                            check_workers)

    check_workers(args.workers)
    check_scheduler(args.scheduler)
    timeout = check_connect_timeout(args.connect_timeout)
    check_max_memory(args)
    if args.out is not None:
        check_output_dir(args.out)
    cohort = load_cohort(args.cohort, output_dir=args.out)
    check_output_dir(cohort.output_dir, "output folder of the cohort")
    bar = tqdm(total=len(cohort.tasks), desc="cohort", unit="plan")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    existed = cohort.output_dir.exists()
    try:
        rows = run_cohort(cohort, scheduler=args.scheduler, n_workers=args.workers, progress=progress,
                          connect_timeout_s=timeout if timeout is not None else CONNECT_TIMEOUT_S,
                          max_memory_gib=args.max_memory_gib)
    except SchedulerConnectError as exc:  # refused at once, or no answer within --connect-timeout
        raise InputError(f"--scheduler {exc.address}: cannot connect within {exc.timeout_s:g} s ({exc.reason}); "
                         "check the address and that a Dask scheduler runs there (--connect-timeout sets the "
                         "wait)") from None
    except (OSError, TimeoutError) as exc:  # the local cluster did not start
        if not existed:  # leave the output folder as it was: absent
            try:
                cohort.output_dir.rmdir()
            except OSError:
                pass
        where = f"--scheduler {args.scheduler}" if args.scheduler else "the local Dask cluster"
        raise InputError(f"{where}: cannot connect ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") \
            from None
    finally:
        bar.close()
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    print(f"{len(rows)} plans: {counts['done']} done, {counts['skipped']} skipped (finished earlier), "
          f"{counts['failed']} failed; summary: {cohort.output_dir / 'summary.csv'}")
    for r in rows:
        if r["status"] == "failed":
            print(f"  FAILED {r['case']} {r['scheme']}: {r['error']}")
    _print_job_summaries(cohort)
    return 1 if counts["failed"] else 0


def _print_job_summaries(cohort) -> None:
    """The QA pass rates and the TBI quality indicators of the cohort, when it has such tasks."""
    import json

    d = cohort.output_dir
    if any(t.qa for t in cohort.tasks) and (d / "qa_summary.json").is_file():
        st = json.loads((d / "qa_summary.json").read_text())["statistics"]
        counts = ", ".join(f"{k} {v}" for k, v in st["by_verdict"].items() if v)
        share = ("no plan fully measured" if st["plans_passing_pct"] is None
                 else f"{st['plans_passing_pct']:g} % of the fully measured plans pass")
        print(f"patient-specific QA: {st['n_plans']} plans ({counts}); {share}; {d / 'qa_summary.csv'}")
    if any(t.technique == "tbi" for t in cohort.tasks) and (d / "tbi_quality_indicators.json").is_file():
        qi = json.loads((d / "tbi_quality_indicators.json").read_text())
        lung = qi["lung_block_placement_accuracy_rate_percent"]
        print(f"TBI quality indicators over {qi['patients']} patients: midline-dose control pass rate "
              f"{qi['midline_dose_control_pass_rate_percent']:g} %, lung-block placement accuracy rate "
              + ("- (no lung blocks)" if lung is None else f"{lung:g} % of {qi['lung_block_patients']}"))

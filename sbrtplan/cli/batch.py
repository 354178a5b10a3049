"""``sbrtplan batch cohort.yaml``: plan a cohort on Dask (one task per case x scheme)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("batch", help="plan a cohort of cases on Dask (resumable)",
                       description="Plan every case x scheme of a cohort YAML file on a Dask cluster "
                                   "(a LocalCluster by default). Finished tasks are skipped on a rerun; a "
                                   "failing case is reported in summary.csv without stopping the others.")
    p.add_argument("cohort", help="cohort YAML file (see sbrtplan.batch.cohort for the format)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--workers", type=int, default=2, help="workers of the LocalCluster (default 2)")
    p.add_argument("--out", help="output folder (default: the cohort file's 'output')")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from ..batch import load_cohort, run_cohort
    from ..errors import InputError
    from ._validate import check_output_dir, check_scheduler, check_workers

    check_workers(args.workers)
    check_scheduler(args.scheduler)
    if args.out is not None:
        check_output_dir(args.out)
    cohort = load_cohort(args.cohort, output_dir=args.out)
    check_output_dir(cohort.output_dir, "output folder of the cohort")
    bar = tqdm(total=len(cohort.tasks), desc="cohort", unit="plan")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    existed = cohort.output_dir.exists()
    try:
        rows = run_cohort(cohort, scheduler=args.scheduler, n_workers=args.workers, progress=progress)
    except (OSError, TimeoutError) as exc:  # an unreachable scheduler (dask raises OSError after its timeout)
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
    return 1 if counts["failed"] else 0

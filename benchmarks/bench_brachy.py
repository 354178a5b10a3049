"""Seed-implant timings: TG-43 dose of 100 seeds on a 1 mm grid, pre-plan of phantom:prostate_seeds,
post-implant detection accuracy.

Run: ``.venv/bin/python benchmarks/bench_brachy.py``.

Targets of the issue: 100 seeds on a 1 mm grid over the target and organs "well under a second";
the pre-plan of ``phantom:prostate_seeds`` (about 40 cc, 145 Gy, I-125) meeting every goal in
<= 30 s; on the simulated post-implant CT >= 98 % of the seeds found within 1 mm and D90 within 2 %
of the dose of the true positions.  Each timed step runs twice; the second (numba cache warm) is
the figure.
"""

from __future__ import annotations

import os
import time

import numpy as np

from sbrtplan.brachy import (SeedSet, Tg43Model, load_seed_protocol, load_source, position_differences, run_preplan,
                             verify_implant)
from sbrtplan.brachy.geometry import dose_box
from sbrtplan.phantoms import make_phantom


def bench_dose() -> None:
    case = make_phantom("prostate_seeds")
    target = case.structure("Prostate")
    grid, _ = dose_box(case, target, 15.0)  # target box + 15 mm: prostate, urethra, rectum and bladder near it
    rng = np.random.default_rng(1)
    c = target.centroid_mm()
    seeds = SeedSet(c + rng.uniform(-18, 18, (100, 3)) * [1.0, 0.8, 1.0], [0, 0, 1], 0.45)
    model = Tg43Model(load_source("6711"))
    for run in ("cold", "warm"):
        t, c0 = time.perf_counter(), time.process_time()
        model.dose_grid_gy(grid, seeds)
        dt, cpu = time.perf_counter() - t, time.process_time() - c0
    # CPU seconds (all threads) tell what an idle machine would take when others share the cores
    print(f"TG-43 dose, 100 seeds, 1 mm grid of {grid.size / 1e3:.0f} k voxels {grid.shape}: {dt:.3f} s wall "
          f"(warm), {cpu:.3f} CPU-s over {os.cpu_count()} cores, {cpu / (grid.size * 100) * 1e9:.1f} CPU-ns per "
          f"voxel-seed")


def bench_preplan() -> None:
    case = make_phantom("prostate_seeds")
    protocol = load_seed_protocol("prostate_i125")
    for run in ("cold", "warm"):
        t, c0 = time.perf_counter(), time.process_time()
        pp = run_preplan(case, protocol)
        dt, cpu = time.perf_counter() - t, time.process_time() - c0
    goals = ", ".join(f"{g.label}: {g.value_pct:.1f}% {'pass' if g.passed else 'FAIL'}" for g in pp.goals)
    print(f"pre-plan phantom:prostate_seeds: {dt:.1f} s wall (warm, target <= 30 s), {cpu:.1f} CPU-s; {pp.n_seeds} seeds of "
          f"{pp.strength_u:.2f} U in {pp.n_needles} needles; {goals}")


def bench_postimplant() -> None:
    case = make_phantom("prostate_seeds_postimplant")
    protocol = load_seed_protocol("prostate_i125")
    true = np.array(case.metadata["true_seeds"]["positions_mm"])
    tdir = np.array(case.metadata["true_seeds"]["directions"])
    t = time.perf_counter()
    found = verify_implant(case, protocol, strength_u=0.5, expected_count=len(true))
    dt = time.perf_counter() - t
    ref = verify_implant(case, protocol, strength_u=0.5, positions_mm=true, directions=tdir)
    d = position_differences(found.seeds.positions_mm, true, 1.0)
    d90, d90_ref = found.metrics["target"]["D90_gy"], ref.metrics["target"]["D90_gy"]
    print(f"post-implant: {len(found.seeds)} of {len(true)} seeds found, {d['within_tolerance']} within 1 mm "
          f"({100 * d['within_tolerance'] / len(true):.1f}%, mean {d['mean_mm']:.2f} mm, max {d['max_mm']:.2f} mm); "
          f"D90 {d90:.2f} Gy vs {d90_ref:.2f} Gy at the true positions ({100 * (d90 / d90_ref - 1):+.2f}%); {dt:.1f} s")


if __name__ == "__main__":
    print(f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    bench_dose()
    bench_preplan()
    bench_postimplant()

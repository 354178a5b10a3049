"""End-to-end planning benchmark: the issue's cases, their clinical numbers, time and peak memory.

Usage::

    python benchmarks/bench_plan.py spine-imrt      # spine phantom 27/3, 7-9 selected non-coplanar beams
    python benchmarks/bench_plan.py spine-vmat      # spine phantom 27/3, two arcs
    python benchmarks/bench_plan.py liver-imrt      # liver phantom 45/3
    python benchmarks/bench_plan.py liver-vmat
    python benchmarks/bench_plan.py all
    python benchmarks/bench_plan.py spine-vmat --machine generic-6MV   # another beam model

The TG-119 C-shape plan has its own script: benchmarks/bench_tg119.py.

Each run prints every stage's time, the peak resident memory of the process, and
every number the issues ask for with its limit and a pass/fail mark. The figures
come from the final dose recomputed from the deliverable apertures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _goal(p, structure_part: str, metric_part: str):
    for g in p.metrics["goals"]:
        if structure_part.lower() in (g["structure"] or "").lower() and metric_part in g["metric_label"]:
            return g
    return None


def _row(label, value, limit, ok):
    mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
    v = "n/a" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
    print(f"  {mark}  {label:<44} {v:>10}   {limit}")


def report(p, wall_s: float, budget_s: float, budget_gib: float) -> None:
    m = p.metrics
    tgt = p.report.target
    t = m["targets"][tgt]
    print(f"\n== {p.case.name} {p.protocol_name} {p.scheme} {p.options.technique.value} "
          f"({m['plan'].get('beam_model')}): "
          f"{len(p.beam_set.beams)} beams/arcs, {p.total_mu:.0f} MU/fx")
    print("stage times (s):")
    for k, v in p.timings_s.items():
        print(f"  {k:<48} {v:8.2f}")
    print(f"wall time {wall_s:.1f} s (limit {budget_s:.0f} s), peak RSS {peak_rss_gib():.2f} GiB "
          f"(limit {budget_gib:.1f} GiB)")
    _row("end-to-end time (s)", wall_s, f"<= {budget_s:.0f}", wall_s <= budget_s)
    _row("peak memory (GiB)", peak_rss_gib(), f"<= {budget_gib}", peak_rss_gib() <= budget_gib)
    _row(f"{tgt} V100% (%)", t["V100_pct"], ">= 95 (>= 90 if cord-limited)", t["V100_pct"] >= 90)
    _row(f"{tgt} V90% (%)", t["V90_pct"], ">= 99 (liver)", t["V90_pct"] >= 99)
    _row(f"{tgt} Dmax (% Rx)", 100 * t["Dmax_gy"] / p.beam_set.prescription_gy, "<= 140", t["Dmax_gy"] <= 1.4 * p.beam_set.prescription_gy)
    _row("R50%", t["R50"], f"RTOG class: {t['rtog_class']}", None)
    _row("D2cm (% Rx)", t["D2cm_pct"], "", None)
    _row("CI (Paddick), GI", t["CI_paddick"], f"GI {t['GI']:.2f}", None)
    print("protocol goals:")
    for g in m["goals"]:
        if g["status"] == "not_evaluable":
            continue
        _row(f"{g['structure']} {g['metric_label']}", g["value"], f"{g['comparator']} {g['limit']} {g['unit']}"
             f" (priority {g['priority']})", g["passed"])
    print("optimiser vs delivered:", m["plan"].get("optimizer_vs_delivered"))
    print("QA:", {k: v for k, v in p.qa.items() if k != "deliverability"},
          "deliverable:", p.qa["deliverability"]["passed"])


def run_phantom(name: str, technique: str, machine: str | None = None) -> None:
    from sbrtplan.dose_engine import load_beam_model
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow import plan

    proto, scheme, budget = {"spine": ("bone_spine", "27/3", 90.0), "liver": ("liver_hcc", "45/3", 90.0)}[name]
    if technique == "vmat":
        budget = 300.0
    model = load_beam_model(machine) if machine else None
    case = make_phantom(name)
    t0 = time.perf_counter()
    # the phantoms model the organs near their targets; far organs the protocol names are reported
    # as not evaluable
    p = plan(case, proto, scheme, technique, 7 if technique == "imrt" else None, allow_missing=True, model=model)
    report(p, time.perf_counter() - t0, budget, 4.0 if technique == "imrt" else 6.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["spine-imrt", "spine-vmat", "liver-imrt", "liver-vmat", "all"])
    ap.add_argument("--machine", default=None, help="beam model name or file (default: the shipped default)")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    todo = ["spine-imrt", "spine-vmat", "liver-imrt", "liver-vmat"] if args.which == "all" else [args.which]
    for w in todo:
        site, tech = w.split("-")
        run_phantom(site, tech, args.machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())

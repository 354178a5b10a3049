"""TG-119 C-shape benchmark: automatic IMRT plan of the matRad phantom, goals, time, memory, peers.

Usage::

    python benchmarks/bench_tg119.py                    # 2.5 mm grid (the issue's setting)
    python benchmarks/bench_tg119.py --grid-mm 5        # quick look
    python benchmarks/bench_tg119.py --case PATH/TG119.mat --json out.json
    python benchmarks/bench_tg119.py --grid-mm 5 --time-factor 4   # diagnostic: 4x the IMRT solver budgets

Plans ``TG119.mat`` (matRad's copy of the AAPM TG-119 C-shape phantom) with the ``tg119_cshape``
protocol: 50 Gy / 25 fx, 9 equispaced coplanar 6 MV beams (the generic beam template, no beam
selection), step-and-shoot segments optimised on the dose (``workflow.imrt.generate_apertures``),
final dose recomputed from the segments.  Prints every stage's
time, the peak resident memory, the TG-119 goals (Ezzell et al. 2009, Med Phys 36:5359, table 2)
with PASS/FAIL, the 'harder' goal (core D10 < 10 Gy) as reached or not, the conformity and gradient
indices and total MU, and compares them with pyRadPlan's published TG-119 figures (same phantom,
2.5 mm grid, 9 beams, IPOPT, plan scaled to PTV D95 = 50 Gy).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

#: pyRadPlan on TG-119 (2.5 mm, 9 coplanar beams, fluence dose scaled to PTV D95 = 50 Gy).
PYRADPLAN = {"CI_paddick": 0.86, "GI": 4.62, "R50": 4.84, "D2cm_pct": 77.0, "optimisation_s": 191.0}

RX_GY = 50.0


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def default_case_path() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "matrad" / "TG119.mat"


def _row(label: str, value, limit: str = "", ok=None) -> None:
    mark = "    " if ok is None else ("PASS" if ok else "FAIL")
    v = "n/a" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
    print(f"  {mark}  {label:<40} {v:>10}   {limit}")


def _goal(p, role: str, label: str, comparator: str):
    for r in p.report.goals:
        g = r.goal
        if g.structure == role and g.metric_label == label and g.comparator.value == comparator:
            return r
    return None


def summarise(p, wall_s: float, load_s: float) -> dict:
    """The benchmark's figures from a finished plan (final segment dose)."""
    tgt = p.report.target
    t = p.report.targets[tgt]
    ix = t.indices
    core_easy = _goal(p, "core", "D10%", "<=")
    core_hard = _goal(p, "core", "D10%", "<")
    ptv_d10 = _goal(p, "ptv", "D10%", "<=")
    ptv_d10_gy = None if ptv_d10 is None or ptv_d10.value is None else ptv_d10.value / 100.0 * RX_GY
    # fluence or aperture optimisation and the segment weights (not the problem set-up)
    opt_s = sum(v for k, v in p.timings_s.items()
                if ("optimisation" in k and "problem" not in k) or k == "aperture generation")
    out = {
        "grid_mm": p.options.grid_mm, "n_beams": len(p.beam_set.beams),
        "n_segments": sum(len(b.control_points) // 2 for b in p.beam_set.beams),
        "total_mu_per_fraction": p.total_mu, "wall_s": wall_s, "load_s": load_s, "optimisation_s": opt_s,
        "peak_rss_gib": peak_rss_gib(), "timings_s": dict(p.timings_s),
        "ptv_d95_gy": t.d95_gy, "ptv_d10_gy": ptv_d10_gy, "ptv_dmax_gy": t.dmax_gy, "ptv_v100_pct": t.v100_pct,
        "core_d10_gy": None if core_easy is None else core_easy.value,
        "harder_goal_reached": None if core_hard is None else core_hard.passed,
        "CI_paddick": ix.ci_paddick if ix else None, "GI": ix.gi if ix else None, "R50": ix.r50 if ix else None,
        "D2cm_pct": ix.d2cm_pct if ix else None, "acceptable": p.report.acceptable,
        "optimizer_vs_delivered": p.metrics.get("plan", {}).get("optimizer_vs_delivered"),
        "deliverable": p.qa.get("deliverability", {}).get("passed"), "notes": list(p.log),
    }
    return out


def print_summary(s: dict) -> None:
    print(f"\n== TG-119 C-shape, 50 Gy / 25 fx, {s['n_beams']} beams, {s['n_segments']} segments, "
          f"{s['grid_mm']:g} mm grid")
    print("stage times (s):")
    print(f"  {'load case':<48} {s['load_s']:8.2f}")
    for k, v in s["timings_s"].items():
        print(f"  {k:<48} {v:8.2f}")
    print(f"plan wall time {s['wall_s']:.1f} s, peak RSS {s['peak_rss_gib']:.2f} GiB")
    print("TG-119 goals (final dose from the segments):")
    _row("PTV D95 (Gy)", s["ptv_d95_gy"], ">= 50", s["ptv_d95_gy"] >= RX_GY - 0.05)
    _row("PTV D10 (Gy)", s["ptv_d10_gy"], "<= 55", None if s["ptv_d10_gy"] is None else s["ptv_d10_gy"] <= 55.0)
    _row("Core D10 (Gy)", s["core_d10_gy"], "<= 25", None if s["core_d10_gy"] is None else s["core_d10_gy"] <= 25.0)
    hard = s["harder_goal_reached"]
    print(f"        'harder' goal core D10 < 10 Gy: {'reached' if hard else 'not reached'}")
    _row("PTV Dmax (Gy)", s["ptv_dmax_gy"], "<= 70 (140 % Rx)", s["ptv_dmax_gy"] <= 70.0)
    _row("PTV V100% (%)", s["ptv_v100_pct"])
    _row("total MU per fraction", s["total_mu_per_fraction"])
    print(f"  plan acceptable (mandatory goals): {s['acceptable']}, deliverable: {s['deliverable']}")
    print("  optimiser vs delivered:", s["optimizer_vs_delivered"])
    print("comparison with pyRadPlan (2.5 mm, 9 beams, IPOPT, scaled to D95 = 50 Gy):")
    print(f"  {'figure':<22} {'sbrtplan':>10} {'pyRadPlan':>10} {'ratio':>8}   better is")
    for key, label, better in (("CI_paddick", "Paddick CI", "higher"), ("GI", "GI", "lower"),
                               ("R50", "R50%", "lower"), ("D2cm_pct", "D2cm (% Rx)", "lower"),
                               ("optimisation_s", "optimisation (s)", "lower")):
        ours, theirs = s.get(key), PYRADPLAN[key]
        ratio = "n/a" if ours is None else f"{ours / theirs:8.2f}"
        v = "n/a" if ours is None else f"{ours:10.2f}"
        print(f"  {label:<22} {v:>10} {theirs:10.2f} {ratio:>8}   {better}")
    if s["notes"]:
        print("notes:")
        for n in s["notes"]:
            print("  -", n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", type=Path, default=default_case_path(), help="path of TG119.mat")
    ap.add_argument("--grid-mm", type=float, default=2.5, help="dose grid spacing (default 2.5 mm)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no per-stage log lines")
    ap.add_argument("--time-factor", type=float, default=1.0,
                    help="diagnostic: multiply the IMRT solver time budgets (tells budget-limited from model-limited)")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.case.exists():
        print(f"TG119.mat not found at {args.case}: skipped (give --case PATH)")
        return 0
    from sbrtplan._log import atomic_output
    from sbrtplan.io import load_case
    from sbrtplan.workflow import plan

    from dataclasses import replace

    from sbrtplan.workflow import default_recipe

    recipe = default_recipe()
    if args.time_factor != 1.0:
        im = recipe.imrt
        im = replace(im, fluence_time_limit_s=im.fluence_time_limit_s * args.time_factor,
                     segment_time_limit_s=im.segment_time_limit_s * args.time_factor,
                     aperture_time_limit_s=im.aperture_time_limit_s * args.time_factor)
        recipe = replace(recipe, imrt=im, name=f"{recipe.name} (budgets x{args.time_factor:g})")
        print(f"diagnostic run: solver budgets x{args.time_factor:g} (aperture generation "
              f"{im.aperture_time_limit_s:.0f} s, fluence {im.fluence_time_limit_s:.0f} s, "
              f"segments {im.segment_time_limit_s:.0f} s)")
    t0 = time.perf_counter()
    case = load_case(args.case)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    p = plan(case, "tg119_cshape", "50/25", technique="imrt", n_beams=9, select_beams=False, grid_mm=args.grid_mm,
             recipe=recipe)
    s = summarise(p, time.perf_counter() - t1, load_s)
    print_summary(s)
    if args.json is not None:
        with atomic_output(args.json) as tmp:
            Path(tmp).write_text(json.dumps(s, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

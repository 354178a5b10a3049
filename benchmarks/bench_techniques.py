"""VMAT against non-coplanar IMRT on the same case: the side-by-side table of issue 6.

Usage::

    python benchmarks/bench_techniques.py spine     # spine phantom, bone_spine 27/3
    python benchmarks/bench_techniques.py liver     # liver phantom, liver_hcc 45/3
    python benchmarks/bench_techniques.py all

For each case it makes a two-arc VMAT plan and a 7-beam IMRT plan with automatic
non-coplanar beam selection (the same goals, grid and final-dose rule), then
prints coverage, CI, GI, R50%, D2cm, the protocol goals with both verdicts,
total MU, MU per Gy, estimated delivery time, deliverability and the MU check,
with the planning time of each technique.  The same table comes from the
command ``sbrtplan compare-techniques``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

CASES = {"spine": ("bone_spine", "27/3"), "liver": ("liver_hcc", "45/3")}


def run(site: str) -> None:
    from sbrtplan.evaluation import compare_reports
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow import plan

    protocol, scheme = CASES[site]
    case = make_phantom(site)
    plans, times = {}, {}
    for technique, n_beams in (("vmat", None), ("imrt", 7)):
        t0 = time.perf_counter()
        # the phantoms model the organs near their targets; far organs are reported as not evaluable
        plans[technique] = plan(case, protocol, scheme, technique, n_beams, allow_missing=True)
        times[technique] = time.perf_counter() - t0
    n = len(plans["imrt"].beam_set.beams)
    table = compare_reports(plans["vmat"].metrics, plans["imrt"].metrics, labels=("VMAT", f"IMRT-{n}"))
    print(f"\n== {site} phantom, {protocol} {scheme}: VMAT (2 arcs) vs IMRT ({n} selected non-coplanar beams)")
    print(f"planning time: VMAT {times['vmat']:.0f} s, IMRT {times['imrt']:.0f} s")
    for b in plans["imrt"].beam_set.beams:
        print(f"  IMRT beam {b.name}: gantry {b.control_points[0].gantry_deg:.0f}, couch {b.couch_deg:.0f}, "
              f"{b.mu:.0f} MU")
    print(table.format(("prescription", "target", "goal", "delivery", "summary")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=[*CASES, "all"])
    ap.add_argument("-v", "--verbose", action="store_true", help="log every planning stage")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for site in (list(CASES) if args.which == "all" else [args.which]):
        run(site)
    return 0


if __name__ == "__main__":
    sys.exit(main())

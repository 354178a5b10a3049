"""Determinism: the same inputs give the same plan (CONTRIBUTING: seeded randomness).

The spine phantom is planned twice at a coarse grid (5 mm dose grid, 5 template IMRT beams); every
metric of ``metrics.json`` except the timings must be identical, to the last digit, not within a
tolerance: nothing in the pipeline may depend on the clock, on thread scheduling or on an unseeded
random number.  Measured when written: about 25 s per plan with warm numba caches (busy 2-core machine).
"""

from __future__ import annotations

import json

import pytest


def _without_timings(metrics: dict) -> str:
    m = {k: v for k, v in metrics.items() if k not in ("timings_s", "timings")}
    return json.dumps(m, sort_keys=True, default=str)


@pytest.mark.slow
def test_same_plan_twice_gives_identical_metrics():
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow import plan

    case = make_phantom("spine", spacing_mm=4.0)
    kw = dict(grid_mm=5.0, select_beams=False, allow_missing=True)
    a = plan(case, "bone_spine", "27/3", "imrt", 5, **kw)
    b = plan(case, "bone_spine", "27/3", "imrt", 5, **kw)
    assert _without_timings(a.metrics) == _without_timings(b.metrics)
    assert a.total_mu == b.total_mu

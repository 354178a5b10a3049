"""Long planning stages report progress inside the stage (iterations with an ETA), not only between stages."""

from __future__ import annotations

import re

from sbrtplan import plan
from sbrtplan.phantoms import make_phantom


def test_optimisation_stage_reports_its_iterations_with_an_eta():
    case = make_phantom("spine", spacing_mm=5.0)
    calls: list[tuple[str, int, int]] = []
    plan(case, "bone_spine", "27/3", "imrt", 7, allow_missing=True, grid_mm=5.0, select_beams=False,
         progress=lambda stage, done, total: calls.append((stage, done, total)))
    inner = [c for c in calls if re.fullmatch(r"optimisation \d+/\d+(, ETA \d+ s)?", c[0])]
    assert len(inner) >= 3, calls
    # inside the stage the outer position stays on that stage: the bar does not jump ahead
    stage_index = {c[0]: c[1] for c in calls}["optimisation"]
    assert all(done == stage_index for _, done, _ in inner)
    counts = [tuple(map(int, re.match(r"optimisation (\d+)/(\d+)", s).groups())) for s, _, _ in inner]
    assert all(1 <= d <= t for d, t in counts)
    assert any(", ETA " in s for s, _, _ in inner)

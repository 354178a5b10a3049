"""Automatic IMRT plan of the liver phantom: no hot spot in normal tissue, spread beams, faithful segments."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import distance_map_mm


@pytest.mark.slow
def test_liver_imrt_has_no_hot_spot_outside_the_target():
    """Liver phantom, 45 Gy / 3 fx, 7 automatically selected beams, 4 mm grid (time budget).

    The target lies about 25 mm under the right lateral skin.  Before the beam selection kept its
    directions apart, the lasso chose 7 beams within 40 degrees of each other and their entrance
    doses added up to a 178 % Rx hot spot 13 mm outside the PTV (2 mm grid).  Now every beam pair
    is at least 35 degrees apart and the dose more than 5 mm outside the PTV stays below 105 % Rx
    (measured 92 %); the protocol's External-GTV-ITV D0.035cc < 110 % Rx is met (its evaluation on
    the final dose from the segments), and the coverage goal V100%Rx >= 95 % is reached by the
    normalisation without a hard limit stopping it.
    """
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow import plan

    case = make_phantom("liver", spacing_mm=4.0)
    p = plan(case, "liver_hcc", "45/3", "imrt", 7, allow_missing=True, grid_mm=4.0)
    rx = 45.0
    beams = p.beam_set.beams
    # 7 directions selected; one the optimiser finds useless (e.g. through the whole body from the
    # left) may end with no segment and is dropped: at least 5 remain (the range)
    assert 5 <= len(beams) <= 7
    from sbrtplan.beams import BeamGeometry

    dirs = np.array([BeamGeometry(b.control_points[0].gantry_deg, b.collimator_deg, b.couch_deg).direction
                     for b in beams])
    ang = np.degrees(np.arccos(np.clip(dirs @ dirs.T, -1.0, 1.0)))[np.triu_indices(len(beams), 1)]
    assert ang.min() >= 35.0 - 1e-6

    ptv = p.case.structures[p.report.target]
    dose = p.dose.dose_gy
    dist = distance_map_mm(ptv, max_distance_mm=50.0)
    outside = p.case.body.mask & ~ptv.mask & (dist > 5.0)
    assert dose[outside].max() <= 1.05 * rx
    by = {(g["structure"], g["metric_label"]): g for g in p.metrics["goals"]}
    ext = next(g for (s, m), g in by.items() if s.startswith("External") and m == "D0.035cc")
    assert ext["passed"] and ext["value"] < 110.0
    t = p.metrics["targets"][p.report.target]
    assert t["V100_pct"] >= 95.0 - 0.05                  # normalised to 95.5 %: DVH rounding only
    # the segments deliver what the optimiser planned (issue 5's fidelity goal)
    assert p.metrics["plan"]["optimizer_vs_delivered"]["p95_abs_diff_pct_rx"] < 5.0
    assert p.metrics["plan"]["beam_model"] == "generic-6MV-sf"     # recorded with the plan

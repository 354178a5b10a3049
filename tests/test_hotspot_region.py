"""One ``subtract``: the hot-spot region the planner limits is the one the evaluation measures.

The standards allow hot spots (110-150 % Rx) inside the GTV/ITV only: the protocol goal
"External minus GTV/ITV D0.035cc < 110 %" is scored by the evaluation on ``External - GTV/ITV``,
and the planner penalises the dose above its hot-spot limit on its own region ``zNoHotspot``
(body minus the GTV/ITV inside the PTV).  Both come from ``case.subtract`` (one occupancy rule),
so on a single-lesion case they are the same voxels with the same occupancy, and the goal the
planner optimises (``workflow.goals.resolve_goals``) is the very structure the evaluation scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import resample_case
from sbrtplan.evaluation import goal_structures
from sbrtplan.evaluation.matching import match_roles, rename_structures
from sbrtplan.phantoms import make_phantom
from sbrtplan.protocols import load_protocol
from sbrtplan.protocols.model import Metric
from sbrtplan.workflow.goals import resolve_goals
from sbrtplan.workflow.structures import build_planning_structures


def _hotspot_goal(protocol, scheme):
    goals = [g for g in protocol.goals_for(protocol.scheme(scheme))
             if protocol.roles[g.structure].kind == "body" and g.minus and g.metric is Metric.D_CC]
    assert len(goals) == 1, goals
    return goals[0]


@pytest.mark.parametrize("phantom, protocol_name, scheme", [("spine", "bone_spine", "27/3"),
                                                            ("liver", "liver_hcc", "45/3")])
def test_planner_and_evaluation_hotspot_regions_are_the_same_voxels(phantom, protocol_name, scheme):
    # the dose grid the planner works on: the phantom resampled to 4 mm, so the External and the
    # GTV/ITV carry sub-voxel occupancy at their surfaces (the case where two rules would differ)
    case = make_phantom(phantom, spacing_mm=2.0)
    cg = resample_case(case, 4.0, region=case.body, margin_mm=16.0)
    assert cg.body.fraction is not None and cg.structures["GTV"].fraction is not None
    protocol = load_protocol(protocol_name)
    ps = build_planning_structures(cg, protocol)
    goal = _hotspot_goal(protocol, scheme)

    # the evaluation's region, as evaluate_plan resolves it (renamed structures, roles matched)
    named = rename_structures(cg.structures)
    match = match_roles(protocol, named, ps.target.name)
    (region,), _ = goal_structures(goal, protocol, match, cg.grid)
    planner = ps.hotspot_free
    np.testing.assert_array_equal(region.mask, planner.mask)
    np.testing.assert_array_equal(region.weights, planner.weights)

    # the goal the planner optimises is that structure too
    resolved = resolve_goals([goal], protocol, ps.match)
    (_, s), = resolved.pairs
    np.testing.assert_array_equal(s.weights, region.weights)

    # volumes add up (nested partial volumes): External - GTV/ITV = External - (GTV/ITV), and no
    # voxel counts more of the region than the part of it outside the GTV/ITV
    boost = np.maximum.reduce([cg.structures[n].weights for n in ("GTV", "ITV") if n in cg.structures])
    assert region.volume_cc == pytest.approx(cg.body.volume_cc - float((np.minimum(boost, cg.body.weights)).sum())
                                             * cg.grid.voxel_volume_cc, rel=1e-5)
    assert np.all(region.weights <= 1.0 - boost + 1e-6)
    # the GTV/ITV itself is outside the region, voxel centre by voxel centre
    assert not np.any(region.mask & (boost >= 1.0 - 1e-6))

"""Planning structures of one lesion in a case with two: hot spots belong to the planned lesion only."""

from __future__ import annotations

import numpy as np

from sbrtplan.phantoms import make_phantom
from sbrtplan.protocols import load_protocol
from sbrtplan.workflow import build_planning_structures


def test_hot_spot_region_is_the_planned_lesions_itv_not_the_other_lesions():
    case = make_phantom("lung", spacing_mm=4.0)
    s = case.structures
    ps = build_planning_structures(case, load_protocol("lung"), "PTV_Peri")
    assert ps.boost is not None
    # the peripheral ITV (inside its PTV) is where this plan's hot spot may sit ...
    assert np.all(ps.boost.mask[s["ITV_Peri"].mask])
    # ... the central lesion 2-3 cm away is not: its ITV stays under the hot-spot limit
    assert not (ps.boost.mask & s["ITV_Central"].mask).any()
    assert not (ps.boost.mask & ~s["PTV_Peri"].mask).any()
    assert ps.hotspot_free.mask[s["ITV_Central"].mask].all()

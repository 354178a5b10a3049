"""Bilateral (lateral) TBI on phantom:tbi: lung compensators over the projected lungs, limited by the
chest midline, and the mean lung dose reported against the standard's 7 Gy goal and 8 Gy limit."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.phantoms import tbi as tbi_phantom
from sbrtplan.tbi import Technique, TbiRequest, load_beam_data, load_rules, metrics_dict, plan_tbi

pytestmark = pytest.mark.slow


def _plan(rx_gy: float, n_fx: int):
    return plan_tbi(tbi_phantom.build(), TbiRequest(rx_gy, n_fx, technique=Technique.LATERAL))


def _rule(plan, name: str):
    return next(r for r in plan.rules_results if r.rule == name)


@pytest.fixture(scope="module")
def myeloablative():
    return _plan(12.0, 6)


def test_lateral_lung_compensator_is_limited_by_the_chest_midline_and_the_mld_rule_fails(myeloablative):
    """12 Gy / 6 fx with bilateral fields: the arms (in the beam path) and a lung compensator are all
    the technique has.  The MLD design asks for a thick compensator, but whatever it takes from the
    lungs it takes from the mediastinum on the same rays, so it stops where the chest midline would
    fall below 95 % of the prescription: the MLD stays above 8 Gy and the limit rule fails, saying why."""
    plan = myeloablative
    beam, rules = load_beam_data(), load_rules()
    comps = [b for b in plan.blocks if b.name == "lung"]
    assert {b.field_name for b in comps} == {"RLAT", "LLAT"}
    for b in comps:
        assert b.meta["kind"] == "lateral lung compensator"
        # cut from the compensator sheets: a whole number of sheets, partial transmission
        sheets = b.thickness_mm / beam.compensator.step_mm
        assert sheets == pytest.approx(round(sheets))
        assert 0.0 < b.thickness_mm and 0.9 < b.transmission < 1.0
    design = plan.lung_shielding
    assert design["limited_by_midline"] and design["design_thickness_mm"] > design["thickness_mm"]
    # the compensator lowers the MLD, but not to the limit
    assert plan.mld_gy < plan.mld_open_gy
    assert plan.mld_gy > rules.mld_limit_gy
    limit = _rule(plan, "mean lung dose (limit)")
    assert not limit.passed and "lateral rays" in limit.note and not plan.passed
    assert not _rule(plan, "mean lung dose (goal)").passed
    # the chest midline kept its floor, and every midline point its +-5 % aim
    chest = [sd.final_gy_per_fx * 6 for sd in plan.samples if sd.sample.region == "chest"]
    assert min(chest) >= (1.0 - rules.lateral_lung_midline_floor_fraction) * 12.0 - 1e-6
    assert _rule(plan, "midline dose within aim (every sampling point)").passed
    # metrics.json reports the computed MLD with and without the compensator and the design
    m = metrics_dict(plan)
    assert m["lung"]["mean_dose_gy"] == pytest.approx(plan.mld_gy, abs=1e-3)
    assert m["lung"]["mean_dose_without_blocks_gy"] == pytest.approx(plan.mld_open_gy, abs=1e-3)
    assert m["lung"]["shielding"]["kind"] == "lateral lung compensator"
    assert {b["kind"] for b in m["blocks"]} == {"lateral lung compensator"}
    assert all(b["block_screen_distance_cm"] == beam.compensator.distance_cm for b in m["blocks"])
    assert m["quality_indicators"]["lung_block_placement_passed"] is False


def test_lateral_lung_compensator_meets_the_mld_design_when_the_midline_allows_it():
    """6 Gy / 3 fx: the open lateral fields give a lung dose just above the 6.5 Gy design; a thin
    compensator brings it below the design (and the 7 Gy goal) and every rule passes."""
    plan = _plan(6.0, 3)
    rules = load_rules()
    assert plan.mld_open_gy > rules.mld_design_gy
    assert not plan.lung_shielding["limited_by_midline"] and plan.lung_shielding["placed"]
    assert plan.mld_gy <= rules.mld_design_gy < rules.mld_goal_gy
    assert plan.passed, [r for r in plan.rules_results if not r.passed]


def test_no_lateral_compensator_when_the_open_lungs_are_below_the_design():
    """2 Gy single fraction: nothing to shield; the MLD is reported and the goal met."""
    plan = _plan(2.0, 1)
    assert not [b for b in plan.blocks if b.name == "lung"]
    assert plan.lung_shielding["placed"] is False
    assert plan.mld_gy == pytest.approx(plan.mld_open_gy) and plan.mld_gy < load_rules().mld_goal_gy
    assert np.isfinite(plan.mld_gy) and plan.passed

"""End to end, VMAT (the default technique) on a coarse 5 mm grid: plan -> deliverable arcs ->
final dose -> metrics, checked against physical facts rather than the planner's own numbers.

One plan of the spine phantom (bone_spine 27/3) is shared by the tests of this module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbrtplan.beams import DeliveryLimits, ViolationKind, check_deliverability
from sbrtplan.dose_engine import forward_dose
from sbrtplan.dose_engine.model import default_beam_model
from sbrtplan.evaluation import Status
from sbrtplan.io import read_rtplan, write_rtplan
from sbrtplan.phantoms import make_phantom
from sbrtplan.protocols.model import Stage
from sbrtplan.workflow import plan as make_plan
from sbrtplan.workflow.final_dose import FINAL_GANTRY_STEP_DEG, FINAL_LEAF_STEP_MM, final_dose_voxels
from sbrtplan.workflow.outputs import write_metrics_json

pytestmark = pytest.mark.slow

RX_GY, FRACTIONS = 27.0, 3


@pytest.fixture(scope="module")
def vmat_plan():
    case = make_phantom("spine")
    return make_plan(case, "bone_spine", "27/3", "vmat", grid_mm=5.0, allow_missing=True)


def test_every_hard_limit_met_or_the_binding_limit_named(vmat_plan):
    rep = vmat_plan.report
    assert rep.rx_gy == pytest.approx(RX_GY)
    hard = [r for r in rep.goals if r.goal.mandatory and r.goal.stage is Stage.CONSTRAINT]
    assert hard, "the bone_spine protocol has mandatory organ limits (cord, oesophagus, ...)"
    assert all(r.status is not Status.NOT_EVALUABLE for r in hard if r.structure)
    notes = " ".join(vmat_plan.metrics.get("notes", []))
    for r in rep.hard_failures:
        # a failing hard limit must be the one the plan says bound it (coverage yields, never the limit)
        assert r.structure in notes, f"hard limit {r.structure} {r.goal.metric_label} fails unnamed"
    # the cord PRV is the spine plan's critical organ: its limit holds on the delivered dose
    cord = [r for r in hard if r.structure and r.structure.startswith("SpinalCord")]
    assert cord and all(r.passed for r in cord)


def test_arcs_are_deliverable(vmat_plan):
    bs = vmat_plan.beam_set
    lim = DeliveryLimits()
    assert len(bs.beams) == 2 and all(b.is_arc for b in bs.beams)
    assert [b.arc_direction for b in bs.beams] == ["CW", "CC"]
    viol = check_deliverability(bs, lim)
    assert not viol, [v.message for v in viol[:5]]
    assert vmat_plan.qa["deliverability"]["passed"]
    lo, hi = lim.mu_per_deg_range
    for b in bs.beams:
        g = np.array([cp.gantry_deg for cp in b.control_points])
        step = np.abs((np.diff(g) + 180.0) % 360.0 - 180.0)
        # control points <= 4 deg apart (the standards' arc sampling) and MU per degree of every
        # interval inside the machine's arc range after the final normalisation
        assert step.max() <= lim.max_cp_spacing_deg + 1e-6
        mu_deg = b.segment_mu() / step
        assert mu_deg.min() >= lo - 1e-6 and mu_deg.max() <= hi + 1e-6
        assert b.mu == pytest.approx(float(b.segment_mu().sum()), rel=1e-9)
    assert not [v for v in viol if v.kind is ViolationKind.MU_PER_DEGREE]
    assert vmat_plan.total_mu == pytest.approx(sum(b.mu for b in bs.beams))


def test_final_dose_is_the_forward_dose_of_the_exported_plan(vmat_plan, tmp_path):
    p = vmat_plan
    case = p.case
    path = tmp_path / "RTPLAN.dcm"
    write_rtplan(p.beam_set, path, case=case, target_name=p.report.target)
    back = read_rtplan(path)
    assert back.n_fractions == FRACTIONS
    assert back.total_mu_per_fraction == pytest.approx(p.total_mu, rel=1e-4)
    # every voxel the plan computed at full resolution (target, 30 mm around it, nearby organs)
    vox = final_dose_voxels(case, p.case.structures[p.report.target])
    idx = np.flatnonzero(vox.full.ravel())
    d = forward_dose(case.density, case.grid, back, model=default_beam_model(), voxel_indices=idx,
                     max_gantry_step_deg=FINAL_GANTRY_STEP_DEG, max_leaf_step_mm=FINAL_LEAF_STEP_MM)
    d = np.asarray(d, float).reshape(-1)[idx]
    final = p.dose.dose_gy.reshape(-1)[idx].astype(float)
    diff = np.abs(d - final) / RX_GY * 100.0
    # The plan's final dose is the same engine on the same control points, computed sector by
    # sector with fluence maps of at most 4 deg of each sector's control points; the whole arcs
    # here are sampled every degree.  The two samplings of the arc differ by <= 0.5 % of the
    # maximum (tests/test_workflow_parts.py, sector split), and the RTPLAN stores leaf positions
    # to 0.01 mm and meterset weights to 1e-6: within 1.5 % Rx everywhere, 0.5 % Rx for 99 %.
    assert diff.max() <= 1.5, diff.max()
    assert np.percentile(diff, 99) <= 0.5
    assert float(final.max()) > RX_GY   # the prescription is delivered (a hot spot in the GTV)


def test_metrics_json_is_strict_and_matches_the_report(vmat_plan, tmp_path):
    path = write_metrics_json(tmp_path / "metrics.json", vmat_plan.metrics)

    def no_nan(token):
        raise AssertionError(f"metrics.json holds {token}: not JSON")

    m = json.loads(path.read_text(), parse_constant=no_nan)
    t = m["targets"][vmat_plan.report.target]
    assert t["V100_pct"] == pytest.approx(vmat_plan.report.targets[vmat_plan.report.target].v100_pct, abs=1e-3)
    assert m["plan"]["technique"] == "vmat" and m["plan"]["grid_mm"] == 5.0
    assert m["plan"]["total_mu_per_fraction"] == pytest.approx(vmat_plan.total_mu, abs=0.1)
    # the DAO's arcs: two, from the collision-checked arc model, with their control points
    arcs = m["plan"]["dao"]["arcs"]
    assert [a["control_points"] for a in arcs] == [len(b.control_points) for b in vmat_plan.beam_set.beams]

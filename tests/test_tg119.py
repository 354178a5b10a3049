"""AAPM TG-119 C-shape benchmark: the protocol template and an automatic plan on the matRad phantom.

Goals (Ezzell et al. 2009, Med Phys 36:5359, table 2, C-shape, 50 Gy / 25 fx): PTV D95 >= 50 Gy,
PTV D10 <= 55 Gy, core D10 <= 25 Gy ("easier"), core D10 < 10 Gy ("harder", reported only).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import Grid, Structure, StructureRole
from sbrtplan.errors import ProtocolError
from sbrtplan.evaluation import Status, evaluate_plan
from sbrtplan.protocols import Comparator, Metric, Priority, Stage, Unit, load_protocol

RX_GY = 50.0


def _goal(goals, structure: str, label: str, comparator: Comparator):
    hits = [g for g in goals if g.structure == structure and g.metric_label == label and g.comparator is comparator]
    assert len(hits) == 1, f"expected one goal {structure} {label} {comparator.value}, got {len(hits)}"
    return hits[0]


def test_template_loads_with_the_tg119_goals():
    p = load_protocol("tg119_cshape")
    assert "TG-119" in p.title
    assert any("Ezzell" in s and "5359" in s for s in p.sources)
    assert [o.scheme.short for o in p.schemes] == ["50/25"]
    with pytest.raises(ProtocolError, match="not allowed"):
        p.goals_for("50/5")                          # the TG-119 goals exist for 50 Gy / 25 fx only
    goals = p.goals_for("50/25")

    cov = _goal(goals, "ptv", "V100%Rx", Comparator.GE)   # D95 >= Rx  <=>  V100%Rx >= 95 %
    assert cov.stage is Stage.COVERAGE and cov.limit.value == 95.0 and cov.limit.unit is Unit.PCT
    assert cov.parameter_in_gy(RX_GY) == pytest.approx(50.0)

    d10 = _goal(goals, "ptv", "D10%", Comparator.LE)
    assert d10.mandatory and d10.stage is Stage.CONSTRAINT
    assert d10.limit_in_gy(RX_GY) == pytest.approx(55.0)   # 110 % of 50 Gy
    dmax = _goal(goals, "ptv", "Dmax", Comparator.LE)
    assert dmax.limit_in_gy(RX_GY) == pytest.approx(70.0)

    easy = _goal(goals, "core", "D10%", Comparator.LE)
    assert easy.mandatory and easy.priority is Priority.HARD_OAR and easy.stage is Stage.CONSTRAINT
    assert easy.limit_in_gy(RX_GY) == pytest.approx(25.0)
    hard = _goal(goals, "core", "D10%", Comparator.LT)
    assert not hard.mandatory and hard.priority is Priority.ALARA and hard.stage is Stage.OBJECTIVE
    assert hard.limit_in_gy(RX_GY) == pytest.approx(10.0)
    assert all(g.metric is not Metric.BED_RX for g in goals)   # a benchmark: no BED rule on the prescription


def _synthetic_cshape_case(core_gy: float):
    """Boxes named like the matRad TG-119 structures on a 2 mm grid, and a two-level dose.

    The PTV receives 52 Gy and the core ``core_gy``; each box is >= 6 mm (3 voxels) from the
    dose step, so every (interpolated, sub-sampled) DVH point is exactly the level of its box.
    """
    g = Grid((20, 20, 30), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    body = np.ones(g.shape, bool)
    ptv = np.zeros(g.shape, bool)
    ptv[4:16, 4:16, 2:11] = True
    core = np.zeros(g.shape, bool)
    core[6:14, 6:14, 20:27] = True
    dose = np.full(g.shape, 52.0, np.float32)
    dose[:, :, 15:] = core_gy
    structures = {"External": Structure("External", g, body, StructureRole.EXTERNAL),
                  "OuterTarget": Structure("OuterTarget", g, ptv, StructureRole.PTV),
                  "Core": Structure("Core", g, core, StructureRole.OAR)}
    return dose, structures


@pytest.mark.parametrize("core_gy, easy_ok, harder_ok", [(8.0, True, True), (20.0, True, False),
                                                          (27.0, False, False)])
def test_evaluation_easy_limit_is_mandatory_harder_goal_is_reported(core_gy, easy_ok, harder_ok):
    from sbrtplan.case import Dose

    dose, structures = _synthetic_cshape_case(core_gy)
    rep = evaluate_plan(Dose(next(iter(structures.values())).grid, dose), structures, "tg119_cshape", "50/25")
    by = {(r.goal.structure, r.goal.metric_label, r.goal.comparator): r for r in rep.goals}
    # uniform dose in each box: D10 of the core and D95 / D10 of the PTV are the box levels to 0.1 Gy
    easy = by[("core", "D10%", Comparator.LE)]
    harder = by[("core", "D10%", Comparator.LT)]
    assert easy.structure == "Core" and easy.value == pytest.approx(core_gy, abs=0.1)
    assert easy.passed is easy_ok and harder.passed is harder_ok
    assert by[("ptv", "V100%Rx", Comparator.GE)].structure == "OuterTarget"
    ptv_d10 = by[("ptv", "D10%", Comparator.LE)]
    assert ptv_d10.unit == "%Rx" and ptv_d10.value == pytest.approx(104.0, abs=0.2)   # 52 Gy of 50 Gy
    assert rep.targets["OuterTarget"].d95_gy == pytest.approx(52.0, abs=0.1)
    # the 'harder' goal never decides acceptability; the 25 Gy limit does
    assert rep.acceptable is easy_ok
    assert all(r.status is not Status.NOT_EVALUABLE for r in rep.goals if r.goal.structure in ("ptv", "core"))


@pytest.mark.slow
def test_tg119_plan_on_the_benchmark_grid_meets_the_goals(shared_data):
    """The full workflow on TG119.mat (9 equispaced coplanar 6 MV beams, template angles) at 2.5 mm.

    TG-119's own setting (issue 5): the goals are judged on the final dose recomputed from the
    step-and-shoot segments with the forward engine, after the normalisation to V100%Rx = 95.5 %,
    with the benchmark's limits unchanged (D95 >= 50 Gy, D10 <= 55 Gy, core D10 <= 25 Gy).  The
    segments are optimised on the dose (aperture generation), so the optimiser's dose and the
    delivered one agree to a few per cent of Rx.  Measured when this test was written: D95
    50.3 Gy, D10 54.3 Gy, core D10 24.1 Gy, p95 difference 3.9 % Rx; the plan is deterministic,
    so the margins (0.3 to 0.9 Gy) only move when the model does, which is what the test guards.
    """
    from sbrtplan.io import load_case
    from sbrtplan.workflow import plan

    path = shared_data / "matrad" / "TG119.mat"
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    case = load_case(path)
    p = plan(case, "tg119_cshape", "50/25", technique="imrt", n_beams=9, select_beams=False, grid_mm=2.5)

    assert len(p.beam_set.beams) == 9
    gantries = sorted(round(b.control_points[0].gantry_deg) % 360 for b in p.beam_set.beams)
    assert np.allclose(np.diff(gantries), 40.0)                  # equispaced coplanar template
    assert all(abs(b.couch_deg) < 1e-6 for b in p.beam_set.beams)

    t = p.report.targets["OuterTarget"]
    by = {(r.goal.structure, r.goal.metric_label, r.goal.comparator): r for r in p.report.goals}
    # normalised so that 95.5 % of the PTV gets Rx: D95 >= 50 Gy up to the DVH's 0.1 % rounding
    assert t.d95_gy >= RX_GY - 0.05
    core = by[("core", "D10%", Comparator.LE)]
    assert core.unit == "Gy"
    core_d10 = core.value
    assert core_d10 <= 25.0
    ptv_d10 = by[("ptv", "D10%", Comparator.LE)]
    assert ptv_d10.unit == "%Rx" and ptv_d10.value <= 110.0      # D10 <= 55 Gy
    harder = by[("core", "D10%", Comparator.LT)]
    assert harder.status in (Status.PASS, Status.FAIL) and harder.passed is (core_d10 < 10.0)
    assert p.report.acceptable
    # what the optimiser planned is what the segments deliver: 95 % of the optimisation voxels
    # above 10 % Rx within 5 % Rx (the fidelity goal for the sequencing; the leaves stand
    # DLG/2 inside the optimised edges, so the rounded leaf ends do not widen the segments)
    assert p.metrics["plan"]["optimizer_vs_delivered"]["p95_abs_diff_pct_rx"] < 5.0
    assert p.qa["deliverability"]["passed"]

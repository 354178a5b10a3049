"""Protocol templates: schema validation, goals per scheme, priorities, conversion, RTOG table."""

import textwrap

import pytest

from sbrtplan.errors import ProtocolError
from sbrtplan.protocols import (ApplyTo, Comparator, ConversionPolicy, Metric, Priority, Scheme, Stage, Unit,
                                list_protocols, load_protocol, rtog_class, rtog_goal, rtog_limits)


def _find(goals, structure, label):
    hits = [g for g in goals if g.structure == structure and g.metric_label == label]
    assert hits, f"no goal {structure} {label}"
    return hits


def test_templates_shipped_and_valid():
    # the four clinical protocols of the standards, the lung SBRT protocol (TG-101, RTOG 0813/0915) and the
    # TG-119 C-shape benchmark protocol
    assert set(list_protocols()) == {"bone_spine", "bone_nonspine", "liver_hcc", "cholangiocarcinoma", "lung",
                                     "tg119_cshape"}
    for name in list_protocols():
        p = load_protocol(name)
        for sch in ([o.scheme for o in p.schemes] or [Scheme(45, 3), Scheme(40, 5), Scheme(50, 10)]):
            goals = p.goals_for(sch)
            assert goals
            for g in goals:
                assert isinstance(g.priority, Priority) and g.source
                assert g.limit is not None or g.rtog_level is not None
                assert g.limit is None or g.limit.unit is not Unit.GY_PER_FX  # resolved to totals


def test_bone_schemes_in_priority_order():
    spine = load_protocol("bone_spine")
    assert [o.scheme.short for o in sorted(spine.schemes, key=lambda o: o.rank)] == \
        ["30/3", "27/3", "35/5", "30/5", "50/10", "24/1"]
    nonspine = load_protocol("bone_nonspine")
    assert [o.scheme.short for o in nonspine.schemes] == ["30/3", "27/3", "35/5", "30/5", "50/10"]
    with pytest.raises(ProtocolError, match="24 Gy / 1 fx is not allowed"):
        nonspine.goals_for("24/1")          # single 24 Gy only for spine (radio-resistant histology)
    with pytest.raises(ProtocolError, match="not allowed"):
        spine.scheme("40/4")
    liver = load_protocol("liver_hcc")
    assert liver.allowed(Scheme(45, 3)) and liver.allowed(Scheme(50, 10))
    with pytest.raises(ProtocolError, match="24-60 Gy in 3-10 fx"):
        liver.scheme("20/1")


def test_tg101_table9_values_as_printed():
    spine = load_protocol("bone_spine")
    g3 = spine.goals_for("27/3")
    cord = {g.metric_label: g for g in g3 if g.structure == "cord"}
    assert cord["D0.1cc"].limit.value == 21.9 and cord["D0.1cc"].limit.unit is Unit.GY
    assert cord["D0.35cc"].limit.value == 18 and cord["D1.2cc"].limit.value == 12.3
    assert all(g.apply_to is ApplyTo.PRV and g.priority is Priority.HARD_OAR for g in cord.values())
    assert all(g.comparator is Comparator.LT for g in cord.values())
    g1 = spine.goals_for("24/1")
    assert _find(g1, "cord", "D0.1cc")[0].limit.value == 14
    assert _find(g1, "plexus", "D0.035cc")[0].limit.value == 17.5
    assert _find(g1, "esophagus", "D5cc")[0].limit.value == 11.9
    g5 = spine.goals_for("35/5")
    # the standard prints 22.5 Gy (the TG-101 report and the liver standard give 23 Gy)
    assert _find(g5, "cord", "D0.35cc")[0].limit.value == 22.5
    assert _find(g5, "skin", "D10cc")[0].limit.value == 36.5
    assert _find(g5, "great_vessels", "D0.5cc")[0].limit.value == 53


def test_spine_coverage_fallback_by_fraction_number():
    spine = load_protocol("bone_spine")
    cov3 = spine.coverage_for("27/3")
    assert [g.limit.value for g in cov3.primary] == [95, 99]
    assert cov3.fallback[0].limit.value == 90 and cov3.fallback[0].parameter.value == 100
    req = cov3.fallback_requires[0]
    assert (req.structure, req.metric, req.parameter.value, req.comparator, req.limit.value) == \
        ("gtv", Metric.D_PCT, 98, Comparator.GE, 21)
    assert spine.coverage_for("35/5").fallback_requires[0].limit.value == 23
    # no GTV minimum is given for 1 or 10 fractions: no fallback there
    assert not spine.coverage_for("24/1").has_fallback and not spine.coverage_for("50/10").has_fallback
    # non-spine coverage is never reduced
    assert not load_protocol("bone_nonspine").coverage_for("27/3").has_fallback


def test_priority_semantics_for_the_optimiser():
    goals = load_protocol("bone_spine").goals_for("27/3")
    stage = {(g.structure, g.metric_label, g.fallback): g.stage for g in goals}
    assert stage[("cord", "D0.1cc", False)] is Stage.CONSTRAINT
    assert stage[("ptv", "Dmax", False)] is Stage.CONSTRAINT          # PTV Dmax <= 140 % (target bound)
    assert stage[("ptv", "V100%Rx", False)] is Stage.COVERAGE
    assert stage[("ptv", "V100%Rx", True)] is Stage.COVERAGE_FALLBACK
    assert stage[("gtv", "D98%", True)] is Stage.COVERAGE_FALLBACK
    assert stage[("ptv", "R50", False)] is Stage.OBJECTIVE
    dmax = _find(goals, "ptv", "Dmax")[0]
    assert dmax.limit.value == 140 and dmax.limit.unit is Unit.PCT_RX and dmax.limit_in_gy(27.0) == pytest.approx(37.8)
    assert sorted({int(g.priority) for g in goals}) == [1, 2, 3, 4]
    liver = load_protocol("liver_hcc").goals_for("40/5")
    opt = [g for g in liver if not g.mandatory and g.structure == "stomach" and g.metric_label == "D0.5cc"]
    assert opt and opt[0].limit.value == 33 and opt[0].stage is Stage.OBJECTIVE   # UK SABR optimal
    assert _find(liver, "ptv", "BED_Rx")[0].stage is Stage.REPORT


def test_renal_cell_condition():
    spine = load_protocol("bone_spine")
    plain = spine.goals_for("24/1")
    renal = spine.goals_for("24/1", conditions=["renal_cell"])
    assert len(renal) == len(plain) + 1
    g = [g for g in renal if g.condition == "renal_cell"][0]
    assert (g.structure, g.metric_label, g.limit.value) == ("gtv", "D98%", 18)
    with pytest.raises(ProtocolError, match="unknown condition"):
        spine.goals_for("27/3", conditions=["melanoma"])


def test_liver_rules():
    p = load_protocol("liver_hcc")
    g3 = p.goals_for("45/3")
    spared = [g for g in g3 if g.metric is Metric.CRITICAL_VOLUME_SPARED and g.parameter.value == 15][0]
    assert spared.minus == ("gtv",) and spared.limit.value == 700 and spared.limit.unit is Unit.CC
    assert spared.comparator is Comparator.GE
    mean = [g for g in g3 if g.structure == "liver" and g.metric is Metric.DMEAN][0]
    assert mean.limit.value == 15 and mean.minus == ("gtv",)
    v15 = [g for g in g3 if g.structure == "liver" and g.metric is Metric.V_GY_PCT][0]
    assert v15.parameter.value == 15 and v15.limit.value == 50
    assert _find(g3, "stomach", "D0.5cc")[0].limit.value == 24          # GI, 3 fx
    assert _find(g3, "duodenum", "V24Gy")[0].limit.value == 0.5
    assert _find(g3, "ribs", "D0.035cc")[0].limit.value == 30           # ribs < 30 Gy / 3 fx
    assert _find(g3, "cord", "Dmax")[0].limit.value == 24               # 8 Gy per fraction x 3
    g5 = p.goals_for("40/5")
    assert 27.5 in [g.limit.value for g in _find(g5, "stomach", "D0.5cc")]
    kid = [g for g in g5 if g.structure == "kidneys" and g.metric is Metric.CRITICAL_VOLUME_SPARED][0]
    assert (kid.parameter.value, kid.limit.value) == (17.5, 200)
    # UK SABR (5 fx only, supplementary): not applied at 3 fx and said so
    assert not [g for g in g3 if "UK SABR" in g.source]
    assert any("UK SABR: not applied" in n for n in p.resolution_notes("45/3"))


def test_ten_fractions_converted_through_eqd2_or_refused():
    spine = load_protocol("bone_spine")
    g10 = spine.goals_for("50/10")
    cord = _find(g10, "cord", "D0.1cc")[0]
    # 30 Gy / 5 fx at a/b 2: BED 120 -> 10 fx: 10 d (1 + d/2) = 120 -> d = 4 Gy -> 40 Gy
    assert cord.converted_from_fractions == 5 and cord.alpha_beta_gy == 2.0
    assert cord.limit.value == pytest.approx(40.0, abs=0.01)
    skin = _find(g10, "skin", "D10cc")[0]
    # 36.5 Gy / 5 fx at a/b 2.5: BED 143.08 -> 10 fx: 48.60 Gy
    assert skin.alpha_beta_gy == 2.5 and skin.limit.value == pytest.approx(48.60, abs=0.01)
    assert "alpha/beta 2.5" in skin.note
    with pytest.raises(ProtocolError, match=r"no organ limits for 10 fractions.*cord D0.1cc < 30 Gy"):
        spine.goals_for("50/10", conversion=ConversionPolicy.REFUSE)


def _write(tmp_path, body: str, name="custom.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


_BASE = """
kind: protocol
name: custom
schemes: [{scheme: 30/3, rank: 1}]
roles:
  ptv: {kind: target, prefixes: [PTV]}
  cord: {names: [SpinalCord]}
coverage:
  primary: [{structure: ptv, metric: coverage, at: 100 %Rx, ge: 95 %, source: test}]
limits:
  - family: test
    source: test
    by_fractions:
      3: [GOAL]
"""


@pytest.mark.parametrize("goal, message", [
    ("{structure: kidney, metric: D_cc, at: 0.1 cc, lt: 10 Gy}", "unknown structure role 'kidney'"),
    ("{structure: cord, metric: D_cc, at: 0.1 cc, lt: 10}", "has no unit"),
    ("{structure: cord, metric: D_cc, at: 0.1, lt: 10 Gy}", "'at: 0.1' has no unit"),
    ("{structure: cord, metric: D_cc, at: 0.1 cc, lt: 10 cc}", "does not fit metric D_cc"),
    ("{structure: cord, metric: D_cc, lt: 10 Gy}", "needs 'at'"),
    ("{structure: cord, metric: Dmax, lt: 10 Gy, ge: 2 Gy}", "exactly one of lt / le / gt / ge"),
    ("{structure: cord, metric: D_cc, at: 0.1 cc, lt: 10 Gy, priority: urgent}", "unknown priority"),
    ("{structure: cord, metric: Dmaxx, lt: 10 Gy}", "unknown metric"),
    ("{structure: cord, metric: Dmax, lt: 10 Gy, colour: red}", "unknown key"),
    ("{structure: cord, metric: D_cc, at: 0.1 cc, lt: 10 Sv}", "unknown unit"),
])
def test_schema_errors_are_clear(tmp_path, goal, message):
    path = _write(tmp_path, _BASE.replace("GOAL", goal))
    with pytest.raises(ProtocolError, match=message) as exc:
        load_protocol(path)
    assert "custom.yaml" in str(exc.value) and "\n" not in str(exc.value)


def test_schema_error_bad_scheme_and_kind(tmp_path):
    p = _write(tmp_path, _BASE.replace("GOAL", "{structure: cord, metric: Dmax, lt: 10 Gy}")
               .replace("scheme: 30/3", "scheme: thirty"), "badscheme.yaml")
    with pytest.raises(ProtocolError, match="cannot read scheme 'thirty'"):
        load_protocol(p)
    ok = _write(tmp_path, _BASE.replace("GOAL", "{structure: cord, metric: D_cc, at: 0.1 cc, lt: 10 Gy}"), "ok.yaml")
    proto = load_protocol(ok)
    assert proto.goals_for("30/3")[-1].limit.value == 10
    with pytest.raises(ProtocolError, match="scheme 27 Gy / 3 fx is not allowed"):
        proto.goals_for("27/3")
    with pytest.raises(ProtocolError, match="unknown protocol 'pancreas'"):
        load_protocol("pancreas")   # no pancreas protocol is shipped (lung is, since issue 19)


def test_rtog_interpolation_and_classes():
    # 22 cc: R50 limits 4.5 / 5.5 -> 4.6 is a minor deviation
    assert rtog_class(22.0, 1.1, 4.6, 50.0).r50.value == "minor"
    # 40 cc: R50 none limit 4.3 + (40-34)/(50-34) (4.0-4.3) = 4.1875 -> 4.1 is "none"
    lim = rtog_limits(40.0)
    assert lim.r50_none == pytest.approx(4.1875) and lim.in_range
    assert rtog_class(40.0, 1.1, 4.1, 50.0).r50.value == "none"
    # D2cm at 40 cc: none 58 + 0.375 * 4 = 59.5 %, minor 68 + 0.375 * 9 = 71.375 %
    assert lim.d2cm_none_pct == pytest.approx(59.5) and lim.d2cm_minor_pct == pytest.approx(71.375)
    assert rtog_class(40.0, 1.1, 4.1, 59.0).d2cm.value == "none"
    assert rtog_class(40.0, 1.1, 4.1, 60.0).d2cm.value == "minor"
    assert rtog_class(40.0, 1.1, 4.1, 72.0).d2cm.value == "major"
    assert rtog_class(22.0, 1.1, 4.6, 63.0).d2cm.value == "major"   # strict '<' at a table row
    a = rtog_class(40.0, 1.6, 4.1, 50.0)
    assert a.r100.value == "major" and a.overall.value == "major"
    # outside the 1.8-163 cc table: nearest row and an explicit flag
    small = rtog_limits(1.0)
    assert not small.in_range and small.r50_none == 5.9
    assert not rtog_limits(200.0).in_range and rtog_limits(200.0).d2cm_none_pct == 77.0
    g = [g for g in load_protocol("bone_spine").goals_for("27/3") if g.metric is Metric.R50][0]
    r = rtog_goal(g, 200.0)
    assert r.limit.value == 2.9 and "outside the table" in r.note


def test_all_five_priority_classes_in_order():
    # liver 40/5: UK SABR hard limits (1), BED10 and PTV Dmax (2), coverage (3), CI/GI/R50/D2cm (4) and the
    # UK SABR "optimal" values as ALARA objectives (5)
    goals = load_protocol("liver_hcc").goals_for("40/5")
    by = {p: [g for g in goals if g.priority is p] for p in Priority}
    assert all(by[p] for p in Priority)
    assert Priority.HARD_OAR < Priority.TARGET_MIN < Priority.COVERAGE < Priority.CONFORMITY < Priority.ALARA
    alara = by[Priority.ALARA]
    assert all(not g.mandatory and g.stage is Stage.OBJECTIVE for g in alara)
    # stomach D0.5cc: 33 Gy optimal (ALARA) and 35 Gy mandatory (hard limit), both from UK SABR table A.2
    st = {g.limit.value: g.priority for g in goals if g.structure == "stomach" and g.metric_label == "D0.5cc"
          and "UK SABR" in g.source}
    assert st == {33.0: Priority.ALARA, 35.0: Priority.HARD_OAR}
    assert {g.metric for g in by[Priority.CONFORMITY]} >= {Metric.CI_PADDICK, Metric.GI, Metric.R50, Metric.D2CM}
    assert [g.metric for g in by[Priority.TARGET_MIN]].count(Metric.BED_RX) == 1

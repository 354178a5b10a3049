"""Compliance report: goals on a synthetic case, PRV handling, coverage fallback, metrics.json, CLI."""

import json

import numpy as np
import pytest

from sbrtplan.case import Dose, Grid
from sbrtplan.cli import main
from sbrtplan.errors import InputError, StructureError
from sbrtplan.evaluation import (SCHEMA_VERSION, PriorCourse, Status, evaluate_plan, format_report, metrics_dict,
                                 parse_name_map, write_metrics)

from conftest import SYNTHETIC_H_MM as H, spine_case, synthetic_coords as _coords, synthetic_structure as _s


def _rows(report, label):
    return [r for r in report.goals if r.goal.metric_label == label]


def test_spine_goals_on_prv_and_missing_structures():
    dose, structures = spine_case(cord_dose_gy=15.0)
    rep = evaluate_plan(dose, structures, "bone_spine", "27/3")
    cord = [r for r in _rows(rep, "D0.1cc") if r.goal.structure == "cord"][0]
    assert cord.structure == "SpinalCord_PRV02" and cord.value == pytest.approx(15.0, abs=1e-4)
    assert cord.limit == 21.9 and cord.status is Status.PASS and cord.unit == "Gy"
    brain = [r for r in rep.goals if r.goal.structure == "brainstem"]
    assert brain and all(r.status is Status.NOT_EVALUABLE and r.passed is None for r in brain)
    assert "not evaluable: structure missing (Brainstem)" in brain[0].note
    # uniform 28 Gy PTV at Rx 27 Gy: V100 = 100 %, Dmax = 103.7 % Rx
    dmax = [r for r in rep.goals if r.goal.structure == "ptv" and r.goal.metric_label == "Dmax"][0]
    assert dmax.value == pytest.approx(100 * 28 / 27, rel=1e-5) and dmax.unit == "%Rx" and dmax.passed
    assert rep.coverage.status == "primary"
    ptv = rep.targets["PTV"]
    assert ptv.volume_cc == pytest.approx(27.0) and ptv.v100_pct == pytest.approx(100.0)
    assert ptv.indices is not None and ptv.indices.r50 >= 1.0


def test_cord_over_limit_fails_and_without_prv_uses_organ():
    dose, structures = spine_case(cord_dose_gy=23.0, prv=False)
    rep = evaluate_plan(dose, structures, "bone_spine", "27/3")
    cord = [r for r in _rows(rep, "D0.1cc") if r.goal.structure == "cord"][0]
    assert cord.structure == "SpinalCord" and "no PRV structure for SpinalCord" in cord.note
    assert cord.status is Status.FAIL and cord.value == pytest.approx(23.0, abs=1e-4)
    assert rep.acceptable is False and "SpinalCord D0.1cc" in rep.as_dict()["summary"]["hard_failures"]
    assert "FAIL (on organ, no PRV)" in format_report(rep)


@pytest.mark.parametrize("cold_planes, gtv_gy, v100, verdict", [
    (1, 30.0, 100 * 14 / 15, "fallback"),            # 93.3 %: primary fails, fallback met, GTV D98 30 Gy
    (2, 30.0, 100 * 13 / 15, "failed"),              # 86.7 % < 90 %
    (1, 20.0, 100 * (14 * 225 - 125) / 3375, "failed"),   # 89.6 % and GTV D98 20 Gy < 21 Gy
])
def test_spine_coverage_fallback(cold_planes, gtv_gy, v100, verdict):
    # ``cold_planes`` of the PTV's 15 x-planes (225 voxels each) at 20 Gy; the GTV (125 voxels) at gtv_gy
    dose, structures = spine_case(cord_dose_gy=10.0, cold_fraction=cold_planes / 15, gtv_gy=gtv_gy)
    rep = evaluate_plan(dose, structures, "bone_spine", "27/3")
    prim = [r for r in _rows(rep, "V100%Rx") if not r.goal.fallback][0]
    # 0.01 %: the linear interpolation inside the voxel that crosses 27 Gy adds at most 1/8 voxel
    assert prim.value == pytest.approx(v100, abs=0.01) and prim.status is Status.FAIL
    fb = [r for r in _rows(rep, "V100%Rx") if r.goal.fallback][0]
    assert fb.passed is (v100 >= 90)
    gtv = [r for r in _rows(rep, "D98%") if r.goal.fallback][0]
    assert gtv.value == pytest.approx(gtv_gy, abs=1e-4) and gtv.limit == 21
    assert rep.coverage.status == verdict
    assert rep.acceptable is (verdict == "fallback")
    # non-spine bone never reduces coverage: the same plan fails
    rep2 = evaluate_plan(dose, structures, "bone_nonspine", "27/3")
    assert rep2.coverage.status == "failed"


def liver_case():
    """Liver = x < 20 mm (35 x 50 x 50 voxels = 700 cc); 20 Gy for x >= -10 mm, 5 Gy below; PTV at 45 Gy."""
    g, Z, Y, X = _coords()
    liver = X < 20
    gtv = (np.abs(X - 4) < 6) & (np.abs(Y) < 6) & (np.abs(Z) < 6)
    ptv = (np.abs(X - 4) < 10) & (np.abs(Y) < 10) & (np.abs(Z) < 10)
    dose = np.where(X >= -10, 20.0, 5.0).astype(np.float32)
    dose[ptv] = 45.0
    structures = {"Liver": _s("Liver", g, liver), "GTV": _s("GTV", g, gtv), "PTV": _s("PTV", g, ptv)}
    return Dose(g, dose), structures


def test_liver_normal_liver_rules_and_bed():
    dose, structures = liver_case()
    vox = H ** 3 / 1000
    gtv_cc = structures["GTV"].mask.sum() * vox
    ptv_cc = structures["PTV"].mask.sum() * vox
    assert structures["Liver"].volume_cc == pytest.approx(700.0)
    rep = evaluate_plan(dose, structures, "liver_hcc", "45/3")
    normal = 700.0 - gtv_cc
    # normal liver = liver - GTV; below 15 Gy: the 20 x-planes at x <= -12 mm = 400 cc, less a third of
    # one voxel (0.0027 cc) from the linear interpolation within the voxel that crosses 15 Gy
    spared = [r for r in rep.goals if r.goal.metric_label == "Vol<15Gy"][0]
    assert spared.structure == "Liver-GTV" and spared.value == pytest.approx(400.0 - vox / 3, rel=1e-9)
    assert spared.status is Status.FAIL                        # < 700 cc functional reserve
    v15 = [r for r in rep.goals if r.goal.metric_label == "V15Gy"][0]
    assert v15.value == pytest.approx(100 * (normal - spared.value) / normal, rel=1e-9)
    mean = [r for r in rep.goals if r.goal.structure == "liver" and r.goal.metric_label == "Dmean"][0]
    # 400 cc at 5 Gy, the other 300 cc at 20 Gy except the PTV at 45 Gy; the GTV is not normal liver
    expected = (400 * 5 + (300 - ptv_cc) * 20 + (ptv_cc - gtv_cc) * 45) / normal
    assert mean.value == pytest.approx(expected, rel=1e-6) and mean.status is Status.PASS   # 11.6 Gy < 15 Gy
    bed = [r for r in rep.goals if r.goal.metric_label == "BED_Rx"][0]
    assert bed.value == pytest.approx(112.5) and bed.status is Status.PASS
    assert [r for r in rep.goals if r.goal.structure == "stomach"][0].note.startswith("not evaluable")
    # 40 Gy / 5 fx: BED10 72 Gy fails the HCC rule and the plan is not acceptable on that alone
    rep5 = evaluate_plan(dose, structures, "liver_hcc", "40/5")
    bed5 = [r for r in rep5.goals if r.goal.metric_label == "BED_Rx"][0]
    assert bed5.value == pytest.approx(72.0) and bed5.status is Status.FAIL and rep5.acceptable is False


def test_name_map_target_choice_and_reirradiation():
    dose, structures = spine_case(cord_dose_gy=15.0)
    cord = structures.pop("SpinalCord")
    structures["Myelon planning"] = cord.copy(name="Myelon planning")
    structures["PTV_boost"] = structures["GTV"].copy(name="PTV_boost")
    with pytest.raises(StructureError, match="choose one with --target"):
        evaluate_plan(dose, structures, "bone_spine", "27/3")
    rep = evaluate_plan(dose, structures, "bone_spine", "27/3", target="PTV",
                        name_map=parse_name_map(["Myelon planning=SpinalCord"]))
    assert "SpinalCord" in rep.structures
    with pytest.raises(StructureError, match="--map names not found"):
        evaluate_plan(dose, structures, "bone_spine", "27/3", target="PTV", name_map={"Kord": "SpinalCord"})
    prior = PriorCourse(Dose(dose.grid, np.full(dose.grid.shape, 10.0, np.float32)), fractions=5,
                        interval_months=4.0)
    rep = evaluate_plan(dose, structures, "bone_spine", "27/3", target="PTV",
                        name_map={"Myelon planning": "SpinalCord"}, prior=prior)
    r = [x for x in rep.reirradiation if x.structure == "SpinalCord"][0]
    # 10 Gy / 5 fx -> EQD2 (a/b 2.5) 10 (1 + 2/2.5) / 1.8 = 10 Gy, discounted 10 %; new 15 Gy / 3 fx:
    # 15 (1 + 5/2.5) / 1.8 = 25 Gy -> 34 Gy cumulative < 50 Gy
    assert r.cumulative_eqd2_d01_gy == pytest.approx(0.9 * 10 + 25, rel=1e-5) and r.passed


def test_metrics_json_layout(tmp_path):
    dose, structures = spine_case(cord_dose_gy=11.0)
    rep = evaluate_plan(dose, structures, "bone_spine", "27/3", plan_timings={"optimisation": 1.5})
    out = tmp_path / "metrics.json"
    write_metrics(out, rep)
    data = json.loads(out.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["prescription"] == {"dose_gy": 27.0, "fractions": 3, "dose_per_fraction_gy": 9.0, "target": "PTV",
                                    "bed10_gy": 51.3}
    t = data["targets"]["PTV"]
    for key in ("volume_cc", "D98_gy", "D95_gy", "D50_gy", "D2_gy", "Dmax_gy", "V100_pct", "V90_pct", "CI_rtog",
                "CI_paddick", "GI", "R50", "D2cm_pct", "rtog_class"):
        assert key in t, key
    assert t["Dmax_gy"] == pytest.approx(28.0) and t["rtog_class"] in ("none", "minor", "major")
    assert data["targets"]["GTV"]["CI_rtog"] is None          # indices only for the prescription target
    s = data["structures"]["SpinalCord"]
    assert set(s) >= {"volume_cc", "mean_gy", "max_gy", "D0.035cc_gy"} and s["max_gy"] == pytest.approx(11.0)
    g = data["goals"][0]
    assert set(g) >= {"structure", "metric", "limit", "value", "priority", "passed"}
    missing = [x for x in data["goals"] if x["status"] == "not_evaluable"]
    assert missing and all(x["passed"] is None and x["value"] is None for x in missing)
    assert data["timings_s"]["optimisation"] == 1.5 and "evaluation.total" in data["timings_s"]
    assert data["coverage"]["status"] == "primary" and data["summary"]["acceptable"] is True
    assert metrics_dict(rep)["schema_version"] == SCHEMA_VERSION
    assert not list(tmp_path.glob(".tmp-*"))                   # atomic write leaves no temporary file


def test_terminal_table_is_aligned():
    dose, structures = spine_case()
    text = format_report(evaluate_plan(dose, structures, "bone_spine", "27/3"))
    lines = text.splitlines()
    i = lines.index("Goals")
    header, rule = lines[i + 1], lines[i + 2]
    # every column starts where the header's column starts
    starts = [k for k in range(len(rule)) if rule[k] == "-" and (k == 0 or rule[k - 1] == " ")]
    assert len(starts) == 6
    for row in lines[i + 3:]:
        if not row:
            break
        assert row[starts[1] - 2:starts[1]] == "  "
    assert "not evaluable: structure missing" in text and "PASS" in text


def test_cli_protocols(capsys):
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    assert "bone_spine" in out and "24 Gy / 1 fx" in out and "24-60 Gy in 3-10 fx" in out
    assert main(["protocols", "bone_spine", "--scheme", "50/10"]) == 0
    out = capsys.readouterr().out
    assert "[converted from 5 fx]" in out and "cord (PRV)" in out
    assert main(["protocols", "bone_spine", "--scheme", "50/10", "--refuse-conversion"]) == 2
    err = capsys.readouterr().err
    assert "conversion is refused" in err and len(err.strip().splitlines()) == 1


def test_radiobiology_per_structure_and_icru91_items():
    # cord PRV at 11 Gy, cord (alpha/beta 2 Gy, bone standard) split into two halves at 10 and 20 Gy along z
    dose, structures = spine_case(cord_dose_gy=11.0)
    g = dose.grid
    d = dose.dose_gy.copy()
    cord = structures["SpinalCord"].mask
    z = np.broadcast_to(g.axis_coordinates_mm()[2][:, None, None], g.shape)
    d[cord & (z < 0)] = 10.0
    d[cord & (z >= 0)] = 20.0
    rep = evaluate_plan(Dose(g, d), structures, "bone_spine", "27/3")
    m = metrics_dict(rep)
    rb = m["structures"]["SpinalCord"]["radiobiology"]
    assert rb["alpha_beta_gy"] == 2.0 and rb["fractions"] == 3
    # EQD2 = D (1 + D/(3 ab)) / (1 + 2/ab): 20 Gy -> 20 (1 + 20/6) / 2 = 43.33 Gy; 10 Gy -> 13.33 Gy
    e = lambda x: x * (1 + x / 6.0) / 2.0  # noqa: E731
    assert rb["eqd2_gy"]["max"] == pytest.approx(e(20.0), abs=1e-3)
    # the mean EQD2 is the mean of the per-voxel EQD2 (28.33 Gy), not the EQD2 of the mean dose (26.25 Gy)
    assert rb["eqd2_gy"]["mean"] == pytest.approx(0.5 * (e(10.0) + e(20.0)), rel=1e-4)
    assert rb["bed_gy"]["D0.1cc"] == pytest.approx(2 * e(20.0), abs=1e-3)
    # PRVs take the organ's alpha/beta; other organs the protocol's 2.5 Gy; targets 10 Gy (BED10 of 28 Gy / 3 fx
    # = 28 (1 + 28/30) = 54.13 Gy)
    assert m["structures"]["SpinalCord_PRV02"]["radiobiology"]["alpha_beta_gy"] == 2.0
    assert m["structures"]["External"]["radiobiology"]["alpha_beta_gy"] == 2.5
    ptv = m["targets"]["PTV"]
    assert ptv["radiobiology"]["alpha_beta_gy"] == 10.0
    assert ptv["radiobiology"]["bed_gy"]["D95"] == pytest.approx(28 * (1 + 28 / 30), abs=1e-3)
    # ICRU 91: D98/D95/D50/D2 as % Rx (uniform 28 Gy for Rx 27 Gy: 103.7 %), HI 0 for a uniform dose
    assert ptv["D95_pct_rx"] == pytest.approx(100 * 28 / 27, abs=1e-3) and ptv["HI"] == pytest.approx(0.0, abs=1e-6)
    text = format_report(rep)
    assert "ICRU 91 report: Rx 27 Gy in 3 fx (9 Gy/fx)" in text and "103.7" in text


def test_hi_and_out_of_table_conformality_flag():
    # HI (ICRU 83) = (D2 - D98) / D50. The 15 x-planes of the spine PTV: three at 33 Gy, nine at 28 Gy, three at
    # 20 Gy (20 / 60 / 20 % of the volume), each block inside the PTV so the hottest / coldest 2 % lie in the
    # middle of a block: D2 = 33, D98 = 20, D50 = 28 -> HI = 13 / 28 = 0.464
    dose, structures = spine_case(cord_dose_gy=10.0)
    g, Z, Y, X = _coords()
    d = dose.dose_gy.copy()
    ptv = structures["PTV"].mask
    xs = np.unique(X[ptv])
    d[ptv & np.isin(X, xs[1:4])] = 33.0
    d[ptv & np.isin(X, xs[11:14])] = 20.0
    t = metrics_dict(evaluate_plan(Dose(g, d), structures, "bone_spine", "27/3"))["targets"]["PTV"]
    # 1e-3: D98 and D50 are voxel-centre values; D2 comes from trilinear sub-samples of the middle hot plane
    assert t["HI"] == pytest.approx(13.0 / 28.0, abs=1e-3)

    # a 1 cc PTV (5 x 5 x 5 voxels) lies below the RTOG table's 1.8 cc: nearest row and an explicit flag
    small = (np.abs(X) < 5) & (np.abs(Y) < 5) & (np.abs(Z) < 5)
    rep = evaluate_plan(Dose(g, np.where(small, 31.0, 0.0).astype(np.float32)), {"PTV": _s("PTV", g, small)},
                        "bone_spine", "30/3")
    t = metrics_dict(rep)["targets"]["PTV"]
    assert t["volume_cc"] == pytest.approx(1.0)
    assert t["rtog"]["in_table_range"] is False and t["rtog_class"] in ("none", "minor", "major")
    r50 = [r for r in rep.goals if r.goal.metric_label == "R50"][0]
    assert r50.limit == 5.9 and "outside the table's 1.8-163 cc range" in r50.as_dict()["note"]
    assert "(out of table)" in format_report(rep)


def test_prior_course_as_array_and_per_fraction_dose():
    dose, structures = spine_case(cord_dose_gy=5.0)
    per_fx = Dose(dose.grid, dose.dose_gy / 3.0, "per fraction", per_fraction=True)
    prior = PriorCourse(np.full(dose.grid.shape, 20.0, np.float32), fractions=5, interval_months=2.0)
    rep = evaluate_plan(per_fx, structures, "bone_spine", "27/3", prior=prior)
    # the per-fraction dose is scaled to the course: cord PRV D0.1cc 5 Gy, PTV Dmax 28 Gy
    assert rep.structures["SpinalCord_PRV02"].d01_gy == pytest.approx(5.0, abs=1e-4)
    assert "per-fraction dose multiplied by 3 fractions" in rep.notes
    cord = [r for r in rep.reirradiation if r.structure == "SpinalCord"][0]
    # prior 20 Gy / 5 fx (a/b 2.5): 20 (1 + 4/2.5) / 1.8 = 28.89 Gy, no discount at 2 months; new 5 Gy / 3 fx:
    # 5 (1 + 1.667/2.5) / 1.8 = 4.63 Gy -> 33.52 Gy < 50 Gy
    assert cord.discount_pct == 0 and cord.cumulative_eqd2_d01_gy == pytest.approx(
        20 * 2.6 / 1.8 + 5 * (1 + 5 / 7.5) / 1.8, rel=1e-5) and cord.passed
    # a prior RTDOSE on its own coarser grid (4 mm, covering the case) is resampled onto the structures' grid:
    # a uniform prior stays uniform, so the cumulative EQD2 is unchanged
    g4 = Grid((30, 30, 30), (4.0, 4.0, 4.0), (-58.0, -58.0, -58.0))
    prior4 = PriorCourse(Dose(g4, np.full(g4.shape, 20.0, np.float32)), fractions=5, interval_months=2.0)
    rep4 = evaluate_plan(per_fx, structures, "bone_spine", "27/3", prior=prior4)
    cord4 = [r for r in rep4.reirradiation if r.structure == "SpinalCord"][0]
    assert cord4.cumulative_eqd2_d01_gy == pytest.approx(cord.cumulative_eqd2_d01_gy, rel=1e-5)
    assert "prior dose resampled trilinearly onto the structure grid" in rep4.notes
    # a bare dose array on the structures' grid is accepted (any dose array): same metrics as the Dose
    rep_arr = evaluate_plan(dose.dose_gy, structures, "bone_spine", "27/3")
    assert rep_arr.structures["SpinalCord_PRV02"].d01_gy == pytest.approx(5.0, abs=1e-4)
    with pytest.raises(InputError, match="bare array must be on the structures' grid"):
        evaluate_plan(dose.dose_gy[:-1], structures, "bone_spine", "27/3")
    with pytest.raises(InputError, match="must be on the structures' grid"):
        evaluate_plan(dose, structures, "bone_spine", "27/3",
                      prior=PriorCourse(np.zeros((2, 2, 2)), fractions=5, interval_months=2.0))

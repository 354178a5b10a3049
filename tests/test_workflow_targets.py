"""Several targets in one plan (issue 19, item 4): prescriptions, shares, bad input, cohort, recompute.

The plan-level numbers (each target's coverage goal and every organ limit of the sum, two vertebral
levels 27/3 and 24/3 on ``phantom:spine_two_levels``) are measured by ``test_two_level_spine_plan``
(slow) and by ``benchmarks/bench_plan.py``; the fast tests here check the rules the planner relies on.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbrtplan.errors import InputError, StructureError
from sbrtplan.phantoms import make_phantom
from sbrtplan.protocols import Scheme, load_protocol
from sbrtplan.workflow.structures import build_target_structures
from sbrtplan.workflow.targets import (TargetPrescription, parse_target_arg, plan_scheme,
                                       target_structures, targets_from_yaml)


@pytest.fixture(scope="module")
def two_levels():
    # 4 mm: the structure logic only needs the shapes; margins are built on the phantom's fine grid
    return make_phantom("spine_two_levels", spacing_mm=4.0)


def run_cli(argv, capsys) -> tuple[int, str]:
    from sbrtplan.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


# ----------------------------------------------------------------------------- prescriptions
def test_target_arguments_and_yaml_forms():
    t = parse_target_arg("PTV1:27/3")
    assert (t.name, t.scheme) == ("PTV1", Scheme(27.0, 3))
    # a name with a colon keeps it: the last colon separates the prescription
    assert parse_target_arg("PTV:high:30/3").name == "PTV:high"
    a = targets_from_yaml({"PTV1": "27/3", "PTV2": "24/3"}, "f")
    b = targets_from_yaml(["PTV1:27/3", {"name": "PTV2", "scheme": "24/3"}], "f")
    c = targets_from_yaml({"targets": ["PTV1:27/3", "PTV2:24/3"]}, "f")
    assert a == b == c and [x.dose_gy for x in a] == [27.0, 24.0]


@pytest.mark.parametrize("bad, fragment", [("PTV1-27/3", "NAME:TOTAL/FRACTIONS"), ("PTV1:27", "cannot read"),
                                           (":27/3", "NAME:TOTAL/FRACTIONS"), ("PTV1:27/0", "cannot read")])
def test_unparseable_target_is_an_input_error(bad, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_target_arg(bad)


def test_twice_and_mixed_fractions_are_refused():
    with pytest.raises(InputError, match="given twice"):
        targets_from_yaml(["PTV1:27/3", "ptv1:24/3"], "f")
    # one plan is one fraction group
    with pytest.raises(InputError, match="fraction"):
        targets_from_yaml(["PTV1:27/3", "PTV2:35/5"], "f")


def test_course_scheme_is_the_highest_level_and_lower_levels_need_not_be_listed():
    proto = load_protocol("bone_spine")
    sch, ordered = plan_scheme(proto, [parse_target_arg("PTV2:24/3"), parse_target_arg("PTV1:27/3")])
    # 27/3 is a scheme of the bone standard; 24 Gy / 3 fx is not listed, but is a lower level of it
    assert sch == Scheme(27.0, 3) and [t.name for t in ordered] == ["PTV1", "PTV2"]
    from sbrtplan.errors import ProtocolError

    with pytest.raises(ProtocolError, match="not allowed"):
        plan_scheme(proto, [parse_target_arg("PTV1:26/3"), parse_target_arg("PTV2:24/3")])


def test_target_structures_checks_presence_role_and_repetition(two_levels):
    s = two_levels.structures
    assert [x.name for x in target_structures(s, [parse_target_arg("ptv2:24/3")])] == ["PTV2"]
    with pytest.raises(StructureError, match="no structure named 'PTV9'"):
        target_structures(s, [parse_target_arg("PTV9:27/3")])
    with pytest.raises(StructureError, match="not a target role"):
        target_structures(s, [parse_target_arg("SpinalCord:27/3")])
    with pytest.raises(InputError, match="second time"):
        target_structures(s, [TargetPrescription("PTV1", Scheme(27, 3)), TargetPrescription("ptv1", Scheme(24, 3))])


# ----------------------------------------------------------------------------- planning structures
def test_each_targets_falloff_and_rings_stay_in_its_own_share(two_levels):
    case = make_phantom("spine_two_levels", spacing_mm=4.0)   # planning structures are added to the case
    proto = load_protocol("bone_spine")
    _, ordered = plan_scheme(proto, [parse_target_arg("PTV1:27/3"), parse_target_arg("PTV2:24/3")])
    ps = build_target_structures(case, proto, ordered)
    p1, p2 = ps.parts
    assert (p1.rx_gy, p2.rx_gy) == (27.0, 24.0)
    t1, t2 = case.structure("PTV1").mask, case.structure("PTV2").mask
    # the union target covers both (beams and optimisation voxels see both lesions)
    assert np.array_equal(ps.target.mask, t1 | t2)
    # shares partition the grid; each target lies in its own share
    assert not (p1.share & p2.share).any() and (p1.share | p2.share).all()
    assert p1.share[t1].all() and p2.share[t2].all()
    # fall-off regions: outside both targets, disjoint, and a voxel belongs to the nearer target: within
    # 2 cm of the lesions the plane midway between them (z = 0; PTV1 above, PTV2 below) separates them
    # (far out the lesions' lateral extents decide: PTV1 is 5 mm wider)
    assert not (p1.falloff_mask & (t1 | t2)).any() and not (p2.falloff_mask & (t1 | t2)).any()
    from sbrtplan.case import distance_map_mm

    near = distance_map_mm(ps.target, max_distance_mm=25.0) < 20.0
    z = case.grid.origin_mm[2] + case.grid.spacing_mm[2] * np.arange(case.grid.nz)
    above = (z > 4.0)[:, None, None] & near
    below = (z < -4.0)[:, None, None] & near
    assert not (p1.falloff_mask & below).any() and not (p2.falloff_mask & above).any()
    assert (p1.falloff_mask & above).sum() > 100 and (p2.falloff_mask & below).sum() > 100
    # PTV1's rings hold no voxel of PTV2 nor of PTV2's share (the 24 Gy lesion is not PTV1's fall-off)
    for r in p1.rings:
        assert not (r.mask & (t2 | p2.share)).any()
    # hot spots: each target's own hot-spot-free region excludes its GTV and the other target
    g1 = case.structure("GTV1").mask
    assert not (p1.hotspot_free.mask & (g1 | t2)).any()
    assert ps.boost is not None and ps.boost.mask[g1].all() and ps.boost.mask[case.structure("GTV2").mask].all()


# ----------------------------------------------------------------------------- CLI bad input
@pytest.mark.parametrize("targets, fragment", [
    (["PTV1:27/3", "PTV1:24/3"], "given twice"),
    (["PTV1:27/3", "PTV7:24/3"], "no structure named 'PTV7'"),
    (["PTV1:27/3", "PTV2=24/3"], "NAME:TOTAL/FRACTIONS"),
    (["PTV1:27/3", "Esophagus:24/3"], "not a target role"),
    (["PTV1:27/3", "PTV2"], "each need their prescription"),
])
def test_plan_refuses_bad_targets_in_one_line(targets, fragment, tmp_path, capsys):
    argv = ["plan", "--case", "phantom:spine_two_levels", "--protocol", "bone_spine", "--out", tmp_path / "out"]
    for t in targets:
        argv += ["--target", t]
    rc, err = run_cli(argv, capsys)
    assert rc == 2, err
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_plan_targets_file_and_scheme_agreement(tmp_path, capsys):
    f = tmp_path / "targets.yaml"
    f.write_text("PTV1: 27/3\nPTV2: 24/3\n")
    # --scheme must be the highest target's prescription when both are given
    rc, err = run_cli(["plan", "--case", "phantom:spine_two_levels", "--targets", f, "--scheme", "30/3",
                       "--out", tmp_path / "out"], capsys)
    assert rc == 2 and "differs from the highest target prescription PTV1:27/3" in err
    f.write_text("PTV1: 27/3\nPTV1: 24/3\n")   # YAML keeps the last duplicate key: refuse it as a list instead
    f.write_text("- PTV1:27/3\n- PTV1:24/3\n")
    rc, err = run_cli(["plan", "--case", "phantom:spine_two_levels", "--targets", f, "--out", tmp_path / "o"],
                      capsys)
    assert rc == 2 and "given twice" in err


# ----------------------------------------------------------------------------- cohort
def test_cohort_case_with_targets(tmp_path):
    from sbrtplan.batch.cohort import load_cohort

    f = tmp_path / "cohort.yaml"
    f.write_text("protocol: bone_spine\nschemes: [30/3]\ntechnique: vmat\ncases:\n"
                 "  - {name: one, case: 'phantom:spine'}\n"
                 "  - {name: two, case: 'phantom:spine_two_levels', targets: {PTV1: 27/3, PTV2: 24/3}}\n")
    c = load_cohort(f)
    one, two = c.tasks
    assert one.scheme == "30/3" and not one.targets
    # the case's targets replace the cohort's schemes; the course is the highest level
    assert two.scheme == "27/3" and [t.text for t in two.targets] == ["PTV1:27/3", "PTV2:24/3"]
    assert two.key == "two/PTV1_27-3+PTV2_24-3"
    f.write_text("protocol: bone_spine\ncases:\n"
                 "  - {case: 'phantom:spine_two_levels', schemes: [27/3], targets: [PTV1:27/3, PTV2:24/3]}\n")
    with pytest.raises(InputError, match="no 'schemes'"):
        load_cohort(f)


# ----------------------------------------------------------------------------- recompute
def test_recompute_takes_dose_levels_and_fractions_from_the_rtplan(tmp_path, capsys):
    """recompute reads the prescription with io.prescription: two dose levels (PTV1 27 Gy, PTV2 24 Gy)
    and the fractions of the RTPLAN, and reports each lesion's indices at its own prescription."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from sbrtplan.beams import (BeamGeometry, BeamSet, MLCModel, beamlet_grid_for_target, isocenter_for,
                                segments_to_beam, sequence_fluence)
    from sbrtplan.case import StructureRole, union
    from sbrtplan.io import write_ct_series, write_rtplan, write_rtstruct

    case = make_phantom("spine_two_levels", spacing_mm=5.0)
    both = union(case.structure("PTV1"), case.structure("PTV2"), name="both", role=StructureRole.CONTROL)
    iso = isocenter_for(both)
    mlc = MLCModel.millennium120()
    beams = []
    for g in (0.0, 120.0, 240.0):
        geo = BeamGeometry(g, 0.0, 0.0, iso)
        bg = beamlet_grid_for_target(both, geo, mlc, beamlet_mm=5.0)
        segs = sequence_fluence(np.where(bg.active, 100.0, 0.0), bg, mlc, max_segments=2, min_segment_mu=2.0)
        beams.append(segments_to_beam(f"G{g:g}", geo, segs, mlc))
    bs = BeamSet(beams, n_fractions=3, prescription_gy=27.0)
    write_ct_series(case, tmp_path / "CT")
    ss = write_rtstruct(case, tmp_path / "rtss.dcm")
    write_rtplan(bs, tmp_path / "rtplan.dcm", case=case, rtstruct_uid=ss, target_name="PTV1")
    roi = case.metadata["rtstruct_roi_numbers"]
    ds = pydicom.dcmread(str(tmp_path / "rtplan.dcm"))
    refs = []
    for k, (name, gy) in enumerate((("PTV1", 27.0), ("PTV2", 24.0)), start=1):
        d = Dataset()
        d.DoseReferenceNumber = k
        d.DoseReferenceStructureType = "VOLUME"
        d.ReferencedROINumber = int(roi[name])
        d.DoseReferenceType = "TARGET"
        d.TargetPrescriptionDose = f"{gy:g}"
        refs.append(d)
    ds.DoseReferenceSequence = Sequence(refs)
    rdr = []
    for k in (1, 2):
        r = Dataset()
        r.ReferencedDoseReferenceNumber = k
        rdr.append(r)
    ds.FractionGroupSequence[0].ReferencedDoseReferenceSequence = Sequence(rdr)
    ds.save_as(str(tmp_path / "rtplan.dcm"))
    rc, err = run_cli(["recompute", "--ct", tmp_path / "CT", "--rtstruct", tmp_path / "rtss.dcm",
                       "--rtplan", tmp_path / "rtplan.dcm", "--out", tmp_path / "out", "--grid-mm", "5"], capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["plan"]["n_fractions"] == 3
    assert m["plan"]["dose_levels"] == [{"target": "PTV1", "dose_gy": 27.0}, {"target": "PTV2", "dose_gy": 24.0}]
    les = {x["name"]: x for x in m["lesions"]["lesions"]}
    assert les["PTV1"]["rx_gy"] == 27.0 and les["PTV2"]["rx_gy"] == 24.0
    # the union adds the shares' volumes (lesions.py): its target volume is the two PTVs'
    assert m["lesions"]["union"]["ptv_cc"] == pytest.approx(les["PTV1"]["ptv_cc"] + les["PTV2"]["ptv_cc"], rel=1e-6)
    # the reader's checks apply: a dose reference on an ROI the RTSTRUCT lacks is one line, exit 2, no output
    ds.DoseReferenceSequence[1].ReferencedROINumber = 999
    ds.save_as(str(tmp_path / "rtplan.dcm"))
    rc, err = run_cli(["recompute", "--ct", tmp_path / "CT", "--rtstruct", tmp_path / "rtss.dcm",
                       "--rtplan", tmp_path / "rtplan.dcm", "--out", tmp_path / "out2", "--grid-mm", "5"], capsys)
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and "ROI number 999" in errors[0], err
    assert not (tmp_path / "out2").exists()


# ----------------------------------------------------------------------------- optimisation model
@pytest.fixture(scope="module")
def planned_structures():
    from sbrtplan.workflow.goals import resolve_goals
    from sbrtplan.workflow.problem import build_problem

    case = make_phantom("spine_two_levels", spacing_mm=4.0)
    proto = load_protocol("bone_spine")
    sch, ordered = plan_scheme(proto, [parse_target_arg("PTV1:27/3"), parse_target_arg("PTV2:24/3")])
    ps = build_target_structures(case, proto, ordered)
    resolved = resolve_goals(proto.goals_for(sch), proto, ps.match)
    problem = build_problem(case, ps, resolved, sch.total_gy, sch.fractions)
    return case, proto, ps, problem


def test_penalties_of_two_targets_use_each_prescription(planned_structures):
    from sbrtplan.workflow.penalties import falloff_profile, plan_penalties

    case, proto, ps, problem = planned_structures
    pens, lims = plan_penalties(ps, problem)
    covers = {x.label.split(":")[0]: x for x in lims if x.lower}
    assert covers["PTV1"].limit_gy == pytest.approx(27.0) and covers["PTV2"].limit_gy == pytest.approx(24.0)
    # one normalisation inside the optimiser, the primary (highest dose) target's coverage; the other
    # target's coverage is measured on that dose, so that a lagging target is re-weighted
    assert [x for x in lims if x.normalizes] == [covers["PTV1"]]
    assert covers["PTV2"].normalized_by is covers["PTV1"]
    # the organ limits of the sum appear once (3 fx TG-101: cord PRV D0.35cc < 18 Gy), unprefixed
    cord = [x for x in lims if "SpinalCord" in x.label and "D0.35cc" in x.label]
    assert len(cord) == 1 and cord[0].label.startswith("SpinalCord_PRV02")
    # fall-off: each voxel outside the targets at most once, none inside a target, and every reference
    # at most its own target's prescription (PTV2's fall-off never asks PTV1's dose of 27 Gy)
    fall = falloff_profile(ps, problem)
    assert np.unique(fall.rows).size == fall.rows.size
    flat = problem.voxels.indices[fall.rows]
    assert not ps.target.mask.ravel()[flat].any()
    n1 = int(ps.parts[0].falloff_mask.ravel()[problem.voxels.indices].sum())
    assert fall.reference_gy[n1:].max() <= 24.0 + 1e-6 and fall.reference_gy[:n1].max() <= 27.0 + 1e-6
    # PTV2's coverage is measured at the dose that meets PTV1's goal: PTV1 at 27 Gy and PTV2 at 20 Gy
    # everywhere leaves PTV2 at 20 Gy (violated); PTV1 at 22.5 Gy lifts PTV2 to 20 x 27 / 22.5 = 24 Gy
    dose = np.zeros(problem.voxels.n)
    for level1, expect in ((27.0, 20.0), (22.5, 24.0)):
        for part, sub in zip(ps.parts, problem.parts):
            dose[sub.target.rows] = level1 if part.target.name == "PTV1" else 20.0
        assert covers["PTV2"].value(dose) == pytest.approx(expect, rel=1e-6)


def _two_lesion_dose(case, peak1: float, peak2: float, cord_gy: float | None = None) -> np.ndarray:
    """Each lesion at its peak dose inside, a Gaussian fall-off outside (sigma 6 mm); optionally the cord
    PRV held at ``cord_gy`` (a plan that spares it)."""
    from sbrtplan.case import distance_map_mm

    d = np.zeros(case.grid.shape, np.float32)
    for name, peak in (("PTV1", peak1), ("PTV2", peak2)):
        dist = distance_map_mm(case.structure(name), max_distance_mm=200.0)
        d = np.maximum(d, peak * np.exp(-dist ** 2 / (2 * 6.0 ** 2)).astype(np.float32))
    if cord_gy is not None:
        d[case.structure("SpinalCord_PRV02").mask] = cord_gy
    return d * case.body.mask


def test_normalisation_never_trades_a_hard_limit_and_names_it(planned_structures):
    from sbrtplan.case import Dose
    from sbrtplan.workflow.normalisation import normalisation
    from sbrtplan.workflow.recipe import default_recipe
    from sbrtplan.workflow.target_eval import evaluate_targets

    case, proto, ps, problem = planned_structures
    # both lesions at 20 Gy with the cord PRV in their fall-off: full coverage (x1.35 for PTV1) would put
    # 27 Gy on the PRV, beyond its 3 fx limits (D1.2cc < 12.3 Gy): the scale stops at the limit
    dose = _two_lesion_dose(case, 20.0, 20.0)
    norm = normalisation(dose, case, ps, proto, Scheme(27.0, 3), (), default_recipe())
    s = norm.scale
    rep = evaluate_targets(Dose(case.grid, dose * s), case, ps, proto, fractions=3)
    assert norm.binding is not None and norm.binding["goal"].startswith("SpinalCord_PRV02"), norm
    assert norm.binding["priority"] == 1 and s < norm.coverage_scale
    assert "PTV1" in norm.below_coverage
    assert not rep.hard_failures
    cord = {r.goal.metric_label: r for r in rep.goals if r.goal.structure == "cord"}
    # the binding limit sits just under its value (0.5 % margin of the cap)
    assert max(r.value / r.limit for r in cord.values()) == pytest.approx(0.995, abs=0.004)
    assert rep.coverage.status in ("fallback", "failed") and "PTV1" in rep.coverage.note
    # each target is evaluated at its own prescription; organ goals once for the sum
    assert rep.targets["PTV1"].rx_gy == 27.0 and rep.targets["PTV2"].rx_gy == 24.0
    assert {x.name: x.rx_gy for x in rep.lesions.lesions} == {"PTV1": 27.0, "PTV2": 24.0}
    assert len([r for r in rep.goals if r.goal.structure == "cord"]) == len(cord)


def test_normalisation_lifts_the_least_covered_target_to_its_goal(planned_structures):
    from sbrtplan.case import Dose
    from sbrtplan.workflow.normalisation import normalisation
    from sbrtplan.workflow.recipe import default_recipe
    from sbrtplan.workflow.target_eval import evaluate_targets

    case, proto, ps, problem = planned_structures
    # the cord PRV spared (2 Gy); PTV1 at 25 Gy (needs x1.08 for 27), PTV2 at 20 Gy (needs x1.20 for 24):
    # PTV2 decides, PTV1 ends above its prescription
    dose = _two_lesion_dose(case, 25.0, 20.0, cord_gy=2.0)
    norm = normalisation(dose, case, ps, proto, Scheme(27.0, 3), (), default_recipe())
    rep = evaluate_targets(Dose(case.grid, dose * norm.scale), case, ps, proto, fractions=3)
    assert norm.set_by.startswith("PTV2"), norm
    v1, v2 = rep.targets["PTV1"].v100_pct, rep.targets["PTV2"].v100_pct
    if norm.binding is None:
        # every coverage goal of both targets met as aimed: V100 >= 95.5 % of the PTV, V90 >= 99.5 % of
        # PTV! (the PTV inside the cord PRV is cold by design); the goal that sets the scale is met
        # exactly (one voxel of tolerance on the weighted quantile)
        def v90_opt(part):
            w = part.optimization_target.weights
            return 100.0 * w[dose * norm.scale >= 0.9 * part.rx_gy].sum() / w.sum()

        assert min(v1, v2) >= 95.5 - 0.6
        assert min(v90_opt(p) for p in ps.parts) >= 99.5 - 0.6
        assert min(v2 - 95.5, v90_opt(ps.parts[1]) - 99.5) == pytest.approx(0.0, abs=0.6)
    else:
        # a limit of higher priority stops the scale: it is named and every failing target is listed
        assert norm.scale < norm.coverage_scale and "PTV2" in norm.below_coverage
    assert v1 >= v2
    cov = sorted(r.structure for r in rep.goals if r.goal.metric.value == "coverage"
                 and r.goal.parameter.value == 100.0 and r.goal.limit.value == 95.0)
    assert cov == ["PTV1", "PTV2"]


def test_integrated_boost_owns_its_interior_and_has_no_falloff_of_its_own():
    # a simultaneous integrated boost: GTV 30/3 inside PTV 24/3 (the spine phantom's lesion)
    case = make_phantom("spine", spacing_mm=4.0)
    proto = load_protocol("bone_spine")
    sch, ordered = plan_scheme(proto, [parse_target_arg("PTV:24/3"), parse_target_arg("GTV:30/3")])
    assert sch == Scheme(30.0, 3) and ordered[0].name == "GTV"
    ps = build_target_structures(case, proto, ordered)
    boost, ptv = ps.parts
    g, p = case.structure("GTV").mask, case.structure("PTV").mask
    # the boost's voxels are its own (the nearest-surface rule would give them to the enclosing PTV) ...
    assert boost.share[g].all() and not (ptv.share & g).any()
    # ... and everything outside both is the PTV's fall-off: the boost's dose falls off inside the PTV
    assert not boost.falloff_mask.any() and not boost.rings
    assert ptv.falloff_mask[~p & case.body.mask].mean() > 0.99


def test_two_level_phantom_follows_the_bone_standard():
    from sbrtplan.case import distance_map_mm

    case = make_phantom("spine_two_levels")   # its own 2 mm grid
    # GTV2: ellipsoid 16 x 10 x 10.5 mm (7.04 cc); sub-voxel occupancy keeps it within 2 % (as the spine test)
    assert case.structure("GTV2").volume_cc == pytest.approx(4 / 3 * np.pi * 16 * 10 * 10.5 / 1000, rel=0.02)
    # GTV1 is the single-level phantom's lesion one vertebra up: the same volume within 1 %
    assert case.structure("GTV1").volume_cc == pytest.approx(make_phantom("spine").structure("GTV").volume_cc,
                                                             rel=0.01)
    cord = distance_map_mm(case.structure("SpinalCord"), max_distance_mm=20.0)
    for k in ("1", "2"):
        gtv, ctv, ptv = (case.structure(n + k) for n in ("GTV", "CTV", "PTV"))
        assert np.all(ptv.mask[ctv.mask]) and ptv.volume_cc > ctv.volume_cc > gtv.volume_cc
        added = ctv.mask & ~gtv.mask                    # CTV = GTV + 5 mm within the treated bone
        assert np.mean(case.density[added] >= 1.25) > 0.9
        assert float(cord[gtv.mask].min()) >= 2.5       # the standard's minimum GTV-cord distance
    # one untreated vertebra between the PTVs (> 2 cm apart: separate D2cm regions)
    d1 = distance_map_mm(case.structure("PTV1"), max_distance_mm=40.0)
    assert float(d1[case.structure("PTV2").mask].min()) > 20.0


@pytest.mark.slow
def test_two_level_spine_plan_keeps_every_hard_limit_of_the_sum(tmp_path):
    """One IMRT plan of both vertebral levels (27/3 and 24/3) on a 5 mm grid (template beams): the
    protocol's priority order holds on the delivered dose, whatever coverage the grid allows: no hard
    limit of the summed dose fails; either every target meets its coverage goal or the binding limit is
    named; every target is reported at its own prescription with its per-lesion indices."""
    from sbrtplan.workflow import plan, write_plan

    case = make_phantom("spine_two_levels", spacing_mm=5.0)
    p = plan(case, "bone_spine", technique="imrt", targets=["PTV1:27/3", "PTV2:24/3"], grid_mm=5.0,
             allow_missing=True, select_beams=False, max_segments=6)
    m = p.metrics
    assert m["summary"]["hard_failures"] == []
    assert [t["name"] for t in m["prescription"]["targets"]] == ["PTV1", "PTV2"]
    assert {x["name"]: x["rx_gy"] for x in m["lesions"]["lesions"]} == {"PTV1": 27.0, "PTV2": 24.0}
    v100 = {n: m["targets"][n]["V100_pct"] for n in ("PTV1", "PTV2")}
    norm = m["normalisation"]
    if norm["binding"] is None:
        assert min(v100.values()) >= 95.0 - 0.6       # the least covered target at its goal (+0.5 % aim)
    else:
        # a limit of higher priority than coverage binds: named, with the targets it leaves short
        assert norm["binding"]["priority"] < 3 and norm["scale"] < norm["coverage_scale"]
        assert any(n.startswith("normalisation limited by " + norm["binding"]["goal"]) for n in m["notes"])
        assert sorted(norm["below_coverage"]) == sorted(n for n, v in v100.items() if v < 95.0)
    # the plan is written with its RTPLAN prescribing the highest dose level
    write_plan(p, tmp_path / "out")
    m2 = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m2["prescription"]["dose_gy"] == 27.0 and "lesions" in m2
    # ... and one dose reference per target, each on its ROI, read back as the recompute reads a plan
    from sbrtplan.io import read_prescription

    rx = read_prescription(tmp_path / "out" / "RTPLAN.dcm", tmp_path / "out" / "RTSTRUCT.dcm")
    assert [(lv.roi_name, lv.dose_gy) for lv in rx.levels] == [("PTV1", 27.0), ("PTV2", 24.0)]
    assert rx.fractions == 3

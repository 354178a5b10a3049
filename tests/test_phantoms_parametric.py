"""Held-out cohort cases (issue 18, item 4): the parametric phantoms and the targets derived on a
real CT have the structures, roles, volumes and distances they state; the cohort file matches the
registry and the protocols.

The phantoms are built at 4 mm (a few seconds each); the epidural contact is checked at 2 mm,
where a 1 mm gap between the epidural tumour and the cord is resolved.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from sbrtplan.case import StructureRole, distance_map_mm, prv
from sbrtplan.phantoms import COHORT_PHANTOMS, PHANTOMS, liver_lesion_case, make_phantom, vertebral_body_case
from sbrtplan.protocols import bed_gy, load_protocol

ROOT = Path(__file__).resolve().parents[1]
COHORT = ROOT / "benchmarks" / "cohorts" / "heldout.yaml"
SPACING_MM = 4.0

#: protocol roles (besides the targets and the body) each case must fill
_LIVER_ROLES = {"liver", "stomach", "duodenum", "bowel_small", "bowel_large", "kidney", "ribs", "cord", "esophagus",
                "bile_duct"}
EXPECTED_ROLES = {
    "spine_c5_body": {"cord", "esophagus", "plexus", "skin"},
    "spine_t4_small": {"cord", "esophagus", "great_vessels", "skin"},
    "spine_t7_epidural": {"cord", "esophagus", "great_vessels", "skin"},
    "spine_t11_posterior": {"cord", "esophagus", "great_vessels", "skin"},
    "spine_l2_body": {"cauda", "great_vessels", "skin"},
    "spine_l4_cauda": {"cauda", "great_vessels", "skin"},
    **{name: _LIVER_ROLES for name in ("liver_dome_7cm", "liver_dome_4cm", "liver_hilum_3cm", "liver_stomach_2cm",
                                       "liver_duodenum_5cm", "liver_heart_1cm", "chol_hilar")},
    "bone_acetabulum": {"plexus", "cauda", "skin"},
    "bone_rib": {"cord", "esophagus", "great_vessels", "skin"},
    "bone_femur": {"skin"},
}


def _roles(protocol, names) -> set[str]:
    out = set()
    for key, spec in protocol.roles.items():
        if any(n.lower() in {m.lower() for m in spec.names} or any(n.lower().startswith(p.lower())
                                                                   for p in spec.prefixes) for n in names):
            out.add(key)
    return out


@pytest.fixture(scope="module")
def cases():
    return {name: make_phantom(name, SPACING_MM) for name in COHORT_PHANTOMS}


@pytest.fixture(params=sorted(COHORT_PHANTOMS))
def case(request, cases):
    return cases[request.param]


def test_every_cohort_case_is_registered_with_its_protocol():
    assert len(COHORT_PHANTOMS) >= 16
    assert set(COHORT_PHANTOMS) <= set(PHANTOMS)
    assert set(COHORT_PHANTOMS) == set(EXPECTED_ROLES)
    for name, (protocol, _) in COHORT_PHANTOMS.items():
        load_protocol(protocol)


def test_cohort_covers_the_issue_range(cases):
    """The brief's ranges: spine cases at cervical, thoracic and lumbar levels with PTVs from about
    5 to 80 cc; liver lesions of 1 to 7 cm.  The GTV volumes of the smallest and largest liver
    lesions are those of 10 and 70 mm spheres (0.524 and 179.6 cc): the sub-voxel occupancy keeps
    a 70 mm sphere within 3 % at 4 mm; a 10 mm sphere spans 2-3 voxels, 20 % is one voxel layer's
    partial volume."""
    spine = {n: c for n, c in cases.items() if c.metadata["protocol"] == "bone_spine"}
    assert {c.metadata["region"] for c in spine.values()} == {"cervical", "thoracic", "lumbar"}
    ptv_cc = [c.structures["PTV"].volume_cc for c in spine.values()]
    assert min(ptv_cc) <= 8.0 and max(ptv_cc) >= 55.0
    kinds = {c.metadata["lesion_kind"] for c in spine.values()}
    assert {"epidural", "posterior", "body"} <= kinds
    gtv_cc = sorted(c.structures["GTV"].volume_cc for c in cases.values() if c.metadata["protocol"] == "liver_hcc")
    assert gtv_cc[0] == pytest.approx(np.pi / 6 * 10.0 ** 3 / 1000.0, rel=0.2)
    assert gtv_cc[-1] == pytest.approx(np.pi / 6 * 70.0 ** 3 / 1000.0, rel=0.03)


def test_structures_fill_the_protocol_roles(case):
    """Targets GTV/CTV/(ITV)/PTV with their roles, the body, and every organ the case is about."""
    protocol = load_protocol(case.metadata["protocol"])
    s = case.structures
    assert s["External"].role is StructureRole.EXTERNAL
    for name, role in (("GTV", StructureRole.GTV), ("CTV", StructureRole.CTV), ("PTV", StructureRole.PTV)):
        assert s[name].role is role and s[name].volume_cc > 0
    if protocol.name in ("liver_hcc", "cholangiocarcinoma"):
        assert s["ITV"].role is StructureRole.ITV
    filled = _roles(protocol, [n for n in s if n not in ("GTV", "CTV", "ITV", "PTV", "External")])
    assert EXPECTED_ROLES[case.name] <= filled, EXPECTED_ROLES[case.name] - filled
    assert case.source == f"phantom:{case.name}"


def test_ptv_volume_in_the_stated_range(case):
    """PTV volumes come from the sub-voxel occupancy of the margins built on a 2 mm local grid, so
    the 4 mm phantom keeps them (within the case's design range)."""
    lo, hi = case.metadata["ptv_cc_range"]
    assert lo <= case.structures["PTV"].volume_cc <= hi


def test_target_chain_nests(case):
    """GTV inside CTV inside (ITV inside) PTV, up to the averaging of the 2 mm local grid onto the
    4 mm voxels (a voxel half inside one structure may be just under half inside the next)."""
    s = case.structures
    chain = [s[n] for n in ("GTV", "CTV", "ITV", "PTV") if n in s]
    for inner, outer in zip(chain[:-1], chain[1:]):
        spill = (inner.weights - outer.weights).clip(min=0).sum() * case.grid.voxel_volume_cc
        assert spill <= 0.02 * inner.volume_cc + 0.1


def test_organs_at_the_stated_distance_from_the_ptv(case):
    """Shortest distance from the PTV surface to each organ the case is built around, within its
    design range widened by one 4 mm voxel (mask centres lie up to a voxel off the surfaces)."""
    d = distance_map_mm(case.structures["PTV"], max_distance_mm=100.0)
    for organ, (lo, hi) in case.metadata["organ_gap_mm"].items():
        gap = float(d[case.structures[organ].mask].min())
        assert lo - SPACING_MM <= gap <= hi + SPACING_MM, (organ, gap, (lo, hi))


def test_spine_targets_are_bone_and_posterior_target_behind_the_canal(case):
    if case.metadata["protocol"] != "bone_spine":
        pytest.skip("spine cases only")
    s = case.structures
    neural = "CaudaEquina" if case.metadata["region"] == "lumbar" else "SpinalCord"
    assert neural in s and ("SpinalCord" not in s or neural == "SpinalCord")
    # the CTV is bone (or epidural space): mean relative electron density above soft tissue (1.04)
    w = s["CTV"].weights
    assert float((case.density * w).sum() / w.sum()) > 1.08
    assert not (s["GTV"].mask & s[neural].mask).any()
    canal_y = float(s["SpinalCanal"].centroid_mm()[1])
    ctv_y = float(s["CTV"].centroid_mm()[1])
    if case.metadata["lesion_kind"] == "posterior":
        assert ctv_y > canal_y + 5.0  # +y is posterior (LPS)
    else:
        assert ctv_y < canal_y - 5.0


def test_epidural_gtv_touches_the_cord_prv_not_the_cord():
    """The T7 epidural extension lies within the 2 mm cord PRV (bone_spine's margin) but outside the
    cord: at 2 mm the GTV shares voxels with the PRV and none with the cord."""
    c = make_phantom("spine_t7_epidural", 2.0)
    gtv, cord = c.structures["GTV"], c.structures["SpinalCord"]
    cord_prv = prv(cord, 2.0)
    assert ("GTV", "SpinalCord_PRV02") in c.metadata["touching"]
    assert (gtv.mask & cord_prv.mask).any()
    assert not (gtv.mask & cord.mask).any()
    gap = float(distance_map_mm(cord, max_distance_mm=20.0)[gtv.mask].min())
    assert gap < 2.0


def test_liver_cases_leave_enough_normal_liver(case):
    """The liver standard spares >= 700 cc below 15 Gy: every liver case has >= 1000 cc of liver
    outside its PTV (room for the dose fall-off), so the rule is achievable."""
    if case.metadata["protocol"] not in ("liver_hcc", "cholangiocarcinoma"):
        pytest.skip("liver cases only")
    liver, ptv = case.structures["Liver"], case.structures["PTV"]
    assert (liver.weights * (1.0 - ptv.weights)).sum() * case.grid.voxel_volume_cc >= 1000.0


def test_cohort_file_matches_registry_and_protocols():
    from sbrtplan.batch import load_cohort

    cohort = load_cohort(COHORT)
    doc = yaml.safe_load(COHORT.read_text())
    names = {e["name"] for e in doc["cases"]}
    assert len(names) >= 16 and set(COHORT_PHANTOMS) <= names
    for e in doc["cases"]:
        p = load_protocol(e["protocol"])
        if str(e["case"]).startswith("phantom:"):
            assert COHORT_PHANTOMS[e["case"].split(":", 1)[1]][0] == e["protocol"]
        if p.schemes:  # every scheme the protocol lists (spine 24/1 included)
            assert e["schemes"] == [str(o.scheme.short) for o in sorted(p.schemes, key=lambda o: o.rank)]
        else:  # liver protocols: schemes in the protocol's range that meet its BED10 rule
            rule = next(g for g in p.target_goals if g.metric.value == "BED_Rx")
            for sch in e["schemes"]:
                scheme = p.scheme(sch)  # raises outside the protocol's range
                assert bed_gy(scheme.total_gy, scheme.fractions, 10.0) >= rule.limit.value
    tasks = {(t.case_name, t.scheme) for t in cohort.tasks}
    assert ("spine_c5_body", "24/1") in tasks


def test_split_is_seeded_stratified_and_stated():
    spec = importlib.util.spec_from_file_location("cohort_heldout", ROOT / "benchmarks" / "cohort_heldout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = yaml.safe_load(COHORT.read_text())
    halves = mod.split(doc["cases"])
    assert halves == mod.split(doc["cases"])  # seeded
    for site in ("spine", "liver", "bone"):
        names = [e["name"] for e in doc["cases"] if mod.site_of(e) == site]
        held = sum(halves[n] == "heldout" for n in names)
        assert held == -(-len(names) // 2)
    mod.check_stated_split(COHORT.read_text(), halves)  # exits when the YAML's comment disagrees


# ------------------------------------------------------------------ real anatomy
@pytest.fixture(scope="module")
def thorax():
    from conftest import require_shared

    path = require_shared("dicom", "thorax-rt02")
    from sbrtplan.io import load_case

    return load_case(path)


def test_vertebral_body_derived_in_front_of_the_real_cord(thorax):
    """The derived body is bone (CT numbers of cancellous bone, 150-400 HU), in front of the
    contoured cord and clear of it; one level is 12-32 mm tall (a thoracic body plus partial-volume
    slices at 4 mm), two levels about twice that."""
    one = vertebral_body_case(thorax, levels=1)
    two = vertebral_body_case(thorax, levels=2)
    cord = thorax.structures["SpinalCord"]
    dcord = distance_map_mm(cord, max_distance_mm=60.0)
    for c in (one, two):
        s = c.structures
        assert {"GTV", "CTV", "PTV", "SpinalCord", "External"} <= set(s)
        assert not {"PTV4140", "GTVp", "CTVp"} & set(s)
        ctv = s["CTV"]
        assert 150.0 <= float(c.hu[ctv.mask].mean()) <= 400.0
        # anterior (LPS: -y) of the cord on the same slices (the cord follows the thoracic kyphosis)
        ks = np.nonzero(ctv.mask.any(axis=(1, 2)))[0]
        on_slices = np.zeros_like(cord.mask)
        on_slices[ks] = cord.mask[ks]
        cord_y = float(np.mean(c.grid.patient_from_index(np.argwhere(on_slices))[:, 1]))
        assert ctv.centroid_mm()[1] < cord_y - 10.0
        assert not (s["GTV"].mask & cord.mask).any()
        assert 2.0 <= float(dcord[s["GTV"].mask].min()) <= 8.0
        assert 4.0 <= s["PTV"].volume_cc <= 40.0
    (z0, z1), = one.metadata["vertebral_levels_z_mm"]
    assert 8.0 <= z1 - z0 <= 28.0  # slice centres: the level is one slice (4 mm) taller
    zs = [z for lv in two.metadata["vertebral_levels_z_mm"] for z in lv]
    assert max(zs) - min(zs) >= 1.6 * (z1 - z0)
    assert two.structures["PTV"].volume_cc > 1.5 * one.structures["PTV"].volume_cc


def test_liver_lesion_derived_inside_the_real_liver(thorax):
    c = liver_lesion_case(thorax, diameter_mm=25.0)
    s = c.structures
    gtv, liver = s["GTV"], s["Liver"]
    assert np.all(liver.mask[gtv.mask])
    assert 7.0 <= gtv.volume_cc <= 9.5  # a 25 mm sphere is 8.2 cc
    assert s["ITV"].role is StructureRole.ITV
    assert 25.0 <= s["PTV"].volume_cc <= 45.0

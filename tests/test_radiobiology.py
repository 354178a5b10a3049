"""LQ radiobiology (BED, EQD2, isoeffective conversion) and the Michigan re-irradiation table.

Hand-worked values: BED = n d (1 + d / (a/b)), EQD2 = BED / (1 + 2 / (a/b)).
"""

import numpy as np
import pytest

from sbrtplan.case import Dose, Grid, Structure, StructureRole
from sbrtplan.errors import InputError
from sbrtplan.evaluation import check_reirradiation, cumulative_eqd2
from sbrtplan.protocols import (bed_gy, discount_pct_for, eqd2_gy, isoeffective_dose_gy, load_protocol,
                                michigan_table, reirradiation_limit, total_dose_for_bed_gy)


def test_bed10_of_bone_and_liver_schemes():
    # 27 Gy / 3 fx: 27 (1 + 9/10) = 51.3 Gy
    assert bed_gy(27, 3, 10) == pytest.approx(51.3, abs=1e-9)
    # 45 Gy / 3 fx: 45 (1 + 15/10) = 112.5 Gy  (>= 80: passes the HCC rule)
    assert bed_gy(45, 3, 10) == pytest.approx(112.5, abs=1e-9)
    # 40 Gy / 5 fx: 40 (1 + 8/10) = 72 Gy  (< 80: fails the HCC rule)
    assert bed_gy(40, 5, 10) == pytest.approx(72.0, abs=1e-9)


def test_cord_eqd2_alpha_beta_2():
    # 21.9 Gy / 3 fx, a/b 2: BED = 21.9 (1 + 7.3/2) = 101.835; EQD2 = BED / 2 = 50.9175 Gy
    assert bed_gy(21.9, 3, 2) == pytest.approx(101.835, abs=1e-9)
    assert eqd2_gy(21.9, 3, 2) == pytest.approx(50.9175, abs=1e-9)


def test_per_voxel_and_inverse():
    d = np.array([0.0, 10.0, 21.9, 30.0])
    bed = bed_gy(d, 3, 2.0)
    np.testing.assert_allclose(bed, d * (1 + d / 6.0))
    np.testing.assert_allclose(total_dose_for_bed_gy(bed, 3, 2.0), d, atol=1e-9)
    # isoeffective conversion: cord 30 Gy / 5 fx (a/b 2) -> 10 fx: BED 120 = 10 d (1 + d/2) -> d = 4, 40 Gy
    assert isoeffective_dose_gy(30.0, 5, 10, 2.0) == pytest.approx(40.0, abs=1e-9)
    with pytest.raises(InputError, match="fractions"):
        bed_gy(10, 0, 2)
    with pytest.raises(InputError, match="alpha/beta"):
        bed_gy(10, 3, -1)


def test_protocol_bed_goal_passes_and_fails():
    hcc = load_protocol("liver_hcc")
    bed_goal = next(g for g in hcc.goals_for("45/3") if g.metric.value == "BED_Rx")
    assert bed_goal.limit.value == 80 and bed_goal.alpha_beta_gy == 10
    assert bed_goal.comparator.holds(bed_gy(45, 3, 10), bed_goal.limit.value)
    assert not bed_goal.comparator.holds(bed_gy(40, 5, 10), bed_goal.limit.value)
    chol = load_protocol("cholangiocarcinoma")
    g = next(g for g in chol.goals_for("45/3") if g.metric.value == "BED_Rx")
    assert g.limit.value == 100  # cholangiocarcinoma BED10 >= 100 Gy: 45/3 (112.5) passes, 50/5 (100) too


def test_michigan_table_as_printed():
    rows = {r.organ: r for r in michigan_table()}
    assert len(rows) == 22
    cord = rows["spinal cord"]
    assert cord.max_eqd2_gy == 50 and cord.max_eqd2_near_target_gy == 55 and cord.alpha_beta_gy == 2.5
    assert cord.discount_pct == (0, 10, 25, 50)
    assert rows["duodenum"].discount_pct == (0, 0, 10, 25)
    assert rows["stomach"].max_eqd2_gy == 54 and rows["bladder"].max_eqd2_gy == 85
    assert rows["kidney"].max_eqd2_gy is None and rows["liver"].discount_pct == (0, 0, 50, 100)
    # interval columns: < 3 mo, 3-6 mo, 6-12 mo, 1-3 y, then 50 % beyond 3 years
    assert [discount_pct_for(cord, m) for m in (2, 3, 4, 6, 11.9, 12, 36, 40)] == [0, 10, 10, 25, 25, 50, 50, 50]
    assert reirradiation_limit("SpinalCord_PRV03").organ == "spinal cord"
    assert reirradiation_limit("Lung_L").organ == "lung"
    assert reirradiation_limit("PTV") is None


def test_cumulative_eqd2_four_month_interval():
    # prior: 30 Gy / 10 fx to the cord; new: 21.9 Gy / 3 fx; a/b 2.5; 4 months -> 10 % discount
    prior = np.full((2, 2, 2), 30.0, np.float32)
    new = np.full((2, 2, 2), 21.9, np.float32)
    cum = cumulative_eqd2(prior, new, 4.0, 2.5, prior_fractions=10, new_fractions=3, organ="SpinalCord")
    e_prior = 30 * (1 + 3 / 2.5) / (1 + 2 / 2.5)            # 36.667 Gy
    e_new = 21.9 * (1 + 7.3 / 2.5) / (1 + 2 / 2.5)          # 47.688 Gy
    expected = 0.9 * e_prior + e_new                        # 80.688 Gy
    np.testing.assert_allclose(cum, expected, rtol=1e-6)
    # the generic column (no organ) is the same 10 % at 4 months; duodenum has 0 % at 4 months
    np.testing.assert_allclose(cumulative_eqd2(prior, new, 4.0, prior_fractions=10, new_fractions=3), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(cumulative_eqd2(prior, new, 4.0, prior_fractions=10, new_fractions=3,
                                               organ="Duodenum"), e_prior + e_new, rtol=1e-6)
    with pytest.raises(InputError, match="same grid"):
        cumulative_eqd2(prior, new[:1], 4.0, prior_fractions=10, new_fractions=3)


def test_check_reirradiation_against_michigan_limits():
    g = Grid((20, 20, 20), (2.0, 2.0, 2.0), (-20, -20, -20))
    z, y, x = np.meshgrid(*[np.arange(20) * 2.0 - 20] * 3, indexing="ij")
    cord_mask = (np.abs(x) <= 3) & (np.abs(y) <= 3)            # a 7 x 7 mm column along z
    ptv_mask = (np.abs(x - 12) <= 4) & (np.abs(y) <= 4) & (np.abs(z) <= 6)   # centres x >= 8, cord x <= 2
    structures = {"SpinalCord": Structure("SpinalCord", g, cord_mask, StructureRole.OAR),
                  "PTV": Structure("PTV", g, ptv_mask, StructureRole.PTV)}
    prior = Dose(g, np.full(g.shape, 20.0, np.float32))      # 20 Gy / 5 fx, uniform
    new = Dose(g, np.full(g.shape, 21.0, np.float32))        # 21 Gy / 3 fx, uniform
    e_prior = 20 * (1 + 4 / 2.5) / 1.8                        # 28.889 Gy
    e_new = 21 * (1 + 7 / 2.5) / 1.8                          # 44.333 Gy
    res = check_reirradiation(prior, new, structures, 8.0, prior_fractions=5, new_fractions=3,
                              target=structures["PTV"])
    assert len(res) == 1 and res[0].organ == "spinal cord" and res[0].discount_pct == 25
    r = res[0]
    assert r.cumulative_eqd2_d01_gy == pytest.approx(0.75 * e_prior + e_new, rel=1e-5)   # 66.0 Gy
    assert r.limit_gy == 50 and r.passed is False
    # 40 months: 50 % discount -> 58.8 Gy, still above 50 Gy
    r40 = check_reirradiation(prior, new, structures, 40.0, prior_fractions=5, new_fractions=3)[0]
    assert r40.cumulative_eqd2_d01_gy == pytest.approx(0.5 * e_prior + e_new, rel=1e-5)
    # the PTV above is 4 mm from the cord (voxel gap of two 2 mm voxels): 50 Gy applies. A target
    # whose voxels touch the cord (gap 0 mm, < 2 mm) raises the cord limit to 55 Gy.
    touching = (np.abs(x - 6) <= 2) & (np.abs(y) <= 4) & (np.abs(z) <= 6)
    structures["PTV"] = Structure("PTV", g, touching, StructureRole.PTV)
    rn = check_reirradiation(prior, new, structures, 8.0, prior_fractions=5, new_fractions=3,
                             target=structures["PTV"])[0]
    assert rn.limit_gy == 55 and "< 2 mm" in rn.note

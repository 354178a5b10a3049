"""Adaptive-penalty optimisation: hard limits are met exactly after re-weighting, coverage is kept."""

import numpy as np
import pytest

from sbrtplan.optimizer.penalty import Limit, Penalty, PenaltyObjective, penalty_solve
from test_beam_selection import _problem  # the 2-D slab phantom of the beam-selection tests


def test_adaptive_weights_meet_an_organ_limit():
    D, offsets, target, organ, angles = _problem(n_dir=8)
    t = np.flatnonzero(target)
    o = np.flatnonzero(organ)
    rx = 1.0
    pens = [Penalty("target", t, rx, 100.0, over=False), Penalty("target hot", t, 1.1 * rx, 10.0, over=True)]
    organ_pen = Penalty("organ max", o, 0.95 * 0.12, 0.05, over=True)   # deliberately weak at first
    pens.append(organ_pen)
    lim = Limit(organ_pen, 0.12, volume_fraction=0.0)
    first = penalty_solve(D, pens[:2] + [Penalty("organ max", o, 0.95 * 0.12, 0.05, over=True)], rounds=1)
    res = penalty_solve(D, pens, [lim], rounds=6)
    # the weak penalty alone lets the organ exceed its 0.12 maximum; re-weighting brings it under
    assert first.dose_gy[o].max() > 0.12
    assert res.dose_gy[o].max() <= 0.12 * 1.001
    assert not res.violated
    # and the target still receives its prescription on most of its volume
    assert np.mean(res.dose_gy[t] >= 0.95 * rx) >= 0.9


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    rows = np.arange(50)
    pens = [Penalty("a", rows[:30], 1.0, 3.0, over=False), Penalty("b", rows[20:], rng.random(30), 2.0, over=True)]
    obj = PenaltyObjective(pens, 50)
    d = rng.random(50) * 1.5
    f, g = obj.value_and_grad(d)
    eps = 1e-6
    num = np.array([(obj.value_and_grad(d + eps * np.eye(50)[i])[0] - f) / eps for i in range(50)])
    np.testing.assert_allclose(g, num, atol=1e-4)


def test_coverage_limit_grows_the_target_weight_until_d95_reaches_rx():
    """A coverage goal (D95 >= Rx, ``Limit(lower=True)``) re-weights the target's under-dose penalty.

    A strong organ penalty next to the target cools the target's edge; the plain solve leaves D95
    below Rx, the coverage limit brings it to Rx (0.1 % tolerance of the check) while the organ's
    hard maximum (priority 0) stays met: coverage never grows against an unmet organ limit.
    """
    D, offsets, target, organ, angles = _problem(n_dir=8)
    t = np.flatnonzero(target)
    o = np.flatnonzero(organ)
    rx = 1.0

    def pens():
        return [Penalty("target", t, rx, 1.0, over=False), Penalty("target hot", t, 1.05 * rx, 1.0, over=True),
                Penalty("organ", o, 0.0, 5.0, over=True)]

    plain = penalty_solve(D, pens(), rounds=1)
    p = pens()
    organ_lim = Limit(p[2], 0.07, 0.0, label="organ max", priority=0)
    cover = Limit(p[0], rx, 0.05, lower=True, label="coverage", priority=1)
    res = penalty_solve(D, p, [organ_lim, cover], rounds=8)
    assert cover.value(plain.dose_gy) < 0.97 * rx       # the organ term alone costs coverage
    assert organ_lim.value(plain.dose_gy) > 0.07        # and the plain solve breaks the organ limit too
    assert cover.value(res.dose_gy) >= 0.999 * rx       # the coverage goal is met (check tolerance 0.1 %)
    assert res.dose_gy[o].max() <= 0.07 * 1.001         # and the hard limit holds
    assert not res.violated


def test_under_dose_allowed_fraction_frees_the_coldest_rows():
    """An under-dose penalty with ``allowed_fraction`` ignores exactly its coldest rows (Wu-Mohan)."""
    rows = np.arange(100)
    d = np.linspace(0.5, 1.5, 100)                      # 50 rows below the reference 1.0
    full = PenaltyObjective([Penalty("t", rows, 1.0, 1.0, over=False)], 100).value_and_grad(d)
    part = PenaltyObjective([Penalty("t", rows, 1.0, 1.0, over=False, allowed_fraction=0.2)], 100).value_and_grad(d)
    # the coldest 20 % (rows 0-18; row 19 is the boundary dose itself and stays penalised) carry no
    # gradient, the other cold rows keep theirs unchanged
    assert np.all(part[1][:19] == 0.0) and np.all(part[1][19:50] < 0.0)
    np.testing.assert_allclose(part[1][19:50], full[1][19:50])
    assert part[0] < full[0]


def test_fluence_regularizer_gradient_and_smoothing():
    """Smoothness + MU penalty: exact gradient, and a smoother, lower-MU solution at equal coverage."""
    from sbrtplan.optimizer.penalty import FluenceRegularizer, beamlet_neighbour_pairs

    class _G:  # a beamlet grid as the pair builder sees it: 1 row x 9 beamlets per direction
        active = np.ones((1, 9), bool)

    D, offsets, target, organ, angles = _problem(n_dir=8)
    pairs = beamlet_neighbour_pairs([_G()] * 8, offsets)
    assert pairs.shape == (8 * 8, D.shape[1])                 # 8 neighbour pairs per direction
    reg = FluenceRegularizer(pairs, gy_per_mu=1.0, smooth_weight=2.0, mu_weight=0.1)
    rng = np.random.default_rng(1)
    x = rng.random(D.shape[1])
    f, g = reg.value_and_grad(x)
    eps = 1e-6
    num = np.array([(reg.value_and_grad(x + eps * np.eye(x.size)[i])[0] - f) / eps for i in range(x.size)])
    np.testing.assert_allclose(g, num, atol=1e-4)
    t = np.flatnonzero(target)
    o = np.flatnonzero(organ)
    pens = lambda: [Penalty("target", t, 1.0, 1.0, over=False), Penalty("target hot", t, 1.05, 1.0, over=True),
                    Penalty("organ", o, 0.3, 1.0, over=True)]
    rough = penalty_solve(D, pens(), rounds=1)
    smooth = penalty_solve(D, pens(), rounds=1, regularizer=FluenceRegularizer(pairs, 1.0, 1.0, 0.0))
    tv = lambda x: np.abs(pairs @ x).sum()
    assert tv(smooth.x) < 0.8 * tv(rough.x)                     # visibly smoother fluence
    # and still a plan: the target mean within 5 % of Rx (between the under- and over-dose
    # references 1.0 and 1.05, as the unregularised one)
    assert abs(smooth.dose_gy[t].mean() - 1.0) < 0.05


def test_limit_measured_on_the_normalised_dose():
    """A hot-spot limit with ``normalized_by`` reads the dose the final normalisation will give:
    a plan at 95 % of its coverage level with a 105 % hot spot becomes 105/0.95 = 110.5 %."""
    rows = np.arange(100)
    dose = np.full(100, 0.95)
    dose[0] = 1.05
    cover = Limit(Penalty("target", rows, 1.0, 1.0, over=False), 1.0, 0.05, lower=True)
    hot = Limit(Penalty("hot", rows, 1.0, 1.0, over=True), 1.08, 0.0)
    assert hot.value(dose) == pytest.approx(1.05)
    hot.normalized_by = cover
    assert hot.value(dose) == pytest.approx(1.05 / 0.95)
    # an organ limit at its value stops the scaling, as the plan's normalisation stops there
    organ = Limit(Penalty("organ", rows[50:], 0.5, 1.0, over=True), 0.95, 0.0)
    hot.scale_caps = [organ]
    assert hot.value(dose) == pytest.approx(1.05)


def test_capped_coverage_hands_the_rounds_to_the_next_priority():
    """Coverage (priority 1) at its weight cap cannot act: a violated priority-2 limit is re-weighted
    instead of waiting for it for ever; and the cap holds across warm-started solves."""
    D, offsets, target, organ, angles = _problem(n_dir=8)
    t = np.flatnonzero(target)
    o = np.flatnonzero(organ)
    cover_pen = Penalty("target", t, 1.0, 1.0, over=False)
    organ_pen = Penalty("organ", o, 0.0, 50.0, over=True)      # strong: coverage cannot be reached
    hot_pen = Penalty("target hot", t, 1.2, 0.01, over=True)
    cover = Limit(cover_pen, 1.0, 0.0, lower=True, priority=1, growth=2.0, max_weight_factor=2.0)
    hot = Limit(hot_pen, 1.0, 0.0, priority=2, growth=4.0, floor_gy=0.5)
    pens = [cover_pen, organ_pen, hot_pen]
    res = penalty_solve(D, pens, [cover, hot], rounds=4)
    assert cover_pen.weight == pytest.approx(2.0)               # grew once, then capped
    assert hot_pen.weight > 0.01                                # the next priority acted
    res2 = penalty_solve(D, pens, [cover, hot], x0=res.x, rounds=2)
    assert cover_pen.weight == pytest.approx(2.0)               # a warm start does not restart the cap


def test_dense_products_split_between_threads_equal_the_whole_product():
    """The MU re-solve's dense ``A x`` is computed in two row blocks side by side: the result is the
    whole product to the bit (the split is on a multiple of 64 rows, one BLAS thread as in L-BFGS-B)."""
    from sbrtplan.optimizer.first_order import single_thread_blas
    from sbrtplan.optimizer.penalty import DenseOps

    rng = np.random.default_rng(7)
    a = rng.random((70001, 37))
    x = rng.random(37)
    ops = DenseOps(a)
    assert ops._half > 0 and ops._half % 64 == 0
    with single_thread_blas():
        assert np.array_equal(ops.matvec(x), a @ x)
        g = rng.random(a.shape[0])
        assert np.array_equal(ops.rmatvec(g), a.T @ g)


def test_sparse_gradients_are_the_full_gradients_on_the_terms_rows():
    """Every region term's (rows, values) gradient, scattered, is its full gradient, and the value is
    the same: the aperture optimiser adds the former instead of the latter."""
    from sbrtplan.optimizer import VoxelRegion
    from sbrtplan.optimizer.terms import LowerDVH, MaxDose, MeanDose, MinDose, QuadOverdose, UpperDVH

    rng = np.random.default_rng(8)
    n = 500
    dose = rng.random(n) * 30.0
    region = VoxelRegion("organ", rng.choice(n, 120, replace=False), rng.random(120) + 0.1, 12.0)
    for term in (MaxDose(region, 20.0), MinDose(region, 10.0), MeanDose(region, 5.0),
                 UpperDVH(region, 18.0, volume_cc=1.0), LowerDVH(region, 12.0, volume_pct=95.0),
                 QuadOverdose(region, 15.0)):
        v_full, g_full = term.value_and_grad(dose)
        v, rows, g = term.value_and_sparse_grad(dose)
        assert v == v_full
        scattered = np.zeros(n)
        scattered[rows] = g
        assert np.array_equal(scattered, g_full), term.label
        assert np.all(g_full[np.setdiff1d(np.arange(n), rows)] == 0.0)

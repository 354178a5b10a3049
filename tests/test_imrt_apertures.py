"""IMRT segments made on the dose objective: aperture pricing, aperture geometry, beam spreading."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sbrtplan.beams import BeamGeometry, BeamletGrid, MLCModel, delivered_fluence
from sbrtplan.beams.sequencing import aperture_from_opening, best_row_intervals, opening_fluence
from sbrtplan.optimizer.penalty import Penalty
from sbrtplan.workflow.imrt import generate_apertures, separated_choice
from test_beam_selection import _problem  # the 2-D slab phantom of the beam-selection tests

MLC = MLCModel.millennium120()


def _angle_deg(a: BeamGeometry, b: BeamGeometry) -> float:
    return float(np.degrees(np.arccos(np.clip(a.direction @ b.direction, -1.0, 1.0))))


def test_separated_choice_spreads_a_clustered_ranking():
    # the best-scored directions cluster within 30 degrees (as the lasso ranks a shallow target)
    gantries = [240, 250, 260, 270, 200, 300, 0, 160, 90]
    geoms = [BeamGeometry(float(g)) for g in gantries]
    scores = np.array([9.0, 8.5, 8.0, 7.5, 3.0, 2.5, 2.0, 1.5, 1.0])
    idx, sep = separated_choice(geoms, scores, 4, 35.0)
    assert sep == 35.0 and len(idx) == 4
    assert 0 in idx                                   # the best direction is always kept
    chosen = [geoms[i] for i in idx]
    assert min(_angle_deg(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]) >= 35.0 - 1e-6
    # plain ranking would have taken the four clustered directions (at most 30 degrees apart)
    assert sorted(idx) != [0, 1, 2, 3]


def test_separated_choice_relaxes_when_the_candidates_are_too_close():
    geoms = [BeamGeometry(float(g)) for g in (250, 260, 270, 280)]   # all within 30 degrees
    idx, sep = separated_choice(geoms, np.array([4.0, 3.0, 2.0, 1.0]), 3, 35.0)
    assert len(idx) == 3
    # 10 degree spacing: three directions pairwise >= 10 degrees apart exist, >= 15 do not
    chosen = [geoms[i] for i in idx]
    assert min(_angle_deg(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]) >= sep - 1e-6
    assert sep == 10.0


def test_best_row_intervals_is_the_maximum_sum_interval():
    rng = np.random.default_rng(3)
    score = rng.normal(size=(6, 9))
    score[2] = -np.abs(score[2])                      # a row where every interval loses
    op = best_row_intervals(score)
    for r in range(score.shape[0]):
        best, arg = 0.0, (-1, -1)
        for a in range(score.shape[1]):
            for b in range(a + 1, score.shape[1] + 1):
                v = score[r, a:b].sum()
                if v > best + 1e-12:
                    best, arg = v, (a, b)
        assert tuple(op[r]) == arg
    assert tuple(op[2]) == (-1, -1)


def test_aperture_delivers_the_fluence_the_optimiser_assumed():
    """The dose column of a generated segment is the beamlet matrix times ``opening_fluence``; the
    MLC aperture built from the opening must deliver exactly that fluence (open beamlets 1, MLC
    transmission under closed leaves inside the jaws), or the optimiser plans a different field."""
    y = np.arange(-4, 5) * 5.0                       # 8 rows on the central 5 mm leaves
    x = np.arange(-5, 6) * 5.0                       # 10 columns of 5 mm
    active = np.ones((8, 10), bool)
    active[0, :2] = False
    grid = BeamletGrid(x, y, active)
    op = np.array([[2, 6], [1, 8], [-1, -1], [3, 4], [0, 10], [4, 9], [-1, -1], [-1, -1]])
    ap = aperture_from_opening(op, grid, MLC)
    model = opening_fluence(op, grid, MLC)
    for transmission in (False, True):
        f = delivered_fluence([(ap, 1.0)], grid, MLC, transmission=transmission)[grid.active]
        expect = model if transmission else (model >= 1.0 - 1e-9).astype(float)
        np.testing.assert_allclose(f, expect, atol=1e-9)
    # closed pairs between open ones carry only transmission; beamlets of rows 6-7 (outside the
    # jaws) nothing
    assert np.allclose(model.reshape(-1)[-20:], 0.0)


def _slab():
    D, offsets, target, organ, angles = _problem(n_dir=8)
    n_beamlets = np.diff(offsets)
    grids = [BeamletGrid(np.linspace(-9.0, 9.0, int(n) + 1), np.array([-2.5, 2.5]), np.ones((1, int(n)), bool))
             for n in n_beamlets]
    return D, offsets, grids, np.flatnonzero(target), np.flatnonzero(organ)


def _generate(organ_weight: float):
    D, offsets, grids, t, o = _slab()
    pens = [Penalty("target", t, 1.0, 100.0, over=False), Penalty("target hot", t, 1.1, 10.0, over=True)]
    if organ_weight:
        pens.append(Penalty("organ", o, 0.0, organ_weight, over=True))
    gen = generate_apertures(D, offsets, grids, MLC, pens, [], max_segments=3, min_segment_mu=0.02)
    return gen, D, offsets, grids, t, o


def test_generated_apertures_are_deliverable_and_their_dose_is_the_plan():
    gen, D, offsets, grids, t, o = _generate(5.0)
    n_seg = [len(s) for s in gen.segments]
    assert max(n_seg) <= 3 and sum(n_seg) >= 3
    assert all(mu >= 0.02 - 1e-9 for s in gen.segments for _, mu in s)
    # the returned dose is the dose of the returned segments (no hidden fluence)
    x = np.zeros(D.shape[1])
    for b, segs in enumerate(gen.segments):
        for op, mu in segs:
            assert op.shape == (1, 2) and 0 <= op[0, 0] < op[0, 1] <= grids[b].shape[1]
            x[offsets[b]:offsets[b + 1]] += mu * opening_fluence(op, grids[b], MLC)
    np.testing.assert_allclose(gen.dose_gy, D @ x, rtol=1e-6, atol=1e-9)


def test_generated_apertures_spare_an_organ_and_keep_the_target():
    """Pricing on the dose objective: with an organ penalty the segments leave the directions that
    cross the organ and its dose falls by an order of magnitude, while the whole target keeps
    >= 95 % of Rx and its maximum stays under 120 % (measured: organ mean 0.46 -> 0.02 Rx)."""
    free, *_ = _generate(0.0)
    spared, D, offsets, grids, t, o = _generate(20.0)
    for gen in (free, spared):
        assert np.mean(gen.dose_gy[t] >= 0.95) >= 0.99
        assert gen.dose_gy[t].max() <= 1.2
    assert spared.dose_gy[o].mean() <= 0.1 * free.dose_gy[o].mean()
    # the direction perpendicular to the slab (straight through the organ, index 4 of 8) is unused
    assert len(spared.segments[4]) == 0 and len(free.segments[4]) >= 1


def test_generated_apertures_reject_nothing_to_price():
    """A problem with no target under-dose has a zero gradient at zero dose: no segment at all."""
    D, offsets, grids, t, o = _slab()
    gen = generate_apertures(D, offsets, grids, MLC, [Penalty("organ", o, 0.1, 1.0, over=True)], [],
                             max_segments=3, min_segment_mu=0.01)
    assert all(len(s) == 0 for s in gen.segments)
    assert np.allclose(gen.dose_gy, 0.0)


def test_penalty_solve_dense_and_sparse_agree():
    from sbrtplan.optimizer.penalty import penalty_solve

    D, offsets, grids, t, o = _slab()
    pens = lambda: [Penalty("target", t, 1.0, 100.0, over=False), Penalty("organ", o, 0.1, 5.0, over=True)]  # noqa: E731
    ref = penalty_solve(sp.csr_matrix(D), pens(), rounds=1)
    res = penalty_solve(D.toarray(), pens(), rounds=1)
    # the same convex problem: objectives equal to the solver's tolerance
    assert res.objective == pytest.approx(ref.objective, rel=1e-4)

"""VMAT direct aperture optimisation on a synthetic three-slice phantom.

The phantom is a water disk (radius 42 mm) with a cylindrical target and an
organ at risk (OAR) 4 mm from it.  Beamlets are 5 mm (along the leaf motion)
x 2.5 mm (one leaf pair per slice) pencil beams: a box profile blurred by a
3 mm Gaussian penumbra, attenuated 0.5 %/mm with depth -- enough physics for
the optimiser to have to trade target coverage against the OAR.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from scipy.special import erf

from sbrtplan.beams import BeamletGrid
from sbrtplan.errors import InputError
from sbrtplan.optimizer.dao import ArcSector, _solve_master, aperture_fractions, vmat_dao
from sbrtplan.optimizer.dao_pricing import aperture_mask, price_aperture

SPACING_MM = 2.5
N_XY = 36
Z_MM = np.array([-2.5, 0.0, 2.5])          # slice centres = leaf-pair centres
X_EDGES = np.arange(-40.0, 40.01, 5.0)     # 16 columns of 5 mm
Y_EDGES = np.array([-3.75, -1.25, 1.25, 3.75])
SIGMA_MM = 3.0
MU_PER_MM = 0.005
GY_PER_MU = 0.03                           # open-beamlet output on axis, Gy/MU (before penumbra)
RX_GY = 30.0
N_FX = 3
OAR_LIMIT_GY = 10.0
TARGET_C = np.array([0.0, 6.0])
TARGET_R = 12.0
OAR_C = np.array([0.0, -16.0])
OAR_R = 6.0


def _box(u, lo, hi, sigma):
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf((u - lo) / s) - erf((u - hi) / s))


def _phantom():
    c = (np.arange(N_XY) - (N_XY - 1) / 2) * SPACING_MM
    yy, xx = np.meshgrid(c, c, indexing="ij")
    body = np.hypot(xx, yy) <= 42.0
    target = np.hypot(xx - TARGET_C[0], yy - TARGET_C[1]) <= TARGET_R
    oar = np.hypot(xx - OAR_C[0], yy - OAR_C[1]) <= OAR_R
    # voxels of the optimisation: every body voxel of every slice
    pts = np.column_stack([xx[body], yy[body]])
    labels = np.where(target[body], 1, np.where(oar[body], 2, 0))
    n = pts.shape[0]
    X = np.tile(pts[:, 0], Z_MM.size)
    Y = np.tile(pts[:, 1], Z_MM.size)
    Z = np.repeat(Z_MM, n)
    return X, Y, Z, np.tile(labels, Z_MM.size)


def _matrix(X, Y, Z, gantries_deg):
    """Influence matrix (Gy per fraction per MU) and the arc sectors."""
    blocks, sectors, start = [], [], 0
    xc = 0.5 * (X_EDGES[1:] + X_EDGES[:-1])
    for g in gantries_deg:
        t = np.deg2rad(g)
        u = X * np.cos(t) + Y * np.sin(t)            # across the beam (leaf motion)
        v = -X * np.sin(t) + Y * np.cos(t)           # along the beam
        depth = np.clip(v + 42.0, 0.0, None)
        # optimised beamlets: those whose centre sees the target projection within 7.5 mm
        tc = TARGET_C[0] * np.cos(t) + TARGET_C[1] * np.sin(t)
        act_cols = np.abs(xc - tc) <= TARGET_R + 7.5
        active = np.tile(act_cols, (Z_MM.size, 1))
        cols = []
        for r in range(Z_MM.size):
            pz = _box(Z, Y_EDGES[r], Y_EDGES[r + 1], SIGMA_MM)
            for c in np.nonzero(act_cols)[0]:
                px = _box(u, X_EDGES[c], X_EDGES[c + 1], SIGMA_MM)
                d = GY_PER_MU * px * pz * np.exp(-MU_PER_MM * depth)
                d[d < 1e-6] = 0.0
                cols.append(d)
        M = np.column_stack(cols)
        blocks.append(sp.csc_matrix(M.astype(np.float32)))
        grid = BeamletGrid(X_EDGES, Y_EDGES, active)
        sectors.append(ArcSector(float(g), grid, slice(start, start + grid.n_beamlets)))
        start += grid.n_beamlets
    return sp.hstack(blocks).tocsc(), sectors


class QuadraticObjective:
    """Quadratic penalties (total dose): target to Rx, OAR above its limit, body above 60 % Rx."""

    def __init__(self, labels):
        self.t = labels == 1
        self.o = labels == 2
        self.b = labels == 0

    def value_and_grad(self, d):
        g = np.zeros_like(d)
        r_t = d[self.t] - RX_GY
        r_o = np.clip(d[self.o] - OAR_LIMIT_GY, 0, None)
        r_b = np.clip(d[self.b] - 0.6 * RX_GY, 0, None)
        nt, no, nb = self.t.sum(), self.o.sum(), self.b.sum()
        val = (r_t @ r_t) / nt + 2.0 * (r_o @ r_o) / no + (r_b @ r_b) / nb
        g[self.t] = 2 * r_t / nt
        g[self.o] = 4.0 * r_o / no
        g[self.b] = 2 * r_b / nb
        return float(val), g


@pytest.fixture(scope="module")
def problem():
    X, Y, Z, labels = _phantom()
    width = 4.0
    gantries = np.arange(-178.0, 180.0, width)       # full arc, 90 sectors of 4 deg
    D, sectors = _matrix(X, Y, Z, gantries)
    return D, sectors, QuadraticObjective(labels), labels, width


def _fmo(D, obj):
    """Fluence-map optimum (x >= 0 only, no delivery limits) for the same objective.

    300 L-BFGS-B iterations: 0.3 % above the value after 3000 on this problem, so the
    reference is a hair high and the 15 % tolerance below is effectively 14.7 %.
    """
    A = (D * float(N_FX)).astype(np.float64).tocsr()
    At = A.T.tocsr()

    def fun(x):
        v, g = obj.value_and_grad(A @ x)
        return v, At @ g

    res = scipy.optimize.minimize(fun, np.ones(A.shape[1]), jac=True, method="L-BFGS-B",
                                  bounds=[(0, None)] * A.shape[1],
                                  options={"maxiter": 300, "ftol": 1e-12, "gtol": 1e-10})
    return float(res.fun), res.x


TRAVEL_MM = 25.0 * 4.0 / 6.0   # 25 mm/s leaves over a 4 deg sector at the 6 deg/s gantry limit


@pytest.fixture(scope="module")
def dao(problem):
    D, sectors, obj, labels, width = problem
    return vmat_dao(D, sectors, obj, n_fractions=N_FX, sector_width_deg=width,
                    max_leaf_travel_mm=TRAVEL_MM, max_iterations=40, apertures_per_iteration=4)


def test_dao_objective_close_to_fluence_optimum(problem, dao):
    D, sectors, obj, labels, width = problem
    f_fmo, _ = _fmo(D, obj)
    # One aperture per 4 deg over a full arc has nearly the freedom of free fluence
    # (Peng 2012 reports VMAT-DAO within a few % of FMO); 15 % is the brief's bound.
    assert dao.objective <= 1.15 * f_fmo + 1e-9, (dao.objective, f_fmo)
    # The refinement only accepts improving leaf moves and the master restarts from the current
    # weights, so from the fill step on the objective never rises.
    objs = [h["objective"] for h in dao.history if h["phase"] in ("fill", "refinement")]
    assert len(objs) >= 2
    assert all(b <= a * (1 + 1e-9) for a, b in zip(objs, objs[1:]))
    assert dao.objective == pytest.approx(objs[-1])
    # The column generation itself brings the objective down by more than an order of magnitude
    # from the first aperture set (it starts from a few open fields at minimum MU).
    cg = [h["objective"] for h in dao.history if h["phase"] == "column_generation"]
    assert cg[-1] < 0.1 * cg[0]


def test_dao_dose_is_clinically_sensible(problem, dao):
    D, sectors, obj, labels, width = problem
    d = dao.dose_gy
    t = d[labels == 1]
    # Quadratic target penalty around Rx: mean target dose within 3 % of Rx.
    assert abs(t.mean() - RX_GY) / RX_GY < 0.03
    # OAR 4 mm from the target with a 3 mm penumbra: mean dose well below the target's.
    assert d[labels == 2].mean() < 0.6 * RX_GY
    # Optimiser dose equals the dose of the equivalent beamlet weights (total = n_fx x per-fraction).
    np.testing.assert_allclose(N_FX * (D @ dao.x_beamlet), d, rtol=1e-5, atol=1e-6)


def test_dao_respects_delivery_limits(problem, dao):
    D, sectors, obj, labels, width = problem
    n = len(sectors)
    assert len(dao.left_mm) == n and dao.mu.shape == (n,)
    mu_per_deg = dao.mu / width
    assert np.all(mu_per_deg >= 0.5 - 1e-9) and np.all(mu_per_deg <= 10.0 + 1e-9)
    for s in range(n):
        assert np.all(dao.left_mm[s] <= dao.right_mm[s] + 1e-9)
        assert np.all(dao.left_mm[s] >= X_EDGES[0] - 1e-9) and np.all(dao.right_mm[s] <= X_EDGES[-1] + 1e-9)
    for s in range(n - 1):
        # Enforced, not just checked: leaf travel between adjacent control points within the limit.
        assert np.max(np.abs(dao.left_mm[s + 1] - dao.left_mm[s])) <= TRAVEL_MM + 1e-9
        assert np.max(np.abs(dao.right_mm[s + 1] - dao.right_mm[s])) <= TRAVEL_MM + 1e-9
    # Most sectors open something (a full arc around a central target).
    n_open = sum(bool(np.any(r > l + 1e-6)) for l, r in zip(dao.left_mm, dao.right_mm))
    assert n_open >= 0.9 * n


def test_price_aperture_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(30):
        g = rng.normal(size=(3, 9))
        aw = np.sort(rng.integers(0, 10, size=(3, 2)), axis=1)
        bw = np.sort(rng.integers(0, 10, size=(3, 2)), axis=1)
        left, right, cost = price_aperture(g, aw, bw)
        total = 0.0
        for r in range(3):
            best = np.inf
            for a in range(aw[r, 0], aw[r, 1] + 1):
                for b in range(max(a, bw[r, 0]), bw[r, 1] + 1):
                    best = min(best, g[r, a:b].sum())
            if np.isfinite(best):
                # the kernel's interval is admissible and optimal
                assert aw[r, 0] <= left[r] <= aw[r, 1] and bw[r, 0] <= right[r] <= bw[r, 1]
                assert left[r] <= right[r]
                assert g[r, left[r]:right[r]].sum() == pytest.approx(best, abs=1e-12)
                total += best
            else:
                total += g[r, left[r]:right[r]].sum()
        assert cost == pytest.approx(total, abs=1e-12)
        m = aperture_mask(left, right, 9)
        assert m.sum() == np.clip(right - left, 0, None).sum()


def test_aperture_fractions_partial_coverage_and_transmission():
    grid = BeamletGrid(np.arange(0.0, 25.1, 5.0), np.array([0.0, 5.0, 10.0, 15.0]), np.ones((3, 5), bool))
    t = 0.02
    left = np.array([2.5, 5.0, 15.0])
    right = np.array([12.5, 5.0, 20.0])     # row 1 closed
    f = aperture_fractions(grid, left, right, t).reshape(3, 5)
    # Jaws track the aperture: X from 2.5 to 20 mm, Y over rows 0-2.  Inside the jaws a beamlet
    # gets t x (jaw-covered fraction) + (1 - t) x (leaf-open fraction); outside nothing.
    jaw = np.array([0.5, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(f[0], t * jaw + (1 - t) * np.array([0.5, 1.0, 0.5, 0.0, 0.0]))
    np.testing.assert_allclose(f[1], t * jaw)
    np.testing.assert_allclose(f[2], t * jaw + (1 - t) * np.array([0.0, 0.0, 0.0, 1.0, 0.0]))
    # A fully closed aperture (jaws closed) delivers nothing.
    assert not aperture_fractions(grid, left, left, t).any()


def test_dao_rejects_bad_input(problem):
    D, sectors, obj, labels, width = problem
    with pytest.raises(InputError, match="mu_per_deg_range"):
        vmat_dao(D, sectors, obj, n_fractions=3, sector_width_deg=width, max_leaf_travel_mm=5.0,
                 mu_per_deg_range=(5.0, 1.0))
    with pytest.raises(InputError, match="sector 0"):
        bad = [ArcSector(sectors[0].gantry_deg, sectors[0].beamlet_grid, slice(0, 3))] + sectors[1:]
        vmat_dao(D, bad, obj, n_fractions=3, sector_width_deg=width, max_leaf_travel_mm=5.0)


def test_master_solver_matches_lbfgsb():
    """The spectral projected gradient master reaches the L-BFGS-B optimum of a bounded problem."""
    rng = np.random.default_rng(7)
    A = rng.random((200, 12))
    target = rng.random(200) * 5.0

    class LSQ:
        def value_and_grad(self, d):
            r = d - target
            return float(r @ r), 2.0 * r

    lb, ub = np.full(12, 0.1), np.full(12, 0.6)
    w, f = _solve_master(A, LSQ(), np.full(12, 0.1), lb, ub)
    ref = scipy.optimize.minimize(lambda z: LSQ().value_and_grad(A @ z)[0], np.full(12, 0.1),
                                  jac=lambda z: A.T @ LSQ().value_and_grad(A @ z)[1],
                                  method="L-BFGS-B", bounds=list(zip(lb, ub)),
                                  options={"ftol": 1e-14, "gtol": 1e-12, "maxiter": 2000})
    # Convex problem: same optimum value to 1e-6 relative (solver tolerances are 1e-8 / 1e-14).
    assert f == pytest.approx(ref.fun, rel=1e-6)
    assert np.all(w >= lb) and np.all(w <= ub)


def test_dao_with_optimizer_stages_honours_hard_limit():
    """Real prioritised stages: coverage first with an OAR maximum as a hard limit, then low dose.

    The column generation prices on the stages' summed penalty; the final weights come from the
    prioritised solve, whose hard OAR limit must hold exactly in the DAO dose.
    """
    from sbrtplan.optimizer import MaxDose, OptimizationStage, QuadOverdose, QuadUnderdose, VoxelRegion

    X, Y, Z, labels = _phantom()
    width = 8.0
    D, sectors = _matrix(X, Y, Z, np.arange(-176.0, 180.0, width))   # 45 sectors: keeps it fast

    def region(name, lab):
        rows = np.flatnonzero(labels == lab)
        return VoxelRegion(name, rows, np.ones(rows.size), volume_cc=rows.size * 2.5 ** 3 / 1000)

    ptv, cord, body = region("PTV", 1), region("SpinalCord", 2), region("Body", 0)
    oar_max = 16.0
    stages = [OptimizationStage("coverage", [(QuadUnderdose(ptv, RX_GY), 1.0), (QuadOverdose(ptv, 1.1 * RX_GY), 1.0)],
                                constraints=[MaxDose(cord, oar_max)]),
              OptimizationStage("low dose", [(QuadOverdose(body, 0.5 * RX_GY), 1.0)],
                                constraints=[MaxDose(cord, oar_max)])]   # hard limits hold per stage
    travel = 25.0 * width / 6.0
    res = vmat_dao(D, sectors, stages, n_fractions=N_FX, sector_width_deg=width,
                   max_leaf_travel_mm=travel, max_iterations=20, refine_passes=4)
    assert res.optimization is not None and not res.optimization.relaxed
    d = res.dose_gy
    # Hard limit of the prioritised master: 0.2 % of the limit is the optimiser's feasibility tolerance.
    assert d[cord.rows].max() <= oar_max * 1.002
    # Coverage stage: mean PTV dose within 5 % of Rx despite the OAR limit 4 mm away.
    assert abs(d[ptv.rows].mean() - RX_GY) < 0.05 * RX_GY
    mu_per_deg = res.mu / width
    assert np.all(mu_per_deg >= 0.5 - 1e-6) and np.all(mu_per_deg <= 10.0 + 1e-6)
    for s in range(len(sectors) - 1):
        assert np.max(np.abs(res.left_mm[s + 1] - res.left_mm[s])) <= travel + 1e-9
        assert np.max(np.abs(res.right_mm[s + 1] - res.right_mm[s])) <= travel + 1e-9
    np.testing.assert_allclose(N_FX * (D @ res.x_beamlet), d, rtol=1e-4, atol=1e-4)


def test_two_arcs_from_influence_layout():
    """Two arcs (CW then CCW over the same angles): travel limits hold inside each arc only."""
    from types import SimpleNamespace

    from sbrtplan.beams import BeamGeometry
    from sbrtplan.optimizer.dao import sectors_from_influence

    X, Y, Z, labels = _phantom()
    width = 12.0
    g = np.arange(-174.0, 180.0, width)                     # 30 control points per arc
    D1, s1 = _matrix(X, Y, Z, g)
    D2, s2 = _matrix(X, Y, Z, g[::-1])
    D = sp.hstack([D1, D2]).tocsc()
    grids = [s.beamlet_grid for s in s1 + s2]
    off = np.concatenate([[0], np.cumsum([gr.n_beamlets for gr in grids])])
    infl = SimpleNamespace(beamlet_grids=grids, beam_offsets=off,
                           geometries=[BeamGeometry(gantry_deg=float(a)) for a in np.concatenate([g, g[::-1]])])
    sectors = sectors_from_influence(infl, arc_of_beam=[0] * g.size + [1] * g.size)
    assert sectors[g.size].arc == 1 and sectors[g.size].columns.start == D1.shape[1]
    travel = 25.0 * width / 6.0
    res = vmat_dao(D, sectors, QuadraticObjective(labels), n_fractions=N_FX, sector_width_deg=width,
                   max_leaf_travel_mm=travel, max_iterations=12, refine_passes=3)
    for s in range(len(sectors) - 1):
        if sectors[s].arc != sectors[s + 1].arc:
            continue
        assert np.max(np.abs(res.left_mm[s + 1] - res.left_mm[s])) <= travel + 1e-9
        assert np.max(np.abs(res.right_mm[s + 1] - res.right_mm[s])) <= travel + 1e-9
    # Both arcs carry dose: each delivers at least a quarter of the total MU (symmetric geometry).
    mu_arc = [res.mu[:g.size].sum(), res.mu[g.size:].sum()]
    assert min(mu_arc) > 0.25 * sum(mu_arc)
    t = res.dose_gy[labels == 1]
    assert abs(t.mean() - RX_GY) < 0.05 * RX_GY
    with pytest.raises(InputError, match="arc_of_beam"):
        sectors_from_influence(infl, arc_of_beam=[0, 1])


def test_travel_windows_from_neighbours():
    from sbrtplan.optimizer.dao_pricing import travel_windows

    left1, right1 = np.array([2, 5]), np.array([6, 9])
    left2, right2 = np.array([4, 5]), np.array([8, 7])
    aw, bw = travel_windows([(left1, right1), (left2, right2)], travel_cols=2, n_cols=10)
    # Each leaf may sit within 2 columns of both neighbours: the intersection of the two ranges.
    np.testing.assert_array_equal(aw, [[2, 4], [3, 7]])
    np.testing.assert_array_equal(bw, [[6, 8], [7, 9]])
    # Clipped to the field: edges 0..n_cols.
    aw, bw = travel_windows([(np.array([0]), np.array([10]))], travel_cols=3, n_cols=10)
    np.testing.assert_array_equal(aw, [[0, 3]])
    np.testing.assert_array_equal(bw, [[7, 10]])
    # Neighbours further apart than twice the travel: the window collapses to their midpoint.
    aw, _ = travel_windows([(np.array([0]), np.array([1])), (np.array([8]), np.array([9]))],
                           travel_cols=1, n_cols=10)
    assert aw[0, 0] == aw[0, 1] == 4
    # The priced aperture then honours the windows.
    g = -np.ones((2, 10))
    left, right, _ = price_aperture(g, *travel_windows([(left1, right1)], 1, 10))
    assert np.all(np.abs(left - left1) <= 1) and np.all(np.abs(right - right1) <= 1)


def _delivered_dose(D, sectors, left, right, mu, m):
    """Dose of the arc as delivered: leaves move linearly between sector centres, each sector's MU
    spread evenly over m gantry samples (independent of the DAO's bookkeeping)."""
    Dt = (D * float(N_FX)).tocsc()
    dose = np.zeros(D.shape[0])
    n = len(sectors)
    for s, sec in enumerate(sectors):
        f = np.zeros(sec.beamlet_grid.n_beamlets)
        for j in range(m):
            u = (j + 0.5) / m - 0.5
            k = s - 1 if u < 0 else s + 1
            t = abs(u) if 0 <= k < n else 0.0
            k = min(max(k, 0), n - 1)
            f += aperture_fractions(sec.beamlet_grid, (1 - t) * left[s] + t * left[k],
                                    (1 - t) * right[s] + t * right[k], 0.015)
        dose += mu[s] * (Dt[:, sec.columns] @ (f / m))
    return dose


def test_dao_with_delivery_samples_optimises_the_delivered_dose(problem, dao):
    """With ``delivery_samples`` the DAO's dose is the dose delivered with leaves moving linearly
    between sector centres (to float32 rounding), and that delivered dose is at least as good for the
    objective as the delivery of a DAO that ignored the interpolation (whose own dose overstates it)."""
    D, sectors, obj, labels, width = problem
    m = 4
    blend = vmat_dao(D, sectors, obj, n_fractions=N_FX, sector_width_deg=width, max_leaf_travel_mm=TRAVEL_MM,
                     max_iterations=40, apertures_per_iteration=4, delivery_samples=m)
    deliv = _delivered_dose(D, sectors, blend.left_mm, blend.right_mm, blend.mu, m)
    np.testing.assert_allclose(blend.dose_gy, deliv, rtol=1e-4, atol=1e-4 * deliv.max())
    plain_delivered = _delivered_dose(D, sectors, dao.left_mm, dao.right_mm, dao.mu, m)
    f_plain_delivered, _ = obj.value_and_grad(plain_delivered)
    f_blend, _ = obj.value_and_grad(deliv)
    # the plain DAO's own dose is not what its arc delivers ...
    assert np.max(np.abs(plain_delivered - dao.dose_gy)) > 0.01 * RX_GY
    # ... and optimising the delivered dose does at least as well on it (5 % slack: two local searches)
    assert f_blend <= 1.05 * f_plain_delivered

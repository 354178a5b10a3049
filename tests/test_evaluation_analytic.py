"""Evaluators against analytic geometry and dose.

Spheres with sub-voxel occupancy (each boundary voxel supersampled 8^3) in a
radial dose ``D(r) = Rx exp(-(r - R_rx) / lambda)`` (capped at 140 % inside, away from the 100 % and 105 % isodoses), so
that every metric has a closed form:

* PIV = 4/3 pi R_rx^3, V50 = 4/3 pi r50^3 with r50 = R_rx + lambda ln 2;
* CI_RTOG = (R_rx / R)^3, Paddick = (R / R_rx)^3 (R_rx >= R), GI = (r50 / R_rx)^3,
  R50 = (r50 / R)^3, D2cm = 100 exp(-(R + 20 - R_rx) / lambda) % Rx;
* for a small OAR sphere (radius a, centre at L from the dose centre) the hottest
  x cc is the lens {|p| <= rho} of the OAR ball, so D_x = D(rho(x)).

Sphere centres are shifted by a fraction of a voxel so that nothing is aligned
with the grid.
"""

import numpy as np
import pytest
from scipy.optimize import brentq

from sbrtplan.case import Dose, Grid, Structure, StructureRole
from sbrtplan.evaluation import DVH, compute_dvh, d2cm_gy, isodose_volume_cc, plan_indices

RX = 30.0


def _sphere_occupancy(Z, Y, X, centre, radius, h, m=8):
    r = np.sqrt((Z - centre[2]) ** 2 + (Y - centre[1]) ** 2 + (X - centre[0]) ** 2)
    occ = (r <= radius).astype(np.float32)
    bnd = np.argwhere(np.abs(r - radius) < 0.9 * h)
    o = (np.arange(m) + 0.5) / m - 0.5
    oz, oy, ox = (q.ravel() * h for q in np.meshgrid(o, o, o, indexing="ij"))
    for chunk in np.array_split(bnd, max(1, len(bnd) // 4000)):
        t = tuple(chunk.T)
        zz = Z[t][:, None] + oz - centre[2]
        yy = Y[t][:, None] + oy - centre[1]
        xx = X[t][:, None] + ox - centre[0]
        occ[t] = ((zz ** 2 + yy ** 2 + xx ** 2) <= radius ** 2).mean(axis=1)
    return occ


def _radial_case(vol_cc, h, r50_ratio, d_rx_mm):
    """PTV sphere of ``vol_cc`` on an ``h`` mm grid; Rx isodose at R + d_rx_mm; V50 / V_PTV = r50_ratio."""
    R = (3 * vol_cc * 1000 / (4 * np.pi)) ** (1 / 3)
    R_rx = R + d_rx_mm
    r50 = R * r50_ratio ** (1 / 3)
    lam = (r50 - R_rx) / np.log(2)
    half = R + 30.0
    n = int(np.ceil(2 * half / h))
    g = Grid((n, n, n), (h, h, h), (-half, -half, -half))
    x, y, z = g.axis_coordinates_mm()
    c = np.array([0.31, 0.17, 0.43]) * h
    Z, Y, X = np.meshgrid(z - c[2], y - c[1], x - c[0], indexing="ij")
    r = np.sqrt(X ** 2 + Y ** 2 + Z ** 2)
    dose = Dose(g, RX * np.minimum(1.4, np.exp(-(r - R_rx) / lam)))
    occ = _sphere_occupancy(Z, Y, X, (0, 0, 0), R, h)
    ptv = Structure("PTV", g, occ >= 0.5, StructureRole.PTV, fraction=occ)
    return dose, ptv, dict(R=R, R_rx=R_rx, r50=r50, lam=lam)


@pytest.mark.parametrize("h", [1.0, 2.0])
@pytest.mark.parametrize("vol_cc", [10.0, 30.0, 100.0])
def test_conformity_indices_match_analytic(h, vol_cc):
    # Rx isodose 1.5 mm outside the PTV; R50 = 4.5 (a typical SBRT gradient: lambda 11-19 mm)
    dose, ptv, a = _radial_case(vol_cc, h, 4.5, 1.5)
    ix = plan_indices(dose, ptv, RX)
    R, R_rx, r50, lam = a["R"], a["R_rx"], a["r50"], a["lam"]
    # the PTV volume comes from the occupancy: exact to the supersampling (0.1 %)
    assert ix.ptv_cc == pytest.approx(vol_cc, rel=1e-3)
    # the requirement: CI, GI, R50 % and D2cm within 2 % of the analytic values
    # (measured: <= 0.6 % on 2 mm, <= 0.1 % on 1 mm)
    assert ix.ci_rtog == pytest.approx((R_rx / R) ** 3, rel=0.02)
    assert ix.ci_paddick == pytest.approx((R / R_rx) ** 3, rel=0.02)
    assert ix.gi == pytest.approx((r50 / R_rx) ** 3, rel=0.02)
    assert ix.r50 == pytest.approx((r50 / R) ** 3, rel=0.02)
    assert ix.d2cm_pct == pytest.approx(100 * np.exp(-(R + 20 - R_rx) / lam), rel=0.02)
    # the 105 % isodose lies at R_rx - lambda ln 1.05, 0.6-0.9 mm outside the PTV: a thin shell of
    # 10-20 % of the PTV volume; 5 % of that shell is ~0.1 mm of its thickness
    r105 = R_rx - lam * np.log(1.05)
    assert ix.v105_outside_pct == pytest.approx(100 * ((r105 / R) ** 3 - 1), rel=0.05)


def test_coincident_isodose_and_ptv_surfaces():
    # the Rx isodose exactly on the PTV surface: CI_RTOG = Paddick = 1 analytically
    dose, ptv, a = _radial_case(30.0, 2.0, 4.0, 0.0)
    ix = plan_indices(dose, ptv, RX)
    assert ix.ci_rtog == pytest.approx(1.0, rel=0.02)
    # TV_PIV loses what the planar sub-voxel model misplaces on both surfaces at once:
    # measured -1.2 % on 2 mm for 30 cc
    assert ix.ci_paddick == pytest.approx(1.0, rel=0.02)
    assert ix.r50 == pytest.approx(4.0, rel=0.02)


def test_d2cm_is_the_dose_twenty_mm_from_the_surface():
    dose, ptv, a = _radial_case(30.0, 2.0, 4.5, 1.5)
    for dist in (10.0, 20.0, 25.0):
        res = d2cm_gy(dose, ptv, distance_mm=dist)
        expected = RX * np.exp(-(a["R"] + dist - a["R_rx"]) / a["lam"])
        assert res.max_dose_gy == pytest.approx(expected, rel=0.01)   # 1 %: distances good to ~0.1 mm
    # restricted to a body that ends 18 mm from the PTV surface: no voxel qualifies
    g = dose.grid
    body = Structure("External", g, np.zeros(g.shape, bool), StructureRole.EXTERNAL)
    x, y, z = g.axis_coordinates_mm()
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    body.mask = np.sqrt(X ** 2 + Y ** 2 + Z ** 2) <= a["R"] + 18.0
    assert d2cm_gy(dose, ptv, body).n_voxels_region == 0


def test_isodose_volume_subvoxel():
    dose, ptv, a = _radial_case(10.0, 2.0, 4.5, 1.5)
    for level, radius in ((1.0, a["R_rx"]), (0.5, a["r50"])):
        v = isodose_volume_cc(dose, level * RX)
        assert v == pytest.approx(4 / 3 * np.pi * radius ** 3 / 1000, rel=0.01)


def _lens_cc(rho, a, L):
    """Volume (cc) of {|p| <= rho} inside the ball of radius a centred at distance L."""
    if rho + a <= L:
        return 0.0
    if rho >= L + a:
        return 4 / 3 * np.pi * a ** 3 / 1000
    return np.pi * (rho + a - L) ** 2 * (L ** 2 + 2 * L * a - 3 * a ** 2 + 2 * L * rho + 6 * a * rho
                                         - 3 * rho ** 2) / (12 * L) / 1000


def _oar_case(h, a, gap, lam, R_rx=15.0):
    L = R_rx + gap + a
    half = L + a + 6
    n = int(np.ceil(2 * half / h))
    g = Grid((n, n, n), (h, h, h), (-half, -half, -half))
    x, y, z = g.axis_coordinates_mm()
    sh = np.array([0.21, 0.37, 0.13]) * h
    Z, Y, X = np.meshgrid(z - sh[2], y - sh[1], x - sh[0], indexing="ij")
    r = np.sqrt(X ** 2 + Y ** 2 + Z ** 2)
    dose = Dose(g, RX * np.exp(-(r - R_rx) / lam))
    c = np.full(3, L / np.sqrt(3))
    occ = _sphere_occupancy(Z, Y, X, c, a, h)
    oar = Structure("SpinalCord", g, occ >= 0.5, StructureRole.OAR, fraction=occ)

    def analytic(x_cc):
        rho = brentq(lambda q: _lens_cc(q, a, L) - x_cc, L - a + 1e-9, L + a)
        return RX * np.exp(-(rho - R_rx) / lam)
    return dose, oar, analytic


@pytest.mark.parametrize("h", [1.0, 2.0])
@pytest.mark.parametrize("a, gap, lam", [(6.0, 5.0, 8.0), (4.0, 3.0, 6.0)])
def test_small_volume_metrics_match_analytic(h, a, gap, lam):
    # a 0.27-0.9 cc sphere 3-5 mm from the Rx isodose in a 12-17 %/mm gradient
    dose, oar, analytic = _oar_case(h, a, gap, lam)
    dvh = compute_dvh(dose, oar)
    assert dvh.volume_cc == pytest.approx(4 / 3 * np.pi * a ** 3 / 1000, rel=2e-3)
    for x in (0.035, 0.1):
        # the requirement: within 1 % (measured <= 0.7 %, worst for a = 4 mm on 2 mm voxels)
        assert dvh.d_cc(x) == pytest.approx(analytic(x), rel=0.01)
    # the same structure inside a large one (TAIL refinement) gives the same small-volume doses
    tail = compute_dvh(dose, oar, refinement="tail")
    assert tail.d_cc(0.035) == pytest.approx(dvh.d_cc(0.035), rel=1e-6)
    # voxel centres alone miss by several % on 2 mm voxels: the refinement matters
    if h == 2.0:
        coarse = compute_dvh(dose, oar, refinement="none")
        assert abs(coarse.d_cc(0.035) / analytic(0.035) - 1) > 0.01


def test_dvh_conventions_on_a_uniform_gradient():
    # dose = x (Gy) along a 10 x 10 x 10 box of 1 mm voxels: each x-slab holds 0.1 cc
    g = Grid((10, 10, 10), (1.0, 1.0, 1.0))
    x = np.broadcast_to(np.arange(10, dtype=np.float32), g.shape)
    box = Structure("Box", g, np.ones(g.shape, bool), StructureRole.OAR)
    dvh = compute_dvh(Dose(g, x), box, refinement="none")
    assert dvh.volume_cc == pytest.approx(1.0) and dvh.mean_gy == pytest.approx(4.5)
    assert dvh.max_gy == 9.0 and dvh.min_gy == 0.0
    # V(t) at sample doses: volume of voxels with dose >= t
    assert dvh.v_gy_cc(9.0) == pytest.approx(0.1) and dvh.v_gy_cc(5.0) == pytest.approx(0.5)
    # the hottest 0.15 cc includes 0.05 cc of 8 Gy voxels: D0.15cc = 8 Gy; D0.1cc = 9 Gy
    assert dvh.d_cc(0.15) == pytest.approx(8.0) and dvh.d_cc(0.1) == pytest.approx(9.0)
    # linear interpolation within the voxel that completes x: the curve runs from (9 Gy, 0.100 cc) to
    # (8 Gy, 0.101 cc) across the first 8 Gy voxel, so V8.5Gy = 0.1005 cc and D0.1005cc = 8.5 Gy
    assert dvh.v_gy_cc(8.5) == pytest.approx(0.1005) and dvh.d_cc(0.1005) == pytest.approx(8.5)
    assert dvh.d_pct(50) == pytest.approx(5.0) and dvh.v_gy_pct(5.0) == pytest.approx(50.0)
    assert dvh.spared_cc(3.0) == pytest.approx(0.3)     # voxels below 3 Gy: x = 0, 1, 2
    # refinement keeps volume and mean of a linear field
    full = compute_dvh(Dose(g, x), box, refinement="full")
    assert full.volume_cc == pytest.approx(1.0) and full.v_gy_cc(4.5) == pytest.approx(0.5, abs=0.02)
    assert isinstance(dvh, DVH)

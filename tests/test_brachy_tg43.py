"""TG-43U1 seed dose engine against the consensus tables (Rivard et al., Med. Phys. 31, 633 (2004)).

Expected values are built in the tests from the published numbers and the geometry written out by
hand (beta as the angle between the vectors to the two ends of the active line), never from the
engine's interpolation code.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sbrtplan.brachy import SeedSet, Tg43Model, load_source
from sbrtplan.errors import InputError

# The TG-43U1 6711 consensus numbers, typed in from the report (independent of the shipped file).
LAMBDA_6711 = 0.965
L_6711 = 0.30
PHI_AN_6711 = {0.5: 0.973, 1.0: 0.944, 2.0: 0.941, 3.0: 0.942, 4.0: 0.943, 5.0: 0.944}


def _g_line(r_cm: float, theta_deg: float, length_cm: float) -> float:
    """beta / (L r sin theta) with beta from the two end vectors (1/(r^2 - L^2/4) on the axis)."""
    th = math.radians(theta_deg)
    p = np.array([r_cm * math.sin(th), r_cm * math.cos(th)])
    if abs(math.sin(th)) < 1e-12:
        return 1.0 / (r_cm ** 2 - length_cm ** 2 / 4)
    a = p - np.array([0.0, length_cm / 2])
    b = p - np.array([0.0, -length_cm / 2])
    beta = math.acos(float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return beta / (length_cm * r_cm * math.sin(th))


def _rate(model, r_cm, theta_deg, sk=1.0, exact=True):
    th = math.radians(theta_deg)
    pt = [[10 * r_cm * math.sin(th), 0.0, 10 * r_cm * math.cos(th)]]
    return float(model.dose_rate_cgy_h(pt, SeedSet([[0, 0, 0]], [0, 0, 1], sk), exact=exact)[0])


@pytest.mark.parametrize("sk", [0.4, 1.0, 2.5])
def test_6711_reference_point_is_sk_times_lambda(sk):
    # D(r0, theta0) = S_K * Lambda by definition of Lambda: 0.1 % (the tolerance)
    m = Tg43Model(load_source("6711"))
    assert _rate(m, 1.0, 90.0, sk) == pytest.approx(sk * LAMBDA_6711, rel=1e-3)


@pytest.mark.parametrize("model", ["6711", "2301", "200"])
def test_radial_dose_function_reproduced_at_table_points(model):
    src = load_source(model)
    m = Tg43Model(src)
    L = src.active_length_cm
    g0 = _g_line(1.0, 90.0, L)
    for r, g in zip(src.g_r_cm, src.g_l):
        got = _rate(m, r, 90.0) / src.dose_rate_constant * g0 / _g_line(r, 90.0, L)
        assert got == pytest.approx(g, rel=0.01), f"{model}: g_L({r} cm)"  # 1 %: the tolerance


def test_6711_g_l_literal_table_values():
    # spot checks against the printed TG-43U1 6711 table (guards the shipped file itself)
    src = load_source("6711")
    table = dict(zip(src.g_r_cm.round(3), src.g_l))
    assert (table[0.1], table[0.5], table[2.0], table[5.0], table[10.0]) == (1.055, 1.071, 0.814, 0.364, 0.0803)
    assert src.dose_rate_constant == LAMBDA_6711 and src.active_length_cm == L_6711


@pytest.mark.parametrize("model", ["6711", "2301", "200"])
def test_anisotropy_function_reproduced_at_table_points(model):
    src = load_source(model)
    m = Tg43Model(src)
    L = src.active_length_cm
    g0 = _g_line(1.0, 90.0, L)
    g_at = dict(zip(np.round(src.g_r_cm, 4), src.g_l))
    n = 0
    for i, r in enumerate(src.f_r_cm):
        if round(r, 4) not in g_at:
            continue  # g_L not tabulated at this radius: not an independent expectation
        for j, th in enumerate(src.f_theta_deg):
            if th < 1.0 and r * 10 < 2.5:
                continue  # on the axis inside 2.5 mm the point lies within the capsule end weld
            expected = src.dose_rate_constant * _g_line(r, th, L) / g0 * g_at[round(r, 4)] * src.f_table[i, j]
            assert _rate(m, r, th) == pytest.approx(expected, rel=0.01), f"{model}: F({r} cm, {th} deg)"
            n += 1
    assert n >= 30


def test_interpolation_is_log_linear_and_smooth():
    src = load_source("6711")
    m = Tg43Model(src)
    L = src.active_length_cm
    g0 = _g_line(1.0, 90.0, L)

    def g_of(r):
        return _rate(m, r, 90.0) / LAMBDA_6711 * g0 / _g_line(r, 90.0, L)

    # log-linear between 2 and 3 cm: the midpoint is the geometric mean of the neighbours (0.1 %)
    assert g_of(2.5) == pytest.approx(math.sqrt(0.814 * 0.632), rel=1e-3)
    # beyond 10 cm: log-linear extrapolation of the last two points
    assert g_of(11.0) == pytest.approx(0.0803 * (0.0803 / 0.109), rel=1e-3)
    # continuous: D r^2 along the transverse axis changes by < 2 % per 0.5 mm step from 5 mm to 10 cm
    # (the steepest table segment, 9-10 cm, falls by ln(0.109/0.0803) = 0.31 per cm, 1.5 % per step;
    # a jump at a node would exceed it)
    r = np.arange(0.5, 10.0, 0.05)
    v = np.array([_rate(m, x, 90.0) for x in r]) * r ** 2
    assert np.max(np.abs(np.diff(np.log(v)))) < 0.02
    # F between tabulated angles lies between its neighbours (no overshoot of the bilinear scheme)
    f = np.array([_rate(m, 2.0, t) / (LAMBDA_6711 * 0.814 * _g_line(2.0, t, L) / g0) for t in (22.0, 25.0, 28.0)])
    assert np.all((f > 0.727 - 1e-3) & (f < 0.842 + 1e-3)) and np.all(np.diff(f) > 0)


@pytest.mark.parametrize("r_cm", [2.0, 3.0, 4.0, 5.0, 7.0])
def test_point_and_line_source_agree_beyond_2cm(r_cm):
    # The 1D formalism gives the solid-angle average of the 2D dose at r: compare the point-source dose
    # with the 2D line-source dose averaged over a sphere of radius r (numerical quadrature here), 2 %.
    src = load_source("6711")
    line, point = Tg43Model(src, "line"), Tg43Model(src, "point")
    th = np.linspace(0.0, 180.0, 721)
    w = np.sin(np.radians(th))
    pts = np.column_stack([10 * r_cm * np.sin(np.radians(th)), np.zeros_like(th), 10 * r_cm * np.cos(np.radians(th))])
    d2 = line.dose_rate_cgy_h(pts, SeedSet([[0, 0, 0]], [0, 0, 1], 1.0))
    avg = np.trapezoid(d2 * w, th) / np.trapezoid(w, th) if hasattr(np, "trapezoid") else np.trapz(d2 * w, th) / 2
    assert _rate(point, r_cm, 90.0) == pytest.approx(avg, rel=0.02)


def test_derived_phi_an_matches_published_6711():
    # phi_an derived from the published F(r, theta) reproduces the published phi_an(r) (1 %):
    # an independent consistency check of the shipped F table
    from sbrtplan.brachy import derive_phi_an

    src = load_source("6711")
    phi = derive_phi_an(src.f_r_cm, src.f_theta_deg, src.f_table, src.active_length_cm)
    for r, p in zip(src.f_r_cm, phi):
        assert p == pytest.approx(PHI_AN_6711[float(r)], rel=0.01)


def test_single_seed_3d_dose_against_along_away_values():
    # a seed at an arbitrary position and orientation; points placed at (away, along) offsets in the seed's
    # own frame where r and theta are table nodes; expected dose from the table numbers (2 %)
    src = load_source("6711")
    m = Tg43Model(src)
    centre = np.array([12.3, -7.1, 30.4])
    axis = np.array([0.3, -0.5, 0.81])
    axis /= np.linalg.norm(axis)
    e1 = np.cross(axis, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    g = dict(zip(np.round(src.g_r_cm, 3), src.g_l))
    g0 = _g_line(1.0, 90.0, L_6711)
    pts, expected = [], []
    for i, r in enumerate(src.f_r_cm):
        for j, th in enumerate(src.f_theta_deg):
            if th not in (0.0, 20.0, 40.0, 60.0, 90.0):
                continue
            along, away = r * math.cos(math.radians(th)), r * math.sin(math.radians(th))
            for sign in (1, -1):  # both sides of the transverse plane
                pts.append(centre + 10 * (sign * along * axis + away * e1))
                expected.append(LAMBDA_6711 * _g_line(r, th, L_6711) / g0 * g[round(r, 3)] * src.f_table[i, j])
    seeds = SeedSet([centre], axis, 1.0)
    tau_h = 59.4 * 24 / math.log(2)
    exp_gy = np.array(expected) * tau_h / 100.0
    for exact in (True, False):  # exact evaluation and the lookup table used for dose grids
        got = m.total_dose_gy(np.array(pts), seeds, exact=exact)
        np.testing.assert_allclose(got, exp_gy, rtol=0.02)


def test_total_dose_is_rate_times_mean_life():
    # I-125 tau = 59.4 d * 24 / ln 2 = 2056.8 h; Pd-103 tau = 17.0 d * 24 / ln 2 = 588.6 h
    for model, tau_h in (("6711", 2056.8), ("200", 588.6)):
        m = Tg43Model(load_source(model))
        s = SeedSet([[0, 0, 0]], [0, 0, 1], 1.0)
        rate = float(m.dose_rate_cgy_h([[10.0, 0, 0]], s)[0])
        assert float(m.total_dose_gy([[10.0, 0, 0]], s)[0]) == pytest.approx(rate * tau_h / 100.0, rel=1e-4)


def test_lookup_table_agrees_with_exact_evaluation():
    # the grid path (bilinear table of D r^2, 0.25 mm) is within 0.5 % of the exact evaluation beyond 2 mm
    m = Tg43Model(load_source("6711"))
    rng = np.random.default_rng(3)
    seeds = SeedSet(rng.uniform(-15, 15, (20, 3)), rng.normal(size=(20, 3)), 0.5)
    pts = rng.uniform(-40, 40, (4000, 3))
    dmin = np.min(np.linalg.norm(pts[:, None, :] - seeds.positions_mm[None], axis=2), axis=1)
    pts = pts[dmin > 2.0]
    np.testing.assert_allclose(m.total_dose_gy(pts, seeds, exact=False), m.total_dose_gy(pts, seeds), rtol=5e-3)


def test_dose_grid_matches_points():
    from sbrtplan.case import Grid

    m = Tg43Model(load_source("200"))
    grid = Grid((6, 7, 8), (2.0, 2.0, 2.0), (-7.0, -6.0, -5.0))
    seeds = SeedSet([[0.3, 0.2, 0.1], [5.0, -3.0, 2.0]], [0, 0, 1], 1.2)
    d = m.dose_grid_gy(grid, seeds)
    np.testing.assert_allclose(d.ravel(), m.total_dose_gy(grid.voxel_centers_mm(), seeds, exact=False))


def _write_source(tmp_path, **changes):
    obj = json.loads(open(_shipped_path("source_oncoseed_6711.json")).read())
    for k, v in changes.items():
        if v is None:
            obj.pop(k, None)
        else:
            obj[k] = v
    p = tmp_path / "src.json"
    p.write_text(json.dumps(obj))
    return p


def _shipped_path(name):
    from importlib import resources

    return str(resources.files("sbrtplan.brachy").joinpath("data", name))


def test_source_file_with_missing_table_is_a_one_line_error(tmp_path):
    p = _write_source(tmp_path, anisotropy_function=None)
    with pytest.raises(InputError, match="missing table 'anisotropy_function'") as e:
        load_source(p)
    assert "\n" not in str(e.value)
    p = _write_source(tmp_path, radial_dose_function={"r_cm": [0.5, 1.0, 2.0], "g_l": [1.0, 1.0]})
    with pytest.raises(InputError, match="3 radii but 2 values"):
        load_source(p)
    p = _write_source(tmp_path, half_life_days=17.0)
    with pytest.raises(InputError, match="not that of I-125"):
        load_source(p)
    # a file without phi_an is accepted: phi_an is derived from F
    assert load_source(_write_source(tmp_path, anisotropy_factor=None)).phi_an_derived


def test_negative_strength_is_an_error():
    with pytest.raises(InputError, match="air-kerma strength must be >= 0 U") as e:
        SeedSet([[0, 0, 0]], [0, 0, 1], -0.4)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="finite"):
        SeedSet([[0, np.nan, 0]], [0, 0, 1], 0.4)

"""3D gamma index: analytic cases where the exact gamma is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbrtplan.errors import InputError
from sbrtplan.evaluation import gamma_index, gamma_pass_rate

SPACING = (2.0, 2.0, 2.0)  # mm, (x, y, z): a typical dose grid, coarser than the 1 mm DTA


def _profile_x(fn, shape=(5, 5, 60), spacing_mm=2.0):
    """A dose that varies along x only: fn(x_mm) broadcast over z and y."""
    x = np.arange(shape[2]) * spacing_mm
    return np.broadcast_to(fn(x), shape).copy(), x


def _ramp(x, x0, width_mm, d_max=10.0):
    """0 below x0, d_max above x0 + width, linear in between."""
    return d_max * np.clip((x - x0) / width_mm, 0.0, 1.0)


def test_identical_doses_give_zero():
    rng = np.random.default_rng(3)
    d = 5.0 + rng.random((6, 7, 8))
    g = gamma_index(d, d.copy(), SPACING)
    # every voxel is above the 10 % cut-off (d >= 5 of max <= 6); zero offset matches exactly
    assert np.all(np.isfinite(g))
    assert np.max(g) == 0.0
    assert gamma_pass_rate(g) == 100.0


def test_uniform_scale_gives_gamma_equal_to_dose_difference():
    # uniform field: no dose gradient, so no spatial shift helps; a 1 % (of max) scale is gamma 1 exactly,
    # 2 % is gamma 2 (the search radius), 0.5 % is 0.5
    d = np.full((5, 6, 7), 8.0)
    for pct in (0.5, 1.0, 1.5):
        g = gamma_index(d, d * (1 + pct / 100), SPACING, dose_percent=1.0, dta_mm=1.0)
        assert np.allclose(g, pct, atol=1e-9)
    # with a 2 % criterion the same 1 % difference is gamma 0.5
    g = gamma_index(d, d * 1.01, SPACING, dose_percent=2.0, dta_mm=1.0)
    assert np.allclose(g, 0.5, atol=1e-9)
    # beyond the search radius (max_gamma DTA) gamma is reported as max_gamma
    g = gamma_index(d, d * 1.05, SPACING, dose_percent=1.0, dta_mm=1.0, max_gamma=2.0)
    assert np.allclose(g, 2.0)


def test_cutoff_and_mask_leave_voxels_out():
    d, x = _profile_x(lambda x: _ramp(x, 20.0, 60.0))
    g = gamma_index(d, d, SPACING, cutoff_percent=10.0)
    # below 10 % of the 10 Gy maximum (x < 26 mm) nothing is evaluated
    assert np.all(np.isnan(g[..., x < 26.0 - 1e-9]))
    assert np.all(np.isfinite(g[..., x >= 26.0 + 1e-9]))
    m = np.zeros(d.shape, bool)
    m[2, 2, 40] = True
    g = gamma_index(d, d, SPACING, mask=m)
    assert np.count_nonzero(np.isfinite(g)) == 1
    assert gamma_pass_rate(g) == 100.0


def test_1mm_shift_of_smooth_profile_passes():
    # A shift by exactly the DTA: at distance 1 mm along x the doses agree, and for a local gradient G (dose
    # criterion per DTA) the minimum along that line is G^2 / (1 + G^2) < 1.  The Gaussian (sigma 25 mm,
    # 10 Gy) has G <= 10 / 25 * exp(-1/2) / 0.1 = 2.43, so gamma <= 0.925; the 0.1 mm lattice and the
    # curvature (interpolation error < 0.1 % on a 2 mm grid) add < 0.02.
    f = lambda x: 10.0 * np.exp(-0.5 * ((x - 60.0) / 25.0) ** 2)  # noqa: E731
    ref, _ = _profile_x(f)
    ev, _ = _profile_x(lambda x: f(x - 1.0))
    g = gamma_index(ref, ev, SPACING, dose_percent=1.0, dta_mm=1.0)
    inner = g[:, :, 2:-2]  # the shift pushes the match off the grid at the first and last voxels
    G = 10.0 / 25.0 * math.exp(-0.5) / 0.1
    assert np.nanmax(inner) <= G / math.sqrt(1 + G * G) + 0.02
    assert gamma_pass_rate(g[:, :, 2:-2]) == 100.0
    # without a spatial search (a pure dose comparison) the same shift fails where the gradient exceeds 1 %/mm
    assert np.nanmax(np.abs(ev - ref)[ref > 1.0]) / 10.0 * 100 > 1.5


def test_half_mm_shift_of_steep_ramp_is_resolved_below_the_grid_spacing():
    # Linear ramp 0 -> 10 Gy over 8 mm (12.5 %/mm), shifted 0.5 mm: the exact gamma inside the ramp is
    # 0.5 G / sqrt(1 + G^2) with G = 12.5 -> 0.498.  Trilinear interpolation is exact on a linear ramp;
    # the 0.1 mm search lattice can miss the optimum by <= 0.05 mm along x: gamma within 0.01.
    ref, x = _profile_x(lambda x: _ramp(x, 50.0, 8.0))
    ev, _ = _profile_x(lambda x: _ramp(x, 50.5, 8.0))
    g = gamma_index(ref, ev, SPACING, dose_percent=1.0, dta_mm=1.0)
    inner = (x > 50.0 + 1.5) & (x < 58.0 - 1.5)
    G = 12.5
    assert np.allclose(g[..., inner], 0.5 * G / math.sqrt(1 + G * G), atol=0.01)


def test_1p5mm_shift_of_sharp_edge_fails():
    # Edge 0 -> 10 Gy over 4 mm (25 %/mm, steeper than a 6 MV penumbra), shifted 1.5 mm: exact gamma in
    # the edge is 1.5 G / sqrt(1 + G^2) = 1.499 with 1 %/1 mm -> fails; with 3 %/3 mm it passes (0.49).
    ref, x = _profile_x(lambda x: _ramp(x, 50.0, 4.0))
    ev, _ = _profile_x(lambda x: _ramp(x, 51.5, 4.0))
    g = gamma_index(ref, ev, SPACING, dose_percent=1.0, dta_mm=1.0)
    edge = (ref[0, 0] > 1.0) & (ref[0, 0] < 9.0)
    assert edge.sum() >= 1
    assert np.all(g[..., edge] > 1.3)
    assert gamma_pass_rate(g[..., edge]) == 0.0
    g3 = gamma_index(ref, ev, SPACING, dose_percent=3.0, dta_mm=3.0)
    assert np.all(g3[..., edge] < 0.6)


def test_local_gamma_is_stricter_in_low_dose():
    # a 2 % (of max) difference at 20 % dose is 10 % locally: global 1 %/1 mm -> 2 (capped), local 10 %/1 mm -> 1
    d = np.full((4, 4, 4), 2.0)
    d[0, 0, 0] = 10.0  # the global maximum, far from the test voxel
    ev = d + 0.2
    g_glob = gamma_index(d, ev, SPACING, dose_percent=1.0, dta_mm=1.0, max_gamma=3.0)
    g_loc = gamma_index(d, ev, SPACING, dose_percent=10.0, dta_mm=1.0, global_normalisation=False)
    assert g_glob[3, 3, 3] == pytest.approx(2.0, abs=1e-9)
    assert g_loc[3, 3, 3] == pytest.approx(1.0, abs=1e-9)


def test_anisotropic_spacing_uses_mm():
    # a 1 mm shift along z on a 3 mm slice spacing: the search works in mm, not voxels
    z = np.arange(20) * 3.0
    ref = np.broadcast_to(_ramp(z, 25.0, 9.0)[:, None, None], (20, 4, 4)).copy()
    ev = np.broadcast_to(_ramp(z, 26.0, 9.0)[:, None, None], (20, 4, 4)).copy()
    g = gamma_index(ref, ev, (1.0, 1.0, 3.0), dose_percent=1.0, dta_mm=2.0)
    # 1 mm shift with 2 mm DTA on a 11 %/mm ramp: gamma = 0.5 G' / sqrt(1 + G'^2), G' = 22.2 per DTA
    inner = (z > 28.0) & (z < 31.0)
    Gp = 100.0 / 9.0 * 2.0
    assert np.allclose(g[inner], 0.5 * Gp / math.sqrt(1 + Gp * Gp), atol=0.01)


def test_bad_input_is_rejected():
    d = np.ones((3, 3, 3))
    with pytest.raises(InputError, match="same grid"):
        gamma_index(d, np.ones((3, 3, 4)), SPACING)
    with pytest.raises(InputError, match="spacing_mm"):
        gamma_index(d, d, (1.0, -1.0, 1.0))
    with pytest.raises(InputError, match="max_gamma"):
        gamma_index(d, d, SPACING, max_gamma=0.5)
    with pytest.raises(InputError, match="finite"):
        gamma_index(d, d * np.nan, SPACING)
    with pytest.raises(InputError, match="normalisation"):
        gamma_index(np.zeros((3, 3, 3)), d, SPACING)

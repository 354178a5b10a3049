"""Influence matrix and forward dose: consistency, water physics, cut-off bound, heterogeneity.

All cases use small water (or water/lung) boxes at 3 mm so the suite stays fast;
beam geometry is IEC 61217 with a head-first supine patient, so a gantry-0
beam travels along +y (anterior -> posterior).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, BeamGeometry, BeamletGrid, BeamSet, ControlPoint, MLCModel
from sbrtplan.case import Grid
from sbrtplan.dose_engine import (Correction, central_axis_gy_per_mu, dropped_fraction, fluence_dose, forward_dose,
                                  influence_matrix)
from sbrtplan.errors import GeometryError, InputError

H = 3.0          # voxel size (mm)
N = 50           # 150 mm water cube
SURFACE_Y = -75.0


@pytest.fixture(scope="module")
def water():
    grid = Grid((N, N, N), (H, H, H), (-75 + H / 2,) * 3)
    return grid, np.ones(grid.shape, np.float32)


def square_beamlets(half_mm: float, size_mm: float = 5.0) -> BeamletGrid:
    e = np.arange(-half_mm, half_mm + 1e-9, size_mm)
    return BeamletGrid(e, e, np.ones((e.size - 1, e.size - 1), bool))


def static_beam(geom: BeamGeometry, mlc: MLCModel, ap: Aperture, mu: float) -> Beam:
    return Beam("B", [ControlPoint(geom.gantry_deg, ap, 1.0)], mu, mlc, geom.isocenter_mm,
                collimator_deg=geom.collimator_deg, couch_deg=geom.couch_deg)


def test_matrix_equals_forward_dose_of_the_same_aperture(water, model):
    """A beam whose MLC opens exactly the beamlets with weight w gives D @ w (<= 2 % of max).

    Two beams, one oblique with collimator and couch rotation; irregular weights
    (an L-shaped opening, 1 MU per open beamlet) and zero leaf transmission so the
    comparison isolates the cut-off and the beamlet discretisation.  The 2 %
    limit is the brief's; the cut-off drops only far-tail scatter (module docstring).
    """
    grid, dens = water
    mlc = MLCModel.uniform(5.0, 60, transmission=0.0)
    geoms = [BeamGeometry(0.0), BeamGeometry(50.0, collimator_deg=15.0, couch_deg=20.0)]
    bg = square_beamlets(15.0)            # 6 x 6 beamlets of 5 mm
    fmap = np.zeros(bg.shape)
    fmap[:, :3] = 1.0                     # left half open over all rows
    fmap[3:, 3:] = 1.0                    # plus the upper-right quadrant -> L shape
    D = influence_matrix(dens, grid, geoms, [bg, bg], model=model)
    assert D.matrix.format == "csc" and D.matrix.dtype == np.float32 and D.matrix.indices.dtype == np.int32
    assert list(D.beam_offsets) == [0, 36, 72]
    w = np.concatenate([bg.from_map(fmap)] * 2)
    dm = D.dose_on_grid(w)
    # the same opening as leaf positions: rows are leaf pairs of 5 mm, jaws on the field
    yb = mlc.leaf_boundaries_mm
    yc = 0.5 * (yb[1:] + yb[:-1])
    x1 = np.zeros(mlc.n_pairs)
    x2 = np.zeros(mlc.n_pairs)
    for r in range(6):
        k = int(np.argmin(np.abs(yc - (-12.5 + 5 * r))))
        x1[k], x2[k] = -15.0, (0.0 if r < 3 else 15.0)
    ap = Aperture(x1, x2, (-15.0, 15.0), (-15.0, 15.0))
    beams = [static_beam(g, mlc, ap.copy(), 1.0) for g in geoms]
    df = forward_dose(dens, grid, BeamSet(beams, n_fractions=1, prescription_gy=1.0), model=model)
    assert np.max(np.abs(dm - df)) <= 0.02 * df.max()
    # and the per-fraction dose without any matrix (no cut-off) agrees to < 1 % (same pencil, same grid)
    dfl = sum(fluence_dose(dens, grid, g, bg, fmap, model=model) for g in geoms)
    assert np.max(np.abs(dfl - df)) <= 0.01 * df.max()


def test_central_axis_matches_closed_form_water_dose(water, model):
    """Voxelised water + ray tracing reproduces the closed-form water dose of the model.

    3 x 3 cm field, isocentre at 75 mm depth (SSD 925 mm).  The ray-traced
    depth, inverse square and aperture integration are a separate code path
    from :func:`central_axis_gy_per_mu`; agreement within 1 % beyond 5 mm depth
    (voxel centres are compared at their exact depth, so only interpolation of
    the fan table differs).
    """
    grid, dens = water
    mlc = MLCModel.uniform(5.0, 60, transmission=0.0)
    ap = Aperture.rectangle(mlc, (-15.0, 15.0), (-15.0, 15.0))
    geom = BeamGeometry(0.0)
    d = forward_dose(dens, grid, BeamSet([static_beam(geom, mlc, ap, 100.0)], 1, 1.0), model=model)
    # central axis: x = z = 0 lies on a voxel face; average the four voxels around it
    j = np.arange(N)
    y = -75 + H / 2 + H * j
    cax = d[N // 2 - 1:N // 2 + 1, :, N // 2 - 1:N // 2 + 1].mean(axis=(0, 2))
    depth = y - SURFACE_Y
    ref = 100.0 * central_axis_gy_per_mu(model, 30.0, 1000.0 - 75.0, depth)
    # the 4-voxel average sits 1.5 mm off axis in x and z: correct with the closed form there
    ref_off = 100.0 * np.array([_water_at(model, dd, 1.5, 1.5) for dd in depth])
    sel = depth > 5.0
    assert np.max(np.abs(cax[sel] / ref_off[sel] - 1.0)) < 0.01
    # sanity of the reference itself: dose maximum of a 6 MV beam at 12-18 mm
    fine = np.arange(0, 60, 0.5)
    dmax = fine[np.argmax(central_axis_gy_per_mu(model, 30.0, 925.0, fine))]
    assert 12.0 <= dmax <= 18.0
    assert ref[sel].max() > 0


def _water_at(model, depth, x, y):
    from sbrtplan.dose_engine import water_dose_relative

    return float(water_dose_relative(model, 30.0, 30.0, 925.0, [depth], [x], [y])[0])


def test_mu_fractions_and_transmission(water, model):
    """Dose is linear in MU and fractions; closed leaves under open jaws pass ~T of the open dose."""
    grid, dens = water
    mlc = MLCModel.uniform(5.0, 60, transmission=0.015)
    geom = BeamGeometry(0.0)
    open_ap = Aperture.rectangle(mlc, (-20.0, 20.0), (-20.0, 20.0))
    d1 = forward_dose(dens, grid, BeamSet([static_beam(geom, mlc, open_ap, 100.0)], 1, 1.0), model=model)
    d5 = forward_dose(dens, grid, BeamSet([static_beam(geom, mlc, open_ap, 200.0)], 5, 1.0), model=model)
    np.testing.assert_allclose(d5, 10.0 * d1, rtol=1e-9, atol=1e-12)
    # leaves closed at x = 40 mm (outside the jaws), jaws open 4 x 4 cm
    closed = Aperture(np.full(mlc.n_pairs, 40.0), np.full(mlc.n_pairs, 40.5), (-20.0, 20.0), (-20.0, 20.0))
    dt = forward_dose(dens, grid, BeamSet([static_beam(geom, mlc, closed, 100.0)], 1, 1.0), model=model)
    k = N // 2
    ratio = dt[k, 30, k] / d1[k, 30, k]   # 60 mm depth on the axis
    # under the closed leaves the fluence is T_mlc (1.5 %) of the open field; the jaw transmission (0.2 %)
    # replaces the jaw-limited part outside -> the ratio is T within the jaw transmission
    assert abs(ratio - 0.015) < 0.002


def test_lateral_cutoff_bound(water, model):
    """The dose a beamlet loses to the cut-off is below the stated bound (and the bound is small for narrow terms).

    One 5 mm beamlet, built with the default 30 mm cut-off and with 150 mm; the
    fraction of the plane integral at 100 mm depth that the cut-off drops must be
    positive and below :func:`dropped_fraction`, and the dose within 10 mm of the
    beamlet (its penumbra) must be untouched.
    """
    grid, dens = water
    geom = BeamGeometry(0.0)
    bg = BeamletGrid(np.array([-2.5, 2.5]), np.array([-2.5, 2.5]), np.ones((1, 1), bool))
    full = influence_matrix(dens, grid, [geom], [bg], model=model, cutoff_mm=150.0)
    cut = influence_matrix(dens, grid, [geom], [bg], model=model, cutoff_mm=30.0)
    assert cut.nnz < full.nnz
    f_full = full.dose_on_grid(np.ones(1))
    f_cut = cut.dose_on_grid(np.ones(1))
    assert np.all(f_cut <= f_full + 1e-12)         # truncation only drops dose
    # at 100 mm depth (y index of the plane y = 25 mm) the dropped part of the plane integral
    j = int(round((25.0 - (-75 + H / 2)) / H))
    lost = 1.0 - f_cut[:, j].sum() / f_full[:, j].sum()
    bound = dropped_fraction(model, 30.0, beamlet_mm=5.0, depth_mm=100.0)
    assert 0.0 < lost <= bound
    # the bound falls with the cut-off and vanishes once it covers the 64 mm head-scatter blur
    assert dropped_fraction(model, 200.0) < 0.01 < dropped_fraction(model, 100.0) < bound
    # near the beamlet (within 10 mm) nothing is lost: its penumbra is exact
    k = N // 2
    np.testing.assert_allclose(f_cut[k - 3:k + 3, j, k - 3:k + 3], f_full[k - 3:k + 3, j, k - 3:k + 3], rtol=1e-6)


def test_voxel_subset_rows_and_errors(water, model):
    """Rows follow the caller's voxel set; bad inputs raise errors naming what is wrong."""
    grid, dens = water
    geom = BeamGeometry(0.0)
    bg = square_beamlets(10.0)
    full = influence_matrix(dens, grid, [geom], [bg], model=model)
    sub_idx = np.array([grid.size - 1, 5 + N * (30 + N * 25), 25 + N * (30 + N * 25)])
    sub = influence_matrix(dens, grid, [geom], [bg], voxel_indices=sub_idx, model=model)
    assert np.all(np.diff(sub.voxel_indices) > 0)
    pos = np.searchsorted(full.voxel_indices, sub.voxel_indices)
    np.testing.assert_allclose(sub.matrix.toarray(), full.matrix[pos].toarray(), rtol=1e-6)
    with pytest.raises(InputError, match="density shape"):
        influence_matrix(dens[:-1], grid, [geom], [bg], model=model)
    with pytest.raises(GeometryError, match="beamlet grids"):
        influence_matrix(dens, grid, [geom, geom], [bg], model=model)
    with pytest.raises(InputError, match="voxel_indices"):
        influence_matrix(dens, grid, [geom], [bg], voxel_indices=[grid.size], model=model)


def test_lateral_correction_in_lung_lowers_small_field_dose(model):
    """A 2 x 2 cm field in lung (RED 0.25) loses central dose when lateral electron transport is modelled.

    Water 0-30 mm, lung 30-150 mm.  Depth-only correction keeps the water kernel
    widths, so at 80 mm depth (50 mm into lung) it over-estimates the central
    dose; Monte Carlo studies of 6 MV small fields in lung show 10-20 % lower
    central dose than equivalent-path methods (e.g. Jones & Das, Med Phys 32
    (2005) 766), so the lateral correction must give a clearly (> 5 %) lower
    value, and not a grossly lower one (< 35 %).  In the water entrance both
    agree (< 1 %).
    """
    h = 3.0
    n = 60
    grid = Grid((40, n, 40), (h, h, h), (-60 + h / 2, -90 + h / 2, -60 + h / 2))
    y = -90 + h / 2 + h * np.arange(n)
    depth = y + 90.0
    dens = np.ones(grid.shape, np.float32)
    dens[:, (depth > 30) & (depth < 150), :] = 0.25
    mlc = MLCModel.uniform(5.0, 60, transmission=0.0)
    ap = Aperture.rectangle(mlc, (-10.0, 10.0), (-10.0, 10.0))
    bs = BeamSet([static_beam(BeamGeometry(0.0), mlc, ap, 100.0)], 1, 1.0)
    lat = forward_dose(dens, grid, bs, model=model, correction=Correction.LATERAL)
    dep = forward_dose(dens, grid, bs, model=model, correction=Correction.DEPTH_ONLY)
    cax_l = lat[19:21, :, 19:21].mean(axis=(0, 2))
    cax_d = dep[19:21, :, 19:21].mean(axis=(0, 2))
    j_lung = int(np.argmin(np.abs(depth - 80.0)))
    j_water = int(np.argmin(np.abs(depth - 16.5)))
    drop = 1.0 - cax_l[j_lung] / cax_d[j_lung]
    assert 0.05 < drop < 0.35
    assert abs(cax_l[j_water] / cax_d[j_water] - 1.0) < 0.01


def test_dij_command_writes_npz_and_matrad_mat(tmp_path):
    """``sbrtplan dij`` exports the same matrix as scipy .npz and as a matRad .mat (v7.3 on request)."""
    import h5py
    import scipy.sparse as sp

    from sbrtplan.cli import main

    npz, mat = tmp_path / "d.npz", tmp_path / "d.mat"
    for out in (npz, mat):
        assert main(["dij", "--case", "phantom:cshape", "--beams", "2", "--grid-mm", "5", "--mat-format", "v7.3",
                     "--out", str(out)]) == 0
    m = sp.load_npz(npz)
    z = np.load(npz)
    assert m.shape == (z["voxel_indices"].size, int(z["beam_offsets"][-1])) and m.nnz > 0
    np.testing.assert_allclose(z["gantry_deg"], [0.0, 180.0])
    with h5py.File(mat, "r") as f:
        d = f["dij"]
        assert float(d["numOfBeams"][0, 0]) == 2 and float(d["totalNumOfBixels"][0, 0]) == m.shape[1]
        s = f[d["physicalDose"][0, 0]]
        assert int(s.attrs["MATLAB_sparse"]) == int(np.prod(z["grid_shape_zyx"]))
        # same values (float32 -> double), each beamlet's column total preserved
        jc = s["jc"][()].astype(np.int64)
        col_sums = np.add.reduceat(s["data"][()], jc[:-1])
        np.testing.assert_allclose(col_sums, np.asarray(m.sum(axis=0)).ravel(), rtol=1e-5)
    assert main(["dij", "--case", "phantom:cshape", "--out", str(tmp_path / "x.txt")]) == 2


def test_tabulated_broad_terms_match_exact_integration(model, monkeypatch):
    """Forward dose tabulates the broad kernel terms per aperture; against exact integration of every term
    the difference stays below 0.3 % of the maximum (irregular MLC aperture, oblique beam, lung slab)."""
    import sbrtplan.dose_engine.aperture_dose as apd
    import sbrtplan.dose_engine.forward as fwd

    h = 3.0
    grid = Grid((40, 50, 40), (h, h, h), (-60 + h / 2, -75 + h / 2, -60 + h / 2))
    dens = np.ones(grid.shape, np.float32)
    dens[:, 12:35, :] = 0.25
    vi, pts = fwd._points(dens, grid, None)
    mlc = MLCModel.hd120()
    rng = np.random.default_rng(1)
    ap = Aperture(rng.uniform(-30, 0, mlc.n_pairs), rng.uniform(0, 30, mlc.n_pairs), (-30.0, 30.0), (-25.0, 25.0))
    geom = BeamGeometry(35.0, collimator_deg=10.0, couch_deg=15.0)
    tab = apd.aperture_dose_per_mu(dens, grid, pts, geom, ap, mlc.leaf_boundaries_mm, 0.012, model)
    monkeypatch.setattr(apd, "_TABLE_SIGMA_MIN_MM", 1e9)   # no term qualifies: exact erf sums everywhere
    exact = apd.aperture_dose_per_mu(dens, grid, pts, geom, ap, mlc.leaf_boundaries_mm, 0.012, model)
    assert np.max(np.abs(tab - exact)) <= 0.003 * exact.max()
    assert np.max(np.abs(tab - exact)) > 0       # the tables were used

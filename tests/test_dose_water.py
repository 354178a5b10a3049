"""Commissioned 6 MV model against the PTW water-tank scans (``../shared/data/beam/*.mcc``; skipped without them).

The issue's acceptance numbers (water, SSD 900 mm, 10 x 10 and 5 x 5 cm):
PDD beyond the build-up within 2 % (local), build-up within 2 mm distance to
agreement, profiles at all four depths passing gamma 2 %/2 mm (global, 10 %
threshold) at >= 95 % of points, and the 5 x 5 / 10 x 10 output ratio within
1.5 % of the measured value.

Two levels are checked: the shipped model's closed-form water dose
(:func:`~sbrtplan.dose_engine.evaluate_model`, what commissioning reports),
and the full engine -- ray tracing through a voxelised water phantom, MLC
aperture integration, inverse square -- on a 2 mm grid, which is what plans use.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, BeamGeometry, BeamSet, ControlPoint, MLCModel
from sbrtplan.case import Grid
from sbrtplan.dose_engine import evaluate_model, forward_dose, read_mcc
from sbrtplan.dose_engine.commission import gamma_1d
from sbrtplan.dose_engine.mcc import CurveType

from conftest import require_shared

SSD_MM = 900.0
H = 2.0


@pytest.fixture(scope="module")
def scans():
    files = sorted(require_shared("beam").glob("*.mcc"))
    if not files:
        pytest.skip("no .mcc scans in ../shared/data/beam")
    out = [s for f in files for s in read_mcc(f)]
    assert {(s.field_x_mm, s.ssd_mm) for s in out} == {(50.0, SSD_MM), (100.0, SSD_MM)}
    return out


@pytest.mark.parametrize("name", ["generic-6MV-sf", "generic-6MV"])
def test_commissioning_report_meets_the_issue_limits(scans, name):
    """Both shipped models (the default four-component ``generic-6MV-sf``, also commissioned on
    small-field output factors and the lung slab, and the scans-only ``generic-6MV``) pass every
    water number of the issue in closed form."""
    from sbrtplan.dose_engine import load_beam_model

    rep = evaluate_model(load_beam_model(name), scans)
    by_metric: dict[str, list[float]] = {}
    for c in rep.curves:
        by_metric.setdefault(c.metric, []).append(c.value)
    assert len(by_metric["PDD local diff beyond dmax (%)"]) == 2
    assert max(by_metric["PDD local diff beyond dmax (%)"]) <= 2.0
    assert max(by_metric["build-up distance to agreement (mm)"]) <= 2.0
    assert len(by_metric["gamma 2%/2mm pass rate (%)"]) == 16          # 2 fields x 2 planes x 4 depths
    assert min(by_metric["gamma 2%/2mm pass rate (%)"]) >= 95.0
    assert len(rep.output_ratios) == 1
    assert abs(rep.output_ratios[0]["difference_percent"]) <= 1.5
    assert rep.passed


# ------------------------------------------------------------- full engine
@pytest.fixture(scope="module")
def engine_water(model):
    """Forward dose of 10 x 10 and 5 x 5 cm MLC fields on a 2 mm water phantom at SSD 900 mm.

    Only the two planes through the central axis (along Xb and Yb) are computed.
    """
    nl = 51                                   # lateral voxels: centres at -100 ... 100 mm
    nd = 125                                  # depth 0 ... 250 mm
    surface_y = -100.0                        # beam (gantry 0, HFS) travels along +y
    grid = Grid((2 * nl + 1, nd, 2 * nl + 1), (H, H, H), (-nl * H, surface_y + H / 2, -nl * H))
    dens = np.ones(grid.shape, np.float32)
    iso = (0.0, surface_y + (1000.0 - SSD_MM), 0.0)
    geom = BeamGeometry(0.0, isocenter_mm=iso)
    xb, yb = geom.rotation[:, 0], geom.rotation[:, 1]
    # the central-axis planes: x = 0 and z = 0 in patient coordinates (Xb, Yb are +-x / +-z at gantry 0)
    k_mid, i_mid = nl, nl
    kk, jj, ii = np.meshgrid(np.arange(grid.nz), np.arange(grid.ny), np.arange(grid.nx), indexing="ij")
    plane = (kk == k_mid) | (ii == i_mid)
    vox = np.flatnonzero(plane)
    mlc = MLCModel.millennium120(transmission=0.015)
    out = {}
    for f in (50.0, 100.0):
        ap = Aperture.rectangle(mlc, (-f / 2, f / 2), (-f / 2, f / 2))
        beam = Beam("open", [ControlPoint(0.0, ap, 1.0)], 100.0, mlc, iso)
        out[f] = forward_dose(dens, grid, BeamSet([beam], 1, 1.0), model=model, voxel_indices=vox)
    depth = (surface_y + H / 2 + H * np.arange(nd)) - surface_y
    lateral = -nl * H + H * np.arange(2 * nl + 1)
    # which array axis runs along Xb (crossplane) and which along Yb (inplane)
    ax_x = "x" if abs(xb[0]) > 0.9 else "z"
    sign = {"x": np.sign(xb[0]) if ax_x == "x" else np.sign(yb[0]), "z": np.sign(xb[2]) if ax_x == "z" else np.sign(yb[2])}
    return {"dose": out, "depth": depth, "lateral": lateral, "k": k_mid, "i": i_mid, "ax_x": ax_x, "sign": sign}


def _cax(e, f):
    return e["dose"][f][e["k"], :, e["i"]]


def _profile(e, f, curve, depth_mm):
    # the measured depths lie between two rows of voxel centres: interpolate linearly in depth
    j = int(np.searchsorted(e["depth"], depth_mm)) - 1
    t = (depth_mm - e["depth"][j]) / H
    along_x = (curve is CurveType.CROSSPLANE) == (e["ax_x"] == "x")
    d = e["dose"][f]
    rows = [d[e["k"], jj, :] if along_x else d[:, jj, e["i"]] for jj in (j, j + 1)]
    prof = (1.0 - t) * rows[0] + t * rows[1]
    s = e["sign"]["x" if along_x else "z"]
    pos = e["lateral"] * s
    order = np.argsort(pos)
    return pos[order], prof[order]


@pytest.mark.parametrize("field_mm", [50.0, 100.0])
def test_engine_pdd_matches_measurement(scans, engine_water, field_mm):
    """Voxelised engine PDD: <= 2 % local beyond d_max, build-up within 2 mm DTA (issue limits)."""
    pdd = next(s for s in scans if s.curve is CurveType.PDD and s.field_x_mm == field_mm)
    e = engine_water
    calc = _cax(e, field_mm)
    z = e["depth"]
    meas_z, meas = pdd.positions_mm, pdd.values
    dmax = float(meas_z[np.argmax(meas)])
    # normalise both at 100 mm (a voxel centre at 101 mm: interpolate)
    c_norm = calc / np.interp(100.0, z, calc)
    m_norm = meas / np.interp(100.0, meas_z, meas)
    sel = (z >= dmax) & (z <= meas_z.max())
    local = np.abs(c_norm[sel] / np.interp(z[sel], meas_z, m_norm) - 1.0)
    assert local.max() <= 0.02
    # build-up: every measured point from 2 mm (the first voxel centre is at 1 mm) to d_max has a point of
    # equal calculated dose within 2 mm (the calculated curve is monotonic there: invert it)
    bu = (z <= dmax + 4.0)
    for zz, mm in zip(meas_z[(meas_z >= 2.0) & (meas_z < dmax)], m_norm[(meas_z >= 2.0) & (meas_z < dmax)]):
        z_equal = np.interp(mm, np.maximum.accumulate(c_norm[bu]), z[bu])
        assert abs(z_equal - zz) <= 2.0, f"build-up at {zz} mm: equal dose at {z_equal:.2f} mm"


@pytest.mark.parametrize("field_mm", [50.0, 100.0])
def test_engine_profiles_pass_gamma(scans, engine_water, field_mm):
    """Voxelised engine profiles at 15, 50, 100, 200 mm: gamma 2 %/2 mm global, >= 95 % pass (issue limit)."""
    profiles = [s for s in scans if s.is_profile and s.field_x_mm == field_mm]
    assert len(profiles) == 8
    for s in profiles:
        pos, prof = _profile(engine_water, field_mm, s.curve, s.depth_mm)
        calc = prof / np.interp(0.0, pos, prof)
        meas = s.values / np.interp(0.0, s.positions_mm, s.values)
        fine = np.arange(pos.min(), pos.max() + 0.05, 0.1)
        rate, _ = gamma_1d(s.positions_mm, meas, fine, np.interp(fine, pos, calc))
        assert rate >= 0.95, f"{s.label}: gamma pass rate {100 * rate:.1f} %"


def test_engine_output_ratio(scans, engine_water):
    """5 x 5 / 10 x 10 dose per MU at 100 mm depth within 1.5 % of the measured ratio (issue limit).

    Measured ratio: central-axis readings of the 100 mm profiles (same detector, same session).
    """
    def reading(f):
        vals = [np.interp(0.0, s.positions_mm, s.values) for s in scans
                if s.is_profile and s.field_x_mm == f and s.depth_mm == 100.0]
        return float(np.mean(vals))

    measured = reading(50.0) / reading(100.0)
    e = engine_water
    calc = np.interp(100.0, e["depth"], _cax(e, 50.0)) / np.interp(100.0, e["depth"], _cax(e, 100.0))
    assert 0.8 < measured < 0.97                       # a 6 MV 5 x 5 field gives ~0.9 of the 10 x 10
    assert abs(calc / measured - 1.0) <= 0.015

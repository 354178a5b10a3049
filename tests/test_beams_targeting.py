"""Isocentre placement, target-restricted beamlet grids and site templates."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import (BeamGeometry, MLCModel, Site, beam_template, beamlet_grid_for_target, isocenter_for,
                            rows_to_leaf_pairs)
from sbrtplan.case import Grid, Structure, StructureRole
from sbrtplan.errors import GeometryError, InputError, StructureError


def _sphere(center_mm, radius_mm, spacing=2.0, n=41, origin=(-40.0, -40.0, -40.0)) -> Structure:
    g = Grid((n, n, n), (spacing,) * 3, origin)
    x, y, z = g.axis_coordinates_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    m = (xx - center_mm[0]) ** 2 + (yy - center_mm[1]) ** 2 + (zz - center_mm[2]) ** 2 <= radius_mm ** 2
    return Structure("PTV", g, m, role=StructureRole.PTV)


def test_isocenter_is_centroid():
    # centre on a voxel centre: the discretised sphere is symmetric, centroid exact to rounding
    s = _sphere((10.0, -6.0, 4.0), 12.0)
    assert np.allclose(isocenter_for(s), (10.0, -6.0, 4.0), atol=1e-6)
    empty = Structure("PTV", s.grid, np.zeros(s.grid.shape, bool))
    with pytest.raises(StructureError, match="PTV"):
        isocenter_for(empty)


def _rect_distance(grid, c):
    """Distance from point c (x, y) to each beamlet rectangle (n_rows, n_cols)."""
    x0, x1 = grid.x_edges_mm[:-1], grid.x_edges_mm[1:]
    y0, y1 = grid.y_edges_mm[:-1], grid.y_edges_mm[1:]
    dx = np.maximum(np.maximum(x0 - c[0], c[0] - x1), 0)
    dy = np.maximum(np.maximum(y0 - c[1], c[1] - y1), 0)
    return np.hypot(dy[:, None], dx[None, :])


@pytest.mark.parametrize("gantry,couch,coll", [(0, 0, 0), (90, 30, 45), (215, 345, 10)])
def test_sphere_projection_is_disc_plus_margin(gantry, couch, coll):
    radius, margin = 20.0, 5.0
    ptv = _sphere((0.0, 0.0, 0.0), radius)
    geo = BeamGeometry(gantry, coll, couch, isocenter_for(ptv))
    mlc = MLCModel.millennium120()
    grid = beamlet_grid_for_target(ptv, geo, mlc, beamlet_mm=5.0, margin_mm=margin)
    # rows are whole leaf pairs, columns 5 mm with an edge on the central axis
    assert np.all(np.isin(np.round(grid.y_edges_mm, 6), np.round(mlc.leaf_boundaries_mm, 6)))
    assert np.allclose(np.diff(grid.x_edges_mm), 5.0)
    assert np.allclose(np.round(grid.x_edges_mm / 5.0), grid.x_edges_mm / 5.0)
    assert rows_to_leaf_pairs(grid, mlc).size == grid.shape[0]
    # A sphere at the isocentre projects to a disc of radius R (divergence adds
    # R^3/2SAD^2 < 0.01 mm).  Tolerance 2.5 mm: voxelisation of the sphere
    # surface (half voxel diagonal 1.7 mm) and the 0.5 mm raster.
    d = _rect_distance(grid, (0.0, 0.0))
    assert grid.active[d <= radius + margin - 2.5].all()
    assert not np.any(grid.active & (d > radius + margin + 2.5))
    # trimmed grid: the outermost rows and columns hold active beamlets
    assert grid.active[0].any() and grid.active[-1].any() and grid.active[:, 0].any() and grid.active[:, -1].any()


def test_divergent_projection_magnifies_off_axis_target():
    # Cube at x = +30 mm, 100 mm towards the source of gantry 0 (anterior = -y):
    # projected centre at 30 * 1000 / 900 = 33.3 mm, not 30 mm (parallel projection).
    g = Grid((61, 101, 61), (1.0, 1.0, 1.0), (-10.0, -130.0, -30.0))
    x, y, z = g.axis_coordinates_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    m = (np.abs(xx - 30) <= 4) & (np.abs(yy + 100) <= 4) & (np.abs(zz) <= 4)
    tgt = Structure("GTV", g, m, role=StructureRole.GTV)
    geo = BeamGeometry(0.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    grid = beamlet_grid_for_target(tgt, geo, MLCModel.millennium120(), beamlet_mm=1.0, margin_mm=0.0)
    xc = 0.5 * (grid.x_edges_mm[1:] + grid.x_edges_mm[:-1])
    cols = np.flatnonzero(grid.active.any(axis=0))
    centre = 0.5 * (xc[cols[0]] + xc[cols[-1]])
    # +-0.6 mm: each side of the active span is quantised to 1 mm columns
    assert abs(centre - 1000.0 / 900.0 * 30.0) < 0.6
    # width: 9 mm cube (voxel faces) magnified by 1.11 = 10 mm, plus the footprint pad (+-0.7 mm) and columns
    width = (cols[-1] - cols[0] + 1) * 1.0
    assert 9.0 <= width <= 14.0


def test_target_outside_mlc_field_is_rejected():
    ptv = _sphere((0.0, 0.0, 0.0), 20.0)
    geo = BeamGeometry(0.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    small = MLCModel.uniform(5.0, 4)  # 20 mm field
    with pytest.raises(GeometryError, match="PTV"):
        beamlet_grid_for_target(ptv, geo, small)
    with pytest.raises(GeometryError, match="beamlet_mm"):
        beamlet_grid_for_target(ptv, geo, MLCModel.millennium120(), beamlet_mm=0)


def test_templates():
    spine = beam_template(Site.SPINE, 9)
    assert len(spine) == 9
    g = np.array([b[0] for b in spine])
    # spine: posterior hemisphere only (gantry 90..270 for HFS), several couch kicks
    assert np.all((g > 90) & (g < 270))
    assert len({b[1] for b in spine}) >= 3
    liver = beam_template("liver", 7)
    gl = np.array([b[0] for b in liver])
    # liver (right): source on the patient's right, i.e. sin(gantry) < 0 in IEC for HFS
    assert np.all(np.sin(np.deg2rad(gl)) < 0)
    left = beam_template(Site.LIVER, 7, target_side="left")
    assert np.all(np.sin(np.deg2rad([b[0] for b in left])) > 0)
    gen = beam_template(Site.GENERIC, 5)
    assert [b[0] for b in gen] == [0.0, 72.0, 144.0, 216.0, 288.0]
    couches = np.array([b[1] for t in (spine, liver, left) for b in t])
    assert np.all((couches <= 45) | (couches >= 315))
    with pytest.raises(InputError, match="n_beams"):
        beam_template(Site.SPINE, 1)
    with pytest.raises(InputError, match="site"):
        beam_template("brain", 5)


def _extent(grid):
    rows = np.flatnonzero(grid.active.any(axis=1))
    cols = np.flatnonzero(grid.active.any(axis=0))
    return (grid.x_edges_mm[cols[-1] + 1] - grid.x_edges_mm[cols[0]],
            grid.y_edges_mm[rows[-1] + 1] - grid.y_edges_mm[rows[0]])


def test_collimator_rotation_turns_the_field():
    # A rod along the patient's superior axis (z, 60 mm) and 10 mm across.  For HFS at
    # gantry 0 / couch 0, IEC Yb points to the gantry = superior, so the rod lies along
    # the leaf-pair stack (Yb); collimator 90 turns it along the leaf motion (Xb).
    g = Grid((41, 21, 21), (2.0, 2.0, 2.0), (-20.0, -20.0, -40.0))
    x, y, z = g.axis_coordinates_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    rod = Structure("PTV", g, (np.abs(xx) <= 5) & (np.abs(yy) <= 5) & (np.abs(zz) <= 30), role=StructureRole.PTV)
    mlc = MLCModel.hd120()
    w0, h0 = _extent(beamlet_grid_for_target(rod, BeamGeometry(0.0, 0.0, 0.0), mlc, beamlet_mm=2.5, margin_mm=0.0))
    w90, h90 = _extent(beamlet_grid_for_target(rod, BeamGeometry(0.0, 90.0, 0.0), mlc, beamlet_mm=2.5,
                                               margin_mm=0.0))
    # 60 mm long (+ voxel footprint and 2.5 mm rows/columns), 10 mm wide (+ the same)
    assert 60.0 <= h0 <= 70.0 and 10.0 <= w0 <= 20.0
    assert 60.0 <= w90 <= 70.0 and 10.0 <= h90 <= 20.0


def test_hd120_rows_follow_both_leaf_widths():
    # A 100 mm target on HD120 spans the 2.5 mm central and 5 mm outer leaves (|y| > 40 mm)
    ptv = _sphere((0.0, 0.0, 0.0), 38.0, spacing=4.0, n=25, origin=(-48.0, -48.0, -48.0))
    grid = beamlet_grid_for_target(ptv, BeamGeometry(0.0), MLCModel.hd120(), beamlet_mm=2.5, margin_mm=5.0)
    widths = np.round(np.diff(grid.y_edges_mm), 6)
    assert set(widths.tolist()) == {2.5, 5.0}
    assert rows_to_leaf_pairs(grid, MLCModel.hd120()).size == grid.shape[0]

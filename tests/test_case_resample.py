"""Resampling of CT, density, structures and doses onto a dose grid."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import (Case, Dose, Grid, Structure, StructureRole, resample_array, resample_case, resample_dose,
                           resample_structure)
from sbrtplan.errors import InputError, StructureError


def centred_grid(spacing, half_extent_mm, direction=None) -> Grid:
    sp = np.broadcast_to(np.asarray(spacing, float), 3)
    n = np.round(2 * half_extent_mm / sp).astype(int)
    d = np.eye(3) if direction is None else np.asarray(direction)
    # Origin so that the grid centre is at the patient origin, whatever the direction.
    origin = -d @ (0.5 * (n - 1) * sp)
    return Grid((n[2], n[1], n[0]), tuple(sp), tuple(origin), d)


def points_of(grid: Grid) -> np.ndarray:
    return grid.voxel_centers_mm().reshape(grid.shape + (3,))


def test_small_sphere_keeps_its_volume_through_fraction():
    # A 0.2 cc sphere (r = 3.63 mm) drawn on 1 mm voxels, resampled to 2.5 mm:
    # the box-integral occupancy conserves the source volume (to float32
    # rounding) even though it covers only a dozen coarse voxels.
    r = (0.2 * 1000 * 3 / (4 * np.pi)) ** (1 / 3)
    src = centred_grid(1.0, 20.0)
    p = points_of(src)
    c = np.array([0.37, -0.81, 1.13])
    s = Structure("SpinalCord", src, np.linalg.norm(p - c, axis=-1) <= r, role=StructureRole.OAR)
    assert abs(s.volume_cc / 0.2 - 1) < 0.05  # the 1 mm drawing itself
    dst = centred_grid(2.5, 20.0)
    out = resample_structure(s, dst)
    assert abs(out.volume_cc / s.volume_cc - 1) < 1e-3
    assert out.mask.any() and out.role is StructureRole.OAR
    # Without occupancy the centre rule alone would miss it by far more.
    binary = out.n_voxels * dst.voxel_volume_cc
    assert abs(binary / 0.2 - 1) > abs(out.volume_cc / 0.2 - 1)
    # The centroid stays put (within a tenth of the coarse voxel).
    assert np.linalg.norm(out.centroid_mm() - c) < 0.25


def test_trilinear_is_exact_for_a_linear_ramp():
    src = centred_grid((1.0, 1.2, 3.0), 30.0)
    p = points_of(src)
    ramp = (0.02 * p[..., 0] - 0.01 * p[..., 1] + 0.005 * p[..., 2] + 1.0).astype(np.float32)
    dst = Grid((20, 20, 20), (2.0, 2.0, 2.0), (-19.3, -18.7, -20.1))  # inside the source's centres
    q = points_of(dst)
    expected = 0.02 * q[..., 0] - 0.01 * q[..., 1] + 0.005 * q[..., 2] + 1.0
    out = resample_array(ramp, src, dst, order=1)
    assert np.max(np.abs(out - expected)) < 1e-5  # float32 rounding


def test_oblique_source_resamples_to_the_right_place():
    # Source rotated 30 deg about z (an oblique CT); a sphere centred at a
    # known patient point and a linear ramp of patient coordinates.
    a = np.deg2rad(30.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    src = centred_grid(1.0, 25.0, direction=rot)
    assert not src.is_axis_aligned
    p = points_of(src)
    c = np.array([6.0, -4.0, 3.0])
    s = Structure("GTV", src, np.linalg.norm(p - c, axis=-1) <= 6.0, role=StructureRole.GTV)
    ramp = (0.03 * p[..., 0] + 0.02 * p[..., 1] - 0.01 * p[..., 2]).astype(np.float32)
    dst = centred_grid(2.0, 12.0)
    out = resample_structure(s, dst)
    # Supersampled occupancy on oblique grids: about a percent of the volume.
    assert abs(out.volume_cc / s.volume_cc - 1) < 0.02
    assert np.linalg.norm(out.centroid_mm() - c) < 0.3
    q = points_of(dst)
    vals = resample_array(ramp, src, dst, order=1)
    expected = 0.03 * q[..., 0] + 0.02 * q[..., 1] - 0.01 * q[..., 2]
    assert np.max(np.abs(vals - expected)) < 1e-4


def test_resample_dose_is_zero_outside_and_interpolates_inside():
    g = centred_grid(2.0, 20.0)
    p = points_of(g)
    dose = Dose(g, (30.0 + 0.1 * p[..., 0]).astype(np.float32), description="plan")
    fine = Grid((10, 10, 40), (1.0, 1.0, 1.0), (-20.0, -4.5, -4.5))  # x from -20 to +19: partly outside
    out = resample_dose(dose, fine)
    x = fine.axis_coordinates_mm()[0]
    inside = x <= 19.0  # the source's outermost centre is +19 mm, faces at +20
    assert np.allclose(out.dose_gy[:, :, inside & (x >= -19.0)], 30.0 + 0.1 * x[inside & (x >= -19.0)], atol=1e-4)
    bigger = Grid((3, 3, 3), (20.0, 20.0, 20.0), (-20.0, -20.0, -40.0))  # z = -40 lies outside
    assert np.all(resample_dose(dose, bigger).dose_gy[0] == 0.0)
    assert out.description == "plan"


def _toy_case() -> Case:
    g = centred_grid((0.9, 0.9, 3.0), 45.0)
    p = points_of(g)
    body = (p[..., 0] / 40.0) ** 2 + (p[..., 1] / 30.0) ** 2 <= 1.0
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    bone = np.linalg.norm(p[..., :2] - np.array([0.0, 15.0]), axis=-1) <= 6.0
    hu[bone] = 700.0
    structures = {
        "External": Structure("External", g, body, role=StructureRole.EXTERNAL),
        "SpinalCord": Structure("SpinalCord", g, np.linalg.norm(p[..., :2] - np.array([0.0, 24.0]), axis=-1) <= 4.0,
                                role=StructureRole.OAR),
        "PTV": Structure("PTV", g, np.linalg.norm(p - np.array([0.0, 8.0, 0.0]), axis=-1) <= 7.0,
                         role=StructureRole.PTV),
    }
    return Case("toy", g, hu, structures)


def test_resample_case_over_a_region_keeps_volumes_and_densities():
    case = _toy_case()
    calls = []
    out = resample_case(case, 2.0, region=case.structure("External"), margin_mm=4.0,
                        progress=lambda d, t: calls.append((d, t)))
    assert out.grid.is_axis_aligned and out.grid.spacing_mm == (2.0, 2.0, 2.0)
    assert calls[-1] == (2 + len(case.structures), 2 + len(case.structures))
    # Structures fully inside the new grid keep their volume through `fraction`.
    for name in ("PTV", "SpinalCord"):
        assert abs(out.structures[name].volume_cc / case.structures[name].volume_cc - 1) < 1e-3
    # The External spans the whole (truncated) CT in z; the region grid rounds
    # the 90 mm CT length to 2 mm voxels, so at most 1 mm in 90 is lost.
    assert abs(out.structures["External"].volume_cc / case.structures["External"].volume_cc - 1) < 0.012
    # Density is interpolated, not recomputed: water stays 1.0 away from edges.
    ptv = out.structures["PTV"].mask
    assert np.allclose(out.density[ptv & (out.hu == 0.0)], case.calibration(np.array([0.0]))[0], atol=1e-4)
    # The new grid covers the body plus the margin, clipped to the CT.
    lo, hi = out.grid.bounds_mm()
    assert lo[0] <= -40.0 and hi[0] >= 40.0


def test_resample_case_rejects_bad_parameters():
    case = _toy_case()
    with pytest.raises(InputError, match="spacing_mm"):
        resample_case(case, -2.0)
    with pytest.raises(InputError, match="region"):
        resample_case(case, 2.0, region=("a", "b"))
    other = Structure("Elsewhere", centred_grid(2.0, 10.0), np.ones((10, 10, 10), bool))
    with pytest.raises(StructureError, match="Elsewhere"):
        resample_case(case, 2.0, region=other)
    with pytest.raises(InputError, match="order"):
        resample_array(case.hu, case.grid, case.grid, order=3)

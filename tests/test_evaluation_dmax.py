"""Reported maxima do not exceed the dose interpolated at points inside the structure.

Spheres with sub-voxel occupancy (boundary voxels supersampled 8^3) sit against a
steep dose ramp, 10 -> 60 Gy along a direction ``u`` with its steepest part
(6 to 8 Gy/mm) just outside the surface, so the hottest point of the sphere is
on its surface and the dose just outside it is much higher.  The reference
maximum is computed independently of the DVH code: the dose grid interpolated
trilinearly (scipy ``map_coordinates``, order 1) on a fine polar lattice of the
spherical cap around the pole ``c + R u`` (0.02 mm spacing, where the maximum
lies) and on a 0.25 mm lattice of the whole ball.  Before the fix the planar
sub-voxel boundary model put hot-tail samples up to 0.35 mm outside such
spheres and reported maxima up to 8 % above the reference (these cases) (issue 19: a
brainstem 6 % above any voxel touching it).
"""

import numpy as np
import pytest
from scipy import ndimage

from sbrtplan.case import Dose, Grid, Structure, StructureRole
from sbrtplan.evaluation import compute_dvh

from conftest import sphere_occupancy

H_MM = 2.5


def _grid_index(g, pts_zyx):
    o, sp = np.asarray(g.origin_mm), np.asarray(g.spacing_mm)
    return np.vstack([(pts_zyx[:, 0] - o[2]) / sp[2], (pts_zyx[:, 1] - o[1]) / sp[1], (pts_zyx[:, 2] - o[0]) / sp[0]])


def _inside_max(dose, g, centre, radius, u):
    """Max of the trilinear dose over the closed ball: fine cap around the pole + coarse volume lattice."""
    # polar lattice of the cap (geodesic radius 4 mm around the pole), on the surface
    e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    a = np.arange(-4.0, 4.0 + 1e-9, 0.02) / radius
    A, B = np.meshgrid(a, a, indexing="ij")
    keep = A ** 2 + B ** 2 <= (4.0 / radius) ** 2
    th, ph = np.sqrt(A[keep] ** 2 + B[keep] ** 2), np.arctan2(B[keep], A[keep])
    dirs = (np.cos(th)[:, None] * u + np.sin(th)[:, None] * (np.cos(ph)[:, None] * e1 + np.sin(ph)[:, None] * e2))
    best = ndimage.map_coordinates(dose, _grid_index(g, centre + radius * dirs), order=1, mode="nearest").max()
    ax = np.arange(-radius, radius + 1e-9, 0.25)
    P = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    P = P[np.einsum("ij,ij->i", P, P) <= radius ** 2]
    vol = ndimage.map_coordinates(dose, _grid_index(g, centre + P), order=1, mode="nearest").max()
    return float(max(best, vol))


CASES = [  # radius (mm), ramp direction (z, y, x), ramp width (mm), ramp centre beyond the surface (mm)
    (6.3, (0.0, 0.0, 1.0), 1.6, 0.5),
    (7.4, (0.31, -0.52, 0.80), 1.6, 0.2),
    (9.8, (-0.6, 0.1, 0.79), 2.0, 0.9),
    (12.5, (0.45, 0.72, -0.53), 1.6, 0.0),
]


@pytest.mark.parametrize("radius,direction,width,offset", CASES)
def test_dmax_not_above_interpolated_inside(radius, direction, width, offset):
    n = int(np.ceil(2 * (radius + 8.0) / H_MM))
    lo = -0.5 * (n - 1) * H_MM
    g = Grid((n, n, n), (H_MM, H_MM, H_MM), (lo, lo, lo))
    x, y, z = g.axis_coordinates_mm()
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    centre = np.array([0.37, -0.81, 0.55])  # off the voxel lattice
    u = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    s = (Z - centre[0]) * u[0] + (Y - centre[1]) * u[1] + (X - centre[2]) * u[2]
    dose = (10.0 + 50.0 / (1.0 + np.exp(-(s - radius - offset) / width))).astype(np.float32)
    occ = sphere_occupancy(Z, Y, X, centre, radius, H_MM, m=8)
    st = Structure("Brainstem", g, occ >= 0.5, StructureRole.OAR, fraction=occ)
    dvh = compute_dvh(Dose(g, dose), st)
    ref = _inside_max(dose, g, centre, radius, u)
    # 0.02 mm cap lattice: the reference is below the true maximum by < 8 Gy/mm * 0.01 mm = 0.08 Gy
    assert dvh.max_gy <= ref + 0.08, (dvh.max_gy, ref)
    assert dvh.d_cc(0.035) <= dvh.max_gy + 1e-9
    # the maximum is not thrown away: the hot-tail samples of a boundary voxel lie at most half a sub-voxel
    # (2.5 mm / 4 / 2 = 0.31 mm) plus the inset (0.1 sub-voxel, 0.06 mm) inside the surface, so the reported
    # maximum is at most the steepest slope (50 Gy / (4 width)) times 0.4 mm below the reference
    slope = 50.0 / (4.0 * width)
    assert dvh.max_gy >= ref - 0.4 * slope, (dvh.max_gy, ref)

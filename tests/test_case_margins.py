"""Planning-structure operations: margins, rings, PRVs, booleans, PTV!, distances.

Volumes are compared with analytic spheres.  The sphere centres are placed off
the voxel lattice on purpose (a centred sphere on a symmetric grid can hide
errors by symmetry).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import (Grid, Structure, StructureRole, contract, distance_map_mm, expand, intersect, prv,
                           prv_name, ptv_minus, ring, subtract, union)
from sbrtplan.errors import InputError, StructureError

CENTRE = (0.31, -0.27, 0.43)  # mm, off-lattice


def sphere_volume_cc(r_mm: float) -> float:
    return 4.0 / 3.0 * np.pi * r_mm ** 3 / 1000.0


def make_grid(spacing_xyz, half_extent_mm: float = 40.0) -> Grid:
    sp = np.asarray(spacing_xyz, float)
    n = np.round(2 * half_extent_mm / sp).astype(int)
    return Grid((n[2], n[1], n[0]), tuple(sp), tuple(-0.5 * (n - 1) * sp))


def ball(grid: Grid, r_mm: float, centre=CENTRE, name: str = "S", role=StructureRole.OTHER) -> Structure:
    x, y, z = grid.axis_coordinates_mm()
    m = ((x[None, None, :] - centre[0]) ** 2 + (y[None, :, None] - centre[1]) ** 2
         + (z[:, None, None] - centre[2]) ** 2) <= r_mm ** 2
    return Structure(name, grid, m, role=role)


# ------------------------------------------------------------ the numbers
@pytest.mark.parametrize("spacing, tol", [((1.0, 1.0, 1.0), 0.02), ((1.0, 1.0, 3.0), 0.03)])
def test_5mm_margin_on_20mm_sphere_matches_analytic_25mm_sphere(spacing, tol):
    # Issue numbers: 2 % on a 1 mm grid, 3 % on a 1 x 1 x 3 mm grid.
    g = make_grid(spacing)
    ptv = expand(ball(g, 20.0), 5.0)
    rel = ptv.volume_cc / sphere_volume_cc(25.0) - 1.0
    assert abs(rel) < tol, f"expansion volume off by {rel:+.2%}"


def test_margin_is_not_clipped_by_the_structure_box_and_keeps_the_original():
    g = make_grid((1.0, 1.0, 1.0))
    s = ball(g, 10.0)
    e = expand(s, 8.0)
    assert np.all(e.mask[s.mask])
    # A ball of 18 mm reaches 18 mm along each axis from the centre (within a voxel).
    k, j, i = np.nonzero(e.mask)
    x, y, z = g.axis_coordinates_mm()
    assert abs((x[i].max() - CENTRE[0]) - 18.0) < 1.0
    assert abs((CENTRE[2] - z[k].min()) - 18.0) < 1.0


def test_anisotropic_margin_grows_each_axis_by_its_own_amount():
    # (x, y, z) = (2, 2, 6) mm on a 10 mm sphere: half-extents 12, 12, 16 mm.
    g = make_grid((1.0, 1.0, 1.0), 30.0)
    e = expand(ball(g, 10.0), (2.0, 2.0, 6.0))
    k, j, i = np.nonzero(e.mask)
    x, y, z = g.axis_coordinates_mm()
    assert abs((x[i].max() - x[i].min()) / 2 - 12.0) <= 1.0
    assert abs((y[j].max() - y[j].min()) / 2 - 12.0) <= 1.0
    assert abs((z[k].max() - z[k].min()) / 2 - 16.0) <= 1.0


def test_contraction_of_a_sphere():
    # 20 mm sphere minus 5 mm = 15 mm sphere; a contracted surface has fewer
    # voxels across it, 3 % covers the lattice error at 1 mm.
    g = make_grid((1.0, 1.0, 1.0))
    c = contract(ball(g, 20.0), 5.0)
    assert abs(c.volume_cc / sphere_volume_cc(15.0) - 1.0) < 0.03


def test_contracting_past_the_half_thickness_gives_an_empty_structure():
    g = make_grid((1.0, 1.0, 1.0), 15.0)
    assert contract(ball(g, 4.0), 6.0).is_empty


def test_ring_volume_is_the_analytic_shell_between_distance_bands():
    # Ring 5-15 mm from a 20 mm sphere = shell between radii 25 and 35 mm.
    g = make_grid((1.0, 1.0, 1.0), 45.0)
    s = ball(g, 20.0)
    r = ring(s, 5.0, 15.0)
    shell = sphere_volume_cc(35.0) - sphere_volume_cc(25.0)
    assert abs(r.volume_cc / shell - 1.0) < 0.02
    assert r.role is StructureRole.CONTROL
    assert not np.any(r.mask & s.mask)


def test_ring_from_zero_touches_the_target_and_within_restricts_it():
    g = make_grid((1.0, 1.0, 1.0), 30.0)
    s = ball(g, 10.0)
    r = ring(s, 0.0, 3.0)
    shell = sphere_volume_cc(13.0) - sphere_volume_cc(10.0)
    assert abs(r.volume_cc / shell - 1.0) < 0.05  # thin 3 mm shell on 1 mm voxels
    half = Structure("Half", g, np.broadcast_to((g.axis_coordinates_mm()[0] > 0)[None, None, :], g.shape).copy())
    rh = ring(s, 0.0, 3.0, within=half)
    assert rh.mask.sum() < r.mask.sum() and not np.any(rh.mask & ~half.mask)


def test_prv_name_and_role():
    g = make_grid((1.0, 1.0, 1.0), 20.0)
    cord = ball(g, 5.0, name="SpinalCord", role=StructureRole.OAR)
    p = prv(cord, 2.0)
    assert p.name == "SpinalCord_PRV02" and p.role is StructureRole.PRV
    # 2 mm around a 5 mm cord on 1 mm voxels: measured -1.5 %, the lattice alone gives ~1 %.
    assert abs(p.volume_cc / sphere_volume_cc(7.0) - 1.0) < 0.03
    assert prv_name("Esophagus", 5) == "Esophagus_PRV05"
    assert prv_name("Esophagus", 2.5) == "Esophagus_PRV2.5"


def test_boolean_identities():
    g = make_grid((1.0, 1.0, 1.0), 25.0)
    a = ball(g, 12.0, centre=(-5.0, 0.0, 0.0), name="A")
    b = ball(g, 12.0, centre=(6.0, 0.0, 0.0), name="B")
    u, i, d = union(a, b, name="U"), intersect(a, b, name="I"), subtract(a, b, name="D")
    # Inclusion-exclusion and the partition A = (A - B) + (A and B), voxel-exact.
    assert u.n_voxels == a.n_voxels + b.n_voxels - i.n_voxels
    assert d.n_voxels + i.n_voxels == a.n_voxels
    assert not np.any(d.mask & b.mask)
    # Lens of two 12 mm spheres 11 mm apart: V = pi (4R + d)(2R - d)^2 / 12.
    R, dd = 12.0, 11.0
    lens = np.pi * (4 * R + dd) * (2 * R - dd) ** 2 / 12 / 1000.0
    assert abs(i.volume_cc / lens - 1.0) < 0.05


def test_booleans_with_fractions_use_nested_partial_volume_rules():
    g = make_grid((2.0, 2.0, 2.0), 10.0)
    fa = np.zeros(g.shape, np.float32)
    fb = np.zeros(g.shape, np.float32)
    fa[2:6] = 0.75
    fb[4:8] = 0.5
    a = Structure("A", g, fa >= 0.5, fraction=fa)
    b = Structure("B", g, fb >= 0.5, fraction=fb)
    assert np.allclose(union(a, b, name="U").fraction, np.maximum(fa, fb))
    # nested partial volumes: A - B = A - min(A, B), so (A - B) + (A and B) = A in every voxel
    d = subtract(a, b, name="D")
    assert np.allclose(d.fraction, np.maximum(fa - fb, 0.0))
    assert np.allclose(d.fraction + intersect(a, b, name="I").fraction, fa)


def test_ptv_minus_prv_partitions_the_ptv():
    g = make_grid((1.0, 1.0, 1.0), 30.0)
    ptv = ball(g, 15.0, name="PTV", role=StructureRole.PTV)
    cord = ball(g, 5.0, centre=(0.0, 18.0, 0.0), name="SpinalCord", role=StructureRole.OAR)
    cord_prv = prv(cord, 2.0)
    bang = ptv_minus(ptv, cord_prv)
    assert bang.name == "PTV!" and bang.role is StructureRole.CONTROL
    overlap = intersect(ptv, cord_prv, name="overlap")
    assert overlap.n_voxels > 0
    assert not np.any(bang.mask & cord_prv.mask)
    assert np.array_equal(bang.mask | overlap.mask, ptv.mask)
    # With a gap the removed band grows by the gap (PTV voxels within 2 mm of the PRV).
    gap = ptv_minus(ptv, cord_prv, name="PTV!gap", gap_mm=2.0)
    d = distance_map_mm(cord_prv, max_distance_mm=5.0)
    assert np.all(d[gap.mask] > 2.0 - 1e-4)
    assert gap.n_voxels < bang.n_voxels


def test_ptv_minus_far_organ_is_the_ptv():
    g = make_grid((1.0, 1.0, 1.0), 30.0)
    ptv = ball(g, 8.0, name="PTV", role=StructureRole.PTV)
    far = ball(g, 3.0, centre=(20.0, 20.0, 0.0), name="SpinalCord_PRV02", role=StructureRole.PRV)
    assert np.array_equal(ptv_minus(ptv, far).mask, ptv.mask)


def test_distance_map_is_the_distance_to_the_sphere_surface():
    # Outside a 15 mm sphere the distance of a voxel centre is |p - c| - 15.
    # The mask knows the surface only to within the voxel lattice (+-0.5 mm on
    # 1 mm voxels); what must hold is no bias (mean < 0.1 mm) and errors
    # bounded by the lattice (99 % within 0.5 mm, all within 0.8 mm).
    g = make_grid((1.0, 1.0, 1.0), 35.0)
    s = ball(g, 15.0)
    d = distance_map_mm(s, max_distance_mm=15.0, signed=True)
    x, y, z = g.axis_coordinates_mm()
    r = np.sqrt((x[None, None, :] - CENTRE[0]) ** 2 + (y[None, :, None] - CENTRE[1]) ** 2
                + (z[:, None, None] - CENTRE[2]) ** 2)
    band = (r < 29.0) & ~s.mask
    err = d[band] - (r[band] - 15.0)
    assert abs(err.mean()) < 0.1
    assert np.percentile(np.abs(err), 99) < 0.5
    assert np.abs(err).max() < 0.8
    inside = r < 13.0
    assert abs(np.mean(d[inside] + (15.0 - r[inside]))) < 0.1
    assert np.all(np.isinf(d[r > 31.0]))  # beyond max_distance_mm


def test_bad_inputs_raise_clear_errors():
    g = make_grid((1.0, 1.0, 1.0), 10.0)
    s = ball(g, 3.0)
    with pytest.raises(InputError, match="margin_mm"):
        expand(s, -1.0)
    with pytest.raises(InputError, match="inner_mm < outer_mm"):
        ring(s, 5.0, 2.0)
    with pytest.raises(StructureError, match="empty"):
        expand(Structure("Empty", g, np.zeros(g.shape, bool)), 2.0)
    other = ball(make_grid((2.0, 2.0, 2.0), 10.0), 3.0, name="Other")
    with pytest.raises(StructureError, match="Other"):
        union(s, other, name="U")

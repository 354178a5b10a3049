"""Built-in phantoms: analytic volumes, densities and the planning geometry
that later plan tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import StructureRole, distance_map_mm, normalize_name, ptv_minus
from sbrtplan.errors import InputError
from sbrtplan.phantoms import PHANTOMS, make_phantom


@pytest.fixture(scope="module")
def spine():
    return make_phantom("spine")


@pytest.fixture(scope="module")
def liver():
    return make_phantom("liver")


def density_at(case, xyz) -> float:
    k, j, i = np.round(case.grid.index_from_patient(np.asarray(xyz, float))).astype(int)
    return float(case.density[k, j, i])


def spheroid_sum_volume_cc(a_mm: float, c_mm: float, r_mm: float, step_mm: float = 0.2) -> float:
    """Volume of {p : dist(p, E) <= r} for the spheroid E of semi-axes (a, a, c):
    the Minkowski sum of a ball of radius r and E (what an anisotropic margin
    followed by an isotropic one builds from a point; with a ball inside E's
    radius it is also GTV-sphere + ITV margin + PTV margin).  Computed in the
    meridian half-plane (rho, z) with the exact point-to-ellipse distance of a
    dense ellipse sampling, integrated with weight 2 pi rho."""
    t = np.linspace(0.0, np.pi / 2, 2000)
    ex, ez = a_mm * np.cos(t), c_mm * np.sin(t)
    rho = np.arange(0.5 * step_mm, a_mm + r_mm + step_mm, step_mm)
    z = np.arange(0.5 * step_mm, c_mm + r_mm + step_mm, step_mm)
    R, Z = np.meshgrid(rho, z, indexing="ij")
    inside_e = (R / a_mm) ** 2 + (Z / c_mm) ** 2 <= 1.0
    d2 = np.full(R.shape, np.inf)
    for k in range(0, t.size, 200):  # chunks bound the temporary arrays
        d2 = np.minimum(d2, ((R[..., None] - ex[k:k + 200]) ** 2 + (Z[..., None] - ez[k:k + 200]) ** 2).min(axis=-1))
    inside = inside_e | (d2 <= r_mm ** 2)
    return float(2 * (2 * np.pi * (R * inside).sum() * step_mm * step_mm)) / 1000.0  # both z halves


# ------------------------------------------------------------------ all phantoms
@pytest.mark.parametrize("name", sorted(PHANTOMS))
def test_every_phantom_is_deterministic_hfs_and_tg263(name):
    a, b = make_phantom(name), make_phantom(name)
    # SBRT phantoms are built on the 2 mm grid the standards ask for; a whole body (TBI) on 5 mm
    # (2 mm would be ~40 M voxels), seed-implant phantoms on 1 mm (a seed is 4.5 x 0.8 mm).
    step = {"tbi": 5.0}.get(name, 1.0 if name.startswith("prostate_seeds") else 2.0)
    assert a.patient_position == "HFS" and a.grid.spacing_mm == (step, step, step)
    assert a.patient.frame_of_reference_uid == b.patient.frame_of_reference_uid
    assert a.patient.frame_of_reference_uid.startswith("1.2.")
    assert np.array_equal(a.hu, b.hu)
    for key, s in a.structures.items():
        assert normalize_name(key) == key, f"{key} is not a TG-263 name"
        assert not s.is_empty
    assert a.body is not None
    # The origin is near the patient centre.
    lo, hi = a.grid.bounds_mm()
    assert np.all(np.abs(lo + hi) < 4.0)


def test_unknown_phantom_and_bad_spacing_are_clear_errors():
    with pytest.raises(InputError, match="available: .*spine.*liver"):
        make_phantom("pelvis")
    with pytest.raises(InputError, match="spacing_mm"):
        make_phantom("spine", spacing_mm=0.0)


# ------------------------------------------------------------------------ spine
def test_spine_volumes_match_the_analytic_shapes(spine):
    # Cord: cylinder of radius 5 mm over the 140 mm of the phantom; GTV:
    # ellipsoid 18.5 x 11 x 12 mm (10.2 cc, in the 10-20 cc the issue asks
    # for).  Sub-voxel occupancy keeps them within 2 %.
    cord = spine.structure("SpinalCord")
    assert abs(cord.volume_cc / (np.pi * 5.0 ** 2 * 140.0 / 1000) - 1) < 0.02
    gtv = spine.structure("GTV")
    assert abs(gtv.volume_cc / (4 / 3 * np.pi * 18.5 * 11 * 12 / 1000) - 1) < 0.02
    prv = spine.structure("SpinalCord_PRV02")
    assert prv.role is StructureRole.PRV
    assert abs(prv.volume_cc / (np.pi * 7.0 ** 2 * 140.0 / 1000) - 1) < 0.02


def test_spine_targets_follow_the_bone_standard(spine):
    gtv, ctv, ptv = (spine.structure(n) for n in ("GTV", "CTV", "PTV"))
    assert np.all(ptv.mask[ctv.mask]) and ptv.volume_cc > ctv.volume_cc > gtv.volume_cc
    # CTV = GTV + 5 mm within bone: the added voxels are bone (RED >= 1.25);
    # a few percent of boundary voxels (centre rule vs the coarsened margin) are tolerated.
    added = ctv.mask & ~gtv.mask
    assert np.mean(spine.density[added] >= 1.25) > 0.9
    # PTV overlaps the cord PRV, so PTV! (optimised on) differs from the PTV.
    prv = spine.structure("SpinalCord_PRV02")
    overlap = ptv.mask & prv.mask
    assert overlap.sum() > 0
    bang = ptv_minus(ptv, prv)
    assert bang.n_voxels == ptv.n_voxels - int(overlap.sum())
    # The GTV keeps >= 2.5 mm from the cord (the standard's eligibility rule).
    d = distance_map_mm(spine.structure("SpinalCord"), max_distance_mm=20.0)
    assert float(d[gtv.mask].min()) >= 2.5


def test_spine_densities(spine):
    assert density_at(spine, (-100.0, 0.0, 0.0)) == pytest.approx(0.25, abs=0.01)  # right lung
    assert density_at(spine, (0.0, 40.0, 32.0)) == pytest.approx(1.30, abs=0.02)  # cancellous, untreated level
    assert density_at(spine, (0.0, 40.0 + 17.0, 32.0)) == pytest.approx(1.60, abs=0.02)  # cortical shell
    assert density_at(spine, (0.0, -105.0, 0.0)) == pytest.approx(1.04, abs=0.02)  # chest wall soft tissue
    assert density_at(spine, (0.0, 64.5, 0.0)) == pytest.approx(1.03, abs=0.02)  # cord


# ------------------------------------------------------------------------ liver
def test_liver_target_volumes_follow_the_margins(liver):
    gtv, ctv, itv, ptv = (liver.structure(n) for n in ("GTV", "CTV", "ITV", "PTV"))
    assert abs(gtv.volume_cc / (4 / 3 * np.pi * 17.5 ** 3 / 1000) - 1) < 0.02
    assert np.array_equal(ctv.mask, gtv.mask)
    # ITV = GTV sphere + (2, 2, 5) mm; PTV = ITV + 5 mm: Minkowski sums of the
    # sphere with the motion spheroid.  The isotropic 5 mm margin is accurate
    # to ~1 %; the anisotropic 2 mm motion margin uses the point estimate of
    # case/distance.py, measured -2.9 % in volume (about -0.15 mm of margin):
    # 4 % for the ITV, 3 % for the PTV (which inherits the ITV's deficit).
    itv_ref = spheroid_sum_volume_cc(2.0, 5.0, 17.5)
    ptv_ref = spheroid_sum_volume_cc(2.0, 5.0, 22.5)
    assert abs(itv.volume_cc / itv_ref - 1) < 0.04
    assert abs(ptv.volume_cc / ptv_ref - 1) < 0.03


def test_liver_is_plannable(liver):
    vol = liver.structure("Liver").volume_cc
    assert 1200 <= vol <= 1600
    assert not np.any(liver.structure("GTV").mask & ~liver.structure("Liver").mask)
    d = distance_map_mm(liver.structure("PTV"), max_distance_mm=60.0)
    # GI organs at least 1.5 cm from the PTV; a rib within about 1 cm, so the rib limit matters.
    for gi in ("Stomach", "Duodenum"):
        assert float(d[liver.structure(gi).mask].min()) >= 15.0
    assert float(d[liver.structure("Rib").mask].min()) <= 12.0
    # Lungs above the right dome, at lung density.
    assert density_at(liver, (-90.0, 0.0, 70.0)) == pytest.approx(0.25, abs=0.01)
    assert density_at(liver, (-60.0, 0.0, -10.0)) == pytest.approx(1.06, abs=0.02)


# -------------------------------------------------------------------- lung slab
def test_lung_slab_matches_the_reference_geometry():
    case = make_phantom("lung_slab")
    md = case.metadata
    assert md["surface_y_mm"] == pytest.approx(-150.0) and md["depth_axis"] == "+y"
    y = case.grid.axis_coordinates_mm()[1]
    depth = y - md["surface_y_mm"]
    profile = case.density[case.grid.nz // 2, :, case.grid.nx // 2]
    assert np.allclose(profile[depth < 50], 1.0, atol=0.01)
    assert np.allclose(profile[(depth > 50) & (depth < 150)], 0.25, atol=0.01)
    assert np.allclose(profile[depth > 150], 1.0, atol=0.01)
    assert case.structure("Lung_Slab").volume_cc == pytest.approx(300 * 300 * 100 / 1000, rel=1e-6)
    # On 3 mm voxels 50 mm is not a whole number of voxels: the boundary voxel
    # gets the volume-weighted density and the slab keeps its exact volume.
    c3 = make_phantom("lung_slab", spacing_mm=3.0)
    assert c3.structure("Lung_Slab").volume_cc == pytest.approx(9000.0, rel=1e-4)
    mean_red = float(c3.density[c3.grid.nz // 2, :, c3.grid.nx // 2].mean())
    assert mean_red == pytest.approx((200 * 1.0 + 100 * 0.25) / 300, abs=0.01)


# ----------------------------------------------------------------------- cshape
def test_cshape_matches_the_tg119_geometry():
    case = make_phantom("cshape")
    ptv, core = case.structure("PTV"), case.structure("Core")
    c_ref = np.pi * (37.0 ** 2 - 15.0 ** 2) * (270.0 / 360.0) * 80.0 / 1000
    assert abs(ptv.volume_cc / c_ref - 1) < 0.02
    assert abs(core.volume_cc / (np.pi * 10.0 ** 2 * 100.0 / 1000) - 1) < 0.02
    d = distance_map_mm(core, max_distance_mm=10.0)
    assert float(d[ptv.mask].min()) >= 4.0  # the 5 mm gap

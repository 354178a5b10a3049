"""Like-for-like comparison with matRad: its photon machine and its own influence matrix.

``../shared/data/matrad/photons_testData.mat`` is matRad's photon test case: a
water box (RED 1, 8 x 18 x 8 voxels of 10 mm inside air of RED 0.001), two
beams (gantry 0 and 180) of five 10 mm bixels each, and the ``dij`` matRad
computed with ``photons_Generic.mat``.  The issue's criterion: the engine with
that machine reproduces the stored matrix within 3 % of each beamlet's
maximum for >= 95 % of the entries.

matRad conventions used here (read from the file): ``ct.cube`` is indexed
(y, x, z); voxel indices are 1-based, column-major over that cube; world
coordinates are ``dij.ctGrid.x/y/z``; isocentres are in the same world
coordinates; a ray at beam's-eye-view ``(x, 0, z)`` is the beamlet centred at
IEC BEAM LIMITING DEVICE ``(Xb, Yb) = (x, z)``, and gantry 0 sends the beam
along +y (as IEC 61217 for a head-first supine patient).  matRad computes dose
only in the voxels of its structure set (``cst``), so those are the rows compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio

from sbrtplan.beams import BeamGeometry, BeamletGrid
from sbrtplan.case import Grid
from sbrtplan.dose_engine import influence_matrix, load_matrad_machine

from conftest import require_shared


@pytest.fixture(scope="module")
def matrad_case():
    path = require_shared("matrad", "photons_testData.mat")
    machine = load_matrad_machine(require_shared("matrad", "photons_Generic.mat"))
    m = sio.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    cube = np.asarray(m["ct"].cube, dtype=float)               # (ny, nx, nz)
    ny, nx, nz = cube.shape
    cg = m["dij"].ctGrid
    res = (float(cg.resolution.x), float(cg.resolution.y), float(cg.resolution.z))
    grid = Grid((nz, ny, nx), res, (float(cg.x[0]), float(cg.y[0]), float(cg.z[0])))
    density = np.ascontiguousarray(np.transpose(cube, (2, 0, 1)), dtype=np.float32)
    # our C-order (z, y, x) flat index -> matRad's 0-based column-major (y, x, z) index
    k, j, i = np.unravel_index(np.arange(grid.size), grid.shape)
    to_matrad = j + ny * (i + nx * k)
    geoms, grids, order = [], [], []
    offset = 0
    for s in np.atleast_1d(m["stf"]):
        iso = tuple(float(v) for v in np.atleast_1d(s.isoCenter))
        geoms.append(BeamGeometry(float(s.gantryAngle), 0.0, float(s.couchAngle), iso, float(s.SAD)))
        rays = np.array([np.atleast_1d(r.rayPos_bev) for r in np.atleast_1d(s.ray)], dtype=float)
        w = float(s.bixelWidth)
        xs = np.unique(np.round(rays[:, 0], 6))
        zs = np.unique(np.round(rays[:, 2], 6))
        ix = np.searchsorted(xs, np.round(rays[:, 0], 6))
        iy = np.searchsorted(zs, np.round(rays[:, 2], 6))
        active = np.zeros((zs.size, xs.size), bool)
        active[iy, ix] = True
        grids.append(BeamletGrid(np.append(xs - w / 2, xs[-1] + w / 2), np.append(zs - w / 2, zs[-1] + w / 2), active))
        col = (np.cumsum(active.ravel()) - 1).reshape(active.shape)
        order.extend(offset + col[iy, ix])                      # our column of each matRad bixel, in matRad order
        offset += int(active.sum())
    cst_vox = np.unique(np.concatenate([np.atleast_1d(r[3]).astype(np.int64) - 1 for r in m["cst"]]))
    ours_rows = np.flatnonzero(np.isin(to_matrad, cst_vox))
    ref = m["dij"].physicalDose.tocsr()[to_matrad[ours_rows]].toarray()
    return {"density": density, "grid": grid, "geoms": geoms, "grids": grids, "order": np.array(order),
            "rows": ours_rows, "ref": ref, "machine": machine, "w": np.asarray(m["resultGUI"].w, float),
            "ref_dose": np.asarray(m["resultGUI"].physicalDose, float), "to_matrad": to_matrad}


@pytest.fixture(scope="module")
def ours_influence(matrad_case):
    c = matrad_case
    D = influence_matrix(c["density"], c["grid"], c["geoms"], c["grids"], c["rows"], model=c["machine"],
                         cutoff_mm=50.0)            # matRad's default geometric lateral cut-off
    assert np.array_equal(D.voxel_indices, c["rows"])
    return D


@pytest.fixture(scope="module")
def ours(matrad_case, ours_influence):
    return ours_influence.matrix.toarray()[:, matrad_case["order"]]


def test_matrad_dij_reproduced(matrad_case, ours):
    """>= 95 % of entries within 3 % of each beamlet's maximum (issue criterion)."""
    ref = matrad_case["ref"]
    assert ref.shape == ours.shape == (matrad_case["rows"].size, 10)
    fractions = []
    for b in range(ref.shape[1]):
        mx = ref[:, b].max()
        entries = (ref[:, b] > 0) | (ours[:, b] > 0)
        err = np.abs(ours[entries, b] - ref[entries, b]) / mx
        fractions.append(np.mean(err <= 0.03))
        # the beamlet's maximum itself agrees to 0.5 % (same kernels, depths and inverse square)
        assert abs(ours[:, b].max() / mx - 1.0) < 0.005
    assert min(fractions) >= 0.95


def test_matrad_plan_dose_reproduced(matrad_case, ours):
    """matRad's stored plan dose (dij @ w) is reproduced within 3 % of its maximum everywhere in its voxel set."""
    c = matrad_case
    ref = np.asarray(c["ref_dose"], float).ravel(order="F")[c["to_matrad"][c["rows"]]]
    dose = ours @ c["w"]
    assert np.max(np.abs(dose - ref)) <= 0.03 * ref.max()


def test_exported_dij_matches_matrads_own_dij(matrad_case, ours_influence, tmp_path):
    """``write_matrad_dij`` of this engine's matrix, read with scipy.io.loadmat, next to the dij matRad
    itself saved for the same case: same grid description and bookkeeping, same matrix within the
    issue's 3 % criterion (rows in matRad's own column-major order, no re-mapping by the test)."""
    from sbrtplan.io import write_matrad_dij

    c = matrad_case
    out = write_matrad_dij(tmp_path / "dij.mat", ours_influence)  # default: MATLAB v5
    assert out.read_bytes()[:19] == b"MATLAB 5.0 MAT-file"
    kw = dict(struct_as_record=False, squeeze_me=True, mat_dtype=True)
    mine = sio.loadmat(str(out), **kw)["dij"]
    ref = sio.loadmat(str(require_shared("matrad", "photons_testData.mat")), **kw)["dij"]
    for grid in ("doseGrid", "ctGrid"):
        a, b = getattr(mine, grid), getattr(ref, grid)
        for f in ("dimensions", "numOfVoxels", "x", "y", "z"):
            assert np.array_equal(np.atleast_1d(getattr(a, f)), np.atleast_1d(getattr(b, f))), (grid, f)
        assert all(getattr(a.resolution, k) == getattr(b.resolution, k) for k in "xyz")
    for f in ("numOfBeams", "numOfScenarios", "numOfRaysPerBeam", "totalNumOfBixels", "totalNumOfRays",
              "bixelNum", "rayNum", "beamNum", "minMU", "maxMU"):
        assert np.array_equal(np.atleast_1d(getattr(mine, f)), np.atleast_1d(getattr(ref, f))), f
    m, r = mine.physicalDose.tocsc(), ref.physicalDose.tocsc()
    assert m.shape == r.shape == (2000, 10)
    m = m.toarray()[:, c["order"]]  # our beamlet columns in matRad's bixel order
    rows = c["to_matrad"][c["rows"]]  # matRad's rows of the voxels both engines computed
    assert not np.any(np.delete(m, rows, axis=0))  # nothing outside them
    r = r.toarray()[rows]
    for b in range(10):
        mx = r[:, b].max()
        entries = (r[:, b] > 0) | (m[rows, b] > 0)
        assert np.mean(np.abs(m[rows][entries, b] - r[entries, b]) / mx <= 0.03) >= 0.95

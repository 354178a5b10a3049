"""matRad import/export: TG119 geometry, index conventions, v7.3 round trip, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, sparse

from sbrtplan.case import Case, Grid, Structure, StructureRole
from sbrtplan.errors import InputError
from sbrtplan.io import read_matrad, write_matrad, write_matrad_dij

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def tg119():
    from conftest import SHARED_DATA

    p = SHARED_DATA / "matrad" / "TG119.mat"
    if not p.is_file():
        pytest.skip(f"reference data not available: {p}")
    return p, read_matrad(p)


def test_tg119_grid_and_volumes(tg119):
    _, case = tg119
    g = case.grid
    assert g.shape == (129, 167, 167)  # z, y, x
    assert np.allclose(g.spacing_mm, (3.0, 3.0, 2.5))
    # issue 2 figures (voxel counts x 0.0225 cc): within 0.5 %
    assert case.structure("OuterTarget").volume_cc == pytest.approx(167.8, rel=0.005)
    assert case.structure("Core").volume_cc == pytest.approx(29.7, rel=0.005)
    assert case.structure("OuterTarget").role == StructureRole.PTV
    assert case.structure("External").original_name == "BODY"


def test_tg119_structures_consistent_with_cube(tg119):
    """A wrong index order would scatter the voxel lists over the cube; these checks would fail."""
    _, case = tg119
    body = case.structure("External").mask
    # the BODY list selects the water-like voxels of ct.cube: mean RED about 1 inside, air outside
    assert 0.9 < float(case.density[body].mean()) < 1.1
    assert float(case.density[~body].mean()) < 0.1
    for name in ("Core", "OuterTarget"):
        m = case.structure(name).mask
        assert np.all(body[m]), name  # inside the body
        assert ndimage.label(m)[1] == 1, name  # one connected piece
    core, target = case.structure("Core"), case.structure("OuterTarget")
    assert not np.any(core.mask & target.mask)
    # TG-119 C-shape: the target wraps around the core, separated from it by about 5 mm
    dist = ndimage.distance_transform_edt(~target.mask, sampling=case.grid.spacing_zyx_mm)
    gap = float(dist[core.mask].min())
    assert 2.5 <= gap <= 8.0  # 5 mm +- one voxel
    # ... and opens along y (anterior-posterior): its centroid is off the core's along y, not x
    d = target.centroid_mm() - core.centroid_mm()
    assert abs(d[1]) > 10.0 and abs(d[1]) > 5 * abs(d[0])
    # TG-119 phantom centred at the world origin (ct.x/y/z from -250 / -160 mm)
    assert np.allclose(case.grid.origin_mm, (-250.0, -250.0, -160.0))


def test_tg119_v73_round_trip(tg119, tmp_path):
    src, case = tg119
    out = write_matrad(tmp_path / "tg119_v73.mat", case, dose_gy=case.density * 2.0)
    back = read_matrad(out)
    assert back.grid == case.grid
    assert np.array_equal(back.hu, case.hu) and np.array_equal(back.density, case.density)
    assert list(back.structures) == list(case.structures)
    for name, s in case.structures.items():
        b = back.structures[name]
        assert np.array_equal(b.mask, s.mask) and b.role == s.role and b.original_name == s.original_name
        assert b.metadata["matrad"]["type"] == s.metadata["matrad"]["type"]
        # objectives (kept as metadata) survive the round trip
        assert b.metadata["matrad"]["objectives"] == s.metadata["matrad"]["objectives"]
    with h5py.File(out, "r") as f:
        assert {"ct", "cst", "resultGUI"} <= set(f.keys())
        assert {"cube", "cubeHU", "resolution", "cubeDim", "x", "y", "z"} <= set(f["ct"].keys())
        assert f["ct"].attrs["MATLAB_class"] == b"struct" and f["cst"].attrs["MATLAB_class"] == b"cell"
        assert f["cst"].shape == (6, 3)  # MATLAB 3 x 6, stored transposed
        cube = f[f["ct"]["cube"][0, 0]]
        assert cube.shape == (129, 167, 167)  # MATLAB (y, x, z) reversed
        assert np.allclose(np.asarray(f["ct"]["cubeDim"]).ravel(), (167, 167, 129))
    assert out.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"


def _small_case() -> Case:
    g = Grid(shape=(4, 5, 6), spacing_mm=(2.0, 3.0, 2.5), origin_mm=(-5.0, -6.0, 10.0))
    hu = np.arange(g.size, dtype=np.float32).reshape(g.shape) - 60.0
    mask = np.zeros(g.shape, bool)
    mask[3, 1, 4] = True  # one voxel at z index 3, y index 1, x index 4
    mask[0, 4, 0] = True
    s = Structure("PTV", g, mask, role=StructureRole.PTV)
    return Case(name="small", grid=g, hu=hu, structures={"PTV": s})


def test_written_indices_follow_matrad_conventions(tmp_path):
    case = _small_case()
    nvox = case.grid.size
    # dij: beamlet b deposits 1 Gy in voxel flat index 7 b (C order); matRad wants column-major rows
    cols = np.arange(3)
    dij = sparse.csr_matrix((np.ones(3), (7 * cols, cols)), shape=(nvox, 3))
    out = write_matrad(tmp_path / "small.mat", case, dose_gy=case.hu, dij=dij)
    with h5py.File(out, "r") as f:
        cst = f["cst"]
        cell = f[cst[3, 0]]  # MATLAB cst{1,4} (stored transposed), itself a cell of voxel lists
        vox = np.asarray(f[cell[0, 0]]).ravel()
        ny, nx, nz = 5, 6, 4
        yy, xx, zz = np.unravel_index(vox.astype(int) - 1, (ny, nx, nz), order="F")
        assert sorted(zip(zz, yy, xx)) == [(0, 4, 0), (3, 1, 4)]
        hu_cube = np.asarray(f[f["ct"]["cubeHU"][0, 0]]).T  # MATLAB (y, x, z)
        assert hu_cube[1, 4, 3] == case.hu[3, 1, 4]
        assert np.allclose(np.asarray(f["ct"]["x"]).ravel(), -5.0 + 2.0 * np.arange(6))
        assert np.allclose(np.asarray(f["resultGUI"]["physicalDose"]).T.transpose(2, 0, 1), case.hu)
        g = f[f["dij"]["physicalDose"][0, 0]]
        m = sparse.csc_matrix((g["data"][()], g["ir"][()].astype(int), g["jc"][()].astype(int)),
                              shape=(int(g.attrs["MATLAB_sparse"]), 3))
        for b in range(3):
            row = int(m[:, b].nonzero()[0][0])  # matRad voxel (0-based, column-major)
            y, x, z = np.unravel_index(row, (ny, nx, nz), order="F")
            assert np.ravel_multi_index((z, y, x), case.grid.shape) == 7 * b


def _small_influence():
    """A dose-influence matrix on the small grid: 2 beams (2 + 3 beamlets), 7 body voxels; beamlet b
    deposits 0.01 (b + 1) Gy/MU in voxel row r = b and 0.001 in row 6 (the rows given out of
    matRad's order so that the writer has to sort them within each column)."""
    from types import SimpleNamespace

    from sbrtplan.beams import BeamGeometry

    g = _small_case().grid
    vox = np.array([2, 9, 31, 57, 64, 100, 119])  # C-order flat indices on (z, y, x)
    rows = np.concatenate([np.arange(5), np.full(5, 6)])
    cols = np.concatenate([np.arange(5), np.arange(5)])
    vals = np.concatenate([0.01 * (np.arange(5) + 1), np.full(5, 0.001)]).astype(np.float32)
    m = sparse.csc_matrix((vals, (rows, cols)), shape=(vox.size, 5))
    geoms = [BeamGeometry(0.0, 0.0, 0.0, (1.0, 2.0, 3.0)), BeamGeometry(90.0, 0.0, 270.0, (1.0, 2.0, 3.0))]
    return SimpleNamespace(matrix=m, voxel_indices=vox, grid=g, geometries=geoms,
                           beam_offsets=np.array([0, 2, 5]))


def test_write_matrad_dij_follows_matrad_conventions(tmp_path):
    D = _small_influence()
    g = D.grid
    nz, ny, nx = g.shape
    # a tiny batch forces the column-batched writer through several batches
    out = write_matrad_dij(tmp_path / "dij.mat", D, batch_nnz=3)
    assert out.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"  # MATLAB header in the 512-byte user block
    with h5py.File(out, "r") as f:
        d = f["dij"]
        assert d.attrs["MATLAB_class"] == b"struct"
        fields = {b"".join(x).decode() for x in d.attrs["MATLAB_fields"]}
        assert fields == set(d.keys())  # MATLAB lists the fields it loads
        assert float(d["numOfBeams"][0, 0]) == 2 and float(d["totalNumOfBixels"][0, 0]) == 5
        assert np.array_equal(np.asarray(d["doseGrid"]["dimensions"]).ravel(), [ny, nx, nz])
        assert float(d["doseGrid"]["resolution"]["y"][0, 0]) == g.spacing_mm[1]
        assert np.allclose(np.asarray(d["ctGrid"]["x"]).ravel(), g.axis_coordinates_mm()[0])
        # matRad's bookkeeping vectors are columns (totalNumOfBixels x 1; HDF5 stores them transposed)
        assert d["beamNum"].shape == (1, 5) and np.array_equal(d["beamNum"][0], [1, 1, 2, 2, 2])
        assert np.array_equal(d["rayNum"][0], [1, 2, 1, 2, 3])
        assert np.array_equal(np.asarray(d["numOfRaysPerBeam"]).ravel(), [2, 3])
        sg = f[d["physicalDose"][0, 0]]
        assert sg.attrs["MATLAB_class"] == b"double" and int(sg.attrs["MATLAB_sparse"]) == g.size
        jc, ir, data = sg["jc"][()].astype(int), sg["ir"][()].astype(int), sg["data"][()]
        assert data.dtype == np.float64
        stf = f["stf_angles"]
        assert np.array_equal(np.asarray(stf["gantryAngles"]).ravel(), [0, 90])
        assert np.array_equal(np.asarray(stf["couchAngles"]).ravel(), [0, 270])
    # MATLAB sparse: rows sorted within every column ...
    for c in range(5):
        assert np.all(np.diff(ir[jc[c]:jc[c + 1]]) > 0)
    # ... and the same dose in the same voxel: matRad row (0-based, column-major on (y, x, z)) -> (z, y, x)
    m = sparse.csc_matrix((data, ir, jc), shape=(g.size, 5))
    dense = np.zeros((g.size, 5))
    yy, xx, zz = np.unravel_index(np.arange(g.size), (ny, nx, nz), order="F")
    dense[np.ravel_multi_index((zz, yy, xx), g.shape)] = m.toarray()
    expected = np.zeros((g.size, 5))
    expected[D.voxel_indices] = D.matrix.toarray()
    assert np.allclose(dense, expected, rtol=1e-7, atol=0)  # float32 -> double exactly


def test_write_matrad_dij_refuses_inconsistent_input(tmp_path):
    D = _small_influence()
    D.beam_offsets = np.array([0, 2, 4])
    with pytest.raises(InputError, match="beam_offsets"):
        write_matrad_dij(tmp_path / "x.mat", D)
    D = _small_influence()
    D.voxel_indices = D.voxel_indices[:-1]
    with pytest.raises(InputError, match="7 rows but 6 voxel indices"):
        write_matrad_dij(tmp_path / "x.mat", D)
    with pytest.raises(InputError, match="influence matrix"):
        write_matrad_dij(tmp_path / "x.mat", object())
    assert not (tmp_path / "x.mat").exists()


def test_v5_read_and_matrad_default_axes(tmp_path):
    import scipy.io as sio

    ny, nx, nz = 4, 6, 3

    def cell(value):
        c = np.empty((1, 1), dtype=object)
        c[0, 0] = value
        return c

    ct = {"cube": cell(np.ones((ny, nx, nz))), "resolution": {"x": 2.0, "y": 3.0, "z": 5.0},
          "cubeDim": np.array([ny, nx, nz])}
    cst = np.empty((1, 6), dtype=object)
    cst[0, :] = [0, "lt lung", "OAR", cell(np.array([[1.0], [ny * nx + 2.0]])),
                 {"Priority": 2, "alphaX": 0.1, "betaX": 0.05}, np.empty((1, 0), dtype=object)]
    sio.savemat(tmp_path / "v5.mat", {"ct": ct, "cst": cst})
    case = read_matrad(tmp_path / "v5.mat")
    assert case.grid.shape == (nz, ny, nx)
    # no ct.x/y/z: matRad's default world axes put voxel i of n at (i - n/2) h
    assert np.allclose(case.grid.origin_mm, (-6.0, -6.0, -7.5))
    lung = case.structure("Lung_L")
    # index 1 -> (y, x, z) = (0, 0, 0); index ny*nx + 2 -> (1, 0, 1)
    assert sorted(map(tuple, np.argwhere(lung.mask))) == [(0, 0, 0), (1, 1, 0)]
    assert lung.role == StructureRole.OAR


def test_bad_matrad_files(tmp_path):
    import scipy.io as sio

    sio.savemat(tmp_path / "noct.mat", {"cst": np.zeros((1, 1))})
    with pytest.raises(InputError, match="noct.mat.*no 'ct'"):
        read_matrad(tmp_path / "noct.mat")
    with h5py.File(tmp_path / "noct73.mat", "w", userblock_size=512) as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(InputError, match="noct73.mat.*no 'ct'"):
        read_matrad(tmp_path / "noct73.mat")
    (tmp_path / "junk.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(InputError, match="junk.mat"):
        read_matrad(tmp_path / "junk.mat")
    with pytest.raises(InputError, match="no such"):
        read_matrad(tmp_path / "missing.mat")

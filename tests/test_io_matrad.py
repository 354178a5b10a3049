"""matRad import/export: TG119 geometry, index conventions, matRad's own layout, v5 and v7.3 round trips, bad files."""

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


@pytest.fixture(scope="module")
def tg119_written(tg119, tmp_path_factory):
    """TG119 with a dose (2 Gy per unit RED, so the dose differs from every ct cube) written in both formats."""
    _, case = tg119
    d = tmp_path_factory.mktemp("tg119")
    dose = case.density * 2.0
    v5 = write_matrad(d / "tg119_v5.mat", case, dose_gy=dose)  # the default format
    v73 = write_matrad(d / "tg119_v73.mat", case, dose_gy=dose, mat_format="v7.3")
    return case, dose, v5, v73


def test_default_format_is_v5_and_v73_on_request(tg119_written):
    _, _, v5, v73 = tg119_written
    assert v5.read_bytes()[:19] == b"MATLAB 5.0 MAT-file"  # what MATLAB's save -v7 writes
    assert v73.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"  # header in the 512-byte HDF5 user block
    assert h5py.is_hdf5(v73) and not h5py.is_hdf5(v5)


def _signature(v):
    """MATLAB class / shape skeleton of a loadmat(mat_dtype=True, struct_as_record=False) value."""
    from scipy.io.matlab import mat_struct

    if isinstance(v, mat_struct):
        return {f: _signature(getattr(v, f)) for f in v._fieldnames}
    if sparse.issparse(v):
        return ("sparse", v.shape[0] > 1, v.shape[1] > 1)
    if v.dtype == object:
        kind = "struct" if v.size and isinstance(v.ravel()[0], mat_struct) else "cell"
        return (kind, v.shape, _signature(v.ravel()[0]) if v.size else None)
    if v.dtype.kind == "U":
        return ("char",)
    # shape class: scalar, row, column or n-d; numeric class (float = MATLAB double with mat_dtype)
    shape = ("1x1" if v.size == 1 else "row" if v.ndim == 2 and v.shape[0] == 1 else
             "col" if v.ndim == 2 and v.shape[1] == 1 else f"{v.ndim}d")
    return (v.dtype.kind, shape)


def test_v5_layout_is_matrads_own(tg119, tg119_written):
    """Field by field against TG119.mat as MATLAB/matRad saved it: classes, shapes, orientation, values."""
    import scipy.io as sio

    src, case = tg119
    _, dose, v5, _ = tg119_written
    kw = dict(struct_as_record=False, squeeze_me=False, mat_dtype=True)
    ref, ours = sio.loadmat(str(src), **kw), sio.loadmat(str(v5), **kw)
    rct, oct_ = ref["ct"][0, 0], ours["ct"][0, 0]
    # matRad's ct fields we write, with MATLAB's own classes and orientations (dicomMeta and
    # timeStamp are DICOM import records that a case built by sbrtplan does not have)
    for f in ("cube", "resolution", "x", "y", "z", "cubeDim", "numOfCtScen", "cubeHU", "hlut"):
        assert _signature(getattr(oct_, f)) == _signature(getattr(rct, f)), f
        if f not in ("hlut",):
            a, b = getattr(oct_, f), getattr(rct, f)
            if a.dtype == object and f in ("cube", "cubeHU"):
                # same (y, x, z) cube; sbrtplan keeps cubes in float32 (relative rounding 2^-24 = 6e-8;
                # TG119's HU derive from its RED and are not integers)
                assert np.allclose(a[0, 0], b[0, 0], rtol=1e-7, atol=0), f
            elif f == "resolution":
                assert all(getattr(a[0, 0], k).item() == getattr(b[0, 0], k).item() for k in "xyz")
            else:
                assert np.array_equal(a, b), f
    assert oct_.dicomInfo[0, 0].PatientPosition[0] == rct.dicomInfo[0, 0].PatientPosition[0] == "HFS"
    rcst, ocst = ref["cst"], ours["cst"]
    assert ocst.shape == rcst.shape == (3, 6)
    for r in range(3):
        assert [_signature(x) for x in ocst[r]] == [_signature(x) for x in rcst[r]], r
        assert ocst[r, 1][0] == rcst[r, 1][0] and ocst[r, 2][0] == rcst[r, 2][0]
        assert float(ocst[r, 0][0, 0]) == float(rcst[r, 0][0, 0])  # matRad's 0-based row index
        # the same 1-based column-major voxel list (matRad keeps it sorted; so do we)
        assert np.array_equal(ocst[r, 3][0, 0], rcst[r, 3][0, 0])
        ob_o, ob_r = ocst[r, 5][0, 0][0, 0], rcst[r, 5][0, 0][0, 0]
        assert ob_o.className[0] == ob_r.className[0] and ob_o.penalty.item() == ob_r.penalty.item()
    # resultGUI.physicalDose: (y, x, z) double, as matRad's own results (photons_testData.mat)
    pd = ours["resultGUI"][0, 0].physicalDose
    assert pd.shape == (167, 167, 129) and np.allclose(pd.transpose(2, 0, 1), dose, rtol=1e-7, atol=0)


def test_tg119_v5_and_v73_read_back_identical(tg119, tg119_written):
    _, case = tg119
    _, dose, v5, v73 = tg119_written
    a, b = read_matrad(v5), read_matrad(v73)
    for back in (a, b):
        assert back.grid == case.grid
        assert np.array_equal(back.hu, case.hu) and np.array_equal(back.density, case.density)
        assert list(back.structures) == list(case.structures)
        for name, s in case.structures.items():
            o = back.structures[name]
            assert np.array_equal(o.mask, s.mask) and o.role == s.role and o.original_name == s.original_name
            assert o.color_rgb == s.color_rgb
            for key in ("type", "tissue", "objectives", "index"):
                assert o.metadata["matrad"][key] == s.metadata["matrad"][key], (name, key)
    # and the dose written by both: same cube, read by the two independent readers
    import scipy.io as sio

    d5 = sio.loadmat(str(v5), squeeze_me=True)["resultGUI"]["physicalDose"].item()
    with h5py.File(v73, "r") as f:
        d73 = np.asarray(f["resultGUI"]["physicalDose"]).T  # HDF5 holds MATLAB arrays transposed
        assert f["cst"].shape == (6, 3)  # MATLAB 3 x 6, stored transposed
        assert f["cst"].attrs["MATLAB_class"] == b"cell" and f["ct"].attrs["MATLAB_class"] == b"struct"
    assert np.array_equal(d5, d73)
    assert np.array_equal(d5.transpose(2, 0, 1), dose.astype(np.float64))


def _small_case() -> Case:
    g = Grid(shape=(4, 5, 6), spacing_mm=(2.0, 3.0, 2.5), origin_mm=(-5.0, -6.0, 10.0))
    hu = np.arange(g.size, dtype=np.float32).reshape(g.shape) - 60.0
    mask = np.zeros(g.shape, bool)
    mask[3, 1, 4] = True  # one voxel at z index 3, y index 1, x index 4
    mask[0, 4, 0] = True
    s = Structure("PTV", g, mask, role=StructureRole.PTV)
    return Case(name="small", grid=g, hu=hu, structures={"PTV": s})


def _read_independently(path, fmt: str) -> dict:
    """The matRad fields the tests check, read with scipy.io.loadmat (v5) or h5py (v7.3), MATLAB-oriented."""
    if fmt == "v5":
        import scipy.io as sio

        d = sio.loadmat(str(path), struct_as_record=False, squeeze_me=False)
        out = {"cst_shape": d["cst"].shape, "vox": d["cst"][0, 3][0, 0], "names": [r[1][0] for r in d["cst"]]}
        if "ct" in d:
            ct = d["ct"][0, 0]
            out.update(cubeHU=ct.cubeHU[0, 0], x=ct.x, resultGUI=d["resultGUI"][0, 0].physicalDose)
        if "dij" in d:
            out["dij_dose"] = sparse.csc_matrix(d["dij"][0, 0].physicalDose[0, 0])
        return out
    with h5py.File(path, "r") as f:
        cst = f["cst"]
        cell = f[cst[3, 0]]  # MATLAB cst{1,4} (stored transposed), itself a cell of voxel lists
        out = {"cst_shape": cst.shape[::-1], "vox": np.asarray(f[cell[0, 0]]).T,
               "names": ["".join(map(chr, np.asarray(f[r]).ravel())) for r in cst[1]],
               "cubeHU": np.asarray(f[f["ct"]["cubeHU"][0, 0]]).T, "x": np.asarray(f["ct"]["x"]).T,
               "resultGUI": np.asarray(f["resultGUI"]["physicalDose"]).T}
        g = f[f["dij"]["physicalDose"][0, 0]]
        out["dij_dose"] = sparse.csc_matrix((g["data"][()], g["ir"][()].astype(int), g["jc"][()].astype(int)),
                                            shape=(int(g.attrs["MATLAB_sparse"]), g["jc"].shape[0] - 1))
    return out


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_written_indices_follow_matrad_conventions(tmp_path, fmt):
    case = _small_case()
    nvox = case.grid.size
    ny, nx, nz = 5, 6, 4
    # dij: beamlet b deposits 1 Gy in voxel flat index 7 b (C order); matRad wants column-major rows
    cols = np.arange(3)
    dij = sparse.csr_matrix((np.ones(3), (7 * cols, cols)), shape=(nvox, 3))
    out = write_matrad(tmp_path / "small.mat", case, dose_gy=case.hu, dij=dij, mat_format=fmt)
    r = _read_independently(out, fmt)
    assert r["cst_shape"] == (1, 6) and r["names"] == ["PTV"]
    assert r["vox"].shape == (2, 1)  # a column of 1-based indices, as matRad's own cst
    yy, xx, zz = np.unravel_index(r["vox"].ravel().astype(int) - 1, (ny, nx, nz), order="F")
    assert sorted(zip(zz, yy, xx)) == [(0, 4, 0), (3, 1, 4)]
    assert r["cubeHU"].shape == (ny, nx, nz) and r["cubeHU"][1, 4, 3] == case.hu[3, 1, 4]
    assert r["x"].shape == (1, nx) and np.allclose(r["x"].ravel(), -5.0 + 2.0 * np.arange(6))
    assert np.allclose(r["resultGUI"].transpose(2, 0, 1), case.hu)
    m = r["dij_dose"]
    assert m.shape == (nvox, 3)
    for b in range(3):
        row = int(m[:, [b]].nonzero()[0][0])  # matRad voxel (0-based, column-major)
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


def _dij_fields(path, fmt: str) -> tuple[dict, sparse.csc_matrix]:
    """dij fields (MATLAB orientation) and dij.physicalDose{1}, read independently of the package."""
    if fmt == "v5":
        import scipy.io as sio

        d = sio.loadmat(str(path), struct_as_record=False, squeeze_me=False)
        dij = d["dij"][0, 0]
        fields = {k: getattr(dij, k) for k in dij._fieldnames}
        for k in ("doseGrid", "ctGrid"):
            gs = fields[k][0, 0]
            fields[k] = {f: getattr(gs, f) for f in gs._fieldnames}
            fields[k]["resolution"] = {f: getattr(fields[k]["resolution"][0, 0], f) for f in "xyz"}
        stf = d["pln"][0, 0].propStf[0, 0]
        fields["propStf"] = {f: getattr(stf, f) for f in stf._fieldnames}
        m = sparse.csc_matrix(fields.pop("physicalDose")[0, 0])
        return fields, m
    with h5py.File(path, "r") as f:
        d = f["dij"]
        names = {b"".join(x).decode() for x in d.attrs["MATLAB_fields"]}
        assert names == set(d.keys())  # MATLAB lists the fields it loads
        fields = {k: np.asarray(d[k]).T for k in d.keys() if k not in ("doseGrid", "ctGrid", "physicalDose")}
        for k in ("doseGrid", "ctGrid"):
            fields[k] = {f: np.asarray(d[k][f]).T for f in d[k].keys() if f != "resolution"}
            fields[k]["resolution"] = {f: np.asarray(d[k]["resolution"][f]).T for f in "xyz"}
        stf = f["pln"]["propStf"]
        fields["propStf"] = {k: np.asarray(stf[k]).T for k in stf.keys()}
        sg = f[d["physicalDose"][0, 0]]
        assert sg.attrs["MATLAB_class"] == b"double" and sg["data"].dtype == np.float64
        jc = sg["jc"][()].astype(int)
        m = sparse.csc_matrix((sg["data"][()], sg["ir"][()].astype(int), jc),
                              shape=(int(sg.attrs["MATLAB_sparse"]), jc.size - 1))
        return fields, m


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_write_matrad_dij_follows_matrad_conventions(tmp_path, fmt):
    D = _small_influence()
    g = D.grid
    nz, ny, nx = g.shape
    # a tiny batch forces the column-batched v7.3 writer through several batches
    out = write_matrad_dij(tmp_path / "dij.mat", D, batch_nnz=3, mat_format=fmt)
    d, m = _dij_fields(out, fmt)
    assert d["numOfBeams"].item() == 2 and d["totalNumOfBixels"].item() == 5
    assert np.array_equal(d["doseGrid"]["dimensions"], [[ny, nx, nz]])  # matRad: [ny nx nz], a row
    assert d["doseGrid"]["resolution"]["y"].item() == g.spacing_mm[1]
    assert d["ctGrid"]["x"].shape == (1, nx) and np.allclose(d["ctGrid"]["x"].ravel(), g.axis_coordinates_mm()[0])
    # matRad's bookkeeping vectors are columns (totalNumOfBixels x 1), numOfRaysPerBeam a row
    assert d["beamNum"].shape == (5, 1) and np.array_equal(d["beamNum"].ravel(), [1, 1, 2, 2, 2])
    assert np.array_equal(d["rayNum"].ravel(), [1, 2, 1, 2, 3]) and np.all(d["bixelNum"] == 1)
    assert np.array_equal(d["numOfRaysPerBeam"], [[2, 3]])
    assert np.array_equal(d["propStf"]["gantryAngles"].ravel(), [0, 90])
    assert np.array_equal(d["propStf"]["couchAngles"].ravel(), [0, 270])
    assert d["propStf"]["isoCenter"].shape == (2, 3)  # one row per beam, as matRad's pln.propStf
    assert m.shape == (g.size, 5)
    # MATLAB sparse: rows sorted within every column ...
    for c in range(5):
        assert np.all(np.diff(m.indices[m.indptr[c]:m.indptr[c + 1]]) > 0)
    # ... and the same dose in the same voxel: matRad row (0-based, column-major on (y, x, z)) -> (z, y, x)
    dense = np.zeros((g.size, 5))
    yy, xx, zz = np.unravel_index(np.arange(g.size), (ny, nx, nz), order="F")
    dense[np.ravel_multi_index((zz, yy, xx), g.shape)] = m.toarray()
    expected = np.zeros((g.size, 5))
    expected[D.voxel_indices] = D.matrix.toarray()
    assert np.allclose(dense, expected, rtol=1e-7, atol=0)  # float32 -> double exactly


def test_dij_v5_and_v73_identical(tmp_path):
    D = _small_influence()
    d5, m5 = _dij_fields(write_matrad_dij(tmp_path / "a.mat", D, mat_format="v5"), "v5")
    d73, m73 = _dij_fields(write_matrad_dij(tmp_path / "b.mat", D, mat_format="v7.3"), "v7.3")
    assert (m5 != m73).nnz == 0
    for k in ("numOfRaysPerBeam", "beamNum", "rayNum", "bixelNum", "maxMU", "minMU"):
        assert np.array_equal(d5[k], d73[k]), k


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


def test_auto_format_switches_to_v73_beyond_the_v5_limit(tmp_path, monkeypatch):
    """MATLAB v5 byte counts are 32-bit: a variable over the limit needs v7.3.  The limit is lowered here
    so that a small case (a 120-voxel double cube = 960 bytes) stands for a > 2 GiB one."""
    from sbrtplan.io import matrad_mat

    case = _small_case()
    assert write_matrad(tmp_path / "small.mat", case).read_bytes()[:10] == b"MATLAB 5.0"
    monkeypatch.setattr(matrad_mat, "V5_MAX_VARIABLE_BYTES", 900)
    out = write_matrad(tmp_path / "big.mat", case)  # auto
    assert out.read_bytes()[:10] == b"MATLAB 7.3" and h5py.is_hdf5(out)
    assert np.array_equal(read_matrad(out).hu, case.hu)
    with pytest.raises(InputError, match=r"v5 limit.*v7\.3"):
        write_matrad(tmp_path / "forced.mat", case, mat_format="v5")
    assert not (tmp_path / "forced.mat").exists()


def test_bad_mat_format_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"mat_format 'v6'.*'v5', 'v7\.3'"):
        write_matrad(tmp_path / "x.mat", _small_case(), mat_format="v6")
    with pytest.raises(InputError, match="non-finite"):
        write_matrad(tmp_path / "x.mat", _small_case(), dose_gy=np.full((4, 5, 6), np.nan))
    assert not (tmp_path / "x.mat").exists()


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_no_structures_and_patient_position_round_trip(tmp_path, fmt):
    """An empty structure set is an empty 0 x 6 cst; a feet-first case keeps its position in
    ct.dicomInfo.PatientPosition (where matRad's DICOM import puts it)."""
    src = _small_case()
    case = Case(name="ffs", grid=src.grid, hu=src.hu, patient_position="FFS")
    back = read_matrad(write_matrad(tmp_path / "e.mat", case, mat_format=fmt))
    assert len(back.structures) == 0
    assert back.patient_position == "FFS"
    assert np.array_equal(back.hu, case.hu) and back.grid == case.grid

"""matRad ``.mat`` files: read (MATLAB v5 and v7.3) and write (v7.3).

matRad conventions
------------------
* ``ct.cube{s}`` (relative electron density) and ``ct.cubeHU{s}`` are
  indexed ``(y, x, z)``: MATLAB row = y, column = x.  ``ct.cubeDim`` is
  ``[ny nx nz]``; ``ct.resolution.x/y/z`` in mm.
* ``ct.x``, ``ct.y``, ``ct.z`` are the world (DICOM LPS) coordinates of the
  voxel centres when present; without them matRad's default world axes put
  voxel ``i`` (0-based) of ``n`` at ``(i - n/2) * h``.
* ``cst`` is an ``n x 6`` cell: 0-based index, name, type (``TARGET``,
  ``OAR``, ``IGNORED``), a cell of voxel lists (one per CT scenario, 1-based
  **column-major** linear indices into the ``(y, x, z)`` cube), a struct of
  tissue properties (Priority, alphaX, betaX, Visible, visibleColor), and
  the objectives (kept as metadata).

In this package arrays are ``[z, y, x]``, so a matRad cube ``M`` becomes
``M.transpose(2, 0, 1)`` and a matRad voxel index ``v`` (1-based) is
``np.unravel_index(v - 1, (ny, nx, nz), order="F") -> (y, x, z)``.

MATLAB v7.3 files are HDF5 with a 512-byte MATLAB header in the user block;
arrays are stored with their dimensions reversed, cells as object references
into ``#refs#``, strings as uint16 with ``MATLAB_class = 'char'``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .._log import atomic_output, get_logger, timed
from ..case import Case, DensityCalibration, Grid, Structure, StructureRole, infer_role, normalize_name
from ..errors import InputError

log = get_logger(__name__)

_TARGET_ROLES = (StructureRole.GTV, StructureRole.CTV, StructureRole.ITV, StructureRole.PTV)


# ================================================================ reading
def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(128)
        fh.seek(512)
        sig = fh.read(8)
    return sig == b"\x89HDF\r\n\x1a\n" or head[:8] == b"\x89HDF\r\n\x1a\n"


def _from_scipy(v):
    """scipy.io.loadmat (struct_as_record=False, squeeze_me=False) value -> plain Python."""
    from scipy.io.matlab import mat_struct

    if isinstance(v, mat_struct):
        return {f: _from_scipy(getattr(v, f)) for f in v._fieldnames}
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "U":
            return "".join(v.ravel().tolist()) if v.size else ""
        if v.dtype == object:
            if v.size == 1 and isinstance(v.ravel()[0], mat_struct):
                return _from_scipy(v.ravel()[0])
            out = np.empty(v.shape, dtype=object)
            for idx in np.ndindex(v.shape):
                out[idx] = _from_scipy(v[idx])
            return out
        return v
    return v


def _from_h5(f, obj):
    """h5py object of a MATLAB v7.3 file -> plain Python (MATLAB shapes restored)."""
    import h5py

    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if isinstance(obj, h5py.Group):
        if "MATLAB_sparse" in obj.attrs:
            from scipy import sparse

            nrows = int(obj.attrs["MATLAB_sparse"])
            jc = np.asarray(obj["jc"]).astype(np.int64)
            ir = np.asarray(obj["ir"]).astype(np.int64) if "ir" in obj else np.zeros(0, np.int64)
            data = np.asarray(obj["data"]) if "data" in obj else np.zeros(0)
            return sparse.csc_matrix((data, ir, jc), shape=(nrows, jc.size - 1))
        if cls in ("struct", ""):
            return {k: _from_h5(f, obj[k]) for k in obj.keys()}
        return None  # MATLAB objects (classdef) are opaque in HDF5
    if obj.attrs.get("MATLAB_empty", 0):
        return "" if cls == "char" else np.zeros((0, 0))
    data = obj[()]
    if cls == "cell" or data.dtype == h5py.ref_dtype:
        out = np.empty(data.shape[::-1], dtype=object)
        for idx in np.ndindex(data.shape):
            out[idx[::-1]] = _from_h5(f, f[data[idx]])
        return out
    arr = np.asarray(data).T
    if cls == "char":
        return "".join(chr(c) for c in arr.ravel(order="F")) if arr.size else ""
    if cls == "logical":
        return arr.astype(bool)
    return arr


def _load(path: Path) -> dict:
    if _is_hdf5(path):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                out = {}
                for k in f.keys():
                    if k.startswith("#"):
                        continue
                    if k in ("ct", "cst"):
                        out[k] = _from_h5(f, f[k])
                return out
        except OSError as exc:
            raise InputError(f"{path}: cannot read MATLAB v7.3 (HDF5) file: {exc}") from None
    import scipy.io as sio

    try:
        raw = sio.loadmat(str(path), struct_as_record=False, squeeze_me=False, variable_names=["ct", "cst"])
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise InputError(f"{path}: not a readable MATLAB file ({exc})") from None
    return {k: _from_scipy(v) for k, v in raw.items() if not k.startswith("__")}


def _first(v):
    """First element of a MATLAB cell / array, or the value itself."""
    if isinstance(v, np.ndarray) and v.dtype == object:
        return v.ravel(order="F")[0] if v.size else None
    return v


def _num(v, default=None):
    if v is None:
        return default
    a = np.asarray(v, dtype=float).ravel()
    return float(a[0]) if a.size else default


def _plain(v):
    """Metadata-friendly version of a MATLAB value (objectives, tissue struct)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            return [_plain(x) for x in v.ravel(order="F")]
        a = v.ravel(order="F")
        return a.item() if a.size == 1 else a.tolist()
    return v


def read_matrad(path: str | Path, calibration: DensityCalibration | None = None) -> Case:
    """Read a matRad ``.mat`` file (``ct`` and ``cst``) into a :class:`Case`.

    Parameters
    ----------
    path : path
        MATLAB v5 (scipy) or v7.3 (HDF5) file holding the variables ``ct``
        and (optionally) ``cst``.
    calibration : DensityCalibration, optional
        Used to derive HU from ``ct.cube`` when ``ct.cubeHU`` is absent.

    Returns
    -------
    Case
        ``density`` = matRad's ``ct.cube`` (so dose engines see matRad's own
        densities), ``hu`` = ``ct.cubeHU`` (or the inverse calibration), one
        structure per ``cst`` row with ``metadata['matrad']`` holding the
        type, tissue parameters and objectives.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such matRad file")
    cal = calibration or DensityCalibration.default()
    with timed(f"read matRad {p.name}", log):
        data = _load(p)
        if "ct" not in data or not isinstance(data["ct"], dict):
            raise InputError(f"{p}: no 'ct' struct; expected a matRad file with variables ct and cst")
        ct = data["ct"]
        cube = _first(ct.get("cube")) if "cube" in ct else None
        cube_hu = _first(ct.get("cubeHU")) if "cubeHU" in ct else None
        ref = cube if cube is not None else cube_hu
        if ref is None or np.asarray(ref).ndim not in (2, 3):
            raise InputError(f"{p}: ct has neither a 3-D 'cube' nor 'cubeHU'")
        ref = np.asarray(ref)
        if ref.ndim == 2:
            ref = ref[:, :, None]
        ny, nx, nz = ref.shape
        res = ct.get("resolution")
        if not isinstance(res, dict) or not all(k in res for k in "xyz"):
            raise InputError(f"{p}: ct.resolution must have fields x, y, z (mm)")
        h = np.array([_num(res["x"]), _num(res["y"]), _num(res["z"])])
        if not np.all(h > 0):
            raise InputError(f"{p}: ct.resolution must be positive, got {h.tolist()}")
        origin = []
        for ax, n, step in (("x", nx, h[0]), ("y", ny, h[1]), ("z", nz, h[2])):
            v = ct.get(ax)
            v = None if v is None else np.asarray(v, dtype=float).ravel()
            if v is not None and v.size == n:
                if n > 1 and not np.allclose(np.diff(v), step, atol=1e-3 * step):
                    raise InputError(f"{p}: ct.{ax} is not evenly spaced by ct.resolution.{ax} = {step:g} mm")
                origin.append(float(v[0]))
            else:
                origin.append(float(-(n / 2.0) * step))  # matRad's default world axes
        grid = Grid(shape=(nz, ny, nx), spacing_mm=tuple(h), origin_mm=tuple(origin))

        def to_zyx(a):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim == 2:
                a = a[:, :, None]
            if a.shape != (ny, nx, nz):
                raise InputError(f"{p}: ct cube of shape {a.shape}, expected {(ny, nx, nz)}")
            return np.ascontiguousarray(a.transpose(2, 0, 1))

        density = to_zyx(cube) if cube is not None else None
        hu = to_zyx(cube_hu) if cube_hu is not None else cal.inverse(density)
        position = "HFS"
        info = ct.get("dicomInfo")
        if isinstance(info, dict) and isinstance(info.get("PatientPosition"), str) and info["PatientPosition"]:
            position = info["PatientPosition"].strip().upper() or "HFS"
        case = Case(name=p.stem, grid=grid, hu=hu, calibration=cal, density=density, patient_position=position,
                    source=str(p), metadata={"matrad": {"has_world_axes": all(ct.get(a) is not None for a in "xyz")}})
        cst = data.get("cst")
        if cst is None:
            log.warning("%s: no cst; the case has no structures", p)
            return case
        cst = np.asarray(cst, dtype=object)
        if cst.ndim != 2 or cst.shape[1] < 4:
            raise InputError(f"{p}: cst must be an n x 6 cell (index, name, type, voxels, tissue, objectives), "
                             f"got shape {cst.shape}")
        used: set[str] = set()
        for r in range(cst.shape[0]):
            raw_name = str(cst[r, 1]).strip() or f"structure{r}"
            mtype = str(cst[r, 2]).strip().upper()
            vox = _first(cst[r, 3])
            vox = np.zeros(0, dtype=np.int64) if vox is None else np.asarray(vox, dtype=np.float64).ravel()
            if vox.size and (vox.min() < 1 or vox.max() > grid.size or np.any(vox != np.round(vox))):
                raise InputError(f"{p}: cst row {r + 1} ('{raw_name}'): voxel indices must be 1-based integers "
                                 f"up to {grid.size}")
            yy, xx, zz = np.unravel_index(vox.astype(np.int64) - 1, (ny, nx, nz), order="F")
            mask = np.zeros(grid.shape, dtype=bool)
            mask[zz, yy, xx] = True
            name = normalize_name(raw_name)
            base, i = name, 2
            while name in used:
                name, i = f"{base}_{i}", i + 1
            used.add(name)
            role = infer_role(name)
            if mtype == "TARGET" and not role.is_target:
                role = StructureRole.PTV
            elif mtype == "OAR" and role in (StructureRole.OTHER,):
                role = StructureRole.OAR
            tissue = cst[r, 4] if cst.shape[1] > 4 else None
            objectives = cst[r, 5] if cst.shape[1] > 5 else None
            color = None
            if isinstance(tissue, dict) and tissue.get("visibleColor") is not None:
                c = np.asarray(tissue["visibleColor"], dtype=float).ravel()
                if c.size == 3:
                    color = tuple(int(round(255 * min(max(v, 0.0), 1.0))) for v in c)
            meta = {"matrad": {"index": int(_num(cst[r, 0], r)), "type": mtype,
                               "tissue": _plain(tissue) if tissue is not None else None,
                               "objectives": _plain(objectives) if objectives is not None else None},
                    "source": str(p)}
            case.add_structure(Structure(name=name, grid=grid, mask=mask, role=role, original_name=raw_name,
                                         color_rgb=color, metadata=meta))
    return case


# ================================================================ writing
_MATLAB_CLASS = {np.dtype(np.float64): "double", np.dtype(np.float32): "single", np.dtype(np.uint8): "uint8",
                 np.dtype(np.int8): "int8", np.dtype(np.uint16): "uint16", np.dtype(np.int16): "int16",
                 np.dtype(np.uint32): "uint32", np.dtype(np.int32): "int32", np.dtype(np.uint64): "uint64",
                 np.dtype(np.int64): "int64"}


class _Writer:
    """Minimal MATLAB v7.3 writer (numeric arrays, strings, structs, cells, sparse)."""

    def __init__(self, f):
        self.f = f
        self.refs = f.require_group("#refs#")
        self.n = 0

    def _ref_name(self) -> str:
        self.n += 1
        return f"r{self.n}"

    def write(self, group, name: str, value):
        from scipy import sparse

        if isinstance(value, dict):
            g = group.create_group(name)
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            for k, v in value.items():
                self.write(g, k, v)
            self._fields(g, list(value.keys()))
            return g
        if isinstance(value, str):
            return self._string(group, name, value)
        if sparse.issparse(value):
            return self._sparse(group, name, value)
        if isinstance(value, _Cell):
            return self._cell(group, name, value)
        if isinstance(value, (bool, np.bool_)):
            ds = group.create_dataset(name, data=np.array([[np.uint8(value)]]))
            ds.attrs["MATLAB_class"] = np.bytes_("logical")
            return ds
        arr = np.asarray(value)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
            cls = "logical"
        else:
            if arr.dtype not in _MATLAB_CLASS:
                arr = arr.astype(np.float64)
            cls = _MATLAB_CLASS[arr.dtype]
        if arr.ndim == 0:
            arr = arr.reshape(1, 1)
        elif arr.ndim == 1:
            arr = arr.reshape(1, -1)  # MATLAB row vector
        if arr.size == 0:
            ds = group.create_dataset(name, data=np.array(arr.shape, dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds
        big = arr.size > 65536
        ds = group.create_dataset(name, data=np.ascontiguousarray(arr.T), compression="gzip" if big else None,
                                  compression_opts=1 if big else None)
        ds.attrs["MATLAB_class"] = np.bytes_(cls)
        if cls == "logical":
            ds.attrs["MATLAB_int_decode"] = np.int32(1)
        return ds

    def _fields(self, g, names):
        import h5py

        dt = h5py.vlen_dtype(np.dtype("S1"))
        arr = np.empty(len(names), dtype=object)
        for i, n in enumerate(names):
            arr[i] = np.array(list(n), dtype="S1")
        g.attrs.create("MATLAB_fields", arr, dtype=dt)

    def _string(self, group, name, text: str):
        if not text:
            ds = group.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds
        codes = np.array([ord(c) for c in text], dtype=np.uint16).reshape(-1, 1)  # MATLAB 1 x n
        ds = group.create_dataset(name, data=codes)
        ds.attrs["MATLAB_class"] = np.bytes_("char")
        ds.attrs["MATLAB_int_decode"] = np.int32(2)
        return ds

    def _sparse(self, group, name, m):
        from scipy import sparse

        csc = sparse.csc_matrix(m, dtype=np.float64)
        csc.sum_duplicates()
        g = group.create_group(name)
        g.attrs["MATLAB_class"] = np.bytes_("double")
        g.attrs["MATLAB_sparse"] = np.uint64(csc.shape[0])
        g.create_dataset("jc", data=csc.indptr.astype(np.uint64))
        if csc.nnz:
            g.create_dataset("ir", data=csc.indices.astype(np.uint64), compression="gzip", compression_opts=1)
            g.create_dataset("data", data=csc.data, compression="gzip", compression_opts=1)
        return g

    def _cell(self, group, name, cell: "_Cell"):
        import h5py

        items = cell.items
        refs = np.empty(items.shape[::-1], dtype=h5py.ref_dtype)
        for idx in np.ndindex(items.shape):
            key = self._ref_name()
            obj = self.write(self.refs, key, items[idx])
            refs[idx[::-1]] = obj.ref
        if items.size == 0:
            ds = group.create_dataset(name, data=np.array(items.shape, dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds
        ds = group.create_dataset(name, data=refs, dtype=h5py.ref_dtype)
        ds.attrs["MATLAB_class"] = np.bytes_("cell")
        return ds


class _Cell:
    """A MATLAB cell array of the given 2-D shape."""

    def __init__(self, items, shape=None):
        arr = np.empty(len(items), dtype=object)
        for i, v in enumerate(items):
            arr[i] = v
        if shape is None:
            shape = (1, len(items))
        self.items = arr.reshape(shape, order="F")


def _matrad_cube(a: np.ndarray) -> np.ndarray:
    """[z, y, x] -> matRad (y, x, z)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).transpose(1, 2, 0))


def _matrad_voxels(mask: np.ndarray, shape_zyx) -> np.ndarray:
    """1-based column-major indices on (ny, nx, nz) of a [z, y, x] mask, sorted, as a column."""
    nz, ny, nx = shape_zyx
    zz, yy, xx = np.nonzero(mask)
    v = np.ravel_multi_index((yy, xx, zz), (ny, nx, nz), order="F") + 1
    return np.sort(v).astype(np.float64).reshape(-1, 1)


def matrad_voxel_order(grid: Grid) -> np.ndarray:
    """For each matRad (column-major, 0-based) voxel index, this package's C-order flat index."""
    nz, ny, nx = grid.shape
    m = np.arange(grid.size)
    yy, xx, zz = np.unravel_index(m, (ny, nx, nz), order="F")
    return np.ravel_multi_index((zz, yy, xx), grid.shape)


def _objectives_cell(objectives) -> "_Cell":
    """matRad objective structs (className, parameters, penalty) kept from a read, as a cell."""
    out = []
    for ob in objectives if isinstance(objectives, list) else []:
        if not isinstance(ob, dict) or not isinstance(ob.get("className"), str):
            continue
        params = ob.get("parameters", [])
        params = params if isinstance(params, list) else [params]
        item = {"className": ob["className"],
                "parameters": _Cell([np.asarray(v, dtype=float) for v in params if v is not None])}
        if ob.get("penalty") is not None:
            item["penalty"] = float(np.asarray(ob["penalty"], dtype=float).ravel()[0])
        out.append(item)
    return _Cell(out)


def _header() -> bytes:
    now = _dt.datetime.now().strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {now} HDF5 schema 1.00 .".encode("ascii")
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_matrad(path: str | Path, case: Case, dose_gy: np.ndarray | None = None, dij=None) -> Path:
    """Write ``case`` (and optionally a dose cube and a dose influence matrix) as a matRad v7.3 file.

    Parameters
    ----------
    path : path
        Output ``.mat`` file (written atomically).
    case : Case
        Must have an axis-aligned grid (matRad has no direction cosines).
    dose_gy : ndarray, optional
        Dose on ``case.grid`` ([z, y, x]); stored as ``resultGUI.physicalDose``.
    dij : scipy.sparse matrix, optional
        Voxels (C-order flat index on ``case.grid``) x beamlets; stored as
        ``dij.physicalDose{1}`` with rows in matRad's column-major voxel order.

    Returns
    -------
    Path
    """
    import h5py

    p = Path(path)
    g = case.grid
    if not g.is_axis_aligned:
        raise InputError(f"{p}: matRad needs an axis-aligned grid; case '{case.name}' has direction cosines "
                         f"{np.round(g.direction, 3).tolist()}")
    if dose_gy is not None and np.asarray(dose_gy).shape != g.shape:
        raise InputError(f"{p}: dose_gy of shape {np.asarray(dose_gy).shape} does not match the grid {g.shape}")
    if dij is not None and dij.shape[0] != g.size:
        raise InputError(f"{p}: dij has {dij.shape[0]} rows, expected one per voxel ({g.size})")
    nz, ny, nx = g.shape
    x, y, z = g.axis_coordinates_mm()
    ct = {
        "cube": _Cell([_matrad_cube(case.density)]),
        "cubeHU": _Cell([_matrad_cube(case.hu)]),
        "resolution": {"x": float(g.spacing_mm[0]), "y": float(g.spacing_mm[1]), "z": float(g.spacing_mm[2])},
        "cubeDim": np.array([ny, nx, nz], dtype=np.float64),
        "numOfCtScen": 1.0,
        "x": x, "y": y, "z": z,
        "hlut": np.column_stack([case.calibration.hu, case.calibration.red]),
    }
    rows = []
    for idx, s in enumerate(case.structures.values()):
        mtype = ("TARGET" if s.role in _TARGET_ROLES else "IGNORED" if s.role == StructureRole.SUPPORT else "OAR")
        prior = s.metadata.get("matrad", {}) if isinstance(s.metadata.get("matrad"), dict) else {}
        tissue = prior.get("tissue") if isinstance(prior.get("tissue"), dict) else None
        color = (np.asarray(s.color_rgb, dtype=float) / 255.0) if s.color_rgb else np.array([1.0, 0.0, 0.0])
        if tissue is None:
            tissue = {"Priority": 1.0 if mtype == "TARGET" else 2.0, "alphaX": 0.1, "betaX": 0.05,
                      "Visible": 1.0, "visibleColor": color}
        tissue = {k: (np.asarray(v, dtype=float) if isinstance(v, (list, int, float)) else v)
                  for k, v in tissue.items() if not isinstance(v, (dict, type(None)))}
        name = s.original_name if s.original_name and normalize_name(s.original_name) == s.name else s.name
        rows.append([float(idx), name, mtype, _Cell([_matrad_voxels(s.mask, g.shape)]), tissue,
                     _objectives_cell(prior.get("objectives"))])
    n = len(rows)
    cst = _Cell([rows[r][c] for c in range(6) for r in range(n)], shape=(n, 6)) if n else _Cell([], shape=(0, 6))
    with timed(f"write matRad {p.name}", log), atomic_output(p) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            w = _Writer(f)
            w.write(f, "ct", ct)
            w.write(f, "cst", cst)
            if dose_gy is not None:
                w.write(f, "resultGUI", {"physicalDose": _matrad_cube(dose_gy)})
            if dij is not None:
                from scipy import sparse

                order = matrad_voxel_order(g)
                d = sparse.csr_matrix(dij)[order]
                grid_struct = {"resolution": dict(ct["resolution"]), "dimensions": ct["cubeDim"],
                               "x": x, "y": y, "z": z}
                w.write(f, "dij", {"doseGrid": grid_struct, "ctGrid": dict(grid_struct),
                                   "numOfVoxels": float(g.size), "totalNumOfBixels": float(d.shape[1]),
                                   "numOfScenarios": 1.0, "physicalDose": _Cell([d.tocsc()])})
        with open(tmp, "r+b") as fh:
            fh.write(_header())
    log.info("%s: wrote matRad v7.3 file (%d structures)", p, n)
    return p


def write_matrad_dij(path: str | Path, influence, *, batch_nnz: int = 1 << 23) -> Path:
    """Write a dose-influence matrix as a matRad ``dij`` struct in a MATLAB v7.3 (HDF5) file.

    Parameters
    ----------
    path : path
        Output ``.mat`` file (written atomically).
    influence : InfluenceMatrix
        What :func:`sbrtplan.dose_engine.influence_matrix` returns: ``matrix``
        (voxels x beamlets, Gy per fraction per MU), ``voxel_indices`` (C-order
        flat indices of the rows on ``grid``), ``grid``, ``geometries`` (one
        :class:`~sbrtplan.beams.BeamGeometry` per beam) and ``beam_offsets``
        (columns of each beam).
    batch_nnz : int
        Non-zeros re-ordered per batch of columns, which bounds the memory used
        beyond the matrix itself (default 8 M, 128 MiB).

    Returns
    -------
    Path

    Notes
    -----
    ``dij.physicalDose{1}`` is a double sparse matrix of
    ``prod(dij.doseGrid.dimensions)`` rows (every voxel of the dose cube, in
    matRad's 1-based column-major order on the ``(y, x, z)`` cube) by
    ``dij.totalNumOfBixels`` columns; ``dij.doseGrid`` and ``dij.ctGrid`` give
    the cube's ``dimensions`` ``[ny nx nz]``, ``resolution`` and world axes
    ``x``, ``y``, ``z`` (DICOM patient mm; left out for a grid that is not
    axis-aligned, which matRad cannot describe); ``dij.beamNum``,
    ``dij.rayNum`` and ``dij.bixelNum`` are column vectors as matRad builds
    them (one ray per bixel for photons).  ``stf_angles`` holds the gantry and
    couch angles (degrees) and the isocentre of every beam.
    """
    import h5py

    p = Path(path)
    m = getattr(influence, "matrix", None)
    g = getattr(influence, "grid", None)
    if m is None or g is None or not hasattr(influence, "voxel_indices"):
        raise InputError(f"{p}: write_matrad_dij expects an influence matrix (matrix, voxel_indices, grid, "
                         f"geometries), got {type(influence).__name__}")
    vox = np.asarray(influence.voxel_indices, dtype=np.int64)
    if m.shape[0] != vox.size:
        raise InputError(f"{p}: the influence matrix has {m.shape[0]} rows but {vox.size} voxel indices")
    if vox.size and (vox.min() < 0 or vox.max() >= g.size):
        raise InputError(f"{p}: voxel indices must lie in [0, {g.size}) for the grid {g.shape} (z, y, x)")
    geometries = list(getattr(influence, "geometries", []) or [])
    offsets = getattr(influence, "beam_offsets", None)
    offsets = (np.asarray(offsets, dtype=np.int64) if offsets is not None
               else np.concatenate([[0], np.cumsum([bg.n_beamlets for bg in influence.beamlet_grids])]))
    n_beams = offsets.size - 1
    if offsets[0] != 0 or offsets[-1] != m.shape[1] or np.any(np.diff(offsets) < 0):
        raise InputError(f"{p}: beam_offsets {offsets.tolist()} do not split the {m.shape[1]} columns into beams")
    if len(geometries) != n_beams:
        raise InputError(f"{p}: {len(geometries)} beam geometries for {n_beams} beams")
    nz, ny, nx = g.shape
    k, j, i = np.unravel_index(vox, g.shape)
    lin = (j + ny * (i + nx * k)).astype(np.int64)  # 0-based column-major index on the (y, x, z) cube
    rays = np.diff(offsets)
    ray_num = np.concatenate([np.arange(1, r + 1, dtype=float) for r in rays]) if n_beams else np.zeros(0)
    beam_num = np.repeat(np.arange(1, n_beams + 1, dtype=float), rays)
    grid_struct: dict = {"resolution": {"x": float(g.spacing_mm[0]), "y": float(g.spacing_mm[1]),
                                        "z": float(g.spacing_mm[2])},
                         "dimensions": np.array([ny, nx, nz], dtype=float), "numOfVoxels": float(g.size)}
    if g.is_axis_aligned:
        x, y, z = g.axis_coordinates_mm()
        grid_struct.update(x=x, y=y, z=z)
    else:
        log.warning("%s: the dose grid is not axis-aligned; dij.doseGrid has no world axes x, y, z", p)
    dij = {"doseGrid": grid_struct, "ctGrid": dict(grid_struct), "numOfBeams": float(n_beams),
           "numOfVoxels": float(g.size), "dimensions": np.array([ny, nx, nz], dtype=float),
           "numOfRaysPerBeam": rays.astype(float), "totalNumOfBixels": float(m.shape[1]),
           "totalNumOfRays": float(m.shape[1]), "bixelNum": np.ones((m.shape[1], 1)),
           "rayNum": ray_num.reshape(-1, 1), "beamNum": beam_num.reshape(-1, 1), "numOfScenarios": 1.0}
    stf = {"gantryAngles": np.array([b.gantry_deg for b in geometries], dtype=float),
           "couchAngles": np.array([b.couch_deg for b in geometries], dtype=float),
           "isoCenter": np.array([np.asarray(b.isocenter_mm, float) for b in geometries]).reshape(n_beams, 3)}
    csc = m.tocsc() if hasattr(m, "tocsc") else m
    with timed(f"write matRad dij {p.name} ({csc.nnz} non-zeros)", log), atomic_output(p) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            w = _Writer(f)
            grp = w.write(f, "dij", dij)
            sparse_grp = w.refs.create_group(w._ref_name())
            sparse_grp.attrs["MATLAB_class"] = np.bytes_("double")
            sparse_grp.attrs["MATLAB_sparse"] = np.uint64(g.size)
            _write_sparse_columns(sparse_grp, csc, lin, batch_nnz)
            cell = grp.create_dataset("physicalDose", shape=(1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = sparse_grp.ref
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
            w._fields(grp, list(dij) + ["physicalDose"])
            w.write(f, "stf_angles", stf)
        with open(tmp, "r+b") as fh:
            fh.write(_header())
    log.info("%s: wrote matRad dij (%d voxels x %d bixels, %d beams)", p, g.size, m.shape[1], n_beams)
    return p


def _write_sparse_columns(grp, m, lin: np.ndarray, batch_nnz: int = 1 << 23) -> None:
    """MATLAB sparse datasets (data, ir, jc) of the CSC matrix ``m`` with rows mapped through ``lin``,
    written in column batches (rows re-sorted within each column, as MATLAB requires) so that memory
    stays bounded for large matrices."""
    nnz = int(m.nnz)
    ptr = m.indptr.astype(np.int64)
    grp.create_dataset("jc", data=ptr.astype(np.uint64))
    if nnz == 0:
        return
    d_data = grp.create_dataset("data", shape=(nnz,), dtype=np.float64)
    d_ir = grp.create_dataset("ir", shape=(nnz,), dtype=np.uint64)
    c0 = 0
    n_cols = m.shape[1]
    while c0 < n_cols:
        c1 = int(np.searchsorted(ptr, ptr[c0] + max(int(batch_nnz), 1), side="right")) - 1
        c1 = min(max(c1, c0 + 1), n_cols)
        a, b = int(ptr[c0]), int(ptr[c1])
        rows = lin[m.indices[a:b]]
        col = np.repeat(np.arange(c0, c1), np.diff(ptr[c0:c1 + 1]))
        order = np.lexsort((rows, col))
        d_ir[a:b] = rows[order].astype(np.uint64)
        d_data[a:b] = m.data[a:b][order].astype(np.float64)
        c0 = c1

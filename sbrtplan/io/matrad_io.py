"""matRad ``.mat`` files: read (MATLAB v5 and v7.3); the writers are in :mod:`.matrad_write`.

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

from pathlib import Path

import numpy as np

from .._log import get_logger, timed
from ..case import Case, DensityCalibration, Grid, Structure, StructureRole, infer_role, normalize_name
from ..errors import InputError

log = get_logger(__name__)


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
        if cst.size == 0:  # an empty cell (v7.3 keeps no shape for it)
            log.warning("%s: empty cst; the case has no structures", p)
            return case
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

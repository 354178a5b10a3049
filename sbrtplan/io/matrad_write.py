"""matRad ``.mat`` writers: a case (``ct``, ``cst``), its dose (``resultGUI``) and influence matrices (``dij``).

The layout is the one MATLAB/matRad writes (checked field by field against
matRad's own TG119, BOXPHANTOM and photon test files):

* ``ct``: ``cube`` and ``cubeHU`` as 1 x 1 cells of ``(ny, nx, nz)`` double
  cubes (relative electron density and HU), ``resolution`` a struct of
  ``x``/``y``/``z`` (mm), world axes ``x`` (1 x nx), ``y``, ``z`` (DICOM
  patient mm of the voxel centres), ``cubeDim = [ny nx nz]``,
  ``numOfCtScen = 1``, ``hlut`` (n x 2: HU, relative electron density) and
  ``dicomInfo.PatientPosition``.
* ``cst``: an n x 6 cell: 0-based index, name, type (``TARGET``, ``OAR``,
  ``IGNORED``), a 1 x 1 cell holding the column of 1-based column-major
  voxel indices into the ``(y, x, z)`` cube, a struct of tissue properties
  (``Priority``, ``alphaX``, ``betaX``, ``Visible``, ``visibleColor``) and a
  1 x k cell of objective structs (``className``, ``parameters``,
  ``penalty``; those read from a matRad file are written back, sbrtplan's
  own protocol constraints are not translated).
* ``resultGUI.physicalDose``: the dose cube ``(ny, nx, nz)`` in Gy.
* ``dij``: ``doseGrid`` / ``ctGrid`` (``resolution``, ``x``, ``y``, ``z``,
  ``dimensions = [ny nx nz]``, ``numOfVoxels``), ``numOfBeams``,
  ``numOfScenarios``, ``numOfRaysPerBeam`` (1 x beams), ``totalNumOfBixels``,
  ``totalNumOfRays``, ``bixelNum`` / ``rayNum`` / ``beamNum`` (bixels x 1,
  1-based, one bixel per ray as for photons), ``minMU`` / ``maxMU`` and
  ``physicalDose`` (1 x 1 cell of the double sparse voxels x bixels matrix,
  rows in matRad's column-major order).  ``pln.propStf`` records the beams
  (gantry and couch angles, isocentres, bixel width).

MATLAB v5 (compressed) is written by default whenever every variable fits
its 2 GiB limit, v7.3 (HDF5) beyond it or on request; see
:mod:`sbrtplan.io.matrad_mat`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._log import get_logger, timed
from ..case import Case, Grid, StructureRole, normalize_name
from ..errors import InputError
from .matrad_mat import MatCell, MatFormat, RowMappedSparse, parse_mat_format, save_mat

log = get_logger(__name__)

_TARGET_ROLES = (StructureRole.GTV, StructureRole.CTV, StructureRole.ITV, StructureRole.PTV)


def _matrad_cube(a: np.ndarray) -> np.ndarray:
    """[z, y, x] -> matRad (y, x, z), double."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).transpose(1, 2, 0))


def _matrad_voxels(mask: np.ndarray, shape_zyx) -> np.ndarray:
    """1-based column-major indices on (ny, nx, nz) of a [z, y, x] mask, sorted, as a double column."""
    nz, ny, nx = shape_zyx
    zz, yy, xx = np.nonzero(mask)
    v = np.ravel_multi_index((yy, xx, zz), (ny, nx, nz), order="F") + 1
    return np.sort(v).astype(np.float64).reshape(-1, 1)


def matrad_voxel_order(grid: Grid) -> np.ndarray:
    """For each matRad (column-major, 0-based) voxel index, this package's C-order flat index."""
    nz, ny, nx = grid.shape
    yy, xx, zz = np.unravel_index(np.arange(grid.size), (ny, nx, nz), order="F")
    return np.ravel_multi_index((zz, yy, xx), grid.shape)


def _column_major_rows(voxel_indices: np.ndarray, grid: Grid) -> np.ndarray:
    """C-order flat indices on ``grid`` -> 0-based column-major indices on matRad's (y, x, z) cube."""
    nz, ny, nx = grid.shape
    k, j, i = np.unravel_index(np.asarray(voxel_indices, dtype=np.int64), grid.shape)
    return (j + ny * (i + nx * k)).astype(np.int64)


def _resolution(g: Grid) -> dict:
    return {"x": float(g.spacing_mm[0]), "y": float(g.spacing_mm[1]), "z": float(g.spacing_mm[2])}


def _grid_struct(g: Grid, path: Path) -> dict:
    """matRad ``dij.doseGrid`` / ``ctGrid`` of ``g`` (world axes only for an axis-aligned grid)."""
    nz, ny, nx = g.shape
    out: dict = {"resolution": _resolution(g)}
    if g.is_axis_aligned:
        x, y, z = g.axis_coordinates_mm()
        out.update(x=np.asarray(x, float), y=np.asarray(y, float), z=np.asarray(z, float))
    else:
        log.warning("%s: the dose grid is not axis-aligned; dij.doseGrid has no world axes x, y, z", path)
    out["dimensions"] = np.array([ny, nx, nz], dtype=np.float64)
    out["numOfVoxels"] = float(g.size)
    return out


def _as_list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _objectives_cell(objectives) -> MatCell:
    """matRad objective structs (className, parameters, penalty) kept from a read, as a 1 x k cell."""
    out = []
    for ob in _as_list(objectives):
        if not isinstance(ob, dict) or not isinstance(ob.get("className"), str):
            continue
        params = [p for p in _as_list(ob.get("parameters")) if p is not None]
        item = {"className": ob["className"],
                "parameters": MatCell([np.asarray(p, dtype=float) for p in params])}
        if ob.get("penalty") is not None:
            item["penalty"] = float(np.asarray(ob["penalty"], dtype=float).ravel()[0])
        out.append(item)
    return MatCell(out)


def _tissue(prior: dict, mtype: str, color_rgb) -> dict:
    """cst{i,5}: tissue properties read from a matRad file, else matRad's defaults for the type."""
    tissue = prior.get("tissue") if isinstance(prior.get("tissue"), dict) else None
    if tissue is None:
        color = (np.asarray(color_rgb, dtype=float) / 255.0) if color_rgb else np.array([1.0, 0.0, 0.0])
        # matRad's defaults: targets before OARs in overlap priority, alpha/beta = 2 Gy
        tissue = {"Priority": 1.0 if mtype == "TARGET" else 2.0, "alphaX": 0.1, "betaX": 0.05,
                  "Visible": 1.0, "visibleColor": color}
    out = {}
    for k, v in tissue.items():
        if isinstance(v, str):
            out[k] = v
        elif isinstance(v, (list, tuple, int, float, np.ndarray, np.number)) and not isinstance(v, bool):
            a = np.asarray(v, dtype=float)
            out[k] = a.reshape(1, -1) if a.ndim <= 1 else a
    return out


def _ct_struct(case: Case) -> dict:
    g = case.grid
    nz, ny, nx = g.shape
    x, y, z = g.axis_coordinates_mm()
    cal = case.calibration
    return {
        "cube": MatCell([_matrad_cube(case.density)]),
        "resolution": _resolution(g),
        "x": np.asarray(x, float), "y": np.asarray(y, float), "z": np.asarray(z, float),
        "cubeDim": np.array([ny, nx, nz], dtype=np.float64),
        "numOfCtScen": 1.0,
        "dicomInfo": {"PatientPosition": str(case.patient_position or "HFS")},
        "cubeHU": MatCell([_matrad_cube(case.hu)]),
        "hlut": np.column_stack([np.asarray(cal.hu, float), np.asarray(cal.red, float)]),
    }


def _cst_cell(case: Case) -> MatCell:
    g = case.grid
    rows = []
    for idx, s in enumerate(case.structures.values()):
        mtype = "TARGET" if s.role in _TARGET_ROLES else "IGNORED" if s.role == StructureRole.SUPPORT else "OAR"
        prior = s.metadata.get("matrad") if isinstance(s.metadata.get("matrad"), dict) else {}
        name = s.original_name if s.original_name and normalize_name(s.original_name) == s.name else s.name
        rows.append([float(idx), name, mtype, MatCell([_matrad_voxels(s.mask, g.shape)]),
                     _tissue(prior, mtype, s.color_rgb), _objectives_cell(prior.get("objectives"))])
    n = len(rows)
    return MatCell([rows[r][c] for c in range(6) for r in range(n)], shape=(n, 6))


def _dij_struct(grid: Grid, matrix, voxel_indices, beam_offsets, path: Path, batch_nnz: int) -> dict:
    """matRad ``dij`` of a voxels x beamlets matrix whose rows are the C-order voxels ``voxel_indices``."""
    offsets = np.asarray(beam_offsets, dtype=np.int64)
    rays = np.diff(offsets)
    n_bix = int(matrix.shape[1])
    n_beams = int(rays.size)
    ray_num = np.concatenate([np.arange(1, r + 1, dtype=float) for r in rays]) if n_beams else np.zeros(0)
    beam_num = np.repeat(np.arange(1, n_beams + 1, dtype=float), rays)
    gs = _grid_struct(grid, path)
    return {
        "doseGrid": gs, "ctGrid": {k: (dict(v) if isinstance(v, dict) else v) for k, v in gs.items()},
        "numOfBeams": float(n_beams), "numOfScenarios": 1.0,
        "numOfRaysPerBeam": rays.astype(float).reshape(1, -1),
        "totalNumOfBixels": float(n_bix), "totalNumOfRays": float(n_bix),
        "bixelNum": np.ones((n_bix, 1)), "rayNum": ray_num.reshape(-1, 1), "beamNum": beam_num.reshape(-1, 1),
        "minMU": np.zeros((n_bix, 1)), "maxMU": np.full((n_bix, 1), np.inf),
        "physicalDose": MatCell([RowMappedSparse(matrix, _column_major_rows(voxel_indices, grid), grid.size,
                                                 batch_nnz=batch_nnz)]),
    }


def write_matrad(path: str | Path, case: Case, dose_gy: np.ndarray | None = None, dij=None, *,
                 mat_format: MatFormat | str | None = None) -> Path:
    """Write ``case`` (and optionally a dose cube and a dose influence matrix) as a matRad file.

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
        ``dij.physicalDose{1}`` with rows in matRad's column-major voxel order
        (one beam holding every column).
    mat_format : {'auto', 'v5', 'v7.3'}
        ``auto`` (default): MATLAB v5 (compressed) when every variable fits
        its 2 GiB limit, else v7.3 (HDF5).

    Returns
    -------
    Path
    """
    p = Path(path)
    fmt = parse_mat_format(mat_format)
    g = case.grid
    if not g.is_axis_aligned:
        raise InputError(f"{p}: matRad needs an axis-aligned grid; case '{case.name}' has direction cosines "
                         f"{np.round(g.direction, 3).tolist()}")
    if dose_gy is not None:
        d = np.asarray(dose_gy)
        if d.shape != g.shape:
            raise InputError(f"{p}: dose_gy of shape {d.shape} does not match the grid {g.shape}")
        if not np.all(np.isfinite(d)):
            raise InputError(f"{p}: dose_gy holds non-finite values; expected finite doses in Gy")
    if dij is not None and dij.shape[0] != g.size:
        raise InputError(f"{p}: dij has {dij.shape[0]} rows, expected one per voxel ({g.size})")
    variables: dict = {"ct": _ct_struct(case), "cst": _cst_cell(case)}
    if dose_gy is not None:
        variables["resultGUI"] = {"physicalDose": _matrad_cube(dose_gy)}
    if dij is not None:
        variables["dij"] = _dij_struct(g, dij, np.arange(g.size), [0, dij.shape[1]], p, 1 << 23)
    with timed(f"write matRad {p.name}", log):
        used = save_mat(p, variables, fmt)
    log.info("%s: wrote matRad %s file (%d structures)", p, used.value, len(case.structures))
    return p


def write_matrad_dij(path: str | Path, influence, *, batch_nnz: int = 1 << 23,
                     mat_format: MatFormat | str | None = None) -> Path:
    """Write a dose-influence matrix as a matRad ``dij`` struct (with the beams in ``pln.propStf``).

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
        Non-zeros re-ordered per batch of columns by the v7.3 writer, which
        bounds the memory used beyond the matrix itself (default 8 M).
    mat_format : {'auto', 'v5', 'v7.3'}
        ``auto`` (default): v5 when the matrix fits MATLAB v5's 2 GiB per
        variable (about 170 M non-zeros), else v7.3.

    Returns
    -------
    Path

    Notes
    -----
    ``dij.physicalDose{1}`` is a double sparse matrix of
    ``prod(dij.doseGrid.dimensions)`` rows (every voxel of the dose cube, in
    matRad's 1-based column-major order on the ``(y, x, z)`` cube) by
    ``dij.totalNumOfBixels`` columns; ``dij.beamNum``, ``dij.rayNum`` and
    ``dij.bixelNum`` are column vectors as matRad builds them (one ray per
    bixel for photons).  ``pln.propStf`` holds the gantry and couch angles
    (degrees), the isocentre of every beam (rows, DICOM patient mm, the frame
    of ``doseGrid.x/y/z``) and the bixel width.
    """
    p = Path(path)
    fmt = parse_mat_format(mat_format)
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
    dij = _dij_struct(g, m, vox, offsets, p, batch_nnz)
    prop_stf = {"gantryAngles": np.array([b.gantry_deg for b in geometries], dtype=float),
                "couchAngles": np.array([b.couch_deg for b in geometries], dtype=float),
                "numOfBeams": float(n_beams),
                "isoCenter": np.array([np.asarray(b.isocenter_mm, float) for b in geometries]).reshape(n_beams, 3)}
    widths = [float(np.diff(bg.x_edges_mm)[0]) for bg in (getattr(influence, "beamlet_grids", None) or [])
              if np.size(bg.x_edges_mm) > 1]
    if widths:
        prop_stf["bixelWidth"] = widths[0]
    pln = {"radiationMode": "photons", "propStf": prop_stf}
    nnz = int(getattr(m, "nnz", 0))
    with timed(f"write matRad dij {p.name} ({nnz} non-zeros)", log):
        used = save_mat(p, {"dij": dij, "pln": pln}, fmt)
    log.info("%s: wrote matRad %s dij (%d voxels x %d bixels, %d beams)", p, used.value, g.size, m.shape[1], n_beams)
    return p

"""OpenKBP patient folders (sparse CSV on a 128^3 grid) -> Case.

Each patient folder holds ``ct.csv``, ``dose.csv`` (Gy), one mask CSV per
contoured structure, ``possible_dose_mask.csv`` and ``voxel_dimensions.csv``.
The CSVs are sparse: a header, then ``index,value`` rows (masks leave the
value empty) where ``index`` is a C-order flat index into the 128^3 array.

Array axes (checked on the data: parotids, brainstem/cord and mandible/cord
positions): axis 0 runs anterior -> posterior (+y), axis 1 right -> left (+x)
and axis 2 superior -> inferior (-z).  ``voxel_dimensions.csv`` gives the
voxel size along axes 0, 1, 2.  CT values are stored as HU + 1024 (air = 0,
absent from the sparse file); the data description recommends clipping them
to [0, 4095].  The original patient coordinates are not distributed, so the
grid is centred on the origin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._log import get_logger, timed
from ..case import Case, DensityCalibration, Dose, Grid, Structure, StructureRole, infer_role, normalize_name
from ..errors import InputError

log = get_logger(__name__)

OPENKBP_SHAPE = (128, 128, 128)
HU_OFFSET = 1024.0
_SPECIAL = {"ct", "dose", "possible_dose_mask", "voxel_dimensions"}
# OpenKBP file names -> TG-263 (the names the challenge uses, fixed by its data description)
_TG263 = {"LeftParotid": "Parotid_L", "RightParotid": "Parotid_R", "Mandible": "Bone_Mandible",
          "SpinalCord": "SpinalCord", "Brainstem": "Brainstem", "Esophagus": "Esophagus", "Larynx": "Larynx"}


def _read_sparse(path: Path, with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    lines = text.splitlines()[1:]
    if not lines:
        return np.zeros(0, dtype=np.int64), (np.zeros(0) if with_values else None)
    try:
        cols = [ln.split(",") for ln in lines if ln.strip()]
        idx = np.array([c[0] for c in cols], dtype=np.int64)
        vals = np.array([c[1] for c in cols], dtype=np.float64) if with_values else None
    except (ValueError, IndexError):
        raise InputError(f"{path}: expected sparse rows 'index,value' after a header line") from None
    n = int(np.prod(OPENKBP_SHAPE))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"{path}: voxel index outside the 128^3 grid (0 .. {n - 1})")
    return idx, vals


def _to_case_array(flat: np.ndarray) -> np.ndarray:
    """OpenKBP (y, x, -z) C-order array -> [z, y, x] with z increasing superiorly."""
    a = flat.reshape(OPENKBP_SHAPE)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[::-1])


def read_openkbp(directory: str | Path, calibration: DensityCalibration | None = None,
                 add_body: bool = True) -> Case:
    """Read an OpenKBP patient folder into a :class:`Case`.

    Parameters
    ----------
    directory : path
        A patient folder (``pt_1`` ...).
    calibration : DensityCalibration, optional
    add_body : bool
        Add an automatic ``External`` outline (OpenKBP has no body contour).

    Returns
    -------
    Case
        Structures from the mask CSVs (TG-263 names), ``PossibleDoseMask`` as
        a CONTROL structure, the reference plan dose in ``case.doses['reference']``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: not a folder; expected an OpenKBP patient folder")
    for needed in ("ct.csv", "voxel_dimensions.csv"):
        if not (d / needed).is_file():
            raise InputError(f"{d}: no {needed}; expected an OpenKBP patient folder")
    with timed(f"read OpenKBP {d.name}", log):
        try:
            dims = np.loadtxt(d / "voxel_dimensions.csv", delimiter=",", ndmin=1).ravel()
        except ValueError:
            raise InputError(f"{d / 'voxel_dimensions.csv'}: expected three voxel sizes in mm") from None
        if dims.size != 3 or not np.all(np.isfinite(dims)) or np.any(dims <= 0):
            raise InputError(f"{d / 'voxel_dimensions.csv'}: expected three positive voxel sizes in mm, got "
                             f"{dims.tolist()}")
        spacing = (float(dims[1]), float(dims[0]), float(dims[2]))  # (x, y, z) from axes (1, 0, 2)
        n = int(np.prod(OPENKBP_SHAPE))
        shape = (OPENKBP_SHAPE[2], OPENKBP_SHAPE[0], OPENKBP_SHAPE[1])
        origin = tuple(-0.5 * (s - 1) * h for s, h in zip((shape[2], shape[1], shape[0]), spacing))
        grid = Grid(shape=shape, spacing_mm=spacing, origin_mm=origin)
        idx, vals = _read_sparse(d / "ct.csv", True)
        raw = np.zeros(n, dtype=np.float32)
        raw[idx] = np.clip(vals, 0.0, 4095.0)
        hu = _to_case_array(raw) - np.float32(HU_OFFSET)
        case = Case(name=d.name, grid=grid, hu=hu, calibration=calibration or DensityCalibration.default(),
                    source=str(d), metadata={"openkbp": {"voxel_dimensions_mm": dims.tolist()}})
        for p in sorted(d.glob("*.csv")):
            stem = p.stem
            if stem in _SPECIAL:
                continue
            midx, _ = _read_sparse(p, False)
            flat = np.zeros(n, dtype=bool)
            flat[midx] = True
            name = _TG263.get(stem) or normalize_name(stem)
            role = infer_role(name)
            if not role.is_target:
                role = StructureRole.OAR  # every OpenKBP structure is a PTV or an organ at risk
            case.add_structure(Structure(name=name, grid=grid, mask=_to_case_array(flat),
                                         role=role, original_name=stem,
                                         metadata={"source": str(p)}))
        if (d / "possible_dose_mask.csv").is_file():
            midx, _ = _read_sparse(d / "possible_dose_mask.csv", False)
            flat = np.zeros(n, dtype=bool)
            flat[midx] = True
            case.add_structure(Structure(name="PossibleDoseMask", grid=grid, mask=_to_case_array(flat),
                                         role=StructureRole.CONTROL, original_name="possible_dose_mask"))
        if (d / "dose.csv").is_file():
            didx, dvals = _read_sparse(d / "dose.csv", True)
            flat = np.zeros(n, dtype=np.float32)
            flat[didx] = dvals
            case.doses["reference"] = Dose(grid=grid, dose_gy=_to_case_array(flat),
                                           description="OpenKBP reference plan")
        if add_body and case.body is None:
            from .body import body_outline

            case.add_structure(body_outline(case, exclude_couch=False, closing_mm=5.0))
    return case

"""``sbrtplan dij``: export an influence (dose-deposition) matrix for a case.

Writes a scipy ``.npz`` (readable with ``scipy.sparse.load_npz``; the extra
arrays hold the voxel indices, the dose grid and every beam's geometry and
beamlets) or, when ``--out`` ends in ``.mat``, a matRad MATLAB file (v5 by
default, v7.3 beyond v5's limits or with ``--mat-format v7.3``) with a
``dij`` struct written by :func:`sbrtplan.io.write_matrad_dij`
(``dij.physicalDose{1}`` sparse, rows = matRad's 1-based column-major
dose-cube voxel index in (y, x, z) order, columns = beamlets) and the beam
angles.  Prints build time, non-zeros and peak memory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("dij", help="export an influence matrix (voxels x beamlets) as .npz or matRad .mat",
                       description="Compute the dose-influence matrix of equispaced coplanar (or couch-rotated) "
                                   "beams on a case's target and write it as scipy .npz or a matRad .mat "
                                   "(MATLAB v5 or v7.3).")
    p.add_argument("--case", required=True, help="DICOM folder, matRad .mat, OpenKBP folder or phantom:NAME")
    p.add_argument("--rtstruct", help="RTSTRUCT file when the folder holds several")
    p.add_argument("--target", help="target structure (default: the PTV, else all targets)")
    p.add_argument("--beams", type=int, default=9, help="number of equispaced beams (default 9)")
    p.add_argument("--gantry", type=float, nargs="+", help="explicit gantry angles in degrees (overrides --beams)")
    p.add_argument("--couch", type=float, nargs="+", default=[0.0],
                   help="couch angle(s) in degrees: one for all beams or one per beam (default 0)")
    p.add_argument("--collimator", type=float, default=0.0, help="collimator angle in degrees (default 0)")
    p.add_argument("--beamlet-mm", type=float, default=5.0, help="beamlet size at the isocentre: 5 or 2.5 mm")
    p.add_argument("--margin-mm", type=float, default=5.0, help="beamlets around the target projection (default 5)")
    p.add_argument("--grid-mm", type=float, default=2.5, help="dose grid spacing in mm (default 2.5)")
    p.add_argument("--cutoff-mm", type=float, default=None, help="lateral cut-off in mm (default 30)")
    p.add_argument("--machine", default=None, help="beam model: shipped name, .yaml file or matRad photons_*.mat")
    p.add_argument("--correction", choices=["lateral", "depth_only", "none"], default="lateral",
                   help="heterogeneity correction (default lateral)")
    p.add_argument("--max-memory-gib", type=float, default=None,
                   help="refuse when the estimated matrix exceeds this (default: the available memory)")
    p.add_argument("--out", required=True, help="output file: .npz or .mat")
    from ._common import add_mat_format_argument

    add_mat_format_argument(p)  # for a .mat output
    p.set_defaults(func=run)


def _target(case, name):
    from ..case import union
    from ..errors import StructureError

    if name:
        return case.structure(name)
    if case.has("PTV"):
        return case.structure("PTV")
    targets = case.targets()
    if not targets:
        raise StructureError(f"case '{case.name}': no target structure; give --target NAME")
    out = targets[0]
    for t in targets[1:]:
        out = union(out, t, name="Targets")
    return out


def run(args) -> int:
    from .._log import peak_memory_mib
    from .._resources import check_memory, influence_bytes
    from ..beams import BeamGeometry, MLCModel, beamlet_grid_for_target, isocenter_for
    from ..case import resample_case
    from ..dose_engine import Correction, default_beam_model, influence_matrix, load_beam_model
    from ..errors import InputError
    from ._validate import check_dij_args

    out = Path(args.out)
    if out.suffix.lower() not in (".npz", ".mat"):
        raise InputError(f"--out {out}: expected a .npz or .mat file name")
    if args.beamlet_mm <= 0 or args.grid_mm <= 0:
        raise InputError("--beamlet-mm and --grid-mm must be positive")
    check_dij_args(args)
    case = _load(args.case, args.rtstruct)
    t0 = time.perf_counter()
    body = case.body
    dose_case = resample_case(case, args.grid_mm, region=body, margin_mm=5.0 if body is not None else 0.0)
    target = _target(dose_case, args.target)
    iso = isocenter_for(target)
    gantries = list(args.gantry) if args.gantry else [360.0 * b / args.beams for b in range(args.beams)]
    if args.beams < 1 and not args.gantry:
        raise InputError(f"--beams must be >= 1, got {args.beams}")
    couches = list(args.couch)
    if len(couches) == 1:
        couches = couches * len(gantries)
    if len(couches) != len(gantries):
        raise InputError(f"--couch: give one angle or {len(gantries)} (one per beam), got {len(couches)}")
    model = default_beam_model() if args.machine is None else load_beam_model(args.machine)
    mlc = MLCModel.hd120() if args.beamlet_mm < 5.0 else MLCModel.millennium120()
    geoms = [BeamGeometry(g, args.collimator, c, iso, model.sad_mm, case.patient_position)
             for g, c in zip(gantries, couches)]
    grids = [beamlet_grid_for_target(target, g, mlc, beamlet_mm=args.beamlet_mm, margin_mm=args.margin_mm)
             for g in geoms]
    body_d = dose_case.body
    voxels = np.flatnonzero(body_d.mask) if body_d is not None else None
    check_memory(influence_bytes(sum(g.n_beamlets for g in grids), voxels.size if voxels is not None
                                 else dose_case.grid.size, args.grid_mm, args.cutoff_mm or 30.0),
                 f"an influence matrix of {sum(g.n_beamlets for g in grids)} beamlets", args.max_memory_gib)
    print(f"case {case.name}: dose grid {dose_case.grid.shape} (z,y,x) at {args.grid_mm:g} mm, target "
          f"'{target.name}', isocentre ({iso[0]:.1f}, {iso[1]:.1f}, {iso[2]:.1f}) mm, {len(geoms)} beams, "
          f"{sum(g.n_beamlets for g in grids)} beamlets of {args.beamlet_mm:g} mm", file=sys.stderr)
    bar = _bar(len(geoms))
    try:
        tb = time.perf_counter()
        D = influence_matrix(dose_case.density, dose_case.grid, geoms, grids, voxels, model=model,
                             cutoff_mm=args.cutoff_mm, correction=Correction[args.correction.upper()],
                             progress=bar)
        build_s = time.perf_counter() - tb
    finally:
        bar.close()
    tw = time.perf_counter()
    if out.suffix.lower() == ".npz":
        write_npz(out, D)
    else:
        from ..io import write_matrad_dij

        write_matrad_dij(out, D, mat_format=args.mat_format)
    write_s = time.perf_counter() - tw
    print(f"influence matrix: {D.n_voxels} voxels x {D.n_beamlets} beamlets, {D.nnz} non-zeros "
          f"({D.nbytes / 2**20:.0f} MiB), build {build_s:.2f} s, write {write_s:.2f} s, total "
          f"{time.perf_counter() - t0:.2f} s, peak memory {peak_memory_mib():.0f} MiB -> {out}")
    return 0


def _load(spec: str, rtstruct):
    if str(spec).lower().startswith("phantom:"):
        from ..phantoms import make_phantom

        return make_phantom(str(spec).split(":", 1)[1])
    from ..io import load_case

    return load_case(spec, rtstruct=rtstruct)


def _bar(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="dij", unit="beam", file=sys.stderr, dynamic_ncols=True)

    def cb(done, n):
        bar.update(max(done - bar.n, 0))

    cb.close = bar.close
    return cb


# ---------------------------------------------------------------- writers
def write_npz(path: Path, D) -> Path:
    """scipy ``.npz`` (``scipy.sparse.load_npz`` reads the matrix) plus geometry arrays."""
    from .._log import atomic_output

    m = D.matrix
    g = D.grid
    arrays = {
        "data": m.data, "indices": m.indices, "indptr": m.indptr, "format": np.array(b"csc"),
        "shape": np.array(m.shape, dtype=np.int64),
        "voxel_indices": D.voxel_indices, "beam_offsets": D.beam_offsets,
        "grid_shape_zyx": np.array(g.shape, dtype=np.int64), "grid_spacing_mm_xyz": np.array(g.spacing_mm),
        "grid_origin_mm_xyz": np.array(g.origin_mm), "grid_direction": np.asarray(g.direction),
        "gantry_deg": np.array([b.gantry_deg for b in D.geometries]),
        "collimator_deg": np.array([b.collimator_deg for b in D.geometries]),
        "couch_deg": np.array([b.couch_deg for b in D.geometries]),
        "isocenter_mm": np.array([b.isocenter_mm for b in D.geometries]),
        "sad_mm": np.array([b.sad_mm for b in D.geometries]),
        "units": np.array("Gy per fraction per MU (beamlet weights in MU)"),
    }
    for b, bg in enumerate(D.beamlet_grids):
        arrays[f"beam{b}_x_edges_mm"] = bg.x_edges_mm
        arrays[f"beam{b}_y_edges_mm"] = bg.y_edges_mm
        arrays[f"beam{b}_active"] = bg.active
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path

"""Shared fixtures and helpers of the test suite.

* The optional reference data in ``../shared/data``: tests that need it use the ``shared_data``
  fixture (or ``require_shared``) and skip with a reason on machines where the folder is absent,
  so the suite still runs on a bare clone.
* ``model``: the shipped default beam model (one per test module).
* ``run_cli(argv, capsys)``: the command line in-process, its exit status and standard error.
* ``elliptic_body()``: an elliptic-cylinder patient outline for the collision and arc tests.
* ``sphere_occupancy(...)``: sub-voxel occupancy of a ball by supersampling its surface voxels.
* ``spine_case(...)``: a binary-mask spine case with a known uniform dose (evaluation, comparison,
  fractionation and CLI tests), on ``synthetic_coords()`` with ``synthetic_structure``.

Helpers are imported with ``from conftest import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SBRTPLAN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(*relpath: str) -> Path:
    """Path of ``../shared/data/<relpath>``; skip the test when it does not exist."""
    p = SHARED_DATA.joinpath(*relpath)
    if not p.exists():
        pytest.skip(f"reference data not available: {p} (optional ../shared/data)")
    return p


@pytest.fixture
def shared_data() -> Path:
    """Root of the optional reference data; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder not available: {SHARED_DATA}")
    return SHARED_DATA


def mc_slab_lh(ref: Path, field_cm: int, depth_mm: float, window_mm: float = 5.0) -> tuple[float, float]:
    """Monte Carlo heterogeneity factor L/H of ``../shared/data/reference/mc_lung_slab`` at a depth:
    each code's mean over +-``window_mm``, the two codes (ompMC, pyRadMC) combined by inverse
    variance, as that reference's README does.  Returns (L/H, 1-sigma)."""
    ratios, weights = [], []
    for pkg in ("ompmc", "pyradmc"):
        h = np.loadtxt(ref / f"cax_{pkg}_H_{field_cm}x{field_cm}.csv", delimiter=",", skiprows=1)
        lung = np.loadtxt(ref / f"cax_{pkg}_L_{field_cm}x{field_cm}.csv", delimiter=",", skiprows=1)
        sel = np.abs(h[:, 0] - depth_mm) <= window_mm + 1e-6
        r = lung[sel, 1].mean() / h[sel, 1].mean()
        u = r * np.sqrt(np.sum(lung[sel, 2] ** 2) + np.sum(h[sel, 2] ** 2)) / sel.sum()
        ratios.append(r)
        weights.append(1.0 / u ** 2)
    w = np.asarray(weights)
    return float(np.dot(w, ratios) / w.sum()), float(1.0 / np.sqrt(w.sum()))


@pytest.fixture(scope="module")
def model():
    """The shipped default beam model (``generic-6MV-sf``), once per test module."""
    from sbrtplan.dose_engine.model import default_beam_model

    return default_beam_model()


def run_cli(argv, capsys) -> tuple[int, str]:
    """Run ``sbrtplan ARGV`` in-process; returns (exit status, standard error)."""
    from sbrtplan.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refuses malformed options itself (status 2)
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    return rc, err


def elliptic_body(half_width_mm: float = 150.0, half_thickness_mm: float = 100.0):
    """Elliptic-cylinder patient outline (default 300 x 200 mm, 200 mm long) centred on the origin,
    5 mm voxels, role EXTERNAL: the body of the collision-model and arc tests."""
    from sbrtplan.case import Grid, Structure, StructureRole

    g = Grid((41, 61, 81), (5.0, 5.0, 5.0), (-200.0, -150.0, -100.0))
    x, y, z = g.axis_coordinates_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    m = (xx / half_width_mm) ** 2 + (yy / half_thickness_mm) ** 2 <= 1
    return Structure("BODY", g, m, role=StructureRole.EXTERNAL)


SYNTHETIC_H_MM = 2.0
SYNTHETIC_N = 50          # 100 mm cube of 2 mm voxels; voxel centres at even mm from -50 to 48


def synthetic_coords():
    """The 100 mm cube of 2 mm voxels of the synthetic evaluation cases: (grid, Z, Y, X) in mm."""
    from sbrtplan.case import Grid

    n, h = SYNTHETIC_N, SYNTHETIC_H_MM
    g = Grid((n, n, n), (h, h, h), (-50.0, -50.0, -50.0))
    x, y, z = g.axis_coordinates_mm()
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    return g, Z, Y, X


def synthetic_structure(name, g, mask):
    """A binary-mask structure with the role its TG-263 name implies."""
    from sbrtplan.case import Structure
    from sbrtplan.case.names import infer_role

    return Structure(name, g, mask, infer_role(name))


def spine_case(cord_dose_gy=15.0, ptv_core_gy=28.0, cold_fraction=0.0, gtv_gy=None, prv=True):
    """Binary-mask spine case: PTV block with a uniform dose, a cord column with a uniform dose.

    The PTV is a 30 x 30 x 30 mm box (15 x 15 x 15 voxels = 27.0 cc) at ``ptv_core_gy``; a slab of
    ``cold_fraction`` of its voxels (whole x-planes) is at 20 Gy.  The cord (|x|, |y| < 5 mm) and its
    PRV (|x|, |y| < 7 mm) run along z at ``cord_dose_gy``; the GTV is a 10 mm cube in the PTV.
    """
    from sbrtplan.case import Dose

    g, Z, Y, X = synthetic_coords()
    dose = np.zeros(g.shape, np.float32)
    ptv = (np.abs(X - 30) < 15) & (np.abs(Y) < 15) & (np.abs(Z) < 15)
    gtv = (np.abs(X - 30) < 5) & (np.abs(Y) < 5) & (np.abs(Z) < 5)
    cord = (np.abs(X) < 5) & (np.abs(Y) < 5)
    cord_prv = (np.abs(X) < 7) & (np.abs(Y) < 7)
    dose[ptv] = ptv_core_gy
    n_cold = int(round(cold_fraction * 15))
    if n_cold:
        xs = np.unique(X[ptv])[:n_cold]
        dose[ptv & np.isin(X, xs)] = 20.0
    if gtv_gy is not None:
        dose[gtv] = gtv_gy
    dose[cord_prv] = cord_dose_gy
    s = synthetic_structure
    structures = {"PTV": s("PTV", g, ptv), "GTV": s("GTV", g, gtv), "SpinalCord": s("SpinalCord", g, cord),
                  "External": s("External", g, np.ones(g.shape, bool))}
    if prv:
        structures["SpinalCord_PRV02"] = s("SpinalCord_PRV02", g, cord_prv & ~ptv)
    return Dose(g, dose, "synthetic"), structures


def sphere_occupancy(Z, Y, X, centre_zyx_mm, radius_mm: float, voxel_mm: float, m: int = 8) -> np.ndarray:
    """Occupancy (fraction of each voxel inside a ball) on the voxel-centre coordinates ``Z, Y, X`` (mm).

    Voxels whose centre lies within 0.9 voxel of the surface are sampled on an ``m``^3 sub-grid
    (occupancy error below 1/m^3 per voxel plus the sub-grid's surface error); the others are 0 or 1.
    """
    cz, cy, cx = centre_zyx_mm
    r = np.sqrt((Z - cz) ** 2 + (Y - cy) ** 2 + (X - cx) ** 2)
    occ = (r <= radius_mm).astype(np.float32)
    bnd = np.argwhere(np.abs(r - radius_mm) < 0.9 * voxel_mm)
    o = (np.arange(m) + 0.5) / m - 0.5
    oz, oy, ox = (q.ravel() * voxel_mm for q in np.meshgrid(o, o, o, indexing="ij"))
    t = tuple(bnd.T)
    dz, dy, dx = Z[t][:, None] + oz - cz, Y[t][:, None] + oy - cy, X[t][:, None] + ox - cx
    occ[t] = (dz ** 2 + dy ** 2 + dx ** 2 <= radius_mm ** 2).mean(axis=1)
    return occ

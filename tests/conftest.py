"""Shared fixtures: the optional reference data in ``../shared/data``.

Tests that need it use the ``shared_data`` fixture (or ``require_shared``) and
skip with a reason on machines where the folder is absent, so the suite still
runs on a bare clone.
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

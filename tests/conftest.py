"""Shared fixtures: the optional reference data in ``../shared/data``.

Tests that need it use the ``shared_data`` fixture (or ``require_shared``) and
skip with a reason on machines where the folder is absent, so the suite still
runs on a bare clone.
"""

from __future__ import annotations

import os
from pathlib import Path

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

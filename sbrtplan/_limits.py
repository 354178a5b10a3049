"""Plausibility limits of input values (``sbrtplan/data/input_limits.yaml``).

The file states the meaning of each bound; validation code reads it through
:func:`input_limits` (cached) so that no limit is a bare module constant.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

_FILE = Path(__file__).resolve().parent / "data" / "input_limits.yaml"


@lru_cache(maxsize=1)
def input_limits() -> dict[str, Any]:
    """The parsed limits file (a dict of sections ``options``, ``rtplan``, ``rtdose``, ``geometry``)."""
    import yaml

    with open(_FILE, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or data.get("version") != 1:
        raise RuntimeError(f"{_FILE.name}: unsupported limits file (expected version 1)")
    return data


def limit(section: str, key: str):
    """One value of the limits file, e.g. ``limit("options", "grid_mm") -> [0.5, 5.0]``."""
    return input_limits()[section][key]

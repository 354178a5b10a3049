"""Memory guards: estimate what an array will need before allocating it.

:func:`check_memory` refuses a computation whose estimate exceeds the memory
available now (``MemAvailable``) or a user limit (``--max-memory-gib``), with
the estimate in the message, instead of being killed minutes later.
"""

from __future__ import annotations

import math
import os

from .errors import ResourceError

GIB = float(2 ** 30)


def available_memory_bytes() -> float | None:
    """Memory the system can give this process now (Linux ``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(estimate_bytes: float, what: str, max_memory_gib: float | None = None) -> None:
    """Refuse ``what`` when ``estimate_bytes`` exceeds the available memory or ``max_memory_gib``."""
    limit_b = available_memory_bytes()
    source = "the available memory"
    if max_memory_gib is not None and (limit_b is None or max_memory_gib * GIB < limit_b):
        limit_b, source = max_memory_gib * GIB, "--max-memory-gib"
    if limit_b is not None and estimate_bytes > limit_b:
        raise ResourceError(f"{what} needs about {estimate_bytes / GIB:.1f} GiB, more than {source} "
                            f"({limit_b / GIB:.1f} GiB); use a coarser --grid-mm, fewer beams or a smaller region")


#: bytes per dose-grid voxel while a plan is made: density, dose, body mask and occupancy (float32 + bool),
#: two float32 work arrays of the optimiser and evaluation, and ~12 structure masks with occupancy (5 B each)
PLAN_BYTES_PER_VOXEL = 4 + 4 + 1 + 4 + 2 * 4 + 12 * 5


def grid_voxels(extent_mm, spacing_mm: float) -> float:
    """Voxels of a box ``extent_mm`` (x, y, z) at isotropic ``spacing_mm`` (a float: it may be huge)."""
    return float(math.prod(max(1.0, math.ceil(float(e) / spacing_mm) + 1) for e in extent_mm))


def influence_bytes(n_beamlets: int, n_voxels: float, spacing_mm: float, cutoff_mm: float = 30.0,
                    path_mm: float = 400.0) -> float:
    """Upper estimate of a sparse influence matrix: each beamlet reaches the voxels of a cylinder of radius
    ``cutoff_mm`` along a path of ``path_mm`` (at most ``n_voxels``); 8 bytes per non-zero (float32 value +
    int32 row), twice for the assembly buffers."""
    per_beamlet = min(n_voxels, math.pi * cutoff_mm ** 2 * path_mm / spacing_mm ** 3)
    return 2.0 * 8.0 * per_beamlet * n_beamlets

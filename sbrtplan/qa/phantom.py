"""The QA phantom of a verification: a built-in one on the dose grid, or the CT of a physical phantom."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..case import Case
from ..errors import InputError
from .criteria import QACriteria, load_criteria


def load_qa_phantom(spec: str, *, grid_mm: float | None = None, reference_point_mm=None,
                    criteria: QACriteria | None = None) -> Case:
    """The phantom case on its dose grid.

    Parameters
    ----------
    spec : str
        A built-in phantom name (``qa_slab``, ``qa_cylinder``; ``phantom:`` prefix
        optional) or a folder holding the CT of a physical phantom.
    grid_mm : float, optional
        Dose grid spacing (default and maximum: ``criteria.max_grid_mm``, 2 mm).
    reference_point_mm : (x, y, z), optional
        The chamber centre in the phantom's coordinates.  Built-in phantoms know
        theirs; for a CT the default is the centre of the phantom's outline.
    """
    from ..case import resample_case
    from ..phantoms import PHANTOMS, make_phantom

    crit = criteria or load_criteria()
    h = crit.max_grid_mm if grid_mm is None else float(grid_mm)
    if not (math.isfinite(h) and 0.5 <= h <= crit.max_grid_mm):
        raise InputError(f"--grid-mm: {grid_mm!r}; expected 0.5 to {crit.max_grid_mm:g} mm (the QA dose grid)")
    name = str(spec).strip()
    key = name.split(":", 1)[1] if name.lower().startswith("phantom:") else name
    if key.lower().replace("-", "_") in PHANTOMS:
        case = make_phantom(key, h)
        if reference_point_mm is not None:
            case.metadata["reference_point_mm"] = tuple(float(v) for v in reference_point_mm)
        return case
    p = Path(name)
    if not p.is_dir():
        raise InputError(f"--phantom {spec!r}: neither a built-in phantom ({', '.join(PHANTOMS)}) nor a CT folder")
    from ..io import body_outline, read_ct_series

    ct = read_ct_series(p)
    ct.add_structure(body_outline(ct, exclude_couch=False), replace=True)
    case = resample_case(ct, h, region=ct.body, margin_mm=5.0)
    if reference_point_mm is None:
        idx = np.argwhere(case.body.mask)
        lo, hi = case.grid.patient_from_index(idx.min(axis=0)), case.grid.patient_from_index(idx.max(axis=0))
        reference_point_mm = tuple(float(v) for v in 0.5 * (lo + hi))
    case.metadata.update({"reference_point_mm": tuple(float(v) for v in reference_point_mm),
                          "detector_plane": {"orientation": "coronal"}, "chamber_axis": "z", "qa_phantom": True})
    return case

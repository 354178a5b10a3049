"""Built-in analytic phantoms, generated deterministically by code.

Public API
----------
make_phantom(name, spacing_mm=None) -> Case
PHANTOMS : dict of name -> one-line description
COHORT_PHANTOMS : dict of name -> (protocol, description): the parametric cases of the held-out
    cohort (``parametric_spine``, ``parametric_liver``, ``bone``), also in :data:`PHANTOMS`
vertebral_body_case, liver_lesion_case : targets derived on a real CT (``real_anatomy``)

Every phantom is a :class:`sbrtplan.case.Case` in DICOM patient coordinates
(LPS, mm, head-first supine, origin near the patient centre) with CT numbers
chosen so that the default HU->density table gives the intended relative
electron densities, TG-263 structure names, and deterministic DICOM UIDs.
"""

from __future__ import annotations

import math

from .._log import get_logger, timed
from ..case import Case
from ..errors import InputError
from . import bone, cshape, liver, lung, lung_slab, parametric_liver, parametric_spine, spine
from . import qa as _qa
from . import tbi as _tbi
from . import prostate_seeds as _seeds
from .real_anatomy import liver_lesion_case, vertebral_body_case

log = get_logger(__name__)

_MODULES = {"spine": spine, "spine_two_levels": spine.two_levels, "liver": liver, "lung": lung, "lung_slab": lung_slab, "cshape": cshape,
            "qa_slab": _qa.SLAB, "qa_cylinder": _qa.CYLINDER,
            "tbi": _tbi,
            "prostate_seeds": _seeds, "prostate_seeds_postimplant": _seeds.postimplant}

# the held-out cohort's parametric cases, one registry entry each (``phantom:spine_t7_epidural``)
_COHORT = {**parametric_spine.VARIANTS, **parametric_liver.VARIANTS, **bone.VARIANTS}
_MODULES.update(_COHORT)

PHANTOMS: dict[str, str] = {name: mod.DESCRIPTION for name, mod in _MODULES.items()}
COHORT_PHANTOMS: dict[str, tuple[str, str]] = {name: (v.protocol, v.DESCRIPTION) for name, v in _COHORT.items()}

# Finer than 0.5 mm the grids get large for no benefit; coarser than 5 mm the
# anatomy (a 10 mm cord) is no longer resolved.
_SPACING_RANGE_MM = (0.5, 5.0)


def make_phantom(name: str, spacing_mm: float | None = None) -> Case:
    """Build the phantom ``name`` on an isotropic grid.

    Parameters
    ----------
    name : str
        One of :data:`PHANTOMS` (``spine``, ``liver``, ``lung_slab``, ``cshape``);
        case-insensitive, ``-`` and ``_`` are interchangeable.
    spacing_mm : float, optional
        Voxel size in mm (default: the phantom's own, 2 mm).

    Returns
    -------
    Case
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in _MODULES:
        raise InputError(f"unknown phantom {name!r}; available: {', '.join(_MODULES)}")
    mod = _MODULES[key]
    spacing = mod.DEFAULT_SPACING_MM if spacing_mm is None else spacing_mm
    try:
        spacing = float(spacing)
    except (TypeError, ValueError):
        raise InputError(f"phantom '{key}': spacing_mm must be a number in mm, got {spacing_mm!r}") from None
    lo, hi = _SPACING_RANGE_MM
    if not (math.isfinite(spacing) and lo <= spacing <= hi):
        raise InputError(f"phantom '{key}': spacing_mm must be between {lo:g} and {hi:g} mm, got {spacing_mm!r}")
    with timed(f"build phantom '{key}' at {spacing:g} mm", log):
        return mod.build(spacing)


__all__ = ["make_phantom", "PHANTOMS", "COHORT_PHANTOMS", "vertebral_body_case", "liver_lesion_case"]

"""Body regions and midline sampling points along the patient's long axis.

For every CT slice the body's separation along the beam axis is measured on the ray through
the body's thickest part near its centre (the mediastinum in the chest, one thigh in the
legs); the slices are grouped into strips of ``sample_step_cm`` (one compensator strip
each), and strips whose separation changes by more than 10 % are split into single slices, so
the sampling is finer where the outline changes.  Each slice is named after its body region:
from the phantom's own table, from anthropometric fractions of the height for a whole-body
CT, or relative to the lungs for a partial CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..case import Case

# Fractions of body height from the vertex where each region ends (adult anthropometry:
# chin at ~13 %, shoulders ~18 %, xiphoid ~30 %, iliac crest ~41 %, crotch ~52 %, knee ~72 %,
# ankle ~96 %).  Used only for whole-body CTs without a region table.
_ANTHRO = [("head", 0.13), ("neck", 0.17), ("shoulders", 0.20), ("chest", 0.31), ("abdomen", 0.42),
           ("pelvis", 0.52), ("thighs", 0.70), ("knees", 0.76), ("calves", 0.93), ("ankles", 0.975),
           ("feet", 1.01)]
REGION_ORDER = [name for name, _ in _ANTHRO]
WHOLE_BODY_MIN_CM = 140.0   # a CT at least this long is treated as whole body
_SPLIT_CHANGE = 0.10        # relative separation change inside a strip that triggers per-slice sampling


@dataclass
class Sample:
    """One midline sampling point (a compensator strip)."""

    region: str
    z_lo_mm: float
    z_hi_mm: float
    point_mm: np.ndarray          # midline point (x, y, z)
    separation_cm: float          # geometric thickness along the beam axis
    width_cm: float               # body width across the beam (for the equivalent square)


def region_of_slices(case: Case, body: np.ndarray, lungs: np.ndarray | None) -> list[str]:
    """Region name of every slice (``""`` outside the body)."""
    z = case.grid.axis_coordinates_mm()[2]
    has = body.any(axis=(1, 2))
    names = [""] * len(z)
    table = case.metadata.get("tbi_regions")
    if isinstance(table, dict):
        for k in np.flatnonzero(has):
            for name, (lo, hi) in table.items():
                if lo <= z[k] <= hi:
                    names[k] = name
                    break
        return names
    zb = z[has]
    top, bottom = float(zb.max()), float(zb.min())
    if top - bottom >= WHOLE_BODY_MIN_CM * 10.0:
        for k in np.flatnonzero(has):
            f = (top - z[k]) / (top - bottom)
            names[k] = next(n for n, end in _ANTHRO if f <= end)
        return names
    # partial CT: anchor on the lungs when present
    if lungs is not None and lungs.any():
        zl = z[lungs.any(axis=(1, 2))]
        lo, hi = float(zl.min()), float(zl.max())
        for k in np.flatnonzero(has):
            names[k] = "chest" if lo <= z[k] <= hi else ("neck/shoulders" if z[k] > hi else "abdomen")
    else:
        for k in np.flatnonzero(has):
            names[k] = "partial"
    return names


def _slice_ray(mask2d: np.ndarray, along_axis: int, spacing_along: float, spacing_across: float,
               centre_idx: float):
    """Column (index across) and entry/exit (indices along) of the slice's ray."""
    thick = mask2d.sum(axis=along_axis)                    # voxels per ray
    if thick.max() == 0:
        return None
    good = np.flatnonzero(thick >= 0.9 * thick.max())
    j = int(good[np.argmin(np.abs(good - centre_idx))])    # thick part nearest the centre
    line = mask2d[:, j] if along_axis == 0 else mask2d[j, :]
    idx = np.flatnonzero(line)
    width = np.flatnonzero(thick > 0)
    return j, int(idx[0]), int(idx[-1]), (width[-1] - width[0] + 1) * spacing_across


def sample_points(case: Case, body: np.ndarray, beam_axis: str, step_cm: float,
                  regions: list[str]) -> list[Sample]:
    """Midline sampling points for a beam travelling along ``beam_axis`` (``"y"`` or ``"x"``)."""
    g = case.grid
    x, y, z = g.axis_coordinates_mm()
    dx, dy, dz = g.spacing_mm
    cx = float(np.mean(x[np.flatnonzero(body.any(axis=(0, 1)))]))
    cy = float(np.mean(y[np.flatnonzero(body.any(axis=(0, 2)))]))
    per_slice = {}
    for k in np.flatnonzero(body.any(axis=(1, 2))):
        m = body[k]                                        # (ny, nx)
        if beam_axis == "y":
            r = _slice_ray(m, 0, dy, dx, (cx - x[0]) / dx)
            if r is None:
                continue
            j, a, b, w = r
            point = np.array([x[j], 0.5 * (y[a] + y[b]), z[k]])
            sep = (b - a + 1) * dy
        else:
            r = _slice_ray(m, 1, dx, dy, (cy - y[0]) / dy)
            if r is None:
                continue
            j, a, b, w = r
            point = np.array([0.5 * (x[a] + x[b]), y[j], z[k]])
            sep = (b - a + 1) * dx
        per_slice[int(k)] = (point, sep / 10.0, w / 10.0)
    ks = sorted(per_slice)
    if not ks:
        return []
    samples: list[Sample] = []
    step = max(1, int(round(step_cm * 10.0 / dz)))
    # strips start at the top of the body (vertex) and never cross a region boundary
    groups: list[list[int]] = []
    for k in reversed(ks):
        if groups and regions[k] == regions[groups[-1][0]] and len(groups[-1]) < step and groups[-1][-1] == k + 1:
            groups[-1].append(k)
        else:
            groups.append([k])
    for grp in groups:
        seps = np.array([per_slice[k][1] for k in grp])
        split = len(grp) > 1 and (seps.max() - seps.min()) > _SPLIT_CHANGE * np.median(seps)
        for part in ([[k] for k in grp] if split else [grp]):
            mid = part[len(part) // 2]
            point, sep, w = per_slice[mid]
            samples.append(Sample(regions[mid], float(z[min(part)] - 0.5 * dz), float(z[max(part)] + 0.5 * dz),
                                  point, float(np.median([per_slice[k][1] for k in part])), w))
    return samples

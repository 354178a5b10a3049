"""Cohort cases on real anatomy: targets derived from a contoured CT (held-out cohort).

The CT and its organs come from a file (the caller loads it with
:func:`sbrtplan.io.load_case`, e.g. the thorax-rt02 CT of ``../shared``); this
module only adds targets, with the same target chain as the phantoms
(:func:`._anatomy.target_chain`):

* :func:`vertebral_body_case`: the vertebral body in front of the contoured
  spinal cord is segmented from the CT (bone threshold in a box anterior to
  the cord on every slice, closed and hole-filled, the component facing the
  canal), its levels are found as the runs of slices between the
  intervertebral discs (local minima of the slice's bone mass), and a lesion
  (GTV) is placed in the posterior part of the chosen level's body; CTV = GTV
  + 5 mm within the derived body (one or two levels), PTV = CTV + 2 mm
  (``bone_spine``).
* :func:`liver_lesion_case`: a spherical lesion at the deepest point of the
  contoured liver; ITV = GTV + 5 mm superior-inferior and 2 mm elsewhere, PTV
  = ITV + 5 mm (``liver_hcc``).

The returned case keeps the CT, its identifiers and the organs named in
``keep`` (the clinical targets of the file are dropped so that the derived PTV
is the only one).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..case import Case, Structure, StructureRole, distance_map_mm
from ..errors import StructureError
from ._anatomy import target_chain

#: organs of the thorax-rt02 RTSTRUCT kept for planning (``Lungs`` is the union of the two lungs)
KEEP = ("External", "SpinalCord", "Lung_L", "Lung_R", "Heart", "Liver", "Esophagus")

# Bone threshold: cancellous bone of the thorax-rt02 vertebrae reads 130-300 HU, cortex 300-1000 HU,
# the muscles and vessels around them below 110 HU (measured on the CT; the aorta is not
# contrast-enhanced); 150 HU keeps the body and leaves the discs (80-120 HU) mostly out.
BONE_HU = 150.0
# Search box in front of the cord: from 2 mm in front of the cord's surface (the epidural space and
# the posterior cortex follow) to 48 mm in front of its centre (the anterior cortex lies 30-35 mm
# in front on thorax-rt02), +-28 mm left-right: room for a larger body.
ROI_AP_MM, ROI_LR_MM = (2.0, 48.0), 28.0


def _cord_centres(cord: Structure) -> dict[int, tuple[float, float]]:
    x, y, _ = cord.grid.axis_coordinates_mm()
    out = {}
    for k in np.nonzero(cord.mask.any(axis=(1, 2)))[0]:
        jj, ii = np.nonzero(cord.mask[k])
        out[int(k)] = (float(x[ii].mean()), float(y[jj].mean()))
    return out


def segment_vertebral_bodies(case: Case, cord_name: str = "SpinalCord") -> tuple[np.ndarray, np.ndarray]:
    """Vertebral-body mask in front of the cord on every cord slice, and each slice's bone mass.

    Returns ``(mask, score)``: the mask on the case grid and, per slice, the
    body's area (cm2) times its mean CT number above 100 HU (0 where no body
    was found): the discs are its local minima.
    """
    if cord_name not in case.structures:
        raise StructureError(f"case '{case.name}': no '{cord_name}' contour; the vertebral body is found "
                             "in front of it")
    grid = case.grid
    x, y, _ = grid.axis_coordinates_mm()
    X, Y = x[None, :], y[:, None]
    mask = np.zeros(grid.shape, dtype=bool)
    score = np.zeros(grid.shape[0])
    px_cm2 = grid.spacing_mm[0] * grid.spacing_mm[1] / 100.0
    cord = case.structures[cord_name]
    for k, (xc, yc) in _cord_centres(cord).items():
        # anterior is -y (LPS); the box starts 2 mm in front of the cord's anterior surface
        r_cord = float(np.sqrt(cord.mask[k].sum() * px_cm2 * 100.0 / np.pi))
        roi = ((np.abs(X - xc) <= ROI_LR_MM) & (Y >= yc - ROI_AP_MM[1]) & (Y <= yc - r_cord - ROI_AP_MM[0]))
        bone = (case.hu[k] >= BONE_HU) & roi
        bone = ndimage.binary_fill_holes(ndimage.binary_closing(bone, iterations=2) & roi)
        lab, _ = ndimage.label(bone)
        seed = lab[int(np.argmin(np.abs(y - (yc - 15.0)))), int(np.argmin(np.abs(x - xc)))]
        if seed == 0:
            continue
        sl = lab == seed
        mask[k] = sl
        score[k] = sl.sum() * px_cm2 * max(float(case.hu[k][sl].mean()) - 100.0, 0.0)
    return mask, score


def vertebral_levels(score: np.ndarray, slice_mm: float, min_level_mm: float = 16.0) -> list[tuple[int, int]]:
    """Runs of slices between the discs: ``[(first, last), ...]`` (inclusive).

    The discs are the local minima of the bone mass (smoothed over three
    slices) at least ``min_level_mm`` apart (a thoracic or lumbar body is
    18-30 mm tall); the slices of a minimum belong to no level.
    """
    ks = np.nonzero(score > 0)[0]
    if ks.size == 0:
        return []
    lo, hi = int(ks[0]), int(ks[-1])
    s = np.convolve(score, [0.25, 0.5, 0.25], mode="same")
    reach = max(1, int(round(0.5 * min_level_mm / slice_mm)))
    minima = [lo - 1]
    for k in range(lo + 1, hi):
        window = s[max(lo, k - reach): min(hi, k + reach) + 1]
        if s[k] <= window.min() and (k - minima[-1]) * slice_mm >= min_level_mm:
            minima.append(k)
    minima.append(hi + 1)
    return [(a + 1, b - 1) for a, b in zip(minima[:-1], minima[1:]) if b - a >= 2]


def _kept(case: Case, keep) -> dict[str, Structure]:
    return {n: s for n, s in case.structures.items() if n in keep}


def _derived(case: Case, name: str, structures: dict[str, Structure], metadata: dict) -> Case:
    return Case(name=name, grid=case.grid, hu=case.hu, structures=structures, calibration=case.calibration,
                patient_position=case.patient_position, patient=case.patient, source=case.source,
                metadata={**case.metadata, **metadata})


def vertebral_body_case(case: Case, *, z_mm: float | None = None, levels: int = 1, gtv_radius_mm: float = 10.0,
                        name: str | None = None, keep=KEEP) -> Case:
    """A vertebral-body metastasis next to the case's real spinal cord.

    Parameters
    ----------
    case : Case
        A CT with a ``SpinalCord`` contour.
    z_mm : float, optional
        Height of the treated level (default: the middle of the lungs, else of the cord).
    levels : int
        1 or 2: the lesion lies in one body, or in that body and the one below (the CTV may then
        spread through the disc between them).
    gtv_radius_mm : float
        Radius of the lesion (a sphere in the posterior part of the body, cut by the body).
    """
    if levels not in (1, 2):
        raise StructureError(f"vertebral_body_case: levels must be 1 or 2, got {levels!r}")
    R = StructureRole
    vb, score = segment_vertebral_bodies(case)
    runs = vertebral_levels(score, float(case.grid.spacing_mm[2]))
    if not runs:
        raise StructureError(f"case '{case.name}': no vertebral body found in front of the cord")
    _, _, z = case.grid.axis_coordinates_mm()
    if z_mm is None:
        ref = next((case.structures[n] for n in ("Lung_R", "Lung_L", "SpinalCord") if n in case.structures), None)
        ks = np.nonzero(ref.mask.any(axis=(1, 2)))[0]
        z_mm = float(z[(ks[0] + ks[-1]) // 2])
    k0 = int(np.argmin(np.abs(z - z_mm)))
    i = min(range(len(runs)), key=lambda r: 0 if runs[r][0] <= k0 <= runs[r][1]
            else min(abs(k0 - runs[r][0]), abs(k0 - runs[r][1])))
    if levels == 2 and i == 0:
        i = 1  # the pair needs a body below the treated one
    chosen = runs[i - levels + 1: i + 1]
    # the bone the CTV may spread in: the chosen bodies and, for two levels, the disc between them
    span = slice(chosen[0][0], chosen[-1][1] + 1)
    level_mask = np.zeros_like(vb)
    level_mask[span] = vb[span]
    body = Structure("zVertebralBody", case.grid, level_mask, R.OTHER)
    # a lesion in the posterior part of every chosen body: centred a quarter of the way from the
    # body's centroid towards the cord, cut by the body
    cord_centres = _cord_centres(case.structures["SpinalCord"])
    gtv_mask = np.zeros_like(vb)
    centres = []
    for a, b in chosen:
        one = np.zeros_like(vb)
        one[a:b + 1] = vb[a:b + 1]
        centroid = Structure("z", case.grid, one, R.OTHER).centroid_mm()
        cord_xy = np.mean([v for k, v in cord_centres.items() if a <= k <= b], axis=0)
        centre = centroid + 0.25 * (np.array([cord_xy[0], cord_xy[1], centroid[2]]) - centroid)
        gtv_mask |= _sphere_mask(case, centre, gtv_radius_mm) & one
        centres.append(tuple(float(v) for v in centre))
    gtv = Structure("GTV", case.grid, gtv_mask, R.GTV)
    chain = target_chain(gtv, ctv_margin_mm=5.0, confine=body, ptv_margin_mm=2.0)
    structures = _kept(case, keep)
    structures.update({s.name: s for s in chain})
    z_levels = [(float(z[a]), float(z[b])) for a, b in chosen]
    return _derived(case, name or f"{case.name}_vertebra", structures, {
        "target": "PTV", "protocol": "bone_spine", "site": "spine (real CT)",
        "vertebral_levels_z_mm": z_levels, "lesion_centres_mm": centres,
        "ctv_rule": "GTV + 5 mm within the derived vertebral body", "ptv_margin_mm": 2.0,
        "bone_hu_threshold": BONE_HU})


def liver_lesion_case(case: Case, *, diameter_mm: float = 25.0, name: str | None = None, keep=KEEP) -> Case:
    """A spherical lesion at the deepest point of the contoured ``Liver``."""
    R = StructureRole
    if "Liver" not in case.structures:
        raise StructureError(f"case '{case.name}': no 'Liver' contour")
    liver = case.structures["Liver"]
    depth = -distance_map_mm(liver, max_distance_mm=10.0, signed=True)
    k, j, i = np.unravel_index(int(np.argmax(depth)), depth.shape)
    centre = case.grid.patient_from_index(np.array([[k, j, i]]))[0]
    r = 0.5 * diameter_mm
    if float(depth[k, j, i]) < r:
        raise StructureError(f"case '{case.name}': the liver is {depth[k, j, i]:.0f} mm deep at most; "
                             f"no room for a {diameter_mm:g} mm lesion")
    gtv = Structure("GTV", case.grid, _sphere_mask(case, centre, r), R.GTV)
    chain = target_chain(gtv, itv_margin_xyz_mm=(2.0, 2.0, 5.0), ptv_margin_mm=5.0)
    structures = _kept(case, keep)
    structures.update({s.name: s for s in chain})
    return _derived(case, name or f"{case.name}_liver", structures, {
        "target": "PTV", "protocol": "liver_hcc", "site": "liver (real CT)",
        "lesion_centre_mm": tuple(float(v) for v in centre), "lesion_depth_mm": float(depth[k, j, i]),
        "itv_margin_xyz_mm": (2.0, 2.0, 5.0), "ptv_margin_mm": 5.0})


def _sphere_mask(case: Case, centre, radius_mm: float) -> np.ndarray:
    x, y, z = case.grid.axis_coordinates_mm()
    cx, cy, cz = centre
    return ((x[None, None, :] - cx) ** 2 + (y[None, :, None] - cy) ** 2 + (z[:, None, None] - cz) ** 2
            <= radius_mm ** 2)

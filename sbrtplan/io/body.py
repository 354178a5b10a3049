"""Automatic body outline (external contour) from the CT, couch excluded.

Used when the structure set has no EXTERNAL ROI.  Steps, all on whole
volumes with scipy.ndimage (no Python loop over voxels):

1. **Couch cut.**  The couch top is a long, thin horizontal line behind the
   patient (posterior for supine, anterior for prone positions).  For every
   image row the fraction of columns above ``-600 HU`` (shells of couch and
   immobilisation devices) is averaged over the slices; a *thin line* is a
   row whose fraction exceeds that of the rows 4 mm before and after it.  The
   couch top is the first strong line (at least 80 % of the strongest, and
   20 cm long on average) beyond the patient's centre; everything past it is
   discarded.  Immobilisation boards lying on the couch stay in the body, as
   a clinical external contour includes them (they are in the beam path).
2. **Threshold** at ``threshold_hu`` (-900 HU by default: low enough to keep
   the foam of immobilisation devices' shells, above CT air noise).
3. **In-plane closing** (octagon of about ``closing_mm``) to bridge the gaps
   between the patient and the devices under them, **hole filling** per slice
   (lungs, airways, bowel gas) and **column filling** between the body's
   front and back surfaces (air pockets between the patient and the board).
4. A light in-plane opening removes streak flaps; the **largest 3-D
   component** is kept.

Checked against the clinical BODY of the shared thorax case (Dice >= 0.97).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._log import Timings, get_logger, timed
from ..case import Case, Structure, StructureRole
from ..errors import InputError

log = get_logger(__name__)

SHELL_HU = -600.0
LINE_MIN_LENGTH_MM = 200.0
LINE_RELATIVE_STRENGTH = 0.8
LINE_PROBE_MM = 4.0


def _in_plane(shape2d) -> np.ndarray:
    s = np.zeros((3, 3, 3), dtype=bool)
    s[1] = ndi.generate_binary_structure(2, 1) if shape2d == "cross" else np.ones((3, 3), bool)
    return s


def _ap_axis(case: Case) -> tuple[int | None, int]:
    """Array axis (1 = rows j, 2 = columns i) along patient y, and +1 when the index grows posteriorly."""
    d = case.grid.direction  # columns: i, j, k in patient space
    for axis, col in ((2, 0), (1, 1)):
        if abs(d[1, col]) > 0.9:
            return axis, (1 if d[1, col] > 0 else -1)
    return None, 1


def find_couch_cut(case: Case) -> tuple[int, int, int] | None:
    """The couch top line: ``(axis, index, toward)`` or None when no couch is seen.

    ``axis`` is the array axis along anterior-posterior, ``index`` the last
    index kept in the body (the line lies on the device/couch interface) and
    ``toward`` (+1 / -1) the index direction in which the couch lies.
    """
    axis, sign = _ap_axis(case)
    pos = case.patient_position
    if axis is None or pos not in ("HFS", "FFS", "HFP", "FFP"):
        log.warning("case '%s': couch not searched (position %s, orientation)", case.name, pos)
        return None
    toward = sign if pos.endswith("S") else -sign  # the couch is behind a supine patient
    hu = case.hu
    other = 2 if axis == 1 else 1
    spacing_other = case.grid.spacing_mm[0] if other == 2 else case.grid.spacing_mm[1]
    spacing_ap = case.grid.spacing_mm[1] if axis == 1 else case.grid.spacing_mm[0]
    profile = (hu > SHELL_HU).mean(axis=(0, other))
    count = (hu > -300).sum(axis=(0, other)).astype(float)
    if count.sum() == 0:
        return None
    centre = float((count * np.arange(count.size)).sum() / count.sum())
    d = max(1, int(np.ceil(LINE_PROBE_MM / spacing_ap)))
    padded = np.pad(profile, d, mode="edge")
    score = profile - np.maximum(padded[:-2 * d], padded[2 * d:])
    length_mm = score * hu.shape[other] * spacing_other
    idx = np.arange(profile.size)
    behind = (idx - centre) * toward > 0
    cand = np.flatnonzero(behind & (length_mm >= LINE_MIN_LENGTH_MM))
    if cand.size == 0:
        return None
    strongest = length_mm[cand].max()
    strong = cand[length_mm[cand] >= LINE_RELATIVE_STRENGTH * strongest]
    first = int(strong.min() if toward > 0 else strong.max())
    cset = set(cand.tolist())
    run, j = [first], first + toward
    while j in cset:
        run.append(j)
        j += toward
    cut = int(run[int(np.argmax(profile[run]))])
    log.debug("case '%s': couch top at index %d along axis %d (line %.0f mm)", case.name, cut, axis, length_mm[cut])
    return axis, cut, toward


def body_outline(case: Case, threshold_hu: float = -900.0, closing_mm: float = 10.0,
                 exclude_couch: bool = True, timings: Timings | None = None) -> Structure:
    """The external contour of the patient from the CT, couch excluded.

    Parameters
    ----------
    case : Case
    threshold_hu : float
        Voxels above this CT number are candidate body / device voxels.
    closing_mm : float
        Radius of the in-plane closing that bridges gaps (mm).
    exclude_couch : bool
        Find the couch top and cut it away (see the module docstring).

    Returns
    -------
    Structure
        ``External`` with role EXTERNAL on the CT grid.
    """
    if not np.isfinite(threshold_hu) or closing_mm < 0:
        raise InputError(f"body_outline: threshold_hu must be finite and closing_mm >= 0, got "
                         f"{threshold_hu!r}, {closing_mm!r}")
    with timed("body outline", log, timings):
        hu = case.hu
        m = hu > threshold_hu
        couch = find_couch_cut(case) if exclude_couch else None
        axis = _ap_axis(case)[0]
        cut = None
        if couch is not None:
            axis, cut, toward = couch
            sl = [slice(None)] * 3
            sl[axis] = slice(cut + 1, None) if toward > 0 else slice(0, cut)
            m[tuple(sl)] = False
        if not m.any():
            raise InputError(f"case '{case.name}': no voxel above {threshold_hu:g} HU; cannot find the body outline")
        # Work in the bounding box of the candidate voxels (plus the closing radius).
        sx, sy = case.grid.spacing_mm[:2]
        r_mm = max(float(closing_mm), 0.0)
        pad = int(np.ceil(r_mm / min(sx, sy))) + 2
        nz, ny, nx = m.shape
        rows, cols = np.flatnonzero(m.any(axis=(0, 2))), np.flatnonzero(m.any(axis=(0, 1)))
        j0, j1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, ny)
        i0, i1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, nx)
        mc = m[:, j0:j1, i0:i1]
        # The closing only bridges gaps, so it runs on 2 x 2 blocks when pixels
        # are small; the blocks it adds are empty at full resolution, which keeps
        # the skin surface at full resolution.
        f = 2 if max(sx, sy) < 2.0 else 1
        cross, square = _in_plane("cross"), _in_plane("square")
        if r_mm > 0:
            pj, pi = (-mc.shape[1]) % f, (-mc.shape[2]) % f
            low = np.pad(mc, ((0, 0), (0, pj), (0, pi)))
            low = low.reshape(nz, low.shape[1] // f, f, low.shape[2] // f, f).any(axis=(2, 4))
            r_px = max(1, int(round(r_mm / (f * min(sx, sy)))))
            cl = low
            for it in range(r_px):  # octagon: alternate square and cross
                cl = ndi.binary_dilation(cl, structure=square if it % 2 else cross)
            for it in range(r_px):
                cl = ndi.binary_erosion(cl, structure=square if it % 2 else cross, border_value=1)
            added = cl & ~low
            up = np.repeat(np.repeat(added, f, axis=1), f, axis=2)[:, :mc.shape[1], :mc.shape[2]]
            c = mc | up
        else:
            c = mc.copy()
        if axis is not None:
            # Fill the air between the body's front and back surfaces, column by column.  Every
            # enclosed hole (lungs, airways, bowel gas) has body in front of and behind it, so this
            # also does the in-plane hole filling.
            fwd = np.logical_or.accumulate(c, axis=axis)
            bwd = np.flip(np.logical_or.accumulate(np.flip(c, axis=axis), axis=axis), axis=axis)
            c = fwd & bwd
        else:
            c = ndi.binary_fill_holes(c, structure=cross)
        # A light in-plane opening (radius ~2 pixels) removes streak flaps and thin device edges.
        # (the image border counts as body during the erosion, so a body cut by the field of view
        # keeps its edge)
        opened = ndi.binary_dilation(ndi.binary_erosion(c, structure=cross, iterations=2, border_value=1),
                                     structure=cross, iterations=2)
        c &= opened
        lab, n = ndi.label(c)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            c = lab == int(np.argmax(sizes))
        del lab
        body = np.zeros(m.shape, dtype=bool)
        body[:, j0:j1, i0:i1] = c
    return Structure(name="External", grid=case.grid, mask=body, role=StructureRole.EXTERNAL,
                     original_name="External (automatic)",
                     metadata={"automatic": True, "threshold_hu": threshold_hu, "closing_mm": closing_mm,
                               "couch_cut_index": cut})

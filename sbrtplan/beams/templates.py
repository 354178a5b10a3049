"""Site templates of 5-9 static beam directions (gantry, couch, collimator).

Angles follow IEC 61217 for a head-first supine patient: gantry 0 is anterior
(source above the patient), gantry 90 is the patient's left, gantry 180
posterior; couch rotations are kept within +-45 deg (315..45) where a C-arm
linac clears the patient in the common case.  The templates are starting
points: :func:`sbrtplan.beams.candidate_directions` with the collision model
decides which directions are actually possible for a given patient.

Design choices (SBRT practice, e.g. the spine, liver and lung SBRT
guidelines in the project's domain notes):

* **Spine**: the target wraps the vertebral body with the cord behind it, and
  the posterior skin is close; beams come from the posterior hemisphere
  (gantry ~110..250) and are spread out of the axial plane with couch kicks so
  that entrance doses do not overlap.  No anterior beams (they traverse the
  whole thorax/abdomen before reaching the vertebra).
* **Liver**: the liver lies on the right; beams enter from the right
  (anterior-right to posterior-right, gantry ~180..360 for a right-sided
  target) and avoid traversing the left lung, stomach and bowel; couch kicks
  are modest because the right-lateral head position is close to the couch.
* **Lung**: a wide ipsilateral fan with a few couch kicks (contralateral lung
  avoided).
* **Generic**: equispaced coplanar beams starting at gantry 0.
"""

from __future__ import annotations

import enum

import numpy as np

from ..errors import InputError


class Site(enum.Enum):
    """Anatomical site of the target, selecting the beam template."""

    SPINE = "spine"
    LIVER = "liver"
    LUNG = "lung"
    GENERIC = "generic"

    @classmethod
    def parse(cls, value: "Site | str") -> "Site":
        if isinstance(value, Site):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise InputError(f"unknown site {value!r}; expected one of "
                             f"{', '.join(s.value for s in cls)}") from None


_MIN_BEAMS, _MAX_BEAMS = 3, 15


def _spread(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` angles evenly spread over [lo, hi] (degrees, lo < hi, may exceed 360)."""
    if n == 1:
        return np.array([0.5 * (lo + hi)])
    return np.linspace(lo, hi, n)


def _couch_pattern(n: int, kicks: tuple[float, ...]) -> np.ndarray:
    """Alternate couch angles so that neighbouring gantry angles differ in couch."""
    return np.array([kicks[i % len(kicks)] for i in range(n)], float)


def beam_template(site: Site | str, n_beams: int, *,
                  target_side: str | None = None) -> list[tuple[float, float, float]]:
    """Beam directions for a site.

    Parameters
    ----------
    site : Site or str
    n_beams : int
        Number of beams, 3..15 (SBRT templates are meant for 5..9).
    target_side : {"left", "right", None}
        Side of the patient the target lies on (liver and lung).  Liver
        defaults to the right, lung to the right, spine ignores it.

    Returns
    -------
    list of (gantry_deg, couch_deg, collimator_deg)
        Angles in [0, 360).
    """
    site = Site.parse(site)
    try:
        n = int(n_beams)
    except (TypeError, ValueError):
        raise InputError(f"n_beams must be an integer, got {n_beams!r}") from None
    if not _MIN_BEAMS <= n <= _MAX_BEAMS:
        raise InputError(f"n_beams must be between {_MIN_BEAMS} and {_MAX_BEAMS}, got {n_beams}")
    side = None if target_side is None else str(target_side).strip().lower()
    if side not in (None, "left", "right"):
        raise InputError(f"target_side must be 'left', 'right' or None, got {target_side!r}")

    if site is Site.GENERIC:
        gantry = np.arange(n) * 360.0 / n
        couch = np.zeros(n)
    elif site is Site.SPINE:
        # Posterior hemisphere; the beams nearest to straight posterior stay
        # coplanar (largest cord sparing by the vertebral-body geometry is
        # obtained from obliques), the others alternate couch kicks of 15/30.
        gantry = _spread(120.0, 240.0, n)
        couch = _couch_pattern(n, (0.0, 15.0, 345.0, 30.0, 330.0))
        # Straight posterior beam (gantry 180) coplanar: its couch kick would
        # not change the entrance much but costs time.
        couch[np.abs(gantry - 180.0) < 1e-6] = 0.0
    elif site is Site.LIVER:
        # Right-sided fan from anterior (~ 0/360) to posterior (~ 180),
        # centred on the right lateral (270).
        gantry = _spread(190.0, 350.0, n) if side in (None, "right") else _spread(10.0, 170.0, n)
        couch = _couch_pattern(n, (0.0, 345.0, 15.0, 330.0, 30.0))
    else:  # LUNG
        gantry = _spread(170.0, 370.0, n) if side in (None, "right") else _spread(-10.0, 190.0, n)
        couch = _couch_pattern(n, (0.0, 15.0, 345.0))
    gantry = np.round(gantry % 360.0, 1)
    couch = couch % 360.0
    return [(float(g), float(c), 0.0) for g, c in zip(gantry, couch)]


def collision_free_template(site: Site | str, n_beams: int, case_or_body, isocenter_mm, *, model=None,
                            target_side: str | None = None, patient_position: str | None = None) -> list:
    """The site template with every colliding direction replaced by the nearest clear one.

    A colliding direction first loses its couch kick in 15 deg steps towards
    couch 0 (same gantry); if that does not clear, the gantry is moved away
    in 5 deg steps (both ways, up to 90 deg) at the original couch angle and
    then at couch 0.  Directions already used are skipped.

    Returns
    -------
    list of BeamGeometry
        ``n_beams`` directions at ``isocenter_mm`` (collimator from the template).

    Raises
    ------
    GeometryError
        If no clear direction is found for some template beam.
    """
    from ..case import Structure
    from ..errors import GeometryError
    from .collision import CollisionModel, body_surface_points
    from .geometry import BeamGeometry

    model = model or CollisionModel.default()
    body = case_or_body
    position = patient_position
    if body is not None and not isinstance(body, Structure):
        position = position or getattr(body, "patient_position", None)
        body = body.body
    position = position or "HFS"
    pts = None if body is None else body_surface_points(body, model.sampling_mm, model.body_extension_mm)
    used: set[tuple[float, float]] = set()
    out = []

    def clear(g: float, c: float) -> bool:
        key = (round(g % 360.0, 3), round(c % 360.0, 3))
        return key not in used and model.check(g, c, isocenter_mm, pts, patient_position=position).ok

    for g, c, col in beam_template(site, n_beams, target_side=target_side):
        kick = ((c + 180.0) % 360.0) - 180.0  # signed couch kick
        tries = [(g, kick)]
        k = kick
        while abs(k) > 1e-9:
            k = np.sign(k) * max(0.0, abs(k) - 15.0)
            tries.append((g, k))
        for dg in np.arange(5.0, 95.0, 5.0):
            for cc in ((kick, 0.0) if kick != 0 else (0.0,)):
                tries += [(g + dg, cc), (g - dg, cc)]
        for gg, cc in tries:
            if clear(gg, cc):
                used.add((round(gg % 360.0, 3), round(cc % 360.0, 3)))
                out.append(BeamGeometry(gg % 360.0, col, cc % 360.0, tuple(isocenter_mm), patient_position=position))
                break
        else:
            raise GeometryError(f"{Site.parse(site).value} template beam gantry {g:g} / couch {c:g}: no "
                                f"collision-free direction within 90 deg gantry for isocentre {tuple(isocenter_mm)}")
    return out

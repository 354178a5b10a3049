"""VMAT arc geometry: arc specifications, control-point angles and arc beams.

An arc is a gantry rotation from ``start_deg`` to ``stop_deg`` in the DICOM
direction ``CW`` (gantry angle increasing) or ``CC`` (decreasing), at a fixed
couch and collimator angle, with control points at most ``cp_spacing_deg``
apart (default 2 deg; the standards ask for <= 4 deg).  The default template
is the common two-arc SBRT set: a full clockwise arc 181 -> 179 and its
counter-clockwise return 179 -> 181, with complementary collimator angles
(30 and 330 deg) so that the interleaf leakage and tongue-and-groove lines of
the two arcs do not coincide.

VMAT planning (``workflow.vmat``) takes its arcs from :func:`vmat_arcs` (the
template, each arc checked against the collision model and cut to its clear
run), divides them into optimisation sectors of one common width
(:func:`arc_sectors`), turns each sector's optimised leaf edges into an
aperture (:func:`sector_aperture`) and the sectors' apertures and MU into a
deliverable arc (:func:`arc_beam`); :func:`sector_beams` splits such an arc
back into its sectors (the final dose is linear in the sector MU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._log import get_logger
from ..case import Structure
from ..errors import GeometryError, InputError
from .beamlets import BeamletGrid
from .delivery import Aperture, Beam, ControlPoint, MLCModel, Technique
from .sequencing import _dlg_retracted

log = get_logger(__name__)

_MAX_CP_SPACING_DEG = 4.0


def _direction(direction: str) -> str:
    d = str(direction).strip().upper()
    if d == "CCW":
        d = "CC"
    if d not in ("CW", "CC"):
        raise GeometryError(f"arc direction must be 'CW' or 'CC', got {direction!r}")
    return d


@dataclass(frozen=True)
class ArcSpec:
    """One arc: start and stop gantry angle, direction, couch and collimator, CP spacing."""

    start_deg: float
    stop_deg: float
    direction: str = "CW"
    couch_deg: float = 0.0
    collimator_deg: float = 0.0
    cp_spacing_deg: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", _direction(self.direction))
        for name in ("start_deg", "stop_deg", "couch_deg", "collimator_deg"):
            v = float(getattr(self, name))
            if not np.isfinite(v):
                raise GeometryError(f"arc {name} must be finite, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v % 360.0)
        s = float(self.cp_spacing_deg)
        if not (0 < s <= _MAX_CP_SPACING_DEG):
            raise GeometryError(f"arc cp_spacing_deg must be in (0, {_MAX_CP_SPACING_DEG:g}], "
                                f"got {self.cp_spacing_deg!r}")
        object.__setattr__(self, "cp_spacing_deg", s)
        if self.span_deg <= 0:
            raise GeometryError(f"arc from {self.start_deg:g} to {self.stop_deg:g} deg has no extent")

    @property
    def span_deg(self) -> float:
        """Rotation from start to stop in the arc's direction (0 < span < 360)."""
        d = (self.stop_deg - self.start_deg) if self.direction == "CW" else (self.start_deg - self.stop_deg)
        return float(d % 360.0)

    @property
    def n_control_points(self) -> int:
        return int(np.ceil(self.span_deg / self.cp_spacing_deg - 1e-9)) + 1

    def gantry_angles_deg(self) -> np.ndarray:
        """Control-point gantry angles in [0, 360), equally spaced, start and stop included."""
        steps = np.linspace(0.0, self.span_deg, self.n_control_points)
        sign = 1.0 if self.direction == "CW" else -1.0
        return np.round((self.start_deg + sign * steps) % 360.0, 9) % 360.0

    def angle(self, t_deg) -> np.ndarray:
        """Gantry angle (deg, in [0, 360)) after rotating ``t_deg`` from the start in the arc's direction."""
        sign = 1.0 if self.direction == "CW" else -1.0
        return (self.start_deg + sign * np.asarray(t_deg, float)) % 360.0

    def with_span(self, span_deg: float) -> "ArcSpec":
        """The same arc (start, direction, couch, collimator) ending ``span_deg`` after its start."""
        if not 0 < span_deg <= self.span_deg + 1e-9:
            raise GeometryError(f"arc span {span_deg!r} deg must be in (0, {self.span_deg:g}]")
        return ArcSpec(self.start_deg, float(self.angle(span_deg)), self.direction, self.couch_deg,
                       self.collimator_deg, self.cp_spacing_deg)

    def reversed(self) -> "ArcSpec":
        """The same arc travelled back (stop -> start, opposite direction)."""
        return ArcSpec(self.stop_deg, self.start_deg, "CC" if self.direction == "CW" else "CW",
                       self.couch_deg, self.collimator_deg, self.cp_spacing_deg)


_PARTIAL = {"right": (181.0, 1.0), "left": (179.0, 359.0)}


def arc_template(n_arcs: int = 2, *, cp_spacing_deg: float = 2.0, start_deg: float = 181.0,
                 stop_deg: float = 179.0, partial: str | tuple[float, float] | None = None,
                 couch_deg: float = 0.0, collimators_deg: tuple[float, ...] = (30.0, 330.0)) -> list[ArcSpec]:
    """Arc set for VMAT.

    Parameters
    ----------
    n_arcs : int
        1 to 4; arcs alternate CW and CC (back and forth over the same range).
    cp_spacing_deg : float
        Control-point spacing (<= 4 deg).
    start_deg, stop_deg : float
        First arc (clockwise); default the full arc 181 -> 179.
    partial : {"right", "left"} or (start, stop), optional
        Partial arc instead: "right" is the patient's right half (gantry
        181 -> 1 CW for a head-first supine patient), "left" the left half
        (179 -> 359 CC); a tuple gives the clockwise start and stop.
    couch_deg : float
        Couch angle of every arc (check it with :func:`arc_collisions`).
    collimators_deg : tuple
        Collimator angles, cycled over the arcs.
    """
    try:
        n = int(n_arcs)
    except (TypeError, ValueError):
        raise InputError(f"n_arcs must be an integer, got {n_arcs!r}") from None
    if not 1 <= n <= 4:
        raise InputError(f"n_arcs must be between 1 and 4, got {n_arcs!r}")
    direction = "CW"
    if partial is not None:
        if isinstance(partial, str):
            key = partial.strip().lower()
            if key not in _PARTIAL:
                raise InputError(f"partial arc must be 'right', 'left' or (start, stop), got {partial!r}")
            start_deg, stop_deg = _PARTIAL[key]
            direction = "CW" if key == "right" else "CC"
        else:
            try:
                start_deg, stop_deg = (float(v) for v in partial)
            except (TypeError, ValueError):
                raise InputError(f"partial arc must be 'right', 'left' or (start, stop), got {partial!r}") from None
    if not collimators_deg:
        raise InputError("collimators_deg must hold at least one angle")
    first = ArcSpec(start_deg, stop_deg, direction, couch_deg, collimators_deg[0], cp_spacing_deg)
    arcs = []
    for i in range(n):
        base = first if i % 2 == 0 else first.reversed()
        arcs.append(ArcSpec(base.start_deg, base.stop_deg, base.direction, couch_deg,
                            collimators_deg[i % len(collimators_deg)], cp_spacing_deg))
    return arcs


def make_arc(name: str, gantry_deg: np.ndarray, apertures: list[Aperture], mu_per_cp: np.ndarray, *,
             direction: str, couch_deg: float = 0.0, collimator_deg: float = 0.0,
             isocenter_mm: tuple[float, float, float], mlc: MLCModel, sad_mm: float = 1000.0,
             patient_position: str = "HFS") -> Beam:
    """A VMAT :class:`Beam` from control-point angles, apertures and MU.

    Parameters
    ----------
    gantry_deg : (n_cp,)
        Control-point gantry angles, advancing in ``direction`` by less than 180 deg per step.
    apertures : list of n_cp Aperture
    mu_per_cp : (n_cp,) or (n_cp - 1,)
        MU per fraction.  With ``n_cp`` values, ``mu_per_cp[i]`` is the MU
        attributed to control point ``i`` (the aperture-weight of direct
        aperture optimisation) and is delivered half in the interval before and
        half in the interval after it (the first and last control points give
        all of theirs to their single interval); with ``n_cp - 1`` values they
        are the MU of each interval directly.
    direction : {"CW", "CC"}
    """
    d = _direction(direction)
    g = np.asarray(gantry_deg, float).reshape(-1)
    n = g.size
    if n < 2:
        raise GeometryError(f"arc '{name}' needs at least 2 control points, got {n}")
    if len(apertures) != n:
        raise GeometryError(f"arc '{name}': {len(apertures)} apertures for {n} control points")
    for k, ap in enumerate(apertures):
        if ap.n_pairs != mlc.n_pairs:
            raise GeometryError(f"arc '{name}': aperture {k} has {ap.n_pairs} leaf pairs, {mlc.name} has {mlc.n_pairs}")
    step = np.diff(g) % 360.0 if d == "CW" else (-np.diff(g)) % 360.0
    bad = (step <= 0) | (step >= 180.0)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise GeometryError(f"arc '{name}': gantry {g[i]:.2f} -> {g[i + 1]:.2f} deg does not advance {d}")
    m = np.asarray(mu_per_cp, float).reshape(-1)
    if np.any(~np.isfinite(m)) or np.any(m < 0):
        raise GeometryError(f"arc '{name}': MU must be finite and >= 0")
    if m.size == n:
        interval = 0.5 * (m[:-1] + m[1:])
        interval[0] += 0.5 * m[0]
        interval[-1] += 0.5 * m[-1]
    elif m.size == n - 1:
        interval = m
    else:
        raise GeometryError(f"arc '{name}': {m.size} MU values for {n} control points "
                            f"(expected {n} per control point or {n - 1} per interval)")
    total = float(interval.sum())
    if total <= 0:
        raise GeometryError(f"arc '{name}' delivers no MU")
    cum = np.concatenate([[0.0], np.cumsum(interval) / total])
    cum[-1] = 1.0
    cps = [ControlPoint(float(g[k] % 360.0), apertures[k].copy(), float(cum[k])) for k in range(n)]
    return Beam(name=name, control_points=cps, mu=total, mlc=mlc, isocenter_mm=tuple(isocenter_mm),
                collimator_deg=float(collimator_deg) % 360.0, couch_deg=float(couch_deg) % 360.0, sad_mm=sad_mm,
                technique=Technique.VMAT, patient_position=patient_position, arc_direction=d)


def _collision_model():
    from .collision import CollisionModel

    return CollisionModel.default()


def _surface(body, model) -> np.ndarray | None:
    """Body surface points for the collision checks (``body`` a Structure, points already, or None)."""
    from .collision import body_surface_points

    if body is None or isinstance(body, np.ndarray):
        return body
    return body_surface_points(body, model.sampling_mm, model.body_extension_mm)


def arc_collisions(spec: ArcSpec, isocenter_mm, body: Structure | np.ndarray | None = None, model=None, *,
                   patient_position: str = "HFS") -> list[float]:
    """Control-point gantry angles of ``spec`` at which the collision model finds a collision.

    An empty list means the arc (including a couch-rotated one) can be
    delivered; ``model`` defaults to :meth:`CollisionModel.default`; ``body`` is the outline or
    its surface points (:func:`~sbrtplan.beams.collision.body_surface_points`).
    """
    model = model or _collision_model()
    pts = _surface(body, model)
    return [float(a) for a in spec.gantry_angles_deg()
            if not model.check(float(a), spec.couch_deg, isocenter_mm, pts, patient_position=patient_position).ok]


def interval_mu_matrix(n_cp: int) -> np.ndarray:
    """(n_cp - 1, n_cp) matrix taking per-control-point MU to per-interval MU.

    It is the split :func:`make_arc` applies: each control point's MU goes
    half to the interval before and half to the one after it; the first and
    last control points give all of theirs to their only interval.
    """
    n = int(n_cp)
    if n < 2:
        raise GeometryError(f"an arc needs at least 2 control points, got {n_cp}")
    a = np.zeros((n - 1, n))
    i = np.arange(n - 1)
    a[i, i] = 0.5
    a[i, i + 1] = 0.5
    a[0, 0] = 1.0
    a[-1, -1] += 0.5
    return a


def arc_mu_bounds(gantry_deg: np.ndarray, direction: str, limits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear bounds that keep every arc interval inside the MU-per-degree range.

    Returns ``(A, lo, hi)`` such that per-control-point MU ``m`` (as passed to
    :func:`make_arc`) are deliverable when ``lo <= A @ m <= hi``; use them as
    constraints of the aperture-weight master problem of direct aperture
    optimisation so that the limit is enforced, not only checked.
    """
    d = _direction(direction)
    g = np.asarray(gantry_deg, float).reshape(-1)
    step = np.diff(g) % 360.0 if d == "CW" else (-np.diff(g)) % 360.0
    lo_deg, hi_deg = limits.mu_per_deg_range
    return interval_mu_matrix(g.size), lo_deg * step, hi_deg * step


def collision_free_arc(couch_deg: float, isocenter_mm, body: Structure | np.ndarray | None = None, *, model=None,
                       direction: str = "CW", cp_spacing_deg: float = 2.0, collimator_deg: float = 0.0,
                       step_deg: float = 2.0, patient_position: str = "HFS",
                       containing_deg: float | None = None) -> ArcSpec | None:
    """The longest collision-free arc at ``couch_deg`` (None when every angle collides).

    With ``containing_deg`` (e.g. 180 for a posterior target) the clear run
    that contains that gantry angle is used instead of the longest one.

    Gantry angles are tested every ``step_deg``; the longest circular run of
    clear angles, less one step at each end (the angles between samples are
    unchecked), becomes the arc.  A run covering the whole circle gives the
    full arc 181 -> 179 (CW) or 179 -> 181 (CC).
    """
    model = model or _collision_model()
    d = _direction(direction)
    if not (0 < step_deg <= _MAX_CP_SPACING_DEG):
        raise GeometryError(f"step_deg must be in (0, {_MAX_CP_SPACING_DEG:g}], got {step_deg!r}")
    pts = _surface(body, model)
    n = int(round(360.0 / step_deg))
    angles = np.arange(n) * (360.0 / n)
    clear = np.array([model.check(a, couch_deg, isocenter_mm, pts, patient_position=patient_position).ok
                      for a in angles])
    if clear.all():
        start, stop = (181.0, 179.0) if d == "CW" else (179.0, 181.0)
        return ArcSpec(start, stop, d, couch_deg, collimator_deg, cp_spacing_deg)
    if not clear.any():
        return None
    # longest circular run of True (rotate so that the sequence starts after a blocked angle)
    shift = int(np.argmin(clear))
    c = np.roll(clear, -shift)
    runs = []  # (start index in the rolled sequence, length)
    run, run_start = 0, 0
    for i, ok in enumerate(c):
        if ok:
            if run == 0:
                run_start = i
            run += 1
        elif run:
            runs.append((run_start, run))
            run = 0
    if run:
        runs.append((run_start, run))
    if containing_deg is not None:
        target = (int(round((float(containing_deg) % 360.0) / (360.0 / n))) - shift) % n
        runs = [r for r in runs if r[0] <= target < r[0] + r[1]]
        if not runs:
            return None
    best_start, best_len = max(runs, key=lambda r: r[1])
    if best_len < 3:
        return None
    first = angles[(best_start + 1 + shift) % n]
    last = angles[(best_start + best_len - 2 + shift) % n]
    if d == "CW":
        return ArcSpec(first, last, "CW", couch_deg, collimator_deg, cp_spacing_deg)
    return ArcSpec(last, first, "CC", couch_deg, collimator_deg, cp_spacing_deg)


def vmat_arcs(n_arcs: int, isocenter_mm, body: Structure | None = None, *, cp_spacing_deg: float = 2.0,
              couch_deg: float = 0.0, collimators_deg: tuple[float, ...] = (30.0, 330.0), model=None,
              patient_position: str = "HFS") -> list[ArcSpec]:
    """The arcs of a VMAT plan: :func:`arc_template`, each arc checked against the collision model.

    An arc that collides at any control point is replaced by the longest collision-free arc at its
    couch angle (:func:`collision_free_arc`: same direction and collimator); with the default model
    and a supine patient the coplanar full arcs are clear.  ``model`` defaults to
    :meth:`CollisionModel.default`; ``body`` None checks the couch only.

    Raises
    ------
    GeometryError
        When every gantry angle of an arc's couch angle collides.
    """
    model = model or _collision_model()
    pts = _surface(body, model)   # the body's surface sampled once: every check below reuses it
    out = []
    for arc in arc_template(n_arcs, cp_spacing_deg=cp_spacing_deg, couch_deg=couch_deg,
                            collimators_deg=collimators_deg):
        hits = arc_collisions(arc, isocenter_mm, pts, model, patient_position=patient_position)
        if not hits:
            out.append(arc)
            continue
        clear = collision_free_arc(arc.couch_deg, isocenter_mm, pts, model=model, direction=arc.direction,
                                   cp_spacing_deg=arc.cp_spacing_deg, collimator_deg=arc.collimator_deg,
                                   patient_position=patient_position)
        if clear is None:
            raise GeometryError(f"arc {arc.start_deg:g}-{arc.stop_deg:g} deg {arc.direction} at couch "
                                f"{arc.couch_deg:g} deg collides at every gantry angle (collision model)")
        log.info("arc %g-%g %s collides at %d control points (first %.0f deg): cut to %g-%g", arc.start_deg,
                 arc.stop_deg, arc.direction, len(hits), hits[0], clear.start_deg, clear.stop_deg)
        out.append(clear)
    return out


def arc_sectors(arcs: list[ArcSpec], sector_deg: float) -> tuple[float, list[ArcSpec], list[int]]:
    """One sector width for all arcs, the arcs cut to whole sectors, and each arc's sector count.

    The width is the longest arc's span over the nearest whole number of ``sector_deg`` sectors
    (direct aperture optimisation bounds leaf travel and MU per sector with one width); a shorter
    arc (cut by the collision check) keeps its start and drops the part of a sector at its end.

    Returns
    -------
    width_deg, arcs, n_sectors
    """
    if not arcs:
        raise GeometryError("arc_sectors: no arcs")
    if not (np.isfinite(sector_deg) and sector_deg > 0):
        raise GeometryError(f"sector_deg must be > 0, got {sector_deg!r}")
    longest = max(a.span_deg for a in arcs)
    width = longest / max(1, int(round(longest / sector_deg)))
    out, counts = [], []
    for a in arcs:
        n = int(np.floor(a.span_deg / width + 1e-9))
        if n < 1:
            raise GeometryError(f"arc {a.start_deg:g}-{a.stop_deg:g} deg ({a.span_deg:.1f} deg) is shorter than "
                                f"one {width:.2f} deg sector")
        out.append(a if abs(n * width - a.span_deg) < 1e-9 else a.with_span(n * width))
        counts.append(n)
    return width, out, counts


def sector_aperture(grid: BeamletGrid, left_mm: np.ndarray, right_mm: np.ndarray, mlc: MLCModel,
                    jaw_x_mm: tuple[float, float], jaw_y_mm: tuple[float, float]) -> Aperture:
    """Full-MLC aperture from optimised fluence edges per beamlet row (mm), jaws given.

    The leaf tips stand DLG/2 inside the edges (rounded leaf ends, as the sequencer places them:
    the delivered fluence then has the optimised edges); openings narrower than the minimum leaf
    gap are widened about their centre; pairs outside the grid close at the jaws' centre.
    """
    park = 0.5 * (jaw_x_mm[0] + jaw_x_mm[1])
    x1 = np.full(mlc.n_pairs, park - 0.5 * mlc.min_gap_mm)
    x2 = np.full(mlc.n_pairs, park + 0.5 * mlc.min_gap_mm)
    yc = 0.5 * (grid.y_edges_mm[1:] + grid.y_edges_mm[:-1])
    pairs = np.searchsorted(mlc.leaf_boundaries_mm, yc) - 1
    lft, rgt = _dlg_retracted(np.asarray(left_mm, float), np.asarray(right_mm, float), mlc)
    narrow = rgt - lft < mlc.min_gap_mm
    mid = 0.5 * (lft + rgt)
    x1[pairs] = np.where(narrow, mid - 0.5 * mlc.min_gap_mm, lft)
    x2[pairs] = np.where(narrow, mid + 0.5 * mlc.min_gap_mm, rgt)
    return Aperture(x1, x2, tuple(jaw_x_mm), tuple(jaw_y_mm))


def arc_beam(name: str, arc: ArcSpec, isocenter_mm, mlc: MLCModel, apertures: list[Aperture], mu: np.ndarray, *,
             patient_position: str = "HFS") -> Beam:
    """A VMAT arc from one aperture and one MU value per optimisation sector.

    The arc's span is divided into ``len(apertures)`` equal sectors, each delivered over
    ``per = round(sector width / arc.cp_spacing_deg)`` control-point intervals.  Control points
    carry the apertures interpolated linearly (in leaf position) between the two nearest sector
    centres, so the leaves move linearly through the optimised shapes; each sector's MU is spread
    evenly over its intervals (:func:`sector_beams` inverts this).
    """
    n_sec = len(apertures)
    if n_sec < 1 or np.size(mu) != n_sec:
        raise GeometryError(f"arc '{name}': {n_sec} sector apertures and {np.size(mu)} sector MU values")
    per = max(1, int(round(arc.span_deg / n_sec / arc.cp_spacing_deg)))
    # CP k sits at k * width / per from the start; sector s spans CPs s*per .. (s+1)*per.
    n_cp = n_sec * per + 1
    gantry = arc.angle(np.arange(n_cp) * (arc.span_deg / (n_sec * per)))
    aps = []
    for k in range(n_cp):
        u = k / per - 0.5   # position in sector units relative to the first sector centre
        s0 = int(np.clip(np.floor(u), 0, n_sec - 1))
        s1 = int(np.clip(s0 + 1, 0, n_sec - 1))
        f = float(np.clip(u - s0, 0.0, 1.0)) if s1 != s0 else 0.0
        if u < 0:
            s0, s1, f = 0, 0, 0.0
        aps.append(apertures[s0].interpolate(apertures[s1], f) if f > 0 else apertures[s0])
    interval_mu = np.repeat(np.asarray(mu, float) / per, per)
    return make_arc(name, gantry, aps, interval_mu, direction=arc.direction, couch_deg=arc.couch_deg,
                    collimator_deg=arc.collimator_deg, isocenter_mm=tuple(isocenter_mm), mlc=mlc,
                    patient_position=patient_position)


def sector_beams(beam: Beam, per: int) -> list[Beam]:
    """Each optimisation sector of an arc made by :func:`arc_beam` as a beam of its own, at 1 MU.

    Sector ``s`` is delivered between control points ``s * per`` and ``(s + 1) * per`` (its MU
    spread evenly over them), so the arc's dose is ``sum_s MU_s x dose(sector_beams[s])`` exactly:
    linear in the sector MU for fixed apertures.
    """
    cps = beam.control_points
    n_sec = (len(cps) - 1) // per
    if n_sec * per + 1 != len(cps):
        raise InputError(f"beam '{beam.name}': {len(cps)} control points is not {per} per sector plus one")
    out = []
    for s in range(n_sec):
        seg = cps[s * per:(s + 1) * per + 1]
        out.append(Beam(f"{beam.name} sector {s + 1}",
                        [ControlPoint(cp.gantry_deg, cp.aperture, k / per) for k, cp in enumerate(seg)],
                        1.0, beam.mlc, beam.isocenter_mm, beam.collimator_deg, beam.couch_deg,
                        technique=Technique.VMAT, arc_direction=beam.arc_direction,
                        patient_position=beam.patient_position))
    return out

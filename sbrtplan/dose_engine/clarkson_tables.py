"""Circular-field beam data of the independent MU check (the Clarkson tables).

One job: turn a commissioned Gaussian beam model into the circular-field
tables that the sector integration (:mod:`sbrtplan.dose_engine.clarkson`)
weighs.  The model's water formulas give the dose per MU of square fields at
depth (TMR geometry, focal spot at its narrower width); a regularised least
squares inversion of the sector integral turns them into the circular-field
function ``G(d, r)``, for the whole beam and for each photon kernel component
at each tabulated density (lateral widths scaled by O'Connor's theorem).  The
tables are computed once per model.  Why the check is built this way:
:mod:`sbrtplan.dose_engine.mucheck`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy.special import erf

from .._log import get_logger, timed
from ..errors import InputError
from .model import BeamModel, ModelKind, default_beam_model
from .pencil import gaussian_terms, pack_gaussian, rect_fraction

log = get_logger(__name__)

_TABLE_DEPTHS_MM = np.concatenate([np.arange(0.0, 40.0, 0.5), np.arange(40.0, 400.01, 2.5)])
_TABLE_SIDES_MM = np.geomspace(1.0, 560.0, 72)
_TABLE_RADII_MM = np.concatenate([[0.0], np.geomspace(0.5, 310.0, 140)])
# Densities at which the per-component circular fields are tabulated (linear
# interpolation between them): lung 0.05-0.5 finely, soft tissue, bone to 2.
_TABLE_RHO = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
                       1.1, 1.25, 1.5, 1.75, 2.0])


@dataclass(frozen=True)
class ClarksonTables:
    """Circular-field beam data of one beam model.

    Attributes
    ----------
    depths_mm : (nd,) depths of the table (water, point at the isocentre distance).
    radii_mm : (nr,) circle radii at the point's plane, ``radii_mm[0] == 0``.
    circle_gy_per_mu : (nd, nr) dose per MU ``G(d, r)`` of a circular field of
        radius ``r`` (point at the isocentre distance; ``G(d, 0) = 0``).
    sc_weights, sc_sigmas_mm : in-air collimator factor of a circle of radius
        ``r`` at the isocentre plane, ``sum_i w_i (1 - exp(-r^2 / 2 sigma_i^2))``
        (focal spot at the narrower of its two widths).
    fluence_blur_mm : (2,) the rest of the elliptical focal spot, (X, Y) at the
        isocentre plane: Gaussian widths by which the transmitted fluence is
        blurred before the sector integration (one of them is 0).
    sad_mm : source-axis distance.
    horn_h2, horn_h4 : off-axis ratio ``1 + h2 q^2 + h4 q^4`` (``q`` = off-axis
        distance at the isocentre plane in units of 100 mm).
    square_sides_mm, square_gy_per_mu : the square-field data the tables were
        derived from (dose per MU at depth, point at the isocentre distance).
    rho_nodes : (nq,) densities of the per-component tables.
    part_circle_gy_per_mu : (K, nq, nd, nr) circular-field dose per MU of each
        photon kernel component (with its share of head scatter) when the
        component's lateral width is scaled for density ``rho_nodes[q]``.
    rest_circle_gy_per_mu : (nd, nr) the remainder (charged-particle
        contamination, not density-scaled): ``circle_gy_per_mu`` minus the
        components at density 1.
    part_lengths_mm : (K,) path length before the point over which each
        component's density is averaged (the beam data's ``scaling_length_mm``).
    """

    depths_mm: np.ndarray
    radii_mm: np.ndarray
    circle_gy_per_mu: np.ndarray
    sc_weights: np.ndarray
    sc_sigmas_mm: np.ndarray
    sad_mm: float
    horn_h2: float
    horn_h4: float
    square_sides_mm: np.ndarray
    square_gy_per_mu: np.ndarray
    rho_nodes: np.ndarray
    part_circle_gy_per_mu: np.ndarray
    rest_circle_gy_per_mu: np.ndarray
    part_lengths_mm: np.ndarray
    fluence_blur_mm: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def sc_circle(self, radius_mm: np.ndarray) -> np.ndarray:
        """In-air collimator factor of circles of ``radius_mm`` (isocentre plane)."""
        r2 = np.asarray(radius_mm, dtype=float)[..., None] ** 2
        return np.sum(self.sc_weights * (1.0 - np.exp(-r2 / (2.0 * self.sc_sigmas_mm ** 2))), axis=-1)

    def sc_square(self, side_mm: np.ndarray) -> np.ndarray:
        """In-air collimator factor of squares of ``side_mm`` (exact for Gaussian sources)."""
        s = np.asarray(side_mm, dtype=float)[..., None]
        return np.sum(self.sc_weights * erf(s / (2.0 * math.sqrt(2.0) * self.sc_sigmas_mm)) ** 2, axis=-1)

    def _depth_row(self, table: np.ndarray, depth_mm: float) -> np.ndarray:
        d = float(np.clip(depth_mm, self.depths_mm[0], self.depths_mm[-1]))
        i = int(np.clip(np.searchsorted(self.depths_mm, d) - 1, 0, self.depths_mm.size - 2))
        t = (d - self.depths_mm[i]) / (self.depths_mm[i + 1] - self.depths_mm[i])
        return (1.0 - t) * table[..., i, :] + t * table[..., i + 1, :]

    def circle_dose(self, depth_mm: float, radius_mm: np.ndarray, rho_means=None) -> np.ndarray:
        """``G(d, r)`` by linear interpolation (depth clamped to the table).

        ``rho_means`` (one mean density per photon component, see
        :attr:`part_lengths_mm`) selects the density-scaled circular fields;
        None is water (the same as all densities 1).
        """
        if rho_means is None:
            return np.interp(radius_mm, self.radii_mm, self._depth_row(self.circle_gy_per_mu, depth_mm))
        row = self._depth_row(self.rest_circle_gy_per_mu, depth_mm)
        nodes = self.rho_nodes
        for k, rho in enumerate(np.asarray(rho_means, dtype=float).reshape(-1)):
            r = float(np.clip(rho, nodes[0], nodes[-1]))
            q = int(np.clip(np.searchsorted(nodes, r) - 1, 0, nodes.size - 2))
            t = (r - nodes[q]) / (nodes[q + 1] - nodes[q])
            both = self._depth_row(self.part_circle_gy_per_mu[k, q:q + 2], depth_mm)
            row = row + (1.0 - t) * both[0] + t * both[1]
        return np.interp(radius_mm, self.radii_mm, row)


_TABLE_CACHE: dict[str, ClarksonTables] = {}
_DEFAULT_MODEL: list[BeamModel] = []


def _default_model() -> BeamModel:
    """The shipped default model, parsed once (the check only reads it; YAML parsing
    costs ~0.1 s, more than a point dose)."""
    if not _DEFAULT_MODEL:
        _DEFAULT_MODEL.append(default_beam_model())
    return _DEFAULT_MODEL[0]


def _model_key(model: BeamModel) -> str:
    return model.name + ":" + hashlib.sha1(pack_gaussian(model).tobytes()).hexdigest()


def _square_average_matrix(sides_mm: np.ndarray, radii_mm: np.ndarray, n_theta: int = 96) -> np.ndarray:
    """Matrix A with ``(A @ g)[j]`` = sector average over the square ``sides_mm[j]``
    (centred on the point) of the circle function sampled at ``radii_mm``.

    By symmetry one octant suffices: the square's edge is at ``r = s / (2 cos t)``.
    """
    theta = (np.arange(n_theta) + 0.5) * (math.pi / 4.0) / n_theta
    r = 0.5 * sides_mm[:, None] / np.cos(theta)[None, :]             # (ns, nt)
    r = np.clip(r, radii_mm[0], radii_mm[-1])
    k = np.clip(np.searchsorted(radii_mm, r) - 1, 0, radii_mm.size - 2)
    w = (r - radii_mm[k]) / (radii_mm[k + 1] - radii_mm[k])
    a = np.zeros((sides_mm.size, radii_mm.size))
    rows = np.repeat(np.arange(sides_mm.size), n_theta)
    np.add.at(a, (rows, k.ravel()), (1.0 - w).ravel() / n_theta)
    np.add.at(a, (rows, k.ravel() + 1), w.ravel() / n_theta)
    return a


def clarkson_tables(model: BeamModel | None = None) -> ClarksonTables:
    """Circular-field tables of a Gaussian beam model (computed once per model).

    Raises
    ------
    InputError
        If the model is not a commissioned Gaussian model (the matRad SVD model
        has no calibrated output to tabulate).
    """
    model = _default_model() if model is None else model
    if model.kind is not ModelKind.GAUSSIAN or model.gaussian is None:
        raise InputError(f"independent MU check: beam model '{model.name}' is {model.kind.value}; "
                         "the Clarkson check needs a commissioned gaussian_pencil_beam model")
    key = _model_key(model)
    if key in _TABLE_CACHE:
        return _TABLE_CACHE[key]
    with timed(f"Clarkson tables for '{model.name}'", log):
        g = model.gaussian
        gp = pack_gaussian(model)
        sad = float(model.sad_mm)
        depths = _TABLE_DEPTHS_MM
        sides = _TABLE_SIDES_MM
        # Dose per MU on the axis, point at the isocentre distance (SSD = SAD - d).
        # Circular fields are radially symmetric: tabulate with the focal spot's narrower width in both
        # directions; the sector integration blurs the fluence by the rest (fluence_blur_mm).
        s_min = min(g.source_sigma_x_mm, g.source_sigma_y_mm)
        blur = np.sqrt(np.maximum([g.source_sigma_x_mm ** 2 - s_min ** 2, g.source_sigma_y_mm ** 2 - s_min ** 2],
                                  0.0))
        gp = gp.copy()
        gp[1] = gp[2] = s_min ** 2
        dose = np.empty((depths.size, sides.size))
        _axis_square_doses(gp, sides, depths, 1.0, dose)
        # The same for each photon component alone (its share of head scatter
        # included), its lateral width scaled for each tabulated density.
        k_comp = len(g.components)
        parts = np.empty((k_comp, _TABLE_RHO.size, depths.size, sides.size))
        for k in range(k_comp):
            gpk = gp.copy()
            gpk[4] = 0.0                                   # no contamination in a component's part
            for j in range(k_comp):
                if j != k:
                    gpk[12 + 8 * j] = 0.0
            for q, rho in enumerate(_TABLE_RHO):
                _axis_square_doses(gpk, sides, depths, float(rho), parts[k, q])
        sig_src = s_min
        fh = g.head_scatter_fraction
        op = _InversionOperator(sides, _TABLE_RADII_MM, dose[int(np.argmin(np.abs(depths - 100.0)))])
        circle = op.apply(dose)
        part_circle = op.apply(parts)
        i_water = int(np.argmin(np.abs(_TABLE_RHO - 1.0)))
        rest = circle - part_circle[:, i_water].sum(axis=0)
        tabs = ClarksonTables(
            depths_mm=depths, radii_mm=_TABLE_RADII_MM, circle_gy_per_mu=circle,
            sc_weights=np.array([1.0 - fh, fh]), sc_sigmas_mm=np.array([sig_src, g.head_scatter_sigma_mm]),
            sad_mm=sad, horn_h2=float(g.horn_h2), horn_h4=float(g.horn_h4),
            square_sides_mm=sides, square_gy_per_mu=dose, rho_nodes=_TABLE_RHO.copy(),
            part_circle_gy_per_mu=part_circle, rest_circle_gy_per_mu=rest,
            part_lengths_mm=np.array([c.scaling_length_mm for c in g.components], dtype=float),
            fluence_blur_mm=blur)
        resid = np.abs(op.reproduce(circle) / np.where(dose > 0, dose, 1.0) - 1.0)
        log.debug("Clarkson square->circle inversion: max relative residual %.1e", float(resid.max()))
    _TABLE_CACHE[key] = tabs
    return tabs


@njit(cache=True)
def _axis_square_doses(gp, sides, depths, rho, out):
    """Central-axis dose (model units) of centred squares ``sides`` at ``depths``,
    point at the isocentre distance (SSD = SAD - d, so no inverse square and no
    off-axis factor), every photon component's width scaled for density ``rho``.
    The formulas are :func:`~sbrtplan.dose_engine.pencil.gaussian_terms` (the
    beam data); with ``rho = 1`` this is :func:`~sbrtplan.dose_engine.pencil.water_points`."""
    sad = gp[0]
    k = int(gp[3])
    amp = np.empty(8)
    sx = np.empty(8)
    sy = np.empty(8)
    rho_bar = np.full(k, rho)
    for i in range(depths.size):
        nt = gaussian_terms(gp, depths[i], sad, rho_bar, amp, sx, sy)
        for j in range(sides.size):
            h = 0.5 * sides[j]
            tot = 0.0
            for t in range(nt):
                tot += amp[t] * rect_fraction(-h, h, 0.0, sx[t]) * rect_fraction(-h, h, 0.0, sy[t])
            out[i, j] = tot


class _InversionOperator:
    """Circle function ``G(d, r)`` whose sector average over each square equals the square-field data.

    The sector integral of a piecewise-linear ``G`` over a centred square is
    linear in the node values (:func:`_square_average_matrix`); with more
    radii than squares the smoothest solution (second differences penalised)
    is taken.  Rows are weighted by the inverse of a reference square-field
    dose row (the total at 100 mm) so that small fields are fitted in relative
    terms; one solve serves all depths and all component tables (the
    inversion is linear, so the components' circles add up to the total's).
    """

    def __init__(self, sides: np.ndarray, radii: np.ndarray, reference_row: np.ndarray, smoothing: float = 1e-2):
        self.a = _square_average_matrix(sides, radii)[:, 1:]          # G(0) = 0: no field, no dose
        lap = np.diff(np.eye(self.a.shape[1]), 2, axis=0)
        self.w = 1.0 / np.maximum(reference_row, 1e-30)
        aw = self.a * self.w[:, None]
        self.solve = np.linalg.solve(aw.T @ aw + smoothing ** 2 * (lap.T @ lap), aw.T)   # (nr-1, ns)

    def apply(self, square: np.ndarray) -> np.ndarray:
        """Square-field data (..., nd, ns) -> circle function (..., nd, nr)."""
        g = (square * self.w) @ self.solve.T
        return np.concatenate([np.zeros(g.shape[:-1] + (1,)), g], axis=-1)

    def reproduce(self, circle: np.ndarray) -> np.ndarray:
        """The square-field data a circle function gives back (for the residual check)."""
        return circle[..., 1:] @ self.a.T


__all__ = ["ClarksonTables", "clarkson_tables"]

"""Numba core of the Gaussian pencil-beam model (single source of truth).

The model (see :mod:`sbrtplan.dose_engine.model`) is packed into one float64
vector so that every kernel -- water commissioning, influence matrix, forward
dose -- evaluates exactly the same formulas through :func:`gaussian_terms`.

Packed layout (``pack_gaussian``)::

    0 sad_mm            1 source sigma_x^2      2 source sigma_y^2    3 K (photon components)
    4 contamination w   5 contamination decay   6 contamination sigma
    7 head-scatter fraction                     8 head-scatter sigma
    9 horn h2          10 horn h4              11 Gy/MU scale
    12 + 8k: w_k, mu_k, b_k, sigma0_k, slope_k, L_k, p_k, (spare)

A point's dose is ``sum_t amp_t * Fx_t * Fy_t`` where ``Fx_t``/``Fy_t`` are
the fractions of Gaussians of width ``sx_t``/``sy_t`` (isocentre-plane mm)
falling on the aperture, and ``amp_t`` already holds the depth function, the
inverse-square factor and the Gy/MU scale.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:  # the model imports this module through water.py (its Gy/MU calibration is a water dose)
    from .model import BeamModel

MAX_COMPONENTS = 4
MAX_TERMS = MAX_COMPONENTS + 2
_HEAD = 12
_STRIDE = 8
SQRT2 = math.sqrt(2.0)


def pack_gaussian(model: BeamModel, scale: float | None = None) -> np.ndarray:
    """Pack a Gaussian beam model into the float64 vector used by the kernels.

    ``scale`` overrides the Gy/MU factor (1 gives the model's relative units).
    """
    if not model.is_gaussian:
        raise ValueError("pack_gaussian needs a Gaussian beam model")
    g = model.gaussian
    k = len(g.components)
    gp = np.zeros(_HEAD + _STRIDE * k, dtype=np.float64)
    gp[0] = model.sad_mm
    gp[1] = g.source_sigma_x_mm ** 2
    gp[2] = g.source_sigma_y_mm ** 2
    gp[3] = k
    gp[4] = g.contamination_weight
    gp[5] = g.contamination_decay_mm
    gp[6] = g.contamination_sigma_mm
    gp[7] = g.head_scatter_fraction
    gp[8] = g.head_scatter_sigma_mm
    gp[9] = g.horn_h2
    gp[10] = g.horn_h4
    gp[11] = model.gy_per_mu_scale if scale is None else scale
    for i, c in enumerate(g.components):
        o = _HEAD + _STRIDE * i
        gp[o:o + 7] = (c.weight, c.mu_per_mm, c.buildup_per_mm, c.sigma0_mm, c.sigma_slope,
                       c.scaling_length_mm, c.scaling_exponent)
    return gp


def scaling_lengths(gp: np.ndarray) -> np.ndarray:
    """Density-averaging path lengths of the photon components (mm)."""
    k = int(gp[3])
    return np.array([gp[_HEAD + _STRIDE * i + 5] for i in range(k)], dtype=np.float64)


@njit(cache=True)
def n_components(gp):
    return int(gp[3])


@njit(cache=True)
def gaussian_terms(gp, depth_mm, dist_axis_mm, rho_bar, amp, sx, sy):
    """Evaluate the model's terms at one point.

    Parameters
    ----------
    gp : packed model
    depth_mm : radiological depth
    dist_axis_mm : distance from the source along the central axis (sets the
        magnification between physical widths and isocentre-plane widths)
    rho_bar : (K,) mean density for each component's lateral scaling (1 = water)
    amp, sx, sy : (MAX_TERMS,) outputs; amplitudes (Gy/MU per unit fluence,
        without inverse square) and Gaussian widths at the isocentre plane.

    Returns
    -------
    int : number of terms written.
    """
    sad = gp[0]
    k = int(gp[3])
    mag = sad / dist_axis_mm
    fh = gp[7]
    scale = gp[11]
    d = depth_mm if depth_mm > 0.0 else 0.0
    a_tot = 0.0
    a_sig2 = 0.0
    for i in range(k):
        o = 12 + 8 * i
        w = gp[o]
        mu = gp[o + 1]
        b = gp[o + 2]
        a = w * b / (b - mu) * (math.exp(-mu * d) - math.exp(-b * d))
        rb = rho_bar[i]
        if rb < 0.05:
            rb = 0.05
        p = gp[o + 6]
        s = (gp[o + 3] + gp[o + 4] * d) * mag
        if p != 0.0 and rb != 1.0:
            s = s / rb ** p
        s2 = s * s
        amp[i] = (1.0 - fh) * a * scale
        sx[i] = math.sqrt(s2 + gp[1])
        sy[i] = math.sqrt(s2 + gp[2])
        a_tot += a
        a_sig2 += a * s2
    amp[k] = gp[4] * math.exp(-d / gp[5]) * scale
    sx[k] = gp[6]
    sy[k] = gp[6]
    sm2 = a_sig2 / a_tot if a_tot > 0.0 else 0.0
    amp[k + 1] = fh * a_tot * scale
    sh = math.sqrt(gp[8] * gp[8] + sm2)
    sx[k + 1] = sh
    sy[k + 1] = sh
    return k + 2


@njit(cache=True)
def horn(gp, u, v):
    """Off-axis fluence factor at isocentre-plane position (u, v) mm."""
    r2 = (u * u + v * v) * 1e-4
    return 1.0 + gp[9] * r2 + gp[10] * r2 * r2


@njit(cache=True)
def rect_fraction(lo, hi, x, sigma):
    """Fraction of a Gaussian (centre x, width sigma) inside [lo, hi]."""
    c = 1.0 / (SQRT2 * sigma)
    return 0.5 * (math.erf((hi - x) * c) - math.erf((lo - x) * c))


@njit(cache=True)
def water_points(gp, x1, x2, y1, y2, ssd, depth, xs, ys, out):
    """Dose (model units) at points in a water phantom for the field [x1,x2]x[y1,y2] (isocentre plane).

    ``xs``/``ys`` are physical off-axis positions at each point's depth; the
    surface is at distance ``ssd`` from the source on the central axis.
    """
    sad = gp[0]
    kmax = 8
    amp = np.empty(kmax)
    sx = np.empty(kmax)
    sy = np.empty(kmax)
    rho = np.ones(kmax)
    for i in range(depth.size):
        d = depth[i]
        dist = ssd + d
        u = xs[i] * sad / dist
        v = ys[i] * sad / dist
        nt = gaussian_terms(gp, d, dist, rho, amp, sx, sy)
        tot = 0.0
        for t in range(nt):
            tot += amp[t] * rect_fraction(x1, x2, u, sx[t]) * rect_fraction(y1, y2, v, sy[t])
        r2 = dist * dist + xs[i] * xs[i] + ys[i] * ys[i]
        out[i] = tot * horn(gp, u, v) * sad * sad / r2

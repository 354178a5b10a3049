"""matRad SVD photon pencil beam: lateral kernel tables and geometry conventions.

matRad (and its Python port pyRadPlan) computes a photon beamlet as::

    D(voxel) = sum_i K_i(dx, dy) * b_i/(b_i - m) * (exp(-m d) - exp(-b_i d)) * (SAD / r)^2

with ``d`` the radiological depth, ``r`` the distance to the source and
``K_i`` the beamlet fluence (a square of the bixel width, blurred by a
Gaussian of FWHM ``penumbraFWHMatIso``) convolved with the i-th radial SVD
kernel of the SSD nearest to the central ray's SSD.  ``(dx, dy)`` is the
voxel's distance from the beamlet's ray, projected to the isocentre plane.
The convolution is a discrete sum on a 0.5 mm grid, and matRad's kernels are
normalised to that sum; the bixel square is sampled with ``floor(w / 0.5)``
points starting at ``-ceil(w / 1.0) * 0.5`` mm, i.e. shifted by -0.25 mm for
a 10 mm bixel.  :func:`matrad_beamlet_tables` reproduces exactly that, so
that the engine matches matRad's influence matrices; the custom primary
fluence profile (off by default in matRad) is not applied.

Coordinates (for reading matRad files, done by ``sbrtplan.io``): matRad's
``ct.cube`` is indexed (y, x, z) with 1-based, column-major voxel indices;
without explicit ``ct.x/y/z`` axes the world coordinate of voxel ``i``
(0-based) along an axis with ``n`` voxels of size ``h`` is ``(i - n/2) * h``
(matRad >= 3; isocentres are given in these coordinates).  matRad's beam's
eye view (x, y, z) with the source at ``(0, -SAD, 0)`` corresponds to IEC
BEAM LIMITING DEVICE (Xb, -Zb, Yb); gantry and couch angles follow IEC 61217
for a head-first supine patient, so a matRad ray at BEV ``(x, 0, z)`` is the
beamlet centred at ``(Xb, Yb) = (x, z)``.
"""

from __future__ import annotations

import math
import numpy as np

from .model import MatradKernel


def _tables(mk: MatradKernel, ssd_index: int, width_x: float, width_y: float) -> tuple[np.ndarray, float, float]:
    from scipy.signal import fftconvolve

    res = mk.conv_resolution_mm
    sigma = mk.penumbra_fwhm_mm / math.sqrt(8.0 * math.log(2.0))
    fl = max(int(math.ceil(max(width_x, width_y) / (2.0 * res))), 1)
    nfx = max(int(math.floor(width_x / res)), 1)
    nfy = max(int(math.floor(width_y / res)), 1)
    # bixel samples start at -fl*res on both axes (matRad's alignment)
    f = np.zeros((2 * fl, 2 * fl))
    f[:nfx, :nfy] = 1.0
    gl = int(math.ceil(5.0 * sigma / res))
    g_ax = res * np.arange(-gl, gl)
    gx, gy = np.meshgrid(g_ax, g_ax, indexing="ij")
    gauss = np.exp(-(gx ** 2 + gy ** 2) / (2.0 * sigma ** 2)) / (2.0 * math.pi * sigma ** 2 / res ** 2)
    fg = fftconvolve(f, gauss)  # index 0 at -(fl + gl) * res
    kl = int(math.ceil(mk.kernel_pos_mm[-1] / res))
    k_ax = res * np.arange(-kl, kl)
    kx, ky = np.meshgrid(k_ax, k_ax, indexing="ij")
    rr = np.sqrt(kx ** 2 + ky ** 2)
    kernels = mk.kernels[ssd_index]
    n = fg.shape[0] + 2 * kl - 1
    out = np.empty((3, n, n), dtype=np.float64)
    for i in range(3):
        k2d = np.interp(rr, mk.kernel_pos_mm, kernels[i], left=0.0, right=0.0)
        out[i] = fftconvolve(fg, k2d)
    t0 = -(fl + gl + kl) * res
    return out.astype(np.float32), t0, res


_TABLE_CACHE: dict = {}


def matrad_beamlet_tables(mk: MatradKernel, ssd_mm: float, width_x_mm: float,
                          width_y_mm: float) -> tuple[np.ndarray, float, float]:
    """Lateral tables (3, n, n) of one beamlet for the kernel SSD nearest to ``ssd_mm``.

    Returns (tables, t0, resolution): sample ``[i, j]`` is at offset
    ``(t0 + i*res, t0 + j*res)`` mm (x, y) from the beamlet's ray at the
    isocentre plane.
    """
    idx = int(np.argmin(np.abs(mk.kernel_ssd_mm - ssd_mm)))
    key = (id(mk), idx, round(float(width_x_mm), 4), round(float(width_y_mm), 4))
    cache = _TABLE_CACHE
    if key not in cache:
        if len(cache) > 8:
            cache.pop(next(iter(cache)))
        cache[key] = _tables(mk, idx, float(width_x_mm), float(width_y_mm))
    return cache[key]


def matrad_fluence_tables(mk: MatradKernel, ssd_mm: float, fluence: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Lateral tables (3, nx, ny) for an arbitrary fluence map sampled at ``spacing_mm``.

    The fluence (first axis x) is blurred by the penumbra Gaussian and
    convolved with each SVD kernel; values are scaled to matRad's 0.5 mm
    normalisation.  Output samples coincide with the fluence samples
    (``mode='same'``).
    """
    from scipy.signal import fftconvolve

    idx = int(np.argmin(np.abs(mk.kernel_ssd_mm - ssd_mm)))
    h = float(spacing_mm)
    sigma = mk.penumbra_fwhm_mm / math.sqrt(8.0 * math.log(2.0))
    gl = int(math.ceil(5.0 * sigma / h))
    g_ax = h * np.arange(-gl, gl + 1)
    gx, gy = np.meshgrid(g_ax, g_ax, indexing="ij")
    gauss = np.exp(-(gx ** 2 + gy ** 2) / (2.0 * sigma ** 2))
    gauss /= gauss.sum()
    fg = fftconvolve(fluence, gauss, mode="same")
    kl = int(math.ceil(mk.kernel_pos_mm[-1] / h))
    k_ax = h * np.arange(-kl, kl + 1)
    kx, ky = np.meshgrid(k_ax, k_ax, indexing="ij")
    rr = np.sqrt(kx ** 2 + ky ** 2)
    out = np.empty((3,) + fluence.shape, dtype=np.float32)
    norm = (h / mk.conv_resolution_mm) ** 2
    for i in range(3):
        k2d = np.interp(rr, mk.kernel_pos_mm, mk.kernels[idx][i], left=0.0, right=0.0)
        out[i] = fftconvolve(fg, k2d, mode="same") * norm
    return out

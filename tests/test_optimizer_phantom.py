"""A 2-D slab phantom with Gaussian pencil beamlets for the optimiser tests.

Geometry: a 2-D water slab (``size_mm`` square, ``spacing_mm`` pixels, ``slice_mm`` thick), a round
target at the centre and a round organ at risk beside it.  Beams come from
``n_beams`` equispaced directions; each beam is split into beamlets of
``beamlet_mm`` width.  Dose per MU of a beamlet at a point: a Gaussian lateral
profile (sigma = 3 mm, penumbra of a 6 MV pencil beam in water) of the
beamlet's open width times an exponential depth attenuation (mu = 0.005/mm,
about the 6 MV effective attenuation of water) from the slab surface, with
1 cGy/MU at the surface.  This is enough physics for the dose to fall off
outside the target and for a nearby organ to be hard to spare.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import erf

from sbrtplan.optimizer import VoxelRegion


def slab_phantom(size_mm=60.0, spacing_mm=2.0, n_beams=5, beamlet_mm=4.0, target_r_mm=10.0,
                 organ_r_mm=5.0, organ_centre_mm=(0.0, 17.0), sigma_mm=3.0, mu_per_mm=0.005, slice_mm=None):
    n = int(round(size_mm / spacing_mm))
    c = (np.arange(n) + 0.5) * spacing_mm - size_mm / 2
    X, Y = np.meshgrid(c, c, indexing="xy")
    px, py = X.ravel(), Y.ravel()
    half = size_mm / 2
    cols = []
    pairs = []
    k = 0
    offsets = np.arange(-20.0, 20.0 + 1e-9, beamlet_mm)
    for b in range(n_beams):
        a = 2 * np.pi * b / n_beams
        u = np.array([np.cos(a), np.sin(a)])       # beam direction
        v = np.array([-u[1], u[0]])                # lateral axis
        along = px * u[0] + py * u[1]
        lat = px * v[0] + py * v[1]
        # depth from where the ray enters the square slab (ray-box entry, slab |x|,|y| <= half)
        with np.errstate(divide="ignore"):
            tx = np.where(abs(u[0]) > 1e-12, (-half * np.sign(u[0]) - px) / u[0], -np.inf)
            ty = np.where(abs(u[1]) > 1e-12, (-half * np.sign(u[1]) - py) / u[1], -np.inf)
        depth = -np.maximum(tx, ty)
        depth = np.maximum(depth, 0.0)
        for j, o in enumerate(offsets):
            lo, hi = o - beamlet_mm / 2, o + beamlet_mm / 2
            prof = 0.5 * (erf((hi - lat) / (np.sqrt(2) * sigma_mm)) - erf((lo - lat) / (np.sqrt(2) * sigma_mm)))
            dose = 0.01 * prof * np.exp(-mu_per_mm * depth)
            dose[dose < 1e-5] = 0.0
            cols.append(dose)
            if j > 0:
                pairs.append((k - 1, k))
            k += 1
        del along
    D = sp.csr_matrix(np.array(cols).T.astype(np.float32))
    # 2-D slab: one voxel deep unless a slice thickness is given (each pixel a long prism)
    vox_cc = (spacing_mm / 10) ** 2 * ((slice_mm or spacing_mm) / 10)
    r_t = np.hypot(px, py)
    r_o = np.hypot(px - organ_centre_mm[0], py - organ_centre_mm[1])
    target_rows = np.flatnonzero(r_t <= target_r_mm)
    organ_rows = np.flatnonzero(r_o <= organ_r_mm)
    body_rows = np.arange(px.size)

    def region(name, rows):
        return VoxelRegion(name, rows.astype(np.int64), np.ones(rows.size), rows.size * vox_cc)

    out = dict(D=D, x_mm=px, y_mm=py, pairs=np.array(pairs, np.int64), voxel_cc=vox_cc,
               target=region("PTV", target_rows), organ=region("Cord", organ_rows), body=region("Body", body_rows),
               dist_target_mm=np.maximum(r_t - target_r_mm, 0.0))
    for name, (r0, r1) in {"ring0": (0, 5), "ring1": (5, 15), "ring2": (15, 100)}.items():
        rows = np.flatnonzero((r_t > target_r_mm + r0) & (r_t <= target_r_mm + r1) & (r_o > organ_r_mm))
        out[name] = region(name, rows)
    return out


def test_phantom_dose_falls_with_depth_and_distance():
    ph = slab_phantom()
    D = ph["D"].toarray()
    # uniform fluence: the dose in the target centre exceeds the dose 25 mm from it (fewer beamlets overlap
    # there); a factor 1.5 is far below the ~5x expected from the 40 mm field width and 5 crossing beams
    d = D @ np.ones(D.shape[1])
    centre = d[ph["target"].rows].mean()
    far = d[ph["dist_target_mm"] > 15].mean()
    assert centre > 1.5 * far
    # one beamlet: the dose along its axis decreases with depth (exp(-0.005 depth): 10 % per 20 mm)
    col = D[:, 5]
    assert col.max() <= 0.01 + 1e-6  # 1 cGy/MU at the surface is the maximum

"""Prostate seed-implant phantom (pre-implant) and its post-implant CT with simulated seeds.

Anatomy (LPS, mm; origin at the prostate centre; HFS; 1 mm voxels):

* Pelvis: soft tissue ellipse 220 x 170 mm (x, y) over 110 mm superior-inferior, fat rim,
  both femoral heads and the pubic symphysis anterior to the gland.
* Prostate (CTV for seeds): ellipsoid with semi-axes 24 x 18 x 22 mm (x, y, z), 39.8 cc,
  the "about 40 cc" gland of a typical I-125 monotherapy case.
* Urethra: tube of 3.5 mm radius through the gland, 3 mm anterior of its centre.
* Rectum: cylinder of 13 mm radius posterior to the gland, 4 mm gap (the anterior rectal wall
  lies 4 mm behind the capsule at the midline, as in a transrectal-ultrasound planned case).
* Bladder: ellipsoid above the gland's base, 3 mm gap.

``prostate_seeds_postimplant`` adds 61 seeds (I-125 model 6711 size: 4.5 x 0.8 mm titanium
capsules: occupancy on 4 x 4 x 4 sub-samples per voxel, blurred by the scanner PSF, clipped at 3071 HU)
at a deterministic loading with small placement errors and tilts, two pairs of touching seeds, radial
streak artefacts around each seed and quantum noise.  The true positions and axes are in
``case.metadata['true_seeds']``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..case import Case, StructureRole
from ._build import Canvas, box, cylinder, elliptic_cylinder, ellipsoid, phantom_patient, sphere

DESCRIPTION = "prostate_seeds: 40 cc prostate, urethra, rectum, bladder for seed-implant planning (1 mm)"
DESCRIPTION_POST = "prostate_seeds_postimplant: the prostate_seeds anatomy with 61 simulated I-125 seeds and streaks"
DEFAULT_SPACING_MM = 1.0

PROSTATE_SEMI = (24.0, 18.0, 22.0)
URETHRA_RADIUS, URETHRA_Y = 3.5, -3.0
RECTUM_RADIUS, RECTUM_GAP = 13.0, 4.0
BLADDER_SEMI, BLADDER_GAP = (32.0, 26.0, 22.0), 3.0
RED_SOFT, RED_FAT, RED_PROSTATE, RED_URINE, RED_BONE, RED_GAS = 1.04, 0.93, 1.045, 1.01, 1.45, 0.05

# The silver marker and titanium capsule attenuate far beyond the CT scale: the occupancy is
# scaled by an effective 25000 HU, blurred by the scanner's point-spread function (Gaussian,
# sigma 0.6 mm) -- the "blooming" that makes a 0.8 mm seed look 2-3 mm wide -- and clipped at
# 3071 HU, the top of the 12-bit CT scale.
SEED_HU = 25000.0
PSF_SIGMA_MM = 0.6
SEED_LENGTH_MM, SEED_RADIUS_MM = 4.5, 0.4
STREAK_HU = 350.0  # peak amplitude of the radial streaks next to a seed (decays as 1/r)
NOISE_HU = 12.0


def _anatomy(spacing_mm: float):
    cv = Canvas((200.0, 160.0, 110.0), spacing_mm)
    ax, ay, az = PROSTATE_SEMI
    body = elliptic_cylinder((0.0, 10.0), (110.0, 85.0))
    inner = elliptic_cylinder((0.0, 10.0), (100.0, 75.0))
    prostate = ellipsoid((0.0, 0.0, 0.0), PROSTATE_SEMI)
    urethra = cylinder((0.0, URETHRA_Y), URETHRA_RADIUS, z_range=(-45.0, az + BLADDER_GAP + 2.0))
    rectum_y = ay + RECTUM_GAP + RECTUM_RADIUS
    rectum = cylinder((0.0, rectum_y), RECTUM_RADIUS, z_range=(-50.0, 35.0))
    rectum_gas = cylinder((0.0, rectum_y), 5.0, z_range=(-40.0, 30.0))
    bz = az + BLADDER_GAP + BLADDER_SEMI[2]
    bladder = ellipsoid((0.0, -4.0, bz), BLADDER_SEMI) - prostate
    femurs = sphere((-85.0, 0.0, 20.0), 24.0) | sphere((85.0, 0.0, 20.0), 24.0)
    pubis = box((-30.0, -52.0, 0.0), (30.0, -38.0, 45.0))
    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    cv.paint(femurs | pubis, RED_BONE)
    cv.paint(bladder, RED_URINE)
    cv.paint(rectum, RED_SOFT)
    cv.paint(rectum_gas, RED_GAS)
    cv.paint(prostate, RED_PROSTATE)
    cv.paint(urethra, RED_URINE)
    R = StructureRole
    structures = [
        cv.structure("External", body, R.EXTERNAL, with_fraction=False),
        cv.structure("Prostate", prostate, R.CTV),
        cv.structure("Urethra", urethra, R.OAR),
        cv.structure("Rectum", rectum, R.OAR),
        cv.structure("Bladder", bladder, R.OAR),
    ]
    return cv, {s.name: s for s in structures}


def _true_seeds() -> tuple[np.ndarray, np.ndarray]:
    """A deterministic loading of 61 seeds: needles on an 8 x 6 mm lattice in x-y, 10 mm pitch
    along needles parallel to z, staggered by 5 mm between neighbouring needles, inside the gland
    shrunk by 1 mm and outside the urethra + 4 mm; then random placement errors (sd 0.7 mm) and tilts
    (sd 6 deg) from a fixed generator seed; two seeds are moved to touch their neighbour end-to-end."""
    ax, ay, az = PROSTATE_SEMI
    pts = []
    for ix in range(-4, 5):
        for iy in range(-4, 4):
            x, y = 8.0 * ix, 6.0 * iy + 3.0
            if (x ** 2 + (y - URETHRA_Y) ** 2) < (URETHRA_RADIUS + 4.0) ** 2:
                continue
            z0 = 5.0 * ((ix + iy) % 2)
            for z in np.arange(-40.0, 41.0, 10.0) + z0:
                if (x / (ax - 1)) ** 2 + (y / (ay - 1)) ** 2 + (z / (az - 1)) ** 2 <= 1.0:
                    pts.append((x, y, z))
    pts = np.array(pts, float)
    rng = np.random.default_rng(20041)
    pts = pts + rng.normal(0.0, 0.7, pts.shape)
    dirs = np.column_stack([rng.normal(0, 0.1, len(pts)), rng.normal(0, 0.1, len(pts)), np.ones(len(pts))])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # two touching pairs: a seed slides along its needle until it meets the next one
    for k in (10, 40):
        pts[k + 1] = pts[k] + dirs[k] * (SEED_LENGTH_MM + 0.05)
        dirs[k + 1] = dirs[k]
    return pts, dirs


def _paint_seeds(cv: Canvas, pts: np.ndarray, dirs: np.ndarray) -> None:
    """Seeds as bright capsules with sub-voxel occupancy, radial streaks and noise."""
    g = cv.grid
    h = cv.spacing_mm
    sub = 4
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    x, y, z = g.axis_coordinates_mm()
    rng = np.random.default_rng(7)
    streak = np.zeros(g.shape, dtype=np.float32)
    occ = np.zeros(g.shape, dtype=np.float32)
    for p, d in zip(pts, dirs):
        lo = np.searchsorted(x, p[0] - 4.0), np.searchsorted(y, p[1] - 4.0), np.searchsorted(z, p[2] - 4.0)
        hi = np.searchsorted(x, p[0] + 4.0), np.searchsorted(y, p[1] + 4.0), np.searchsorted(z, p[2] + 4.0)
        xs, ys, zs = x[lo[0]:hi[0]], y[lo[1]:hi[1]], z[lo[2]:hi[2]]
        fx = (xs[:, None] + h * offs[None, :]).ravel()
        fy = (ys[:, None] + h * offs[None, :]).ravel()
        fz = (zs[:, None] + h * offs[None, :]).ravel()
        dx = fx[None, None, :] - p[0]
        dy = fy[None, :, None] - p[1]
        dz = fz[:, None, None] - p[2]
        along = dx * d[0] + dy * d[1] + dz * d[2]
        away2 = dx ** 2 + dy ** 2 + dz ** 2 - along ** 2
        inside = (np.abs(along) <= 0.5 * SEED_LENGTH_MM) & (away2 <= SEED_RADIUS_MM ** 2)
        frac = inside.reshape(len(zs), sub, len(ys), sub, len(xs), sub).mean(axis=(1, 3, 5))
        occ[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] += frac.astype(np.float32)
        # streaks: alternating bright/dark rays in the axial plane, decaying with distance
        sl = (slice(max(lo[2] - 1, 0), hi[2] + 1), slice(None), slice(None))
        zz = z[sl[0]][:, None, None]
        ring = np.exp(-((zz - p[2]) / 2.0) ** 2)
        ang = np.arctan2(y[None, :, None] - p[1], x[None, None, :] - p[0])
        rr = np.hypot(y[None, :, None] - p[1], x[None, None, :] - p[0])
        phase = rng.uniform(0, np.pi)
        streak[sl] += (STREAK_HU * ring * np.cos(6.0 * ang + phase) * np.minimum(1.0, 3.0 / np.maximum(rr, 1e-3))
                       * (rr > 2.5)).astype(np.float32)
    cv.hu += SEED_HU * ndimage.gaussian_filter(occ, PSF_SIGMA_MM / h)
    cv.hu += streak
    cv.hu += rng.normal(0.0, NOISE_HU, g.shape).astype(np.float32)
    np.clip(cv.hu, -1024.0, 3071.0, out=cv.hu)


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The pre-implant prostate phantom."""
    cv, structures = _anatomy(spacing_mm)
    metadata = {"phantom": "prostate_seeds", "description": DESCRIPTION, "target": "Prostate",
                "prostate_semi_axes_mm": PROSTATE_SEMI, "rectum_gap_mm": RECTUM_GAP}
    return Case(name="prostate_seeds", grid=cv.grid, hu=cv.hu, structures=structures, calibration=cv.calibration,
                patient_position="HFS", patient=phantom_patient("prostate_seeds", spacing_mm, cv.grid.nz),
                source="phantom:prostate_seeds", metadata=metadata)


def build_postimplant(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The post-implant CT: the same anatomy with simulated seeds (bright, streaks, noise)."""
    cv, structures = _anatomy(spacing_mm)
    pts, dirs = _true_seeds()
    _paint_seeds(cv, pts, dirs)
    metadata = {"phantom": "prostate_seeds_postimplant", "description": DESCRIPTION_POST, "target": "Prostate",
                "true_seeds": {"positions_mm": pts.tolist(), "directions": dirs.tolist(), "model": "6711"}}
    return Case(name="prostate_seeds_postimplant", grid=cv.grid, hu=cv.hu, structures=structures,
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient("prostate_seeds_postimplant", spacing_mm, cv.grid.nz),
                source="phantom:prostate_seeds_postimplant", metadata=metadata)


class _Postimplant:
    """Module-like entry for the phantom registry."""

    DESCRIPTION = DESCRIPTION_POST
    DEFAULT_SPACING_MM = DEFAULT_SPACING_MM
    build = staticmethod(build_postimplant)


postimplant = _Postimplant()

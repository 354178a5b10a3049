"""Liver SBRT phantom: a 35 mm lesion under the right hemidiaphragm dome.

Anatomy (LPS, mm; origin at the centre of the upper abdomen; HFS):

* Abdomen: ellipse 340 x 240 mm (x, y), 200 mm superior-inferior, 10 mm
  subcutaneous fat, muscular wall, ribs (tubes of 5.5 mm radius following the
  wall at six levels, 28 mm apart) on both sides.
* Liver (about 1.5 l, RED 1.06) in the right upper quadrant, its dome (the right
  hemidiaphragm, 4 mm thick above it) at z = +47 mm; lungs (RED 0.25) above the
  diaphragm domes; heart above the central tendon.
* Stomach (with a fundus gas bubble) and duodenum, both kidneys, a lumbar
  vertebra with canal and cord.
* Lesion (GTV = CTV, sphere of 35 mm diameter, 22.4 cc, hypodense) in the
  lateral dome (segment VII/VIII), 8 mm below the liver surface and close to
  the lateral chest wall, so ribs lie within about 1 cm of the PTV and the rib
  limit matters, while the stomach and duodenum stay more than 5 cm away.  ITV = GTV + 5 mm superior-inferior and 2 mm elsewhere (the
  breathing motion a 4D-CT union would give for a 10 mm peak-to-peak
  cranio-caudal excursion with abdominal compression); PTV = ITV + 5 mm
  (the liver standard's typical margin).
"""

from __future__ import annotations

import numpy as np

from ..case import Case, StructureRole, expand
from ._build import (INF, Canvas, Shape, box, cylinder, elliptic_arc_tube, elliptic_cylinder, ellipsoid,
                     half_space, phantom_patient, sphere, tube)

DESCRIPTION = ("liver: 35 mm lesion under the right dome, GTV=CTV, ITV (+5 mm SI, +2 mm), PTV = ITV + 5 mm; "
               "stomach, duodenum, kidneys, ribs, cord, lungs (2 mm)")
DEFAULT_SPACING_MM = 2.0

RED_SOFT, RED_FAT, RED_LUNG, RED_LIVER, RED_LESION = 1.04, 0.93, 0.25, 1.06, 1.045
RED_KIDNEY, RED_GI, RED_GAS, RED_BLOOD = 1.04, 1.03, 0.05, 1.05
RED_RIB, RED_CANCELLOUS, RED_CORTICAL, RED_POSTERIOR, RED_CORD = 1.50, 1.30, 1.60, 1.45, 1.03

BODY_SEMI = (170.0, 120.0)
WALL_MM = 16.0
LIVER_CENTER, LIVER_SEMI = (-52.0, 0.0, -5.0), (97.0, 79.0, 52.0)
LESION_CENTER, LESION_RADIUS = (-122.0, 5.0, 5.0), 17.5
ITV_MARGIN_XYZ_MM = (2.0, 2.0, 5.0)
PTV_MARGIN_MM = 5.0
DIAPHRAGM_MM = 4.0
LEFT_DOME_CENTER, LEFT_DOME_SEMI = (65.0, 0.0, -25.0), (75.0, 85.0, 58.0)
RIB_LEVELS_Z = (-66.0, -38.0, -10.0, 18.0, 46.0, 74.0)
RIB_RADIUS = 5.5
VB_CENTER, VB_SEMI = (0.0, 55.0), (22.0, 18.0)
CANAL_CENTER, CANAL_RADIUS, CORD_RADIUS = (0.0, 81.0), 8.0, 5.0


def _dome_top(center, semi):
    """Height z of the upper surface of an ellipsoid over (x, y); -inf outside it."""
    cx, cy, cz = center
    ax, ay, az = semi

    def top(x, y):
        q = 1.0 - ((x - cx) / ax) ** 2 - ((y - cy) / ay) ** 2
        return np.where(q > 0, cz + az * np.sqrt(np.clip(q, 0, None)), -np.inf)

    return top


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The liver phantom on an isotropic grid of ``spacing_mm``."""
    cv = Canvas((360.0, 260.0, 200.0), spacing_mm)
    R = StructureRole
    ax, ay = BODY_SEMI

    body = elliptic_cylinder((0, 0), BODY_SEMI)
    inner = elliptic_cylinder((0, 0), (ax - 10, ay - 10))
    cavity = elliptic_cylinder((0, 0), (ax - WALL_MM, ay - WALL_MM))
    liver_ell = ellipsoid(LIVER_CENTER, LIVER_SEMI)
    vb = elliptic_cylinder(VB_CENTER, VB_SEMI, power=2.3)
    canal = cylinder(CANAL_CENTER, CANAL_RADIUS)
    cord = cylinder(CANAL_CENTER, CORD_RADIUS)
    posterior = ((box((-15, 70, -1e6), (15, 84, 1e6)) | (cylinder(CANAL_CENTER, CANAL_RADIUS + 6)
                  & half_space("y", CANAL_CENTER[1], above=True)) | box((-4, 85, -1e6), (4, 102, 1e6)))
                 - canal)
    kidney_r = ellipsoid((-72.0, 62.0, -62.0), (30.0, 24.0, 55.0))
    kidney_l = ellipsoid((74.0, 64.0, -52.0), (30.0, 24.0, 55.0))
    stomach = ellipsoid((58.0, -20.0, -8.0), (46.0, 38.0, 56.0))
    gas = sphere((62.0, -30.0, 32.0), 14.0) & stomach
    duodenum = tube([(-2, 8, -38), (-32, 12, -48), (-40, 18, -72), (-26, 24, -90), (12, 26, -96)], 11.0)
    aorta = cylinder((18.0, 26.0), 11.0)
    others = kidney_r | kidney_l | stomach | duodenum | vb | posterior | canal | aorta
    liver = (liver_ell & cavity) - others

    # Diaphragm and lungs: lungs fill the rib cage above both domes (plus the
    # diaphragm's thickness), outside the mediastinum.
    top_r = _dome_top(LIVER_CENTER, LIVER_SEMI)
    top_l = _dome_top(LEFT_DOME_CENTER, LEFT_DOME_SEMI)

    def above_diaphragm(x, y, z):
        floor = np.maximum(np.maximum(top_r(x, y), top_l(x, y)), 20.0) + DIAPHRAGM_MM
        return z > floor

    thorax = Shape(above_diaphragm, (-INF, -INF, 20.0), (INF, INF, INF))
    heart = ellipsoid((12.0, -42.0, 105.0), (62.0, 50.0, 50.0)) & thorax
    mediastinum = heart | elliptic_cylinder((0.0, 40.0), (40.0, 75.0)) | aorta
    lung_r = (cavity & thorax & half_space("x", -18.0, above=False)) - mediastinum
    lung_l = (cavity & thorax & half_space("x", 18.0, above=True)) - mediastinum

    # Right side (x < 0) from the back (100 deg) round to the antero-lateral
    # wall (240 deg), and the mirror image on the left; each rib descends by
    # about 30 mm from back to front, as the lower ribs do.
    ribs = [elliptic_arc_tube((ax - 10.0, ay - 10.0), z, RIB_RADIUS, rng, slope_mm_per_deg=slope,
                              reference_deg=ref)
            for z in RIB_LEVELS_Z
            for rng, slope, ref in (((100.0, 240.0), -0.22, 180.0), ((-60.0, 80.0), 0.22, 0.0))]

    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    cv.paint(lung_r | lung_l, RED_LUNG)
    cv.paint(heart, RED_BLOOD)
    cv.paint(liver, RED_LIVER)
    cv.paint(kidney_r | kidney_l, RED_KIDNEY)
    cv.paint(stomach | duodenum, RED_GI)
    cv.paint(gas, RED_GAS)
    cv.paint(aorta, RED_BLOOD)
    cv.paint(vb, RED_CORTICAL)
    cv.paint(elliptic_cylinder(VB_CENTER, (VB_SEMI[0] - 2, VB_SEMI[1] - 2), power=2.3), RED_CANCELLOUS)
    cv.paint(posterior, RED_POSTERIOR)
    cv.paint(canal, 1.0)
    cv.paint(cord, RED_CORD)
    cv.paint(ribs, RED_RIB)

    # Targets on a local grid twice as fine.
    reach = max(ITV_MARGIN_XYZ_MM) + PTV_MARGIN_MM + 4.0
    lo = np.subtract(LESION_CENTER, LESION_RADIUS) - reach
    hi = np.add(LESION_CENTER, LESION_RADIUS) + reach
    fgrid, sl = cv.fine_grid(lo, hi)
    gtv_f = cv.fine_structure("GTV", sphere(LESION_CENTER, LESION_RADIUS), fgrid, R.GTV)
    itv_f = expand(gtv_f, ITV_MARGIN_XYZ_MM, name="ITV", role=R.ITV)
    ptv_f = expand(itv_f, PTV_MARGIN_MM, name="PTV", role=R.PTV)
    gtv, itv, ptv = (cv.coarsen(s, sl) for s in (gtv_f, itv_f, ptv_f))
    ctv = gtv.copy(name="CTV", role=R.CTV)
    cv.paint(gtv.mask, RED_LESION)

    liver_s = cv.structure("Liver", liver, R.OAR)
    structures = [
        cv.structure("External", body, R.EXTERNAL, with_fraction=False),
        liver_s,
        cv.structure("Lung_L", lung_l, R.OAR),
        cv.structure("Lung_R", lung_r, R.OAR),
        cv.structure("Heart", heart, R.OAR),
        cv.structure("Stomach", stomach, R.OAR),
        cv.structure("Duodenum", duodenum, R.OAR),
        cv.structure("Kidney_L", kidney_l, R.OAR),
        cv.structure("Kidney_R", kidney_r, R.OAR),
        cv.structure("Rib", ribs, R.OAR),
        cv.structure("SpinalCord", cord, R.OAR),
        gtv, ctv, itv, ptv,
    ]
    metadata = {
        "phantom": "liver",
        "description": DESCRIPTION,
        "target": "PTV",
        "suggested_isocenter_mm": tuple(float(v) for v in ptv.centroid_mm()),
        "gtv_radius_mm": LESION_RADIUS,
        "itv_margin_xyz_mm": ITV_MARGIN_XYZ_MM,
        "ptv_margin_mm": PTV_MARGIN_MM,
        "densities": {"soft": RED_SOFT, "fat": RED_FAT, "lung": RED_LUNG, "liver": RED_LIVER,
                      "lesion": RED_LESION, "rib": RED_RIB},
    }
    return Case(name="liver", grid=cv.grid, hu=cv.hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient("liver", spacing_mm, cv.grid.nz), source="phantom:liver",
                metadata=metadata)

"""Lung SBRT phantom: a peripheral and a central lesion in an adult thorax.

Anatomy (LPS, mm; origin at the centre of the mid-thorax; HFS):

* Thorax: ellipse 340 x 240 mm (x, y), 200 mm superior-inferior, 10 mm
  subcutaneous fat, a 16 mm muscular chest wall with ribs (tubes of 5.5 mm
  radius following the wall at seven levels, 26 mm apart) on both sides.
* Lungs (RED 0.25) fill the rib cage outside the mediastinum: heart (lower
  anterior mediastinum), ascending and descending aorta (``GreatVes``),
  oesophagus behind the trachea, a thoracic vertebra with canal and cord.
* Airways (air-filled, RED 0.05 lumen): trachea (radius 9 mm) down to the
  carina at z = +40 mm, main bronchi (radius 7 mm) to the hila; ``Trachea`` is
  the trachea, ``Bronchus`` the proximal bronchial tree (main bronchi).
* Peripheral lesion: GTV sphere of 24 mm diameter (7.2 cc) in the lateral right
  lower lobe, more than 5 cm from the proximal bronchial tree and about 3 cm
  from the inner chest wall.  Central lesion: GTV sphere of 20 mm diameter
  (4.2 cc) at the right hilum, about 12 mm from the right main bronchus (RTOG
  0813 "central": within 2 cm of the proximal bronchial tree; its PTV stays
  clear of the airway wall).  For each, ITV = GTV
  + 5 mm superior-inferior and 2 mm elsewhere (the union a 4D CT gives for
  10 mm peak-to-peak breathing), PTV = ITV + 5 mm (RTOG 0813 / 0915).
"""

from __future__ import annotations

import numpy as np

from ..case import Case, StructureRole, expand
from ._build import (Canvas, cylinder, elliptic_arc_tube, elliptic_cylinder, ellipsoid, half_space,
                     phantom_patient, sphere, tube)

DESCRIPTION = ("lung: peripheral (24 mm, right lower lobe) and central (20 mm, right hilum) lesions, ITV "
               "(+5 mm SI, +2 mm), PTV = ITV + 5 mm; trachea, bronchi, oesophagus, heart, aorta, ribs, cord (2 mm)")
DEFAULT_SPACING_MM = 2.0

RED_SOFT, RED_FAT, RED_LUNG, RED_LESION, RED_AIR = 1.04, 0.93, 0.25, 1.04, 0.05
RED_BLOOD, RED_RIB, RED_CANCELLOUS, RED_CORTICAL, RED_CORD = 1.05, 1.50, 1.30, 1.60, 1.03

BODY_SEMI = (170.0, 120.0)
WALL_MM = 16.0
RIB_LEVELS_Z = (-78.0, -52.0, -26.0, 0.0, 26.0, 52.0, 78.0)
RIB_RADIUS = 5.5
VB_CENTER, VB_SEMI = (0.0, 55.0), (22.0, 18.0)
CANAL_CENTER, CANAL_RADIUS, CORD_RADIUS = (0.0, 81.0), 8.0, 5.0
TRACHEA_XY, TRACHEA_RADIUS, CARINA_Z = (0.0, 5.0), 9.0, 40.0
BRONCHUS_RADIUS = 7.0
BRONCHUS_R_END, BRONCHUS_L_END = (-35.0, 10.0, 15.0), (40.0, 10.0, 10.0)
ESOPHAGUS_XY, ESOPHAGUS_RADIUS = (6.0, 26.0), 8.0
PERIPHERAL_CENTER, PERIPHERAL_RADIUS = (-105.0, -10.0, -15.0), 12.0
CENTRAL_CENTER, CENTRAL_RADIUS = (-50.5, 33.0, 7.5), 10.0
ITV_MARGIN_XYZ_MM = (2.0, 2.0, 5.0)
PTV_MARGIN_MM = 5.0


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The lung phantom on an isotropic grid of ``spacing_mm``."""
    cv = Canvas((360.0, 260.0, 200.0), spacing_mm)
    R = StructureRole
    ax, ay = BODY_SEMI

    body = elliptic_cylinder((0, 0), BODY_SEMI)
    inner = elliptic_cylinder((0, 0), (ax - 10, ay - 10))
    cavity = elliptic_cylinder((0, 0), (ax - WALL_MM, ay - WALL_MM))
    vb = elliptic_cylinder(VB_CENTER, VB_SEMI, power=2.3)
    canal = cylinder(CANAL_CENTER, CANAL_RADIUS)
    cord = cylinder(CANAL_CENTER, CORD_RADIUS)
    trachea = cylinder(TRACHEA_XY, TRACHEA_RADIUS, z_range=(CARINA_Z, 1e6))
    carina = (TRACHEA_XY[0], TRACHEA_XY[1], CARINA_Z)
    bronchi = (tube([carina, BRONCHUS_R_END], BRONCHUS_RADIUS)
               | tube([carina, BRONCHUS_L_END], BRONCHUS_RADIUS))
    airway_wall = 2.0
    lumen = (cylinder(TRACHEA_XY, TRACHEA_RADIUS - airway_wall, z_range=(CARINA_Z, 1e6))
             | tube([carina, BRONCHUS_R_END], BRONCHUS_RADIUS - airway_wall)
             | tube([carina, BRONCHUS_L_END], BRONCHUS_RADIUS - airway_wall))
    esophagus = cylinder(ESOPHAGUS_XY, ESOPHAGUS_RADIUS)
    heart = ellipsoid((14.0, -38.0, -45.0), (62.0, 52.0, 55.0))
    aorta_desc = cylinder((24.0, 42.0), 11.0)
    aorta_asc = cylinder((6.0, -18.0), 14.0, z_range=(-20.0, 1e6))
    great_vessels = aorta_desc | aorta_asc
    mediastinum = (heart | great_vessels | esophagus | trachea | vb | canal
                   | elliptic_cylinder((0.0, 10.0), (22.0, 40.0)))
    lung_r = (cavity & half_space("x", -14.0, above=False)) - mediastinum - bronchi
    lung_l = (cavity & half_space("x", 14.0, above=True)) - mediastinum - bronchi

    ribs = [elliptic_arc_tube((ax - 10.0, ay - 10.0), z, RIB_RADIUS, rng, slope_mm_per_deg=slope,
                              reference_deg=ref)
            for z in RIB_LEVELS_Z
            for rng, slope, ref in (((100.0, 240.0), -0.15, 180.0), ((-60.0, 80.0), 0.15, 0.0))]

    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    cv.paint(lung_r | lung_l, RED_LUNG)
    cv.paint(heart | great_vessels, RED_BLOOD)
    cv.paint(trachea | bronchi, RED_SOFT)
    cv.paint(lumen, RED_AIR)
    cv.paint(vb, RED_CORTICAL)
    cv.paint(elliptic_cylinder(VB_CENTER, (VB_SEMI[0] - 2, VB_SEMI[1] - 2), power=2.3), RED_CANCELLOUS)
    cv.paint(canal, 1.0)
    cv.paint(cord, RED_CORD)
    cv.paint(ribs, RED_RIB)

    # Targets on local grids twice as fine.
    reach = max(ITV_MARGIN_XYZ_MM) + PTV_MARGIN_MM + 4.0
    targets = []
    for tag, centre, radius in (("Peri", PERIPHERAL_CENTER, PERIPHERAL_RADIUS),
                                ("Central", CENTRAL_CENTER, CENTRAL_RADIUS)):
        lo = np.subtract(centre, radius) - reach
        hi = np.add(centre, radius) + reach
        fgrid, sl = cv.fine_grid(lo, hi)
        gtv_f = cv.fine_structure(f"GTV_{tag}", sphere(centre, radius), fgrid, R.GTV)
        itv_f = expand(gtv_f, ITV_MARGIN_XYZ_MM, name=f"ITV_{tag}", role=R.ITV)
        ptv_f = expand(itv_f, PTV_MARGIN_MM, name=f"PTV_{tag}", role=R.PTV)
        gtv, itv, ptv = (cv.coarsen(s, sl) for s in (gtv_f, itv_f, ptv_f))
        cv.paint(gtv.mask, RED_LESION)
        targets += [gtv, itv, ptv]

    structures = [
        cv.structure("External", body, R.EXTERNAL, with_fraction=False),
        cv.structure("Lung_L", lung_l, R.OAR),
        cv.structure("Lung_R", lung_r, R.OAR),
        cv.structure("Heart", heart, R.OAR),
        cv.structure("GreatVes", great_vessels, R.OAR),
        cv.structure("Esophagus", esophagus, R.OAR),
        cv.structure("Trachea", trachea, R.OAR),
        cv.structure("Bronchus", bronchi, R.OAR),
        cv.structure("Rib", ribs, R.OAR),
        cv.structure("SpinalCord", cord, R.OAR),
        *targets,
    ]
    ptv_peri = targets[2]
    metadata = {
        "phantom": "lung",
        "description": DESCRIPTION,
        "target": "PTV_Peri",
        "targets": {"PTV_Peri": "peripheral (54/3)", "PTV_Central": "central (50/5)"},
        "suggested_isocenter_mm": tuple(float(v) for v in ptv_peri.centroid_mm()),
        "itv_margin_xyz_mm": ITV_MARGIN_XYZ_MM,
        "ptv_margin_mm": PTV_MARGIN_MM,
        "densities": {"soft": RED_SOFT, "fat": RED_FAT, "lung": RED_LUNG, "lesion": RED_LESION, "air": RED_AIR,
                      "rib": RED_RIB},
    }
    return Case(name="lung", grid=cv.grid, hu=cv.hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient("lung", spacing_mm, cv.grid.nz), source="phantom:lung",
                metadata=metadata)

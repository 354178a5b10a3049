"""Thoracic spine SBRT phantom: a vertebral-body metastasis next to the cord.

Anatomy (patient coordinates, LPS, mm; the origin is the centre of the
thorax at the level of the treated vertebra; HFS):

* Body: elliptical thorax 360 x 240 mm (x, y) with a 10 mm subcutaneous fat
  layer; 140 mm superior-inferior.
* Five vertebrae (pitch 32 mm, the treated one at z = 0): vertebral body an
  elliptic cylinder 46 x 36 mm, 26 mm tall, cancellous bone (RED 1.30) in a
  2 mm cortical shell (RED 1.60); 6 mm discs; posterior elements (pedicles,
  laminae, spinous and transverse processes; RED 1.45).
* Spinal canal: 16 mm diameter cylinder whose anterior wall is the posterior
  surface of the vertebral bodies (y = 58); spinal cord 10 mm diameter, lying
  1.5 mm anterior of the canal's centre (1.5 mm of CSF in front of it).
* Oesophagus anterior to the spine, descending aorta (GreatVes) to its left,
  heart anteriorly, both lungs (RED 0.25) inside the rib cage.
* Target: a lytic lesion (GTV, ellipsoid 37 x 22 x 24 mm, 10.2 cc, RED 1.07)
  in the posterior half of the treated vertebral body, 3 mm from the cord
  (the standard's minimum GTV-cord distance).  By the bone-metastasis
  standard: CTV = GTV + 5 mm restricted to the bone of that vertebra, PTV =
  CTV + 2 mm (spine), cord and oesophagus PRV = organ + 2 mm (the CTV->PTV
  margin).  The PTV overlaps the cord PRV in front of and beside the canal, so
  the optimisation target PTV! = PTV - SpinalCord_PRV02 differs from the PTV.

``spine_two_levels`` (:func:`build_two_levels`) is the same anatomy with two
metastases, one vertebra apart (oligometastatic spine, one plan): GTV1/CTV1/PTV1
in the posterior body of the vertebra at z = +32 mm (the shape above) and
GTV2/CTV2/PTV2 at z = -32 mm (ellipsoid 32 x 20 x 21 mm, 7.0 cc, 4 mm from the
cord), with the untreated vertebra at z = 0 between them (PTVs 34 mm apart),
both built by the same bone-standard rules; the cord PRV runs past both.
"""

from __future__ import annotations

import numpy as np

from ..case import Case, StructureRole, expand, intersect, prv_name
from ._build import (Canvas, box, cylinder, elliptic_cylinder, ellipsoid, half_space, phantom_patient)

DESCRIPTION = ("thoracic spine: vertebral-body metastasis 3 mm from the cord, CTV/PTV by the spine rules, "
               "cord/oesophagus PRVs, lungs, heart, aorta (2 mm)")
DESCRIPTION_TWO_LEVELS = ("thoracic spine, two metastases one vertebra apart (PTV1 at z +32 mm, PTV2 at z -32 mm), "
                          "3-4 mm from the cord, for one plan of two targets (2 mm)")
DEFAULT_SPACING_MM = 2.0

# Materials as relative electron densities (the HU follow from the default table).
RED_SOFT, RED_FAT, RED_LUNG = 1.04, 0.93, 0.25
RED_CANCELLOUS, RED_CORTICAL, RED_POSTERIOR = 1.30, 1.60, 1.45
RED_DISC, RED_CORD, RED_CSF, RED_BLOOD, RED_LESION = 1.05, 1.03, 1.00, 1.05, 1.07

BODY_SEMI = (180.0, 120.0)
VB_CENTER, VB_SEMI, VB_HALF_HEIGHT, CORTEX = (0.0, 40.0), (23.0, 18.0), 13.0, 2.0
LEVELS_Z = (-64.0, -32.0, 0.0, 32.0, 64.0)
CANAL_CENTER, CANAL_RADIUS = (0.0, 66.0), 8.0
# The cord lies 1.5 mm anterior in the canal, so the PTV (2 mm into the canal)
# and the cord PRV (2 mm around the cord) overlap over about 2.5 mm.
CORD_CENTER, CORD_RADIUS = (0.0, 64.5), 5.0
GTV_CENTER, GTV_SEMI = (0.0, 45.5, 0.0), (18.5, 11.0, 12.0)
# two-level variant: (suffix, level index in LEVELS_Z, GTV centre, GTV semi-axes)
TWO_LEVEL_LESIONS = (("1", 3, (0.0, 45.5, 32.0), GTV_SEMI), ("2", 1, (0.0, 45.0, -32.0), (16.0, 10.0, 10.5)))
CTV_MARGIN_MM, PTV_MARGIN_MM = 5.0, 2.0
PRV_MARGIN_MM = PTV_MARGIN_MM  # bone standard: PRV margin = CTV->PTV margin
ESO_CENTER, ESO_RADIUS = (6.0, 8.0), 9.0
AORTA_CENTER, AORTA_RADIUS = (30.0, 14.0), 12.0
HEART_CENTER, HEART_SEMI = (15.0, -50.0, 20.0), (60.0, 45.0, 70.0)


def _posterior_elements(zc: float, half_height: float):
    z = (zc - half_height, zc + half_height)
    cx, cy = CANAL_CENTER
    canal = cylinder(CANAL_CENTER, CANAL_RADIUS)
    pedicles = (box((-15, 56, z[0]), (-8, 70, z[1])) | box((8, 56, z[0]), (15, 70, z[1]))) - canal
    laminae = (cylinder(CANAL_CENTER, CANAL_RADIUS + 6, z) - canal) & half_space("y", cy, above=True)
    spinous = box((-4, cy + CANAL_RADIUS, z[0] + 2), (4, 100, z[1] - 2))
    transverse = box((-38, 62, z[0] + 2), (-14, 72, z[1] - 2)) | box((14, 62, z[0] + 2), (38, 72, z[1] - 2))
    return pedicles | laminae | spinous | transverse


def _vertebral_body(zc: float, inset_mm: float = 0.0):
    h = VB_HALF_HEIGHT - inset_mm
    return elliptic_cylinder(VB_CENTER, (VB_SEMI[0] - inset_mm, VB_SEMI[1] - inset_mm), (zc - h, zc + h),
                             power=2.3)


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The spine phantom on an isotropic grid of ``spacing_mm``."""
    return _build(spacing_mm, "spine", DESCRIPTION, (("", 2, GTV_CENTER, GTV_SEMI),))


def build_two_levels(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The two-level spine phantom (``spine_two_levels``) on an isotropic grid of ``spacing_mm``."""
    return _build(spacing_mm, "spine_two_levels", DESCRIPTION_TWO_LEVELS, TWO_LEVEL_LESIONS)


def _build(spacing_mm: float, name: str, description: str, lesions) -> Case:
    """The anatomy with one lesion per ``(suffix, level index, GTV centre, GTV semi-axes)`` of ``lesions``."""
    cv = Canvas((380.0, 260.0, 140.0), spacing_mm)
    R = StructureRole

    body = elliptic_cylinder((0, 0), BODY_SEMI)
    inner = elliptic_cylinder((0, 0), (BODY_SEMI[0] - 10, BODY_SEMI[1] - 10))
    ribcage = elliptic_cylinder((0, 0), (BODY_SEMI[0] - 18, BODY_SEMI[1] - 18))
    canal = cylinder(CANAL_CENTER, CANAL_RADIUS)
    cord = cylinder(CORD_CENTER, CORD_RADIUS)
    eso = cylinder(ESO_CENTER, ESO_RADIUS)
    aorta = cylinder(AORTA_CENTER, AORTA_RADIUS)
    heart = ellipsoid(HEART_CENTER, HEART_SEMI)

    bodies = [_vertebral_body(zc) for zc in LEVELS_Z]
    posterior = [_posterior_elements(zc, VB_HALF_HEIGHT - 2) for zc in LEVELS_Z]
    bone = bodies[0]
    for s in bodies[1:] + posterior:
        bone = bone | s
    mediastinum = (heart | aorta | eso | bone | canal
                   | elliptic_cylinder(VB_CENTER, (VB_SEMI[0] + 20, 45.0)))
    lung_r = (elliptic_cylinder((-88, 5), (62, 92)) & ribcage) - mediastinum
    lung_l = (elliptic_cylinder((88, 5), (62, 92)) & ribcage) - mediastinum

    # CT numbers, painted from the outside in.
    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    cv.paint(lung_r | lung_l, RED_LUNG)
    cv.paint(heart, RED_BLOOD)
    cv.paint(aorta, RED_BLOOD)
    cv.paint(eso, RED_SOFT)
    for zc, vb, post in zip(LEVELS_Z, bodies, posterior):
        cv.paint(box((-VB_SEMI[0], VB_CENTER[1] - VB_SEMI[1], zc + VB_HALF_HEIGHT),
                     (VB_SEMI[0], VB_CENTER[1] + VB_SEMI[1], zc + 32 - VB_HALF_HEIGHT))
                 & elliptic_cylinder(VB_CENTER, VB_SEMI, power=2.3), RED_DISC)
        cv.paint(vb, RED_CORTICAL)
        cv.paint(_vertebral_body(zc, inset_mm=CORTEX), RED_CANCELLOUS)
        cv.paint(post, RED_POSTERIOR)
    cv.paint(canal, RED_CSF)
    cv.paint(cord, RED_CORD)

    # Targets on a local grid twice as fine, where the margins are accurate.
    targets = []
    for suffix, level, centre, semi in lesions:
        treated_bone = bodies[level] | posterior[level]
        reach = CTV_MARGIN_MM + PTV_MARGIN_MM + 4.0
        lo = np.subtract(centre, semi) - reach
        hi = np.add(centre, semi) + reach
        fgrid, sl = cv.fine_grid(lo, hi)
        gtv_f = cv.fine_structure(f"GTV{suffix}", ellipsoid(centre, semi), fgrid, R.GTV)
        bone_f = cv.fine_structure("Bone", treated_bone, fgrid, R.OTHER)
        ctv_f = intersect(expand(gtv_f, CTV_MARGIN_MM), bone_f, name=f"CTV{suffix}", role=R.CTV)
        ptv_f = expand(ctv_f, PTV_MARGIN_MM, name=f"PTV{suffix}", role=R.PTV)
        gtv, ctv, ptv = (cv.coarsen(s, sl) for s in (gtv_f, ctv_f, ptv_f))
        cv.paint(gtv.mask, RED_LESION)
        targets += [gtv, ctv, ptv]
    ptv = targets[2]

    cord_s = cv.structure("SpinalCord", cord, R.OAR)
    cord_prv = cv.structure(prv_name("SpinalCord", PRV_MARGIN_MM), cylinder(CORD_CENTER, CORD_RADIUS + PRV_MARGIN_MM),
                            R.PRV)
    eso_prv = cv.structure(prv_name("Esophagus", PRV_MARGIN_MM), cylinder(ESO_CENTER, ESO_RADIUS + PRV_MARGIN_MM),
                           R.PRV)
    for s in (cord_prv, eso_prv):
        s.metadata["prv_margin_mm"] = PRV_MARGIN_MM
    structures = [
        cv.structure("External", body, R.EXTERNAL, with_fraction=False),
        cv.structure("Lung_L", lung_l, R.OAR),
        cv.structure("Lung_R", lung_r, R.OAR),
        cv.structure("Heart", heart, R.OAR),
        cv.structure("GreatVes", aorta, R.OAR),
        cv.structure("Esophagus", eso, R.OAR),
        eso_prv,
        cv.structure("SpinalCanal", canal, R.OAR),
        cord_s,
        cord_prv,
        *targets,
    ]
    metadata = {
        "phantom": name,
        "description": description,
        "target": ptv.name,
        "suggested_isocenter_mm": tuple(float(v) for v in ptv.centroid_mm()),
        "ctv_rule": f"GTV + {CTV_MARGIN_MM:g} mm within the bone of the treated vertebra",
        "ptv_margin_mm": PTV_MARGIN_MM,
        "prv_margin_mm": PRV_MARGIN_MM,
        "gtv_semi_axes_mm": lesions[0][3],
        "cord_radius_mm": CORD_RADIUS,
        "canal_radius_mm": CANAL_RADIUS,
        "densities": {"soft": RED_SOFT, "fat": RED_FAT, "lung": RED_LUNG, "cancellous": RED_CANCELLOUS,
                      "cortical": RED_CORTICAL, "posterior_elements": RED_POSTERIOR, "lesion": RED_LESION},
    }
    if len(lesions) > 1:
        metadata["targets"] = [t.name for t in targets[2::3]]
    return Case(name=name, grid=cv.grid, hu=cv.hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient(name, spacing_mm, cv.grid.nz), source=f"phantom:{name}",
                metadata=metadata)


class _TwoLevels:
    """The ``spine_two_levels`` entry of the phantom registry."""

    DESCRIPTION = DESCRIPTION_TWO_LEVELS
    DEFAULT_SPACING_MM = DEFAULT_SPACING_MM
    build = staticmethod(build_two_levels)


two_levels = _TwoLevels()

"""Non-spine bone SBRT phantoms (``bone_nonspine``): ilium / acetabulum, rib, femur (held-out cohort).

LPS mm, HFS; the origin at the centre of the body section holding the lesion.

* ``bone_acetabulum``: pelvis 360 x 240 mm; both hip bones (supra-acetabular
  ilium, iliac wing, acetabular cup round the femoral head, pubic and ischial
  rami), femoral heads and necks, sacrum with its canal; bladder (urine),
  rectum, small-bowel loops in the false pelvis over the right iliac fossa,
  the sacral plexus (``SacralPlex``) on the piriformis.  Lesion: a lytic
  supra-acetabular metastasis with a medial soft-tissue component bulging
  into the pelvis towards the bowel.
* ``bone_rib``: thorax 320 x 220 mm, ribs 22 mm under the skin (tubes of 6 mm
  radius), lungs, heart, aorta, oesophagus, cord.  Lesion: an expansile
  right lateral rib metastasis with a pleural-based component against the
  lung and the chest wall outside.
* ``bone_femur``: both thighs (ellipses 160 x 150 mm); femoral shaft (cortex
  5 mm, fatty marrow).  Lesion: a 70 mm mid-shaft lesion with a lateral soft-tissue
  component.

Targets by the bone standard (table 4): CTV = GTV + 5 mm within the bone (the
GTV itself, soft-tissue parts included, stays in), PTV = CTV + 5 mm; the
protocol adds 5 mm PRVs for the neural structures.  ``Skin`` is the outer
3 mm of the body.
"""

from __future__ import annotations

import numpy as np

from ..case import Case, StructureRole
from ._anatomy import (RED_BLOOD, RED_BONE_LESION, RED_CANCELLOUS, RED_CORD, RED_CORTICAL, RED_FAT, RED_GAS,
                       RED_GI, RED_LUNG, RED_MARROW_FATTY, RED_MUSCLE, RED_RIB, RED_SOFT, RED_URINE, SKIN_MM, CaseSpec, Variant,
                       Vertebra, assemble, carve, fine_targets, paint_column, shell, union_shapes)
from ._build import (Canvas, Shape, cylinder, elliptic_arc_tube, elliptic_cylinder, ellipsoid, half_space, sphere,
                     tube)

CTV_MARGIN_MM, PTV_MARGIN_MM = 5.0, 5.0


def _structures_common(cv: Canvas, body: Shape, skin: Shape) -> list:
    R = StructureRole
    return [cv.structure("External", body, R.EXTERNAL, with_fraction=False), cv.structure("Skin", skin, R.OAR)]


def _spec(name: str, ptv_cc_range, organ_gap_mm, **extra) -> CaseSpec:
    return CaseSpec(name=name, description=DESCRIPTIONS[name], protocol="bone_nonspine", site="bone (non-spine)",
                    ptv_cc_range=ptv_cc_range, organ_gap_mm=organ_gap_mm,
                    extra={"ctv_rule": f"GTV + {CTV_MARGIN_MM:g} mm within the bone", "ptv_margin_mm": PTV_MARGIN_MM,
                           **extra})


# -------------------------------------------------------------------- pelvis
def _hip_bone(sign: float) -> tuple[Shape, Shape]:
    """(hip bone, femur: head, neck, upper shaft) of one side (sign -1 right, +1 left)."""
    head_c = (sign * 88.0, 0.0, -10.0)
    head = sphere(head_c, 24.0)
    cup = ((sphere(head_c, 34.0) - sphere(head_c, 25.5)) & half_space("z", -28.0, above=True)
           & (half_space("x", -100.0, above=True) if sign < 0 else half_space("x", 100.0, above=False)))
    ilium = (tube([(sign * 84.0, 6.0, 8.0), (sign * 94.0, 24.0, 56.0)], 20.0)
             | tube([(sign * 94.0, 24.0, 56.0), (sign * 128.0, 8.0, 108.0)], 9.0)
             | tube([(sign * 94.0, 24.0, 56.0), (sign * 42.0, 62.0, 88.0)], 11.0))
    rami = (tube([(sign * 80.0, -22.0, -22.0), (sign * 18.0, -62.0, -28.0)], 9.0)
            | tube([(sign * 82.0, 16.0, -26.0), (sign * 70.0, 40.0, -62.0)], 12.0))
    femur = head | tube([head_c, (sign * 112.0, 6.0, -42.0), (sign * 116.0, 10.0, -130.0)], 14.0)
    return (cup | ilium | rami) - sphere(head_c, 25.5), femur


def _build_acetabulum(spacing_mm: float) -> Case:
    R = StructureRole
    semi = (180.0, 120.0)
    cv = Canvas((380.0, 260.0, 240.0), spacing_mm)
    body = elliptic_cylinder((0, 0), semi)
    inner = elliptic_cylinder((0, 0), (semi[0] - 15, semi[1] - 15))
    skin = shell(body, elliptic_cylinder((0, 0), (semi[0] - SKIN_MM, semi[1] - SKIN_MM)))
    hip_r, femur_r = _hip_bone(-1.0)
    hip_l, femur_l = _hip_bone(1.0)
    sacrum = (ellipsoid((0.0, 78.0, 70.0), (46.0, 22.0, 55.0)) & half_space("z", 20.0, above=True)) \
        - cylinder((0.0, 86.0), 7.0)
    sacral_canal = cylinder((0.0, 86.0), 7.0, z_range=(20.0, 130.0))
    plexus = tube([(-24.0, 62.0, 52.0), (-52.0, 56.0, 12.0), (-68.0, 52.0, -30.0)], 6.0)
    bladder = ellipsoid((0.0, -48.0, -22.0), (45.0, 35.0, 38.0))
    rectum = tube([(0.0, 64.0, 22.0), (0.0, 50.0, -20.0), (0.0, 44.0, -90.0)], 14.0)
    rectal_gas = tube([(0.0, 56.0, 0.0), (0.0, 48.0, -30.0)], 5.0)
    bones = hip_r | hip_l | sacrum
    others = bones | femur_r | femur_l | bladder | rectum | sacral_canal
    bowel = ((ellipsoid((-25.0, -20.0, 60.0), (80.0, 55.0, 45.0)) & inner) - others
             - elliptic_cylinder((0.0, 70.0), (60.0, 40.0)))
    psoas_iliacus = union_shapes([tube([(s * 50.0, 45.0, 120.0), (s * 75.0, 10.0, 40.0), (s * 80.0, -15.0, -10.0)],
                                       16.0) for s in (-1, 1)]) - bones

    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    cv.paint(psoas_iliacus, RED_MUSCLE)
    cv.paint(bowel, RED_GI)
    cv.paint(bladder, RED_URINE)
    cv.paint(rectum, RED_GI)
    cv.paint(rectal_gas, RED_GAS)
    cv.paint(bones | femur_r | femur_l, RED_CORTICAL)
    for head_x in (-88.0, 88.0):
        cv.paint(sphere((head_x, 0.0, -10.0), 21.0), RED_CANCELLOUS)
    cv.paint(tube([(-88.0, 6.0, 10.0), (-94.0, 24.0, 56.0)], 15.0) | tube([(88.0, 6.0, 10.0), (94.0, 24.0, 56.0)],
                                                                            15.0), RED_CANCELLOUS)
    cv.paint(sacral_canal, 1.0)

    gtv_shape = ellipsoid((-80.0, 8.0, 24.0), (19.0, 16.0, 18.0)) | ellipsoid((-60.0, 8.0, 30.0), (10.0, 14.0, 14.0))
    gtv, ctv, ptv = fine_targets(cv, gtv_shape, ctv_margin_mm=CTV_MARGIN_MM, ptv_margin_mm=PTV_MARGIN_MM,
                                 confine_shape=hip_r, lesion_red=RED_BONE_LESION)
    structures = _structures_common(cv, body, skin) + [
        cv.structure("Bladder", bladder, R.OAR),
        cv.structure("Rectum", rectum, R.OAR),
        carve(cv.structure("Bowel_Small", bowel, R.OAR), gtv),
        cv.structure("SacralPlex", plexus, R.OAR),
        cv.structure("CaudaEquina", sacral_canal, R.OAR),
        cv.structure("Femur_Head_R", sphere((-88.0, 0.0, -10.0), 24.0), R.OAR),
        cv.structure("Femur_Head_L", sphere((88.0, 0.0, -10.0), 24.0), R.OAR),
        gtv, ctv, ptv]
    spec = _spec("bone_acetabulum", (60.0, 120.0),
                 {"Bowel_Small": (0.0, 12.0), "Bladder": (10.0, 50.0), "Rectum": (20.0, 70.0),
                  "SacralPlex": (5.0, 35.0)}, bone="right ilium, supra-acetabular")
    return assemble(cv, spec, structures)


# ---------------------------------------------------------------------- rib
def _build_rib(spacing_mm: float) -> Case:
    R = StructureRole
    ax, ay = 160.0, 110.0
    rib_depth = 22.0
    cv = Canvas((2 * ax + 20.0, 2 * ay + 20.0, 170.0), spacing_mm)
    body = elliptic_cylinder((0, 0), (ax, ay))
    inner = elliptic_cylinder((0, 0), (ax - 10, ay - 10))
    cavity = elliptic_cylinder((0, 0), (ax - rib_depth - 6.0, ay - rib_depth - 6.0))
    skin = shell(body, elliptic_cylinder((0, 0), (ax - SKIN_MM, ay - SKIN_MM)))
    v = Vertebra((0.0, 52.0), (20.0, 16.0), 11.0, (8.0, 8.0), spinous_mm=20.0)
    levels = [k * 28.0 for k in (-3, -2, -1, 0, 1, 2, 3)]
    cord = cylinder(v.canal_center_xy, 5.0)
    heart = ellipsoid((15.0, -40.0, -30.0), (60.0, 48.0, 60.0))
    aorta = cylinder((24.0, 30.0), 12.0)
    eso = cylinder((-4.0, 26.0), 8.0)
    mediastinum = (heart | aorta | eso | v.canal() | elliptic_cylinder(v.body_center_xy, (40.0, 48.0))
                   | elliptic_cylinder((0.0, -10.0), (30.0, 70.0)))
    lungs = cavity - mediastinum
    rib_semi = (ax - rib_depth, ay - rib_depth)
    ribs = [elliptic_arc_tube(rib_semi, z, 6.0, rng, slope_mm_per_deg=slope, reference_deg=ref)
            for z in levels for rng, slope, ref in (((100.0, 250.0), -0.12, 180.0), ((-70.0, 80.0), 0.12, 0.0))]

    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    cv.paint(lungs, RED_LUNG)
    cv.paint(heart | aorta, RED_BLOOD)
    cv.paint(eso, RED_SOFT)
    paint_column(cv, v, levels)
    cv.paint(cord, RED_CORD)
    cv.paint(ribs, RED_RIB)

    # the lesion sits on the rib of level z = 0 at 200 deg (right antero-lateral)
    phi = np.deg2rad(200.0)
    z_rib = 0.0 + (-0.12) * (200.0 - 180.0)
    normal = np.array([np.cos(phi) / rib_semi[0], np.sin(phi) / rib_semi[1]])
    normal /= np.linalg.norm(normal)
    p = np.array([rib_semi[0] * np.cos(phi), rib_semi[1] * np.sin(phi)])
    centre = p - 3.0 * normal  # 3 mm inwards: the pleural-based part
    tangent = np.array([-normal[1], normal[0]])
    # an ellipsoid elongated along the rib: approximated by three spheres along the tangent
    gtv_shape = union_shapes([sphere((*(centre + t * tangent), z_rib), r)
                              for t, r in ((-9.0, 10.0), (0.0, 12.0), (9.0, 10.0))])
    rib_level = union_shapes([r for r in ribs])
    gtv, ctv, ptv = fine_targets(cv, gtv_shape, ctv_margin_mm=CTV_MARGIN_MM, ptv_margin_mm=PTV_MARGIN_MM,
                                 confine_shape=rib_level, lesion_red=RED_BONE_LESION)
    lung_r = carve(cv.structure("Lung_R", lungs & half_space("x", 0.0, above=False), R.OAR), gtv)
    structures = _structures_common(cv, body, skin) + [
        lung_r,
        cv.structure("Lung_L", lungs & half_space("x", 0.0, above=True), R.OAR),
        cv.structure("Heart", heart, R.OAR),
        cv.structure("GreatVes", aorta, R.OAR),
        cv.structure("Esophagus", eso, R.OAR),
        cv.structure("Rib", ribs, R.OAR),
        cv.structure("SpinalCord", cord, R.OAR),
        gtv, ctv, ptv]
    spec = _spec("bone_rib", (25.0, 60.0), {"Skin": (3.0, 14.0), "Lung_R": (0.0, 2.0)},
                 bone="right rib, antero-lateral")
    return assemble(cv, spec, structures)


# -------------------------------------------------------------------- femur
def _build_femur(spacing_mm: float) -> Case:
    R = StructureRole
    thigh_semi = (80.0, 75.0)
    centres = ((-88.0, 0.0), (88.0, 0.0))
    cv = Canvas((360.0, 170.0, 200.0), spacing_mm)
    body = elliptic_cylinder(centres[0], thigh_semi) | elliptic_cylinder(centres[1], thigh_semi)
    inner = (elliptic_cylinder(centres[0], (thigh_semi[0] - 12, thigh_semi[1] - 12))
             | elliptic_cylinder(centres[1], (thigh_semi[0] - 12, thigh_semi[1] - 12)))
    skin = body - (elliptic_cylinder(centres[0], (thigh_semi[0] - SKIN_MM, thigh_semi[1] - SKIN_MM))
                   | elliptic_cylinder(centres[1], (thigh_semi[0] - SKIN_MM, thigh_semi[1] - SKIN_MM)))
    shaft_xy = ((-98.0, -6.0), (98.0, -6.0))
    femurs = [cylinder(c, 14.0) for c in shaft_xy]
    marrow = [cylinder(c, 9.0) for c in shaft_xy]
    vessels = union_shapes([cylinder((s * 70.0, -40.0), 5.0) for s in (-1, 1)])

    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_MUSCLE)
    cv.paint(vessels, RED_BLOOD)
    cv.paint(femurs, RED_CORTICAL)
    cv.paint(marrow, RED_MARROW_FATTY)

    gtv_shape = (ellipsoid((-98.0, -6.0, 0.0), (15.0, 15.0, 35.0))
                 | ellipsoid((-114.0, -6.0, 2.0), (9.0, 13.0, 20.0)))
    gtv, ctv, ptv = fine_targets(cv, gtv_shape, ctv_margin_mm=CTV_MARGIN_MM, ptv_margin_mm=PTV_MARGIN_MM,
                                 confine_shape=femurs[0], lesion_red=RED_BONE_LESION)
    structures = _structures_common(cv, body, skin) + [
        cv.structure("Femur_R", femurs[0], R.OTHER),
        gtv, ctv, ptv]
    spec = _spec("bone_femur", (50.0, 110.0), {"Skin": (20.0, 60.0)}, bone="right femoral shaft")
    return assemble(cv, spec, structures)


_BUILDERS = {
    "bone_acetabulum": ("ilium / acetabulum: supra-acetabular lesion with a medial soft-tissue part, small bowel, "
                        "bladder, rectum, sacral plexus", _build_acetabulum),
    "bone_rib": ("rib: expansile right antero-lateral rib lesion against the lung and the chest wall", _build_rib),
    "bone_femur": ("long bone: 70 mm femoral-shaft lesion with a lateral soft-tissue part", _build_femur),
}

DESCRIPTIONS: dict[str, str] = {name: f"bone (non-spine): {text} (bone_nonspine; held-out cohort)"
                                for name, (text, _) in _BUILDERS.items()}

VARIANTS: dict[str, Variant] = {name: Variant(name, DESCRIPTIONS[name], fn, "bone_nonspine")
                                for name, (_, fn) in _BUILDERS.items()}

"""Adult whole-body phantom for total-body irradiation planning (175 cm, 5 mm).

Anatomy (LPS, mm; HFS; vertex at z = +875, soles at z = -875; anterior is -y):

* Head: ellipsoid 150 x 190 x 230 mm (x, y, z) with a 6 mm skull (RED 1.6); lenses (5 mm
  radius) 72 mm anterior of the head centre, 32 mm either side of the midline.
* Neck: elliptic cylinder 110 x 110 mm.
* Trunk: chest 340 x 220 mm (shoulders widened to 380 mm at the top) with two lungs (RED
  0.25, ellipsoids 130 x 160 x 260 mm), heart and mediastinum (soft tissue), a spine (RED
  1.3) along the back; abdomen 320 x 230 mm with liver (RED 1.06) and both kidneys; pelvis
  350 x 220 mm.
* Arms at the sides (radius 40 mm, from the shoulders to the hands), legs: thighs 150 x 160 mm,
  knees 100 mm, calves 110 x 120 mm, ankles 70 mm, feet; femur and tibia (RED 1.4).

The AP separations (head 19, neck 11, chest 22, abdomen 23, pelvis 22, thighs 16, knees 10,
calves 12, ankles 7 cm) span the range a TBI compensator must handle.  ``case.metadata
['tbi_regions']`` gives each region's z range (mm), used to name the midline sampling points.
"""

from __future__ import annotations

from ..case import Case, StructureRole
from ..errors import InputError
from ._build import Canvas, box, cylinder, elliptic_cylinder, ellipsoid, phantom_patient, sphere

DESCRIPTION = "tbi: adult whole body 175 cm, lungs, liver, kidneys, lenses, arms and legs (5 mm)"
DEFAULT_SPACING_MM = 5.0
MIN_SPACING_MM = 2.5   # finer grids of a whole body need several GiB

RED_SOFT, RED_LUNG, RED_BONE, RED_SKULL, RED_LIVER = 1.04, 0.25, 1.40, 1.60, 1.06

TOP_Z, BOTTOM_Z = 875.0, -875.0
# region: (z_lo, z_hi) in mm
REGIONS = {
    "head": (655.0, 875.0), "neck": (600.0, 655.0), "shoulders": (560.0, 600.0), "chest": (330.0, 560.0),
    "abdomen": (100.0, 330.0), "pelvis": (-80.0, 100.0), "thighs": (-480.0, -80.0), "knees": (-540.0, -480.0),
    "calves": (-800.0, -540.0), "ankles": (-840.0, -800.0), "feet": (-875.0, -840.0),
}
LEG_X = 90.0
ARM_X, ARM_R = 225.0, 40.0


def build(spacing_mm: float = DEFAULT_SPACING_MM) -> Case:
    """The whole-body phantom on an isotropic grid of ``spacing_mm`` (>= 2.5 mm)."""
    if spacing_mm < MIN_SPACING_MM:
        raise InputError(f"phantom 'tbi': spacing_mm must be at least {MIN_SPACING_MM:g} mm for a whole body, "
                         f"got {spacing_mm:g}")
    cv = Canvas((560.0, 320.0, 1800.0), spacing_mm)
    R = StructureRole
    z = REGIONS
    head = ellipsoid((0.0, 0.0, 765.0), (75.0, 95.0, 110.0))
    brain = ellipsoid((0.0, 0.0, 765.0), (69.0, 89.0, 104.0))
    neck = elliptic_cylinder((0.0, 10.0), (55.0, 55.0), (590.0, 680.0))
    shoulders = elliptic_cylinder((0.0, 0.0), (190.0, 105.0), z["shoulders"], power=3.0)
    chest = elliptic_cylinder((0.0, 0.0), (170.0, 110.0), z["chest"], power=2.5)
    abdomen = elliptic_cylinder((0.0, 0.0), (160.0, 115.0), z["abdomen"], power=2.5)
    pelvis = elliptic_cylinder((0.0, 0.0), (175.0, 110.0), z["pelvis"], power=2.5)
    legs = []
    for sx in (-1.0, 1.0):
        x = sx * LEG_X
        legs += [elliptic_cylinder((x, 0.0), (75.0, 80.0), (z["thighs"][0], z["thighs"][1] + 10.0)),
                 cylinder((x, 0.0), 50.0, z["knees"]),
                 elliptic_cylinder((x, 10.0), (55.0, 60.0), z["calves"]),
                 cylinder((x, 10.0), 35.0, z["ankles"]),
                 box((x - 45.0, -100.0, z["feet"][0]), (x + 45.0, 40.0, z["feet"][1]))]
    arms = [cylinder((sx * ARM_X, 0.0), ARM_R, (-100.0, 590.0)) for sx in (-1.0, 1.0)]
    body_parts = [head, neck, shoulders, chest, abdomen, pelvis, *legs, *arms]
    lung_r = ellipsoid((-80.0, 0.0, 450.0), (65.0, 80.0, 130.0))   # patient right is -x
    lung_l = ellipsoid((80.0, 0.0, 450.0), (65.0, 80.0, 130.0))
    heart = ellipsoid((15.0, -30.0, 400.0), (55.0, 50.0, 60.0))
    liver = ellipsoid((-70.0, 0.0, 250.0), (100.0, 80.0, 70.0))
    kidney_r = ellipsoid((-70.0, 55.0, 180.0), (30.0, 25.0, 55.0))
    kidney_l = ellipsoid((70.0, 55.0, 180.0), (30.0, 25.0, 55.0))
    spine = cylinder((0.0, 75.0), 15.0, (-50.0, 640.0))
    bones = [cylinder((sx * LEG_X, 0.0), 14.0, (-520.0, -60.0)) for sx in (-1.0, 1.0)]
    bones += [cylinder((sx * LEG_X, 10.0), 12.0, (-820.0, -500.0)) for sx in (-1.0, 1.0)]
    lens_r = sphere((-32.5, -72.5, 787.5), 5.0)
    lens_l = sphere((32.5, -72.5, 787.5), 5.0)

    body_mask = cv.mask(body_parts)
    cv.hu[:] = -1000.0
    cv.paint(body_mask, RED_SOFT)
    cv.paint(head - brain, RED_SKULL)
    cv.paint([spine, *bones], RED_BONE)
    cv.paint(liver, RED_LIVER)
    cv.paint([lung_l, lung_r], RED_LUNG)
    cv.paint(heart, RED_SOFT)
    cv.paint([lens_l, lens_r], RED_SOFT)   # the eyes sit in front of the skull
    structures = [
        cv.structure("External", body_parts, R.EXTERNAL, with_fraction=False),
        cv.structure("Lung_L", lung_l, R.OAR),
        cv.structure("Lung_R", lung_r, R.OAR),
        cv.structure("Heart", heart, R.OAR),
        cv.structure("Liver", liver, R.OAR),
        cv.structure("Kidney_L", kidney_l, R.OAR),
        cv.structure("Kidney_R", kidney_r, R.OAR),
        cv.structure("Lens_L", lens_l, R.OAR),
        cv.structure("Lens_R", lens_r, R.OAR),
        cv.structure("Brain", brain, R.OAR, with_fraction=False),
    ]
    metadata = {"phantom": "tbi", "description": DESCRIPTION, "tbi_regions": dict(REGIONS),
                "height_mm": TOP_Z - BOTTOM_Z}
    return Case(name="tbi", grid=cv.grid, hu=cv.hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient("tbi", spacing_mm, cv.grid.nz), source="phantom:tbi", metadata=metadata)

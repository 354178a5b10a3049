"""Parametric spine SBRT phantoms: cervical, thoracic and lumbar levels (held-out cohort).

Each case is one treated level with two neighbours above and below, built from
:class:`._anatomy.Vertebra` (the fixed :mod:`.spine` phantom's vertebra with the
level's size) and the organs found at that level (LPS mm, HFS, origin at the
centre of the trunk or neck at the treated level):

* cervical (C5): neck 124 x 110 mm; small vertebral body (19 x 16 mm, 13 mm
  tall, pitch 16 mm), wide canal, an elliptic cord (13 x 9 mm); oesophagus
  on the body's anterior surface, trachea (air lumen) in front of it, carotids
  and jugular veins, brachial plexus roots leaving the foramina inferolaterally;
* thoracic (T4, T7, T11): trunk 300-330 x 200-224 mm; vertebral bodies 30-44 mm
  wide; oesophagus, descending aorta (``GreatVes``), heart, lungs inside the
  rib cage; at T11 the liver dome and the stomach;
* lumbar (L2, L4): abdomen 330 x 230 mm; bodies 50 mm wide, 27 mm tall, pitch
  36 mm; the thecal sac holds the cauda equina (``CaudaEquina``), not the cord;
  aorta and IVC in front, kidneys (L2), psoas, small bowel and colon
  (``Bowel_Small``, ``Bowel_Large``) anteriorly.

Targets follow the bone-metastasis standard: CTV = GTV + 5 mm within the bone of
the treated level (for epidural disease also within the epidural space: the
canal minus the cord), PTV = CTV + 2 mm.  The protocol (``bone_spine``) adds the
2 mm PRVs.  Cases: a C5 body lesion, a small T4 body lesion (5 cc PTV), a T7 lesion with an
anterior epidural extension that touches the cord PRV, a T11 posterior-element
(lamina / spinous process) lesion, an L2 lesion filling the body and the right
pedicle (~70 cc PTV) and an L4 body lesion beside the cauda equina.  ``Skin`` is
the outer 3 mm of the body.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..case import Case, StructureRole
from ._anatomy import (RED_AIR, RED_BLOOD, RED_BONE_LESION, RED_CORD, RED_FAT, RED_GAS, RED_GI, RED_KIDNEY,
                       RED_LIVER, RED_LUNG, RED_MUSCLE, RED_SOFT, SKIN_MM, CaseSpec, Variant, Vertebra, assemble,
                       fine_targets, paint_column, shell, union_shapes)
from ._build import Canvas, Shape, box, cylinder, elliptic_cylinder, ellipsoid, half_space, sphere, tube


class Region(str, enum.Enum):
    CERVICAL = "cervical"
    THORACIC = "thoracic"
    LUMBAR = "lumbar"


class LesionKind(str, enum.Enum):
    """Where the lesion is, which sets the bone the CTV may spread in."""

    BODY = "body"            # vertebral body (and pedicle): the level's bone
    EPIDURAL = "epidural"    # body with an epidural extension: the level's bone and the canal minus the cord
    POSTERIOR = "posterior"  # lamina / spinous process: the posterior elements


@dataclass(frozen=True)
class ThoraxLayout:
    """Mediastinum at a thoracic level (mm; y from the vertebral body's anterior surface)."""

    esophagus_x_mm: float = -4.0
    aorta_xy_mm: tuple[float, float] = (24.0, -4.0)
    heart_z_mm: float = 30.0             # centre of the heart relative to the treated level
    trachea: bool = False                # above the carina
    upper_abdomen: bool = False          # liver dome and stomach (lower thoracic levels)


@dataclass(frozen=True)
class SpineCase:
    """One parametric spine case: the level's anatomy and the lesion."""

    name: str
    level: str                            # C5, T4, ... (a label)
    region: Region
    body_semi_xy: tuple[float, float]
    vertebra: Vertebra
    pitch_mm: float
    neural_semi_xy: tuple[float, float]   # cord (or cauda equina) cross-section
    neural_dy_mm: float                   # its centre's offset from the canal centre (+ posterior)
    gtv: tuple                            # ((centre, semi), ...) ellipsoids, their union is the GTV
    lesion_kind: LesionKind
    ptv_cc_range: tuple[float, float]
    organ_gap_mm: dict = field(default_factory=dict)
    note: str = ""
    thorax: ThoraxLayout = ThoraxLayout()
    kidneys: bool = False                 # lumbar: the kidneys beside the level (their hila lie at L1-L2)

    @property
    def neural_name(self) -> str:
        return "CaudaEquina" if self.region is Region.LUMBAR else "SpinalCord"

    @property
    def neural_center_xy(self) -> tuple[float, float]:
        cx, cy = self.vertebra.canal_center_xy
        return cx, cy + self.neural_dy_mm

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        bx, by = self.body_semi_xy
        return 2 * bx + 20.0, 2 * by + 20.0, 5 * self.pitch_mm


# ------------------------------------------------------------- organs by region
def _cervical(c: SpineCase, inner: Shape) -> tuple[list, list, Shape | None]:
    """(paint list, structures, lungs) of the neck at C5."""
    v = c.vertebra
    front = v.body_center_xy[1] - v.body_semi_xy[1]
    eso = elliptic_cylinder((2.0, front - 6.0), (8.0, 5.0))
    trachea = cylinder((0.0, front - 24.0), 9.5)
    lumen = cylinder((0.0, front - 24.0), 7.5)
    vessels = union_shapes([cylinder((s * 24.0, front - 4.0), 4.0) for s in (-1, 1)]
                           + [cylinder((s * 31.0, front - 2.0), 6.0) for s in (-1, 1)])
    cx, cy = v.canal_center_xy
    foramen_x = v.canal_semi_xy[0] + v.pedicle_mm + 1.0
    plexus = {f"BrachialPlex_{side}": tube([(s * foramen_x, cy - 2.0, 0.0), (s * 34.0, cy - 10.0, -22.0),
                                             (s * 52.0, cy - 12.0, -60.0)], 3.0)
              for side, s in (("R", -1), ("L", 1))}
    paint = [(eso, RED_SOFT), (trachea, RED_SOFT), (lumen, RED_AIR), (vessels, RED_BLOOD)]
    structs = [("Esophagus", eso), ("Trachea", trachea)] + [(k, s & inner) for k, s in plexus.items()]
    return paint, structs, None


def _thoracic(c: SpineCase, inner: Shape) -> tuple[list, list, Shape | None]:
    """Oesophagus, aorta, heart, lungs; trachea above the carina; liver and stomach low."""
    v = c.vertebra
    t = c.thorax
    bx, by = c.body_semi_xy
    front = v.body_center_xy[1] - v.body_semi_xy[1]
    ribcage = elliptic_cylinder((0, 0), (bx - 18, by - 18))
    eso = cylinder((t.esophagus_x_mm, front - 9.0), 8.0)
    aorta = cylinder((t.aorta_xy_mm[0], front + t.aorta_xy_mm[1]), 12.0)
    heart = ellipsoid((15.0, -0.45 * by, t.heart_z_mm), (0.36 * bx, 0.42 * by, 65.0))
    organs = [("Esophagus", eso), ("GreatVes", aorta), ("Heart", heart & ribcage)]
    paint = [(heart & ribcage, RED_BLOOD), (aorta, RED_BLOOD), (eso, RED_SOFT)]
    # mediastinum and the paraspinal muscles (the lungs reach the back only lateral to them)
    mediastinum = (heart | aorta | eso | v.canal() | elliptic_cylinder(v.body_center_xy, (v.body_semi_xy[0] + 18, 45))
                   | box((-v.transverse_reach_mm - 10.0, v.body_center_xy[1], -1e6),
                         (v.transverse_reach_mm + 10.0, by, 1e6)))
    if t.trachea:
        trachea = cylinder((0.0, front - 30.0), 9.0)
        paint += [(trachea, RED_SOFT), (cylinder((0.0, front - 30.0), 7.0), RED_AIR)]
        organs.append(("Trachea", trachea))
        mediastinum = mediastinum | trachea
    if t.upper_abdomen:
        liver = (ellipsoid((-55.0, -5.0, -20.0), (95.0, 75.0, 70.0)) & ribcage) - mediastinum
        stomach = ellipsoid((70.0, -25.0, -25.0), (45.0, 38.0, 50.0)) & ribcage
        gas = sphere((72.0, -40.0, 5.0), 14.0) & stomach
        paint += [(liver, RED_LIVER), (stomach, RED_GI), (gas, RED_GAS)]
        organs += [("Liver", liver), ("Stomach", stomach)]
        mediastinum = mediastinum | liver | stomach
    lungs = ribcage - mediastinum
    return paint, organs, lungs


def _lumbar(c: SpineCase, inner: Shape) -> tuple[list, list, Shape | None]:
    """Aorta / IVC, psoas, kidneys (L2), small bowel and colon."""
    v = c.vertebra
    bx, by = c.body_semi_xy
    front = v.body_center_xy[1] - v.body_semi_xy[1]
    aorta = cylinder((16.0, front - 11.0), 11.0)
    ivc = elliptic_cylinder((-22.0, front - 9.0), (13.0, 9.0))
    psoas = union_shapes([elliptic_cylinder((s * (v.body_semi_xy[0] + 14.0), v.body_center_xy[1] + 4.0),
                                            (14.0, 18.0)) for s in (-1, 1)])
    vessels = aorta | ivc
    organs = [("GreatVes", aorta)]
    paint = [(psoas, RED_MUSCLE), (vessels, RED_BLOOD)]
    kidneys = None
    if c.kidneys:
        kidneys = {f"Kidney_{side}": ellipsoid((s * 72.0, v.body_center_xy[1] + 18.0, 25.0), (28.0, 22.0, 55.0))
                   for side, s in (("R", -1), ("L", 1))}
        for k, s in kidneys.items():
            paint.append((s, RED_KIDNEY))
            organs.append((k, s))
    colon = union_shapes([cylinder((s * (bx - 55.0), -10.0), 22.0) for s in (-1, 1)])
    colon_gas = union_shapes([cylinder((s * (bx - 55.0), -18.0), 9.0) for s in (-1, 1)])
    others = vessels | psoas | colon | v.canal() | elliptic_cylinder(v.body_center_xy, v.body_semi_xy, power=2.3)
    if kidneys:
        others = others | union_shapes(list(kidneys.values()))
    # small bowel fills the anterior abdomen down to 4 mm in front of the vessels and the body
    bowel = ((elliptic_cylinder((0.0, -0.35 * by), (bx - 40.0, 0.55 * by)) & inner)
             & half_space("y", front - 4.0, above=False)) - others
    paint += [(colon, RED_GI), (colon_gas, RED_GAS), (bowel, RED_GI)]
    organs += [("Bowel_Small", bowel), ("Bowel_Large", colon)]
    return paint, organs, None


_REGIONS = {Region.CERVICAL: _cervical, Region.THORACIC: _thoracic, Region.LUMBAR: _lumbar}


# ---------------------------------------------------------------------- build
def build_case(c: SpineCase, spacing_mm: float) -> Case:
    """The case ``c`` on an isotropic grid of ``spacing_mm``."""
    R = StructureRole
    cv = Canvas(c.extent_mm, spacing_mm)
    bx, by = c.body_semi_xy
    body = elliptic_cylinder((0, 0), c.body_semi_xy)
    fat = 6.0 if c.region is Region.CERVICAL else 10.0
    inner = elliptic_cylinder((0, 0), (bx - fat, by - fat))
    skin = shell(body, elliptic_cylinder((0, 0), (bx - SKIN_MM, by - SKIN_MM)))
    v = c.vertebra
    levels = [k * c.pitch_mm for k in (-2, -1, 0, 1, 2)]
    neural = elliptic_cylinder(c.neural_center_xy, c.neural_semi_xy)

    paint, organs, lungs = _REGIONS[c.region](c, inner)
    cv.hu[:] = -1000.0
    cv.paint(body, RED_FAT)
    cv.paint(inner, RED_SOFT)
    if lungs is not None:
        cv.paint(lungs, RED_LUNG)
    for shape, red in paint:
        cv.paint(shape, red)
    bodies, posterior = paint_column(cv, v, levels)
    cv.paint(neural, RED_CORD)

    treated = bodies[2] | posterior[2]
    if c.lesion_kind is LesionKind.POSTERIOR:
        confine = posterior[2]
    elif c.lesion_kind is LesionKind.EPIDURAL:
        confine = treated | (v.canal() - neural)
    else:
        confine = treated
    gtv_shape = union_shapes([ellipsoid(ctr, semi) for ctr, semi in c.gtv])
    gtv, ctv, ptv = fine_targets(cv, gtv_shape, ctv_margin_mm=5.0, ptv_margin_mm=2.0, confine_shape=confine,
                                 lesion_red=RED_BONE_LESION)

    structures = [cv.structure("External", body, R.EXTERNAL, with_fraction=False),
                  cv.structure("Skin", skin, R.OAR)]
    if lungs is not None:
        structures += [cv.structure("Lung_R", lungs & half_space("x", 0.0, above=False), R.OAR),
                       cv.structure("Lung_L", lungs & half_space("x", 0.0, above=True), R.OAR)]
    structures += [cv.structure(name, shape, R.OAR) for name, shape in organs]
    structures += [cv.structure("SpinalCanal", v.canal(), R.OAR), cv.structure(c.neural_name, neural, R.OAR),
                   gtv, ctv, ptv]
    touching = (("GTV", f"{c.neural_name}_PRV02"),) if c.lesion_kind is LesionKind.EPIDURAL else ()
    spec = CaseSpec(name=c.name, description=DESCRIPTIONS[c.name], protocol="bone_spine", site=f"spine {c.level}",
                    ptv_cc_range=c.ptv_cc_range, organ_gap_mm=dict(c.organ_gap_mm), touching=touching,
                    extra={"level": c.level, "region": c.region.value, "lesion_kind": c.lesion_kind.value,
                           "ctv_rule": "GTV + 5 mm within the treated level's bone"
                                       + (" and epidural space" if c.lesion_kind is LesionKind.EPIDURAL else ""),
                           "ptv_margin_mm": 2.0, "prv_margin_mm": 2.0})
    return assemble(cv, spec, structures)


# ---------------------------------------------------------------------- cases
_C5 = Vertebra((0.0, 2.0), (9.5, 8.0), 6.5, (11.0, 7.0), pedicle_mm=4.0, lamina_mm=4.0, spinous_mm=14.0,
               transverse_reach_mm=24.0, cortex_mm=1.5)
_T4 = Vertebra((0.0, 28.0), (15.0, 12.5), 9.0, (7.5, 7.5), pedicle_mm=5.0, lamina_mm=5.0, spinous_mm=22.0,
               transverse_reach_mm=32.0)
_T7 = Vertebra((0.0, 36.0), (20.0, 16.0), 11.0, (9.0, 9.0), pedicle_mm=6.0, lamina_mm=6.0, spinous_mm=24.0,
               transverse_reach_mm=36.0)
_T11 = Vertebra((0.0, 30.0), (22.0, 17.0), 12.0, (8.0, 8.0), pedicle_mm=7.0, lamina_mm=7.0, spinous_mm=24.0,
                transverse_reach_mm=34.0)
_L2 = Vertebra((0.0, 22.0), (25.0, 18.5), 13.5, (11.0, 8.5), pedicle_mm=8.0, lamina_mm=7.0, spinous_mm=26.0,
               transverse_reach_mm=46.0)
_L4 = Vertebra((0.0, 16.0), (25.0, 18.0), 13.5, (11.0, 9.0), pedicle_mm=9.0, lamina_mm=7.0, spinous_mm=26.0,
               transverse_reach_mm=44.0)

CASES: dict[str, SpineCase] = {c.name: c for c in (
    SpineCase("spine_c5_body", "C5", Region.CERVICAL, (62.0, 55.0), _C5, 16.0, (6.5, 4.5), 0.5,
              gtv=(((0.0, 3.5, 0.0), (7.0, 5.5, 5.5)),), lesion_kind=LesionKind.BODY, ptv_cc_range=(5.0, 10.0),
              organ_gap_mm={"Esophagus": (0.0, 4.0)},
              note="C5 body lesion: oesophagus on the anterior surface, brachial plexus roots"),
    SpineCase("spine_t4_small", "T4", Region.THORACIC, (150.0, 100.0), _T4, 22.0, (4.5, 4.5), -1.0,
              gtv=(((5.0, 24.0, 0.0), (5.0, 5.0, 5.0)),), lesion_kind=LesionKind.BODY, ptv_cc_range=(4.0, 8.0),
              organ_gap_mm={"Esophagus": (0.0, 6.0)},
              note="small T4 body lesion, 5-8 cc PTV",
              thorax=ThoraxLayout(heart_z_mm=-95.0, trachea=True)),
    SpineCase("spine_t7_epidural", "T7", Region.THORACIC, (165.0, 112.0), _T7, 28.0, (5.0, 5.0), 1.0,
              gtv=(((-2.0, 43.0, 0.0), (15.0, 9.0, 9.5)), ((-5.0, 54.5, 0.0), (6.0, 3.0, 10.0))),
              lesion_kind=LesionKind.EPIDURAL, ptv_cc_range=(18.0, 32.0),
              note="posterior T7 body lesion with an anterior epidural extension touching the cord PRV"),
    SpineCase("spine_t11_posterior", "T11", Region.THORACIC, (160.0, 110.0), _T11, 30.0, (5.0, 5.0), 0.0,
              gtv=(((-7.0, 66.0, 0.0), (9.0, 7.0, 9.0)),), lesion_kind=LesionKind.POSTERIOR, ptv_cc_range=(8.0, 18.0),
              organ_gap_mm={"Skin": (15.0, 45.0)},
              note="T11 lamina / spinous process lesion (posterior elements)",
              # the oesophagus swings left towards the hiatus, the aorta lies in front of the body
              thorax=ThoraxLayout(esophagus_x_mm=14.0, aorta_xy_mm=(8.0, -14.0), heart_z_mm=95.0,
                                  upper_abdomen=True)),
    SpineCase("spine_l2_body", "L2", Region.LUMBAR, (165.0, 115.0), _L2, 36.0, (8.0, 6.0), 0.5,
              gtv=(((-2.0, 24.0, 0.0), (21.0, 14.0, 11.5)), ((-15.0, 43.0, 0.0), (7.0, 9.0, 9.0)),
                   ((-30.0, 24.0, 0.0), (12.0, 12.0, 11.0))),
              lesion_kind=LesionKind.BODY, ptv_cc_range=(55.0, 80.0),
              organ_gap_mm={"GreatVes": (0.0, 4.0)},
              note="L2 lesion filling the body and the right pedicle with a right paravertebral soft-tissue "
                   "extension, ~65 cc PTV, cauda equina behind", kidneys=True),
    SpineCase("spine_l4_cauda", "L4", Region.LUMBAR, (165.0, 115.0), _L4, 36.0, (8.5, 6.5), 0.5,
              gtv=(((8.0, 21.0, 0.0), (14.0, 11.0, 11.0)),), lesion_kind=LesionKind.BODY, ptv_cc_range=(25.0, 45.0),
              organ_gap_mm={"Bowel_Small": (0.0, 15.0)},
              note="L4 left body lesion, 3 mm from the thecal sac, small bowel in front"),
)}

DESCRIPTIONS: dict[str, str] = {
    name: f"spine {c.level} ({c.region.value}): {c.note} (bone_spine; held-out cohort)" for name, c in CASES.items()}

VARIANTS: dict[str, Variant] = {
    name: Variant(name, DESCRIPTIONS[name], (lambda s, _c=c: build_case(_c, s)), "bone_spine")
    for name, c in CASES.items()}

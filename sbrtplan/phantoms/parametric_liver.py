"""Parametric liver SBRT phantoms: lesions of 1-7 cm at the dome, the hilum, beside the stomach,
the duodenum and the heart, and a hilar cholangiocarcinoma (held-out cohort).

Anatomy (LPS mm, HFS, origin at the centre of the upper abdomen; every length
scaled by the case's ``habitus`` factor, 0.92-1.05):

* abdomen 320 x 224 mm with 10 mm of fat and a 16 mm muscular wall; ribs at
  six levels (:func:`._build.elliptic_arc_tube`, descending from back to front);
* liver (about 1.6 l at habitus 1) in the right upper quadrant and across the
  midline (left lobe against the stomach), its dome (the right hemidiaphragm,
  4 mm thick) at z = +58 mm; lungs above both domes; the **heart resting on the
  diaphragm** over the left lobe and segment IVa (unlike the fixed
  :mod:`.liver` phantom, where lung separates them);
* stomach (fundus gas) under the left dome abutting the left lobe, duodenum
  (bulb at the porta hepatis, C-loop below the liver), transverse colon and
  small bowel below, both kidneys, the retro-hepatic IVC, aorta, portal vein
  (painted, its bifurcation at the hilum), common bile duct
  (``BileDuct_Common``), a T12-L1 spine (:class:`._anatomy.Vertebra`) with
  the cord.

Targets (liver standard 7.1): GTV = CTV, ITV = GTV + 5 mm superior-inferior and
2 mm elsewhere, PTV = ITV + 5 mm.  The cholangiocarcinoma GTV follows the
hepatic-duct confluence and the proximal common duct (a Klatskin tumour).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..case import Case, StructureRole
from . import liver as _liver
from ._anatomy import (RED_BLOOD, RED_CORD, RED_FAT, RED_GAS, RED_GI, RED_KIDNEY, RED_LIVER, RED_LIVER_LESION,
                       RED_LUNG, RED_RIB, RED_SOFT, CaseSpec, Variant, Vertebra, assemble, carve, fine_targets,
                       paint_column, union_shapes)
from ._build import INF, Canvas, Shape, cylinder, elliptic_arc_tube, elliptic_cylinder, ellipsoid, half_space, \
    sphere, tube

ITV_MARGIN_XYZ_MM = (2.0, 2.0, 5.0)
PTV_MARGIN_MM = 5.0
DIAPHRAGM_MM = 4.0
WALL_MM = 16.0
RIB_RADIUS = 5.5


@dataclass(frozen=True)
class Sphere:
    """A spherical lesion; ``z = None`` places its top ``LiverCase.dome_depth_mm`` under the liver's
    upper surface (the dome) above its centre."""

    centre: tuple[float, float, float | None]
    radius_mm: float


@dataclass(frozen=True)
class Tube:
    """A lesion along a polyline (an infiltrated duct)."""

    points: tuple[tuple[float, float, float], ...]
    radius_mm: float


@dataclass(frozen=True)
class LiverCase:
    """One case: habitus (scale of the anatomy) and the lesion (the union of ``lesions``)."""

    name: str
    protocol: str
    note: str
    lesions: tuple
    ptv_cc_range: tuple[float, float]
    habitus: float = 1.0
    dome_depth_mm: float = 6.0
    organ_gap_mm: dict = field(default_factory=dict)


class _Anatomy:
    """The abdominal anatomy at one habitus (every organ shape, by name)."""

    def __init__(self, s: float):
        self.s = s
        self.body_semi = (160.0 * s, 112.0 * s)
        self.liver_center, self.liver_semi = (-45.0 * s, -2.0 * s, 0.0), (95.0 * s, 78.0 * s, 58.0 * s)
        self.left_dome = ((65.0 * s, 0.0, -20.0 * s), (75.0 * s, 85.0 * s, 60.0 * s))
        self.top_r = _liver._dome_top(self.liver_center, self.liver_semi)
        self.top_l = _liver._dome_top(*self.left_dome)

    def diaphragm_floor(self, x, y):
        """Height of the lung floor (dome + diaphragm) over (x, y)."""
        return np.maximum(np.maximum(self.top_r(x, y), self.top_l(x, y)), 20.0 * self.s) + DIAPHRAGM_MM

    def lesion_z(self, x: float, y: float, radius: float, depth: float) -> float:
        top = float(self.top_r(np.array(x), np.array(y)))
        return top - depth - radius

    def shapes(self) -> dict[str, Shape]:
        s = self.s
        ax, ay = self.body_semi
        out: dict[str, Shape] = {}
        out["body"] = elliptic_cylinder((0, 0), (ax, ay))
        out["inner"] = elliptic_cylinder((0, 0), (ax - 10, ay - 10))
        cavity = elliptic_cylinder((0, 0), (ax - WALL_MM, ay - WALL_MM))
        vert = Vertebra((0.0, 58.0 * s), (22.0 * s, 17.0 * s), 12.0, (8.0, 8.0), pedicle_mm=7.0, lamina_mm=7.0,
                        spinous_mm=24.0 * s, transverse_reach_mm=34.0)
        self.vertebra = vert
        out["canal"] = vert.canal()
        cx, cy = vert.canal_center_xy
        out["cord"] = cylinder((cx, cy), 5.0)
        spine_block = elliptic_cylinder(vert.body_center_xy, (vert.body_semi_xy[0] + 6, vert.body_semi_xy[1] + 30))
        out["kidney_r"] = ellipsoid((-72.0 * s, 62.0 * s, -60.0 * s), (30.0 * s, 24.0 * s, 55.0 * s))
        out["kidney_l"] = ellipsoid((74.0 * s, 64.0 * s, -50.0 * s), (30.0 * s, 24.0 * s, 55.0 * s))
        stomach = ellipsoid((62.0 * s, -22.0 * s, 0.0), (44.0 * s, 36.0 * s, 52.0 * s))
        out["stomach"] = stomach & cavity
        out["gas"] = sphere((66.0 * s, -34.0 * s, 30.0 * s), 13.0 * s) & stomach
        out["duodenum"] = tube([(8.0 * s, 2.0 * s, -34.0 * s), (-22.0 * s, 8.0 * s, -46.0 * s),
                                (-38.0 * s, 18.0 * s, -66.0 * s), (-25.0 * s, 24.0 * s, -88.0 * s),
                                (14.0 * s, 26.0 * s, -94.0 * s)], 11.0 * s)
        out["colon"] = tube([(-110.0 * s, -10.0 * s, -70.0 * s), (-60.0 * s, -55.0 * s, -78.0 * s),
                             (40.0 * s, -60.0 * s, -80.0 * s), (100.0 * s, -20.0 * s, -70.0 * s)], 20.0 * s)
        out["aorta"] = cylinder((18.0 * s, 30.0 * s), 11.0 * s)
        out["ivc"] = elliptic_cylinder((-22.0 * s, 30.0 * s), (12.0 * s, 10.0 * s))
        out["portal"] = tube([(-8.0 * s, 18.0 * s, -60.0 * s), (-22.0 * s, 10.0 * s, -18.0 * s),
                              (-62.0 * s, 6.0 * s, -8.0 * s)], 7.0 * s) | tube(
            [(-22.0 * s, 10.0 * s, -18.0 * s), (12.0 * s, -8.0 * s, -6.0 * s)], 5.5 * s)
        out["bile_duct"] = tube([(-25.0 * s, 13.0 * s, -16.0 * s), (-33.0 * s, 24.0 * s, -62.0 * s)], 4.0 * s)
        others = (out["kidney_r"] | out["kidney_l"] | stomach | out["duodenum"] | out["colon"] | out["aorta"]
                  | out["ivc"] | spine_block | out["canal"])
        out["liver"] = (ellipsoid(self.liver_center, self.liver_semi) & cavity) - others
        abdomen_low = (cavity & half_space("z", -50.0 * s, above=False)
                       & half_space("y", 20.0 * s, above=False))
        out["bowel"] = abdomen_low - others - ellipsoid(self.liver_center, self.liver_semi)

        floor = self.diaphragm_floor
        thorax = Shape(lambda x, y, z: z > floor(x, y), (-INF, -INF, 20.0 * s), (INF, INF, INF))
        # the heart rests on the diaphragm: its ellipsoid reaches 5 mm below the floor and is cut by it
        hx, hy = 12.0 * s, -40.0 * s
        hz = float(floor(np.array(hx), np.array(hy))) - 5.0 + 50.0 * s
        heart = ellipsoid((hx, hy, hz), (62.0 * s, 50.0 * s, 50.0 * s)) & thorax
        out["heart"] = heart
        mediastinum = heart | elliptic_cylinder((0.0, 40.0 * s), (38.0 * s, 70.0 * s)) | out["aorta"]
        out["lung_r"] = (cavity & thorax & half_space("x", -18.0, above=False)) - mediastinum
        out["lung_l"] = (cavity & thorax & half_space("x", 18.0, above=True)) - mediastinum
        out["esophagus"] = cylinder((14.0 * s, 38.0 * s), 8.0 * s, z_range=(10.0 * s, INF))
        out["ribs"] = [elliptic_arc_tube((ax - 10.0, ay - 10.0), z * s, RIB_RADIUS, rng, slope_mm_per_deg=slope,
                                         reference_deg=ref)
                       for z in (-60.0, -32.0, -4.0, 24.0, 52.0, 80.0)
                       for rng, slope, ref in (((100.0, 240.0), -0.22, 180.0), ((-60.0, 80.0), 0.22, 0.0))]
        return out


def _lesion_shape(c: LiverCase, anat: _Anatomy) -> Shape:
    parts = []
    for lesion in c.lesions:
        if isinstance(lesion, Sphere):
            x, y, z = lesion.centre
            if z is None:
                z = anat.lesion_z(x, y, lesion.radius_mm, c.dome_depth_mm)
            parts.append(sphere((x, y, z), lesion.radius_mm))
        else:
            parts.append(tube(lesion.points, lesion.radius_mm))
    return union_shapes(parts)


def build_case(c: LiverCase, spacing_mm: float) -> Case:
    """The case ``c`` on an isotropic grid of ``spacing_mm``."""
    R = StructureRole
    anat = _Anatomy(c.habitus)
    sh = anat.shapes()
    ax, ay = anat.body_semi
    cv = Canvas((2 * ax + 20.0, 2 * ay + 20.0, 230.0 * c.habitus), spacing_mm)

    cv.hu[:] = -1000.0
    cv.paint(sh["body"], RED_FAT)
    cv.paint(sh["inner"], RED_SOFT)
    cv.paint(sh["lung_r"] | sh["lung_l"], RED_LUNG)
    cv.paint(sh["heart"], RED_BLOOD)
    cv.paint(sh["liver"], RED_LIVER)
    cv.paint(sh["portal"] & sh["liver"], RED_BLOOD)
    cv.paint(sh["kidney_r"] | sh["kidney_l"], RED_KIDNEY)
    cv.paint(sh["stomach"] | sh["duodenum"] | sh["colon"] | sh["bowel"], RED_GI)
    cv.paint(sh["gas"], RED_GAS)
    cv.paint(sh["aorta"] | sh["ivc"], RED_BLOOD)
    cv.paint(sh["esophagus"], RED_SOFT)
    paint_column(cv, anat.vertebra, [k * 30.0 for k in (-3, -2, -1, 0, 1, 2, 3)])
    cv.paint(sh["cord"], RED_CORD)
    cv.paint(sh["ribs"], RED_RIB)

    gtv, ctv, itv, ptv = fine_targets(cv, _lesion_shape(c, anat), ptv_margin_mm=PTV_MARGIN_MM,
                                      itv_margin_xyz_mm=ITV_MARGIN_XYZ_MM, lesion_red=RED_LIVER_LESION)
    structures = [
        cv.structure("External", sh["body"], R.EXTERNAL, with_fraction=False),
        cv.structure("Liver", sh["liver"], R.OAR),
        cv.structure("Lung_L", sh["lung_l"], R.OAR),
        cv.structure("Lung_R", sh["lung_r"], R.OAR),
        cv.structure("Heart", sh["heart"], R.OAR),
        cv.structure("Esophagus", sh["esophagus"] - sh["heart"], R.OAR),
        cv.structure("Stomach", sh["stomach"], R.OAR),
        cv.structure("Duodenum", sh["duodenum"], R.OAR),
        cv.structure("Bowel_Small", sh["bowel"], R.OAR),
        cv.structure("Bowel_Large", sh["colon"], R.OAR),
        cv.structure("Kidney_L", sh["kidney_l"], R.OAR),
        cv.structure("Kidney_R", sh["kidney_r"], R.OAR),
        cv.structure("Rib", sh["ribs"], R.OAR),
        cv.structure("SpinalCord", sh["cord"], R.OAR),
        gtv, ctv, itv, ptv,
    ]
    structures.insert(-4, carve(cv.structure("BileDuct_Common", sh["bile_duct"], R.OAR), gtv))  # beyond the tumour
    spec = CaseSpec(name=c.name, description=DESCRIPTIONS[c.name], protocol=c.protocol, site="liver",
                    ptv_cc_range=c.ptv_cc_range, organ_gap_mm=dict(c.organ_gap_mm),
                    extra={"habitus": c.habitus, "itv_margin_xyz_mm": ITV_MARGIN_XYZ_MM,
                           "ptv_margin_mm": PTV_MARGIN_MM})
    return assemble(cv, spec, structures)


CASES: dict[str, LiverCase] = {c.name: c for c in (
    LiverCase("liver_dome_7cm", "liver_hcc", "70 mm lesion under the dome, heart and right lung above",
              (Sphere((-30.0, -15.0, None), 35.0),), (250.0, 420.0), habitus=1.05,
              organ_gap_mm={"Heart": (0.0, 6.0), "Lung_R": (0.0, 6.0)}),
    LiverCase("liver_dome_4cm", "liver_hcc", "40 mm posterior dome lesion under the right lung, near the ribs",
              (Sphere((-85.0, 30.0, None), 20.0),), (60.0, 110.0), dome_depth_mm=7.0,
              organ_gap_mm={"Lung_R": (0.0, 6.0), "Rib": (5.0, 20.0)}),
    LiverCase("liver_hilum_3cm", "liver_hcc",
              "30 mm lesion at the hilum (portal bifurcation, bile duct, duodenal bulb)",
              (Sphere((-38.0, 2.0, -4.0), 15.0),), (35.0, 70.0),
              organ_gap_mm={"Duodenum": (3.0, 15.0), "BileDuct_Common": (0.0, 6.0)}),
    LiverCase("liver_stomach_2cm", "liver_hcc", "20 mm left-lobe (segment III) lesion against the stomach",
              (Sphere((22.0, -52.0, -6.0), 10.0),), (12.0, 30.0),
              organ_gap_mm={"Stomach": (0.0, 8.0)}),
    LiverCase("liver_duodenum_5cm", "liver_hcc", "50 mm segment V/VI lesion above the duodenum and the colon",
              (Sphere((-62.0, -8.0, -17.0), 25.0),), (110.0, 200.0),
              organ_gap_mm={"Duodenum": (2.0, 12.0), "Bowel_Large": (2.0, 20.0)}),
    LiverCase("liver_heart_1cm", "liver_hcc", "10 mm segment IVa lesion under the heart (small patient)",
              (Sphere((2.0, -38.0, None), 5.0),), (3.0, 10.0), habitus=0.92, dome_depth_mm=5.0,
              organ_gap_mm={"Heart": (0.0, 5.0)}),
    LiverCase("chol_hilar", "cholangiocarcinoma", "hilar cholangiocarcinoma (Klatskin) along the duct confluence",
              (Tube(((-48.0, 4.0, 4.0), (-24.0, 10.0, -3.0), (-2.0, 0.0, 2.0)), 9.0),
               Tube(((-24.0, 10.0, -3.0), (-25.0, 13.0, -14.0)), 7.0)), (40.0, 90.0),
              organ_gap_mm={"Duodenum": (2.0, 12.0), "BileDuct_Common": (0.0, 2.0)}),
)}

DESCRIPTIONS: dict[str, str] = {name: f"liver: {c.note} ({c.protocol}; held-out cohort)" for name, c in CASES.items()}

VARIANTS: dict[str, Variant] = {
    name: Variant(name, DESCRIPTIONS[name], (lambda s, _c=c: build_case(_c, s)), c.protocol)
    for name, c in CASES.items()}

"""Parts shared by the parametric phantoms of the held-out cohort (one implementation per concept).

* :class:`Variant`: a named, parametrised phantom that the registry of
  :mod:`sbrtplan.phantoms` lists beside the modules (``DESCRIPTION``,
  ``DEFAULT_SPACING_MM``, ``build(spacing_mm)``).
* :class:`Vertebra`: a vertebra of any level (body, canal, posterior elements),
  built as the fixed spine phantom's (:mod:`.spine`): a super-elliptic body
  with a cortical shell, the canal behind it, pedicles, laminae, spinous and
  transverse processes, here with the level's dimensions.
* :func:`target_chain`: GTV -> CTV (margin, confined to the bone or organ it
  may spread in) -> ITV (breathing margin) -> PTV, with the margin operations
  of :mod:`sbrtplan.case`; :func:`fine_targets` runs it on the canvas's local
  grid twice as fine (as the fixed phantoms do) and returns the structures on
  the phantom grid.  The real-anatomy cases (:mod:`.real_anatomy`) run the same
  chain on the CT grid.
* :func:`shell`: skin (the outer few mm of the body), the ``Skin`` role of the
  bone protocols.
* :func:`assemble`: the :class:`~sbrtplan.case.Case` with deterministic
  identifiers and the metadata every cohort case carries (target, expected PTV
  volume, organ distances the tests check).

Materials are the relative electron densities of the fixed phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..case import Case, Structure, StructureRole, expand, intersect, union
from . import liver as _liver
from . import lung as _lung
from . import spine as _spine
from ._build import Canvas, Shape, box, elliptic_cylinder, half_space, phantom_patient

# Materials (relative electron density), shared with the fixed phantoms.
RED_SOFT, RED_FAT, RED_LUNG = _spine.RED_SOFT, _spine.RED_FAT, _spine.RED_LUNG
RED_CANCELLOUS, RED_CORTICAL, RED_POSTERIOR = _spine.RED_CANCELLOUS, _spine.RED_CORTICAL, _spine.RED_POSTERIOR
RED_DISC, RED_CORD, RED_CSF, RED_BLOOD = _spine.RED_DISC, _spine.RED_CORD, _spine.RED_CSF, _spine.RED_BLOOD
RED_BONE_LESION = _spine.RED_LESION
RED_LIVER, RED_LIVER_LESION = _liver.RED_LIVER, _liver.RED_LESION
RED_GI, RED_GAS, RED_KIDNEY, RED_RIB = _liver.RED_GI, _liver.RED_GAS, _liver.RED_KIDNEY, _liver.RED_RIB
RED_AIR = _lung.RED_AIR
# Relative electron densities (to water) of the tissues the fixed phantoms do not have: skeletal
# muscle 1.04 and yellow (fatty) marrow 0.98 (Woodard & White, Br J Radiol 59 (1986) 1209:
# mass densities 1.05 and 0.98 g/cm3, electron densities 3.48 and 3.28 x 10^23 /cm3 against water's
# 3.34); urine 1.01 (specific gravity 1.005-1.030, water with dissolved salts and urea).
RED_MUSCLE = 1.04
RED_MARROW_FATTY = 0.98
RED_URINE = 1.01

#: skin thickness of the ``Skin`` structure (the outer 3 mm of the body, as contoured for the TG-101
#: skin limits)
SKIN_MM = 3.0


@dataclass(frozen=True)
class Variant:
    """A named phantom built by ``builder(spacing_mm)``; quacks like a phantom module."""

    name: str
    description: str
    builder: Callable[[float], Case]
    protocol: str
    spacing_mm: float = 2.0

    @property
    def DESCRIPTION(self) -> str:  # noqa: N802 - the registry reads the module constant's name
        return self.description

    @property
    def DEFAULT_SPACING_MM(self) -> float:  # noqa: N802
        return self.spacing_mm

    def build(self, spacing_mm: float | None = None) -> Case:
        return self.builder(self.spacing_mm if spacing_mm is None else float(spacing_mm))


# ------------------------------------------------------------------ vertebra
@dataclass(frozen=True)
class Vertebra:
    """Geometry of one vertebral level (LPS mm; the body centred on ``body_center_xy``).

    The canal is an elliptic cylinder whose anterior wall is the posterior
    surface of the body; the posterior elements close it behind.  The fixed
    thoracic phantom (:mod:`.spine`) has the body, canal, pedicles, laminae
    and transverse processes of ``Vertebra((0, 40), (23, 18), 13, (8, 8))``
    (its spinous process is 2 mm wider and 6 mm shorter).
    """

    body_center_xy: tuple[float, float]
    body_semi_xy: tuple[float, float]
    half_height_mm: float
    canal_semi_xy: tuple[float, float]
    pedicle_mm: float = 7.0
    lamina_mm: float = 6.0
    spinous_mm: float = 26.0
    transverse_reach_mm: float = 38.0
    cortex_mm: float = 2.0

    @property
    def canal_center_xy(self) -> tuple[float, float]:
        bx, by = self.body_center_xy
        return bx, by + self.body_semi_xy[1] + self.canal_semi_xy[1]

    def canal(self) -> Shape:
        return elliptic_cylinder(self.canal_center_xy, self.canal_semi_xy)

    def body(self, zc: float, inset_mm: float = 0.0) -> Shape:
        h = self.half_height_mm - inset_mm
        sx, sy = self.body_semi_xy
        return elliptic_cylinder(self.body_center_xy, (sx - inset_mm, sy - inset_mm), (zc - h, zc + h), power=2.3)

    def disc(self, z0: float, z1: float) -> Shape:
        """Intervertebral disc between two bodies (``z0`` < ``z1``)."""
        return elliptic_cylinder(self.body_center_xy, self.body_semi_xy, (z0, z1), power=2.3)

    def posterior(self, zc: float) -> Shape:
        """Pedicles, laminae, spinous and transverse processes of the level at ``zc``."""
        h = self.half_height_mm - 2.0
        z0, z1 = zc - h, zc + h
        cx, cy = self.canal_center_xy
        ax, ay = self.canal_semi_xy
        canal = self.canal()
        body_back = self.body_center_xy[1] + self.body_semi_xy[1]
        p = self.pedicle_mm
        pedicles = (box((cx - ax - p, body_back - 2, z0), (cx - ax, cy + 4, z1))
                    | box((cx + ax, body_back - 2, z0), (cx + ax + p, cy + 4, z1))) - canal
        laminae = ((elliptic_cylinder((cx, cy), (ax + self.lamina_mm, ay + self.lamina_mm), (z0, z1)) - canal)
                   & half_space("y", cy, above=True))
        half_w = max(3.0, 0.5 * self.lamina_mm)
        spinous = box((cx - half_w, cy + ay, z0 + 2), (cx + half_w, cy + ay + self.lamina_mm + self.spinous_mm, z1 - 2))
        r = self.transverse_reach_mm
        transverse = (box((cx - r, cy - 4, z0 + 2), (cx - ax - p + 1, cy + 6, z1 - 2))
                      | box((cx + ax + p - 1, cy - 4, z0 + 2), (cx + r, cy + 6, z1 - 2)))
        return pedicles | laminae | spinous | transverse


def paint_column(cv: Canvas, v: Vertebra, levels_z) -> tuple[list[Shape], list[Shape]]:
    """Paint the vertebrae at ``levels_z`` (discs, cortical shell, cancellous core, posterior
    elements, CSF in the canal); returns the body and posterior-element shapes per level."""
    levels_z = sorted(levels_z)
    bodies = [v.body(zc) for zc in levels_z]
    posterior = [v.posterior(zc) for zc in levels_z]
    for a, b in zip(levels_z[:-1], levels_z[1:]):
        cv.paint(v.disc(a + v.half_height_mm, b - v.half_height_mm), RED_DISC)
    for zc, body, post in zip(levels_z, bodies, posterior):
        cv.paint(body, RED_CORTICAL)
        cv.paint(v.body(zc, inset_mm=v.cortex_mm), RED_CANCELLOUS)
        cv.paint(post, RED_POSTERIOR)
    cv.paint(v.canal(), RED_CSF)
    return bodies, posterior


def union_shapes(shapes) -> Shape:
    out = shapes[0]
    for s in shapes[1:]:
        out = out | s
    return out


def shell(outer: Shape, inner: Shape) -> Shape:
    """``outer`` minus ``inner`` (skin: the body minus the body shrunk by :data:`SKIN_MM`)."""
    return outer - inner


def carve(organ: Structure, target: Structure) -> Structure:
    """``organ`` without the voxels of ``target`` (a mass displaces the organ it grows into), in place."""
    organ.mask &= ~target.mask
    if organ.fraction is not None:
        organ.fraction = np.where(organ.mask, organ.fraction, 0.0).astype(np.float32)
    return organ


# ------------------------------------------------------------------- targets
def target_chain(gtv: Structure, *, ptv_margin_mm: float, ctv_margin_mm: float = 0.0,
                 confine: Structure | None = None, itv_margin_xyz_mm=None) -> list[Structure]:
    """GTV -> CTV -> (ITV) -> PTV by the standards' margins, on the GTV's grid.

    ``CTV = (GTV + ctv_margin) & (confine | GTV)`` (the bone the disease may
    spread in; the GTV itself always stays in), else ``CTV = GTV``;
    ``ITV = CTV + itv_margin_xyz`` (breathing, per axis) when given;
    ``PTV = (ITV or CTV) + ptv_margin``.  Returns ``[GTV, CTV, (ITV,) PTV]``.
    """
    R = StructureRole
    if ctv_margin_mm > 0:
        ctv = expand(gtv, ctv_margin_mm, name="CTV", role=R.CTV)
        if confine is not None:
            ctv = intersect(ctv, union(confine, gtv, name="zConfine", role=R.OTHER), name="CTV", role=R.CTV)
    else:
        ctv = gtv.copy(name="CTV", role=R.CTV)
    chain = [gtv, ctv]
    base = ctv
    if itv_margin_xyz_mm is not None:
        base = expand(ctv, itv_margin_xyz_mm, name="ITV", role=R.ITV)
        chain.append(base)
    chain.append(expand(base, ptv_margin_mm, name="PTV", role=R.PTV))
    return chain


def fine_targets(cv: Canvas, gtv_shape: Shape, *, ptv_margin_mm: float, ctv_margin_mm: float = 0.0,
                 confine_shape: Shape | None = None, itv_margin_xyz_mm=None,
                 lesion_red: float | None = None) -> list[Structure]:
    """:func:`target_chain` on a local grid twice as fine around ``gtv_shape``, averaged back
    onto the phantom grid (``fraction``); paints the GTV with ``lesion_red`` when given."""
    R = StructureRole
    reach = ctv_margin_mm + max(np.atleast_1d(itv_margin_xyz_mm if itv_margin_xyz_mm is not None else 0.0)) \
        + ptv_margin_mm + 4.0
    lo = np.asarray(gtv_shape.lo_mm, float) - reach
    hi = np.asarray(gtv_shape.hi_mm, float) + reach
    fgrid, sl = cv.fine_grid(lo, hi)
    gtv_f = cv.fine_structure("GTV", gtv_shape, fgrid, R.GTV)
    confine_f = None if confine_shape is None else cv.fine_structure("zConfine", confine_shape, fgrid, R.OTHER)
    chain = target_chain(gtv_f, ptv_margin_mm=ptv_margin_mm, ctv_margin_mm=ctv_margin_mm, confine=confine_f,
                         itv_margin_xyz_mm=itv_margin_xyz_mm)
    out = [cv.coarsen(s, sl) for s in chain]
    if lesion_red is not None:
        cv.paint(out[0].mask, lesion_red)
    return out


# ---------------------------------------------------------------- the case
@dataclass
class CaseSpec:
    """What a cohort case states about itself (``case.metadata``), checked by the tests.

    ``ptv_cc_range``: the PTV volume the case was designed for; ``organ_gap_mm``:
    organ name -> (min, max) shortest distance in mm from the PTV surface to the
    organ (0 = touching or overlapping); ``touching``: (target, organ) pairs
    that must touch (e.g. the epidural GTV and the cord PRV).
    """

    name: str
    description: str
    protocol: str
    site: str
    ptv_cc_range: tuple[float, float]
    organ_gap_mm: dict[str, tuple[float, float]] = field(default_factory=dict)
    touching: tuple[tuple[str, str], ...] = ()
    extra: dict = field(default_factory=dict)


def assemble(cv: Canvas, spec: CaseSpec, structures: list[Structure]) -> Case:
    """The phantom case: deterministic identifiers, ``phantom:<name>`` source, the spec in the metadata."""
    ptv = next(s for s in structures if s.name == "PTV")
    metadata = {
        "phantom": spec.name,
        "description": spec.description,
        "target": "PTV",
        "protocol": spec.protocol,
        "site": spec.site,
        "suggested_isocenter_mm": tuple(float(v) for v in ptv.centroid_mm()),
        "ptv_cc_range": spec.ptv_cc_range,
        "organ_gap_mm": dict(spec.organ_gap_mm),
        "touching": tuple(spec.touching),
        **spec.extra,
    }
    return Case(name=spec.name, grid=cv.grid, hu=cv.hu, structures={s.name: s for s in structures},
                calibration=cv.calibration, patient_position="HFS",
                patient=phantom_patient(spec.name, cv.spacing_mm, cv.grid.nz), source=f"phantom:{spec.name}",
                metadata=metadata)

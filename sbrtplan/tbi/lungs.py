"""Lung shielding: AP/PA lung blocks and lateral lung compensators, designed from the mean lung dose.

Both are drawn the same way: the lungs projected along the rays onto the treatment plane, holes
filled, shrunk by the recipe margin, one uniform thickness of the block material on the block
screen.  Under the shape the dose of a field of the shape's size is attenuated by the transmission
``T`` (Clarkson subtraction, :func:`~sbrtplan.tbi.dosecalc.block_field_fraction`), so the mean
lung dose is linear in ``1 - T``:  ``MLD(T) = A - (1 - T) B``, and the transmission that gives the
design MLD follows directly.

* **AP/PA**: full lung blocks, the thickness rounded up to the block step (the mediastinum and
  the spine lie between the lungs, outside the blocks).
* **Lateral (bilateral) fields**: the lungs and the mediastinum lie on the same lateral rays, so
  the arms (part of the body, in the beam path, already in the water depth) and a
  partial-transmission lung compensator over the projected lungs are what the technique offers.
  It is cut from the compensator sheets (material, step and tray of the beam data's
  ``compensator``), not cast like a block.  Whatever it takes from the lungs it also takes
  from the chest midline, so its thickness is limited so that no midline sampling point under it
  falls below ``(1 - lateral_lung_midline_floor_fraction)`` of the prescription (``rules.yaml``),
  rounded down to the sheet step.  When that limit, not the MLD design, sets the thickness the
  design says so (``limited_by_midline``) and the mean-lung-dose rules report the consequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .beamdata import Attenuator, TbiBeamData
from .blocks import BlockShape, design_outline
from .dosecalc import block_field_fraction
from .geometry import Field, Technique
from .rules import TbiRules

LUNG_BLOCK = "lung block"
LATERAL_COMPENSATOR = "lateral lung compensator"


@dataclass
class PointsDose:
    """Per-fraction dose of the compensated open fields at a set of points, per field.

    ``per_field[name] = (water depth cm, dose cGy per fraction, u mm, v mm)`` (``u, v``: the
    points projected onto the treatment plane); ``square_cm`` the patient-limited equivalent square
    of each point.
    """

    per_field: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    square_cm: np.ndarray


@dataclass
class LungShielding:
    """The lung shielding of a plan and how its thickness was chosen."""

    kind: str | None                       # LUNG_BLOCK or LATERAL_COMPENSATOR (what the technique uses)
    blocks: list[BlockShape] = field(default_factory=list)
    factors: dict[str, np.ndarray] = field(default_factory=dict)   # per field: dose factor per body voxel
    thickness_mm: float = 0.0
    design_thickness_mm: float | None = None   # what the MLD design asked for (None: thickness requested)
    midline_limit_mm: float | None = None      # lateral: thickest compensator the chest midline allows
    limited_by_midline: bool = False

    def as_dict(self) -> dict:
        """The design, for metrics.json."""
        return {"kind": self.kind, "placed": bool(self.blocks), "thickness_mm": round(self.thickness_mm, 2),
                "design_thickness_mm": None if self.design_thickness_mm is None else round(self.design_thickness_mm, 2),
                "midline_limit_mm": None if self.midline_limit_mm is None else round(self.midline_limit_mm, 2),
                "limited_by_midline": self.limited_by_midline}


def attenuator_of(beam: TbiBeamData, shape: BlockShape) -> Attenuator:
    """The material a shape is made of: compensator sheets for a lateral lung compensator, else the block."""
    return beam.compensator if shape.meta.get("kind") == LATERAL_COMPENSATOR else beam.block


def _round_mm(mm: float, step_mm: float, up: bool) -> float:
    q = mm / step_mm
    return float((np.ceil(q - 1e-9) if up else np.floor(q + 1e-9)) * step_mm)


def _shielded_fraction(beam: TbiBeamData, shape: BlockShape, pts: PointsDose, name: str) -> np.ndarray:
    """Part ``g`` of each point's open dose that the shape shields (0 outside it)."""
    d, _, u, v = pts.per_field[name]
    under, sqb = shape.lookup(u, v)
    g = np.zeros(len(d))
    g[under] = block_field_fraction(beam, d[under], pts.square_cm[under], sqb[under])
    return g


def midline_limit_transmission(beam: TbiBeamData, shapes: dict[str, BlockShape], midline: PointsDose,
                               n_fractions: int, n_shielded: int, floor_gy: float) -> float:
    """Lowest compensator transmission that keeps every midline point under it at ``floor_gy`` or more.

    A point's course dose is ``D(T) = D(1) - (1 - T) B`` with ``D(1)`` its unshielded course dose and
    ``B`` the shielded part over the ``n_shielded`` fractions with the compensator; a point already
    below the floor allows no compensator (transmission 1).
    """
    d1 = np.zeros(len(midline.square_cm))
    b = np.zeros(len(midline.square_cm))
    for name, (_, cgy, _, _) in midline.per_field.items():
        d1 += n_fractions * cgy / 100.0
        if name in shapes:
            b += n_shielded * cgy * _shielded_fraction(beam, shapes[name], midline, name) / 100.0
    under = b > 0
    if not under.any():
        return 0.0
    allowed = float(np.min((d1[under] - floor_gy) / b[under]))     # the largest 1 - T each point allows
    return 1.0 - min(max(allowed, 0.0), 1.0)


def design_lung_shielding(beam: TbiBeamData, rules: TbiRules, technique: Technique, fields: list[Field],
                          lung_points_mm: np.ndarray, voxels: PointsDose, lung_idx: np.ndarray,
                          n_fractions: int, n_shielded: int, requested_mm: float | None,
                          midline: PointsDose | None = None, prescription_gy: float | None = None) -> LungShielding:
    """Lung blocks (AP/PA) or lateral lung compensators for the plan's fields.

    Parameters
    ----------
    beam, rules : TbiBeamData, TbiRules
    technique : Technique
        AP/PA gives lung blocks; lateral gives lung compensators limited by the chest midline.
    fields : list of Field
    lung_points_mm : (n, 3) ndarray
        Lung voxel centres (patient coordinates, mm).
    voxels : PointsDose
        The body voxels' per-fraction dose per field (compensated open fields, MU applied).
    lung_idx : (n_body,) bool ndarray
        Which body voxels are lung.
    n_fractions, n_shielded : int
        Fractions of the course, and fractions with the shielding in place.
    requested_mm : float or None
        A thickness the physicist asked for (used as given), or None to design it from the MLD.
    midline, prescription_gy : optional
        Midline sampling points' per-fraction dose and the prescription: needed for the lateral
        midline limit.

    Returns
    -------
    LungShielding
        Without blocks when nothing is shielded (no lungs, shielding not wanted, or a thickness of 0).
    """
    kind = LUNG_BLOCK if technique is Technique.AP_PA else LATERAL_COMPENSATOR
    out = LungShielding(kind=kind)
    if n_shielded <= 0 or not lung_idx.any() or (requested_mm is not None and requested_mm <= 0):
        return out
    shapes: dict[str, BlockShape] = {}
    g_vox: dict[str, np.ndarray] = {}
    for f in fields:
        shape = design_outline("lung", f, lung_points_mm, rules.lung_block_margin_cm * 10.0)
        if shape is not None:
            shapes[f.name] = shape
            g_vox[f.name] = _shielded_fraction(beam, shape, voxels, f.name)
    if not shapes:
        return out
    blk = beam.block if kind == LUNG_BLOCK else beam.compensator
    max_mm = blk.max_thickness_mm or np.inf
    if requested_mm is not None:
        thick = float(requested_mm)
    else:
        open_mld = sum(float((n_fractions * cgy)[lung_idx].mean())
                       for _, cgy, _, _ in voxels.per_field.values()) / 100.0
        b = sum(float((n_shielded * voxels.per_field[n][1] * g)[lung_idx].mean())
                for n, g in g_vox.items()) / 100.0
        t_need = 1.0 if open_mld <= rules.mld_design_gy else max(0.0, 1.0 - (open_mld - rules.mld_design_gy) / b)
        thick = min(_round_mm(float(blk.thickness_mm(t_need)), blk.step_mm, up=True), max_mm) if t_need < 1 else 0.0
        out.design_thickness_mm = thick
        if kind == LATERAL_COMPENSATOR and midline is not None and prescription_gy is not None:
            floor_gy = (1.0 - rules.lateral_lung_midline_floor_fraction) * prescription_gy
            t_floor = midline_limit_transmission(beam, shapes, midline, n_fractions, n_shielded, floor_gy)
            limit = _round_mm(float(blk.thickness_mm(t_floor)), blk.step_mm, up=False) if t_floor < 1 else 0.0
            out.midline_limit_mm = min(limit, max_mm)
            if thick > out.midline_limit_mm:
                thick, out.limited_by_midline = out.midline_limit_mm, True
    if thick <= 0:
        return out
    t = float(blk.transmission(thick))
    out.thickness_mm = thick
    for f in fields:
        if f.name not in shapes:
            continue
        shape = shapes[f.name]
        shape.thickness_mm, shape.transmission = thick, t
        shape.meta.update({"fractions": n_shielded, "kind": kind})
        out.factors[f.name] = 1.0 - (1.0 - t) * g_vox[f.name]
        out.blocks.append(shape)
    return out


__all__ = ["LungShielding", "PointsDose", "design_lung_shielding", "midline_limit_transmission", "attenuator_of",
           "LUNG_BLOCK", "LATERAL_COMPENSATOR"]

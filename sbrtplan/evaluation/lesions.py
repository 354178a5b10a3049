"""Per-lesion plan-quality indices when one dose treats several targets.

Whole-body isodose volumes belong to no single target when a plan treats
several lesions: dividing them by one PTV inflates CI and R50 by the number of
lesions, gives every lesion the same GI and lets D2cm of one lesion see the
neighbour's prescription dose.  Here every voxel of the dose grid is given to
one lesion and each lesion's indices use only its own share.

Splitting rule (documented, reproducible by an independent computation)
-----------------------------------------------------------------------
Each voxel centre belongs to the target whose surface is nearest: the signed
distance to the target surface (negative inside, ``case.distance_map_mm``) is
compared, so a voxel inside a target belongs to it, and where targets overlap
to the one it lies deepest in.  Ties go to the target listed first.  A voxel
counts whole in the share of its target; isodose volumes within a share are the
sub-voxel volumes of :func:`~sbrtplan.evaluation.conformity.isodose_volume_cc`
(restricted to the body when one is given).

Per lesion ``i`` with prescription ``Rx_i``:

* ``PIV_i`` = volume of share ``i`` receiving >= ``Rx_i``; ``V50_i`` likewise at
  ``Rx_i / 2``; ``TV_PIV_i`` from the lesion's DVH;
* CI = PIV_i / TV_i, Paddick CI = TV_PIV_i^2 / (TV_i PIV_i), GI = V50_i / PIV_i,
  R50 = V50_i / TV_i, D2cm = maximum dose over share ``i`` at >= 20 mm from lesion
  ``i``, in % of ``Rx_i`` (a point of share ``i`` is at least as far from every
  other lesion), and the RTOG 0813/0915 class of these values;
* the **union** adds the shares: TV = sum TV_i, PIV = sum PIV_i, V50 = sum V50_i,
  TV_PIV = sum TV_PIV_i; D2cm of the union is the largest D2cm_i in % of the
  respective prescription.  With a single prescription the union's PIV and V50
  are the whole-body isodose volumes.

Merged fall-off: the 50 % isodoses of lesions ``i`` and ``j`` merge when one
connected region of dose >= ``min(Rx_i, Rx_j) / 2`` (26-connectivity) touches
both targets; every merged pair is reported and logged as a warning, because
GI and R50 then depend on the splitting rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from .._log import get_logger
from ..case import Structure, distance_map_mm
from ..errors import InputError, StructureError
from ..protocols.rtog import RtogAssessment
from .conformity import VolumeRatios, d2cm_gy, isodose_volume_cc
from .dvh import DVH, DoseField, compute_dvh

log = get_logger(__name__)

__all__ = ["LesionIndices", "MultiTargetIndices", "lesion_indices", "split_by_nearest_target",
           "format_lesion_table"]


@dataclass
class LesionIndices:
    """Indices of one lesion (or of the union) on its share of the dose grid."""

    name: str
    rx_gy: float
    tv_cc: float
    piv_cc: float
    v50_cc: float
    tv_piv_cc: float
    ci_rtog: float
    ci_paddick: float
    gi: float
    r50: float
    d2cm_pct: float
    rtog: RtogAssessment | None

    @classmethod
    def of(cls, name: str, rx_gy: float, tv_cc: float, piv_cc: float, v50_cc: float, tv_piv_cc: float,
           d2cm_pct: float) -> "LesionIndices":
        """Indices from the share's volumes, with the plan indices' formulas (``VolumeRatios``)."""
        r = VolumeRatios.of(tv_cc, piv_cc, v50_cc, tv_piv_cc, d2cm_pct)
        return cls(name, rx_gy, tv_cc, piv_cc, v50_cc, tv_piv_cc, r.ci_rtog, r.ci_paddick, r.gi, r.r50, d2cm_pct, r.rtog)

    def as_dict(self) -> dict:
        return {"name": self.name, "rx_gy": self.rx_gy, "ptv_cc": self.tv_cc, "piv_cc": self.piv_cc,
                "v50_cc": self.v50_cc, "tv_piv_cc": self.tv_piv_cc, "CI_rtog": self.ci_rtog,
                "CI_paddick": self.ci_paddick, "GI": self.gi, "R50": self.r50, "D2cm_pct": self.d2cm_pct,
                "RTOG": None if self.rtog is None else self.rtog.overall.value}


@dataclass
class MultiTargetIndices:
    """Per-lesion indices, the union, and the pairs of lesions whose 50 % isodoses merge."""

    lesions: list[LesionIndices]
    union: LesionIndices
    merged_50: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"split_rule": "nearest target surface (signed distance)",
                "lesions": [x.as_dict() for x in self.lesions], "union": self.union.as_dict(),
                "merged_50pct_isodoses": [list(p) for p in self.merged_50]}


def split_by_nearest_target(targets: Sequence[Structure]) -> np.ndarray:
    """Index (0..n-1) of the target owning each voxel (see the module docstring), shape ``grid.shape``."""
    if not targets:
        raise InputError("split_by_nearest_target needs at least one target")
    grid = targets[0].grid
    best = None
    owner = np.zeros(grid.shape, dtype=np.int16)
    for i, t in enumerate(targets):
        if not t.grid.same_as(grid):
            raise StructureError(f"target '{t.name}' is not on the grid of '{targets[0].name}'")
        d = distance_map_mm(t, signed=True)
        if best is None:
            best = d
            continue
        closer = d < best   # strict: ties stay with the target listed first
        owner[closer] = i
        best = np.where(closer, d, best)
    return owner


def _merged_pairs(field_: DoseField, targets: Sequence[Structure], rx: Sequence[float]) -> list[tuple[str, str]]:
    pairs = []
    structure = np.ones((3, 3, 3), dtype=bool)
    for level in sorted(set(0.5 * r for r in rx)):
        lab, _ = ndimage.label(field_.dose >= level, structure=structure)
        touched = [set(np.unique(lab[t.mask & (lab > 0)])) for t in targets]
        for i in range(len(targets)):
            for j in range(i + 1, len(targets)):
                if 0.5 * min(rx[i], rx[j]) != level:
                    continue
                if touched[i] & touched[j]:
                    pairs.append((targets[i].name, targets[j].name))
    return pairs


def lesion_indices(dose, targets: Sequence[Structure], rx_gy: Sequence[float] | float,
                   body: Structure | None = None, dvhs: Sequence[DVH] | None = None) -> MultiTargetIndices:
    """Per-lesion CI, Paddick CI, GI, R50, D2cm and RTOG class, and those of the union.

    Parameters
    ----------
    dose : Dose or DoseField
    targets : sequence of Structure
        The lesions (PTVs), on the dose grid, each listed once.
    rx_gy : float or sequence of float
        Prescription (total Gy) of each target, or one for all.
    body : Structure, optional
        External contour; isodose volumes and D2cm are restricted to it.
    dvhs : sequence of DVH, optional
        Already computed (fully refined) DVHs of the targets, in the same order.

    Returns
    -------
    MultiTargetIndices
    """
    targets = list(targets)
    if not targets:
        raise InputError("lesion_indices needs at least one target")
    names = [t.name for t in targets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"target(s) {', '.join(dup)} given more than once")
    rx = [float(rx_gy)] * len(targets) if np.isscalar(rx_gy) else [float(r) for r in rx_gy]
    if len(rx) != len(targets):
        raise InputError(f"{len(rx)} prescriptions for {len(targets)} targets")
    bad = [f"{n}: {r!r}" for n, r in zip(names, rx) if not (np.isfinite(r) and r > 0)]
    if bad:
        raise InputError(f"prescription doses must be positive and finite, got {', '.join(bad)} Gy")
    f = DoseField.of(dose)
    if body is not None and not body.grid.same_as(f.grid):
        raise StructureError(f"body structure '{body.name}' is not on the dose grid")
    owner = split_by_nearest_target(targets)
    bw = None if body is None else body.weights
    out = []
    for i, (t, r) in enumerate(zip(targets, rx)):
        share = (owner == i).astype(np.float32)
        w = share if bw is None else share * bw
        dvh = dvhs[i] if dvhs is not None else compute_dvh(f, t, refinement="full")
        tv = dvh.volume_cc
        piv = isodose_volume_cc(f, r, body_weights=w)
        v50 = isodose_volume_cc(f, 0.5 * r, body_weights=w)
        tv_piv = min(float(dvh.v_gy_cc(r)), piv)
        region = Structure(f"{t.name} share", f.grid, w >= 0.5)
        d2 = d2cm_gy(f, t, region)
        d2_pct = 100.0 * d2.max_dose_gy / r
        out.append(LesionIndices.of(t.name, r, tv, piv, v50, tv_piv, d2_pct))
    tv = sum(x.tv_cc for x in out)
    piv = sum(x.piv_cc for x in out)
    v50 = sum(x.v50_cc for x in out)
    tv_piv = sum(x.tv_piv_cc for x in out)
    d2_pct = max(x.d2cm_pct for x in out)
    union = LesionIndices.of("union", min(rx), tv, piv, v50, tv_piv, d2_pct)
    merged = _merged_pairs(f, targets, rx) if len(targets) > 1 else []
    for a, b in merged:
        log.warning("the 50 %% isodoses of %s and %s merge: their GI and R50 depend on the split between them "
                    "(nearest target surface)", a, b)
    return MultiTargetIndices(out, union, merged)


def format_lesion_table(res: MultiTargetIndices) -> str:
    """Plain-text table of the per-lesion indices and the union, with the merge warnings."""
    head = (f"{'lesion':<16} {'Rx Gy':>6} {'vol cc':>7} {'V100%':>6} {'CI':>6} {'Paddick':>7} {'GI':>6} "
            f"{'R50':>6} {'D2cm%':>6}  RTOG")
    lines = ["Per-lesion indices (isodose volumes split by nearest target surface)", head, "-" * len(head)]
    for x in res.lesions + [res.union]:
        v100 = 100.0 * x.tv_piv_cc / x.tv_cc if x.tv_cc > 0 else float("nan")
        rt = "-" if x.rtog is None else x.rtog.overall.value
        rx = f"{x.rx_gy:6.2f}" if x is not res.union else f"{'own':>6}"
        lines.append(f"{x.name[:16]:<16} {rx} {x.tv_cc:7.2f} {v100:6.1f} {x.ci_rtog:6.3f} {x.ci_paddick:7.3f} "
                     f"{x.gi:6.2f} {x.r50:6.2f} {x.d2cm_pct:6.1f}  {rt}")
    for a, b in res.merged_50:
        lines.append(f"warning: the 50 % isodoses of {a} and {b} merge; their GI and R50 depend on the split")
    return "\n".join(lines)


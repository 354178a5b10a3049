"""Implant dosimetry on a dose grid: DVH metrics (D90, V100, V150, V200, organ D10/D2cc/D0.1cc) and goals.

DVHs come from :func:`sbrtplan.evaluation.compute_dvh` (sub-voxel occupancy of the structures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..case import Dose, Structure, StructureRole
from ..evaluation import compute_dvh
from .protocol import SeedProtocol, goal_passes, metric_value


@dataclass
class GoalOutcome:
    label: str
    structure: str
    metric: str
    value_pct: float | None
    passed: bool | None
    source: str


def target_metrics(dose: Dose, target: Structure, prescription_gy: float) -> dict:
    """D90 (Gy and %), V100, V150, V200 (% volume) of the target: the TG-137 reporting set."""
    dvh = compute_dvh(dose, target)
    d90 = float(dvh.d_pct(90.0))
    return {"structure": target.name, "volume_cc": float(target.volume_cc), "D90_gy": d90,
            "D90_pct": 100.0 * d90 / prescription_gy,
            **{f"V{p}_pct": float(dvh.v_gy_pct(p / 100.0 * prescription_gy)) for p in (100, 150, 200)}}


def organ_metrics(dose: Dose, organ: Structure, prescription_gy: float) -> dict:
    dvh = compute_dvh(dose, organ)
    out = {"structure": organ.name, "volume_cc_in_dose_grid": float(organ.volume_cc),
           "D0.1cc_gy": float(dvh.d_cc(0.1)), "D2cc_gy": float(dvh.d_cc(2.0)) if organ.volume_cc >= 2.0 else None,
           "D10_gy": float(dvh.d_pct(10.0)), "D30_gy": float(dvh.d_pct(30.0))}
    for k in list(out):
        if k.endswith("_gy") and out[k] is not None:
            out[k.replace("_gy", "_pct")] = 100.0 * out[k] / prescription_gy
    return out


def evaluate_goals(dose: Dose, structures: dict[str, Structure], target: Structure,
                   protocol: SeedProtocol) -> list[GoalOutcome]:
    """Every goal of the protocol on ``dose``; an organ the case lacks is 'not evaluable' (passed None)."""
    rx = float(protocol.prescription_gy)
    out = []
    for g in protocol.goals:
        if g.structure == "target":
            targets = [target]
        elif g.structure == "@OAR":
            targets = [s for s in structures.values() if s.role is StructureRole.OAR and not s.is_empty]
        else:
            targets = [structures[g.structure]] if g.structure in structures else []
        if not targets:
            out.append(GoalOutcome(g.label, g.structure, g.metric, None, None, g.source))
            continue
        for s in targets:
            if s.is_empty:
                out.append(GoalOutcome(g.label, s.name, g.metric, None, None, g.source))
                continue
            v = metric_value(compute_dvh(dose, s), g.metric, rx)
            label = g.label if s is target or g.structure != "@OAR" else g.label.replace("@OAR", s.name)
            out.append(GoalOutcome(label, s.name, g.metric, v, goal_passes(g, v), g.source))
    return out


def goals_dict(goals: list[GoalOutcome]) -> list[dict]:
    return [{"goal": g.label, "structure": g.structure, "metric": g.metric,
             "value_pct": None if g.value_pct is None else round(g.value_pct, 3), "passed": g.passed,
             "source": g.source} for g in goals]


def all_passed(goals: list[GoalOutcome]) -> bool:
    return all(g.passed is True for g in goals if g.passed is not None)


def position_differences(a_mm: np.ndarray, b_mm: np.ndarray, tolerance_mm: float) -> dict:
    """Match seeds of ``a`` to the nearest unused seed of ``b`` (greedy by distance): distances,
    number within ``tolerance_mm`` and the unmatched counts of both sides."""
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(a_mm, float).reshape(-1, 3)
    b = np.asarray(b_mm, float).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        return {"n_a": len(a), "n_b": len(b), "matched": 0, "within_tolerance": 0, "distances_mm": []}
    dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    ia, ib = linear_sum_assignment(dist)
    dd = dist[ia, ib]
    return {"n_a": int(len(a)), "n_b": int(len(b)), "matched": int(len(ia)),
            "within_tolerance": int((dd <= tolerance_mm).sum()), "tolerance_mm": float(tolerance_mm),
            "mean_mm": float(dd.mean()), "max_mm": float(dd.max()), "distances_mm": [float(x) for x in dd],
            "pairs": [(int(i), int(j)) for i, j in zip(ia, ib)]}

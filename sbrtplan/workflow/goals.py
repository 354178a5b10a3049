"""Protocol goals resolved to the structures the optimiser controls.

The evaluation resolves the same goals on the final dose; here each goal is
turned into one structure (organs with several parts, e.g. both kidneys for a
"kidneys" role evaluated per organ, are each given their own goal).  Goals
whose structure is not contoured are listed so that the caller can refuse to
plan (the default) or proceed with ``allow_missing``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..case import Structure
from ..evaluation import goal_structures
from ..evaluation.matching import RoleMatch
from ..protocols import Protocol
from ..protocols.model import Goal, Stage


@dataclass
class ResolvedGoals:
    """Goals paired with their structure, and the goals that cannot be planned."""

    pairs: list[tuple[Goal, Structure]]
    missing: list[Goal]

    def missing_text(self) -> str:
        seen = []
        for g in self.missing:
            label = f"{g.structure}: {g.label}" if hasattr(g, "label") else g.structure
            if label not in seen:
                seen.append(label)
        return "; ".join(seen)


def resolve_goals(goals: list[Goal], protocol: Protocol, match: RoleMatch) -> ResolvedGoals:
    """Pair each optimisable goal with its structure (PRV and 'minus' applied).

    Plan indices (CI, GI, R50%, D2cm) and report-only goals have no structure:
    the optimiser drives them through the rings, so they are skipped here.
    """
    pairs: list[tuple[Goal, Structure]] = []
    missing: list[Goal] = []
    for goal in goals:
        if goal.metric.is_plan_index or goal.stage is Stage.REPORT:
            continue
        if goal.structure not in protocol.roles:
            missing.append(goal)
            continue
        found, _ = goal_structures(goal, protocol, match)   # the evaluation's structures (PRV, minus)
        if not found:
            if protocol.roles[goal.structure].kind != "body":
                missing.append(goal)
            continue
        for s in found:
            if s.mask.any():
                pairs.append((goal, s))
    return ResolvedGoals(pairs, missing)

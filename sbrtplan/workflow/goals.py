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
from ..evaluation.matching import RoleMatch, find_prv, subtract
from ..protocols import Protocol
from ..protocols.model import ApplyTo, Goal, Stage


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
        found = list(match.get(goal.structure))
        if not found:
            if protocol.roles[goal.structure].kind != "body":
                missing.append(goal)
            continue
        if goal.apply_to is ApplyTo.PRV:
            found = [find_prv(s, match.structures) or s for s in found]
        if goal.minus:
            parts = [p for key in goal.minus for p in match.get(key)]
            if parts:
                found = [subtract(s, parts, f"{s.name}-" + "-".join(p.name for p in parts)) for s in found]
        for s in found:
            if s.mask.any():
                pairs.append((goal, s))
    return ResolvedGoals(pairs, missing)

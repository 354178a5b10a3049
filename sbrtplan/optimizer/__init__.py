"""Convex prioritised fluence optimisation on a dose matrix.

Public API
----------
VoxelRegion,
MaxDose, MinDose, MeanDose, UpperDVH, LowerDVH, QuadOverdose, QuadUnderdose, ProfileOverdose, LinearMean, Smoothness,
Term, ConstraintKind,
OptimizationStage, KeepMode, SolverMethod, prioritized_solve, OptimizationResult, StageResult

Beam-angle selection (group lasso): select_beams, QuadraticPenalty, SelectionResult
VMAT direct aperture optimisation: vmat_dao, ArcSector, DAOResult, sectors_from_influence
Fast penalty path (full-size problems): Penalty, Limit, FluenceRegularizer, beamlet_neighbour_pairs,
penalty_solve

The model (what every term means, how stages are kept, how infeasible limits
are relaxed) is documented in :mod:`.terms` and :mod:`.prioritized`; the two
solver paths in :mod:`.cvx` and :mod:`.first_order`. This layer knows doses and terms,
never protocols: the translation of protocol goals into terms lives in
:mod:`sbrtplan.workflow.goal_stages`.
"""

from .problem import KeepMode, OptimizationResult, OptimizationStage, SolverMethod, StageResult
from .prioritized import prioritized_solve
from .regions import VoxelRegion
from .beam_selection import QuadraticPenalty, SelectionResult, select_beams
from .dao import ArcSector, DAOResult, sectors_from_influence, vmat_dao
from .penalty import FluenceRegularizer, Limit, Penalty, beamlet_neighbour_pairs, penalty_solve
from .terms import (ConstraintKind, LinearMean, LowerDVH, MaxDose, MeanDose, MinDose, ProfileOverdose, QuadOverdose,
                    QuadUnderdose, Smoothness, Term, UpperDVH)

__all__ = ["VoxelRegion", "MaxDose", "MinDose", "MeanDose", "UpperDVH", "LowerDVH", "QuadOverdose", "ProfileOverdose",
           "QuadUnderdose", "LinearMean", "Smoothness", "Term", "ConstraintKind", "OptimizationStage", "KeepMode",
           "SolverMethod", "prioritized_solve", "OptimizationResult", "StageResult",
           "select_beams", "QuadraticPenalty", "SelectionResult", "vmat_dao", "ArcSector", "DAOResult",
           "sectors_from_influence", "Penalty", "Limit", "FluenceRegularizer", "beamlet_neighbour_pairs",
           "penalty_solve"]

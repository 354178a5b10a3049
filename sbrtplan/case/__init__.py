"""Case model: grid, CT and density, structures, doses, planning-structure operations.

Public API
----------
Grid, Structure, StructureRole, Case, Dose, PatientInfo, DensityCalibration, hu_to_density
"""

from .case import Case, Dose, PatientInfo
from .density import DensityCalibration, hu_to_density
from .grid import Grid
from .structure import Structure, StructureRole

__all__ = ["Grid", "Structure", "StructureRole", "Case", "Dose", "PatientInfo",
           "DensityCalibration", "hu_to_density"]

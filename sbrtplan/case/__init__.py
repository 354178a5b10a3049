"""Case model: grid, CT and density, structures, doses, planning-structure operations.

Public API
----------
Grid, Structure, StructureRole, Case, Dose, PatientInfo, DensityCalibration, hu_to_density

Planning structures (true-millimetre margins, see ``case/distance.py``):
expand, contract, prv, prv_name, ring, union, intersect, subtract, ptv_minus, distance_map_mm

Resampling onto a dose grid:
resample_case, resample_structure, resample_array, resample_dose

Names: normalize_name, infer_role (TG-263)
"""

from .booleans import intersect, ptv_minus, subtract, union
from .case import Case, Dose, PatientInfo
from .density import DensityCalibration, hu_to_density
from .distance import distance_map_mm
from .grid import Grid
from .margins import contract, expand, prv, prv_name, ring
from .names import infer_role, normalize_name
from .resample import resample_array, resample_case, resample_dose, resample_structure
from .structure import Structure, StructureRole

__all__ = ["Grid", "Structure", "StructureRole", "Case", "Dose", "PatientInfo",
           "DensityCalibration", "hu_to_density",
           "expand", "contract", "prv", "prv_name", "ring", "union", "intersect", "subtract", "ptv_minus",
           "distance_map_mm",
           "resample_case", "resample_structure", "resample_array", "resample_dose",
           "normalize_name", "infer_role"]

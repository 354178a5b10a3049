"""Dose engine: commissioned pencil beams, influence matrices and forward dose.

Public API
----------
Beam models: BeamModel, ModelKind, default_beam_model, load_beam_model, load_matrad_machine, shipped_models,
    Calibration, CALIBRATION_CONVENTIONS, parse_calibration (clinic calibration conventions)
Commissioning: commission, evaluate_model, read_mcc, MeasuredOutputFactor, read_output_factors
Ray tracing: radiological_depth
Influence matrices: Correction, InfluenceMatrix, influence_matrix, dropped_fraction, default_voxels
Forward dose: forward_dose, forward_dose_by_beam (fluence maps; method="control_points" the reference),
    fluence_dose, aperture_dose_per_mu
Fluence maps: FluenceMap, beam_fluence_maps (MU-weighted fluence with the MLC model)
Water formulas: water_dose_relative, central_axis_gy_per_mu, output_factor, pdd, tmr_table, output_factor_table
Independent MU check (Clarkson): mu_check, MUCheckReport, MUCheckRow, independent_point_dose, engine_point_dose
"""

from .commission import commission, evaluate_model
from .output_factors import MeasuredOutputFactor, read_output_factors
from .aperture_dose import aperture_dose_per_mu
from .forward import fluence_dose, forward_dose, forward_dose_by_beam
from .influence import Correction, InfluenceMatrix, default_voxels, dropped_fraction, influence_matrix
from .mcc import read_mcc
from .mucheck import MUCheckReport, MUCheckRow, engine_point_dose, independent_point_dose, mu_check
from .fluence import FluenceMap, beam_fluence_maps
from .calibration import CALIBRATION_CONVENTIONS, Calibration, parse_calibration
from .model import (BeamModel, ModelKind, default_beam_model, load_beam_model, load_matrad_machine,
                    shipped_models)
from .raytrace import radiological_depth
from .water import central_axis_gy_per_mu, output_factor, output_factor_table, pdd, tmr_table, water_dose_relative

__all__ = ["BeamModel", "ModelKind", "Calibration", "CALIBRATION_CONVENTIONS", "parse_calibration", "FluenceMap",
           "beam_fluence_maps", "default_beam_model", "load_beam_model", "load_matrad_machine", "shipped_models",
           "commission", "evaluate_model", "read_mcc", "MeasuredOutputFactor", "read_output_factors", "radiological_depth",
           "Correction", "InfluenceMatrix", "influence_matrix", "dropped_fraction", "default_voxels",
           "forward_dose", "forward_dose_by_beam", "fluence_dose", "aperture_dose_per_mu",
           "water_dose_relative", "central_axis_gy_per_mu", "output_factor", "pdd", "tmr_table",
           "output_factor_table", "mu_check", "MUCheckReport", "MUCheckRow", "independent_point_dose",
           "engine_point_dose"]

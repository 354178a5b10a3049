"""Beam geometry (IEC 61217), MLC models, apertures and deliverable beam descriptions.

Public API
----------
BeamGeometry, beam_rotation, patient_to_fixed, BeamletGrid,
MLCModel, Aperture, ControlPoint, Beam, BeamSet, Technique, DeliverySample, sample_delivery
"""

from .delivery import (Aperture, Beam, BeamSet, ControlPoint, DeliverySample, MLCModel, Technique,
                       sample_delivery, with_mu)
from .beamlets import BeamletGrid
from .geometry import BeamGeometry, beam_rotation, patient_to_fixed

__all__ = ["BeamletGrid", "BeamGeometry", "beam_rotation", "patient_to_fixed", "MLCModel", "Aperture", "ControlPoint",
           "Beam", "BeamSet", "Technique", "DeliverySample", "sample_delivery", "with_mu"]

"""Beam geometry (IEC 61217), MLC models, apertures and deliverable beam descriptions.

Public API
----------
Geometry and delivery description:
    BeamGeometry, beam_rotation, patient_to_fixed, BeamletGrid,
    MLCModel, Aperture, ControlPoint, Beam, BeamSet, Technique, DeliverySample, sample_delivery, with_mu

Targeting:
    isocenter_for(target) -> (x, y, z) mm
    beamlet_grid_for_target(target, geometry, mlc, *, beamlet_mm=5.0, margin_mm=5.0) -> BeamletGrid
    rows_to_leaf_pairs(grid, mlc) -> leaf-pair index per beamlet row

Templates: Site, beam_template(site, n_beams, *, target_side=None) -> [(gantry, couch, collimator)]

Step-and-shoot sequencing:
    sequence_fluence(fluence_mu, grid, mlc, *, max_segments=10, min_segment_mu=2.0, min_leaf_gap_mm=None)
        -> [(Aperture, mu)]
    segments_to_beam(name, geometry, segments, mlc) -> Beam
    delivered_fluence(segments, grid, mlc, *, transmission=False), sequencing_error(...) -> SequencingError
"""

from .delivery import (Aperture, Beam, BeamSet, ControlPoint, DeliverySample, MLCModel, Technique,
                       sample_delivery, with_mu)
from .beamlets import BeamletGrid
from .geometry import BeamGeometry, beam_rotation, patient_to_fixed
from .targeting import beamlet_grid_for_target, isocenter_for, rows_to_leaf_pairs
from .templates import Site, beam_template
from .sequencing import (SequencingError, delivered_fluence, segments_to_beam, sequence_fluence,
                         sequencing_error)

__all__ = ["BeamletGrid", "BeamGeometry", "beam_rotation", "patient_to_fixed", "MLCModel", "Aperture", "ControlPoint",
           "Beam", "BeamSet", "Technique", "DeliverySample", "sample_delivery", "with_mu",
           "isocenter_for", "beamlet_grid_for_target", "rows_to_leaf_pairs", "Site", "beam_template",
           "sequence_fluence", "segments_to_beam", "delivered_fluence", "sequencing_error", "SequencingError"]

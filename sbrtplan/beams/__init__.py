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
    collision_free_template(site, n_beams, case_or_body, isocenter_mm, *, model=None) -> [BeamGeometry]

Step-and-shoot sequencing:
    sequence_fluence(fluence_mu, grid, mlc, *, max_segments=10, min_segment_mu=2.0, min_leaf_gap_mm=None,
                     transmission=True) -> [(Aperture, mu)]
    segments_to_beam(name, geometry, segments, mlc) -> Beam
    delivered_fluence(segments, grid, mlc, *, transmission=False)
    sequencing_error(fluence_mu, segments, grid, mlc, *, transmission=False) -> SequencingError
    aperture_from_columns(left, right, grid, mlc, *, min_leaf_gap_mm=None, jaws_mm=None) -> Aperture (DAO)
    best_row_intervals(score) -> (n_rows, 2) open beamlet interval per row (aperture pricing)
    opening_fluence(opening, grid, mlc), aperture_from_opening(opening, grid, mlc, *, min_leaf_gap_mm=None)

Collision (model documented in ``collision.py``):
    CollisionModel (from_yaml, default, check(gantry_deg, couch_deg, isocenter_mm, body=None) -> CollisionResult),
    body_surface_points,
    candidate_directions(case_or_body, isocenter_mm, *, model=None, gantry_step_deg=20, couches_deg=...)
        -> [BeamGeometry]

Arcs: ArcSpec, arc_template(n_arcs=2, *, cp_spacing_deg=2.0, start_deg=181.0, stop_deg=179.0, partial=None)
    make_arc(name, gantry_deg, apertures, mu_per_cp, *, direction, couch_deg=0, collimator_deg=0, isocenter_mm, mlc)
    arc_collisions(spec, isocenter_mm, body=None, model=None) -> colliding CP angles
    collision_free_arc(couch_deg, isocenter_mm, body=None, *, model=None, direction='CW', containing_deg=None)
        -> ArcSpec | None
    interval_mu_matrix(n_cp), arc_mu_bounds(gantry_deg, direction, limits) -> (A, lo, hi) for the DAO master
    VMAT planning: vmat_arcs(n_arcs, isocenter_mm, body=None, *, cp_spacing_deg=2.0, model=None) -> [ArcSpec]
        (the template, collision-checked), arc_sectors(arcs, sector_deg) -> (width_deg, arcs, n_sectors),
        sector_aperture(grid, left_mm, right_mm, mlc, jaw_x_mm, jaw_y_mm) -> Aperture,
        arc_beam(name, arc, isocenter_mm, mlc, apertures, mu) -> Beam, sector_beams(beam, per) -> [Beam]

Delivery limits: DeliveryLimits (flattened(), fff(), from_yaml), max_leaf_travel_mm(limits, gantry_step_deg, mu=None),
    check_deliverability(beam_set, limits) -> [Violation], ViolationKind, with_fixed_jaws(beam),
    estimate_delivery_time(beam, limits) -> s, estimate_plan_time(beam_set, limits), interval_times_s
"""

from .delivery import (Aperture, Beam, BeamSet, ControlPoint, DeliverySample, MLCModel, Technique,
                       sample_delivery, with_mu)
from .beamlets import BeamletGrid
from .geometry import BeamGeometry, beam_rotation, patient_to_fixed
from .targeting import beamlet_grid_for_target, isocenter_for, rows_to_leaf_pairs
from .templates import Site, beam_template, collision_free_template
from .sequencing import (SequencingError, aperture_from_columns, aperture_from_opening, best_row_intervals,
                         delivered_fluence, opening_fluence, segments_to_beam, sequence_fluence, sequencing_error)
from .limits import (DeliveryLimits, Violation, ViolationKind, check_deliverability, estimate_delivery_time,
                     estimate_plan_time, interval_times_s, max_leaf_travel_mm, with_fixed_jaws)
from .collision import CollisionModel, CollisionResult, body_surface_points, candidate_directions
from .arcs import (ArcSpec, arc_beam, arc_collisions, arc_mu_bounds, arc_sectors, arc_template, collision_free_arc,
                   interval_mu_matrix, make_arc, sector_aperture, sector_beams, vmat_arcs)

__all__ = [
    # geometry and delivery description
    "BeamletGrid", "BeamGeometry", "beam_rotation", "patient_to_fixed", "MLCModel", "Aperture", "ControlPoint",
    "Beam", "BeamSet", "Technique", "DeliverySample", "sample_delivery", "with_mu",
    # targeting and templates
    "isocenter_for", "beamlet_grid_for_target", "rows_to_leaf_pairs", "Site", "beam_template",
    "collision_free_template",
    # sequencing
    "sequence_fluence", "segments_to_beam", "delivered_fluence", "sequencing_error", "SequencingError",
    "aperture_from_columns", "aperture_from_opening", "best_row_intervals", "opening_fluence",
    # delivery limits
    "DeliveryLimits", "Violation", "ViolationKind", "check_deliverability", "estimate_delivery_time",
    "estimate_plan_time", "interval_times_s", "max_leaf_travel_mm", "with_fixed_jaws",
    # collision
    "CollisionModel", "CollisionResult", "body_surface_points", "candidate_directions",
    # arcs
    "ArcSpec", "arc_collisions", "collision_free_arc", "arc_template", "make_arc", "interval_mu_matrix",
    "arc_mu_bounds", "vmat_arcs", "arc_sectors", "sector_aperture", "arc_beam", "sector_beams",
]

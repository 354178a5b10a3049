"""The plan a run produces, and the options that shape it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ..beams import BeamSet
from ..case import Case, Dose
from .recipe import PlanningRecipe, default_recipe


class PlanTechnique(str, enum.Enum):
    """Delivery technique of an automatic plan."""

    IMRT = "imrt"   # 5-9 static non-coplanar fields, step-and-shoot segments
    VMAT = "vmat"   # one or two coplanar arcs, one aperture per control point

    @classmethod
    def parse(cls, value) -> "PlanTechnique":
        from ..errors import InputError

        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise InputError(f"technique must be one of {[t.value for t in cls]}, got {value!r}") from None


class OptimizerPath(str, enum.Enum):
    """How the fluence / aperture weights are optimised."""

    STAGES = "stages"            # the prioritised stages' terms summed (hard limits heavy), L-BFGS-B (fast)
    PENALTY = "penalty"          # weighted penalties with adaptive weights on the hard limits (fast, full size)
    PRIORITIZED = "prioritized"  # lexicographic convex stages (optimizer.prioritized_solve)


@dataclass
class PlanOptions:
    """Settings of an automatic plan (every one has a clinical default).

    Attributes
    ----------
    technique : PlanTechnique
        VMAT (default) or IMRT.
    n_beams : int or None
        IMRT beam count in [5, 9]; None: 7 for spine, 7 for liver (selected
        automatically from the non-colliding candidates).
    select_beams : bool
        IMRT: choose the beam directions by convex group-sparse selection
        (True) or take the site template (False).
    grid_mm : float
        Dose-grid spacing (the standards require <= 2 mm).
    beamlet_mm : float
        Beamlet size at the isocentre along the leaf motion (rows follow the
        MLC leaves).
    n_arcs : int
        VMAT: arcs (1 or 2).
    cp_spacing_deg : float
        VMAT: gantry spacing of the control points (<= 4 degrees).
    max_segments : int
        IMRT: step-and-shoot segments per beam (upper bound).
    min_segment_mu : float
        IMRT: smallest deliverable segment (MU per fraction).
    target : str or None
        Prescription target when several PTVs exist.
    targets : tuple of TargetPrescription
        Several targets in one plan, each with its prescription (``workflow.targets``; strings
        ``"PTV1:27/3"`` are accepted by :func:`~sbrtplan.workflow.plan`); empty: one target.
    conditions : tuple of str
        Protocol conditions (e.g. ``renal_cell``).
    allow_missing : bool
        Plan even if organs the protocol names are not contoured.
    seed : int
        Seed of the random voxel sample of the IMRT beam-angle selection (the same seed gives the
        same plan).
    mlc : str
        ``Millennium120`` (5 mm central leaves) or ``HD120`` (2.5 mm central leaves);
        beamlet rows follow the leaves.
    optimizer : OptimizerPath
        ``penalty`` (default, full-size problems in seconds) or ``prioritized``
        (the lexicographic convex model, exact on small and medium problems).
    recipe : PlanningRecipe
        Every tuning value of the optimisation (``workflow.recipe``; default: the shipped
        ``recipes/default.yaml``); recorded in ``metrics.json`` (``plan.recipe``).
    """

    technique: PlanTechnique = PlanTechnique.VMAT
    n_beams: int | None = None
    select_beams: bool = True
    grid_mm: float = 2.0
    beamlet_mm: float = 5.0
    n_arcs: int = 2
    cp_spacing_deg: float = 2.0
    max_segments: int = 10
    min_segment_mu: float = 2.0
    target: str | None = None
    targets: tuple = ()
    conditions: tuple[str, ...] = ()
    allow_missing: bool = False
    seed: int = 0
    optimizer: OptimizerPath = OptimizerPath.PENALTY
    mlc: str = "Millennium120"
    recipe: PlanningRecipe = field(default_factory=default_recipe)


@dataclass
class Plan:
    """An automatic plan: deliverable beams, final dose and its evaluation.

    Attributes
    ----------
    case : Case
        The case on the dose grid, with the planning structures added.
    protocol_name, scheme : str
    beam_set : BeamSet
        Deliverable beams (MU per fraction).
    dose : Dose
        Total course dose recomputed from the deliverable apertures.
    optimizer_dose : Dose
        Total dose of the optimiser's solution (fluence or apertures on the
        beamlet grid), for the optimiser-vs-delivered comparison.
    report : PlanReport
        Evaluation of ``dose`` against the protocol (``sbrtplan.evaluation``).
    metrics : dict
        ``metrics.json`` content.
    qa : dict
        Independent MU check, deliverability and delivery-time results.
    timings_s : dict
        Seconds per stage.
    log : list of str
        Notes of the run (coverage fallback, normalisation, ...).
    """

    case: Case
    protocol_name: str
    scheme: str
    options: PlanOptions
    beam_set: BeamSet
    dose: Dose
    optimizer_dose: Dose | None
    report: object
    metrics: dict
    qa: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    @property
    def total_mu(self) -> float:
        """MU per fraction over all beams."""
        return self.beam_set.total_mu_per_fraction

    def optimizer_vs_delivered(self) -> dict:
        """How far the delivered dose is from the optimiser's (inside the body, > 10 % Rx)."""
        if self.optimizer_dose is None:
            return {}
        a = self.dose.dose_gy
        b = self.optimizer_dose.dose_gy
        rx = self.beam_set.prescription_gy
        sel = (np.maximum(a, b) > 0.1 * rx)
        if self.case.body is not None:
            sel &= self.case.body.mask
        diff = (a[sel] - b[sel]) / rx * 100.0
        if diff.size == 0:
            return {}
        return {"mean_abs_diff_pct_rx": float(np.mean(np.abs(diff))),
                "max_abs_diff_pct_rx": float(np.max(np.abs(diff))),
                "p95_abs_diff_pct_rx": float(np.percentile(np.abs(diff), 95))}

"""Heterogeneity correction against Monte Carlo: water / lung (0.25) / water slabs.

Reference: ``../shared/data/reference/mc_lung_slab`` (README there): central-axis
depth doses from two independent photon Monte Carlo codes (ompMC 0.4.0, an
EGSnrc-derived condensed-history code, and pyRadMC 0.2.1) for homogeneous
water (H) and water 0-5 cm / lung of density 0.25 5-15 cm / water (L), 2x2, 5x5
and 10x10 cm fields at SSD 100 cm.  The MC source is a bare 6 MV spectrum, not
the commissioned machine, so -- as the README asks -- the comparison is on the
heterogeneity correction factor L/H at each depth (each code's H and L share one
normalisation), never on absolute depth doses.

Engine side: the ``lung_slab`` phantom (2 mm voxels, the MC geometry) and a
water copy, :func:`forward_dose` with the lateral (density-scaled kernel) and
the depth-only correction, averaged over the same central voxels as the MC
(2x2, 4x4, 6x6 voxels for the 2, 5, 10 cm fields).

Depth windows: the MC's L/H is averaged over +-5 mm (6 bins) at each checked
depth and the two codes are combined by inverse-variance weighting (as in the
README's table).  "Inside the lung" is 60-140 mm (10 mm away from both
interfaces, where the 2 mm bins straddle the electron re-equilibration) and
"beyond the lung" 170-250 mm (after the re-build-up at 150-165 mm; the MC's
statistical noise grows past 25 cm).  The issue's figures are applied there:
lateral correction within 5 % inside and 3 % beyond.

Both shipped models are tested.  The scans-only ``generic-6MV`` takes its kernel
from the water scans alone (its scaling lengths were chosen against this
reference).  The default ``generic-6MV-sf`` was commissioned with the 2 x 2 and 10 x 10 cm
L/H of this reference as a constraint (``tools/commission_generic_6mv.py``;
residuals counted only beyond 60 % of the tolerances above), because water scans
cannot fix the kernel split that decides both this test and the small-field
output factors: for those two fields its test is the commissioning's acceptance
check, the 5 x 5 cm field was held out and is a prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
from sbrtplan.dose_engine import Correction, forward_dose, load_beam_model
from sbrtplan.phantoms import make_phantom

from conftest import mc_slab_lh

FIELDS_CM = (2, 5, 10)
INSIDE_MM = tuple(range(60, 141, 10))
BEYOND_MM = tuple(range(170, 251, 10))
WINDOW_MM = 5.0
_N_CENTRAL = {2: 1, 5: 2, 10: 3}      # half-width of the MC's central averaging, in 2 mm voxels


def mc_lh(ref: Path, field_cm: int, depth_mm: float) -> tuple[float, float]:
    """Monte Carlo L/H at a depth: (+-5 mm window per code, inverse-variance mean of the codes, 1-sigma)."""
    return mc_slab_lh(ref, field_cm, depth_mm, WINDOW_MM)


@pytest.fixture(scope="module", params=["generic-6MV", "generic-6MV-sf"])
def engine_cax(request):
    """Engine central-axis doses {(field_cm, 'L'|'H', Correction): (depth_mm, dose)}, per shipped model."""
    model = load_beam_model(request.param)
    case = make_phantom("lung_slab", 2.0)
    g = case.grid
    x, y, z = g.axis_coordinates_mm()
    depth = y - case.metadata["surface_y_mm"]
    mlc = MLCModel.millennium120()
    water = np.ones_like(case.density)
    out = {}
    for f in FIELDS_CM:
        n = _N_CENTRAL[f]
        ix = np.where(np.abs(x) < 2.0 * n)[0]
        iz = np.where(np.abs(z) < 2.0 * n)[0]
        kk, jj, ii = np.meshgrid(iz, np.arange(g.ny), ix, indexing="ij")
        vox = np.ravel_multi_index((kk.ravel(), jj.ravel(), ii.ravel()), g.shape)
        half = 5.0 * f
        ap = Aperture.rectangle(mlc, (-half, half), (-half, half))
        beam = Beam(f"{f}x{f}", [ControlPoint(0.0, ap, 1.0)], mu=100.0, mlc=mlc,
                    isocenter_mm=case.metadata["ssd_sad_isocenter_mm"])
        bs = BeamSet([beam], n_fractions=1, prescription_gy=1.0)
        for label, dens in (("L", case.density), ("H", water)):
            for corr in (Correction.LATERAL, Correction.DEPTH_ONLY):
                d = forward_dose(dens, g, bs, model=model, voxel_indices=vox, correction=corr)
                out[(f, label, corr)] = (depth, d[np.ix_(iz, np.arange(g.ny), ix)].mean(axis=(0, 2)))
    return out


def engine_lh(cax, field_cm: int, corr: Correction, depth_mm: float) -> float:
    depth, lung = cax[(field_cm, "L", corr)]
    _, water = cax[(field_cm, "H", corr)]
    sel = np.abs(depth - depth_mm) <= WINDOW_MM + 1e-6
    return float(lung[sel].mean() / water[sel].mean())


def _deviations(ref, cax, field_cm, depths, corr=Correction.LATERAL):
    return np.array([engine_lh(cax, field_cm, corr, d) / mc_lh(ref, field_cm, d)[0] - 1.0 for d in depths])


@pytest.fixture
def ref(shared_data) -> Path:
    p = shared_data / "reference" / "mc_lung_slab"
    if not p.is_dir():
        pytest.skip(f"Monte Carlo lung-slab reference not available: {p}")
    return p


def test_mc_reference_reproduces_readme_table(ref):
    """Our reading of the reference reproduces its README's L/H table (7, 10, 17, 20 cm)
    within the stated 1-sigma of about 0.01: guards the windowing and weighting."""
    readme = {(2, 70): 0.851, (2, 100): 0.894, (2, 170): 1.391, (2, 200): 1.404,
              (5, 70): 0.990, (5, 100): 1.067, (5, 170): 1.322, (5, 200): 1.350,
              (10, 70): 1.014, (10, 100): 1.074, (10, 170): 1.253, (10, 200): 1.280}
    for (f, d), v in readme.items():
        assert mc_lh(ref, f, d)[0] == pytest.approx(v, abs=0.015), (f, d)


@pytest.mark.parametrize("field_cm", FIELDS_CM)
def test_lateral_correction_beyond_lung_within_3pct(ref, engine_cax, field_cm):
    """Beyond the lung (17-25 cm): lateral correction within 3 % of Monte Carlo."""
    dev = _deviations(ref, engine_cax, field_cm, BEYOND_MM)
    assert np.max(np.abs(dev)) <= 0.03, dict(zip(BEYOND_MM, np.round(100 * dev, 2)))


@pytest.mark.parametrize("field_cm", FIELDS_CM)
def test_lateral_correction_inside_lung_within_5pct(ref, engine_cax, field_cm):
    """Inside the lung (6-14 cm): lateral correction within 5 % of Monte Carlo."""
    dev = _deviations(ref, engine_cax, field_cm, INSIDE_MM)
    assert np.max(np.abs(dev)) <= 0.05, dict(zip(INSIDE_MM, np.round(100 * dev, 2)))


def test_depth_only_misses_small_field_lung_dose_loss(ref, engine_cax):
    """The physics the lateral correction is for: in a 2 x 2 cm field the lung
    lowers the central dose (lateral electron disequilibrium; MC L/H ~0.85-0.9
    at 7-10 cm) while a depth-only correction raises it (less attenuation).  The
    depth-only error inside the lung exceeds 20 % (README: +33 % at 10 cm) and is
    at least five times the lateral correction's."""
    dev_depth = _deviations(ref, engine_cax, 2, INSIDE_MM, Correction.DEPTH_ONLY)
    dev_lat = _deviations(ref, engine_cax, 2, INSIDE_MM, Correction.LATERAL)
    assert np.max(dev_depth) > 0.20
    assert np.max(np.abs(dev_depth)) > 5 * np.max(np.abs(dev_lat))
    # the MC and the lateral model both put the 2 x 2 lung dose below water at 7 cm
    assert mc_lh(ref, 2, 70)[0] < 0.9 and engine_lh(engine_cax, 2, Correction.LATERAL, 70) < 0.9

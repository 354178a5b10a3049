"""Small-field output factors of the commissioned 6 MV model, computed by the engine.

Published reference (cited figures)
-----------------------------------
Followill DS, Kry SF, Qin L, et al. "The Radiological Physics Center's standard
dataset for small field size output factors." J Appl Clin Med Phys 13(5):282-289
(2012), doi:10.1120/jacmp.v13i5.3962, Table 2, RPC-measured output factors of
Elekta 6 MV accelerators (jaw-defined square fields, 10 cm depth, relative to
10 x 10 cm; mean (standard deviation, number of accelerators)):

    6 x 6 cm  0.930 (0.010, n=18)     4 x 4 cm  0.878 (0.015, n=22)
    3 x 3 cm  0.842 (0.012, n=17)     2 x 2 cm  0.790 (0.007, n=17)

The same paper's Table 3 (Siemens 6 MV) lists 0.914 / 0.855 / 0.820 / 0.764: the
machine-to-machine spread (~3 % at 2 x 2 cm) is as large as the tolerance, so a
generic model can only be expected to sit inside the family of 6 MV beams.  The
paper's set-up distance is not restated here; at 10 cm depth the model's output
ratios differ by < 1.5 % between SSD 90 cm (isocentre at depth) and SSD 100 cm,
and both are tested against the 3 % figure of the issue.

1 x 1 cm: no published 1 x 1 cm value could be verified for this test (the RPC
data stop at 2 x 2 cm), so the 1 x 1 cm field is checked only for what can be
defended without one: the voxelised engine reproduces the model's closed-form
value (the 2 mm grid resolves the field) and the independent MU check agrees.
A detector-corrected data set that does include 1 x 1 cm (field output factors
Omega per IAEA TRS-483, 0.5 x 0.5 to 10 x 10 cm, EBT3 film and W1 scintillator
as reference detectors, Varian TrueBeam and Elekta Versa HD, 6 MV with and
without flattening filter) is Casar B, Gershkevitsh E, Mendez I, Jurkovic S,
Huq MS, Med Phys 46(2):944-963 (2019), doi:10.1002/mp.13318; its tabulated
figures were not available to the author of this test, and no figure is
quoted from memory.  At the time of writing the engine gives, at 10 cm depth (SSD 90 / 100 cm),
1 x 1: 0.657 / 0.668, 2 x 2: 0.795 / 0.806, 3 x 3: 0.848 / 0.854.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, ControlPoint, MLCModel
from sbrtplan.case import Grid
from sbrtplan.dose_engine import default_beam_model, output_factor
from sbrtplan.dose_engine.mucheck import engine_point_dose, independent_point_dose

RPC_ELEKTA_6MV = {60.0: 0.930, 40.0: 0.878, 30.0: 0.842, 20.0: 0.790}
MLC = MLCModel.millennium120()
SURFACE_Y = -150.0


@pytest.fixture(scope="module")
def tank():
    """300 mm wide water tank, 2 mm voxels, a voxel centre on the beam axis."""
    g = Grid((151, 150, 151), (2.0, 2.0, 2.0), (-150.0, -149.0, -150.0))
    return g, np.ones(g.shape, dtype=np.float32)


def _dose(tank, field_mm: float, ssd_mm: float, independent: bool = False) -> float:
    g, rho = tank
    ap = Aperture.rectangle(MLC, (-field_mm / 2, field_mm / 2), (-field_mm / 2, field_mm / 2))
    b = Beam("OF", [ControlPoint(0.0, ap, 1.0)], mu=100.0, mlc=MLC,
             isocenter_mm=(0.0, SURFACE_Y + 1000.0 - ssd_mm, 0.0))
    pt = (0.0, SURFACE_Y + 100.0, 0.0)
    f = independent_point_dose if independent else engine_point_dose
    return f(b, rho, g, pt)


@pytest.mark.parametrize("ssd_mm", [900.0, 1000.0])
def test_output_factors_match_published_6mv(tank, ssd_mm):
    """Engine output factors (10 cm depth) within 3 % of the RPC 6 MV data (Followill 2012)."""
    ref = _dose(tank, 100.0, ssd_mm)
    for field_mm, published in RPC_ELEKTA_6MV.items():
        of = _dose(tank, field_mm, ssd_mm) / ref
        assert of == pytest.approx(published, rel=0.03), (field_mm, of, published)


@pytest.mark.parametrize("field_mm", [10.0, 20.0, 30.0])
def test_engine_resolves_small_fields(tank, field_mm):
    """1, 2, 3 cm: the voxelised engine reproduces the model's closed-form output
    factor within 1 % (aperture integrated analytically, 2 mm dose grid), the
    output factor falls monotonically with field size, and the independent
    Clarkson check agrees within 2 % (small fields are where MU checks fail first)."""
    model = default_beam_model()
    ref = _dose(tank, 100.0, 900.0)
    of = _dose(tank, field_mm, 900.0) / ref
    assert of == pytest.approx(output_factor(model, field_mm, 100.0, 900.0), rel=0.01)
    ind = _dose(tank, field_mm, 900.0, independent=True) / _dose(tank, 100.0, 900.0, independent=True)
    assert ind == pytest.approx(of, rel=0.02)


def test_output_factor_ordering(tank):
    """Lateral electron disequilibrium and source occlusion: OF(1) < OF(2) < OF(3) < 1,
    and the 1 x 1 cm field loses far more than the 2 x 2 (> 10 % relative)."""
    ref = _dose(tank, 100.0, 900.0)
    of = [_dose(tank, f, 900.0) / ref for f in (10.0, 20.0, 30.0)]
    assert of[0] < of[1] < of[2] < 1.0
    assert of[0] < 0.9 * of[1]

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

1 x 1 cm (and 2 x 2 cm again, from one data set that has both)
---------------------------------------------------------------
"SU-E-T-423: TrueBeam Small Field Dosimetry Using Commercial Plastic
Scintillation and Other Stereotactic Detectors", AAPM annual-meeting abstract,
Medical Physics, doi:10.1118/1.4888756 (the author list and volume/page were not
part of the record available when this test was written; cite it by title and
doi).  Varian TrueBeam STx, 6 MV flattened, square fields shaped by the HD
multileaf collimator, IBA Blue Phantom water tank, SAD set-up (isocentre at the
detector), 10 cm depth, output factors relative to 10 x 10 cm.  The Exradin W1
plastic-scintillator column is taken as the field output factor, uncorrected
(the abstract describes the W1 as near water equivalent and energy independent):

    MLC field side   W1      (CC01   Edge, same abstract, not used)
    0.5 cm           0.555   (0.541  0.585)
    1.0 cm           0.716   (0.702  0.733)
    1.5 cm           0.779   (0.761  0.777)
    2.0 cm           0.804   (0.785  0.796)

The abstract states that W1 output factors of jaw-only square fields agreed with
a Farmer chamber within 1.8 % but tabulates no jaw field and no 3 x 3 cm value,
so 3 x 3 cm rests on the Followill data above.  The jaw setting behind the MLC
fields is stated only for the profile/PDD scans (jaws 2 x 2 cm for the 0.5 and
1 cm MLC fields).  The comparison below puts the jaws on the field edge
(``Aperture.rectangle``) with the commissioned Millennium-120 geometry (5 mm
leaves: 1 and 2 cm are whole leaf pairs); jaws at 2 x 2 cm behind the 1 cm MLC
field raise the engine's value by 0.6 % (leaf transmission), which changes
nothing below.

Two shipped models are tested.  ``generic-6MV-sf`` (the default, what plans
use) is commissioned on these
three W1 values together with the water scans and the lung-slab Monte Carlo
(``tools/commission_generic_6mv.py``, ``sbrtplan/dose_engine/machines/README.md``),
because water scans of 5 x 5 and 10 x 10 cm do not determine a 1 x 1 cm field's
output (``tests/test_dose_commission.py``); for it the W1 comparison is the
commissioning's acceptance check (as a clinical beam model is checked against
the output factors it was commissioned on), and with the 1 cm value held out
the same fit predicts 0.692 (-3.4 %).  Its voxelised engine values (SSD 90 cm,
10 cm depth) are 0.716 / 0.780 / 0.804 (1 / 1.5 / 2 cm) and, for the RPC
fields, 0.804 / 0.845 / 0.878 / 0.928 (2 / 3 / 4 / 6 cm; SSD 100 cm 0.810 /
0.852 / 0.884 / 0.934).  The scans-only ``generic-6MV`` gives 0.658 / 0.745 / 0.796: within 3 % at 2 cm, outside at 1.5 cm
(-4.3 %) and 1 cm (-8.1 %), kept as strict expected failures.  The RPC Elekta
values are independent of both fits.  A TRS-483
style set covering 0.5 to 10 cm on one TrueBeam and one Versa HD (EBT3 film and W1 as reference detectors; Casar B,
Gershkevitsh E, Mendez I, Jurkovic S, Huq MS, Med Phys 46(2):944-963, 2019,
doi:10.1002/mp.13318) would give 1, 2 and 3 cm from one machine; its tables were
not available when this test was written and no figure of it is used.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, ControlPoint, MLCModel
from sbrtplan.case import Grid
from sbrtplan.dose_engine import load_beam_model, output_factor
from sbrtplan.dose_engine.mucheck import engine_point_dose, independent_point_dose

RPC_ELEKTA_6MV = {60.0: 0.930, 40.0: 0.878, 30.0: 0.842, 20.0: 0.790}
# TrueBeam STx 6 MV, HD-MLC square fields, SAD set-up, 10 cm depth, Exradin W1 (doi:10.1118/1.4888756)
W1_TRUEBEAM_6MV = {10.0: 0.716, 15.0: 0.779, 20.0: 0.804}
MLC = MLCModel.millennium120()
SURFACE_Y = -150.0
MODELS = ("generic-6MV", "generic-6MV-sf")


@pytest.fixture(scope="module")
def tank():
    """300 mm wide water tank, 2 mm voxels, a voxel centre on the beam axis."""
    g = Grid((151, 150, 151), (2.0, 2.0, 2.0), (-150.0, -149.0, -150.0))
    return g, np.ones(g.shape, dtype=np.float32)


def _dose(tank, field_mm: float, ssd_mm: float, independent: bool = False, model: str = "generic-6MV") -> float:
    g, rho = tank
    ap = Aperture.rectangle(MLC, (-field_mm / 2, field_mm / 2), (-field_mm / 2, field_mm / 2))
    b = Beam("OF", [ControlPoint(0.0, ap, 1.0)], mu=100.0, mlc=MLC,
             isocenter_mm=(0.0, SURFACE_Y + 1000.0 - ssd_mm, 0.0))
    pt = (0.0, SURFACE_Y + 100.0, 0.0)
    f = independent_point_dose if independent else engine_point_dose
    return f(b, rho, g, pt, model=load_beam_model(model))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("ssd_mm", [900.0, 1000.0])
def test_output_factors_match_published_6mv(tank, ssd_mm, model):
    """Engine output factors (10 cm depth) within 3 % of the RPC 6 MV data (Followill 2012)."""
    ref = _dose(tank, 100.0, ssd_mm, model=model)
    for field_mm, published in RPC_ELEKTA_6MV.items():
        of = _dose(tank, field_mm, ssd_mm, model=model) / ref
        assert of == pytest.approx(published, rel=0.03), (field_mm, of, published)


_W1_SHORT = ("scans-only model too low at {side} cm: engine {eng} vs W1 {w1} ({d}); its 5 x 5 / 10 x 10 cm scans "
             "do not fix the kernel split a field smaller than the lateral electron range sees; generic-6MV-sf, "
             "commissioned on small-field data and the lung slab, meets it")


@pytest.mark.parametrize("model, field_mm", [
    pytest.param("generic-6MV", 10.0, marks=pytest.mark.xfail(strict=True, reason=_W1_SHORT.format(
        side="1 x 1", eng="0.658", w1="0.716", d="-8.1 %"))),
    pytest.param("generic-6MV", 15.0, marks=pytest.mark.xfail(strict=True, reason=_W1_SHORT.format(
        side="1.5 x 1.5", eng="0.745", w1="0.779", d="-4.3 %"))),
    ("generic-6MV", 20.0),
    ("generic-6MV-sf", 10.0), ("generic-6MV-sf", 15.0), ("generic-6MV-sf", 20.0),
])
def test_output_factors_match_published_w1_truebeam_6mv(tank, model, field_mm):
    """1, 1.5 and 2 cm MLC fields, SAD set-up (SSD 90 cm), 10 cm depth: engine within 3 % of
    the W1 scintillator output factors of the TrueBeam abstract (doi:10.1118/1.4888756)."""
    of = _dose(tank, field_mm, 900.0, model=model) / _dose(tank, 100.0, 900.0, model=model)
    assert of == pytest.approx(W1_TRUEBEAM_6MV[field_mm], rel=0.03), (field_mm, of)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("field_mm", [10.0, 20.0, 30.0])
def test_engine_resolves_small_fields(tank, field_mm, model):
    """1, 2, 3 cm: the voxelised engine reproduces the model's closed-form output
    factor within 1 % (aperture integrated analytically, 2 mm dose grid), the
    output factor falls monotonically with field size, and the independent
    Clarkson check agrees within 2 % (small fields are where MU checks fail first)."""
    m = load_beam_model(model)
    ref = _dose(tank, 100.0, 900.0, model=model)
    of = _dose(tank, field_mm, 900.0, model=model) / ref
    assert of == pytest.approx(output_factor(m, field_mm, 100.0, 900.0), rel=0.01)
    ind = (_dose(tank, field_mm, 900.0, independent=True, model=model)
           / _dose(tank, 100.0, 900.0, independent=True, model=model))
    assert ind == pytest.approx(of, rel=0.02)


@pytest.mark.parametrize("model", MODELS)
def test_output_factor_ordering(tank, model):
    """Lateral electron disequilibrium and source occlusion: OF(1) < OF(2) < OF(3) < 1,
    and the 1 x 1 cm field loses far more than the 2 x 2 (> 10 % relative)."""
    ref = _dose(tank, 100.0, 900.0, model=model)
    of = [_dose(tank, f, 900.0, model=model) / ref for f in (10.0, 20.0, 30.0)]
    assert of[0] < of[1] < of[2] < 1.0
    assert of[0] < 0.9 * of[1]

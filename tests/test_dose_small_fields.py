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

The voxelised engine, same geometry (SSD 90 cm, 10 cm depth), gives 0.658 (1 cm),
0.745 (1.5 cm) and 0.796 (2 cm): within 3 % at 2 cm (-1.0 %), outside it at
1.5 cm (-4.3 %) and 1 cm (-8.1 %).  Those two cases are strict expected
failures.  The model's water scans (5 x 5 and 10 x 10 cm, PTW 60008 diode, an
Elekta-type head) do not determine the 1 x 1 cm value: commissioned with the W1
1.5 and 2 cm values as well, the same scans give a model that passes every scan
criterion and predicts 0.705 at 1 cm (-1.6 %; ``tests/test_dose_commission.py``),
but its sharper kernel misses the lung-slab Monte Carlo dose inside the lung of
a 2 x 2 cm field by 22 % (limit 5 %, ``tests/test_dose_heterogeneity.py``).  The
shipped model keeps the scans-only kernel, which meets the heterogeneity
numbers, and the TrueBeam of this data set is not the machine of its scans
(see ``sbrtplan/dose_engine/machines/README.md``).  For scale, the electron spot
of a Monte Carlo model of a 6 MV treatment head is 1.4 x 2.1 mm FWHM (Med Phys
36(12):5622-5632, 2009, doi:10.1118/1.3259729, Table 1), against the model's
effective focal-spot widths of 2.37 / 1.35 mm sigma at the isocentre.  The
voxelised engine reproduces the model's closed-form value at 1 cm (test
below), so the shortfall is the beam model's, not the dose grid's.  A TRS-483
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
from sbrtplan.dose_engine import default_beam_model, output_factor
from sbrtplan.dose_engine.mucheck import engine_point_dose, independent_point_dose

RPC_ELEKTA_6MV = {60.0: 0.930, 40.0: 0.878, 30.0: 0.842, 20.0: 0.790}
# TrueBeam STx 6 MV, HD-MLC square fields, SAD set-up, 10 cm depth, Exradin W1 (doi:10.1118/1.4888756)
W1_TRUEBEAM_6MV = {10.0: 0.716, 15.0: 0.779, 20.0: 0.804}
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


_W1_SHORT = ("shipped model too low at {side} cm: engine {eng} vs W1 {w1} ({d}); its 5 x 5 / 10 x 10 cm "
             "scans do not fix the kernel split a sub-LCPE field sees, and the split that meets the lung-slab "
             "Monte Carlo gives this value (commissioning on the W1 1.5/2 cm values gives 0.705 at 1 cm but "
             "misses the lung slab by 22 %)")


@pytest.mark.parametrize("field_mm", [
    pytest.param(10.0, marks=pytest.mark.xfail(strict=True, reason=_W1_SHORT.format(
        side="1 x 1", eng="0.658", w1="0.716", d="-8.1 %"))),
    pytest.param(15.0, marks=pytest.mark.xfail(strict=True, reason=_W1_SHORT.format(
        side="1.5 x 1.5", eng="0.745", w1="0.779", d="-4.3 %"))),
    20.0,
])
def test_output_factors_match_published_w1_truebeam_6mv(tank, field_mm):
    """1, 1.5 and 2 cm MLC fields, SAD set-up (SSD 90 cm), 10 cm depth: engine within 3 % of
    the W1 scintillator output factors of the TrueBeam abstract (doi:10.1118/1.4888756)."""
    of = _dose(tank, field_mm, 900.0) / _dose(tank, 100.0, 900.0)
    assert of == pytest.approx(W1_TRUEBEAM_6MV[field_mm], rel=0.03), (field_mm, of)


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

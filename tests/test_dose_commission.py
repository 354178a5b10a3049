"""Commissioning with measured output factors (``commission(..., output_factors=...)``,
``sbrtplan commission``).

The physical fact behind the option: water scans of 5 x 5 and 10 x 10 cm
fields do not determine the output of a 1 x 1 cm field.  The penumbra of a
large field constrains the *sum* of focal-spot blur and lateral kernel width,
not how the kernel's energy is split between a sharp core and wider
components, and that split is what a field smaller than the lateral electron
range (about 1.3 cm radius at 6 MV, IAEA TRS-483) sees.  Two fits that both
pass every scan criterion of the issue differ by about 7 % at 1 x 1 cm.  A
machine's small-field output factors therefore belong in its commissioning, as
in any planning system's beam-data set.

Reference values (cited; the same data as ``tests/test_dose_small_fields.py``):

* "SU-E-T-423: TrueBeam Small Field Dosimetry Using Commercial Plastic
  Scintillation and Other Stereotactic Detectors", Med Phys (AAPM abstract),
  doi:10.1118/1.4888756: Exradin W1, TrueBeam STx 6 MV, HD-MLC square fields,
  SAD set-up, 10 cm depth: 1.0 cm 0.716, 1.5 cm 0.779, 2.0 cm 0.804.
* Followill et al., J Appl Clin Med Phys 13(5):282 (2012),
  doi:10.1120/jacmp.v13i5.3962, Table 2, RPC Elekta 6 MV: 3 x 3 cm 0.842.

The fit here (three kernel components, scans and output factors only) uses the
1.5 and 2 cm W1 values; the 1 cm value is held out and predicted, and 3 x 3 cm
comes from a different data set.  This tests the method.  Such a three-component
fit misses the lung-slab Monte Carlo inside the lung of a 2 x 2 cm field by 22 %,
which is why the shipped small-field model ``generic-6MV-sf`` has four components
and is commissioned with the slab as well (``tools/commission_generic_6mv.py``,
``machines/README.md``).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sbrtplan.dose_engine import MeasuredOutputFactor, commission, output_factor, read_output_factors
from sbrtplan.errors import InputError

from conftest import require_shared

W1_HELD_OUT_1CM = 0.716
W1_FITTED = {15.0: 0.779, 20.0: 0.804}
RPC_ELEKTA_3CM = 0.842


@pytest.fixture(scope="module")
def mcc_files():
    files = sorted(str(p) for p in require_shared("beam").glob("*.mcc"))
    if not files:
        pytest.skip("no .mcc scans in ../shared/data/beam")
    return files


@pytest.fixture(scope="module")
def fits(mcc_files):
    """(scans-only model and report, scans + W1 1.5/2 cm model and report)."""
    ofs = [MeasuredOutputFactor(f, v, 100.0, 900.0, 100.0, "W1 doi:10.1118/1.4888756") for f, v in W1_FITTED.items()]
    return commission(mcc_files, name="scans-only"), commission(mcc_files, name="with-ofs", output_factors=ofs)


def test_water_scans_alone_do_not_determine_the_1cm_output_factor(fits):
    """Both fits pass every water-scan criterion, yet their 1 x 1 cm output factors differ by > 5 %,
    while at 3 x 3 cm they agree within 1 %."""
    (m0, r0), (m1, r1) = fits
    assert r0.passed and r1.passed
    of0, of1 = (output_factor(m, 10.0, 100.0, 900.0) for m in (m0, m1))
    assert of1 / of0 - 1.0 > 0.05, (of0, of1)
    assert output_factor(m1, 30.0, 100.0, 900.0) == pytest.approx(output_factor(m0, 30.0, 100.0, 900.0), rel=0.01)


def test_small_field_commissioning_predicts_the_held_out_1cm_field(fits):
    """Commissioned on the 1.5 and 2 cm values: those within 1 %, the held-out 1 cm value within 3 %
    of the W1 measurement, 3 x 3 cm within 3 % of the RPC Elekta mean; the report lists both fitted
    output factors with the 3 % small-field limit."""
    _, (m, rep) = fits
    for f, v in W1_FITTED.items():
        assert output_factor(m, f, 100.0, 900.0) == pytest.approx(v, rel=0.01)
    assert output_factor(m, 10.0, 100.0, 900.0) == pytest.approx(W1_HELD_OUT_1CM, rel=0.03)
    assert output_factor(m, 30.0, 100.0, 900.0) == pytest.approx(RPC_ELEKTA_3CM, rel=0.03)
    small = [r for r in rep.output_ratios if r["limit_percent"] == 3.0]
    assert len(small) == 2 and all(r["passed"] for r in small)
    assert [of["field_mm"] for of in m.provenance["output_factors"]] == [15.0, 20.0]


def test_read_output_factors_csv_and_yaml(tmp_path):
    csv = tmp_path / "of.csv"
    csv.write_text("# W1, TrueBeam\nfield_mm,output_factor,depth_mm\n10,0.716,100\n20, 0.804 ,50\n")
    a, b = read_output_factors(csv)
    assert (a.field_mm, a.value, a.depth_mm, a.ssd_mm, a.reference_field_mm) == (10.0, 0.716, 100.0, 900.0, 100.0)
    assert (b.value, b.depth_mm) == (0.804, 50.0) and "row 3" in b.source
    yml = tmp_path / "of.yaml"
    yml.write_text("source: W1\nssd_mm: 1000\noutput_factors:\n  - {field_mm: 15, output_factor: 0.779}\n")
    (c,) = read_output_factors(yml)
    assert (c.field_mm, c.value, c.ssd_mm, c.depth_mm) == (15.0, 0.779, 1000.0, 100.0)
    assert c.source == "W1 row 1"


@pytest.mark.parametrize("text, expected", [
    ("field_mm,output_factor\n10,abc\n", "row 2: output_factor must be a number"),
    ("field_mm,value\n10,0.7\n", "must name the columns field_mm and output_factor"),
    ("field_mm,output_factor\n10,71.6\n", "is not a ratio"),
    ("field_mm,output_factor\n1,0.5\n", "outside 5-400 mm"),
    ("field_mm,output_factor\n", "no output factors"),
])
def test_read_output_factors_names_file_and_row(tmp_path, text, expected):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        read_output_factors(p)
    assert str(p) in str(exc.value) and expected in str(exc.value)


def test_commission_command_writes_a_loadable_model(mcc_files, tmp_path):
    """``sbrtplan commission`` prints the agreement, the model's output factors, writes the model
    (loadable by name-or-path), exits 0 on a passing fit and 2 on a bad output name."""
    from sbrtplan.dose_engine import load_beam_model

    of = tmp_path / "of.csv"
    of.write_text("field_mm,output_factor\n15,0.779\n20,0.804\n")
    out = tmp_path / "m.yaml"
    run = subprocess.run([sys.executable, "-m", "sbrtplan", "commission", *mcc_files, "--output-factors", str(of),
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "overall: PASS" in run.stdout and "1.5x1.5 / 10x10" in run.stdout and "1 cm 0." in run.stdout
    m = load_beam_model(out)
    assert output_factor(m, 20.0, 100.0, 900.0) == pytest.approx(0.804, rel=0.01)
    bad = subprocess.run([sys.executable, "-m", "sbrtplan", "commission", *mcc_files, "--out",
                          str(tmp_path / "m.txt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "m.txt" in bad.stderr and not (tmp_path / "m.txt").exists()


def test_four_components_field_offsets_and_an_extra_constraint(mcc_files):
    """The options the shipped model's commissioning uses: four kernel components started from the
    shipped model, fitted field-edge shifts (bounded by 1 mm, the TG-142 jaw tolerance) and a caller's
    constraint -- here one that holds the cross-plane focal-spot width under 1.5 mm at the isocentre
    (generic-6MV-sf's is 2.05 mm); the fit obeys it and still passes every scan criterion."""
    from sbrtplan.dose_engine import load_beam_model

    def narrow_spot(model):
        return np.array([20.0 * max(model.gaussian.source_sigma_x_mm - 1.5, 0.0)])
    narrow_spot.label = "source sigma x <= 1.5 mm"

    shipped = load_beam_model("generic-6MV-sf")
    m, rep = commission(mcc_files, initial=shipped, n_components=4, fit_field_offsets=True,
                        constraints=[narrow_spot], max_evaluations=60)
    assert len(m.gaussian.components) == 4
    assert m.gaussian.source_sigma_x_mm <= 1.55
    offsets = m.provenance["field_edge_offsets_mm"]
    assert set(offsets) == {"5x5", "10x10"}
    assert all(abs(v) <= 1.0 for pair in offsets.values() for v in pair)
    assert m.provenance["constraints"] == ["source sigma x <= 1.5 mm"]
    assert rep.passed
    with pytest.raises(InputError, match="n_components"):
        commission(mcc_files, n_components=5)

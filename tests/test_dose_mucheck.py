"""Independent MU check (Clarkson sector integration on equivalent-path depth).

The Clarkson method shares only the beam data with the pencil-beam engine, so
its agreement with (a) the model's closed-form water doses and (b) the full
engine on a voxelised water phantom checks the engine's geometry, inverse
square, aperture handling and calibration by a second route.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel, Technique
from sbrtplan.case import Grid
from sbrtplan.dose_engine.clarkson import equivalent_path_mm
from sbrtplan.dose_engine.clarkson_tables import clarkson_tables
from sbrtplan.dose_engine.model import load_beam_model
from sbrtplan.dose_engine.mucheck import MUCheckReport, engine_point_dose, independent_point_dose, mu_check
from sbrtplan.dose_engine.pencil import pack_gaussian, water_points
from sbrtplan.dose_engine.water import central_axis_gy_per_mu
from sbrtplan.errors import InputError

from conftest import mc_slab_lh

MLC = MLCModel.millennium120()
SURFACE_Y = -150.0     # anterior water surface; gantry 0 (HFS) beams travel along +y


@pytest.fixture(scope="module")
def water_column():
    """Water 300 mm deep along +y from y = -150 mm; 2 mm voxels.  The Clarkson
    method only traces the central ray (lateral scatter comes from its
    tables), so a narrow column is enough."""
    g = Grid((11, 150, 11), (2.0, 2.0, 2.0), (-10.0, -149.0, -10.0))
    return g, np.ones(g.shape, dtype=np.float32)


def _beam(aperture: Aperture, iso_y: float, mu: float = 100.0, gantry: float = 0.0, name: str = "B1") -> Beam:
    return Beam(name, [ControlPoint(gantry, aperture, 1.0)], mu=mu, mlc=MLC, isocenter_mm=(0.0, iso_y, 0.0))


def test_equivalent_path_water_and_slab():
    """Radiological depth is the geometric depth in water and scales with density in a slab."""
    g = Grid((5, 100, 5), (2.0, 2.0, 2.0), (-4.0, -99.0, -4.0))   # y faces from -100 to +100 mm
    rho = np.ones(g.shape, dtype=np.float32)
    src = (0.0, -1000.0, 0.0)
    # 0.1 mm: the sampling step is a quarter of a millimetre at most
    assert equivalent_path_mm(rho, g, src, (0.0, 0.0, 0.0)) == pytest.approx(100.0, abs=0.1)
    rho[:, 25:75, :] = 0.25                                     # y in [-50, 50): 100 mm of lung-like water
    assert equivalent_path_mm(rho, g, src, (0.0, 0.0, 0.0)) == pytest.approx(50.0 + 0.25 * 50.0, abs=0.1)
    assert equivalent_path_mm(rho, g, src, (0.0, 80.0, 0.0)) == pytest.approx(50 + 25 + 30, abs=0.1)
    # an oblique ray (0.3 rad off the y axis) on a grid wide enough to enter through the y face
    gw = Grid((3, 100, 100), (2.0, 2.0, 2.0), (-99.0, -99.0, -2.0))
    src2 = (1000.0 * np.sin(0.3), -1000.0 * np.cos(0.3), 0.0)
    path = equivalent_path_mm(np.ones(gw.shape, dtype=np.float32), gw, src2, (0.0, 0.0, 0.0))
    assert path == pytest.approx(100.0 / np.cos(0.3), abs=0.1)


@pytest.mark.parametrize("field_mm", [30.0, 50.0, 100.0])
@pytest.mark.parametrize("ssd_mm", [900.0, 1000.0])
def test_open_square_matches_closed_form_water(model, water_column, field_mm, ssd_mm):
    """Open squares at 100 mm depth: Clarkson = the model's closed-form water dose.

    SSD 900 puts the point at the isocentre (the tables' own geometry); SSD
    1000 puts it 100 mm beyond (inverse square, field divergence and the
    in-air factor's re-evaluation are exercised).  Tolerance 1 %: the sector
    walk (360 sectors, 0.1-1 mm rings) and the square-to-circle inversion are
    accurate to ~0.1 %; the rest is margin for table interpolation.
    """
    g, rho = water_column
    iso_y = SURFACE_Y + (1000.0 - ssd_mm)
    ap = Aperture.rectangle(MLC, (-field_mm / 2, field_mm / 2), (-field_mm / 2, field_mm / 2))
    dose = independent_point_dose(_beam(ap, iso_y, mu=100.0), rho, g, (0.0, SURFACE_Y + 100.0, 0.0), model=model)
    ref = 100.0 * central_axis_gy_per_mu(model, field_mm, ssd_mm, [100.0])[0]
    assert dose == pytest.approx(ref, rel=0.01)


def test_asymmetric_offaxis_rectangle_matches_closed_form(model, water_column):
    """An off-centre rectangle, point on the central axis inside the field: Clarkson
    integrates the sectors unequally; the closed form integrates error functions.
    1 %: as the open squares (same discretisation)."""
    g, rho = water_column
    x1, x2, y1, y2 = -20.0, 45.0, -35.0, 15.0
    ap = Aperture.rectangle(MLC, (x1, x2), (y1, y2))
    iso_y = SURFACE_Y + 100.0
    dose = independent_point_dose(_beam(ap, iso_y, mu=100.0), rho, g, (0.0, iso_y, 0.0), model=model)
    out = np.empty(1)
    water_points(pack_gaussian(model), x1, x2, y1, y2, 900.0, np.array([100.0]), np.zeros(1), np.zeros(1), out)
    assert dose == pytest.approx(100.0 * out[0], rel=0.01)


def test_blocked_point_gets_transmission_dose(model, water_column):
    """A point under closed leaves far from any opening receives about the MLC
    transmission times the open dose of the same (jaw) field; with the jaws also
    shut it gets far less.  Brackets: transmission 1.5 % of the fluence, plus
    phantom scatter from the open part 40 mm away (< 3 % of the open dose)."""
    g, rho = water_column
    iso_y = SURFACE_Y + 100.0
    open_ap = Aperture.rectangle(MLC, (-50.0, 50.0), (-50.0, 50.0))
    shut = open_ap.copy()
    pairs = (MLC.leaf_centers_mm > -50) & (MLC.leaf_centers_mm < 50)
    shut.leaf_x1_mm[pairs] = 40.0                         # open strip 40..50 mm only
    shut.leaf_x2_mm[pairs] = 50.0
    d_open = independent_point_dose(_beam(open_ap, iso_y), rho, g, (0.0, iso_y, 0.0), model=model)
    d_shut = independent_point_dose(_beam(shut, iso_y), rho, g, (0.0, iso_y, 0.0), model=model)
    assert 0.01 * d_open < d_shut < 0.05 * d_open


def test_dose_scales_with_mu_and_arcs_sum(model, water_column):
    """Dose is linear in MU, and a beam split into control points at the same
    gantry and aperture gives the static beam's dose (to round-off)."""
    g, rho = water_column
    iso_y = SURFACE_Y + 100.0
    ap = Aperture.rectangle(MLC, (-25.0, 25.0), (-25.0, 25.0))
    d100 = independent_point_dose(_beam(ap, iso_y, mu=100.0), rho, g, (0, iso_y, 0), model=model)
    d250 = independent_point_dose(_beam(ap, iso_y, mu=250.0), rho, g, (0, iso_y, 0), model=model)
    assert d250 == pytest.approx(2.5 * d100, rel=1e-9)
    cps = [ControlPoint(0.0, ap, 0.0), ControlPoint(0.0, ap.copy(), 0.4), ControlPoint(0.0, ap.copy(), 1.0)]
    multi = Beam("S&S", cps, mu=100.0, mlc=MLC, isocenter_mm=(0, iso_y, 0), technique=Technique.STEP_AND_SHOOT)
    assert independent_point_dose(multi, rho, g, (0, iso_y, 0), model=model) == pytest.approx(d100, rel=1e-9)


def test_mu_check_flags_beams_outside_tolerance(model, water_column):
    """The check passes a beam whose main dose is 1 % off and flags one 5 % off
    (the standards' +-3 % rule)."""
    g, rho = water_column
    iso_y = SURFACE_Y + 100.0
    b1 = _beam(Aperture.rectangle(MLC, (-30.0, 30.0), (-30.0, 30.0)), iso_y, mu=200.0, name="A")
    b2 = _beam(Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0)), iso_y, mu=150.0, name="B")
    bs = BeamSet([b1, b2], n_fractions=5, prescription_gy=40.0)
    ind = [independent_point_dose(b, rho, g, (0, iso_y, 0), model=model) for b in bs.beams]
    rep = mu_check(bs, rho, g, [ind[0] * 1.01, ind[1] * 0.95], model=model)
    assert isinstance(rep, MUCheckReport)
    assert [r.passed for r in rep.rows] == [True, False]
    assert rep.rows[1].diff_pct == pytest.approx(100 * (1 / 0.95 - 1), rel=1e-6)
    assert not rep.passed
    assert "FAIL" in rep.to_text()
    # a callable main engine (here: the closed-form water dose) passes both beams
    def main(beam, point):
        f = beam.control_points[0].aperture.jaw_x_mm[1] * 2
        return beam.mu * central_axis_gy_per_mu(model, f, 900.0, [100.0])[0]
    rep2 = mu_check(bs, rho, g, main, model=model)
    assert rep2.passed and abs(rep2.total_diff_pct) < 1.0


def test_bad_input_errors(model, water_column):
    g, rho = water_column
    b = _beam(Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0)), SURFACE_Y + 100.0)
    with pytest.raises(InputError, match="outside the density grid"):
        independent_point_dose(b, rho, g, (0.0, 500.0, 0.0), model=model)
    with pytest.raises(InputError, match="density shape"):
        independent_point_dose(b, rho[:-1], g, (0.0, 0.0, 0.0), model=model)
    with pytest.raises(InputError, match="main-engine doses"):
        mu_check(BeamSet([b], 1, 10.0), rho, g, [1.0, 2.0], model=model)


def test_matrad_model_is_refused(shared_data):
    m = load_beam_model(shared_data / "matrad" / "photons_Generic.mat")
    with pytest.raises(InputError, match="gaussian_pencil_beam"):
        clarkson_tables(m)


# ------------------------------------------------------------------------------------------------
# Against the pencil-beam engine on a voxelised water phantom
@pytest.fixture(scope="module")
def water_tank():
    """300 x 300 mm wide, 300 mm deep water (surface at y = -150 mm): wide enough
    for full lateral scatter of a 10 x 10 cm field.  3 mm lateral voxels with a
    voxel centre on the beam axis, 2 mm along the depth."""
    g = Grid((101, 150, 101), (3.0, 2.0, 3.0), (-150.0, -149.0, -150.0))
    return g, np.ones(g.shape, dtype=np.float32)


@pytest.mark.parametrize("field_mm", [30.0, 50.0, 100.0])
@pytest.mark.parametrize("ssd_mm", [900.0, 1000.0])
def test_open_fields_agree_with_engine(model, water_tank, field_mm, ssd_mm):
    """Open 10x10, 5x5, 3x3 cm fields, point at 100 mm depth, SSD 900 (SAD set-up,
    point at the isocentre) and SSD 1000: independent and engine within 2 % (the
    issue's figure; the two differ in ray tracing, square-to-circle inversion,
    sector discretisation and trilinear dose lookup, each ~0.1-0.5 %)."""
    g, rho = water_tank
    iso_y = SURFACE_Y + (1000.0 - ssd_mm)
    ap = Aperture.rectangle(MLC, (-field_mm / 2, field_mm / 2), (-field_mm / 2, field_mm / 2))
    b = _beam(ap, iso_y, mu=100.0)
    pt = (0.0, SURFACE_Y + 100.0, 0.0)
    ind = independent_point_dose(b, rho, g, pt, model=model)
    eng = engine_point_dose(b, rho, g, pt, model=model)
    assert ind == pytest.approx(eng, rel=0.02)


def _shaped_aperture() -> Aperture:
    """An irregular MLC field inside 8 x 8 cm jaws: a 6 cm 'circle' of leaf
    tips with a 2 cm notch cut into one side (point stays in the open part)."""
    c = MLC.leaf_centers_mm
    half = np.sqrt(np.clip(30.0 ** 2 - c ** 2, 0.0, None))
    x1, x2 = -half, half.copy()
    notch = (c > 5.0) & (c < 25.0)
    x2[notch] = np.minimum(x2[notch], 5.0)
    closed = half == 0
    x1[closed], x2[closed] = -0.25, 0.25
    return Aperture(x1, x2, (-40.0, 40.0), (-40.0, 40.0))


def test_shaped_aperture_agrees_with_engine(model, water_tank):
    """MLC-shaped field, gantry 0 and an oblique gantry of 30 deg with collimator
    15 deg: within 3 % (the issue's figure for shaped apertures: leaf-edge
    discretisation by sectors and the in-air factor's sector average add to the
    open-field differences)."""
    g, rho = water_tank
    ap = _shaped_aperture()
    iso = (0.0, SURFACE_Y + 100.0, 0.0)
    for gantry, coll in ((0.0, 0.0), (30.0, 15.0)):
        b = Beam("shaped", [ControlPoint(gantry, ap, 1.0)], mu=100.0, mlc=MLC, isocenter_mm=iso,
                 collimator_deg=coll)
        ind = independent_point_dose(b, rho, g, iso, model=model)
        eng = engine_point_dose(b, rho, g, iso, model=model)
        assert ind == pytest.approx(eng, rel=0.03), (gantry, coll)


@pytest.mark.parametrize("slit, jaws", [
    ((5.0, 100.0), (100.0, 100.0)),     # leaves 5 mm apart, 10 cm long: narrow along leaf travel
    ((10.0, 100.0), (100.0, 100.0)),
    ((100.0, 10.0), (100.0, 10.0)),     # Y jaws 1 cm apart: narrow across leaf travel
])
def test_narrow_slits_agree_with_engine(model, water_tank, slit, jaws):
    """Static slits narrower than the lateral electron range, point on the axis at 100 mm depth (SAD
    set-up): within 1 %.  The beam data's focal-spot blur is elliptical (the commissioned widths are
    about 2.0 mm along leaf travel and 0.8 mm across, the first holding the rounded-leaf-end
    penumbra of the scans); a circular-field check built on one mean width reads the 5 mm slit along
    leaf travel 8.7 % high, the 1 cm one 1.6 % high and the 1 cm jaw slit across 2.6 % low -- the
    "more on smaller segments" disagreement of step-and-shoot plans (issue 17).  The check now blurs
    the fluence it integrates by the part of the focal spot its circles leave out.  1 %: the figure
    of the open fields without the voxel-lookup share (the two agree to 0.01 % here)."""
    g, rho = water_tank
    n = MLC.n_pairs
    ap = Aperture(np.full(n, -slit[0] / 2), np.full(n, slit[0] / 2), (-jaws[0] / 2, jaws[0] / 2),
                  (-jaws[1] / 2, jaws[1] / 2))
    iso = (0.0, SURFACE_Y + 100.0, 0.0)
    b = _beam(ap, iso[1])
    assert independent_point_dose(b, rho, g, iso, model=model) == pytest.approx(
        engine_point_dose(b, rho, g, iso, model=model), rel=0.01)


def test_tongue_and_groove_segments_agree_with_engine(model, water_tank):
    """Two step-and-shoot segments of 50 MU, the first opening the even leaf pairs over 40 mm, the
    second the odd ones (40 x 40 mm jaws): every leaf boundary is a tongue-and-groove strip that
    neither segment opens.  With the machine file's strip width the engine loses several per cent at
    the isocentre (asserted > 3 %, so a check without the strips fails here); the check integrates
    the same strips (the fluence map's rows) and must agree within 1 % (as the slits).  This was the
    whole +5.3 % disagreement of the spine step-and-shoot IMRT plan of issue 17 (-0.8 % with the
    strips; +0.04 % with the strips removed from the engine instead)."""
    from dataclasses import replace

    g, rho = water_tank
    n = MLC.n_pairs
    even = np.arange(n) % 2 == 0
    jaws = ((-20.0, 20.0), (-20.0, 20.0))

    def segment(open_pairs):
        # closed pairs meet under the X jaw, away from the point (their gap and rounded ends leak)
        return Aperture(np.where(open_pairs, -20.0, 29.75), np.where(open_pairs, 20.0, 30.25), *jaws)

    cps = [ControlPoint(0.0, segment(even), 0.0), ControlPoint(0.0, segment(even), 0.5),
           ControlPoint(0.0, segment(~even), 0.5), ControlPoint(0.0, segment(~even), 1.0)]
    iso = (0.0, SURFACE_Y + 100.0, 0.0)
    b = Beam("tg", cps, mu=100.0, mlc=MLC, isocenter_mm=iso, technique=Technique.STEP_AND_SHOOT)
    pt = (0.0, SURFACE_Y + 101.0, 3.0)            # a voxel centre, inside a leaf pair
    eng = engine_point_dose(b, rho, g, pt, model=model)
    no_tg = replace(model, mlc_models={k: {**v, "tongue_groove_mm": 0.0} for k, v in model.mlc_models.items()})
    assert eng < 0.97 * engine_point_dose(b, rho, g, pt, model=no_tg)
    assert independent_point_dose(b, rho, g, pt, model=model) == pytest.approx(eng, rel=0.01)


def test_arc_agrees_with_engine(model, water_tank):
    """A 60 deg VMAT-like arc (two control points, 4 x 4 cm) around an isocentre
    60 mm deep: both sum the same delivery samples; the depth changes along the
    arc.  Within 3 %: the shaped-field figure (oblique incidence on a flat surface)."""
    g, rho = water_tank
    ap = Aperture.rectangle(MLC, (-20.0, 20.0), (-20.0, 20.0))
    iso = (0.0, SURFACE_Y + 60.0, 0.0)
    cps = [ControlPoint(330.0, ap, 0.0), ControlPoint(30.0, ap.copy(), 1.0)]
    arc = Beam("arc", cps, mu=300.0, mlc=MLC, isocenter_mm=iso, technique=Technique.VMAT, arc_direction="CW")
    ind = independent_point_dose(arc, rho, g, iso, model=model)
    eng = engine_point_dose(arc, rho, g, iso, model=model)
    assert ind == pytest.approx(eng, rel=0.03)


# ------------------------------------------------------------------------------------------------
# Command line
def test_cli_argument_errors(tmp_path, capsys):
    """Bad input gives one line naming the argument and exit status 2."""
    from sbrtplan.cli import main

    missing = str(tmp_path / "nope")
    rc = main(["mucheck", "--ct", missing, "--rtstruct", missing, "--rtplan", missing, "--point", "1,2"])
    assert rc == 2 and "--point must be three numbers" in capsys.readouterr().err
    rc = main(["mucheck", "--ct", missing, "--rtstruct", missing, "--rtplan", missing])
    assert rc == 2 and f"--ct {missing}: no such file" in capsys.readouterr().err
    rc = main(["mucheck", "--ct", missing, "--rtstruct", missing, "--rtplan", missing, "--tolerance", "-1"])
    assert rc == 2 and "--tolerance" in capsys.readouterr().err


def test_cli_end_to_end_on_written_dicom(tmp_path, capsys):
    """A three-beam plan on the slab phantom written as DICOM: isocentre in the water
    entrance slab -> all beams pass (exit 0; water, as the engine tests); a point
    7 cm deep, 2 cm inside the lung -> still within 3 % (exit 0) now that the check
    scales its circular fields for density (a depth-only Clarkson check was 6 %
    high there and failed), and the rows say the point is in low density."""
    import json

    from sbrtplan import io
    from sbrtplan.cli import main
    from sbrtplan.phantoms import make_phantom

    needed = ("write_ct_series", "write_rtstruct", "write_rtplan", "read_rtplan")
    if not all(hasattr(io, n) for n in needed):
        pytest.skip("sbrtplan.io DICOM readers/writers not all available in this checkout")
    case = make_phantom("lung_slab", 5.0)
    io.write_ct_series(case, tmp_path / "ct")
    io.write_rtstruct(case, tmp_path / "rs.dcm")
    iso = (0.0, case.metadata["surface_y_mm"] + 30.0, 0.0)
    ap = Aperture.rectangle(MLC, (-30.0, 30.0), (-30.0, 30.0))
    beams = [Beam(f"G{g:.0f}", [ControlPoint(g, ap.copy(), 1.0)], mu=150.0, mlc=MLC, isocenter_mm=iso)
             for g in (0.0, 20.0, 340.0)]
    io.write_rtplan(BeamSet(beams, 5, 40.0), tmp_path / "rp.dcm", case=case)
    args = ["mucheck", "--ct", str(tmp_path / "ct"), "--rtstruct", str(tmp_path / "rs.dcm"),
            "--rtplan", str(tmp_path / "rp.dcm")]
    rc = main(args + ["--out", str(tmp_path / "mu.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads((tmp_path / "mu.json").read_text())
    assert doc["passed"] and len(doc["beams"]) == 3
    assert all(abs(b["diff_pct"]) < 1.0 for b in doc["beams"])     # water: as the engine tests
    rc = main(args + ["--point", f"0,{case.metadata['surface_y_mm'] + 70.0},0"])
    out = capsys.readouterr().out
    assert rc == 0 and "FAIL" not in out, out
    assert "low density (0.25)" in out


def test_mu_check_notes_low_density_and_blocked_points(model, water_column):
    """Rows say why a difference may not be meaningful: a point in lung-like density
    (equivalent-path Clarkson has no lateral scaling) or a point under the leaves."""
    g, rho = water_column
    lung = rho.copy()
    lung[:, 25:75, :] = 0.25                       # y from -100 to 0 mm
    iso = (0.0, -50.0, 0.0)
    open_b = _beam(Aperture.rectangle(MLC, (-30.0, 30.0), (-30.0, 30.0)), iso[1], name="open")
    off_b = _beam(Aperture.rectangle(MLC, (10.0, 40.0), (-30.0, 30.0)), iso[1], name="offaxis")
    bs = BeamSet([open_b, off_b], n_fractions=1, prescription_gy=10.0)
    rep = mu_check(bs, lung, g, [1.0, 1.0], point_mm=iso, model=model)
    assert "low density (0.25)" in rep.rows[0].note
    assert "under leaves or jaws for 100 %" in rep.rows[1].note
    rep_w = mu_check(bs, rho, g, [1.0, 1.0], point_mm=iso, model=model)
    assert rep_w.rows[0].note == ""


def test_mu_check_default_main_is_the_engine(model, water_tank):
    """``main=None`` (as the planning workflow calls it) checks against the engine
    itself: an open 5 x 5 cm beam in water passes with < 1 % difference, and
    ``as_dict`` carries the verdict for metrics.json."""
    g, rho = water_tank
    iso_y = SURFACE_Y + 100.0
    b = _beam(Aperture.rectangle(MLC, (-25.0, 25.0), (-25.0, 25.0)), iso_y, mu=120.0)
    rep = mu_check(BeamSet([b], 3, 30.0), rho, g, None, model=model)
    d = rep.as_dict()
    assert d["passed"] and abs(d["beams"][0]["diff_pct"]) < 1.0
    assert d["beams"][0]["main_gy"] == pytest.approx(engine_point_dose(b, rho, g, (0, iso_y, 0), model=model))


# ------------------------------------------------------------------------------------------------
# Lung: the density-scaled check against Monte Carlo (water / lung 0.25 / water slabs)
LUNG_INSIDE_MM = (60, 80, 100, 120, 140)
LUNG_BEYOND_MM = (170, 190, 210, 230, 250)
_MC_WINDOW_MM = 5.0


def _mc_lh(ref, field_cm: int, depth_mm: float) -> float:
    """Monte Carlo heterogeneity factor L/H at a depth (the reference README's rule, conftest)."""
    return mc_slab_lh(ref, field_cm, depth_mm, _MC_WINDOW_MM)[0]


@pytest.fixture(scope="module")
def lung_slab():
    from sbrtplan.phantoms import make_phantom

    case = make_phantom("lung_slab", 2.0)
    return case, np.ones_like(case.density)


def _check_lh(model, lung_slab, field_cm: int, depth_mm: float, correction) -> float:
    """The check's L/H at a depth, averaged over the MC's bins in the same +-5 mm window
    (bin centres at odd millimetres)."""
    case, water = lung_slab
    s = case.metadata["surface_y_mm"]
    half = 5.0 * field_cm
    b = _beam(Aperture.rectangle(MLC, (-half, half), (-half, half)), case.metadata["ssd_sad_isocenter_mm"][1])
    zs = np.arange(depth_mm - 5.0, depth_mm + 5.1, 2.0)
    lung = sum(independent_point_dose(b, case.density, case.grid, (0.0, s + z, 0.0), model=model,
                                      correction=correction) for z in zs)
    wat = sum(independent_point_dose(b, water, case.grid, (0.0, s + z, 0.0), model=model,
                                     correction=correction) for z in zs)
    return lung / wat


@pytest.fixture
def mc_ref(shared_data):
    p = shared_data / "reference" / "mc_lung_slab"
    if not p.is_dir():
        pytest.skip(f"Monte Carlo lung-slab reference not available: {p}")
    return p


@pytest.mark.parametrize("field_cm", [2, 5, 10])
def test_lung_check_agrees_with_monte_carlo(model, lung_slab, mc_ref, field_cm):
    """Density-scaled Clarkson in water / lung (0.25) / water, SSD 100 cm, on the axis:
    the heterogeneity factor L/H within 5 % of Monte Carlo inside the lung (6-14 cm)
    and 3 % beyond it (17-25 cm).

    Why these tolerances: they are the issue's figures for the engine's own lateral
    correction against the same reference; the reference itself is good to 2-4 % in
    the distal lung (its two codes differ by up to 3.8 % for 10 x 10 cm there) and
    to ~1 % elsewhere; and TG-114 accepts wider action levels for independent checks
    in heterogeneous anatomy than the 3 % used in water.  Measured: inside within
    3 % (2 x 2), 3.5 % (5 x 5), 4.6 % (10 x 10, distal lung); beyond within 2.7 %."""
    from sbrtplan.dose_engine import Correction

    dev_in = [_check_lh(model, lung_slab, field_cm, d, Correction.LATERAL) / _mc_lh(mc_ref, field_cm, d) - 1
              for d in LUNG_INSIDE_MM]
    dev_out = [_check_lh(model, lung_slab, field_cm, d, Correction.LATERAL) / _mc_lh(mc_ref, field_cm, d) - 1
               for d in LUNG_BEYOND_MM]
    assert np.max(np.abs(dev_in)) <= 0.05, dict(zip(LUNG_INSIDE_MM, np.round(100 * np.array(dev_in), 2)))
    assert np.max(np.abs(dev_out)) <= 0.03, dict(zip(LUNG_BEYOND_MM, np.round(100 * np.array(dev_out), 2)))


def test_depth_only_check_misses_small_field_lung_loss(model, lung_slab, mc_ref):
    """Why the density scaling is needed: the classic equivalent-path Clarkson check
    puts a 2 x 2 cm field 5 cm into lung 20-35 % above Monte Carlo (less attenuation,
    no lateral electron loss; the reference README: +33 % at 10 cm), while the
    density-scaled check is within 5 % and at least five times closer."""
    from sbrtplan.dose_engine import Correction

    for d in (80, 100, 120):
        mc = _mc_lh(mc_ref, 2, d)
        dev_depth = _check_lh(model, lung_slab, 2, d, Correction.DEPTH_ONLY) / mc - 1
        dev_lat = _check_lh(model, lung_slab, 2, d, Correction.LATERAL) / mc - 1
        assert dev_depth > 0.20, (d, dev_depth)
        assert abs(dev_lat) < 0.05 and abs(dev_lat) * 5 < dev_depth, (d, dev_lat, dev_depth)


@pytest.mark.parametrize("field_cm", [2, 10])
def test_lung_check_agrees_with_engine(model, lung_slab, field_cm):
    """Inside the lung (7 and 10 cm deep) the independent check and the engine (lateral
    correction) agree within 3 %, the usual MU-check rule: a correct plan in lung
    is no longer flagged.  Both read the same commissioned scaling lengths, but
    trace, integrate and interpolate independently (sector walk on circular-field
    tables versus error functions on the voxel grid)."""
    case, _ = lung_slab
    s = case.metadata["surface_y_mm"]
    half = 5.0 * field_cm
    b = _beam(Aperture.rectangle(MLC, (-half, half), (-half, half)), case.metadata["ssd_sad_isocenter_mm"][1])
    for d in (71.0, 101.0):                  # voxel centres (2 mm grid from the surface)
        pt = (0.0, s + d, 0.0)
        ind = independent_point_dose(b, case.density, case.grid, pt, model=model)
        eng = engine_point_dose(b, case.density, case.grid, pt, model=model)
        assert ind == pytest.approx(eng, rel=0.03), (field_cm, d, ind / eng - 1)


def test_path_mean_densities_slab():
    """Mean density over the last L mm of the ray inside the patient, for a point 60 mm
    into a lung slab that starts 50 mm below the surface: all lung for L = 10 mm, 20 mm
    of water and 60 of lung for L = 80 mm, the whole 110 mm inside for L = 500 mm
    (0.01: the 0.125 mm sampling against 1 mm voxels)."""
    from sbrtplan.dose_engine.clarkson import path_mean_densities

    g = Grid((3, 200, 3), (1.0, 1.0, 1.0), (-1.0, -99.5, -1.0))     # y faces -100 .. 100
    rho = np.ones(g.shape, dtype=np.float32)
    rho[:, 50:150, :] = 0.25                                         # lung from y = -50 to 50
    src = (0.0, -1100.0, 0.0)
    m = path_mean_densities(rho, g, src, (0.0, 10.0, 0.0), [10.0, 80.0, 500.0])
    assert m[0] == pytest.approx(0.25, abs=1e-3)
    assert m[1] == pytest.approx((20 * 1.0 + 60 * 0.25) / 80, abs=0.01)
    assert m[2] == pytest.approx((50 * 1.0 + 60 * 0.25) / 110, abs=0.01)   # whole path inside: 110 mm
    # a point less than 1 mm inside the patient reads as water (as the engine's ray tables)
    assert path_mean_densities(rho, g, src, (0.0, -99.8, 0.0), [10.0])[0] == 1.0


def test_low_dose_beam_is_judged_on_the_plan_dose(model, water_column):
    """A beam giving the point under 10 % of the plan's dose (a field whose leaves cover the point,
    as modulated fields often do) is judged on its share of the plan's dose error (TG-219): 5 % off
    on its own dose is 0.3 % of the plan's dose and passes; the same beam carrying the point's dose
    alone fails as before, and so does a low-dose beam whose error is 4 % of the plan's dose."""
    g, rho = water_column
    iso_y = SURFACE_Y + 100.0
    big = _beam(Aperture.rectangle(MLC, (-30.0, 30.0), (-30.0, 30.0)), iso_y, mu=300.0, name="open")
    off = _beam(Aperture.rectangle(MLC, (25.0, 45.0), (-20.0, 20.0)), iso_y, mu=100.0, name="off-axis")
    bs = BeamSet([big, off], n_fractions=5, prescription_gy=40.0)
    ind = [independent_point_dose(b, rho, g, (0, iso_y, 0), model=model) for b in bs.beams]
    assert ind[1] < 0.1 * (ind[0] + ind[1])          # the point sits outside the second field
    rep = mu_check(bs, rho, g, [ind[0], ind[1] * 0.95], model=model)
    assert rep.rows[1].diff_pct == pytest.approx(100 * (1 / 0.95 - 1), rel=1e-6)
    assert rep.passed and "TG-219" in rep.rows[1].note
    alone = mu_check(BeamSet([off], 5, 40.0), rho, g, [ind[1] * 0.95], model=model)
    assert not alone.passed
    share = ind[1] / (ind[0] + ind[1])
    bad = mu_check(bs, rho, g, [ind[0], ind[1] - 0.04 * (ind[0] + ind[1])], model=model)
    assert share < 0.1 and not bad.rows[1].passed


def test_plan_qa_checks_the_plans_own_beam_model(water_tank):
    """The workflow's QA (``workflow.pipeline.plan_qa``) computes the main dose with the model the
    plan was made with: with the scans-only model ``generic-6MV`` its main dose is that model's
    engine dose, which differs from the default model's for a 1 x 1 cm field (the two models' 1 cm outputs
    differ by several per cent: README, tests/test_dose_commission.py)."""
    from sbrtplan.beams import DeliveryLimits
    from sbrtplan.case import Case
    from sbrtplan.dose_engine import default_beam_model
    from sbrtplan.workflow.pipeline import plan_qa

    g, rho = water_tank
    iso_y = SURFACE_Y + 100.0
    b = _beam(Aperture.rectangle(MLC, (-5.0, 5.0), (-5.0, 5.0)), iso_y, mu=200.0)
    case = Case(name="water", grid=g, hu=np.zeros(g.shape, np.float32), density=rho)
    scans_only = load_beam_model("generic-6MV")
    qa = plan_qa(BeamSet([b], 3, 30.0), DeliveryLimits(), case, scans_only)
    main = qa["mu_check"]["beams"][0]["main_gy"]
    assert main == pytest.approx(engine_point_dose(b, rho, g, (0, iso_y, 0), model=scans_only), rel=1e-9)
    other = engine_point_dose(b, rho, g, (0, iso_y, 0), model=default_beam_model())
    assert abs(main / other - 1.0) > 0.03

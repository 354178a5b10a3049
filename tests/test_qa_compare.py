"""Measured versus calculated: 2D gamma against hand calculations, measurement readers, bad input, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sbrtplan.errors import InputError
from sbrtplan.qa import (DosePlane, GammaCriterion, Normalisation, Verdict, compare_measurement, detect_format,
                         plane_gamma, read_array_mcc, read_measured_plane, read_plane_csv, write_plane_csv)

U = np.arange(-60.0, 60.01, 2.0)
V = np.arange(-50.0, 50.01, 2.0)
MU = np.arange(-40.0, 40.01, 5.0)   # a 5 mm detector lattice (OCTAVIUS 1500 pitch)
MV = np.arange(-30.0, 30.01, 5.0)


def _checkerboard() -> np.ndarray:
    i, j = np.meshgrid(np.arange(MU.size), np.arange(MV.size))
    return (i + j) % 2 == 0


def _ramp(u, b_gy_per_mm=0.02, a=2.0):
    return a + b_gy_per_mm * u


def test_flat_plane_output_change_hand_calculation():
    """Flat 2 Gy plane, measurement 2.5 % higher: gamma = 2.5 / criterion everywhere (no gradient for the DTA
    to help): 1.25 for 2 % -> 0 % pass; 0.833 for 3 % -> 100 % pass; local and global agree on a flat plane."""
    calc = DosePlane(np.full((V.size, U.size), 2.0), U, V)
    meas = DosePlane(np.full((MV.size, MU.size), 2.05), MU, MV, mask=_checkerboard())
    for norm in Normalisation:
        g2 = plane_gamma(meas, calc, GammaCriterion(2.0, 2.0, norm))
        g3 = plane_gamma(meas, calc, GammaCriterion(3.0, 2.0, norm))
        assert g2.n_evaluated == int(_checkerboard().sum())
        # global normalisation is the measured maximum (2.05 Gy): 0.05 / (0.02 * 2.05) = 1.2195
        expect2 = 0.05 / (0.02 * 2.05)
        assert np.nanmax(np.abs(g2.gamma_map[_checkerboard()] - expect2)) < 1e-3
        assert g2.pass_rate_pct == 0.0 and g3.pass_rate_pct == 100.0


def test_ramp_shift_gamma_matches_point_to_line_distance():
    """Linear dose D = a + b u, measurement shifted by s: measured = D - b s.  Gamma of each point is the distance
    to the line in normalised space: |b s| / sqrt(dD^2 + (b DTA)^2) (hand calculation, Low et al. 1998)."""
    b, s = 0.02, 1.5                                   # Gy/mm, mm
    calc = DosePlane(_ramp(U)[None, :].repeat(V.size, 0), U, V)
    mgrid = _ramp(MU - s)[None, :].repeat(MV.size, 0)
    meas = DosePlane(mgrid, MU, MV)
    crit = GammaCriterion(2.0, 2.0, Normalisation.GLOBAL)
    g = plane_gamma(meas, calc, crit, normalisation_gy=2.0)
    expect = abs(b * s) / math.sqrt((0.02 * 2.0) ** 2 + (b * 2.0) ** 2)    # 0.530
    inner = np.abs(MU) <= 36.0                                            # search stays inside the plane
    # search lattice 0.2 mm and bilinear resampling of an exactly linear dose: within 0.01
    assert np.allclose(g.gamma_map[:, inner], expect, atol=0.01)
    # the measured pattern sits s mm toward +u: a manual shift of -s mm undoes it (gamma ~ 0), +s doubles it
    c = compare_measurement(calc, meas, shift_mm=(-s, 0.0))
    assert np.nanmax(c.gamma(c.decisive).gamma_map) < 0.02
    worse = compare_measurement(calc, meas, shift_mm=(s, 0.0))
    assert np.nanmin(worse.gamma(worse.decisive).gamma_map) > 0.5


def test_point_dose_and_verdicts():
    calc = DosePlane(np.full((V.size, U.size), 2.0), U, V)
    good = DosePlane(np.full((MV.size, MU.size), 2.01), MU, MV)
    c = compare_measurement(calc, good, calculated_point_gy=2.0, measured_point_gy=2.04)
    assert c.point.diff_pct == pytest.approx(2.0) and c.point.passed
    assert c.verdict is Verdict.PASS
    assert compare_measurement(calc, good, calculated_point_gy=2.0, measured_point_gy=2.07).verdict is Verdict.FAIL
    assert compare_measurement(calc, None, calculated_point_gy=2.0, measured_point_gy=2.0).verdict is Verdict.INCOMPLETE
    # 2.5 % too high: 2 %/2 mm fails everywhere -> FAIL although 3 %/2 mm passes
    hot = DosePlane(np.full((MV.size, MU.size), 2.05), MU, MV)
    c = compare_measurement(calc, hot, calculated_point_gy=2.0, measured_point_gy=2.0)
    assert c.gamma_verdict is Verdict.FAIL and c.verdict is Verdict.FAIL
    d = c.as_dict()
    assert d["gamma"]["3pct_2mm_global"]["pass_rate_pct"] == 100.0 and d["verdict"] == "FAIL"


def test_non_overlapping_measurement_is_a_one_line_error():
    calc = DosePlane(np.full((V.size, U.size), 2.0), U, V)
    far = DosePlane(np.full((MV.size, MU.size), 2.0), MU + 300.0, MV)
    with pytest.raises(InputError) as exc:
        compare_measurement(calc, far)
    assert "does not overlap" in str(exc.value) and "\n" not in str(exc.value)


def _write_mcc(path: Path, unit: str = "cGy", axis_dir: str = "GUN_TARGET") -> dict:
    """A synthetic OCTAVIUS-style export: one CROSSPLANE_PROFILE scan per row, checkerboard detectors."""
    truth = {}
    lines = ["BEGIN_SCAN_DATA", "FORMAT=CC-Export V1.9", "SCAN_DEVICE=OCTAVIUS_1500_XDR"]
    for n, inpl in enumerate(np.arange(-20.0, 20.01, 5.0), 1):
        lines += [f"\tBEGIN_SCAN  {n}", "\t\tSCAN_CURVETYPE=CROSSPLANE_PROFILE", f"\t\tSCAN_OFFAXIS_INPLANE={inpl:.2f}",
                  f"\t\tMEAS_UNIT={unit}", f"\t\tINPLANE_AXIS_DIR={axis_dir}", "\t\tBEGIN_DATA"]
        start = -20.0 if n % 2 else -15.0
        for x in np.arange(start, 20.01, 10.0):
            val_gy = 1.0 + 0.01 * x + 0.002 * inpl          # asymmetric: orientation errors show
            truth[(x, -inpl if axis_dir == "GUN_TARGET" else inpl)] = val_gy
            lines.append(f"\t\t\t{x:.2f}\t{val_gy * (100.0 if unit == 'cGy' else 1.0):.5f}")
        lines += ["\t\tEND_DATA", f"\tEND_SCAN  {n}"]
    lines.append("END_SCAN_DATA")
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return truth


@pytest.mark.parametrize("axis_dir", ["GUN_TARGET", "TARGET_GUN"])
def test_array_mcc_reader(tmp_path, axis_dir):
    f = tmp_path / "array.mcc"
    truth = _write_mcc(f, "cGy", axis_dir)
    assert detect_format(f).value == "mcc"
    p = read_array_mcc(f)
    assert p.n_points == len(truth) == 41           # 9 rows of 5 or 4 detectors (checkerboard)
    assert np.allclose(np.diff(p.u_mm), 5.0) and np.allclose(np.diff(p.v_mm), 5.0)
    u, v, d = p.points()
    for uu, vv, dd in zip(u, v, d):
        assert dd == pytest.approx(truth[(uu, vv)], abs=1e-6)   # cGy -> Gy, inplane sign per the axis direction


def test_unknown_format_and_unit(tmp_path):
    f = tmp_path / "meas.xyz"
    f.write_text("hello\n1 2 3\n")
    with pytest.raises(InputError) as exc:
        read_measured_plane(f)
    assert "unknown measurement format" in str(exc.value) and "\n" not in str(exc.value)
    g = tmp_path / "rel.mcc"
    _write_mcc(g, "A.U.")
    with pytest.raises(InputError, match="MEAS_UNIT"):
        read_array_mcc(g)


def test_csv_roundtrip_with_missing_points(tmp_path):
    mask = _checkerboard()
    p = DosePlane(_ramp(MU)[None, :].repeat(MV.size, 0), MU, MV, mask=mask)
    write_plane_csv(p, tmp_path / "m.csv")
    q = read_measured_plane(tmp_path / "m.csv")
    assert np.array_equal(q.mask, mask)
    assert np.allclose(q.dose_gy[mask], p.dose_gy[mask])


def test_cli_qa_plan_and_compare(tmp_path, capsys):
    """End to end on a coarse grid (criteria file allowing 5 mm, to stay quick): verification, then a
    'measurement' made from the calculated plane 1.5 % higher with the chamber 1 % lower."""
    import yaml

    from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
    from sbrtplan.cli import main
    from sbrtplan.io import write_rtplan
    from sbrtplan.phantoms import make_phantom
    from importlib import resources

    crit = yaml.safe_load((resources.files("sbrtplan") / "qa" / "data" / "qa_criteria.yaml").read_text())
    crit["calculation"]["max_grid_mm"] = 5.0
    cfile = tmp_path / "crit.yaml"
    cfile.write_text(yaml.safe_dump(crit))
    mlc = MLCModel.millennium120()
    beams = [Beam(f"f{g:g}", [ControlPoint(g, Aperture.rectangle(mlc, (-25.0, 25.0), (-25.0, 25.0)), 1.0)], 150.0, mlc,
                  (0.0, 30.0, 0.0)) for g in (0.0, 120.0, 240.0)]
    case = make_phantom("spine", 5.0)
    write_rtplan(BeamSet(beams, 3, 27.0), tmp_path / "plan.dcm", case=case)
    out = tmp_path / "qa"
    rc = main(["qa-plan", "--rtplan", str(tmp_path / "plan.dcm"), "--phantom", "qa_cylinder", "--grid-mm", "5",
               "--out", str(out), "--no-ct", "--criteria", str(cfile)])
    assert rc == 0
    calc = read_plane_csv(out / "calculated_plane.csv")
    meas = DosePlane(calc.dose_gy * 1.015, calc.u_mm, calc.v_mm, calc.orientation)
    write_plane_csv(meas, tmp_path / "meas.csv")
    import json
    ver = json.loads((out / "verification.json").read_text())
    chamber = ver["chamber"]["volume_averaged_dose_gy"]
    rc = main(["qa-compare", "--qa-dir", str(out), "--measured", str(tmp_path / "meas.csv"),
               "--measured-point-gy", f"{0.99 * chamber:.6f}", "--criteria", str(cfile)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())["qa"]["comparison"]
    assert m["point_dose"]["diff_pct"] == pytest.approx(-1.0, abs=0.01)
    # a uniform 1.5 % output change passes 2 %/2 mm global everywhere (1.5 % of the local dose <= 2 % of the max)
    assert m["gamma"]["2pct_2mm_global"]["pass_rate_pct"] == 100.0
    assert m["verdict"] == "PASS" and (out / "qa_report.html").stat().st_size > 10000
    # bad input: a plan without MU gives exit status 2 and one line
    beams0 = [Beam("f0", [ControlPoint(0.0, Aperture.rectangle(mlc, (-25.0, 25.0), (-25.0, 25.0)), 1.0)], 0.0, mlc,
                   (0.0, 30.0, 0.0))]
    write_rtplan(BeamSet(beams0, 3, 27.0), tmp_path / "nomu.dcm", case=case)
    capsys.readouterr()
    rc = main(["qa-plan", "--rtplan", str(tmp_path / "nomu.dcm"), "--out", str(tmp_path / "x"), "--no-ct"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "MU" in err[0]


def test_batch_pass_rate_summary(tmp_path):
    """Two plans, one measured 1 % high everywhere (passes), one whose RTPLAN is missing (an ERROR row, the batch
    goes on); the summary counts them."""
    import csv
    from dataclasses import replace

    from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
    from sbrtplan.io import write_rtplan
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.qa import load_criteria, read_qa_list, run_qa_batch, write_batch_summary

    mlc = MLCModel.millennium120()
    beams = [Beam("f0", [ControlPoint(0.0, Aperture.rectangle(mlc, (-30.0, 30.0), (-30.0, 30.0)), 1.0)], 200.0, mlc,
                  (0.0, 30.0, 0.0))]
    write_rtplan(BeamSet(beams, 1, 8.0), tmp_path / "p1.dcm", case=make_phantom("spine", 5.0))
    crit = replace(load_criteria(), max_grid_mm=5.0)
    phantom = make_phantom("qa_cylinder", 5.0)
    # first pass without a measurement, to make the 'measurement' from the calculated plane
    rows = run_qa_batch(read_qa_list(_qa_list(tmp_path, measured=False)), phantom, tmp_path / "a", criteria=crit)
    calc = read_plane_csv(tmp_path / "a" / "p1" / "calculated_plane.csv")
    write_plane_csv(DosePlane(calc.dose_gy * 1.01, calc.u_mm, calc.v_mm), tmp_path / "m1.csv")
    rows = run_qa_batch(read_qa_list(_qa_list(tmp_path, measured=True)), phantom, tmp_path / "b", criteria=crit)
    stats = write_batch_summary(rows, tmp_path / "b")
    assert [r["verdict"] for r in rows] == ["PASS", "ERROR"]
    assert rows[0]["point_diff_pct"] == pytest.approx(1.0, abs=0.01) and rows[0]["gamma_2pct_2mm_global"] == 100.0
    assert "RTPLAN" in rows[1]["error"]
    assert stats["n_plans"] == 2 and stats["by_verdict"]["PASS"] == 1 and stats["plans_passing_pct"] == 100.0
    with open(tmp_path / "b" / "qa_summary.csv") as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == ["p1", "p2"]


def _qa_list(tmp_path, measured: bool) -> Path:
    import json

    f = tmp_path / ("list_m.csv" if measured else "list.csv")
    if measured:
        ver = json.loads((tmp_path / "a" / "p1" / "verification.json").read_text())
        point = 1.01 * ver["chamber"]["volume_averaged_dose_gy"]
        f.write_text(f"name,rtplan,measured,measured_point_gy\np1,p1.dcm,m1.csv,{point:.6f}\np2,missing.dcm,,\n")
    else:
        f.write_text("name,rtplan\np1,p1.dcm\n")
    return f

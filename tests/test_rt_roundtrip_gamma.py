"""Issue 7 (a): an RTPLAN written by sbrtplan, read back and recomputed reproduces the plan dose
(gamma 1 %/1 mm >= 99 %, 10 % cut-off, global).

The plans are built from the planner's own building blocks on a small phantom (4 mm grid, 3 mm for VMAT): step-and-shoot
IMRT from sequenced fluence maps, and a short VMAT arc with target-conformal, modulated apertures and
varying MU per control point.  The plan dose is computed as the planner computes it
(``workflow.pipeline``: IMRT every body voxel with :func:`forward_dose`; VMAT :func:`final_dose`, which
computes the far region on a 2x lattice), the recompute as ``sbrtplan recompute`` does
(:func:`sbrtplan.cli.recompute.recompute_dose`: every body voxel, sub-fields every 2 mm of leaf travel).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.beams import (Aperture, BeamGeometry, BeamSet, MLCModel, beamlet_grid_for_target, isocenter_for,
                            make_arc, rows_to_leaf_pairs, segments_to_beam, sequence_fluence)
from sbrtplan.case import distance_map_mm
from sbrtplan.cli.recompute import recompute_dose
from sbrtplan.dose_engine import forward_dose
from sbrtplan.evaluation import gamma_index, gamma_pass_rate
from sbrtplan.io import read_rtplan, write_rtplan
from sbrtplan.phantoms import make_phantom
from sbrtplan.workflow.final_dose import final_dose

MLC = MLCModel.millennium120()


@pytest.fixture(scope="module")
def case():
    # 4 mm: small and fast; the gamma search interpolates the evaluated dose, so 1 mm DTA is still resolved
    return make_phantom("spine", spacing_mm=4.0)


@pytest.fixture(scope="module")
def case_3mm():
    # the VMAT plan dose interpolates its far region from a 2x lattice (6 mm here, 4 mm on a clinical 2 mm
    # grid); on a 4 mm grid the 8 mm lattice alone costs ~0.8 % of gamma 1 %/1 mm at an arc's field edges
    return make_phantom("spine", spacing_mm=3.0)


def _imrt(case) -> BeamSet:
    ptv = case.structure("PTV")
    iso = isocenter_for(ptv)
    rng = np.random.default_rng(11)
    beams = []
    for g, coll in ((20.0, 0.0), (140.0, 15.0), (260.0, 350.0)):
        geo = BeamGeometry(g, coll, 0.0, iso)
        bg = beamlet_grid_for_target(ptv, geo, MLC, beamlet_mm=5.0)
        fluence = np.where(bg.active, 5.0 + 20.0 * rng.random(bg.shape), 0.0)
        segs = sequence_fluence(fluence, bg, MLC, max_segments=5, min_segment_mu=2.0)
        beams.append(segments_to_beam(f"G{g:g}", geo, segs, MLC))
    return BeamSet(beams, n_fractions=5, prescription_gy=30.0, label="roundtrip IMRT")


def _vmat(case, start_deg: float = 150.0, stop_deg: float = 210.0) -> BeamSet:
    """A 60-degree CW arc, control points every 4 degrees, apertures the target's BEV shape with each leaf
    pulled in by a smoothly varying 0-40 % of the row width (leaves travel several mm between control
    points, as in a DAO arc), MU varying 2-5 per control point."""
    ptv = case.structure("PTV")
    iso = isocenter_for(ptv)
    gantry = np.arange(start_deg, stop_deg + 1e-6, 4.0)
    grids = [beamlet_grid_for_target(ptv, BeamGeometry(g, 30.0, 0.0, iso), MLC, beamlet_mm=2.5) for g in gantry]
    jaw_x = (min(g.x_edges_mm[0] for g in grids), max(g.x_edges_mm[-1] for g in grids))
    jaw_y = (min(g.y_edges_mm[0] for g in grids), max(g.y_edges_mm[-1] for g in grids))
    apertures = []
    for k, bg in enumerate(grids):
        x1 = np.full(MLC.n_pairs, -0.5 * MLC.min_gap_mm)
        x2 = np.full(MLC.n_pairs, 0.5 * MLC.min_gap_mm)
        xe = bg.x_edges_mm
        for r, p in enumerate(rows_to_leaf_pairs(bg, MLC)):
            cols = np.flatnonzero(bg.active[r])
            if cols.size == 0:
                continue
            lo, hi = xe[cols[0]], xe[cols[-1] + 1]
            a = 0.4 * (hi - lo) * (0.5 + 0.5 * np.sin(0.3 * k + 0.7 * r))
            b = 0.4 * (hi - lo) * (0.5 + 0.5 * np.cos(0.25 * k - 0.5 * r))
            x1[p], x2[p] = lo + 0.5 * a, max(hi - 0.5 * b, lo + 0.5 * a + MLC.min_gap_mm)
        apertures.append(Aperture(x1, x2, jaw_x, jaw_y))
    mu = 2.0 + 3.0 * (0.5 + 0.5 * np.sin(np.arange(gantry.size) / 3.0))
    arc = make_arc("Arc CW", gantry, apertures, mu, direction="CW", collimator_deg=30.0, isocenter_mm=iso, mlc=MLC)
    return BeamSet([arc], n_fractions=5, prescription_gy=30.0, label="roundtrip VMAT")


def _plan_dose(case, beam_set: BeamSet) -> np.ndarray:
    """The plan dose as the planner computes it (sbrtplan.workflow.pipeline, final-dose step)."""
    if beam_set.beams[0].is_arc:
        return final_dose(case, case.structure("PTV"), beam_set)
    return np.asarray(forward_dose(case.density, case.grid, beam_set, voxel_indices=case.body.flat_indices()),
                      dtype=np.float32).reshape(case.grid.shape)


def _roundtrip(case, beam_set, tmp_path):
    ref = _plan_dose(case, beam_set)
    path = tmp_path / "RTPLAN.dcm"
    write_rtplan(beam_set, path, case=case, target_name="PTV")
    back = read_rtplan(path)
    assert len(back.beams) == len(beam_set.beams)
    assert back.total_mu_per_fraction == pytest.approx(beam_set.total_mu_per_fraction, abs=1e-4)
    assert back.beams[0].technique == beam_set.beams[0].technique
    ev = recompute_dose(case, back)
    g = gamma_index(ref, ev, case.grid.spacing_mm, dose_percent=1.0, dta_mm=1.0, cutoff_percent=10.0)
    return ref, ev, g


def test_imrt_roundtrip_gamma_1pct_1mm(case, tmp_path):
    bs = _imrt(case)
    assert sum(len(b.control_points) for b in bs.beams) >= 12  # several segments per beam
    ref, ev, g = _roundtrip(case, bs, tmp_path)
    # Step-and-shoot: same apertures (written to 1 um), same MU (1e-5 MU), same engine and voxels; the only
    # differences are the RTPLAN's rounding, so the doses agree far inside 1 %.
    assert gamma_pass_rate(g) >= 99.0
    # Above the 10 % cut-off the doses agree within 0.05 % of the maximum (measured 0.004 %).  Below it, in
    # the last slices of the grid, the engine reacts to the isocentre's rounding to 1 um with up to 0.2 % of
    # the maximum (20 % locally, at ~1 % dose): a sensitivity of the ray lookup at the grid's end faces, not
    # of the RTPLAN, so it is left out here.
    evaluated = ref >= 0.1 * ref.max()
    assert np.max(np.abs(ev - ref)[evaluated]) <= 5e-4 * ref.max()
    # the prescription region is dosed: the plan is not trivially empty
    assert np.count_nonzero(np.isfinite(g)) > 1000


def test_vmat_roundtrip_gamma_1pct_1mm(case_3mm, tmp_path):
    bs = _vmat(case_3mm)
    ref, ev, g = _roundtrip(case_3mm, bs, tmp_path)
    # The plan dose samples each 4-degree interval every degree (and at most every 5 mm of leaf travel) and
    # computes the far region (> 30 mm from the PTV) on a 2x in-plane lattice, interpolated; the recompute
    # samples every 2 mm of leaf travel on every voxel.  Both are the same delivery: gamma 1 %/1 mm >= 99 %
    # (measured 99.9 %).
    rate = gamma_pass_rate(g)
    assert rate >= 99.0, f"VMAT round trip gamma 1%/1mm pass rate {rate:.2f} %"
    ptv = case_3mm.structure("PTV")
    # where both compute every voxel (the PTV) the doses agree within 0.5 % of the maximum (sub-field
    # sampling only; measured < 0.1 %)
    assert np.max(np.abs(ev - ref)[ptv.mask]) <= 0.005 * ref.max()
    # every failing voxel lies in the plan dose's interpolated far region: the RTPLAN itself loses nothing
    fail = np.nan_to_num(g, nan=0.0) > 1.0
    if fail.any():
        assert distance_map_mm(ptv, max_distance_mm=40.0)[fail].min() > 30.0


def test_cli_recompute_of_exported_plan_matches_its_rtdose(case, tmp_path, capsys):
    # The whole `sbrtplan recompute` path: our DICOM export (CT series, RTSTRUCT, RTPLAN, RTDOSE of the plan
    # dose) read back, the CT resampled to the dose grid (HU -> density), the dose recomputed and compared
    # with the RTDOSE by gamma 3 %/3 mm.  The only differences are the CT's HU rounding and the resampling
    # of the reference onto the recompute grid: gamma 3 %/3 mm passes everywhere (>= 99 % asserted).
    import json

    from sbrtplan.case import Dose
    from sbrtplan.cli import main
    from sbrtplan.io import write_ct_series, write_rtdose, write_rtstruct

    bs = _imrt(case)
    ref = _plan_dose(case, bs)
    write_ct_series(case, tmp_path / "CT")
    ss = write_rtstruct(case, tmp_path / "rtss.dcm")
    uid = write_rtplan(bs, tmp_path / "rtplan.dcm", case=case, rtstruct_uid=ss, target_name="PTV")
    write_rtdose(Dose(case.grid, ref), case.grid, tmp_path / "rtdose.dcm", case=case, rtplan_uid=uid)
    rc = main(["recompute", "--ct", str(tmp_path / "CT"), "--rtstruct", str(tmp_path / "rtss.dcm"),
               "--rtplan", str(tmp_path / "rtplan.dcm"), "--out", str(tmp_path / "out"), "--grid-mm", "4",
               "--target", "PTV", "--reference-rtdose", str(tmp_path / "rtdose.dcm")])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["comparison"]["gamma"]["pass_rate_pct"] >= 99.0
    assert m["comparison"]["gamma"]["per_structure"]["PTV"] >= 99.0
    assert "1 cGy/MU" in m["plan"]["calibration"]
    assert (tmp_path / "out" / "RTDOSE.dcm").is_file()
    assert "gamma 3%/3 mm" in capsys.readouterr().out


@pytest.mark.slow
def test_thorax_clinical_sliding_window_plan_recompute_is_plausible(shared_data):
    """Issue 7 (b): the clinical 7-field sliding-window IMRT plan (41.4 Gy / 23 fx, 1105 MU per fraction, 166
    control points per field) recomputed with the recompute's delivery sampling.  No dose of the planning
    system is shipped with this case, so the checks are plausibility bounds, not agreement:

    * PTV D50 within [0.95, 1.20] x prescription: the clinical plan puts the PTV median at the prescription
      within a few per cent; ours differs by the calibration assumption (1 cGy/MU at 15 mm depth, SSD 100 cm)
      and the pencil beam's known over-estimate in lung targets (5-15 % against convolution algorithms).
      Measured 1.11 (4 mm, whole body, bench_recompute.py).
    * PTV D95 / D50 >= 0.90: a modulated plan made to cover its target homogeneously (measured 0.94).
    * cord max / PTV D50 <= 0.90: the plan spares the cord (measured 0.83).
    Only the PTV, cord and heart voxels on a 5 mm grid are computed (~2 min on 2 cores).
    """
    import numpy as np

    from sbrtplan.case import Dose, resample_case
    from sbrtplan.cli.recompute import MAX_GANTRY_STEP_DEG, MAX_LEAF_STEP_MM
    from sbrtplan.evaluation import compute_dvh
    from sbrtplan.io import load_case

    root = shared_data / "dicom" / "thorax-rt02"
    if not (root / "RTPLAN_Hashed.dcm").is_file():
        pytest.skip(f"thorax plan not available in {root}")
    case = load_case(str(root), rtstruct=str(root / "20191031-215249_m.dcm"))
    bs = read_rtplan(root / "RTPLAN_Hashed.dcm")
    assert bs.total_mu_per_fraction == pytest.approx(1105.56, abs=0.1)
    cg = resample_case(case, 5.0, region=case.body, margin_mm=5.0)
    ptv, cord, heart = cg.structure("PTV4140"), cg.structure("SpinalCord"), cg.structure("Heart")
    idx = np.flatnonzero((ptv.weights > 0) | (cord.weights > 0) | (heart.weights > 0))
    dose = Dose(cg.grid, forward_dose(cg.density, cg.grid, bs, voxel_indices=idx,
                                      max_gantry_step_deg=MAX_GANTRY_STEP_DEG, max_leaf_step_mm=MAX_LEAF_STEP_MM))
    p = compute_dvh(dose, ptv)
    d50, d95 = p.d_pct(50.0), p.d_pct(95.0)
    cord_max = compute_dvh(dose, cord).max_gy
    print(f"thorax recompute (5 mm): PTV D50 {d50:.2f} Gy, D95 {d95:.2f} Gy, cord max {cord_max:.2f} Gy, "
          f"heart mean {compute_dvh(dose, heart).mean_gy:.2f} Gy")
    assert 0.95 * bs.prescription_gy <= d50 <= 1.20 * bs.prescription_gy
    assert d95 >= 0.90 * d50
    assert cord_max <= 0.90 * d50

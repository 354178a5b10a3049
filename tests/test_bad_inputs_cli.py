"""Bad-input corpus, part 2: command-line options, output paths and cohort files.

Each case runs a command in-process and asserts exit status 2, a fragment of the one-line message naming
the option and no output left behind.  All of them are refused before any case is planned.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import run_cli
from test_bad_inputs import assert_refused, patient  # noqa: F401 (fixture)

# pydicom warns about the invalid values these tests write on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

PLAN = ["plan", "--case", "phantom:spine", "--scheme", "27/3"]

# (argv after the command's fixed part, message fragment)
PLAN_OPTION_CASES = {
    "grid-0.01": (["--grid-mm", "0.01"], "--grid-mm"),
    "grid-0.05": (["--grid-mm", "0.05"], "--grid-mm"),
    "grid-zero": (["--grid-mm", "0"], "--grid-mm"),
    "grid-negative": (["--grid-mm", "-2"], "--grid-mm"),
    "grid-nan": (["--grid-mm", "nan"], "--grid-mm"),
    "grid-inf": (["--grid-mm", "inf"], "--grid-mm"),
    "grid-6": (["--grid-mm", "6"], "--grid-mm"),
    "grid-text": (["--grid-mm", "abc"], "--grid-mm"),
    "beams-0": (["--technique", "imrt", "--beams", "0"], "--beams"),
    "beams-4": (["--technique", "imrt", "--beams", "4"], "--beams"),
    "beams-10": (["--technique", "imrt", "--beams", "10"], "--beams"),
    "beams-1000": (["--technique", "imrt", "--beams", "1000"], "--beams"),
    "beams-negative": (["--technique", "imrt", "--beams", "-7"], "--beams"),
    "beams-with-vmat": (["--beams", "7"], "VMAT"),
    "beams-20-vmat": (["--technique", "vmat", "--beams", "20"], "--beams"),
    "technique-unknown": (["--technique", "protons"], "--technique"),
    "max-memory-zero": (["--max-memory-gib", "0"], "--max-memory-gib"),
    "max-memory-nan": (["--max-memory-gib", "nan"], "--max-memory-gib"),
    "max-memory-too-small": (["--max-memory-gib", "0.02"], "GiB"),
    "protocol-unknown": (["--protocol", "no_such_protocol"], "no_such_protocol"),
}


@pytest.mark.parametrize("case", sorted(PLAN_OPTION_CASES))
def test_plan_refuses_option(case, tmp_path, capsys):
    extra, fragment = PLAN_OPTION_CASES[case]
    out = tmp_path / "out"
    rc, err = run_cli(PLAN + ["--out", out] + extra, capsys)
    if rc == 2 and "usage:" in err:  # argparse's own refusal (malformed number, unknown choice)
        assert fragment in err and not out.exists()
        return
    assert_refused(rc, err, fragment, out)


def test_plan_scheme_refused_before_case(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(["plan", "--case", "phantom:spine", "--scheme", "27/0", "--out", out], capsys)
    assert_refused(rc, err, "fractions", out)


def _make_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder\n")
    return f


# commands that write a folder: output given as an existing file, or below a file
FOLDER_COMMANDS = {
    "plan": PLAN,
    "demo": ["demo"],
    "compare-fractions": ["compare-fractions", "--case", "phantom:spine", "--schemes", "27/3"],
    "compare-techniques": ["compare-techniques", "--case", "phantom:spine", "--scheme", "27/3"],
    "benchmark": ["benchmark", "--case", "phantom:spine", "--scheme", "27/3", "--clinical-rtdose", "missing.dcm"],
}


@pytest.mark.parametrize("where", ["is-file", "below-file"])
@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS))
def test_output_folder_checked_first(command, where, tmp_path, capsys):
    f = _make_file(tmp_path)
    out = f if where == "is-file" else f / "sub"
    rc, err = run_cli(FOLDER_COMMANDS[command] + ["--out", out], capsys)
    assert_refused(rc, err, "file")
    assert f.read_text() == "not a folder\n"  # untouched


@pytest.mark.parametrize("where", ["is-file", "below-file"])
def test_recompute_output_folder_checked_first(where, tmp_path, capsys, patient):
    f = _make_file(tmp_path)
    out = f if where == "is-file" else f / "sub"
    rc, err = run_cli(["recompute", "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", patient.rtplan,
                       "--out", out], capsys)
    assert_refused(rc, err, "file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, err = run_cli(PLAN + ["--out", ro / "out"], capsys)
        assert_refused(rc, err, "not writable", ro / "out")
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a file system where folders cannot be made (/proc)")
def test_output_folder_where_no_folder_can_be_made(capsys):
    """Permission bits allow it (as root, or on a virtual file system) but no folder can be created:
    refused before planning, not after the plan when the outputs are written."""
    out = Path("/proc/sbrtplan-out")
    rc, err = run_cli(["demo", "--out", out], capsys)
    assert_refused(rc, err, "cannot create a folder", out)


EVALUATE_OPTION_CASES = {
    "json-folder": (lambda t: ["--json", t], "is a folder"),
    "json-below-file": (lambda t: ["--json", _make_file(t) / "m.json"], "is a file"),
    "dvh-folder": (lambda t: ["--dvh-csv", t], "is a folder"),
    "prior-fractions-0": (lambda t: ["--prior-rtdose", "{rtdose}", "--prior-fractions", "0",
                                     "--interval-months", "12", "--scheme", "27/3"], "--prior-fractions"),
    "interval-negative": (lambda t: ["--prior-rtdose", "{rtdose}", "--prior-fractions", "3",
                                     "--interval-months", "-1", "--scheme", "27/3"], "--interval-months"),
    "interval-nan": (lambda t: ["--prior-rtdose", "{rtdose}", "--prior-fractions", "3",
                                "--interval-months", "nan", "--scheme", "27/3"], "--interval-months"),
    "prior-without-fractions": (lambda t: ["--prior-rtdose", "{rtdose}"], "--prior-fractions"),
    "fractions-without-prior": (lambda t: ["--prior-fractions", "3"], "--prior-rtdose"),
    "protocol-without-scheme": (lambda t: ["--protocol", "bone_spine"], "--scheme"),
    "scheme-garbage": (lambda t: ["--scheme", "lots"], "lots"),
    "protocol-unknown": (lambda t: ["--protocol", "nope", "--scheme", "27/3"], "nope"),
    "ct-missing": (lambda t: ["--ct", t / "no-ct"], "no such"),
    "map-garbage": (lambda t: ["--map", "no-equals-sign"], "no-equals-sign"),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_OPTION_CASES))
def test_evaluate_refuses_option(case, patient, tmp_path, capsys):
    make, fragment = EVALUATE_OPTION_CASES[case]
    extra = [str(a).replace("{rtdose}", str(patient.rtdose)) for a in make(tmp_path)]
    rc, err = run_cli(["evaluate", "--rtdose", patient.rtdose, "--rtstruct", patient.rtstruct] + extra, capsys)
    assert_refused(rc, err, fragment)


MUCHECK_OPTION_CASES = {
    "tolerance-zero": (["--tolerance", "0"], "--tolerance"),
    "tolerance-negative": (["--tolerance", "-3"], "--tolerance"),
    "tolerance-nan": (["--tolerance", "nan"], "--tolerance"),
    "point-two-values": (["--point", "1,2"], "--point"),
    "point-text": (["--point", "a,b,c"], "--point"),
    "point-nan": (["--point", "nan,0,0"], "--point"),
    "point-huge": (["--point", "1e9,0,0"], "--point"),
    "out-folder": (["--out", "{tmp}"], "is a folder"),
    "model-unknown": (["--model", "no-such-model"], "no-such-model"),
}


@pytest.mark.parametrize("case", sorted(MUCHECK_OPTION_CASES))
def test_mucheck_refuses_option(case, patient, tmp_path, capsys):
    extra, fragment = MUCHECK_OPTION_CASES[case]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    rc, err = run_cli(["mucheck", "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", patient.rtplan]
                      + extra, capsys)
    assert_refused(rc, err, fragment)


RECOMPUTE_OPTION_CASES = {
    "grid-0.01": (["--grid-mm", "0.01"], "--grid-mm"),
    "grid-100": (["--grid-mm", "100"], "--grid-mm"),
    "grid-nan": (["--grid-mm", "nan"], "--grid-mm"),
    "ct-is-file": (["--ct", "{rtplan}"], "--ct"),
    "rtplan-missing": (["--rtplan", "{tmp}/none.dcm"], "--rtplan"),
    "rtstruct-missing": (["--rtstruct", "{tmp}/none.dcm"], "--rtstruct"),
    "reference-missing": (["--reference-rtdose", "{tmp}/none.dcm"], "--reference-rtdose"),
}


@pytest.mark.parametrize("case", sorted(RECOMPUTE_OPTION_CASES))
def test_recompute_refuses_option(case, patient, tmp_path, capsys):
    extra, fragment = RECOMPUTE_OPTION_CASES[case]
    base = {"--ct": str(patient.ct), "--rtstruct": str(patient.rtstruct), "--rtplan": str(patient.rtplan),
            "--out": str(tmp_path / "out")}
    extra = [a.replace("{tmp}", str(tmp_path)).replace("{rtplan}", str(patient.rtplan)) for a in extra]
    for k, v in zip(extra[::2], extra[1::2]):
        base[k] = v
    rc, err = run_cli(["recompute"] + [x for kv in base.items() for x in kv], capsys)
    assert_refused(rc, err, fragment, tmp_path / "out")


DIJ_OPTION_CASES = {
    "beams-0": (["--beams", "0"], "--beams"),
    "beams-negative": (["--beams", "-5"], "--beams"),
    "beams-1000": (["--beams", "1000"], "--beams"),
    "grid-0.01": (["--grid-mm", "0.01"], "--grid-mm"),
    "beamlet-0": (["--beamlet-mm", "0"], "--beamlet-mm"),
    "beamlet-nan": (["--beamlet-mm", "nan"], "--beamlet-mm"),
    "gantry-nan": (["--gantry", "0", "nan"], "--gantry"),
    "couch-inf": (["--couch", "inf"], "--couch"),
    "collimator-nan": (["--collimator", "nan"], "--collimator"),
    "cutoff-0": (["--cutoff-mm", "0"], "--cutoff-mm"),
    "margin-negative": (["--margin-mm", "-1"], "--margin-mm"),
    "out-txt": (["--out", "{tmp}/x.txt"], ".npz"),
    "out-folder": (["--out", "{tmp}/d.npz/"], "folder"),
    "memory-guard": (["--grid-mm", "5", "--beams", "360", "--max-memory-gib", "0.05"], "GiB"),
}


@pytest.mark.parametrize("case", sorted(DIJ_OPTION_CASES))
def test_dij_refuses_option(case, tmp_path, capsys):
    extra, fragment = DIJ_OPTION_CASES[case]
    (tmp_path / "d.npz").mkdir()
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    out = tmp_path / "m.npz"
    args = {"--out": str(out)}
    rest = []
    i = 0
    while i < len(extra):
        if extra[i] == "--out":
            args["--out"] = extra[i + 1]
            i += 2
        else:
            rest.append(extra[i])
            i += 1
    rc, err = run_cli(["dij", "--case", "phantom:spine", "--out", args["--out"]] + rest, capsys)
    assert_refused(rc, err, fragment, out)


BATCH_OPTION_CASES = {
    "workers-0": (["--workers", "0"], "--workers"),
    "workers-negative": (["--workers", "-2"], "--workers"),
    "workers-10000": (["--workers", "10000"], "--workers"),
    "scheduler-not-url": (["--scheduler", "notaurl"], "--scheduler"),
    "scheduler-http": (["--scheduler", "http://example.org"], "--scheduler"),
    "scheduler-empty": (["--scheduler", ""], "--scheduler"),
    "connect-timeout-0": (["--scheduler", "tcp://127.0.0.1:8786", "--connect-timeout", "0"], "--connect-timeout"),
    "connect-timeout-nan": (["--scheduler", "tcp://127.0.0.1:8786", "--connect-timeout", "nan"], "--connect-timeout"),
    "max-memory-negative": (["--max-memory-gib", "-1"], "--max-memory-gib"),
    "out-is-file": (["--out", "{file}"], "is a file"),
    "out-below-file": (["--out", "{file}/sub"], "is a file"),
}


def _cohort(tmp_path, body: str) -> Path:
    f = tmp_path / "cohort.yaml"
    f.write_text(body)
    return f


GOOD_COHORT = "protocol: bone_spine\nschemes: [27/3]\noutput: out\ncases:\n  - name: p1\n    case: phantom:spine\n"


@pytest.mark.parametrize("case", sorted(BATCH_OPTION_CASES))
def test_batch_refuses_option(case, tmp_path, capsys):
    extra, fragment = BATCH_OPTION_CASES[case]
    extra = [a.replace("{file}", str(_make_file(tmp_path))) for a in extra]
    rc, err = run_cli(["batch", _cohort(tmp_path, GOOD_COHORT)] + extra, capsys)
    assert_refused(rc, err, fragment, tmp_path / "out")


COHORT_CASES = {
    "grid-text": ("grid_mm: abc\n", "grid_mm"),
    "grid-tiny": ("grid_mm: 0.01\n", "grid_mm"),
    "grid-bool": ("grid_mm: true\n", "grid_mm"),
    "beams-20": ("beams: 20\ntechnique: imrt\n", "beams"),
    "beams-text": ("beams: many\n", "beams"),
    "beams-vmat": ("beams: 7\ntechnique: vmat\n", "VMAT"),
    "technique": ("technique: protons\n", "technique"),
    "select-beams-text": ("select_beams: maybe\n", "select_beams"),
    "allow-missing-text": ("allow_missing: 3\n", "allow_missing"),
    "conditions-number": ("conditions: 5\n", "conditions"),
    "unknown-key": ("gird_mm: 2\n", "unknown key"),
    "scheme-garbage": ("schemes: [lots]\n", "lots"),
    "name-climbs-out": ("name: ../../X\n", "not a plain folder name"),
    "name-absolute": ("name: /tmp/X\n", "not a plain folder name"),
    "name-hidden": ("name: .hidden\n", "not a plain folder name"),
    "name-backslash": ("name: 'a\\\\b'\n", "not a plain folder name"),
}


@pytest.mark.parametrize("case", sorted(COHORT_CASES))
def test_batch_refuses_cohort_value(case, tmp_path, capsys):
    line, fragment = COHORT_CASES[case]
    if line.startswith("name:"):
        body = f"protocol: bone_spine\nschemes: [27/3]\noutput: out\ncases:\n  - case: phantom:spine\n    {line}"
    else:
        body = GOOD_COHORT.replace("cases:\n", line + "cases:\n")
    rc, err = run_cli(["batch", _cohort(tmp_path, body), "--workers", "1"], capsys)
    assert_refused(rc, err, fragment, tmp_path / "out")
    assert not (tmp_path.parent / "X").exists()


COHORT_FILE_CASES = {
    "not-yaml": ("protocol: [unclosed\n", "YAML"),
    "no-cases": ("protocol: bone_spine\nschemes: [27/3]\n", "cases"),
    "empty": ("", "cases"),
}


@pytest.mark.parametrize("case", sorted(COHORT_FILE_CASES))
def test_batch_refuses_cohort_file(case, tmp_path, capsys):
    body, fragment = COHORT_FILE_CASES[case]
    rc, err = run_cli(["batch", _cohort(tmp_path, body)], capsys)
    assert_refused(rc, err, fragment)


def test_batch_missing_cohort_file(tmp_path, capsys):
    rc, err = run_cli(["batch", tmp_path / "none.yaml"], capsys)
    assert_refused(rc, err, "none.yaml")


SCHEMES_CASES = {"empty": ",", "garbage": "abc", "one-bad": "27/3,xyz", "zero-fractions": "27/0"}


@pytest.mark.parametrize("case", sorted(SCHEMES_CASES))
def test_compare_fractions_creates_no_folder_on_argument_errors(case, tmp_path, capsys):
    out = tmp_path / "cf"
    rc, err = run_cli(["compare-fractions", "--case", "phantom:spine", "--schemes", SCHEMES_CASES[case],
                       "--out", out], capsys)
    assert_refused(rc, err, "", out)


COMMISSION_CASES = {
    "out-txt": (["--out", "{tmp}/m.txt"], ".yaml"),
    "out-folder": (["--out", "{tmp}/m.yaml/"], "folder"),
    "mcc-missing": (["--out", "{tmp}/model.yaml"], "no such"),
}


@pytest.mark.parametrize("case", sorted(COMMISSION_CASES))
def test_commission_refuses(case, tmp_path, capsys):
    extra, fragment = COMMISSION_CASES[case]
    (tmp_path / "m.yaml").mkdir()
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    rc, err = run_cli(["commission", str(tmp_path / "none.mcc")] + extra, capsys)
    assert_refused(rc, err, fragment)


INFO_CASES = {"missing": "{tmp}/nothing", "phantom-unknown": "phantom:nope", "empty-folder": "{tmp}/empty",
              "text-mat": "{tmp}/t.mat", "empty-mat": "{tmp}/e.mat", "text-file": "{tmp}/notes.txt"}


@pytest.mark.parametrize("case", sorted(INFO_CASES))
def test_info_refuses_case(case, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "t.mat").write_text("not a MATLAB file\n")
    (tmp_path / "e.mat").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello\n")
    rc, err = run_cli(["info", INFO_CASES[case].replace("{tmp}", str(tmp_path))], capsys)
    assert_refused(rc, err, "")


# ----------------------------------------------------------------------------------------- resource guards

def test_batch_unreachable_scheduler_fails_fast(tmp_path, capsys):
    """Nothing listens on port 1: the connection is refused at once, so the one-line error (naming the option
    and the address) comes in seconds, not after dask's 30 s connect timeout, and no output folder is made.
    Bound: 15 s for what takes ~0.1 s (the socket probe) plus the command's imports on a loaded machine."""
    import time

    t0 = time.perf_counter()
    rc, err = run_cli(["batch", _cohort(tmp_path, GOOD_COHORT), "--scheduler", "tcp://127.0.0.1:1",
                       "--connect-timeout", "2"], capsys)
    elapsed = time.perf_counter() - t0
    assert_refused(rc, err, "--scheduler tcp://127.0.0.1:1", tmp_path / "out")
    assert "cannot connect within 2 s" in err
    assert elapsed < 15.0, f"{elapsed:.1f} s"


def test_connect_scheduler_times_out_at_its_timeout():
    """A listening socket that never answers (accepts, says nothing): dask's own timeout does not cover its
    handshake (it waited for ever); connect_scheduler gives up 5 s after the timeout given (1 s).  Bound 15 s:
    those 6 s plus dask's start-up on a loaded machine."""
    import socket
    import time

    from sbrtplan.batch import SchedulerConnectError, connect_scheduler

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        t0 = time.perf_counter()
        with pytest.raises(SchedulerConnectError) as info:
            connect_scheduler(f"tcp://127.0.0.1:{srv.getsockname()[1]}", timeout_s=1.0)
        assert time.perf_counter() - t0 < 15.0
        assert info.value.timeout_s == 1.0
    finally:
        srv.close()


def test_plan_refused_by_its_influence_matrix_estimate(tmp_path, capsys):
    """The spine phantom's VMAT plan at 2 mm builds a 1.7e8 non-zero influence matrix (1.3 GiB, peak RSS of
    the whole plan 2.2 GiB, measured): with --max-memory-gib 1 it is refused before anything is built, the
    message naming the option, the estimate and the limit; the dose grid alone (0.13 GiB) would pass."""
    out = tmp_path / "out"
    rc, err = run_cli(PLAN + ["--out", out, "--max-memory-gib", "1", "--allow-missing"], capsys)
    assert_refused(rc, err, "--max-memory-gib", out)
    line = [ln for ln in err.splitlines() if "error:" in ln][-1]
    assert "VMAT influence matrix (120 arc sectors" in line
    m = re.search(r"about ([0-9.]+) GiB.*more than --max-memory-gib \(1 GiB\)", line)
    assert m, line
    assert 1.5 < float(m.group(1)) < 3.5, line  # measured 2.2 GiB peak: the estimate within the margin


def test_demo_refused_by_its_influence_matrix_estimate(tmp_path, capsys):
    out = tmp_path / "demo"
    rc, err = run_cli(["demo", "--out", out, "--max-memory-gib", "0.5"], capsys)
    assert_refused(rc, err, "--max-memory-gib", out)
    assert "influence matrix" in err


def test_compare_techniques_checks_the_larger_plan(tmp_path, capsys):
    """VMAT (120 sectors) is the larger of the two plans: it is the one named when both would not fit."""
    out = tmp_path / "cmp"
    rc, err = run_cli(["compare-techniques", "--case", "phantom:spine", "--scheme", "27/3", "--out", out,
                       "--max-memory-gib", "1", "--allow-missing"], capsys)
    assert_refused(rc, err, "VMAT influence matrix", out)


def test_batch_task_refused_by_its_memory_estimate(tmp_path):
    """A cohort task whose plan would exceed the limit fails at once with the estimate in its error (the other
    tasks go on), instead of the worker being killed minutes later."""
    from sbrtplan.batch import run_task
    from sbrtplan.batch.cohort import CohortTask

    task = CohortTask(case_name="p1", case_spec="phantom:spine", scheme="27/3", protocol="bone_spine",
                      technique="vmat", grid_mm=2.0, allow_missing=True)
    row = run_task(task, str(tmp_path / "out"), max_memory_gib=1.0)
    assert row["status"] == "failed"
    assert "ResourceError" in row["error"] and "--max-memory-gib" in row["error"], row["error"]
    assert not (tmp_path / "out" / task.key / "RTPLAN.dcm").exists()


@pytest.mark.parametrize("technique", ["imrt", "vmat"])
def test_influence_estimate_matches_the_engine(technique):
    """The estimate against the matrix the engine builds for the same plan geometry (spine phantom, 4 mm
    grid: optimisation voxels of the pipeline's sampling, the template's beams or arc sectors, beamlet grids
    on the target): non-zeros, rows and columns within 15 %.  Measured: within 6 % on the spine (2 and 4 mm),
    liver (3 mm) and thorax CT (3 mm, PTV 751 cc) cases; 15 % leaves room for the coarse body model of the
    estimate (6 mm cells), which is what the memory guard can afford in well under a second."""
    import numpy as np

    from sbrtplan._resources import estimate_plan_influence, plan_targets
    from sbrtplan.beams import BeamGeometry, MLCModel, arc_template, beamlet_grid_for_target, isocenter_for
    from sbrtplan.case import resample_case
    from sbrtplan.dose_engine import influence_matrix
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.protocols import load_protocol
    from sbrtplan.workflow import build_planning_structures
    from sbrtplan.workflow.voxels import optimization_voxels, organ_structures

    grid_mm = 4.0
    case = make_phantom("spine")
    est = estimate_plan_influence(case, plan_targets(case, [], "bone_spine"), technique=technique, grid_mm=grid_mm,
                                  n_arcs=1)  # one arc (60 sectors) keeps the test short
    cg = resample_case(case, grid_mm, region=case.body, margin_mm=4.0 * grid_mm)
    ps = build_planning_structures(cg, load_protocol("bone_spine"))
    vox = optimization_voxels(cg, ps.target, organ_structures(cg))
    iso = isocenter_for(ps.target)
    mlc = MLCModel.millennium120()
    if technique == "imrt":
        geoms = [BeamGeometry(360.0 * (j + 0.5) / 7, 0.0, 0.0, iso) for j in range(7)]
        margin = 5.0
    else:
        geoms = []
        for arc in arc_template(1):
            n = int(round(arc.span_deg / 6.0))
            geoms += [BeamGeometry(float(arc.angle((j + 0.5) * arc.span_deg / n)), arc.collimator_deg,
                                   arc.couch_deg, iso) for j in range(n)]
        margin = 3.0
    grids = [beamlet_grid_for_target(ps.target, g, mlc, beamlet_mm=5.0, margin_mm=margin) for g in geoms]
    im = influence_matrix(cg.density, cg.grid, geoms, grids, vox.indices)
    assert est.n_fields == len(geoms)
    assert est.n_voxels == pytest.approx(vox.n, rel=0.15)
    assert est.n_beamlets == pytest.approx(sum(g.n_beamlets for g in grids), rel=0.15)
    assert est.nnz == pytest.approx(im.nnz, rel=0.15)
    assert np.isfinite(est.peak_bytes) and est.peak_bytes >= 8.0 * est.nnz

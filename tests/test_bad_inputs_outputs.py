"""Bad-input corpus, part 3: atomic outputs, the one exit path, and random corruption of the DICOM readers.

- :func:`sbrtplan._staging.staged_dir`, ``write_plan`` and ``recompute`` leave either the complete new
  result or the previous one, never half of one.
- An unexpected exception prints one line with the path of a saved traceback (exit 1).
- Property tests (hypothesis): any single element of an RTDOSE, RTSTRUCT or RTPLAN replaced by a
  random value or deleted either reads or raises an ``SbrtplanError``; never another exception.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from test_bad_inputs import patient, run_cli  # noqa: F401 (fixture)

# pydicom warns about the invalid values these tests write on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

# ----------------------------------------------------------------------------------------- staging


def test_staged_dir_success_creates_target(tmp_path):
    from sbrtplan._staging import staged_dir

    out = tmp_path / "out"
    with staged_dir(out) as stage:
        (stage / "a.txt").write_text("1")
        assert not out.exists()  # nothing visible under the target's name while writing
    assert (out / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_dir_failure_leaves_nothing(tmp_path):
    from sbrtplan._staging import staged_dir

    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as stage:
            (stage / "a.txt").write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_failure_keeps_previous_result(tmp_path):
    from sbrtplan._staging import staged_dir

    out = tmp_path / "out"
    with staged_dir(out) as stage:
        (stage / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(out) as stage:
            (stage / "a.txt").write_text("new")
            raise RuntimeError("crash")
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_dir_replaces_own_files_and_keeps_the_users(tmp_path):
    from sbrtplan._staging import staged_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "a.txt").write_text("old")
    with staged_dir(out) as stage:
        (stage / "a.txt").write_text("new")
        (stage / "sub").mkdir()
    assert (out / "a.txt").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "notes.txt", "sub"]


def test_staged_dir_refuses_a_file(tmp_path):
    from sbrtplan._staging import staged_dir
    from sbrtplan.errors import InputError

    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with staged_dir(f):
            pass
    assert f.read_text() == "x"


def _stub_writers(monkeypatch, fail_at: str | None):
    """Replace the writers used by write_plan with tiny ones; ``fail_at`` raises like a full disk."""
    import sbrtplan.io as sio
    import sbrtplan.report as srep
    import sbrtplan.workflow.outputs as outputs

    def make(name, ret=None):
        def writer(*args, **kwargs):
            if name == fail_at:
                raise OSError(28, "No space left on device")
            path = next(a for a in args if isinstance(a, Path))
            if name == "write_ct_series":
                path.mkdir(parents=True)
                (path / "CT_0001.dcm").write_text("ct")
            else:
                path.write_text(name)
            return ret
        return writer

    for name in ("write_ct_series", "write_rtstruct", "write_rtplan", "write_rtdose", "write_matrad"):
        monkeypatch.setattr(sio, name, make(name, "1.2.3"))
    monkeypatch.setattr(srep, "render_report", make("render_report"))
    monkeypatch.setattr(outputs, "write_metrics_json", make("write_metrics_json"))


def _fake_plan():
    return SimpleNamespace(case=SimpleNamespace(name="c", grid=None), beam_set=SimpleNamespace(
        prescription_gy=27.0, n_fractions=3), report=SimpleNamespace(target="PTV"), dose=SimpleNamespace(dose_gy=None),
        metrics={}, qa={}, options=SimpleNamespace(technique=SimpleNamespace(value="imrt")), protocol_name="p",
        scheme="27/3")


@pytest.mark.parametrize("fail_at", ["write_rtstruct", "write_rtdose", "write_matrad", "render_report"])
def test_write_plan_failure_leaves_previous_result(fail_at, tmp_path, monkeypatch):
    from sbrtplan.workflow import write_plan

    out = tmp_path / "plan"
    _stub_writers(monkeypatch, None)
    paths = write_plan(_fake_plan(), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["CT", "RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm", "plan.mat", "report.html", "metrics.json"])
    assert all(Path(p).exists() and Path(p).parent == out for p in paths.values())
    before = {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()}
    _stub_writers(monkeypatch, fail_at)
    with pytest.raises(OSError):
        write_plan(_fake_plan(), out)
    assert {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["plan"]  # no staging folder left


def test_write_plan_failure_on_first_run_leaves_nothing(tmp_path, monkeypatch):
    from sbrtplan.workflow import write_plan

    _stub_writers(monkeypatch, "render_report")
    with pytest.raises(OSError):
        write_plan(_fake_plan(), tmp_path / "plan")
    assert list(tmp_path.iterdir()) == []


def test_recompute_failure_after_rtdose_leaves_no_output(patient, tmp_path, monkeypatch, capsys):
    """The metrics write fails after RTDOSE.dcm was written: neither file may remain (exit 1, one line)."""
    import sbrtplan.cli.recompute as rc_mod
    import sbrtplan.workflow.outputs as outputs

    def fast_dose(case, beam_set, **kw):  # the dose engine is not under test here
        return np.full(case.grid.shape, 1.0, np.float32)

    def failing(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rc_mod, "recompute_dose", fast_dose)
    monkeypatch.setattr(outputs, "write_metrics_json", failing)
    monkeypatch.setenv("SBRTPLAN_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"
    rc, err = run_cli(["recompute", "--ct", patient.ct, "--rtstruct", patient.rtstruct, "--rtplan", patient.rtplan,
                       "--out", out, "--grid-mm", "5"], capsys)
    assert rc == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".sbrtplan-staging-*"))


# ----------------------------------------------------------------------------------------- exit path

def _parser_with_info_running(monkeypatch, func):
    """The real parser, with ``sbrtplan info`` running ``func`` (the failure under test)."""
    from sbrtplan.cli import build_parser

    parser = build_parser()
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=func)
    monkeypatch.setattr("sbrtplan.cli.build_parser", lambda: parser)


def test_unexpected_exception_is_one_line_with_saved_traceback(tmp_path, monkeypatch, capsys):
    from sbrtplan.cli import main

    def boom(args):
        raise ZeroDivisionError("float division by zero\nsecond line")

    _parser_with_info_running(monkeypatch, boom)
    monkeypatch.setenv("SBRTPLAN_LOG_DIR", str(tmp_path / "logs"))
    rc = main(["info", "phantom:spine"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err
    assert "ZeroDivisionError" in lines[0]
    saved = list((tmp_path / "logs").glob("traceback-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in lines[0]
    assert "Traceback" in saved[0].read_text()


def test_memory_error_is_one_line(tmp_path, monkeypatch, capsys):
    from sbrtplan.cli import main

    def oom(args):
        raise MemoryError()

    _parser_with_info_running(monkeypatch, oom)
    monkeypatch.setenv("SBRTPLAN_LOG_DIR", str(tmp_path / "logs"))
    rc = main(["info", "phantom:spine"])
    err = capsys.readouterr().err
    assert rc == 1 and "out of memory" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------- properties

_VALUES = st.one_of(st.sampled_from(["", "NaN", "-1", "0", "1e308", "inf", "-inf", "1\\2", "abc", None]),
                    st.text(max_size=12))


def _elements(ds):
    """(dataset, tag) of every non-pixel element, nested ones included, in a fixed order.  Tags are read
    from the data dictionary so that large values (ContourData) stay undecoded and the test stays fast."""
    from pydicom.datadict import dictionary_VR

    out = []

    def walk(d):
        for tag in list(d.keys()):
            if tag == 0x7FE00010:  # pixel data: not a value a reader interprets element by element
                continue
            try:
                vr = dictionary_VR(tag)
            except KeyError:  # private tag
                vr = d.get_item(tag).VR
            if vr == "SQ":
                for item in d[tag].value:
                    walk(item)
            else:
                out.append((d, tag))
    walk(ds)
    return out


def _corrupt(src: Path, dst: Path, index: int, value) -> bool:
    ds = pydicom.dcmread(str(src))
    elems = _elements(ds)
    d, tag = elems[index % len(elems)]
    try:
        if value is None:
            del d[tag]
        else:
            d[tag].value = value
        ds.save_as(str(dst))
    except Exception:  # pydicom cannot even write this value: not a file a reader can meet
        return False
    return True


def _reads_or_refuses(read, path):
    from sbrtplan.errors import SbrtplanError

    try:
        read(path)
    except SbrtplanError as exc:
        assert "\n" not in str(exc).strip(), "error message must be one line"


_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def coarse_grid(patient):
    """The CT's extent on a 10 mm grid: the reader's checks, not its rasterisation, are under test."""
    from sbrtplan.io import read_ct_series

    return read_ct_series(patient.ct).grid.with_spacing(10.0)


@_SETTINGS
@given(index=st.integers(0, 10_000), value=_VALUES)
def test_rtdose_reader_random_corruption(patient, tmp_path, index, value):
    from sbrtplan.io import read_rtdose

    dst = tmp_path / "rd.dcm"
    assume(_corrupt(patient.rtdose, dst, index, value))
    _reads_or_refuses(read_rtdose, dst)


@_SETTINGS
@given(index=st.integers(0, 10_000), value=_VALUES)
def test_rtplan_reader_random_corruption(patient, tmp_path, index, value):
    from sbrtplan.io import read_rtplan

    dst = tmp_path / "rp.dcm"
    assume(_corrupt(patient.rtplan, dst, index, value))
    _reads_or_refuses(read_rtplan, dst)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(index=st.integers(0, 10_000), value=_VALUES)
def test_rtstruct_reader_random_corruption(patient, coarse_grid, tmp_path, index, value):
    from sbrtplan.io import read_rtstruct

    dst = tmp_path / "rs.dcm"
    assume(_corrupt(patient.rtstruct, dst, index, value))
    _reads_or_refuses(lambda p: read_rtstruct(p, coarse_grid, occupancy=False), dst)

"""Checks of command-line options and output paths, run before any computation.

Each check raises :class:`~sbrtplan.errors.InputError` with one line that names
the option, the value and what was expected.  The ranges come from
``sbrtplan/data/input_limits.yaml``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .._limits import limit
from ..errors import InputError

#: Dask scheduler addresses: protocol://host[:port] (the protocols dask.distributed accepts).
_SCHEDULER_RE = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://[A-Za-z0-9_.\-\[\]:]+(:\d{1,5})?/?$")


def check_number(value, option: str, lo: float | None = None, hi: float | None = None, *,
                 integer: bool = False, unit: str = "") -> float:
    """``value`` finite and within [lo, hi]; returns it (int when ``integer``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{option}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{option}: expected a finite number, got {value!r}")
    if integer and v != int(v):
        raise InputError(f"{option}: expected a whole number, got {value!r}")
    u = f" {unit}" if unit else ""
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f"between {lo:g} and {hi:g}{u}" if lo is not None and hi is not None
               else f">= {lo:g}{u}" if lo is not None else f"<= {hi:g}{u}")
        raise InputError(f"{option} {value!r}: expected {rng}")
    return int(v) if integer else v


def check_grid_mm(value, option: str = "--grid-mm") -> float:
    lo, hi = limit("options", "grid_mm")
    return check_number(value, option, lo, hi, unit="mm")


def check_plan_options(args) -> None:
    """The options of :func:`~sbrtplan.cli._common.add_plan_arguments` (plan, benchmark, compare-*)."""
    if getattr(args, "grid_mm", None) is not None:
        check_grid_mm(args.grid_mm)
    beams = getattr(args, "beams", None)
    if beams is not None:
        lo, hi = limit("options", "imrt_beams")
        check_number(beams, "--beams", lo, hi, integer=True)
        if getattr(args, "technique", "imrt") == "vmat":
            raise InputError(f"--beams {beams}: the number of beams applies to IMRT; VMAT plans use the site's "
                             "arcs (give --technique imrt, or leave --beams out)")
    check_max_memory(args)


def check_max_memory(args) -> float | None:
    v = getattr(args, "max_memory_gib", None)
    if v is None:
        return None
    lo, hi = limit("options", "max_memory_gib")
    return check_number(v, "--max-memory-gib", lo, hi, unit="GiB")


def check_workers(value, option: str = "--workers") -> int:
    lo, hi = limit("options", "workers")
    return int(check_number(value, option, lo, hi, integer=True))


def check_connect_timeout(value, option: str = "--connect-timeout") -> float | None:
    """Seconds to wait for a Dask scheduler (None: the default)."""
    if value is None:
        return None
    lo, hi = limit("options", "connect_timeout_s")
    return check_number(value, option, lo, hi, unit="s")


def check_scheduler(address: str | None) -> None:
    """A Dask scheduler address ``tcp://host:port`` (syntax only; the connection is tried later)."""
    if address is None:
        return
    if not _SCHEDULER_RE.match(str(address).strip()):
        raise InputError(f"--scheduler {address!r}: expected an address such as tcp://HOST:8786")


def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_writable_parent(p: Path, option: str) -> None:
    anc = _nearest_existing(p.parent if p.parent != Path("") else Path("."))
    if not anc.is_dir():
        raise InputError(f"{option} {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: folder {anc} is not writable")
    # permission bits are not the whole story (a read-only or virtual file system, or a run as
    # root): create and remove a folder there, so the outputs are not refused only after the plan
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sbrtplan-probe-", dir=anc))
    except OSError as exc:
        raise InputError(f"{option} {p}: cannot create a folder in {anc} ({exc.strerror})") from None


def check_output_dir(path, option: str = "--out") -> Path:
    """An output folder: absent (its nearest existing parent writable) or a writable folder."""
    if path is None or str(path).strip() == "":
        raise InputError(f"{option}: expected a folder name, got {path!r}")
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{option} {p}: exists and is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{option} {p}: folder is not writable")
    _check_writable_parent(p, option)
    return p


def check_output_file(path, option: str, suffixes: tuple[str, ...] = ()) -> Path | None:
    """An output file: not a folder, its folder writable (created when absent), suffix among ``suffixes``."""
    if path is None:
        return None
    p = Path(path)
    if str(path).strip() == "" or p.name in ("", ".", ".."):
        raise InputError(f"{option}: expected a file name, got {path!r}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{option} {p}: expected a file name ending in {' or '.join(suffixes)}")
    if p.is_dir():
        raise InputError(f"{option} {p}: is a folder; expected a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{option} {p}: file is not writable")
    _check_writable_parent(p, option)
    return p


def check_input_path(path, option: str, *, folder: bool | None = None) -> Path:
    """An input file (``folder=False``), folder (``True``) or either (``None``) that exists."""
    if path is None or str(path).strip() == "":
        raise InputError(f"{option}: expected a path, got {path!r}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{option} {p}: no such {'folder' if folder else 'file' if folder is False else 'file or folder'}")
    if folder is True and not p.is_dir():
        raise InputError(f"{option} {p}: expected a folder, got a file")
    if folder is False and not p.is_file():
        raise InputError(f"{option} {p}: expected a file, got a folder")
    return p


def check_evaluate_args(args) -> None:
    """Options of ``sbrtplan evaluate`` checked before any file is read."""
    if getattr(args, "prior_fractions", None) is not None:
        check_number(args.prior_fractions, "--prior-fractions", 1, limit("rtplan", "max_fractions"), integer=True)
    if getattr(args, "interval_months", None) is not None:
        check_number(args.interval_months, "--interval-months", 0, 1200, unit="months")
    check_output_file(getattr(args, "json", None), "--json")
    check_output_file(getattr(args, "dvh_csv", None), "--dvh-csv")
    if getattr(args, "ct", None) is not None:
        check_input_path(args.ct, "--ct")
    from ..io.validate import check_same_patient

    def present(*pairs):
        return [(f"{o} {v}", v) for o, v in pairs if v is not None and Path(v).exists()]

    rtdose, ct, prior = args.rtdose, getattr(args, "ct", None), getattr(args, "prior_rtdose", None)
    check_same_patient(present(("--rtdose", rtdose), ("--ct", ct), ("--prior-rtdose", prior)))
    # the structures' frame is compared ROI by ROI by the command itself (its message names the ROIs)
    check_same_patient(present(("--rtdose", rtdose), ("--rtstruct", args.rtstruct)), frames=False)


def check_something_evaluable(report, source: str) -> None:
    """A protocol evaluation in which no goal could be evaluated is an error, not a pass."""
    goals = getattr(report, "goals", None) or []
    if not goals:
        return
    def evaluated(g) -> bool:
        st = str(getattr(getattr(g, "status", None), "value", getattr(g, "status", "")))
        # a goal on the whole dose grid (global maximum) says nothing about these structures
        return st != "not_evaluable" and getattr(g, "structure", None) not in (None, "", "dose grid")

    if not any(evaluated(g) for g in goals):
        raise InputError(f"{source}: none of the protocol's {len(goals)} goals could be evaluated (structures "
                         "missing or empty on the dose grid); check --target, --map and the structure names")


def _target_names(args) -> list[str]:
    """Target names the options give: ``--target`` (one name, or NAME:TOTAL/FRACTIONS repeated) or
    ``--targets FILE`` (already checked by the command)."""
    from ..errors import SbrtplanError

    if getattr(args, "targets", None):
        try:
            from ..workflow.targets import load_targets_file

            return [t.name for t in load_targets_file(args.targets)]
        except (SbrtplanError, ImportError):
            return []
    given = getattr(args, "target", None)
    if isinstance(given, str):
        return [given]
    return [str(g).rsplit(":", 1)[0] if "/" in str(g) else str(g) for g in (given or [])]


def check_plan_memory(case, args, *, techniques=None) -> None:
    """Refuse a job whose memory would exceed the available memory or ``--max-memory-gib``, before anything
    is built: the dose grid (at ``--grid-mm`` over the body) and, for the planning commands (``techniques``,
    default ``--technique`` where the command has it), the plan's influence matrix estimated from the
    target's projection, the beamlet size, the beams or arc sectors and the voxels within reach
    (:func:`sbrtplan._resources.estimate_plan_influences`)."""
    from .._log import get_logger
    from .._resources import check_plan_memory as check, plan_targets

    grid_mm = float(getattr(args, "grid_mm", None) or 2.0)
    if techniques is None:
        t = getattr(args, "technique", None)
        techniques = (t,) if t in ("vmat", "imrt") else ()
    targets = plan_targets(case, _target_names(args), getattr(args, "protocol", None)) if techniques else None
    ests = check(case, targets, techniques=techniques, grid_mm=grid_mm,
                 max_memory_gib=getattr(args, "max_memory_gib", None), n_beams=getattr(args, "beams", None),
                 select_beams=not getattr(args, "template_beams", False))
    for e in ests:
        get_logger(__name__).info("memory estimate: %s, peak %.2f GiB", e.describe(), e.peak_bytes / 2 ** 30)


def check_recompute_args(args):
    """Options and files of ``sbrtplan recompute`` checked before any computation; returns the
    ``--reference-rtdose`` read (scaling and values checked), or None.  Its overlap with the case is
    :func:`~sbrtplan.io.validate.check_reference_dose`, once the case is read."""
    check_grid_mm(args.grid_mm)
    check_max_memory(args)
    check_output_dir(args.out)
    check_input_path(args.ct, "--ct", folder=True)
    check_input_path(args.rtstruct, "--rtstruct", folder=False)
    check_input_path(args.rtplan, "--rtplan", folder=False)
    ref = getattr(args, "reference_rtdose", None)
    if ref is not None:
        check_input_path(ref, "--reference-rtdose", folder=False)
    from ..io.validate import check_same_patient

    check_same_patient([(f"{o} {v}", v) for o, v in (("--ct", args.ct), ("--rtstruct", args.rtstruct),
                                                       ("--rtplan", args.rtplan), ("--reference-rtdose", ref))
                        if v is not None])
    if ref is not None:
        from ..io import read_rtdose

        return read_rtdose(ref)  # DoseGridScaling and the values refused here, not after the dose
    return None


def check_dij_args(args) -> None:
    """Options of ``sbrtplan dij`` (beams, angles, sizes, output) before the case is read."""
    check_grid_mm(args.grid_mm)
    check_max_memory(args)
    lo, hi = limit("options", "dij_beams")
    if not args.gantry:
        check_number(args.beams, "--beams", lo, hi, integer=True)
    else:
        if len(args.gantry) > hi:
            raise InputError(f"--gantry: {len(args.gantry)} angles; expected at most {hi}")
        for a in args.gantry:
            check_number(a, "--gantry", -360, 360, unit="deg")
    for a in args.couch or []:
        check_number(a, "--couch", -360, 360, unit="deg")
    check_number(args.collimator, "--collimator", -360, 360, unit="deg")
    check_number(args.beamlet_mm, "--beamlet-mm", 1.0, 20.0, unit="mm")
    check_number(args.margin_mm, "--margin-mm", 0.0, 50.0, unit="mm")
    if args.cutoff_mm is not None:
        check_number(args.cutoff_mm, "--cutoff-mm", 5.0, 200.0, unit="mm")
    check_output_file(args.out, "--out", (".npz", ".mat"))

"""Compile the kernels of a plan's late stages in a second process while the plan starts.

A fresh installation compiles its numba kernels on first use, one after the other on the plan's
critical path (about 27 s of the demo's first run on a 2-core machine).  The kernels of the late
stages -- the fluence-map dose of the final dose, the sub-voxel DVH and conformity kernels of the
normalisation and the evaluation, the independent MU check -- are compiled here by a second
process that runs those stages on a tiny water phantom, while the plan builds its structures and
its influence matrix (single-threaded while its own first kernels compile, so the second core is
free; the process runs at the lowest scheduling priority, so it takes only what the plan leaves).  Numba's on-disk cache hands the compiled kernels over: the same functions called with the
same array types give the same signatures.  With a warm cache the process only loads them (a few
seconds of one core) and exits; a failure there costs the plan nothing but the compilation time.

``python -m sbrtplan.workflow.precompile`` runs :func:`compile_late_kernels`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

from ..beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel, Technique
from ..case import Dose, Grid, Structure, StructureRole
from ..dose_engine import default_beam_model, forward_dose_by_beam, mu_check
from ..evaluation import evaluate_plan


def _water_case() -> tuple[Grid, np.ndarray, dict[str, Structure]]:
    grid = Grid((24, 24, 24), (4.0, 4.0, 4.0), (-46.0, -46.0, -46.0))
    density = np.ones(grid.shape, np.float32)
    z, y, x = np.meshgrid(*(grid.origin_mm[::-1][a] + grid.spacing_mm[::-1][a] * np.arange(grid.shape[a])
                            for a in range(3)), indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    # a sphere with partial voxels at its surface: the sub-voxel DVH path of the evaluation
    frac = np.clip((15.0 - r) / 4.0 + 0.5, 0.0, 1.0).astype(np.float32)
    ptv = Structure("PTV", grid, frac >= 0.5, StructureRole.PTV, fraction=frac)
    body = Structure("External", grid, np.ones(grid.shape, bool), StructureRole.EXTERNAL)
    return grid, density, {"PTV": ptv, "External": body}


def compile_late_kernels() -> None:
    """Run the final-dose, evaluation and MU-check kernels once on a tiny water phantom."""
    grid, density, structures = _water_case()
    mlc = MLCModel.millennium120()
    ap = Aperture.rectangle(mlc, (-20.0, 20.0), (-20.0, 20.0))
    arc = Beam("warm-up arc", [ControlPoint(g, ap, i / 2.0) for i, g in enumerate((0.0, 4.0, 8.0))], mu=100.0,
               mlc=mlc, isocenter_mm=(0.0, 0.0, 0.0), technique=Technique.VMAT, arc_direction="CW")
    beams = BeamSet([arc], n_fractions=1, prescription_gy=1.0)
    model = default_beam_model()
    vox = np.flatnonzero(density.reshape(-1) > 0).astype(np.int64)
    # the VMAT final dose: fluence maps of each sector (workflow.vmat._resolve_on_delivered)
    per_beam = forward_dose_by_beam(density, grid, beams, vox, model=model, max_gantry_step_deg=1.0,
                                    max_leaf_step_mm=5.0, arc_bin_deg=4.0 + 1e-6)
    dose = np.zeros(grid.size, np.float32)
    dose[vox] = np.asarray(per_beam, np.float32).sum(axis=0) * 100.0
    evaluate_plan(Dose(grid, dose.reshape(grid.shape)), structures, rx_gy=float(dose.max()) * 0.8)
    mu_check(beams, density, grid, None, model=model)


#: The background process, kept referenced (and so reaped) while this process runs.
_STARTED: list[subprocess.Popen] = []
#: The open lock file of a running compile process (held until it exits).
_LOCK: list = []


def _only_instance() -> bool:
    """Whether no other compile process of this user runs (an exclusive lock; always True without fcntl).

    Planning commands started in quick succession (a test suite, a shell loop) would otherwise start
    one compile process each, all compiling the same kernels at once.
    """
    try:
        import fcntl
    except ImportError:
        return True
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fh = open(os.path.join(tempfile.gettempdir(), f"sbrtplan-precompile-{uid}.lock"), "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return False
    _LOCK.append(fh)
    return True


def start_background_compile() -> subprocess.Popen | None:
    """Start :func:`compile_late_kernels` in a second process (None on one core or without JIT).

    Called by ``sbrtplan plan`` and ``sbrtplan demo`` once their inputs are checked, so a refused
    command starts nothing.  The process is not waited for: it ends on its own (seconds with a
    warm cache, about half a minute of one core on a fresh installation).
    """
    if (os.cpu_count() or 1) < 2 or os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "sbrtplan.workflow.precompile"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    _STARTED.append(proc)
    return proc


if __name__ == "__main__":
    # lowest claim on the processors: the plan's own threads go first, this process takes what
    # they leave idle (the second core while the plan compiles its first kernels on one)
    if hasattr(os, "nice"):
        os.nice(19)
    if _only_instance():
        compile_late_kernels()

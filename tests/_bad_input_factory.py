"""Builds a small, consistent DICOM patient (CT, RTSTRUCT, RTPLAN, RTDOSE) from the spine phantom at
a coarse grid, and corrupted copies of its files, for the bad-input corpus (``tests/test_bad_inputs*.py``).

Nothing here is shipped data: every file is written at test time into a temporary folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

#: coarse grid of the phantom (mm): 28 x 52 x 76 voxels, written in about a second
SPACING_MM = 5.0


@dataclass
class Patient:
    root: Path
    ct: Path
    rtstruct: Path
    rtplan: Path
    rtdose: Path
    frame_uid: str
    patient_id: str


def _beam_set(case):
    from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel

    ptv = case.structure("PTV")
    iso = tuple(float(v) for v in ptv.centroid_mm()) if hasattr(ptv, "centroid_mm") else \
        tuple(float(v) for v in case.grid.patient_from_index(np.argwhere(ptv.mask).mean(0)))
    mlc = MLCModel.millennium120()
    beams = []
    for i, g in enumerate((0.0, 72.0, 144.0, 216.0, 288.0)):
        ap = Aperture.rectangle(mlc, (-20.0, 20.0), (-20.0, 20.0))
        cps = [ControlPoint(g, ap, 0.0), ControlPoint(g, ap, 1.0)]
        beams.append(Beam(name=f"F{i + 1}", control_points=cps, mu=250.0, mlc=mlc, isocenter_mm=iso))
    return BeamSet(beams=beams, n_fractions=3, prescription_gy=27.0, machine_name="TrueBeam")


def build_patient(root: Path) -> Patient:
    """Write the phantom patient into ``root`` (CT/ folder and three RT files)."""
    from sbrtplan.case import Dose
    from sbrtplan.io import write_ct_series, write_rtdose, write_rtplan, write_rtstruct
    from sbrtplan.phantoms import make_phantom

    case = make_phantom("spine", spacing_mm=SPACING_MM)
    root.mkdir(parents=True, exist_ok=True)
    ct = root / "CT"
    write_ct_series(case, ct)
    rs = root / "RTSTRUCT.dcm"
    ss_uid = write_rtstruct(case, rs)
    rp = root / "RTPLAN.dcm"
    write_rtplan(_beam_set(case), rp, case=case, rtstruct_uid=ss_uid)
    # a smooth dose: 27 Gy on the PTV falling off with distance (a plausible SBRT shape, not a computed one)
    ptv = case.structure("PTV").mask
    c = np.argwhere(ptv).mean(0)
    kk, jj, ii = np.indices(case.grid.shape)
    r_mm = SPACING_MM * np.sqrt((kk - c[0]) ** 2 + (jj - c[1]) ** 2 + (ii - c[2]) ** 2)
    dose = (29.0 * np.exp(-(r_mm / 40.0) ** 2)).astype(np.float32)
    rd = root / "RTDOSE.dcm"
    write_rtdose(Dose(case.grid, dose), case.grid, rd, case=case, bits_allocated=16)
    return Patient(root, ct, rs, rp, rd, str(case.patient.frame_of_reference_uid), str(case.patient.patient_id))


def copy_patient(p: Patient, dest: Path) -> Patient:
    shutil.copytree(p.root, dest)
    return Patient(dest, dest / "CT", dest / "RTSTRUCT.dcm", dest / "RTPLAN.dcm", dest / "RTDOSE.dcm",
                   p.frame_uid, p.patient_id)


def edit(path: Path, fn) -> Path:
    """Apply ``fn(ds)`` to the DICOM file at ``path`` and save it in place."""
    ds = pydicom.dcmread(str(path))
    fn(ds)
    ds.save_as(str(path))
    return path


def edit_ct_folder(folder: Path, fn) -> None:
    for f in sorted(folder.glob("*.dcm")):
        edit(f, fn)

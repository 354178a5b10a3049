"""OpenKBP import: axes, volumes, reference dose."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtplan.case import StructureRole
from sbrtplan.errors import InputError
from sbrtplan.io import load_case, read_openkbp


@pytest.fixture(scope="module")
def pt1():
    from conftest import SHARED_DATA

    d = SHARED_DATA / "openkbp" / "train-pats" / "pt_1"
    if not d.is_dir():
        pytest.skip(f"reference data not available: {d}")
    return d, load_case(d)


def _count(path) -> int:
    return sum(1 for line in path.read_text().splitlines()[1:] if line.strip())


def test_openkbp_grid_and_volumes(pt1):
    d, case = pt1
    assert case.grid.shape == (128, 128, 128)
    dims = np.loadtxt(d / "voxel_dimensions.csv")
    assert np.allclose(sorted(case.grid.spacing_mm), sorted(dims))
    # each mask keeps every voxel of its sparse file
    for s in case.structures.values():
        if s.role == StructureRole.EXTERNAL:
            continue
        src = d / f"{s.original_name}.csv"
        assert s.n_voxels == _count(src), s.name
    assert case.structure("Parotid_L").role == StructureRole.OAR
    assert case.structure("PTV70").role == StructureRole.PTV


def test_openkbp_anatomical_axes(pt1):
    """Patient LPS axes recovered from anatomy (a wrong axis order or sign fails one of these)."""
    _, case = pt1
    c = {n: case.structure(n).centroid_mm() for n in ("Parotid_L", "Parotid_R", "Brainstem", "SpinalCord",
                                                       "Bone_Mandible")}
    assert c["Parotid_L"][0] - c["Parotid_R"][0] > 60.0  # left parotid at +x, about 10 cm apart
    assert c["Brainstem"][2] - c["SpinalCord"][2] > 50.0  # brainstem superior of the cord
    assert c["SpinalCord"][1] - c["Bone_Mandible"][1] > 60.0  # cord posterior of the mandible
    # CT numbers: soft tissue around 0 HU inside the body, air at -1024 HU outside
    body = case.structure("External").mask
    assert -100 < float(np.median(case.hu[body])) < 100
    assert float(np.median(case.hu[~body])) == pytest.approx(-1024.0)


def test_openkbp_reference_dose(pt1):
    _, case = pt1
    dose = case.doses["reference"]
    assert dose.grid == case.grid
    ptv70 = case.structure("PTV70").mask
    # a 70 Gy plan (35 fractions): PTV70 mean within 5 % of 70 Gy and D95 above 93 %
    assert float(dose.dose_gy[ptv70].mean()) == pytest.approx(70.0, rel=0.05)
    assert float(np.percentile(dose.dose_gy[ptv70], 5)) > 0.93 * 70.0
    # no dose outside the possible-dose mask, by construction of the data set
    assert float(dose.dose_gy[~case.structure("PossibleDoseMask").mask].max()) == 0.0


def test_openkbp_bad_folder(tmp_path):
    (tmp_path / "ct.csv").write_text(",data\n1,2\n")
    with pytest.raises(InputError, match="voxel_dimensions.csv"):
        read_openkbp(tmp_path)
    (tmp_path / "voxel_dimensions.csv").write_text("3.9\n3.9\n")
    with pytest.raises(InputError, match="three positive voxel sizes"):
        read_openkbp(tmp_path)
    (tmp_path / "voxel_dimensions.csv").write_text("3.9\n3.9\n2.5\n")
    (tmp_path / "ct.csv").write_text(",data\n99999999,2\n")
    with pytest.raises(InputError, match="outside the 128"):
        read_openkbp(tmp_path)

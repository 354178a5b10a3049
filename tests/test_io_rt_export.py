"""DICOM RT export: CT series, RTSTRUCT (contours from masks) and RTDOSE written for a
phantom, read back with pydicom and checked against the case; dciodvfy when available."""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from sbrtplan.case import Dose, Structure, StructureRole
from sbrtplan.errors import InputError, StructureError
from sbrtplan.io.ctwrite import write_ct_series
from sbrtplan.io.contours import mask_contours, match_area
from sbrtplan.io.rtexport import write_rtdose, write_rtstruct
from sbrtplan.phantoms import make_phantom


@pytest.fixture(scope="module")
def case():
    # 3 mm: the 10 mm spinal cord is still a few voxels wide, and the test stays fast
    c = make_phantom("spine", spacing_mm=3.0)
    # an annulus (ring with a hole) to check that holes are written as separate contours
    g = c.grid
    z, y, x = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    r = np.hypot((x - g.nx / 2) * g.spacing_mm[0], (y - g.ny / 2) * g.spacing_mm[1])
    ring = (r >= 15) & (r <= 30) & (np.abs(z - g.nz / 2) * g.spacing_mm[2] <= 12)
    c.add_structure(Structure("TestRing", g, ring, role=StructureRole.CONTROL))
    return c


@pytest.fixture(scope="module")
def exported(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    ct_paths = write_ct_series(case, out / "ct")
    uid = write_rtstruct(case, out / "rtstruct.dcm")
    return out, ct_paths, uid


def _points_in_polygon(px, py, poly):
    """Even-odd (crossing number) test of points (px, py) against a closed polygon (N, 2)."""
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        crosses = (b > py) != (d > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xint)
    return inside


def _rasterise(ds, roi_number, grid):
    """Rebuild a mask from the RTSTRUCT contours by voxel-centre point-in-polygon (even-odd)."""
    mask = np.zeros(grid.shape, dtype=bool)
    xs, ys, zs = grid.axis_coordinates_mm()
    px, py = np.meshgrid(xs, ys)
    area_mm2 = np.zeros(grid.nz)
    for rc in ds.ROIContourSequence:
        if int(rc.ReferencedROINumber) != roi_number:
            continue
        for c in rc.ContourSequence:
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            assert int(c.NumberOfContourPoints) == len(pts)
            assert np.ptp(pts[:, 2]) < 1e-6  # planar, on one slice
            k = int(np.argmin(np.abs(zs - pts[0, 2])))
            assert abs(zs[k] - pts[0, 2]) < 1e-3  # on a CT slice position
            mask[k] ^= _points_in_polygon(px, py, pts[:, :2])
            x, y = pts[:, 0], pts[:, 1]
            a = 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
            area_mm2[k] += a  # signed: outlines and holes run in opposite senses
    return mask, np.abs(area_mm2)


def test_ct_series_round_trip(case, exported):
    out, ct_paths, _ = exported
    g = case.grid
    assert len(ct_paths) == g.nz
    hu = np.zeros(g.shape, np.float32)
    for k, p in enumerate(ct_paths):
        ds = pydicom.dcmread(p)
        assert ds.SOPInstanceUID == case.patient.ct_sop_instance_uids[k]
        assert ds.StudyInstanceUID == case.patient.study_instance_uid
        assert ds.SeriesInstanceUID == case.patient.series_instance_uid
        assert ds.FrameOfReferenceUID == case.patient.frame_of_reference_uid
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        # slice k sits where the grid puts it (positions written to 0.1 um)
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], g.patient_from_index([k, 0, 0]), atol=1e-3)
        hu[k] = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # stored as integers: at most 0.5 HU rounding (a 0.05 % change in electron density)
    assert np.max(np.abs(hu - case.hu)) <= 0.5 + 1e-3


def test_rtstruct_references_and_types(case, exported):
    out, _, uid = exported
    ds = pydicom.dcmread(out / "rtstruct.dcm")
    assert ds.SOPInstanceUID == uid == case.metadata["rtstruct_uid"]
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == case.patient.study_instance_uid
    ct = pydicom.dcmread(exported[1][0], stop_before_pixels=True)
    assert (ds.StudyDate, ds.StudyTime, ds.PatientName) == (ct.StudyDate, ct.StudyTime, ct.PatientName)
    rfor = ds.ReferencedFrameOfReferenceSequence[0]
    assert rfor.FrameOfReferenceUID == case.patient.frame_of_reference_uid
    series = rfor.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == case.patient.series_instance_uid
    refs = [im.ReferencedSOPInstanceUID for im in series.ContourImageSequence]
    assert refs == case.patient.ct_sop_instance_uids
    numbers = {r.ROIName: int(r.ROINumber) for r in ds.StructureSetROISequence}
    assert set(numbers) == set(case.structures)
    assert numbers == case.metadata["rtstruct_roi_numbers"]
    types = {int(o.ReferencedROINumber): o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert types[numbers["External"]] == "EXTERNAL"
    assert types[numbers["PTV"]] == "PTV" and types[numbers["GTV"]] == "GTV"
    assert types[numbers["SpinalCord"]] == "ORGAN" and types[numbers["SpinalCord_PRV02"]] == "AVOIDANCE"
    # each contour points to the CT slice it lies on
    zs = case.grid.axis_coordinates_mm()[2]
    uids = case.patient.ct_sop_instance_uids
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence[:5]:
            k = int(np.argmin(np.abs(zs - float(c.ContourData[2]))))
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID == uids[k]


def _near_edge(s):
    """Voxels within one voxel (in-plane) of the structure's edge: some neighbour is partly outside
    and some neighbour is partly inside."""
    from scipy import ndimage

    w = s.weights
    return (ndimage.minimum_filter(w, size=(1, 3, 3)) < 1.0) & (ndimage.maximum_filter(w, size=(1, 3, 3)) > 0.0)


def test_rtstruct_contours_rebuild_the_masks(case, exported):
    out, _, _ = exported
    ds = pydicom.dcmread(out / "rtstruct.dcm")
    numbers = {r.ROIName: int(r.ROINumber) for r in ds.StructureSetROISequence}
    g = case.grid
    for name, s in case.structures.items():
        mask, area = _rasterise(ds, numbers[name], g)
        v_in = s.mask.sum() * g.voxel_volume_cc
        v_out = mask.sum() * g.voxel_volume_cc
        v_poly = area.sum() * g.spacing_mm[2] / 1000.0  # what a TPS reports: contour area x slice thickness
        if s.fraction is None:
            # Without an occupancy the contour runs half-way between voxel centres inside and outside,
            # so voxel-centre rasterisation (what a TPS does) gives back the mask exactly (0 voxels
            # differ for every phantom structure); only a marching-squares saddle cell (two diagonal
            # voxels) could differ: allow 0.5 %.
            assert v_out == pytest.approx(v_in, rel=0.005), name
            assert np.count_nonzero(mask != s.mask) <= 0.005 * s.mask.sum() + 2, name
            # The polygon area cuts each convex voxel corner by a triangle (1/8 voxel) and so runs a
            # little under the voxel count: allow 4 % from 20 cc (-0.1 % for the body here).
            assert v_poly <= v_in * 1.001, name
            if v_in >= 20.0:
                assert v_poly == pytest.approx(v_in, rel=0.04), name
        else:
            # With an occupancy the outlines of every slice are shifted to enclose the slice's occupied
            # area, so the contoured volume is the structure's own (sub-voxel) volume; what remains is
            # the 1 um rounding of the written points and the Newton residual: 0.5 % is ample (the
            # largest deviation here is 0.05 %).  Before, the mask's outline gave the PTV +8 %.
            assert v_poly == pytest.approx(s.volume_cc, rel=0.005), name
            # The voxel-centre mask of these contours differs from the phantom's only at the edge:
            # never a voxel more than one voxel away from a partly covered one.
            differ = mask != s.mask
            assert not np.any(differ & ~_near_edge(s)), name
            assert np.count_nonzero(differ) <= 0.25 * s.mask.sum(), name


def test_holes_are_separate_contours(case, exported):
    out, _, _ = exported
    ds = pydicom.dcmread(out / "rtstruct.dcm")
    num = case.metadata["rtstruct_roi_numbers"]["TestRing"]
    rc = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == num)
    zs = [float(c.ContourData[2]) for c in rc.ContourSequence]
    # every slice of the annulus has an outer outline and a hole outline
    _, counts = np.unique(np.round(zs, 3), return_counts=True)
    assert np.all(counts == 2)
    # and the hole (r < 15 mm) is not filled in: its centre voxel is outside the rebuilt mask
    mask, _ = _rasterise(ds, num, case.grid)
    g = case.grid
    assert not mask[g.nz // 2, g.ny // 2, g.nx // 2]
    assert mask[g.nz // 2].sum() == case.structures["TestRing"].mask[g.nz // 2].sum()


def test_mask_contours_unit_square():
    m = np.zeros((5, 6), bool)
    m[1:3, 2:5] = True  # 2 rows x 3 columns of voxels
    (poly,) = mask_contours(m)
    # level 0.5 between centres: corners cut by half-voxel diagonals -> area 6 - 4 * 1/8
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert area == pytest.approx(6 - 0.5)
    assert x.min() == pytest.approx(1.5) and x.max() == pytest.approx(4.5)
    assert y.min() == pytest.approx(0.5) and y.max() == pytest.approx(2.5)


def test_occupancy_contours_keep_area_and_edge():
    """A disk 4 voxels wide given by its occupancy (the cord on a 2.5 mm grid): the contour traced at
    0.5 and shifted to the occupied area has that area and lies on the circle."""
    n, sub, r_vox, cx, cy = 24, 10, 2.0, 11.3, 11.7
    c = (np.arange(n * sub) + 0.5) / sub - 0.5
    x, y = np.meshgrid(c, c)
    occ = ((x - cx) ** 2 + (y - cy) ** 2 <= r_vox ** 2).reshape(n, sub, n, sub).mean(axis=(1, 3))
    raw = mask_contours(occ)
    (poly,) = match_area(raw, float(occ.sum()))
    # the plain 0.5 level of the occupancy rounds off the thin disk (its bilinear interpolation cuts
    # the curve): 1 % or more too small; shifted, the area is the occupied area (Newton, 1e-6)
    assert _area(raw[0]) < 0.99 * occ.sum()
    assert _area(poly) == pytest.approx(occ.sum(), rel=1e-6)
    # 10 x 10 sub-samples per voxel give the occupancy to 1 % of a voxel; the outline then lies within
    # a quarter voxel of the true circle (0.13 voxel at most here)
    rad = np.hypot(poly[:, 0] - cx, poly[:, 1] - cy)
    assert np.all(np.abs(rad - r_vox) <= 0.25)


def test_occupancy_contours_holes_and_half_covered_slices():
    """Holes shrink when the region grows, and a slice half covered along the slice axis (the end of
    an organ: a plateau of occupancy 0.5) keeps half its area."""
    occ = np.zeros((14, 14))
    occ[2:12, 2:12] = 1.0
    occ[5:9, 5:9] = 0.0  # 4 x 4 hole
    polys = match_area(mask_contours(occ), float(occ.sum()))
    assert len(polys) == 2
    outer, hole = sorted(polys, key=_area, reverse=True)
    assert _area(outer) - _area(hole) == pytest.approx(occ.sum(), rel=1e-6)
    # the mask-like field's 0.5 level cuts the 4 outer corners and the hole's (1/8 voxel each), so the
    # shift is outwards and the hole gets smaller than its 16 voxels
    assert _area(hole) < 16.0 < _area(hole) + 1.0
    half = np.zeros((12, 12))
    half[3:9, 3:9] = 0.5
    (poly,) = match_area(mask_contours(half), float(half.sum()))
    assert _area(poly) == pytest.approx(18.0, rel=1e-6)  # 36 voxels half covered


def _area(poly):
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_rtdose_round_trip(case, tmp_path):
    g = case.grid.with_spacing(4.0)
    z, y, x = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    dose = (30.0 * np.exp(-((x - g.nx / 2) ** 2 + (y - g.ny / 2) ** 2 + (z - g.nz / 2) ** 2) / 80.0)).astype(np.float32)
    uid = write_rtdose(Dose(g, dose), g, tmp_path / "rd.dcm", case=case, rtplan_uid="1.2.3.4.5")
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    assert ds.SOPInstanceUID == uid
    assert ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL" and ds.DoseSummationType == "PLAN"
    assert int(ds.BitsAllocated) == 32 and int(ds.NumberOfFrames) == g.nz
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"
    assert ds.FrameOfReferenceUID == case.patient.frame_of_reference_uid
    scale = float(ds.DoseGridScaling)
    back = ds.pixel_array.astype(np.float64) * scale
    # integer storage: error at most half a scaling step (about max / 8e9)
    assert np.max(np.abs(back - dose)) <= 0.5 * scale * (1 + 1e-6) + 1e-6 * 30 * 1e-6
    assert scale < 30.0 / 4.0e9
    offsets = np.asarray(ds.GridFrameOffsetVector, float)
    assert offsets[0] == 0.0 and np.allclose(np.diff(offsets), g.spacing_mm[2])
    assert np.allclose([float(v) for v in ds.ImagePositionPatient], g.origin_mm, atol=1e-3)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([g.spacing_mm[1], g.spacing_mm[0]])
    # 16-bit variant: a 65000-level grid, precision max / 1.3e5
    write_rtdose(dose, g, tmp_path / "rd16.dcm", case=case, rtplan_uid="1.2.3.4.5", bits_allocated=16)
    ds16 = pydicom.dcmread(tmp_path / "rd16.dcm")
    back16 = ds16.pixel_array * float(ds16.DoseGridScaling)
    assert np.max(np.abs(back16 - dose)) <= 30.0 / 1.2e5
    # a per-fraction dose says so (FRACTION summation, fraction group 1 of the plan)
    write_rtdose(Dose(g, dose / 3, per_fraction=True), g, tmp_path / "fx.dcm", case=case, rtplan_uid="1.2.3.4.5")
    dfx = pydicom.dcmread(tmp_path / "fx.dcm")
    assert dfx.DoseSummationType == "FRACTION"
    assert int(dfx.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence[0].ReferencedFractionGroupNumber) == 1


def test_bad_input(case, tmp_path):
    g = case.grid.with_spacing(5.0)
    with pytest.raises(InputError, match="shape"):
        write_rtdose(np.zeros((2, 2, 2)), g, tmp_path / "x.dcm", case=case, rtplan_uid="1.2.3")
    with pytest.raises(InputError, match="non-negative"):
        write_rtdose(-np.ones(g.shape), g, tmp_path / "x.dcm", case=case, rtplan_uid="1.2.3")
    c2 = copy.copy(case)
    c2.metadata = {}
    with pytest.raises(InputError, match="RTPLAN"):
        write_rtdose(np.zeros(g.shape), g, tmp_path / "x.dcm", case=c2)
    with pytest.raises(StructureError, match="NoSuchOrgan"):
        write_rtstruct(case, tmp_path / "rs.dcm", structures=["NoSuchOrgan"])
    assert not (tmp_path / "x.dcm").exists() and not (tmp_path / "rs.dcm").exists()


def _dciodvfy_errors(exe, path):
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    return [ln for ln in text.splitlines() if ln.startswith("Error")], text, out.returncode


def test_dciodvfy_reports_no_errors(case, exported, tmp_path):
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    out, ct_paths, _ = exported
    g = case.grid.with_spacing(5.0)
    write_rtdose(np.full(g.shape, 2.0), g, tmp_path / "rd.dcm", case=case, rtplan_uid="1.2.3.4.5")
    write_rtdose(np.full(g.shape, 2.0), g, tmp_path / "rd16.dcm", case=case, rtplan_uid="1.2.3.4.5",
                 bits_allocated=16)
    for path, iod in ((ct_paths[0], "CTImage"), (out / "rtstruct.dcm", "RTStructureSet"),
                      (tmp_path / "rd16.dcm", "RTDose")):
        errors, text, _ = _dciodvfy_errors(exe, path)
        assert errors == [], text
        assert iod in text
    errors, text, rc = _dciodvfy_errors(exe, tmp_path / "rd.dcm")
    if rc != 0 and "Assertion" in text:
        # dicom3tools 1.00~2022 aborts on every 32-bit pixel grid (clinical RTDOSE files too);
        # the 16-bit file above checks every other attribute of the same writer.
        pytest.skip("this dciodvfy aborts on 32-bit pixel data; 16-bit RTDOSE validated instead")
    assert errors == [], text


def test_round_trip_through_the_dicom_readers(case, exported):
    """CT series and RTSTRUCT read back by the package's own DICOM readers give the same case."""
    read_ct_series = pytest.importorskip("sbrtplan.io.dicom_ct").read_ct_series
    read_rtstruct = pytest.importorskip("sbrtplan.io.rtstruct").read_rtstruct
    out, _, _ = exported
    back = read_ct_series(out / "ct")
    assert back.grid.same_as(case.grid)
    assert np.max(np.abs(back.hu - case.hu)) <= 0.5 + 1e-3  # 1 HU integer storage
    assert back.patient.frame_of_reference_uid == case.patient.frame_of_reference_uid
    assert back.patient.ct_sop_instance_uids == case.patient.ct_sop_instance_uids
    structures = {s.name: s for s in read_rtstruct(out / "rtstruct.dcm", back)}
    assert set(structures) == set(case.structures)
    for name, s in case.structures.items():
        r = structures[name]
        if s.fraction is None:
            # contours half-way between voxel centres: the voxel-centre masks agree (0 voxels differ
            # for the phantom; 0.5 % allows for a marching-squares saddle cell)
            assert np.count_nonzero(r.mask != s.mask) <= 0.005 * s.mask.sum() + 2, name
        else:
            # contours of the occupancy: the masks differ only at the edge ...
            assert not np.any((r.mask != s.mask) & ~_near_edge(s)), name
            # ... and the volume survives the round trip (before: PTV 35.3 cc for 32.8 cc, cord -6 %).
            # The reader integrates each voxel row on 6 sub-rows (midpoint rule): an edge parallel to
            # the rows may lose or gain up to 1/12 of a voxel row along it, which is -1.0 % on the
            # 28 cc spinal canal here; 3 % from 5 cc.  The cord is 10 mm wide, 3.3 voxels at 3 mm, so
            # that its edges weigh most relative to its area (perimeter / area ~ 1.2 per voxel, twice
            # the 30 cc PTV's): 4 % (it comes back within 0.2 %).
            tol = 0.04 if name == "SpinalCord" else 0.03
            if s.volume_cc >= 5.0:
                assert r.volume_cc == pytest.approx(s.volume_cc, rel=tol), (name, r.volume_cc, s.volume_cc)
        if s.role != StructureRole.OTHER:
            assert r.role == s.role or (s.role == StructureRole.CONTROL), name


@pytest.mark.slow
def test_clinical_thorax_export(shared_data, tmp_path):
    """On the clinical thorax case: the RTSTRUCT we write refers to the clinical CT images and
    rebuilds the clinical masks; the clinical plan written back out reads back identically."""
    read_ct_series = pytest.importorskip("sbrtplan.io.dicom_ct").read_ct_series
    read_rtstruct = pytest.importorskip("sbrtplan.io.rtstruct").read_rtstruct
    from sbrtplan.io.rtplan import read_rtplan, write_rtplan

    folder = shared_data / "dicom" / "thorax-rt02"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    rs_files = [p for p in folder.glob("*.dcm")
                if pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Modality"]).Modality == "RTSTRUCT"]
    case = read_ct_series(folder)
    ct_uids = list(case.patient.ct_sop_instance_uids)
    for s in read_rtstruct(rs_files[0], case, ["SPINALCORD", "HEART", "PTV4140"], occupancy=False):
        case.add_structure(s)
    write_rtstruct(case, tmp_path / "rs.dcm")
    assert case.patient.ct_sop_instance_uids == ct_uids  # the clinical CT UIDs were kept
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert [im.ReferencedSOPInstanceUID for im in series.ContourImageSequence] == ct_uids
    assert ds.StudyInstanceUID == case.patient.study_instance_uid
    ct0 = pydicom.dcmread(case.metadata["ct_files"][0], stop_before_pixels=True)
    for key in ("StudyID", "AccessionNumber", "PatientID", "PatientName"):
        assert ds.get(key) == ct0.get(key), key  # the study and patient modules repeat the CT's
    # ... except values that break their VR (this anonymised CT has hashes as dates): left empty
    for key in ("StudyDate", "PatientBirthDate"):
        ct_value = str(ct0.get(key, "") or "")
        assert ds.get(key) == (ct_value if ct_value.isdigit() and len(ct_value) == 8 else ""), key
    back = {s.name: s for s in read_rtstruct(tmp_path / "rs.dcm", case, occupancy=False)}
    for name, s in case.structures.items():
        # 0.5 % of the voxels: only marching-squares saddle cells may differ (none do here)
        assert np.count_nonzero(back[name].mask != s.mask) <= 0.005 * s.mask.sum(), name
    plan = read_rtplan(folder / "RTPLAN_Hashed.dcm")
    write_rtplan(plan, tmp_path / "rp.dcm", case=case, target_name="PTV4140")
    again = read_rtplan(tmp_path / "rp.dcm")
    assert again.total_mu_per_fraction == pytest.approx(plan.total_mu_per_fraction, abs=1e-4)
    for a, b in zip(plan.beams, again.beams):
        assert len(a.control_points) == len(b.control_points) and a.mlc.name == b.mlc.name
        x = np.array([cp.aperture.leaf_x1_mm for cp in a.control_points])
        y = np.array([cp.aperture.leaf_x1_mm for cp in b.control_points])
        assert np.max(np.abs(x - y)) <= 1e-3  # positions written to 1 um
    exe = shutil.which("dciodvfy")
    if exe is not None:
        for p in (tmp_path / "rs.dcm", tmp_path / "rp.dcm"):
            errors, text, _ = _dciodvfy_errors(exe, p)
            assert errors == [], text


def test_prone_oblique_axes_round_trip(tmp_path):
    """A head-first prone grid (row and column axes pointing to -x and -y) survives CT,
    RTSTRUCT and RTDOSE export: orientation is written, not assumed."""
    import sbrtplan.io as sio
    from sbrtplan.case import Case, Grid

    g = Grid((12, 30, 40), (2.5, 2.0, 3.0), (50.0, 40.0, -10.0), np.diag([-1.0, -1.0, 1.0]))
    pts = g.voxel_centers_mm().reshape(g.shape + (3,))
    c0 = np.asarray(g.patient_from_index([6, 15, 20]))
    r = np.linalg.norm((pts - c0) / [1.0, 1.0, 1.5], axis=-1)
    body = np.linalg.norm((pts - c0)[..., :2] / [45.0, 28.0], axis=-1) <= 1.0
    ptv = Structure("PTV", g, r <= 15.0, role=StructureRole.PTV)
    case = Case("prone", g, np.where(body, 0.0, -1000.0), {"PTV": ptv}, patient_position="HFP")
    write_ct_series(case, tmp_path)
    write_rtstruct(case, tmp_path / "rs.dcm")
    dose = 20.0 * np.exp(-r ** 2 / 400.0)
    write_rtdose(dose, g, tmp_path / "rd.dcm", case=case, rtplan_uid="1.2.3")
    ct = pydicom.dcmread(tmp_path / "CT_0001.dcm")
    assert [float(v) for v in ct.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert ct.PatientPosition == "HFP"
    rd = pydicom.dcmread(tmp_path / "rd.dcm")
    assert [float(v) for v in rd.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    # the first stored voxel is the grid origin; the next column lies 2.5 mm towards -x
    assert [float(v) for v in rd.ImagePositionPatient] == pytest.approx(list(g.origin_mm))
    assert np.allclose(rd.pixel_array * float(rd.DoseGridScaling), dose, atol=20.0 / 4e9 + 1e-9)
    # a contour point of the PTV lies on the 15 mm sphere boundary (within half a voxel)
    rs = pydicom.dcmread(tmp_path / "rs.dcm")
    p = np.asarray(rs.ROIContourSequence[0].ContourSequence[0].ContourData, float).reshape(-1, 3)
    assert np.all(np.abs(np.linalg.norm((p - c0) / [1.0, 1.0, 1.5], axis=1) - 15.0) <= 2.5)
    if hasattr(sio, "read_ct_series") and hasattr(sio, "read_rtstruct"):
        back = sio.read_ct_series(tmp_path)
        assert back.grid.same_as(g) and back.patient_position == "HFP"
        (s,) = sio.read_rtstruct(tmp_path / "rs.dcm", back, occupancy=False)
        assert np.count_nonzero(s.mask != ptv.mask) <= 2  # one saddle cell at most
    if hasattr(sio, "read_rtdose"):
        d = sio.read_rtdose(tmp_path / "rd.dcm")
        assert d.grid.same_as(g) and np.allclose(d.dose_gy, dose, atol=1e-5)

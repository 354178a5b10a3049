"""Post-implant verification: seed positions from a CT (or a coordinate list), dose, D90/V100/V150/V200,
organ metrics and the comparison with the pre-plan.

Detection (tuning values in ``data/detection.yaml``): voxels above the metal threshold inside the
search box, connected components, the number of seeds in each component from its integrated
brightness (HU above tissue) relative to the median component (a single seed), touching seeds split
by a brightness-weighted k-means seeded along the component's principal axis, centres as weighted
centroids, and the seed axis from the principal axis where the component is elongated enough.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from .._log import Timings, get_logger, timed
from ..case import Case, Dose, Structure
from ..errors import InputError
from .dosimetry import GoalOutcome, evaluate_goals, organ_metrics, position_differences, target_metrics
from .geometry import avoided_structures, crop_structure, dose_box, find_target
from .protocol import SeedProtocol
from .source import SourceData, load_source
from .tg43 import SeedSet, Tg43Model

log = get_logger(__name__)


@dataclass(frozen=True)
class DetectionSettings:
    threshold_hu: float
    roi_margin_mm: float
    connectivity: int
    min_component_voxels: int
    baseline_hu: float
    elongation_ratio: float
    kmeans_iterations: int


def load_detection_settings(path: str | Path | None = None) -> DetectionSettings:
    text = Path(path).read_text() if path else \
        resources.files("sbrtplan.brachy").joinpath("data", "detection.yaml").read_text()
    obj = yaml.safe_load(text) or {}
    try:
        return DetectionSettings(threshold_hu=float(obj["threshold_hu"]), roi_margin_mm=float(obj["roi_margin_mm"]),
                                 connectivity=int(obj["connectivity"]),
                                 min_component_voxels=int(obj["min_component_voxels"]),
                                 baseline_hu=float(obj["baseline_hu"]), elongation_ratio=float(obj["elongation_ratio"]),
                                 kmeans_iterations=int(obj["kmeans_iterations"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"detection settings '{path or 'data/detection.yaml'}': missing or bad value ({e})") from None


@dataclass
class DetectedSeeds:
    positions_mm: np.ndarray
    directions: np.ndarray
    orientation_resolved: np.ndarray
    n_components: int
    n_split_components: int


def _kmeans(pts: np.ndarray, w: np.ndarray, k: int, iterations: int) -> np.ndarray:
    """Weighted k-means with centres started at equal weight quantiles along the principal axis."""
    c = np.average(pts, axis=0, weights=w)
    cov = np.cov((pts - c).T, aweights=w)
    axis = np.linalg.eigh(cov)[1][:, -1]
    t = (pts - c) @ axis
    order = np.argsort(t)
    cw = np.cumsum(w[order]) / w.sum()
    centres = np.array([pts[order][np.searchsorted(cw, (i + 0.5) / k)] for i in range(k)], float)
    for _ in range(iterations):
        lab = np.argmin(((pts[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
        new = np.array([np.average(pts[lab == i], axis=0, weights=w[lab == i]) if np.any(lab == i) else centres[i]
                        for i in range(k)])
        if np.allclose(new, centres, atol=1e-4):
            break
        centres = new
    return lab


def _axis(pts: np.ndarray, w: np.ndarray, ratio: float) -> tuple[np.ndarray, bool]:
    if len(pts) < 3:
        return np.array([0.0, 0.0, 1.0]), False
    c = np.average(pts, axis=0, weights=w)
    vals, vecs = np.linalg.eigh(np.cov((pts - c).T, aweights=w) + 1e-9 * np.eye(3))
    v = vecs[:, -1]
    if v[2] < 0:
        v = -v
    return v, bool(vals[-1] > ratio * max(vals[-2], 1e-9))


def detect_seeds(case: Case, *, target: Structure | None = None, expected_count: int | None = None,
                 settings: DetectionSettings | None = None) -> DetectedSeeds:
    """Seeds in the CT of ``case`` (HU), searched in the target's box (or everywhere)."""
    st = settings or load_detection_settings()
    hu = case.hu
    if target is not None:
        grid, sl = dose_box(case, target, st.roi_margin_mm)
    else:
        grid, sl = case.grid, tuple(slice(0, n) for n in case.grid.shape)
    roi = np.asarray(hu[sl], float)
    bright = roi >= st.threshold_hu
    structure = ndimage.generate_binary_structure(3, 3 if st.connectivity == 26 else 1)
    lab, n = ndimage.label(bright, structure=structure)
    if n == 0:
        return DetectedSeeds(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, bool), 0, 0)
    objs = ndimage.find_objects(lab)
    comps = []
    for i, box in enumerate(objs, start=1):
        m = lab[box] == i
        if m.sum() < st.min_component_voxels:
            continue
        idx = np.argwhere(m) + np.array([b.start for b in box])
        w = roi[tuple(idx.T)] - st.baseline_hu
        comps.append((grid.patient_from_index(idx), np.maximum(w, 1e-3)))
    integrals = np.array([w.sum() for _, w in comps])
    single = float(np.median(integrals))
    counts = np.maximum(1, np.rint(integrals / single).astype(int))
    if expected_count is not None and counts.sum() != expected_count and len(comps) <= expected_count:
        # only components whose brightness lies between two counts (ratio within 0.15 of a half) are
        # moved toward the expected total: the registry never forces a clear single seed to split
        frac = integrals / single - counts
        while counts.sum() < expected_count and np.any(frac > 0.35):
            j = int(np.argmax(frac))
            counts[j] += 1
            frac[j] -= 1
        while counts.sum() > expected_count and np.any((frac < -0.35) & (counts > 1)):
            j = int(np.argmin(np.where(counts > 1, frac, np.inf)))
            counts[j] -= 1
            frac[j] += 1
    pos, dirs, res = [], [], []
    n_split = 0
    for (pts, w), k in zip(comps, counts):
        labels = np.zeros(len(pts), int) if k == 1 else _kmeans(pts, w, int(k), st.kmeans_iterations)
        n_split += int(k > 1)
        for c in range(int(k)):
            sel = labels == c
            if not sel.any():
                continue
            pos.append(np.average(pts[sel], axis=0, weights=w[sel]))
            v, ok = _axis(pts[sel], w[sel], st.elongation_ratio)
            dirs.append(v)
            res.append(ok)
    return DetectedSeeds(np.array(pos), np.array(dirs), np.array(res, bool), len(comps), n_split)


def read_seed_list(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Seed coordinates from a CSV with columns x_mm, y_mm, z_mm [, dx, dy, dz] (header required)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"seed list '{path}': no such file")
    with p.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"x_mm", "y_mm", "z_mm"} <= set(rows[0]):
        raise InputError(f"seed list '{path}': needs a header with x_mm, y_mm, z_mm (optional dx, dy, dz)")
    try:
        pos = np.array([[float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])] for r in rows])
        if {"dx", "dy", "dz"} <= set(rows[0]):
            dirs = np.array([[float(r["dx"]), float(r["dy"]), float(r["dz"])] for r in rows])
        else:
            dirs = np.tile([0.0, 0.0, 1.0], (len(pos), 1))
    except (TypeError, ValueError) as e:
        raise InputError(f"seed list '{path}': a coordinate is not a number ({e})") from None
    if not np.all(np.isfinite(pos)):
        raise InputError(f"seed list '{path}': coordinates must be finite")
    return pos, dirs


@dataclass
class Verification:
    seeds: SeedSet
    detection: DetectedSeeds | None
    dose: Dose
    structures: dict[str, Structure]
    goals: list[GoalOutcome]
    metrics: dict
    discrepancies: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)


def verify_implant(case: Case, protocol: SeedProtocol, *, strength_u: float, source: SourceData | str | None = None,
                   positions_mm: np.ndarray | None = None, directions: np.ndarray | None = None,
                   expected_count: int | None = None, preplan: dict | None = None,
                   settings: DetectionSettings | None = None, timings: Timings | None = None) -> Verification:
    """Post-implant dosimetry of ``case`` (a post-implant CT with structures).

    Seeds come from ``positions_mm`` (a coordinate list) or are detected on the CT.  A found count
    that differs from ``expected_count`` (the registry's implanted seeds) by more than the protocol's
    tolerance is reported in ``discrepancies``; so are pre-plan differences beyond tolerance.
    """
    timings = Timings() if timings is None else timings
    protocol = protocol.with_prescription(None)
    rx = float(protocol.prescription_gy)
    if not (np.isfinite(strength_u) and strength_u > 0):
        raise InputError(f"seed strength must be a positive number of U, got {strength_u!r}")
    src = source if isinstance(source, SourceData) else load_source(source or protocol.default_source)
    target = find_target(case, protocol)
    detection = None
    if positions_mm is None:
        with timed("post-implant: seed detection", log, timings):
            detection = detect_seeds(case, target=target, expected_count=expected_count, settings=settings)
        positions_mm, directions = detection.positions_mm, detection.directions
    seeds = SeedSet(positions_mm, directions if directions is not None else [0.0, 0.0, 1.0], strength_u)
    discrepancies = []
    if expected_count is not None and abs(len(seeds) - expected_count) > protocol.count_tolerance:
        discrepancies.append(f"seed count: {len(seeds)} found on the CT, {expected_count} implanted per the "
                             f"registry (tolerance {protocol.count_tolerance})")
    grid, sl = dose_box(case, target, 15.0)
    organs = [s for s, _ in avoided_structures(case, protocol, target)]
    idx = np.rint(case.grid.index_from_patient(seeds.positions_mm)).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(case.grid.shape)), axis=1)
    for o in organs:
        n_in = int(o.mask[tuple(idx[ok].T)].sum())
        if n_in:
            discrepancies.append(f"{n_in} seed(s) found inside '{o.name}'")
    structures = {s.name: crop_structure(s, grid, sl) for s in [target, *organs]}
    with timed("post-implant: TG-43 dose", log, timings):
        dose = Dose(grid=grid, dose_gy=Tg43Model(src).dose_grid_gy(grid, seeds), description="post-implant dose")
    with timed("post-implant: DVH metrics", log, timings):
        goals = evaluate_goals(dose, structures, structures[target.name], protocol)
        metrics = {"n_seeds_found": len(seeds), "strength_u": float(strength_u),
                   "target": target_metrics(dose, structures[target.name], rx),
                   "organs": [organ_metrics(dose, structures[o.name], rx) for o in organs]}
    if detection is not None:
        metrics["detection"] = {"components": detection.n_components, "split_components": detection.n_split_components,
                                "orientation_resolved": int(detection.orientation_resolved.sum())}
    if preplan:
        pre_pos = np.asarray(preplan.get("positions_mm", []), float).reshape(-1, 3)
        diff = position_differences(seeds.positions_mm, pre_pos, protocol.position_tolerance_mm)
        diff.pop("pairs", None)
        pre_t = preplan.get("target", {})
        post_t = metrics["target"]
        metrics["comparison_with_preplan"] = {
            "n_seeds_planned": int(len(pre_pos)), "n_seeds_found": len(seeds),
            "positions": {k: v for k, v in diff.items() if k != "distances_mm"},
            **{f"delta_{k}": post_t[k] - pre_t[k] for k in ("D90_pct", "V100_pct", "V150_pct", "V200_pct")
               if k in pre_t and k in post_t}}
        if len(pre_pos) != len(seeds):
            discrepancies.append(f"seed count: {len(seeds)} found, {len(pre_pos)} in the pre-plan")
    return Verification(seeds=seeds, detection=detection, dose=dose, structures=structures, goals=goals,
                        metrics=metrics, discrepancies=discrepancies, timings=timings)

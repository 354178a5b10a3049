"""Commissioning: fit the Gaussian pencil-beam model to water-tank scans.

:func:`commission` reads PTW ``.mcc`` files (PDDs and in-/cross-plane
profiles of square fields), fits the model of :mod:`sbrtplan.dose_engine.model`
by bounded non-linear least squares (``scipy.optimize.least_squares``) and
returns the model with a :class:`CommissioningReport` of the agreement:

* PDD: largest local difference beyond the measured d_max (both curves
  normalised to their maximum) and the largest distance-to-agreement in the
  build-up region (from 0.5 mm depth: the reading labelled depth 0 of a
  diode is not the surface dose; its difference is reported separately);
* profiles: 1-D gamma pass rate, 2 % / 2 mm, global (2 % of the profile
  maximum), points below 10 % of the maximum excluded (both profiles
  normalised on the central axis);
* output ratios of every field to the reference field (10 x 10 cm when
  measured) at the depth closest to 100 mm;
* optionally, measured output factors (:class:`MeasuredOutputFactor`, read by
  :func:`~sbrtplan.dose_engine.read_output_factors`): small-field values (detector-corrected, e.g.
  per IAEA TRS-483) are fitted with the scans and reported, within
  ``small_field_tolerance_pct`` below 4 x 4 cm.  Water scans of 5 x 5 cm and
  larger fields do not determine the output of a 1 x 1 cm field (models that
  pass every scan criterion differ by about 7 % there; see
  ``tests/test_dose_commission.py``), so a machine's small-field data belong
  in its commissioning.

What is fitted: the three (or four) photon components (weight, attenuation,
build-up, width at the surface and its growth with depth), the contamination
term, head scatter, source widths and the horn; optionally a shift of each
scanned field's edges, and any extra constraint the caller gives (the shipped
``generic-6MV-sf`` adds the Monte Carlo lung slab: ``tools/commission_generic_6mv.py``).
What is not: the heterogeneity
scaling lengths and exponents (no water scan can see them; defaults in
:data:`DEFAULT_SCALING`, chosen against Monte Carlo lung-slab data, see
``machines/README.md``) and the absolute calibration (mcc readings are
uncalibrated; the calibration block keeps the user's reference dose).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._log import get_logger
from ..errors import InputError
from .mcc import CurveType, Scan, read_mcc
from .model import BeamModel, GaussianModel, KernelComponent, ModelKind
from .output_factors import MeasuredOutputFactor
from .pencil import pack_gaussian, water_points

log = get_logger(__name__)

# Photon kernel components per model size: (name, scaling_length_mm, scaling_exponent, (initial, lower,
# upper) of weight, mu_per_mm, buildup_per_mm, sigma0_mm and sigma_slope).  Four components split the
# near-scatter width in two: a 1 x 1 cm field in water and a 2 x 2 cm field in lung (widths x 4) see
# different parts of the kernel, which three Gaussians cannot both follow (machines/README.md).
_COMPONENT_SETS = {
    3: (("primary", 10.0, 1.0, ((0.6, 0.0, 5.0), (0.005, 0.001, 0.02), (0.3, 0.02, 5.0), (0.3, 0.05, 0.5),
                                (0.002, 0.0, 0.02))),
        ("near_scatter", 10.0, 1.0, ((0.25, 0.0, 5.0), (0.004, 0.001, 0.02), (0.1, 0.01, 5.0), (3.0, 2.0, 6.0),
                                     (0.03, 0.0, 0.2))),
        ("far_scatter", 60.0, 0.5, ((0.15, 0.0, 5.0), (0.003, 0.0005, 0.02), (0.05, 0.005, 5.0),
                                    (30.0, 8.0, 200.0), (0.1, 0.0, 0.5)))),
    4: (("primary", 10.0, 1.0, ((0.6, 0.0, 5.0), (0.004, 0.0005, 0.02), (0.3, 0.02, 5.0), (0.5, 0.05, 1.5),
                                (0.004, 0.0, 0.02))),
        ("near_scatter_1", 10.0, 1.0, ((0.4, 0.0, 5.0), (0.006, 0.0005, 0.02), (0.25, 0.01, 5.0), (2.5, 1.0, 4.0),
                                       (0.002, 0.0, 0.05))),
        ("near_scatter_2", 10.0, 1.0, ((0.05, 0.0, 5.0), (0.002, 0.0005, 0.02), (0.35, 0.01, 5.0),
                                       (8.0, 3.0, 10.0), (0.015, 0.0, 0.2))),
        ("far_scatter", 60.0, 0.5, ((0.3, 0.0, 5.0), (0.005, 0.0005, 0.02), (0.006, 0.005, 5.0),
                                    (10.0, 8.0, 200.0), (0.12, 0.0, 0.5)))),
}
# (name, scaling_length_mm, scaling_exponent) per photon component of the three-component model.
DEFAULT_SCALING = tuple(c[:3] for c in _COMPONENT_SETS[3])
# Parameters shared by every model size: name, initial value, lower bound, upper bound.
_SHARED_PARAMS = [
    ("we", 0.1, 0.0, 2.0), ("le", 5.0, 0.5, 50.0), ("se", 40.0, 2.0, 200.0),
    ("wh", 0.08, 0.03, 0.2), ("sh", 30.0, 20.0, 80.0),
    ("sx", 1.5, 0.05, 6.0), ("sy", 0.8, 0.05, 6.0), ("h2", 0.03, -0.5, 0.5), ("h4", 0.0, -0.5, 0.5),
]
FIELD_OFFSET_BOUND_MM = 1.0     # TG-142 jaw-position tolerance per edge: bound of a fitted field-edge offset


def _param_table(n_components: int) -> list[tuple[str, float, float, float]]:
    """The fitted parameter vector of a model with ``n_components`` photon components."""
    if n_components not in _COMPONENT_SETS:
        raise InputError(f"commission: n_components must be one of {sorted(_COMPONENT_SETS)}, got {n_components}")
    rows = []
    for k, (_, _, _, bounds) in enumerate(_COMPONENT_SETS[n_components], start=1):
        for key, (init, lo, hi) in zip((f"w{k}", f"mu{k}", f"b{k}", f"s{k}0", f"s{k}1"), bounds):
            rows.append((key, init, lo, hi))
    return rows + _SHARED_PARAMS




@dataclass
class CurveAgreement:
    """Agreement of one measured curve with the model."""

    label: str
    source: str
    metric: str
    value: float
    limit: float
    passed: bool
    extra: dict = field(default_factory=dict)


@dataclass
class CommissioningReport:
    """Per-curve agreement of a commissioned model with the measurements."""

    curves: list[CurveAgreement]
    output_ratios: list[dict]
    fit_seconds: float
    model_summary: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.curves) and all(r["passed"] for r in self.output_ratios)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "fit_seconds": round(self.fit_seconds, 2),
                "curves": [{"label": c.label, "source": c.source, "metric": c.metric, "value": round(c.value, 4),
                            "limit": c.limit, "passed": c.passed, **{k: round(v, 4) for k, v in c.extra.items()}}
                           for c in self.curves],
                "output_ratios": self.output_ratios}

    def table(self) -> str:
        lines = [f"{'curve':<30} {'metric':<34} {'value':>8} {'limit':>7}  result"]
        for c in self.curves:
            lines.append(f"{c.label:<30} {c.metric:<34} {c.value:8.2f} {c.limit:7.1f}  "
                         f"{'pass' if c.passed else 'FAIL'}")
        for r in self.output_ratios:
            lines.append(f"{'output ratio ' + r['label']:<30} {'model vs measured (%)':<34} "
                         f"{r['difference_percent']:8.2f} {r['limit_percent']:7.1f}  "
                         f"{'pass' if r['passed'] else 'FAIL'}   (model {r['model']:.4f}, measured "
                         f"{r['measured']:.4f})")
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'} (fit {self.fit_seconds:.1f} s)")
        return "\n".join(lines)


# Below this side an output factor is "small-field" (limit small_field_tolerance_pct): TRS-483's
# lateral-equilibrium radius at 6 MV is about 1.3 cm, and detector corrections matter up to ~4 cm.
SMALL_FIELD_MM = 40.0
_OF_WEIGHT = 30.0       # residual weight of an output factor (as the scans' own output ratio)


def _of_ratio(gp, of: MeasuredOutputFactor) -> float:
    d = np.array([of.depth_mm])
    a = _eval(gp, of.field_mm, of.field_mm, of.ssd_mm, d, 0.0, 0.0)[0]
    b = _eval(gp, of.reference_field_mm, of.reference_field_mm, of.ssd_mm, d, 0.0, 0.0)[0]
    return float(a / b)


# ------------------------------------------------------------------ helpers
def _model_from_vector(vec: np.ndarray, name: str, base: BeamModel | None, n_components: int = 3) -> BeamModel:
    names = [r[0] for r in _param_table(n_components)]
    p = dict(zip(names, (float(v) for v in vec)))
    comps = []
    for k, (cname, length, expo, _) in enumerate(_COMPONENT_SETS[n_components], start=1):
        w, mu, b = p[f"w{k}"], p[f"mu{k}"], p[f"b{k}"]
        if b <= mu:
            # A(d) = w b/(b-mu) (exp(-mu d) - exp(-b d)) is unchanged by swapping mu and b with w -> w b/mu;
            # the fit may cross b = mu, the model file wants b > mu.
            w, mu, b = w * b / mu, b, max(mu, b * (1.0 + 1e-9) + 1e-12)
        comps.append(KernelComponent(cname, w, mu, b, p[f"s{k}0"], p[f"s{k}1"], length, expo))
    g = GaussianModel(components=comps, contamination_weight=p["we"], contamination_decay_mm=p["le"],
                      contamination_sigma_mm=p["se"], head_scatter_fraction=p["wh"], head_scatter_sigma_mm=p["sh"],
                      source_sigma_x_mm=p["sx"], source_sigma_y_mm=p["sy"], horn_h2=p["h2"], horn_h4=p["h4"])
    kw = {}
    if base is not None:
        kw = dict(mlc_leaf_width_mm=base.mlc_leaf_width_mm, mlc_transmission=base.mlc_transmission,
                  jaw_transmission=base.jaw_transmission, calibration=base.calibration, sad_mm=base.sad_mm)
    return BeamModel(name=name, kind=ModelKind.GAUSSIAN, gaussian=g, **kw)


def _vector_from_model(model: BeamModel) -> np.ndarray:
    """The parameter vector of a Gaussian model (inverse of :func:`_model_from_vector`)."""
    g = model.gaussian
    if g is None:
        raise InputError(f"commission: initial model '{model.name}' is not a Gaussian pencil-beam model")
    v = []
    for c in g.components:
        v += [c.weight, c.mu_per_mm, c.buildup_per_mm, c.sigma0_mm, c.sigma_slope]
    v += [g.contamination_weight, g.contamination_decay_mm, g.contamination_sigma_mm, g.head_scatter_fraction,
          g.head_scatter_sigma_mm, g.source_sigma_x_mm, g.source_sigma_y_mm, g.horn_h2, g.horn_h4]
    return np.array(v, dtype=float)


def _eval(gp, fx, fy, ssd, depth, x, y):
    d = np.ascontiguousarray(depth, dtype=np.float64)
    out = np.empty(d.shape)
    water_points(gp, -fx / 2, fx / 2, -fy / 2, fy / 2, float(ssd), d,
                 np.ascontiguousarray(np.broadcast_to(x, d.shape), dtype=np.float64),
                 np.ascontiguousarray(np.broadcast_to(y, d.shape), dtype=np.float64), out)
    return out


def _profile_xy(scan: Scan, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if scan.curve is CurveType.CROSSPLANE:
        return pos, np.zeros_like(pos)
    return np.zeros_like(pos), pos


def gamma_1d(x_meas: np.ndarray, d_meas: np.ndarray, x_calc: np.ndarray, d_calc: np.ndarray,
             dose_pct: float = 2.0, dta_mm: float = 2.0, threshold_pct: float = 10.0) -> tuple[float, float]:
    """Global 1-D gamma: (pass fraction, max gamma) of measured points above the threshold.

    The dose criterion is ``dose_pct`` of the measured maximum; the calculated
    curve is searched on its own (finely sampled) points.
    """
    norm = float(np.max(d_meas))
    sel = d_meas >= threshold_pct / 100.0 * norm
    xm, dm = x_meas[sel], d_meas[sel]
    dx = (x_calc[None, :] - xm[:, None]) / dta_mm
    dd = (d_calc[None, :] - dm[:, None]) / (dose_pct / 100.0 * norm)
    g = np.sqrt(dx * dx + dd * dd).min(axis=1)
    return float(np.mean(g <= 1.0)), float(g.max()) if g.size else 0.0


def _measured_output_ratios(scans: list[Scan], ref_depth: float = 100.0) -> tuple[list[dict], float, float]:
    """Measured central-axis readings per field at the profile depth closest to ``ref_depth``."""
    fields = sorted({(s.field_x_mm, s.field_y_mm, s.ssd_mm) for s in scans})
    prof_depths = sorted({s.depth_mm for s in scans if s.is_profile})
    depth = min(prof_depths, key=lambda d: abs(d - ref_depth)) if prof_depths else ref_depth
    readings = {}
    for f in fields:
        vals = [float(np.interp(0.0, s.positions_mm, s.values)) for s in scans
                if s.is_profile and (s.field_x_mm, s.field_y_mm, s.ssd_mm) == f and s.depth_mm == depth]
        pdds = [float(np.interp(depth, s.positions_mm, s.values)) for s in scans
                if not s.is_profile and (s.field_x_mm, s.field_y_mm, s.ssd_mm) == f]
        readings[f] = (np.mean(vals) if vals else np.nan, np.mean(pdds) if pdds else np.nan)
    ssds = {f[2] for f in fields}
    out = []
    if len(fields) < 2 or len(ssds) != 1:
        return out, depth, fields[0][2] if fields else 1000.0
    ref = min(fields, key=lambda f: abs(f[0] - 100.0) + abs(f[1] - 100.0))
    for f in fields:
        if f == ref:
            continue
        est = []
        for i in (0, 1):
            a, b = readings[f][i], readings[ref][i]
            if np.isfinite(a) and np.isfinite(b) and b > 0:
                est.append(a / b)
        if est:
            out.append({"field": f, "reference": ref, "from_profiles": est[0] if len(est) > 1 else None,
                        "from_pdd": est[-1], "measured": float(np.mean(est))})
    return out, depth, ref[2]


# ------------------------------------------------------------------- public
def commission(mcc_paths, name: str = "commissioned-6MV", base: BeamModel | None = None,
               pdd_tolerance_pct: float = 2.0, buildup_dta_mm: float = 2.0, gamma_pass_pct: float = 95.0,
               output_tolerance_pct: float = 1.5, max_evaluations: int = 4000,
               initial: np.ndarray | BeamModel | None = None,
               output_factors: list[MeasuredOutputFactor] | None = None,
               small_field_tolerance_pct: float = 3.0, n_components: int = 3, fit_field_offsets: bool = False,
               constraints: Sequence[Callable[[BeamModel], np.ndarray]] = ()) -> tuple[BeamModel, CommissioningReport]:
    """Fit a Gaussian beam model to PTW ``.mcc`` scans and report the agreement.

    Parameters
    ----------
    mcc_paths : iterable of paths
        Files holding PDDs and profiles of one energy and SSD.
    name : str
        Name of the resulting model.
    base : BeamModel, optional
        Supplies SAD, MLC/jaw transmission and calibration (default: the
        shipped generic model's values when available).
    pdd_tolerance_pct, buildup_dta_mm, gamma_pass_pct, output_tolerance_pct : float
        Pass limits used in the report.
    max_evaluations : int
        Cap on model evaluations in the least-squares fit.
    initial : array or BeamModel, optional
        Starting parameter vector or model with ``n_components`` components
        (defaults to a generic 6 MV guess).
    output_factors : list of MeasuredOutputFactor, optional
        Measured output factors of the same machine (e.g. from
        :func:`~sbrtplan.dose_engine.read_output_factors`), fitted together with the scans.
    small_field_tolerance_pct : float
        Pass limit of output factors of fields under 4 x 4 cm (others use
        ``output_tolerance_pct``).
    n_components : int
        Photon kernel components, 3 (primary, near and far scatter) or 4
        (near scatter split in two).
    fit_field_offsets : bool
        Fit a shift of each scanned field's edges (at most
        ``FIELD_OFFSET_BOUND_MM`` per edge, in and cross plane): the scanned
        machine's collimator calibration, kept out of the penumbra widths.
        Reported in the provenance; the agreement report uses nominal fields.
    constraints : sequence of callables
        Extra residuals ``f(model) -> array`` (dimensionless, about 1 at the
        tolerance), e.g. the heterogeneity correction against a Monte Carlo
        slab; each callable's ``label`` attribute (or name) goes into the
        provenance.

    Returns
    -------
    (BeamModel, CommissioningReport)
    """
    from scipy.optimize import least_squares

    paths = [Path(p) for p in mcc_paths]
    if not paths:
        raise InputError("commission: give at least one .mcc file")
    scans: list[Scan] = []
    for p in paths:
        scans.extend(read_mcc(p))
    if not any(s.curve is CurveType.PDD for s in scans):
        raise InputError(f"commission: no PDD scan in {', '.join(str(p) for p in paths)}")
    if not any(s.is_profile for s in scans):
        raise InputError(f"commission: no profile scan in {', '.join(str(p) for p in paths)}")
    if base is None:
        try:
            from .model import default_beam_model
            base = default_beam_model()
        except Exception:  # first commissioning, nothing shipped yet
            base = None
    ratios, ref_depth, ref_ssd = _measured_output_ratios(scans)
    ofs = list(output_factors or [])
    table = _param_table(n_components)
    names = [r[0] for r in table]
    n_model = len(table)
    template = _model_from_vector(np.array([r[1] for r in table]), name, base, n_components)
    gp_template = pack_gaussian(template, scale=1.0)
    fields = sorted({(s.field_x_mm, s.field_y_mm) for s in scans}) if fit_field_offsets else []
    field_index = {f: i for i, f in enumerate(fields)}

    def field_size(vec, fx, fy):
        if not fit_field_offsets:
            return fx, fy
        o = n_model + 2 * field_index[(fx, fy)]
        return fx + 2.0 * vec[o], fy + 2.0 * vec[o + 1]

    # pre-compute the sample points of every curve
    curves = []
    for s in scans:
        pos = s.positions_mm
        if s.curve is CurveType.PDD:
            sel = (pos >= 0.0) & (pos <= 300.0)
            z = pos[sel]
            meas = s.values[sel] / np.interp(100.0, pos, s.values)
            weight = np.where(z < 15.0, 1.5, 3.0) / np.maximum(meas, 0.05)
            curves.append((s, z, np.zeros_like(z), np.zeros_like(z), meas, weight, True))
        else:
            x, y = _profile_xy(s, pos)
            meas = s.values / np.interp(0.0, pos, s.values)
            curves.append((s, np.full_like(pos, s.depth_mm), x, y, meas, np.ones_like(pos), False))

    def packed(vec):
        gp = gp_template.copy()
        p = dict(zip(names, vec))
        gp[1], gp[2], gp[4], gp[5], gp[6] = p["sx"] ** 2, p["sy"] ** 2, p["we"], p["le"], p["se"]
        gp[7], gp[8], gp[9], gp[10] = p["wh"], p["sh"], p["h2"], p["h4"]
        for k in range(n_components):
            o = 12 + 8 * k
            gp[o:o + 5] = (p[f"w{k + 1}"], p[f"mu{k + 1}"], p[f"b{k + 1}"], p[f"s{k + 1}0"], p[f"s{k + 1}1"])
        return gp

    def residuals(vec):
        gp = packed(vec)
        res = []
        for s, z, x, y, meas, w, is_pdd in curves:
            fx, fy = field_size(vec, s.field_x_mm, s.field_y_mm)
            mod = _eval(gp, fx, fy, s.ssd_mm, z, x, y)
            norm = _eval(gp, fx, fy, s.ssd_mm, np.array([100.0]) if is_pdd else z[:1], 0.0, 0.0)[0]
            res.append(w * (mod / norm - meas))
        for r in ratios:
            (fx, fy, ssd), (rx, ry, _) = r["field"], r["reference"]
            fx, fy = field_size(vec, fx, fy)
            rx, ry = field_size(vec, rx, ry)
            a = _eval(gp, fx, fy, ssd, np.array([ref_depth]), 0.0, 0.0)[0]
            b = _eval(gp, rx, ry, ssd, np.array([ref_depth]), 0.0, 0.0)[0]
            res.append(np.array([_OF_WEIGHT * (a / b / r["measured"] - 1.0)]))
        for of in ofs:
            res.append(np.array([_OF_WEIGHT * (_of_ratio(gp, of) / of.value - 1.0)]))
        if constraints:
            m = _model_from_vector(vec[:n_model], name, base, n_components)
            res.extend(np.atleast_1d(np.asarray(c(m), dtype=float)) for c in constraints)
        return np.concatenate(res)

    n_off = 2 * len(fields)
    if initial is None:
        x0 = np.array([r[1] for r in table])
    elif isinstance(initial, BeamModel):
        x0 = _vector_from_model(initial)
    else:
        x0 = np.asarray(initial, float)
    if x0.size == n_model:
        x0 = np.concatenate([x0, np.zeros(n_off)])
    if x0.size != n_model + n_off:
        raise InputError(f"commission: the initial vector has {x0.size} values, expected {n_model} "
                         f"({n_components} components){f' or {n_model + n_off} with field offsets' if n_off else ''}")
    lb = np.array([r[2] for r in table] + [-FIELD_OFFSET_BOUND_MM] * n_off)
    ub = np.array([r[3] for r in table] + [FIELD_OFFSET_BOUND_MM] * n_off)
    x0 = np.clip(x0, lb + 1e-9 * (ub - lb), ub - 1e-9 * (ub - lb))
    t0 = time.perf_counter()
    log.info("commissioning: fitting %d parameters to %d curves and %d output factors", len(x0), len(curves),
             len(ofs))
    fit = least_squares(residuals, x0, bounds=(lb, ub), x_scale="jac", max_nfev=max_evaluations)
    dt = time.perf_counter() - t0
    log.info("commissioning fit: %s after %d evaluations, cost %.4g, %.1f s", fit.message, fit.nfev, fit.cost, dt)
    model = _model_from_vector(fit.x[:n_model], name, base, n_components)
    model.description = f"Gaussian pencil beam fitted to {', '.join(p.name for p in paths)}"
    model.provenance = {"commissioned_from": [p.name for p in paths], "fit_cost": float(fit.cost),
                        "fit_evaluations": int(fit.nfev), "parameters": dict(zip(names, map(float, fit.x)))}
    if fit_field_offsets:
        model.provenance["field_edge_offsets_mm"] = {
            f"{fx / 10:g}x{fy / 10:g}": [round(float(fit.x[n_model + 2 * i]), 3),
                                        round(float(fit.x[n_model + 2 * i + 1]), 3)]
            for (fx, fy), i in field_index.items()}
    if constraints:
        model.provenance["constraints"] = [str(getattr(c, "label", getattr(c, "__name__", repr(c))))
                                           for c in constraints]
    if ofs:
        model.provenance["output_factors"] = [asdict(of) for of in ofs]
    report = evaluate_model(model, scans, pdd_tolerance_pct, buildup_dta_mm, gamma_pass_pct, output_tolerance_pct,
                            output_factors=ofs, small_field_tolerance_pct=small_field_tolerance_pct)
    report.fit_seconds = dt
    model.provenance["agreement"] = report.as_dict()
    return model, report


def evaluate_model(model: BeamModel, scans: list[Scan], pdd_tolerance_pct: float = 2.0,
                   buildup_dta_mm: float = 2.0, gamma_pass_pct: float = 95.0,
                   output_tolerance_pct: float = 1.5, output_factors: list[MeasuredOutputFactor] | None = None,
                   small_field_tolerance_pct: float = 3.0) -> CommissioningReport:
    """Compare a Gaussian model with measured scans and output factors (the metrics of :func:`commission`)."""
    gp = pack_gaussian(model, scale=1.0)
    rows: list[CurveAgreement] = []
    for s in scans:
        if s.curve is CurveType.PDD:
            z = s.positions_mm
            meas = s.values / s.values.max()
            fine = np.arange(0.0, max(z.max(), 60.0) + 0.05, 0.05)
            mod = _eval(gp, s.field_x_mm, s.field_y_mm, s.ssd_mm, fine, 0.0, 0.0)
            mod = mod / mod.max()
            dmax = float(z[np.argmax(s.values)])
            beyond = z >= dmax
            local = 100.0 * (np.interp(z[beyond], fine, mod) - meas[beyond]) / meas[beyond]
            worst = float(np.max(np.abs(local)))
            rows.append(CurveAgreement(s.label, s.source, "PDD local diff beyond dmax (%)", worst, pdd_tolerance_pct,
                                       worst <= pdd_tolerance_pct,
                                       {"at_depth_mm": float(z[beyond][np.argmax(np.abs(local))])}))
            # The reading at the water surface is excluded: a diode's effective point of measurement is
            # below its front face, so "depth 0" is not the surface dose.  Its difference is reported.
            build = (z < dmax) & (z >= 0.5)
            region = fine <= dmax + 10.0
            surf = float(100.0 * (mod[0] - meas[0]) / meas[0]) if z[0] < 0.5 else float("nan")
            dtas = []
            for zz, mm in zip(z[build], meas[build]):
                sign = np.sign(mod[region] - mm)
                cross = np.nonzero(np.diff(sign))[0]
                if cross.size == 0:
                    dtas.append(np.inf)
                    continue
                # linear interpolation of each crossing position
                f0, f1 = mod[region][cross], mod[region][cross + 1]
                zc = fine[cross] + (mm - f0) / np.where(f1 != f0, f1 - f0, 1.0) * 0.05
                dtas.append(float(np.min(np.abs(zc - zz))))
            worst_dta = float(max(dtas)) if dtas else 0.0
            rows.append(CurveAgreement(s.label, s.source, "build-up distance to agreement (mm)", worst_dta,
                                       buildup_dta_mm, worst_dta <= buildup_dta_mm,
                                       {"surface_reading_diff_percent": surf}))
        else:
            pos = s.positions_mm
            meas = s.values / np.interp(0.0, pos, s.values)
            fine = np.arange(pos.min(), pos.max() + 0.1, 0.1)
            x, y = _profile_xy(s, fine)
            mod = _eval(gp, s.field_x_mm, s.field_y_mm, s.ssd_mm, np.full_like(fine, s.depth_mm), x, y)
            mod = mod / _eval(gp, s.field_x_mm, s.field_y_mm, s.ssd_mm, np.array([s.depth_mm]), 0.0, 0.0)[0]
            rate, gmax = gamma_1d(pos, meas, fine, mod)
            rows.append(CurveAgreement(s.label, s.source, "gamma 2%/2mm pass rate (%)", 100.0 * rate, gamma_pass_pct,
                                       100.0 * rate >= gamma_pass_pct, {"max_gamma": gmax}))
    ratios, depth, _ = _measured_output_ratios(scans)
    out = []
    for r in ratios:
        (fx, fy, ssd), (rx, ry, _) = r["field"], r["reference"]
        a = _eval(gp, fx, fy, ssd, np.array([depth]), 0.0, 0.0)[0]
        b = _eval(gp, rx, ry, ssd, np.array([depth]), 0.0, 0.0)[0]
        diff = 100.0 * (a / b / r["measured"] - 1.0)
        out.append({"label": f"{fx / 10:g}x{fy / 10:g} / {rx / 10:g}x{ry / 10:g} at {depth:g} mm, SSD {ssd:g}",
                    "model": float(a / b), "measured": r["measured"], "measured_from_profiles": r["from_profiles"],
                    "measured_from_pdd": r["from_pdd"], "difference_percent": float(diff),
                    "limit_percent": output_tolerance_pct, "passed": abs(diff) <= output_tolerance_pct})
    for of in output_factors or []:
        mod = _of_ratio(gp, of)
        diff = 100.0 * (mod / of.value - 1.0)
        lim = small_field_tolerance_pct if of.field_mm < SMALL_FIELD_MM else output_tolerance_pct
        out.append({"label": of.label, "model": mod, "measured": of.value, "source": of.source,
                    "difference_percent": float(diff), "limit_percent": lim, "passed": abs(diff) <= lim})
    return CommissioningReport(rows, out, 0.0, model.summary())

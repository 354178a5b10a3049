"""TBI planning: rules, midline dose per region, MU, compensators, lung blocks, 3D dose, dose rate.

:func:`plan_tbi` is the one entry point; it returns a :class:`TbiPlan` with everything the outputs
need.  The order follows the hand method of AAPM Report 17 (TG-29): midline dose per MU of the
open fields at each sampling point -> MU so that the thickest point receives the prescription ->
compensator per strip so that every other point is brought down to it -> 3D dose on the CT ->
lung block transmission from the mean lung dose -> organ blocks on request -> dose rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._log import get_logger, timed
from ..case import Case, Dose, Structure, StructureRole, resample_case
from ..errors import InputError, StructureError
from ..evaluation import compute_dvh
from ..io import body_outline
from .beamdata import TbiBeamData, load_beam_data
from .blocks import BlockShape, design_outline
from .dosecalc import block_factor, equivalent_square_cm, open_dose_per_mu, water_depth_cm
from .geometry import Field, Technique, check_outline, make_fields
from .lungs import LungShielding, PointsDose, attenuator_of, design_lung_shielding
from .regions import Sample, region_of_slices, sample_points
from .rules import RuleResult, TbiRules, check_distance, check_field, check_spoiler, field_size_cm, load_rules

log = get_logger(__name__)

LUNG_NAMES = ("Lungs", "Lung_L", "Lung_R")


@dataclass
class TbiRequest:
    """What the physicist asks for (validated by :func:`plan_tbi`)."""

    prescription_gy: float
    n_fractions: int
    technique: Technique = Technique.AP_PA
    distance_cm: float = 400.0
    jaw_cm: float | None = None              # jaw opening at the SAD (default: the machine maximum)
    spoiler_cm: float | None = None          # default: the calibrated spoiler
    lung_block_mm: float | None = None       # None: designed from the mean lung dose
    lung_block_fractions: int | None = None  # fractions with lung blocks (default: all)
    organ_blocks_mm: dict[str, float] = field(default_factory=dict)  # on request: structure -> thickness
    compensate: bool = True


@dataclass
class SampleDose:
    sample: Sample
    depth_cm: dict[str, float]
    dose_per_mu: dict[str, float]
    open_gy_per_fx: float = 0.0
    compensator_mm: float = 0.0
    final_gy_per_fx: float = 0.0
    under_blocks: list = field(default_factory=list)   # organ blocks (on request) over this point


@dataclass
class TbiPlan:
    case: Case
    request: TbiRequest
    beam: TbiBeamData
    rules: TbiRules
    fields: list[Field]
    field_cm: float
    spoiler_cm: float
    mu_per_field: float
    samples: list[SampleDose]
    dose: Dose
    dose_open: Dose
    blocks: list[BlockShape]
    lung_block_fractions: int
    dose_rate_mu_per_min: float
    midline_dose_rate_cgy_min: float
    rules_results: list[RuleResult]
    dvhs: dict
    organ_doses: dict
    mld_gy: float | None
    mld_open_gy: float | None
    body_v90: float
    body_v110: float
    prescription_point: dict
    lung_shielding: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules_results)


# ------------------------------------------------------------------ helpers
def _validate(req: TbiRequest) -> None:
    for name, v in (("--rx dose", req.prescription_gy), ("--distance-cm", req.distance_cm)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise InputError(f"{name} {v!r}: expected a positive finite number")
    if not (1.0 <= req.prescription_gy <= 20.0):
        raise InputError(f"--rx total dose {req.prescription_gy:g} Gy: expected 1-20 Gy for TBI")
    if not (isinstance(req.n_fractions, int) and 1 <= req.n_fractions <= 12):
        raise InputError(f"--rx fractions {req.n_fractions!r}: expected an integer 1-12")
    if req.lung_block_mm is not None and not (math.isfinite(req.lung_block_mm) and 0 <= req.lung_block_mm <= 100):
        raise InputError(f"--lung-block-mm {req.lung_block_mm!r}: expected 0-100 mm")
    if req.lung_block_fractions is not None and not (0 <= req.lung_block_fractions <= req.n_fractions):
        raise InputError(f"--lung-block-fractions {req.lung_block_fractions!r}: expected 0-{req.n_fractions}")
    for name, mm in req.organ_blocks_mm.items():
        if not (math.isfinite(mm) and 0 < mm <= 100):
            raise InputError(f"--block {name}:{mm!r}: expected a thickness of 0-100 mm")


def _body_structure(case: Case) -> Structure:
    body = case.body
    if body is None:
        body = body_outline(case)
    return body


def _on_dose_grid(case: Case, spacing_mm: float, timings) -> Case:
    """The case on a grid of at least ``spacing_mm`` (a whole-body CT at 1 mm would need tens of
    millions of rays for a dose that varies over centimetres); phantoms already are.  A case
    without an External gets the automatic body outline added."""
    if min(case.grid.spacing_mm) >= spacing_mm - 1e-6 and case.body is not None:
        return case
    body = _body_structure(case)
    if case.body is None:
        case.add_structure(body, replace=True)
    if min(case.grid.spacing_mm) >= spacing_mm - 1e-6:
        return case
    return resample_case(case, spacing_mm, region=body, margin_mm=spacing_mm, timings=timings)


def _lung_mask(case: Case) -> np.ndarray | None:
    parts = [case.structure(n).mask for n in LUNG_NAMES if case.has(n)]
    if not parts:
        return None
    out = np.zeros(case.grid.shape, dtype=bool)
    for p in parts:
        out |= p
    return out


def _scatter_widths_cm(body: np.ndarray, spacing_mm, beam_axis: str, length_cm: float) -> np.ndarray:
    """Body width across the beam per slice (cm), averaged over ``length_cm`` along the body:
    the patient-limited scattering width around each slice (a thin neck between the head and
    the shoulders still receives their scatter; the vertex and the soles receive less)."""
    w = _slice_widths_cm(body, spacing_mm, beam_axis)
    n = max(1, int(round(length_cm * 10.0 / spacing_mm[2])))
    kernel = np.ones(n) / n
    return np.convolve(w, kernel, mode="same")


def _slice_widths_cm(body: np.ndarray, spacing_mm, beam_axis: str) -> np.ndarray:
    """Body width across the beam, per slice (cm)."""
    across = 2 if beam_axis == "y" else 1          # x columns for AP/PA, y rows for laterals
    occ = body.any(axis=1 if across == 2 else 2)   # (nz, n_across)
    out = np.zeros(body.shape[0])
    h = spacing_mm[0] if across == 2 else spacing_mm[1]
    for k in np.flatnonzero(occ.any(axis=1)):
        idx = np.flatnonzero(occ[k])
        out[k] = (idx[-1] - idx[0] + 1) * h / 10.0
    return out


def _round_step(mm: np.ndarray, step: float, up: bool = False) -> np.ndarray:
    f = np.ceil if up else np.rint
    return f(np.asarray(mm) / step - (1e-9 if up else 0.0)) * step


def _lung_note(shielding: LungShielding, rules: TbiRules) -> str:
    """Why the mean lung dose is where it is (for a failing MLD rule)."""
    if shielding.limited_by_midline:
        return (f"{shielding.kind} limited to {shielding.thickness_mm:g} mm (the MLD design asks for "
                f"{shielding.design_thickness_mm:g} mm): the lungs and the mediastinum share the lateral rays and the "
                f"chest midline may not fall below {(1 - rules.lateral_lung_midline_floor_fraction) * 100:g} % of the "
                "prescription; AP/PA fields with lung blocks can reach the MLD goal")
    if not shielding.blocks:
        return "no lung shielding"
    return f"{shielding.kind} insufficient ({shielding.thickness_mm:g} mm)"


# --------------------------------------------------------------------- plan
def plan_tbi(case: Case, request: TbiRequest, beam: TbiBeamData | None = None, rules: TbiRules | None = None,
             progress=None, timings=None) -> TbiPlan:
    """Plan a TBI course on ``case`` (CT or phantom).

    Parameters
    ----------
    case : Case
        CT or phantom; finer grids than the recipe's dose grid (5 mm) are resampled to it.
    request : TbiRequest
    beam, rules : optional
        Beam data and rules (default: the shipped files).
    progress : callable(done, total), optional
        Called at the start of each stage (midline, 3D dose, lung blocks, DVHs).
    timings : Timings, optional

    Raises
    ------
    InputError
        For input the standard forbids (distance, field size, spoiler, outline margin), naming the rule.
    """
    _validate(request)
    beam = beam or load_beam_data()
    rules = rules or load_rules()
    report: list[RuleResult] = []
    stages = ["midline sampling", "3D dose", "lung blocks", "DVHs"]

    def step(name: str) -> None:
        if progress is not None:
            progress(stages.index(name), len(stages))

    # ------------------------------------------------------------ refusals
    report.append(check_distance(request.distance_cm, beam, rules))
    if request.jaw_cm is not None and not (0 < request.jaw_cm <= beam.max_field_at_sad_cm):
        raise InputError(f"--jaw-cm {request.jaw_cm!r}: expected 0-{beam.max_field_at_sad_cm:g} cm at the SAD")
    field_cm = field_size_cm(beam, request.distance_cm, request.jaw_cm)
    report.extend(check_field(field_cm, rules))
    spoiler_cm = beam.spoiler_calibrated_cm if request.spoiler_cm is None else float(request.spoiler_cm)
    report.append(check_spoiler(spoiler_cm, beam.energy_mv if beam.modality == "photon" else 1.25, rules))

    case = _on_dose_grid(case, rules.dose_grid_mm, timings)
    g = case.grid
    body = case.body.mask
    if not body.any():
        raise StructureError(f"case '{case.name}': empty body outline")
    density = np.where(body, case.density, 0.0).astype(np.float32)
    zyx = np.argwhere(body)
    body_pts = g.patient_from_index(zyx)
    # reference midline point: the centre of the body's bounding box (the field centre)
    lo, hi = body_pts.min(axis=0), body_pts.max(axis=0)
    reference = 0.5 * (lo + hi)
    fields = make_fields(request.technique, reference, request.distance_cm)
    report.append(check_outline(fields, body_pts, field_cm, beam, rules))
    beam_axis = "y" if request.technique is Technique.AP_PA else "x"

    # ------------------------------------------------- midline per region
    with timed("TBI midline sampling", log, timings):
        step("midline sampling")
        lungs = _lung_mask(case)
        regions = region_of_slices(case, body, lungs)
        samples = sample_points(case, body, beam_axis, rules.sample_step_cm, regions)
        if not samples:
            raise StructureError(f"case '{case.name}': no midline sampling point in the body outline")
        pts = np.array([s.point_mm for s in samples])
        widths = _scatter_widths_cm(body, g.spacing_mm, beam_axis, rules.scatter_length_cm)
        k_pts = np.clip(np.rint(g.index_from_patient(pts)[:, 0]).astype(int), 0, g.nz - 1)
        sq = equivalent_square_cm(widths[k_pts], rules.scatter_length_cm)
        per_field = {}
        for f in fields:
            d = water_depth_cm(density, g, f, pts)
            per_field[f.name] = (d, open_dose_per_mu(beam, f, pts, d, sq, spoiler_cm))
        deepest = max(float(per_field[f.name][0].max()) for f in fields)
        if deepest > beam.max_depth_cm:
            raise InputError(f"case '{case.name}': midline depth {deepest:.1f} cm exceeds the beam data's TMR table "
                             f"({beam.max_depth_cm:g} cm)")
    sum_per_mu = sum(per_field[f.name][1] for f in fields)     # equal MU on every field
    rx_fx_cgy = request.prescription_gy * 100.0 / request.n_fractions
    # MU so that the point with the least dose per MU (the thickest) receives the prescription:
    # compensators can only lower the dose elsewhere.
    i_ref = int(np.argmin(sum_per_mu))
    mu = rx_fx_cgy / float(sum_per_mu[i_ref])
    open_cgy = mu * sum_per_mu
    tcomp = np.minimum(1.0, rx_fx_cgy / open_cgy)
    comp = beam.compensator
    comp_mm = _round_step(comp.thickness_mm(tcomp), comp.step_mm) if request.compensate else np.zeros(len(samples))
    comp_mm = np.clip(comp_mm, 0.0, comp.max_thickness_mm or np.inf) + 0.0   # no negative zeros
    final_cgy = open_cgy * comp.transmission(comp_mm)
    sdose = [SampleDose(s, {f.name: float(per_field[f.name][0][i]) for f in fields},
                        {f.name: float(per_field[f.name][1][i]) for f in fields},
                        float(open_cgy[i] / 100.0), float(comp_mm[i]), float(final_cgy[i] / 100.0))
             for i, s in enumerate(samples)]
    order = np.argsort([s.z_lo_mm for s in samples])
    strip_lo = np.array([samples[i].z_lo_mm for i in order])
    strip_t = comp.transmission(comp_mm[order])

    # ----------------------------------------------------------- 3D dose
    with timed("TBI 3D broad-beam dose", log, timings):
        step("3D dose")
        sq_vox = equivalent_square_cm(widths[zyx[:, 0]], rules.scatter_length_cm)
        vox = {}
        for f in fields:
            d = water_depth_cm(density, g, f, body_pts)
            dpm = open_dose_per_mu(beam, f, body_pts, d, sq_vox, spoiler_cm)
            # compensator strip of each voxel: its ray's crossing of the treatment plane
            u, v = f.plane_uv_mm(body_pts)
            zc = reference[2] + u
            k = np.clip(np.searchsorted(strip_lo, zc, side="right") - 1, 0, len(strip_lo) - 1)
            vox[f.name] = (d, dpm * strip_t[k] * mu, u, v)
    n_fx = request.n_fractions

    def course(lung_f: dict[str, np.ndarray] | None, organ_f: dict[str, np.ndarray] | None,
               n_with: int) -> np.ndarray:
        """Course dose (Gy): lung blocks in ``n_with`` fractions, organ blocks in all."""
        total = np.zeros(len(body_pts))
        for f in fields:
            base = vox[f.name][1] * (organ_f[f.name] if organ_f else 1.0)
            lf = lung_f[f.name] if lung_f else 1.0
            total += base * (n_with * lf + (n_fx - n_with))
        return total / 100.0

    open_course = course(None, None, 0)

    # ------------------------------------------- lung blocks / compensators
    blocks: list[BlockShape] = []
    factors = {f.name: np.ones(len(body_pts)) for f in fields}          # lung shielding
    organ_factors = {f.name: np.ones(len(body_pts)) for f in fields}    # organ blocks on request
    n_block_fx = n_fx if request.lung_block_fractions is None else int(request.lung_block_fractions)
    mld_open = mld = None
    lung_idx = None
    shielding = LungShielding(kind=None)
    if lungs is not None:
        lung_idx = lungs[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
        if lung_idx.any():
            mld_open = float(open_course[lung_idx].mean())
            with timed("TBI lung shielding", log, timings):
                step("lung blocks")
                t_comp = comp.transmission(comp_mm)
                midline = PointsDose({f.name: (per_field[f.name][0], mu * per_field[f.name][1] * t_comp,
                                               *f.plane_uv_mm(pts)) for f in fields}, sq)
                shielding = design_lung_shielding(
                    beam, rules, request.technique, fields, g.patient_from_index(np.argwhere(lungs)),
                    PointsDose({f.name: vox[f.name] for f in fields}, sq_vox), lung_idx, n_fx, n_block_fx,
                    request.lung_block_mm, midline=midline, prescription_gy=request.prescription_gy)
            factors.update(shielding.factors)
            blocks.extend(shielding.blocks)
    # ------------------------------------------------ organ blocks on request
    organ_block_n = {}
    for name, thick in request.organ_blocks_mm.items():
        s = case.structure(name)
        pts_o = g.patient_from_index(np.argwhere(s.mask))
        t = float(beam.block.transmission(thick))
        for f in fields:
            shape = design_outline(s.name, f, pts_o, 0.0)
            if shape is None:
                continue
            d, _, u, v = vox[f.name]
            under, sqb = shape.lookup(u, v)
            fac = np.ones(len(body_pts))
            fac[under] = block_factor(beam, d[under], sq_vox[under], sqb[under], t)
            organ_factors[f.name] = organ_factors[f.name] * fac
            shape.thickness_mm, shape.transmission = float(thick), t
            shape.meta["fractions"] = n_fx
            blocks.append(shape)
        organ_block_n[s.name] = thick
    final_course = course(factors, organ_factors, n_block_fx) if blocks else open_course
    if blocks:
        # midline points under a block (an organ block over the midline, a lung block with a small
        # margin) receive less: recompute their course dose with the same block factors
        per_fx = np.zeros(len(samples))
        for f in fields:
            d, dpm = per_field[f.name]
            u, v = f.plane_uv_mm(pts)
            lung_f, organ_f = np.ones(len(samples)), np.ones(len(samples))
            for b in (b for b in blocks if b.field_name == f.name):
                under, sqb = b.lookup(u, v)
                fac = np.ones(len(samples))
                fac[under] = block_factor(beam, d[under], sq[under], sqb[under], b.transmission)
                if b.name == "lung":
                    lung_f *= fac
                else:
                    organ_f *= fac
                    for i in np.flatnonzero(under):
                        if b.name not in sdose[i].under_blocks:
                            sdose[i].under_blocks.append(b.name)
            base = mu * dpm * comp.transmission(comp_mm) * organ_f
            per_fx += base * (n_block_fx * lung_f + (n_fx - n_block_fx)) / n_fx
        for sd, gy in zip(sdose, per_fx / 100.0):
            sd.final_gy_per_fx = float(gy)
    dose_arr = np.zeros(g.shape, dtype=np.float32)
    dose_arr[zyx[:, 0], zyx[:, 1], zyx[:, 2]] = final_course
    dose_open_arr = np.zeros(g.shape, dtype=np.float32)
    dose_open_arr[zyx[:, 0], zyx[:, 1], zyx[:, 2]] = open_course
    dose = Dose(g, dose_arr, description="TBI broad-beam dose (compensated, blocked)")
    dose_open = Dose(g, dose_open_arr, description="TBI broad-beam dose (compensated, no blocks)")
    if lung_idx is not None and lung_idx.any():
        mld = float(final_course[lung_idx].mean())

    # ---------------------------------------------------------- dose rate
    ref_field_rate = max(float(per_field[f.name][1][i_ref]) * float(comp.transmission(comp_mm[i_ref]))
                         for f in fields)      # cGy/MU at the prescription point, one field
    lo_r, hi_r = rules.dose_rate_cgy_min
    candidates = [r for r in beam.dose_rates_mu_per_min if lo_r <= r * ref_field_rate <= hi_r]
    rate = max(candidates) if candidates else min(beam.dose_rates_mu_per_min,
                                                  key=lambda r: abs(r * ref_field_rate - 0.5 * (lo_r + hi_r)))
    midline_rate = rate * ref_field_rate

    # ------------------------------------------------------------- rules
    rx = request.prescription_gy
    # points shielded on request (an organ block over the midline) are recorded, not held to the rule
    judged = [sd for sd in sdose if not sd.under_blocks]
    final_total = np.array([sd.final_gy_per_fx for sd in judged]) * n_fx
    dev = final_total / rx - 1.0
    worst = float(np.max(np.abs(dev))) if len(dev) else float("nan")
    note = (f"{len(sdose) - len(judged)} point(s) under organ blocks on request excluded"
            if len(judged) < len(sdose) else "")
    report.append(RuleResult("midline dose within limit (every sampling point)", worst * 100.0,
                             f"<= {rules.dose_limit_fraction * 100:g} %", worst <= rules.dose_limit_fraction + 1e-9,
                             note))
    report.append(RuleResult("midline dose within aim (every sampling point)", worst * 100.0,
                             f"<= {rules.dose_aim_fraction * 100:g} %", worst <= rules.dose_aim_fraction + 1e-9,
                             note))
    if mld is not None:
        why = _lung_note(shielding, rules)
        report.append(RuleResult("mean lung dose (goal)", mld, f"< {rules.mld_goal_gy:g} Gy", mld < rules.mld_goal_gy,
                                 "" if mld < rules.mld_goal_gy else why))
        report.append(RuleResult("mean lung dose (limit)", mld, f"<= {rules.mld_limit_gy:g} Gy",
                                 mld <= rules.mld_limit_gy,
                                 "" if mld <= rules.mld_limit_gy
                                 else f"MLD above {rules.mld_limit_gy:g} Gy" + (f": {why}" if why else "")))
    else:
        report.append(RuleResult("mean lung dose (goal)", "not evaluable", f"< {rules.mld_goal_gy:g} Gy", True,
                                 "no lung contours in the case"))
    for b in blocks:
        att = attenuator_of(beam, b)
        ok = b.thickness_mm <= (att.max_thickness_mm or np.inf)
        report.append(RuleResult(f"{b.meta.get('kind', b.name + ' block')} {b.field_name}: single uniform thickness",
                                 b.thickness_mm, f"uniform within {beam.block.tolerance_mm:g} mm (fabrication QA)", ok,
                                 f"transmission {b.transmission:.3f} (to be measured)"))
    report.append(RuleResult("midline dose rate", midline_rate, f"{lo_r:g}-{hi_r:g} cGy/min",
                             lo_r - 1e-9 <= midline_rate <= hi_r + 1e-9))
    report.append(RuleResult("midline dose rate (floor)", midline_rate, f">= {rules.dose_rate_floor_cgy_min:g} cGy/min",
                             midline_rate >= rules.dose_rate_floor_cgy_min))

    # ---------------------------------------------------------- DVHs
    dvhs = {}
    organ_doses = {}
    with timed("TBI DVHs", log, timings):
        step("DVHs")
        names = [n for n in rules.dvh_structures if case.has(n)]
        if not any(n.lower() == "body" for n in names):
            names.append("__body__")
        for n in names:
            s = Structure("Body", g, body, role=StructureRole.EXTERNAL) if n == "__body__" else case.structure(n)
            if s.is_empty:
                continue
            dv = compute_dvh(dose, s)
            dvhs[s.name] = dv
            organ_doses[s.name] = {"mean_gy": round(float(dv.mean_gy), 3), "volume_cc": round(float(dv.volume_cc), 1),
                                   "blocked_mm": organ_block_n.get(s.name)}
    body_dose = final_course
    v90 = float(np.mean(body_dose >= 0.9 * rx))
    v110 = float(np.mean(body_dose >= 1.1 * rx))
    s_ref = samples[i_ref]
    return TbiPlan(case=case, request=request, beam=beam, rules=rules, fields=fields, field_cm=field_cm,
                   spoiler_cm=spoiler_cm, mu_per_field=float(mu), samples=sdose, dose=dose, dose_open=dose_open,
                   blocks=blocks, lung_block_fractions=n_block_fx if any(b.name == "lung" for b in blocks) else 0,
                   dose_rate_mu_per_min=float(rate), midline_dose_rate_cgy_min=float(midline_rate),
                   rules_results=report, dvhs=dvhs, organ_doses=organ_doses, mld_gy=mld, mld_open_gy=mld_open,
                   body_v90=v90, body_v110=v110,
                   prescription_point={"region": s_ref.region, "point_mm": [round(float(c), 1) for c in s_ref.point_mm],
                                       "separation_cm": round(s_ref.separation_cm, 2)},
                   lung_shielding=shielding.as_dict())


def region_summary(plan: TbiPlan) -> list[dict]:
    """Per-region rows: separation, midline dose with and without compensation, compensator."""
    rows = {}
    n = plan.request.n_fractions
    for sd in plan.samples:
        r = rows.setdefault(sd.sample.region, {"region": sd.sample.region, "sep": [], "open": [], "final": [],
                                               "comp": [], "z": [], "judged": []})
        r["sep"].append(sd.sample.separation_cm)
        r["open"].append(sd.open_gy_per_fx * n)
        r["final"].append(sd.final_gy_per_fx * n)
        r["comp"].append(sd.compensator_mm)
        if not sd.under_blocks:
            r["judged"].append(sd.final_gy_per_fx * n)
        r["z"].extend([sd.sample.z_lo_mm, sd.sample.z_hi_mm])
    out = []
    for name in sorted(rows, key=lambda k: -max(rows[k]["z"])):     # head first
        r = rows[name]
        rx = plan.request.prescription_gy
        out.append({"region": name, "n_points": len(r["sep"]),
                    "z_range_mm": [round(min(r["z"]), 1), round(max(r["z"]), 1)],
                    "separation_cm": {"min": round(min(r["sep"]), 2), "max": round(max(r["sep"]), 2),
                                      "mean": round(float(np.mean(r["sep"])), 2)},
                    "midline_dose_uncompensated_gy": {"min": round(min(r["open"]), 3), "max": round(max(r["open"]), 3)},
                    "midline_dose_gy": {"min": round(min(r["final"]), 3), "max": round(max(r["final"]), 3)},
                    "deviation_percent": {"min": round((min(r["final"]) / rx - 1) * 100, 2),
                                          "max": round((max(r["final"]) / rx - 1) * 100, 2)},
                    "compensator_mm": {"min": round(min(r["comp"]), 2), "max": round(max(r["comp"]), 2)},
                    "points_under_organ_blocks": len(r["final"]) - len(r["judged"]),
                    "within_aim": bool(max((abs(v / rx - 1) for v in r["judged"]), default=0.0)
                                       <= plan.rules.dose_aim_fraction + 1e-9),
                    "within_limit": bool(max((abs(v / rx - 1) for v in r["judged"]), default=0.0)
                                         <= plan.rules.dose_limit_fraction + 1e-9)})
    return out


__all__ = ["TbiRequest", "TbiPlan", "SampleDose", "plan_tbi", "region_summary"]

"""Self-contained HTML report of a TBI plan (inline CSS, figures as base64 PNG).

Sections: header and verdict, rules, regions (separation, midline dose with and without
compensation, compensator), midline dose along the body, compensator drawing at the tray,
block drawings at the block screen, uniformity map, DVH, fields (MU, dose rate, time).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .._log import atomic_output  # noqa: E402
from .lungs import attenuator_of  # noqa: E402
from .plan import TbiPlan  # noqa: E402

_CSS = """body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ccc;margin-top:26px}
table{border-collapse:collapse;font-size:12.5px}th,td{border:1px solid #d0d0d0;padding:3px 7px}
th{background:#f0f0f0}td.pass{background:#d8f3dc}td.fail{background:#fbd5d5}
.ok{color:#1b5e20;font-weight:700}.bad{color:#9b1c1c;font-weight:700}img{max-width:100%;border:1px solid #ddd}
.note{color:#555;font-size:12px}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _table(headers, rows, classes=None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for i, row in enumerate(rows):
        cls = classes[i] if classes else [""] * len(row)
        out.append("<tr>" + "".join(f'<td class="{c}">{_e(v)}</td>' for v, c in zip(row, cls)) + "</tr>")
    return "".join(out) + "</table>"


def _midline_figure(plan: TbiPlan) -> str:
    n, rx = plan.request.n_fractions, plan.request.prescription_gy
    s = sorted(plan.samples, key=lambda x: x.sample.z_lo_mm)
    z = np.array([0.5 * (x.sample.z_lo_mm + x.sample.z_hi_mm) for x in s]) / 10.0
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    ax[0].plot(z, [x.open_gy_per_fx * n for x in s], "o-", ms=3, label="without compensator")
    ax[0].plot(z, [x.final_gy_per_fx * n for x in s], "s-", ms=3, label="with compensator")
    for f, st in ((plan.rules.dose_aim_fraction, ":"), (plan.rules.dose_limit_fraction, "--")):
        ax[0].axhline(rx * (1 + f), color="grey", ls=st, lw=0.8)
        ax[0].axhline(rx * (1 - f), color="grey", ls=st, lw=0.8)
    ax[0].set_xlabel("z (cm, head +)")
    ax[0].set_ylabel("midline dose (Gy)")
    ax[0].legend(fontsize=8)
    ax[1].plot(z, [x.sample.separation_cm for x in s], "k.-", ms=3)
    ax[1].set_xlabel("z (cm)")
    ax[1].set_ylabel("separation (cm)")
    return _png(fig)


def _compensator_figure(plan: TbiPlan) -> str:
    mag = plan.beam.compensator.distance_cm / plan.request.distance_cm
    ref_z = plan.fields[0].reference_mm[2]
    s = sorted(plan.samples, key=lambda x: x.sample.z_lo_mm)
    fig, ax = plt.subplots(figsize=(11, 2.6))
    for x in s:
        a, b = (x.sample.z_lo_mm - ref_z) * mag / 10.0, (x.sample.z_hi_mm - ref_z) * mag / 10.0
        ax.fill_between([a, b], 0, x.compensator_mm, color="#7a7a9a", step="pre")
    ax.set_xlabel(f"position on the tray along the patient axis (cm, magnification {mag:.3f})")
    ax.set_ylabel(f"{plan.beam.compensator.material} (mm)")
    return _png(fig)


def _block_figure(plan: TbiPlan) -> str:
    if not plan.blocks:
        return "<p class='note'>No blocks.</p>"
    fields = sorted({b.field_name for b in plan.blocks})
    fig, axes = plt.subplots(1, len(fields), figsize=(5 * len(fields), 5), squeeze=False)
    for ax, fname in zip(axes[0], fields):
        planes = set()
        for b in (b for b in plan.blocks if b.field_name == fname):
            att = attenuator_of(plan.beam, b)      # block screen, or the tray for a lateral lung compensator
            scale = att.distance_cm / plan.request.distance_cm
            planes.add(f"{att.distance_cm:g} cm (x{scale:.3f})")
            uu = (b.u0_mm + (np.arange(b.mask.shape[0]) + 0.5) * b.pixel_mm) * scale / 10.0
            vv = (b.v0_mm + (np.arange(b.mask.shape[1]) + 0.5) * b.pixel_mm) * scale / 10.0
            ax.contour(vv, uu, b.mask.astype(float), levels=[0.5], colors="k")
            iu, iv = np.nonzero(b.mask)
            ax.text(float(vv[iv].mean()), float(uu[iu].mean()), f"{b.meta.get('kind', b.name)}\n{b.thickness_mm:g} mm "
                    f"{att.material}", ha="center", va="center", fontsize=7)
        ax.set_aspect("equal")
        ax.set_title(f"{fname}: drawn at {', '.join(sorted(planes))}", fontsize=9)
        ax.set_xlabel("transverse (cm)")
        ax.set_ylabel("patient axis (cm, head +)")
    return _png(fig)


def _uniformity_figure(plan: TbiPlan) -> str:
    g = plan.case.grid
    rx = plan.request.prescription_gy
    ref = np.asarray(plan.fields[0].reference_mm)
    k, j, i = np.rint(g.index_from_patient(ref[None, :])[0]).astype(int)
    vertical = plan.fields[0].direction[1] != 0.0
    img = plan.dose.dose_gy[:, min(max(j, 0), g.ny - 1), :] if vertical else plan.dose.dose_gy[:, :, min(max(i, 0), g.nx - 1)]
    x, y, z = g.axis_coordinates_mm()
    across = x if vertical else y
    fig, ax = plt.subplots(figsize=(4.5, 9))
    m = ax.imshow(np.ma.masked_equal(img / rx * 100.0, 0.0), origin="lower", cmap="RdYlBu_r", vmin=80, vmax=120,
                  extent=[across[0] / 10, across[-1] / 10, z[0] / 10, z[-1] / 10], aspect="equal")
    fig.colorbar(m, ax=ax, label="% of prescription")
    ax.set_title("uniformity (coronal)" if vertical else "uniformity (sagittal)", fontsize=9)
    return _png(fig)


def _dvh_figure(plan: TbiPlan) -> str:
    if not plan.dvhs:
        return ""
    rx = plan.request.prescription_gy
    dose = np.linspace(0, 1.4 * rx, 200)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, dv in plan.dvhs.items():
        ax.plot(dose, dv.curve(dose), label=name)
    ax.axvline(rx, color="grey", ls=":")
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.legend(fontsize=7)
    return _png(fig)


def render_tbi_report(path, plan: TbiPlan, metrics: dict) -> Path:
    """Write the report to ``path`` (atomically) and return it."""
    ok = metrics["all_rules_passed"]
    rules = metrics["rules"]
    rule_rows = [[r["rule"], r["value"], r["limit"], "pass" if r["passed"] else "FAIL", r["note"]] for r in rules]
    rule_cls = [["", "", "", "pass" if r["passed"] else "fail", ""] for r in rules]
    reg_rows = [[r["region"], r["n_points"], f'{r["separation_cm"]["min"]}-{r["separation_cm"]["max"]}',
                 f'{r["midline_dose_uncompensated_gy"]["min"]}-{r["midline_dose_uncompensated_gy"]["max"]}',
                 f'{r["compensator_mm"]["min"]}-{r["compensator_mm"]["max"]}',
                 f'{r["midline_dose_gy"]["min"]}-{r["midline_dose_gy"]["max"]}',
                 f'{r["deviation_percent"]["min"]} / {r["deviation_percent"]["max"]}'] for r in metrics["regions"]]
    reg_cls = [["", "", "", "", "", "", "pass" if r["within_aim"] else "fail"] for r in metrics["regions"]]
    field_rows = [[f["name"], f["gantry_deg"], f["mu_per_fraction"], f["beam_on_time_min"]] for f in metrics["fields"]]
    organ_rows = [[k, v["volume_cc"], v["mean_gy"], v.get("blocked_mm") or ""] for k, v in metrics["organs"].items()]
    p = metrics["prescription"]
    g = metrics["geometry"]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>TBI plan {_e(metrics['case'])}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Total-body irradiation plan: {_e(metrics['case'])}</h1>",
        f"<p>{p['total_gy']:g} Gy in {p['fractions']} fractions, {_e(metrics['technique'])}, source-to-midline "
        f"{g['source_to_midline_cm']:g} cm, field {g['field_cm']:g} cm, spoiler {g['spoiler_cm']:g} cm "
        f"{_e(g['spoiler_material'])}, beam data {_e(metrics['beam_data']['name'])}. Prescription point: "
        f"{_e(p['point']['region'])} midline, separation {p['point']['separation_cm']} cm.</p>",
        f"<p class='{'ok' if ok else 'bad'}'>{'All rules passed' if ok else 'Some rules FAILED'}</p>",
        "<h2>Rules (standard 003, annex 2)</h2>", _table(["rule", "value", "limit", "result", "note"], rule_rows, rule_cls),
        "<h2>Midline dose by region</h2>",
        _table(["region", "points", "separation (cm)", "uncompensated (Gy)", "compensator (mm)", "midline (Gy)",
                "deviation (%)"], reg_rows, reg_cls),
        _midline_figure(plan),
        "<h2>Compensator (tray drawing)</h2>", _compensator_figure(plan),
        "<p class='note'>Strip table: compensator.csv (positions at the midline and at the tray).</p>",
        "<h2>Blocks (drawing at the block screen)</h2>", _block_figure(plan),
        f"<p>Mean lung dose {metrics['lung']['mean_dose_gy']} Gy (without blocks "
        f"{metrics['lung']['mean_dose_without_blocks_gy']} Gy).</p>",
        "<h2>Dose distribution</h2>", _uniformity_figure(plan), _dvh_figure(plan),
        f"<p>Body V90 {metrics['body']['v90_percent']} %, V110 {metrics['body']['v110_percent']} % "
        "(the build-up region under the skin lies below 90 %).</p>",
        _table(["structure", "volume (cc)", "mean (Gy)", "blocked (mm)"], organ_rows),
        "<h2>Fields and dose rate</h2>",
        _table(["field", "gantry (deg)", "MU per fraction", "beam-on time (min)"], field_rows),
        f"<p>Machine dose rate {metrics['dose_rate']['machine_mu_per_min']:g} MU/min, midline dose rate "
        f"{metrics['dose_rate']['midline_cgy_per_min']} cGy/min.</p>",
        "</body></html>",
    ]
    path = Path(path)
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return path

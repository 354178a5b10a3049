"""The QA page: the verdict, the point dose, the gamma table, the measured and calculated planes, the
gamma map and two profiles (figures as inline PNG), as a self-contained ``qa_report.html`` and as a
page of the plan's ``report.html`` (:func:`add_qa_page_to_report`)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from .._log import atomic_output
from .compare import QAComparison
from .plane import DosePlane

_CSS = ("body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}"
        "h1{font-size:21px}h2{font-size:16px;border-bottom:1px solid #ccc;margin-top:24px}"
        "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px}"
        "th{background:#f0f0f0}.PASS{background:#d8f3dc}.FAIL{background:#fbd5d5}.REVIEW{background:#fdebd0}"
        ".INCOMPLETE{background:#eee}img{max-width:100%;border:1px solid #ddd}.note{color:#555;font-size:12px}")
# the verdict colours inside the plan report (whose own CSS does not know them)
_SCOPED_CSS = (".qa-page .PASS{background:#d8f3dc}.qa-page .FAIL{background:#fbd5d5}"
               ".qa-page .REVIEW{background:#fdebd0}.qa-page .INCOMPLETE{background:#eee}")


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _f(v, nd=2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{nd}f}"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return '<img alt="QA figure" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _figures(comparison: QAComparison, measured: DosePlane, calculated: DosePlane) -> str:
    from matplotlib.figure import Figure

    u0, v0 = comparison.shift_mm
    meas = measured.shifted(u0, v0) if (u0 or v0) else measured
    ext_c = (calculated.u_mm[0], calculated.u_mm[-1], calculated.v_mm[0], calculated.v_mm[-1])
    ext_m = (meas.u_mm[0], meas.u_mm[-1], meas.v_mm[0], meas.v_mm[-1])
    vmax = max(meas.max_gy, calculated.max_gy)
    fig = Figure(figsize=(14, 4.2))
    axes = fig.subplots(1, 3)
    m = np.where(meas.mask, meas.dose_gy, np.nan)
    im = axes[0].imshow(m, origin="lower", extent=ext_m, vmin=0, vmax=vmax, cmap="jet", interpolation="nearest")
    axes[0].set_title("measured (Gy)")
    axes[1].imshow(calculated.dose_gy, origin="lower", extent=ext_c, vmin=0, vmax=vmax, cmap="jet")
    axes[1].set_title("calculated (Gy)")
    fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8)
    g = comparison.gamma(comparison.decisive).gamma_map if comparison.gammas else np.full(m.shape, np.nan)
    gi = axes[2].imshow(g, origin="lower", extent=ext_m, vmin=0, vmax=2, cmap="RdYlGn_r", interpolation="nearest")
    axes[2].set_title(f"gamma {comparison.decisive.label}")
    fig.colorbar(gi, ax=axes[2], shrink=0.8)
    au, av, _ = calculated.orientation.axes
    for ax in axes:
        ax.set_facecolor("#e8e8e8")   # points without a detector stay grey
        ax.set_xlabel(f"{'xyz'[au]} (mm)")
        ax.set_ylabel(f"{'xyz'[av]} (mm)")
    out = _png(fig)
    fig2 = Figure(figsize=(12, 3.8))
    a, b = fig2.subplots(1, 2)
    mu, mv, md = meas.points()
    for ax, along, fixed_name in ((a, "u", "v"), (b, "v", "u")):
        if along == "u":
            j = int(np.argmin(np.abs(meas.v_mm)))
            row = meas.mask[j]
            ax.plot(meas.u_mm[row], meas.dose_gy[j, row], "o", ms=4, label="measured")
            ax.plot(calculated.u_mm, calculated.sample(calculated.u_mm, np.full(calculated.u_mm.size, meas.v_mm[j])),
                    "-", label="calculated")
            ax.set_xlabel(f"{'xyz'[au]} (mm) at {'xyz'[av]} = {meas.v_mm[j]:.1f} mm")
        else:
            i = int(np.argmin(np.abs(meas.u_mm)))
            col = meas.mask[:, i]
            ax.plot(meas.v_mm[col], meas.dose_gy[col, i], "o", ms=4, label="measured")
            ax.plot(calculated.v_mm, calculated.sample(np.full(calculated.v_mm.size, meas.u_mm[i]), calculated.v_mm),
                    "-", label="calculated")
            ax.set_xlabel(f"{'xyz'[av]} (mm) at {'xyz'[au]} = {meas.u_mm[i]:.1f} mm")
        ax.set_ylabel("dose (Gy)")
        ax.legend(fontsize=8)
    return out + _png(fig2)


def _calculated_figure(calculated: DosePlane) -> str:
    """The calculated plane alone (a verification without a measurement yet)."""
    from matplotlib.figure import Figure

    ext = (calculated.u_mm[0], calculated.u_mm[-1], calculated.v_mm[0], calculated.v_mm[-1])
    fig = Figure(figsize=(6, 4.6))
    ax = fig.subplots(1, 1)
    im = ax.imshow(calculated.dose_gy, origin="lower", extent=ext, vmin=0, vmax=calculated.max_gy, cmap="jet")
    au, av, _ = calculated.orientation.axes
    ax.set_title(f"calculated plane ({calculated.orientation.value}, Gy)")
    ax.set_xlabel(f"{'xyz'[au]} (mm)")
    ax.set_ylabel(f"{'xyz'[av]} (mm)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def qa_page_fragment(comparison: QAComparison, *, measured: DosePlane | None = None,
                     calculated: DosePlane | None = None, verification: dict | None = None,
                     title: str = "Patient-specific QA", heading: str = "h2") -> str:
    """The QA page as an HTML fragment (its own heading, styles scoped to ``.qa-page``).

    The same content serves the stand-alone ``qa_report.html`` and the QA page of the plan's
    ``report.html`` (:func:`add_qa_page_to_report`).  Without a measurement the verdict is
    ``INCOMPLETE`` and the calculated plane is shown alone.
    """
    sub = "h3" if heading == "h2" else "h2"
    v = comparison.verdict.value
    parts = [f"<div class='qa-page'><style>{_SCOPED_CSS}</style>",
             f"<{heading}>{_e(title)}</{heading}><p>Verdict: <span class='{v}'><b>{v}</b></span> "
             f"<span class='note'>(point dose &lt; {comparison.point.tolerance_pct if comparison.point else 3:g} %; "
             f"gamma {_e(comparison.decisive.label)} &ge; {comparison.pass_rate_pct:g} % pass, "
             f"&ge; {comparison.action_rate_pct:g} % review; {comparison.threshold_pct:g} % low-dose threshold)"
             "</span></p>"]
    if verification:
        ch = verification.get("chamber", {})
        parts.append(f"<{sub}>Verification plan</{sub}><table>"
                     f"<tr><th>phantom</th><td>{_e(verification.get('phantom'))}</td></tr>"
                     f"<tr><th>source plan</th><td>{_e(verification.get('source_rtplan'))}</td></tr>"
                     f"<tr><th>gantry / couch</th><td>{_e(verification.get('gantry'))} / "
                     f"{_e(verification.get('couch'))}</td></tr>"
                     f"<tr><th>MU (one fraction)</th><td>{_f(verification.get('mu_per_fraction'), 1)}</td></tr>"
                     f"<tr><th>chamber</th><td>{_e(ch.get('label'))}</td></tr>"
                     f"<tr><th>calculated chamber dose (Gy)</th><td>{_f(ch.get('volume_averaged_dose_gy'), 4)} "
                     f"(centre {_f(ch.get('centre_dose_gy'), 4)})</td></tr></table>")
    parts.append(f"<{sub}>Point dose</{sub}>")
    if comparison.point is None:
        parts.append("<p class='note'>no measured point dose given</p>")
    else:
        p = comparison.point
        cls = "PASS" if p.passed else "FAIL"
        parts.append(f"<table><tr><th>measured (Gy)</th><th>calculated (Gy)</th><th>difference (%)</th></tr>"
                     f"<tr><td>{_f(p.measured_gy, 4)}</td><td>{_f(p.calculated_gy, 4)}</td>"
                     f"<td class='{cls}'>{_f(p.diff_pct, 2)}</td></tr></table>")
    parts.append(f"<{sub}>Gamma</{sub}>")
    if not comparison.gammas:
        parts.append("<p class='note'>no measured plane given</p>")
        if calculated is not None:
            parts.append(_calculated_figure(calculated))
    else:
        def level(rate: float) -> str:
            return ("PASS" if rate >= comparison.pass_rate_pct else
                    "REVIEW" if rate >= comparison.action_rate_pct else "FAIL")

        rows = "".join(
            f"<tr><td>{_e(g.criterion.label)}</td><td class='{level(g.pass_rate_pct)}'>"
            f"{_f(g.pass_rate_pct, 1)}</td><td>{g.n_evaluated}</td><td>{_f(g.mean_gamma, 3)}</td></tr>"
            for g in comparison.gammas)
        parts.append("<table><tr><th>criterion</th><th>pass rate (%)</th><th>points</th><th>mean gamma</th></tr>"
                     f"{rows}</table><p class='note'>{comparison.n_measured} measured points, "
                     f"{comparison.n_outside} outside the calculation; normalisation "
                     f"{_f(comparison.normalisation_gy, 4)} Gy; registration shift {comparison.shift_mm} mm</p>")
        if measured is not None and calculated is not None:
            parts.append(_figures(comparison, measured, calculated))
    parts.append("</div>")
    return "".join(parts)


def render_qa_page(path, comparison: QAComparison, *, measured: DosePlane | None = None,
                   calculated: DosePlane | None = None, verification: dict | None = None,
                   title: str = "Patient-specific QA") -> Path:
    """Write the stand-alone QA page (atomically) and return its path."""
    body = qa_page_fragment(comparison, measured=measured, calculated=calculated, verification=verification,
                            title=title, heading="h1")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_CSS}</style>"
            f"</head><body>{body}</body></html>\n")
    path = Path(path)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path


#: id of the QA page in the plan's report.html (replaced, not duplicated, when the QA is re-run)
REPORT_SECTION_ID = "patient-specific-qa"


def add_qa_page_to_report(report_path, comparison: QAComparison, *, measured: DosePlane | None = None,
                          calculated: DosePlane | None = None, verification: dict | None = None,
                          title: str = "Patient-specific QA") -> Path:
    """Put the QA page into the plan's ``report.html`` (replacing an earlier QA page)."""
    from ..report import set_report_section

    frag = qa_page_fragment(comparison, measured=measured, calculated=calculated, verification=verification,
                            title=title, heading="h2")
    return set_report_section(report_path, REPORT_SECTION_ID, frag)

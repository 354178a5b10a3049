"""HTML plan report on the spine phantom with an analytic dose."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from sbrtplan.case import Dose, distance_map_mm, resample_case
from sbrtplan.errors import InputError, StructureError
from sbrtplan.phantoms import make_phantom
from sbrtplan.report import render_report

RX_GY, FX = 27.0, 3


@pytest.fixture(scope="module")
def plan():
    """Spine phantom, an analytic dose (106-108 % of Rx in the PTV, falling off
    with a 7 mm e-folding length outside), and synthetic metrics with one goal
    of each status."""
    case = make_phantom("spine", spacing_mm=2.5)
    d = distance_map_mm(case.structure("PTV"), max_distance_mm=60.0, signed=True)
    d = np.where(np.isinf(d), 60.0, d)
    dose_gy = np.where(d <= 0, RX_GY * (1.06 + 0.02 * np.clip(-d, 0, 10) / 10),
                       RX_GY * 1.05 * np.exp(-np.clip(d, 0, None) / 7.0)).astype(np.float32)
    dose_gy[~case.body.mask] = 0.0
    dose = Dose(case.grid, dose_gy, description="analytic")
    metrics = {
        "schema_version": "1.0", "generator": "sbrtplan test",
        "protocol": {"name": "bone_spine", "title": "Spine metastasis SBRT", "conditions": [], "resolution": []},
        "prescription": {"dose_gy": RX_GY, "fractions": FX, "dose_per_fraction_gy": 9.0, "target": "PTV",
                         "bed10_gy": 51.3},
        "targets": {"PTV": {"role": "PTV", "volume_cc": 31.6, "D98_gy": 27.9, "D95_gy": 28.6, "D50_gy": 28.9,
                            "D2_gy": 29.1, "Dmax_gy": 29.1, "V100_pct": 99.7, "CI_rtog": 1.05, "CI_paddick": 0.95,
                            "GI": 2.03, "R50": 2.14, "D2cm_pct": 6.5, "HI": 0.04, "rtog_class": "none"}},
        "goals": [
            {"structure": "SpinalCord", "metric_label": "D0.035cc", "comparator": "<", "limit": 22.5,
             "limit_unit": "Gy", "value": 14.2, "unit": "Gy", "priority": 1, "priority_class": "critical",
             "mandatory": True, "status": "pass", "note": ""},
            {"structure": "SpinalCord_PRV02", "metric_label": "D0.1cc", "comparator": "<", "limit": 18.0,
             "limit_unit": "Gy", "value": 24.9, "unit": "Gy", "priority": 1, "priority_class": "critical",
             "mandatory": True, "status": "fail", "note": "<b>not</b> escaped?"},
            {"structure": "Esophagus", "metric_label": "D5cc", "comparator": "<", "limit": 21.0, "limit_unit": "Gy",
             "value": None, "unit": "Gy", "priority": 2, "priority_class": "organ", "mandatory": True,
             "status": "not_evaluable", "note": "not evaluable: structure too small"},
        ],
        "coverage": {"status": "primary", "note": "D90 >= Rx"},
        "summary": {"n_goals": 3, "n_passed": 1, "n_failed": 1, "n_failed_mandatory": 1, "n_not_evaluable": 1,
                    "hard_failures": ["SpinalCord_PRV02 D0.1cc"], "acceptable": False},
        "notes": [], "timings_s": {"dose": 1.25, "optimise": 3.5},
    }
    return case, dose, metrics


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_report_is_self_contained_with_images_and_status_classes(plan, tmp_path):
    case, dose, metrics = plan
    qa = {"mu_check": [{"beam": "B1", "plan_mu": 1200.0, "check_mu": 1215.0, "diff_pct": 1.25}],
          "deliverability": [], "delivery_time_s": 312.0, "total_mu": 5400}
    out = render_report(tmp_path / "sub" / "report.html", case=case, dose=dose, metrics=metrics,
                        prescription_gy=RX_GY, n_fractions=FX, qa=qa,
                        reference_dose=Dose(case.grid, 0.95 * dose.dose_gy))
    text = out.read_text(encoding="utf-8")
    assert out.name == "report.html" and not list(out.parent.glob(".tmp-*"))
    # Self-contained: no external resources.
    assert not re.search(r'(src|href)="(?!data:)', text)
    pngs = _pngs(text)
    assert len(pngs) == 2  # DVH and the three planes
    for png in pngs:
        w, h = _png_size(png)
        assert w > 300 and h > 200
    # One row per goal, classed by status; the result cell says it.
    rows = re.findall(r'<tr class="goal status-(\w+)[^"]*">(.*?)</tr>', text)
    assert [s for s, _ in rows] == ["pass", "fail", "not_evaluable"]
    assert '<td class="result">PASS</td>' in rows[0][1] and '<td class="result">FAIL</td>' in rows[1][1]
    assert "SpinalCord_PRV02" in rows[1][1] and "24.90 Gy" in rows[1][1] and "&lt; 18.00 Gy" in rows[1][1]
    assert "&lt;b&gt;not&lt;/b&gt;" in text  # notes are escaped
    # Header, summary and QA content.
    assert "27 Gy / 3 fx" in text and "NOT ACCEPTABLE" in text and "bone_spine" in text
    assert ">2.03<" in text and ">2.14<" in text  # GI and R50 in the target table
    assert "1215.000" in text and "delivery time s" in text and "5400" in text


def test_dvh_figure_differs_with_a_reference_and_slices_show_the_dose(plan, tmp_path):
    case, dose, metrics = plan
    a = render_report(tmp_path / "a.html", case=case, dose=dose, metrics=metrics, prescription_gy=RX_GY,
                      n_fractions=FX, dvh_structures=["PTV", "SpinalCord"])
    b = render_report(tmp_path / "b.html", case=case, dose=dose, metrics=metrics, prescription_gy=RX_GY,
                      n_fractions=FX, dvh_structures=["PTV", "SpinalCord"],
                      reference_dose=Dose(case.grid, 0.9 * dose.dose_gy))
    dvh_a, slices_a = _pngs(a.read_text())
    dvh_b, slices_b = _pngs(b.read_text())
    assert dvh_a != dvh_b and slices_a == slices_b


def test_dose_on_another_grid_is_resampled_for_slices_and_dvh(plan, tmp_path):
    # The dose on a 2 mm grid over the PTV region while the CT is on 2.5 mm.
    case, dose, metrics = plan
    sub = resample_case(case, 2.0, region=case.structure("PTV"), margin_mm=30.0)
    from sbrtplan.case import resample_dose
    dose2 = resample_dose(dose, sub.grid)
    out = render_report(tmp_path / "c.html", case=case, dose=dose2, metrics=metrics, prescription_gy=RX_GY,
                        n_fractions=FX, dvh_structures=["PTV", "SpinalCord"])
    assert len(_pngs(out.read_text())) == 2


def test_bad_arguments_are_clear_errors_and_nothing_is_written(plan, tmp_path):
    case, dose, metrics = plan
    with pytest.raises(StructureError, match="'Bladder'"):
        render_report(tmp_path / "x.html", case=case, dose=dose, metrics=metrics, prescription_gy=RX_GY,
                      n_fractions=FX, dvh_structures=["Bladder"])
    with pytest.raises(InputError, match="prescription_gy"):
        render_report(tmp_path / "x.html", case=case, dose=dose, metrics=metrics, prescription_gy=-1.0,
                      n_fractions=FX)
    assert not list(tmp_path.glob("*"))


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(plan, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium / chromium-browser / google-chrome on PATH for the headless rendering check")
    case, dose, metrics = plan
    out = render_report(tmp_path / "r.html", case=case, dose=dose, metrics=metrics, prescription_gy=RX_GY,
                        n_fractions=FX)
    # A copy with a probe that writes how many images decoded into the DOM.
    probe = ("<script>window.addEventListener('load',function(){var im=document.images,n=0;"
             "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)n++;}"
             "var p=document.createElement('p');p.id='probe';p.textContent='IMAGES_LOADED '+n+'/'+im.length;"
             "document.body.appendChild(p);});</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", probe + "</body>"), encoding="utf-8")
    res = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert "IMAGES_LOADED 2/2" in res.stdout, res.stderr[-2000:]

"""Fractionation comparison (``sbrtplan compare-fractions`` output): BED/EQD2 per scheme, goals, MU, CSV, PNG."""

import csv
import io

import numpy as np
import pytest
from conftest import spine_case

from sbrtplan.case import Dose
from sbrtplan.errors import InputError
from sbrtplan.evaluation import evaluate_plan, metrics_dict
from sbrtplan.report.fractions import CSV_COLUMNS, fraction_comparison, plot_fraction_comparison

SCHEMES = ("24/1", "27/3", "35/5", "50/10")


def _rows():
    # one "plan" per scheme: the same dose shape scaled so that the PTV gets 28/27 of each prescription and
    # the cord PRV 11/27 of it
    dose, structures = spine_case(cord_dose_gy=11.0)
    rows = []
    for sch in SCHEMES:
        total = float(sch.split("/")[0])
        d = Dose(dose.grid, dose.dose_gy * (total / 27.0))
        m = metrics_dict(evaluate_plan(d, structures, "bone_spine", sch))
        rows.append({"scheme": sch, "metrics": m, "mu_per_fraction": 1000.0 * total / int(sch.split("/")[1])})
    return rows


@pytest.fixture(scope="module")
def rows():
    return _rows()


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_bed_eqd2_per_scheme_and_goals(rows):
    table, csv_text = fraction_comparison(rows)
    recs = _csv(csv_text)
    assert tuple(recs[0]) == CSV_COLUMNS

    def val(scheme, section, structure, metric):
        hits = [r for r in recs if (r["scheme"], r["section"], r["structure"], r["metric"]) ==
                (scheme, section, structure, metric)]
        assert len(hits) == 1, (scheme, section, structure, metric)
        return hits[0]

    # prescription BED10 = D (1 + d/10): 24/1 -> 81.6, 27/3 -> 51.3, 35/5 -> 59.5, 50/10 -> 75 Gy
    for sch, bed in zip(SCHEMES, (81.6, 51.3, 59.5, 75.0)):
        assert float(val(sch, "prescription", "PTV", "BED10_Rx")["value"]) == pytest.approx(bed, abs=1e-9)
    # EQD2_10 = BED10 / 1.2: 27/3 -> 42.75 Gy
    assert float(val("27/3", "prescription", "PTV", "EQD2_10_Rx")["value"]) == pytest.approx(42.75, abs=1e-9)
    # target D95 = 28/27 Rx: 24/1 -> 24.89 Gy in one fraction, BED10 = 24.89 (1 + 2.489) = 86.84 Gy
    d95 = 24.0 * 28 / 27
    assert float(val("24/1", "target", "PTV", "BED_D95")["value"]) == pytest.approx(d95 * (1 + d95 / 10), rel=1e-4)
    # cord PRV near-max 11/27 Rx with the cord's alpha/beta 2 Gy (bone standard): 50/10 -> 20.37 Gy in 10 fx,
    # EQD2 = 20.37 (1 + 2.037/2) / 2 = 20.56 Gy; 24/1 -> 9.78 Gy single: 9.78 (1 + 9.78/2) / 2 = 28.80 Gy
    cord = val("50/10", "organ", "SpinalCord_PRV02", "EQD2_D0.035cc")
    assert float(cord["alpha_beta_gy"]) == 2.0
    c = 50 * 11 / 27
    assert float(cord["value"]) == pytest.approx(c * (1 + c / 20) / 2, rel=1e-4)
    c1 = 24 * 11 / 27
    assert float(val("24/1", "organ", "SpinalCord_PRV02", "EQD2_D0.035cc")["value"]) == pytest.approx(
        c1 * (1 + c1 / 2) / 2, rel=1e-4)
    # the single fraction is the most damaging to the cord for the same physical fraction of Rx
    assert c1 * (1 + c1 / 2) / 2 > c * (1 + c / 20) / 2
    # goal limits follow the fraction number: cord PRV D0.1cc < 14 Gy (1 fx), < 21.9 Gy (3 fx), < 30 Gy (5 fx),
    # 40 Gy for 10 fx (converted from 5 fx through EQD2)
    lim = {s: float(val(s, "goal", "SpinalCord_PRV02", "D0.1cc")["limit"]) for s in SCHEMES}
    assert lim == pytest.approx({"24/1": 14.0, "27/3": 21.9, "35/5": 30.0, "50/10": 40.0}, abs=0.01)
    # 24 x 11/27 = 9.78 Gy < 14 Gy passes
    assert val("24/1", "goal", "SpinalCord_PRV02", "D0.1cc")["passed"] == "true"
    # summary counts per scheme are those of the metrics
    for r in rows:
        s = r["metrics"]["summary"]
        assert int(val(r["scheme"], "summary", "plan", "n_passed")["value"]) == s["n_passed"]
    # MU over the course = MU/fx x fractions
    assert float(val("50/10", "delivery", "plan", "MU_total")["value"]) == pytest.approx(50000.0)
    # the text table: one line per scheme plus organ and goal blocks
    assert "81.6" in table and "51.3" in table and "SpinalCord_PRV02 (a/b 2)" in table
    assert "Goals per scheme" in table and "PASS" in table


def test_plot_and_row_errors(rows, tmp_path):
    import matplotlib.image as mpimg

    out = plot_fraction_comparison(rows, tmp_path / "fx.png")
    img = mpimg.imread(out)
    assert img.shape[0] == 8 * 96 and img.shape[1] == 11 * 96       # 11 x 8 in at 96 dpi
    assert np.std(img[..., :3]) > 0.05                                # not blank
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(InputError, match="row #1: expected a dict with 'scheme' and 'metrics'"):
        fraction_comparison([{"scheme": "27/3"}])
    with pytest.raises(InputError, match="does not match the metrics' prescription"):
        fraction_comparison([{"scheme": "30/3", "metrics": rows[1]["metrics"]}])
    with pytest.raises(InputError, match="mu_per_fraction must be a number"):
        fraction_comparison([dict(rows[1], mu_per_fraction="many")])
    with pytest.raises(InputError, match="non-empty list"):
        fraction_comparison([])

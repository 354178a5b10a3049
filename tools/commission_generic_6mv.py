"""Re-commission the shipped small-field beam model ``generic-6MV-sf``.

``generic-6MV-sf`` has four kernel components and is commissioned on small-field output factors
and a Monte Carlo lung slab as well as the water scans; the default ``generic-6MV`` (three
components, scans only) is what plans use until the VMAT path is re-tuned to it
(``sbrtplan/dose_engine/machines/README.md``).

Data (none of it is copied into the repository):

* PTW water-tank scans ``06MV_10x10.mcc`` and ``06MV_05x05.mcc`` (SSD 900 mm; PDDs and in/cross-plane
  profiles at 15, 50, 100, 200 mm) from ``../shared/data/beam``;
* three published small-field output factors, Exradin W1 plastic scintillator, TrueBeam STx 6 MV,
  HD-MLC square fields, SAD set-up, 10 cm depth: 1.0 cm 0.716, 1.5 cm 0.779 and 2.0 cm 0.804
  ("SU-E-T-423: TrueBeam Small Field Dosimetry Using Commercial Plastic Scintillation and Other
  Stereotactic Detectors", Med Phys, doi:10.1118/1.4888756).  With the 1 cm value held out, the
  fit predicts 0.692 (-3.4 %), so it is part of the commissioning data, as in a clinical beam-data
  set; the 3 x 3, 4 x 4 and 6 x 6 cm values of another data set (RPC Elekta) stay independent;
* the Monte Carlo water / lung (0.25) / water slab of ``../shared/data/reference/mc_lung_slab``
  (ompMC and pyRadMC): the heterogeneity correction factor L/H on the central axis of the 2 x 2 and
  10 x 10 cm fields.  The 5 x 5 cm field is held out.

Why the extra data: water scans of 5 x 5 and 10 x 10 cm do not determine how the lateral kernel's
energy is split between its sharp core and wider parts, and that split sets both the output of a
field smaller than the lateral electron range and the dose loss of a small field in lung, where the
kernel widths scale with 1/density.  Four kernel components are fitted, with a shift of each scanned
field's edges (the scanned machine's collimator calibration).  The slab residuals count only beyond
60 % of the issue's tolerances (5 % inside the lung, 3 % beyond), so the fit is not pulled onto the
Monte Carlo noise.

Usage::

    python tools/commission_generic_6mv.py [--shared ../shared/data] [--start MODEL] [--out FILE]

Prints the agreement and writes the model (default: the shipped file).  About 20 minutes on two
cores (each evaluation runs the engine on the slab).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
from sbrtplan.dose_engine import (BeamModel, Correction, MeasuredOutputFactor, commission, forward_dose,
                                  load_beam_model, output_factor)
from sbrtplan.phantoms import make_phantom

W1 = "W1 scintillator, TrueBeam STx 6 MV, doi:10.1118/1.4888756"
OUTPUT_FACTORS = [MeasuredOutputFactor(10.0, 0.716, 100.0, 900.0, 100.0, W1),
                  MeasuredOutputFactor(15.0, 0.779, 100.0, 900.0, 100.0, W1),
                  MeasuredOutputFactor(20.0, 0.804, 100.0, 900.0, 100.0, W1)]
SLAB_FIELDS_CM = (2, 10)
INSIDE_MM = tuple(range(60, 141, 10))       # 10 mm clear of both lung interfaces
BEYOND_MM = tuple(range(170, 251, 10))      # after the re-build-up
TOLERANCE = {"inside": 0.05, "beyond": 0.03}
HINGE = 0.6
WINDOW_MM = 5.0
SHIPPED = Path(__file__).resolve().parents[1] / "sbrtplan" / "dose_engine" / "machines" / "generic-6MV-sf.yaml"


def mc_ratio(ref: Path, field_cm: int, depth_mm: float) -> float:
    """Inverse-variance mean over the two Monte Carlo codes of L/H, +-5 mm around ``depth_mm``
    (the reference README's rule; the tests read it with ``tests/conftest.py: mc_slab_lh``)."""
    ratios, weights = [], []
    for code in ("ompmc", "pyradmc"):
        h = np.loadtxt(ref / f"cax_{code}_H_{field_cm}x{field_cm}.csv", delimiter=",", skiprows=1)
        lung = np.loadtxt(ref / f"cax_{code}_L_{field_cm}x{field_cm}.csv", delimiter=",", skiprows=1)
        sel = np.abs(h[:, 0] - depth_mm) <= WINDOW_MM + 1e-6
        r = lung[sel, 1].mean() / h[sel, 1].mean()
        u = r * np.sqrt(np.sum(lung[sel, 2] ** 2) + np.sum(h[sel, 2] ** 2)) / sel.sum()
        ratios.append(r)
        weights.append(1.0 / u ** 2)
    return float(np.dot(weights, ratios) / np.sum(weights))


class SlabConstraint:
    """Residuals of the engine's L/H on the lung slab against the Monte Carlo reference."""

    label = "Monte Carlo water/lung/water slab, L/H on the central axis, 2x2 and 10x10 cm (mc_lung_slab)"

    def __init__(self, ref: Path):
        self.case = make_phantom("lung_slab", 2.0)
        g = self.case.grid
        x, y, z = g.axis_coordinates_mm()
        self.depth = y - self.case.metadata["surface_y_mm"]
        self.water = np.ones_like(self.case.density)
        mlc = MLCModel.millennium120()
        self.setups = []
        for f in SLAB_FIELDS_CM:
            n = {2: 1, 5: 2, 10: 3}[f]
            ix = np.where(np.abs(x) < 2.0 * n)[0]
            iz = np.where(np.abs(z) < 2.0 * n)[0]
            kk, jj, ii = np.meshgrid(iz, np.arange(g.ny), ix, indexing="ij")
            vox = np.ravel_multi_index((kk.ravel(), jj.ravel(), ii.ravel()), g.shape)
            ap = Aperture.rectangle(mlc, (-5.0 * f, 5.0 * f), (-5.0 * f, 5.0 * f))
            beam = Beam(f"{f}x{f}", [ControlPoint(0.0, ap, 1.0)], mu=100.0, mlc=mlc,
                        isocenter_mm=self.case.metadata["ssd_sad_isocenter_mm"])
            self.setups.append((f, vox, (iz, ix), BeamSet([beam], n_fractions=1, prescription_gy=1.0)))
        self.reference = {(f, d): mc_ratio(ref, f, d) for f in SLAB_FIELDS_CM for d in INSIDE_MM + BEYOND_MM}

    def deviations(self, model: BeamModel) -> dict:
        g = self.case.grid
        out = {}
        for f, vox, (iz, ix), bs in self.setups:
            cax = {}
            for label, dens in (("L", self.case.density), ("H", self.water)):
                d = forward_dose(dens, g, bs, model=model, voxel_indices=vox, correction=Correction.LATERAL)
                cax[label] = d[np.ix_(iz, np.arange(g.ny), ix)].mean(axis=(0, 2))
            for depth in INSIDE_MM + BEYOND_MM:
                sel = np.abs(self.depth - depth) <= WINDOW_MM + 1e-6
                out[(f, depth)] = cax["L"][sel].mean() / cax["H"][sel].mean() / self.reference[(f, depth)] - 1.0
        return out

    def __call__(self, model: BeamModel) -> np.ndarray:
        res = []
        for (f, depth), e in self.deviations(model).items():
            tol = TOLERANCE["inside" if depth in INSIDE_MM else "beyond"]
            res.append(np.sign(e) * max(abs(e) - HINGE * tol, 0.0) / tol)
        return np.array(res)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                    help="the shared data folder (beam/ and reference/mc_lung_slab/)")
    ap.add_argument("--start", default=None, help="starting model, four components (default: generic-6MV-sf)")
    ap.add_argument("--out", default=str(SHIPPED), help="model file to write (default: the shipped file)")
    ap.add_argument("--max-evaluations", type=int, default=150)
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    scans = sorted((shared / "beam").glob("06MV_*.mcc"))
    ref = shared / "reference" / "mc_lung_slab"
    if len(scans) != 2 or not ref.is_dir():
        sys.exit(f"need {shared}/beam/06MV_*.mcc (2 files) and {ref}")
    start = load_beam_model(args.start or "generic-6MV-sf")
    slab = SlabConstraint(ref)
    model, report = commission(scans, name="generic-6MV-sf", base=start, initial=start, n_components=4,
                               fit_field_offsets=True, output_factors=OUTPUT_FACTORS, constraints=[slab],
                               max_evaluations=args.max_evaluations)
    model.description = ("Generic 6 MV flattened beam, small-field commissioned, Gaussian pencil-beam model (four kernel components) "
                         "commissioned on PTW water-tank scans (10x10 and 5x5 cm, SSD 900 mm), three published "
                         "small-field output factors (W1, 1 to 2 cm) and a Monte Carlo water/lung slab "
                         "(tools/commission_generic_6mv.py)")
    dev = slab.deviations(model)
    model.provenance["slab_deviation_percent"] = {f"{f}x{f} {d} mm": round(100.0 * e, 2)
                                                  for (f, d), e in dev.items()}
    print(report.table())
    print(model.summary())
    print("output factors (10 cm depth, SSD 90 cm):",
          "  ".join(f"{f / 10:g} cm {output_factor(model, f, 100.0, 900.0):.3f}" for f in (10, 15, 20, 30, 40, 60)))
    for f in SLAB_FIELDS_CM:
        ins = max(abs(dev[(f, d)]) for d in INSIDE_MM)
        bey = max(abs(dev[(f, d)]) for d in BEYOND_MM)
        print(f"lung slab {f}x{f} cm: largest |L/H - MC| inside {100 * ins:.2f} %, beyond {100 * bey:.2f} %")
    model.to_file(args.out)
    print(f"written to {args.out}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

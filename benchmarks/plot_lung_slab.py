"""Lung-slab heterogeneity benchmark: Monte Carlo vs lateral-corrected vs depth-only pencil beam.

Usage::

    python benchmarks/plot_lung_slab.py [--ref DIR] [--out lung_slab.png]

Reads the Monte Carlo reference of ``../shared/data/reference/mc_lung_slab``
(two codes, water H and water/lung/water L, 2x2, 5x5, 10x10 cm), computes the
same geometry with :func:`sbrtplan.dose_engine.forward_dose` on the
``lung_slab`` phantom with the lateral and the depth-only corrections, and
writes a PNG: top row the central-axis depth doses in the slab phantom (each
normalised to its own homogeneous-water dose at 10 cm, as the reference is),
bottom row the heterogeneity correction factor L/H.  Prints the deviation of
each engine curve from the Monte Carlo L/H inside (6-14 cm) and beyond
(17-25 cm) the lung.  The independent MU check (Clarkson sector integration on
equivalent-path depth, :mod:`sbrtplan.dose_engine.mucheck`) is drawn too: it
behaves like the depth-only correction, which is where such checks stop being
reliable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REF = REPO.parent / "shared" / "data" / "reference" / "mc_lung_slab"
FIELDS_CM = (2, 5, 10)
N_CENTRAL = {2: 1, 5: 2, 10: 3}
INSIDE_MM = tuple(range(60, 141, 10))
BEYOND_MM = tuple(range(170, 251, 10))


def load_mc(ref: Path, field_cm: int) -> dict:
    """Per code: depth, H, L, sigma(H), sigma(L) (relative)."""
    out = {}
    for pkg in ("ompmc", "pyradmc"):
        h = np.loadtxt(ref / f"cax_{pkg}_H_{field_cm}x{field_cm}.csv", delimiter=",", skiprows=1)
        lung = np.loadtxt(ref / f"cax_{pkg}_L_{field_cm}x{field_cm}.csv", delimiter=",", skiprows=1)
        out[pkg] = (h[:, 0], h[:, 1], lung[:, 1], h[:, 2], lung[:, 2])
    return out


def mc_lh_window(mc: dict, depth_mm: float, half: float = 5.0) -> float:
    r, w = [], []
    for d, h, lung, uh, ul in mc.values():
        sel = np.abs(d - depth_mm) <= half + 1e-6
        ratio = lung[sel].mean() / h[sel].mean()
        u = ratio * np.sqrt(np.sum(ul[sel] ** 2) + np.sum(uh[sel] ** 2)) / sel.sum()
        r.append(ratio)
        w.append(1.0 / u ** 2)
    return float(np.dot(w, r) / np.sum(w))


def engine_curves(spacing_mm: float = 2.0) -> dict:
    from sbrtplan.beams import Aperture, Beam, BeamSet, ControlPoint, MLCModel
    from sbrtplan.dose_engine import Correction, forward_dose
    from sbrtplan.phantoms import make_phantom

    case = make_phantom("lung_slab", spacing_mm)
    g = case.grid
    x, y, z = g.axis_coordinates_mm()
    depth = y - case.metadata["surface_y_mm"]
    mlc = MLCModel.millennium120()
    water = np.ones_like(case.density)
    out = {"depth_mm": depth}
    for f in FIELDS_CM:
        n = N_CENTRAL[f]
        ix = np.where(np.abs(x) < spacing_mm * n)[0]
        iz = np.where(np.abs(z) < spacing_mm * n)[0]
        kk, jj, ii = np.meshgrid(iz, np.arange(g.ny), ix, indexing="ij")
        vox = np.ravel_multi_index((kk.ravel(), jj.ravel(), ii.ravel()), g.shape)
        ap = Aperture.rectangle(mlc, (-5.0 * f, 5.0 * f), (-5.0 * f, 5.0 * f))
        beam = Beam(f"{f}x{f}", [ControlPoint(0.0, ap, 1.0)], mu=100.0, mlc=mlc,
                    isocenter_mm=case.metadata["ssd_sad_isocenter_mm"])
        bs = BeamSet([beam], n_fractions=1, prescription_gy=1.0)
        for label, dens in (("L", case.density), ("H", water)):
            for corr in (Correction.LATERAL, Correction.DEPTH_ONLY):
                d = forward_dose(dens, g, bs, voxel_indices=vox, correction=corr)
                out[(f, label, corr.name)] = d[np.ix_(iz, np.arange(g.ny), ix)].mean(axis=(0, 2))
    out["case"] = case
    return out


def clarkson_curves(case, field_cm: int, depths_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent MU-check (Clarkson, equivalent path) central-axis doses, slab and water."""
    from sbrtplan.beams import Aperture, Beam, ControlPoint, MLCModel
    from sbrtplan.dose_engine.mucheck import independent_point_dose

    mlc = MLCModel.millennium120()
    ap = Aperture.rectangle(mlc, (-5.0 * field_cm, 5.0 * field_cm), (-5.0 * field_cm, 5.0 * field_cm))
    beam = Beam("clarkson", [ControlPoint(0.0, ap, 1.0)], mu=100.0, mlc=mlc,
                isocenter_mm=case.metadata["ssd_sad_isocenter_mm"])
    sy = case.metadata["surface_y_mm"]
    water = np.ones_like(case.density)
    lung = np.array([independent_point_dose(beam, case.density, case.grid, (0.0, sy + d, 0.0)) for d in depths_mm])
    wat = np.array([independent_point_dose(beam, water, case.grid, (0.0, sy + d, 0.0)) for d in depths_mm])
    return lung, wat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", type=Path, default=DEFAULT_REF, help="Monte Carlo reference folder")
    ap.add_argument("--out", type=Path, default=Path("lung_slab.png"), help="PNG to write")
    args = ap.parse_args(argv)
    if not args.ref.is_dir():
        print(f"reference folder not found: {args.ref}", file=sys.stderr)
        return 2

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sbrtplan._log import atomic_output

    eng = engine_curves()
    depth = eng["depth_mm"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), sharex=True)
    print(f"{'field':<7}{'curve':<12}{'inside 6-14 cm: max |dev| %':>30}{'beyond 17-25 cm: max |dev| %':>31}")
    for c, f in enumerate(FIELDS_CM):
        mc = load_mc(args.ref, f)
        top, bot = axes[0, c], axes[1, c]
        for pkg, style in (("ompmc", "o"), ("pyradmc", "s")):
            d, h, lung, uh, ul = mc[pkg]
            top.errorbar(d, lung, yerr=ul * lung, fmt=style, ms=2.5, lw=0.6, alpha=0.6, label=f"MC {pkg} (L)")
            bot.plot(d, lung / h, style, ms=2.5, alpha=0.5, label=f"MC {pkg}")
        for corr, colour, name in (("LATERAL", "C3", "lateral-corrected"), ("DEPTH_ONLY", "C2", "depth-only")):
            lung, water = eng[(f, "L", corr)], eng[(f, "H", corr)]
            norm = np.interp(100.0, depth, water)
            top.plot(depth, lung / norm, "-", color=colour, lw=1.6, label=f"engine {name}")
            bot.plot(depth, lung / water, "-", color=colour, lw=1.6, label=f"engine {name}")
            dev_in = [np.mean(lung[np.abs(depth - d) <= 5.0]) / np.mean(water[np.abs(depth - d) <= 5.0])
                      / mc_lh_window(mc, d) - 1.0 for d in INSIDE_MM]
            dev_out = [np.mean(lung[np.abs(depth - d) <= 5.0]) / np.mean(water[np.abs(depth - d) <= 5.0])
                       / mc_lh_window(mc, d) - 1.0 for d in BEYOND_MM]
            print(f"{f}x{f:<5}{name:<18}{100 * np.max(np.abs(dev_in)):>20.1f}{100 * np.max(np.abs(dev_out)):>31.1f}")
        cd = np.arange(5.0, 296.0, 10.0)
        cl, cw = clarkson_curves(eng["case"], f, cd)
        top.plot(cd, cl / np.interp(100.0, cd, cw), "x", color="C4", ms=4, label="independent check (Clarkson, EPL)")
        bot.plot(cd, cl / cw, "x", color="C4", ms=4, label="independent check (Clarkson, EPL)")
        for ax in (top, bot):
            ax.axvspan(50, 150, color="0.9", zorder=0)
            ax.grid(alpha=0.3)
        top.set_title(f"{f} x {f} cm, SSD 100 cm, lung 0.25 at 5-15 cm")
        top.set_ylabel("dose (water at 10 cm = 1)")
        bot.set_ylabel("L / H")
        bot.set_xlabel("depth (mm)")
        bot.set_xlim(0, 300)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    axes[1, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("6 MV central axis in a water / lung / water slab: "
                 "Monte Carlo (ompMC, pyRadMC) vs sbrtplan pencil beam")
    fig.tight_layout()
    with atomic_output(args.out) as tmp:
        fig.savefig(tmp, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Report figures: cumulative DVHs and dose on CT in three planes, as PNG bytes.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, so
no global state and nothing to close: each figure is freed with its last
reference) and returned as PNG bytes for embedding.

Slices are taken on the CT grid through a point (the target centroid): the
axial plane at the CT slice ``k`` nearest to it, the coronal plane at row
``j``, the sagittal plane at column ``i``.  The dose, which may live on another
grid (the dose grid), is interpolated trilinearly onto the voxel centres of
that one CT plane only (``resample_array`` on a one-voxel-thick grid), so the
cost does not depend on the CT size.  Display follows the radiological
convention for HFS: axial with the patient's right on the left of the image and
anterior up; coronal with superior up; sagittal with anterior on the left.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from ..case import Case, Dose, Grid, Structure, resample_array
from ..evaluation import DVH

# Isodose levels (% of the prescription) and their colours.
ISODOSE_LEVELS_PCT = (50.0, 90.0, 100.0, 110.0)
ISODOSE_COLOURS = ("#1f5fd6", "#2ca02c", "#f0c000", "#d62728")
# Dose wash below this fraction of the prescription is left transparent.
_WASH_FROM_PCT = 30.0
_DPI = 96

_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
            "#469990", "#800000", "#808000", "#000075", "#bfef45", "#a9a9a9", "#dcbeff", "#ffd8b1")


def structure_colours(structures: list[Structure]) -> dict[str, str]:
    """A stable colour per structure: its own ``color_rgb`` if set, else a palette entry."""
    out = {}
    for n, s in enumerate(structures):
        if s.color_rgb is not None:
            r, g, b = s.color_rgb
            out[s.name] = f"#{int(r):02x}{int(g):02x}{int(b):02x}"
        else:
            out[s.name] = _PALETTE[n % len(_PALETTE)]
    return out


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


# ---------------------------------------------------------------------- DVH
def dvh_figure(dvhs: dict[str, DVH], colours: dict[str, str], prescription_gy: float,
               reference: dict[str, DVH] | None = None, reference_label: str = "reference") -> bytes:
    """Cumulative DVHs (solid) with optional reference DVHs (dashed, same colours)."""
    dmax = max([d.max_gy for d in dvhs.values()] + [d.max_gy for d in (reference or {}).values()] + [prescription_gy])
    dose = np.linspace(0.0, 1.05 * dmax, 400)
    fig = Figure(figsize=(8.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    for name, dvh in dvhs.items():
        ax.plot(dose, dvh.curve(dose), color=colours.get(name, "k"), lw=1.6, label=name)
        if reference and name in reference:
            ax.plot(dose, reference[name].curve(dose), color=colours.get(name, "k"), lw=1.2, ls="--")
    ax.axvline(prescription_gy, color="0.4", lw=0.8, ls=":")
    ax.set_xlim(0, dose[-1])
    ax.set_ylim(0, 102)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.grid(alpha=0.3)
    title = "Cumulative DVH" + (f" (solid: plan, dashed: {reference_label})" if reference else "")
    ax.set_title(title, fontsize=10)
    if dvhs:   # no curve, no legend (a report without DVH structures)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.78, bottom=0.11, top=0.92)
    return _png(fig)


# ------------------------------------------------------------------ slices
@dataclass(frozen=True)
class _Plane:
    name: str
    axis: int  # array axis held fixed (0 axial, 1 coronal, 2 sagittal)
    index: int


def _plane_grid(grid: Grid, plane: _Plane) -> Grid:
    """A one-voxel-thick grid holding the CT voxels of ``plane``."""
    start = [0, 0, 0]
    start[plane.axis] = plane.index
    shape = list(grid.shape)
    shape[plane.axis] = 1
    origin = grid.patient_from_index(np.array(start, dtype=float))
    return Grid(tuple(shape), grid.spacing_mm, tuple(origin), grid.direction)


def _take(array: np.ndarray, plane: _Plane) -> np.ndarray:
    return np.take(array, plane.index, axis=plane.axis)


def _extent_and_orientation(grid: Grid, plane: _Plane):
    """imshow extent (mm along the two in-plane index axes) and axis labels."""
    sx, sy, sz = grid.spacing_mm
    ox, oy, oz = grid.origin_mm
    xs = (ox - sx / 2, ox + sx * (grid.nx - 0.5))
    ys = (oy - sy / 2, oy + sy * (grid.ny - 0.5))
    zs = (oz - sz / 2, oz + sz * (grid.nz - 0.5))
    if plane.axis == 0:  # rows = y (anterior at the top), columns = x
        return (xs[0], xs[1], ys[1], ys[0]), "upper", "x (mm, patient left ->)", "y (mm, posterior ->)"
    if plane.axis == 1:  # rows = z (superior at the top), columns = x
        return (xs[0], xs[1], zs[0], zs[1]), "lower", "x (mm, patient left ->)", "z (mm, superior ->)"
    return (ys[0], ys[1], zs[0], zs[1]), "lower", "y (mm, posterior ->)", "z (mm, superior ->)"


def slice_figure(case: Case, dose: Dose, centre_mm, prescription_gy: float, structures: list[Structure],
                 colours: dict[str, str]) -> bytes:
    """Axial, coronal and sagittal CT planes through ``centre_mm`` with a dose
    wash, isodose lines at 50/90/100/110 % of the prescription and the
    structures' outlines."""
    grid = case.grid
    idx = np.round(grid.index_from_patient(np.asarray(centre_mm, dtype=float))).astype(int)
    idx = np.clip(idx, 0, np.asarray(grid.shape) - 1)
    planes = [_Plane("axial", 0, int(idx[0])), _Plane("coronal", 1, int(idx[1])), _Plane("sagittal", 2, int(idx[2]))]
    levels_gy = [prescription_gy * p / 100.0 for p in ISODOSE_LEVELS_PCT]
    fig = Figure(figsize=(13.5, 4.9))
    for n, plane in enumerate(planes):
        ax = fig.add_subplot(1, 3, n + 1)
        extent, origin, xlabel, ylabel = _extent_and_orientation(grid, plane)
        ct = _take(case.hu, plane)
        ax.imshow(ct, cmap="gray", vmin=-1000, vmax=1000, extent=extent, origin=origin, interpolation="bilinear")
        dose2d = _take(resample_array(dose.dose_gy, dose.grid, _plane_grid(grid, plane), order=1), plane.__class__(
            plane.name, plane.axis, 0))
        wash = np.ma.masked_less(dose2d, prescription_gy * _WASH_FROM_PCT / 100.0)
        ax.imshow(wash, cmap="jet", alpha=0.30, vmin=0.0, vmax=1.15 * prescription_gy, extent=extent,
                  origin=origin, interpolation="bilinear")
        # Contours are drawn on voxel-centre coordinates matching the extent.
        nrow, ncol = dose2d.shape
        cx = np.linspace(extent[0], extent[1], ncol + 1)[:-1] + (extent[1] - extent[0]) / (2 * ncol)
        ylo, yhi = (extent[3], extent[2]) if origin == "upper" else (extent[2], extent[3])
        cy = np.linspace(ylo, yhi, nrow + 1)[:-1] + (yhi - ylo) / (2 * nrow)
        present = [(lv, c) for lv, c in zip(levels_gy, ISODOSE_COLOURS) if dose2d.max() >= lv > dose2d.min()]
        if present:
            ax.contour(cx, cy, dose2d, levels=[lv for lv, _ in present], colors=[c for _, c in present],
                       linewidths=1.1)
        for s in structures:
            occ = _take(s.weights, plane)
            if occ.max() >= 0.5 and occ.min() < 0.5:
                ax.contour(cx, cy, occ, levels=[0.5], colors=[to_rgb(colours.get(s.name, "w"))], linewidths=0.9)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_title(f"{plane.name} (index {plane.index})", fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [ax.plot([], [], color=c, lw=1.5, label=f"{p:g}%")[0] for p, c in zip(ISODOSE_LEVELS_PCT, ISODOSE_COLOURS)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               title=f"isodoses (% of {prescription_gy:g} Gy)", title_fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.2, top=0.93, wspace=0.28)
    return _png(fig)

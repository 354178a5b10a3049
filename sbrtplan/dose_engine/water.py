"""The Gaussian model in a water phantom: depth doses, profiles, output factors.

These closed-form evaluations (error functions over the field, no ray
tracing) are what commissioning fits and reports, and what an independent
Clarkson-type MU check can use: :func:`tmr_table` and
:func:`output_factor_table` give TMR and total-scatter output factors versus
square field size.  The full engine on a voxelised water phantom reproduces
them (tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .pencil import pack_gaussian, water_points

if TYPE_CHECKING:  # the model imports this module (its Gy/MU calibration is a water dose)
    from .model import BeamModel


def _check(model: BeamModel) -> None:
    if not model.is_gaussian:
        raise ValueError(f"water-phantom formulas need a Gaussian beam model, got {model.kind.value}")


def water_dose_relative(model: BeamModel, field_x_mm: float, field_y_mm: float, ssd_mm: float, depth_mm,
                        x_mm, y_mm, scale: float | None = None, gp: np.ndarray | None = None) -> np.ndarray:
    """Dose at points in water for a centred rectangular field.

    Parameters
    ----------
    field_x_mm, field_y_mm : field size at the isocentre plane (X = leaf travel / crossplane).
    ssd_mm : source-surface distance.
    depth_mm, x_mm, y_mm : arrays of equal length; physical positions at depth.
    scale : Gy/MU factor (default: the model's calibration, i.e. Gy per MU).
    gp : pre-packed model (avoids re-packing in fits).
    """
    _check(model)
    if gp is None:
        gp = pack_gaussian(model, scale=scale)
    d = np.ascontiguousarray(np.atleast_1d(np.asarray(depth_mm, dtype=np.float64)))
    x = np.ascontiguousarray(np.broadcast_to(np.asarray(x_mm, dtype=np.float64), d.shape))
    y = np.ascontiguousarray(np.broadcast_to(np.asarray(y_mm, dtype=np.float64), d.shape))
    out = np.empty(d.shape, dtype=np.float64)
    water_points(gp, -field_x_mm / 2, field_x_mm / 2, -field_y_mm / 2, field_y_mm / 2, float(ssd_mm), d, x, y, out)
    return out


def central_axis_gy_per_mu(model: BeamModel, field_mm: float, ssd_mm: float, depth_mm) -> np.ndarray:
    """Central-axis dose per MU (Gy) of a square field in water."""
    d = np.atleast_1d(np.asarray(depth_mm, dtype=float))
    return water_dose_relative(model, field_mm, field_mm, ssd_mm, d, np.zeros_like(d), np.zeros_like(d))


def output_factor(model: BeamModel, field_mm: float, depth_mm: float = 100.0, ssd_mm: float = 900.0,
                  reference_field_mm: float = 100.0) -> float:
    """Total-scatter output factor (dose per MU relative to the reference field, same depth and SSD)."""
    a = central_axis_gy_per_mu(model, field_mm, ssd_mm, [depth_mm])[0]
    b = central_axis_gy_per_mu(model, reference_field_mm, ssd_mm, [depth_mm])[0]
    return float(a / b)


def pdd(model: BeamModel, field_mm: float, ssd_mm: float, depth_mm) -> np.ndarray:
    """Percentage depth dose (100 at the maximum, searched on a 0.1 mm grid)."""
    d = np.atleast_1d(np.asarray(depth_mm, dtype=float))
    fine = np.arange(0.0, 60.0, 0.1)
    dmax = central_axis_gy_per_mu(model, field_mm, ssd_mm, fine).max()
    return 100.0 * central_axis_gy_per_mu(model, field_mm, ssd_mm, d) / dmax


def tmr_table(model: BeamModel, fields_mm=(10, 20, 30, 40, 50, 60, 80, 100, 150, 200),
              depths_mm=tuple(range(0, 301, 5)), dref_mm: float = 15.0) -> dict:
    """Tissue-maximum-ratio-like table: dose at depth d with the point at the isocentre
    (SSD = SAD - d) relative to the same field at depth ``dref_mm`` (point at isocentre)."""
    sad = model.sad_mm
    out = np.empty((len(fields_mm), len(depths_mm)))
    for i, f in enumerate(fields_mm):
        ref = central_axis_gy_per_mu(model, f, sad - dref_mm, [dref_mm])[0]
        for j, d in enumerate(depths_mm):
            out[i, j] = central_axis_gy_per_mu(model, f, sad - d, [d])[0] / ref
    return {"fields_mm": list(fields_mm), "depths_mm": list(depths_mm), "dref_mm": dref_mm, "tmr": out}


def output_factor_table(model: BeamModel, fields_mm=(10, 20, 30, 40, 50, 60, 80, 100, 150, 200),
                        depth_mm: float = 100.0, ssd_mm: float = 900.0) -> dict:
    """Output factors (relative to 10 x 10 cm) versus square field size."""
    return {"fields_mm": list(fields_mm), "depth_mm": depth_mm, "ssd_mm": ssd_mm,
            "output_factor": [output_factor(model, f, depth_mm, ssd_mm) for f in fields_mm]}

"""Absolute dose calibration of a beam model: the reference conditions of 1 cGy/MU (or another
output) and the named conventions a clinic may calibrate its linac to (``--calibration``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import InputError

__all__ = ["Calibration", "CALIBRATION_CONVENTIONS", "parse_calibration"]


@dataclass
class Calibration:
    """Absolute dose calibration of a Gaussian model.

    ``dose_cgy_per_mu`` is the dose on the central axis at ``depth_mm`` in
    water for a square ``field_mm`` field (isocentre plane) at ``ssd_mm``.
    """

    field_mm: float = 100.0
    ssd_mm: float = 1000.0
    depth_mm: float = 15.0
    dose_cgy_per_mu: float = 1.0
    convention: str = ""

    def __post_init__(self) -> None:
        self.convention = str(self.convention)
        for nm, lo, hi in (("field_mm", 10.0, 400.0), ("ssd_mm", 500.0, 1500.0), ("depth_mm", 0.0, 300.0),
                           ("dose_cgy_per_mu", 0.01, 100.0)):
            v = float(getattr(self, nm))
            if not (math.isfinite(v) and lo <= v <= hi):
                raise InputError(f"calibration {nm}={v}: expected within [{lo:g}, {hi:g}]")
            setattr(self, nm, v)

    def describe(self) -> str:
        """One line: the reference conditions (e.g. '1 cGy/MU at 15 mm depth in water, 10x10 cm2, SSD 100 cm')."""
        return ((f"{self.convention}: " if self.convention else "")
                + f"{self.dose_cgy_per_mu:g} cGy/MU at {self.depth_mm:g} mm depth in water, "
                f"{self.field_mm / 10:g}x{self.field_mm / 10:g} cm2, SSD {self.ssd_mm / 10:g} cm")


#: Named reference conditions a clinic may calibrate its linac to (1 cGy/MU, 10 x 10 cm2):
#: at d_max (15 mm for 6 MV) with SSD 100 cm -- the usual Varian/TG-51-style convention -- or at d_max
#: with the point at the isocentre (SSD 98.5 cm), at 10 cm depth with the isocentre at the point
#: (SAD setup, SSD 90 cm), or at 10 cm depth at SSD 100 cm.
CALIBRATION_CONVENTIONS = {
    "ssd100-dmax": Calibration(100.0, 1000.0, 15.0, 1.0, "ssd100-dmax"),
    "sad100-dmax": Calibration(100.0, 985.0, 15.0, 1.0, "sad100-dmax"),
    "sad100-10cm": Calibration(100.0, 900.0, 100.0, 1.0, "sad100-10cm"),
    "ssd100-10cm": Calibration(100.0, 1000.0, 100.0, 1.0, "ssd100-10cm"),
}


def parse_calibration(text: str) -> Calibration:
    """A calibration from a convention name (:data:`CALIBRATION_CONVENTIONS`) or
    ``CGY_PER_MU@DEPTH_MM,SSD_MM[,FIELD_MM]`` (e.g. ``1.0@100,900``).

    Raises :class:`~sbrtplan.errors.InputError` naming the value and the accepted forms.
    """
    key = str(text).strip().lower()
    if key in CALIBRATION_CONVENTIONS:
        return replace(CALIBRATION_CONVENTIONS[key])
    try:
        dose, rest = key.split("@")
        parts = [float(x) for x in rest.split(",")]
        if len(parts) not in (2, 3):
            raise ValueError
        return Calibration(parts[2] if len(parts) == 3 else 100.0, parts[1], parts[0], float(dose), key)
    except ValueError:
        raise InputError(f"calibration {text!r}: expected one of {sorted(CALIBRATION_CONVENTIONS)} or "
                         "CGY_PER_MU@DEPTH_MM,SSD_MM[,FIELD_MM] (e.g. 1.0@100,900)") from None

"""CT number (HU) to relative electron density (RED) calibration."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class DensityCalibration:
    """Piecewise-linear HU -> RED table.

    Parameters
    ----------
    hu : 1-D array, strictly increasing
    red : 1-D array, relative electron density (water = 1) at each ``hu``.
    source : str
        Where the table came from (file name or "default").
    """

    hu: np.ndarray
    red: np.ndarray
    source: str = "default"

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, dtype=float)
        red = np.asarray(self.red, dtype=float)
        if hu.ndim != 1 or hu.shape != red.shape or hu.size < 2:
            raise InputError(f"HU->density table '{self.source}': need two equal-length columns of at least 2 rows")
        if np.any(np.diff(hu) <= 0):
            raise InputError(f"HU->density table '{self.source}': HU values must be strictly increasing")
        if np.any(red < 0):
            raise InputError(f"HU->density table '{self.source}': densities must be >= 0")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "red", red)

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """RED (float32) for an array of HU; values beyond the table are clamped."""
        return np.interp(np.asarray(hu, dtype=np.float32), self.hu, self.red).astype(np.float32)

    def inverse(self, red: np.ndarray) -> np.ndarray:
        """HU for an array of RED (used by phantoms built in density units)."""
        return np.interp(np.asarray(red, dtype=float), self.red, self.hu).astype(np.float32)

    @classmethod
    def from_file(cls, path: str | Path) -> "DensityCalibration":
        """Read a two-column text table ``hu, red`` ('#' comments, optional header)."""
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise InputError(f"{path}: cannot read HU->density table ({exc.strerror})") from None
        rows = []
        for n, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(";", ",").replace("\t", ",").split(",") if "," in line or ";" in line or "\t" in line else line.split()
            try:
                rows.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                if rows:  # a header is only allowed before the data
                    raise InputError(f"{path}:{n}: expected two numbers 'hu, red', got {line!r}") from None
        if len(rows) < 2:
            raise InputError(f"{path}: HU->density table needs at least two rows of 'hu, red'")
        arr = np.array(rows)
        return cls(arr[:, 0], arr[:, 1], source=str(path))

    @classmethod
    def default(cls) -> "DensityCalibration":
        """The documented default table (``sbrtplan/data/hu_to_red_default.csv``)."""
        ref = resources.files("sbrtplan") / "data" / "hu_to_red_default.csv"
        with resources.as_file(ref) as p:
            cal = cls.from_file(p)
        return cls(cal.hu, cal.red, source="default (Gammex 467, 120 kVp, typical)")


def hu_to_density(hu: np.ndarray, calibration: DensityCalibration | None = None) -> np.ndarray:
    """Relative electron density of ``hu`` with ``calibration`` (default table if None)."""
    return (calibration or DensityCalibration.default())(hu)

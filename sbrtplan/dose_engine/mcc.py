"""Reader for PTW ``.mcc`` water-tank scan files (MEPHYSTO "CC-Export" text).

An ``.mcc`` file holds one or more scans between ``BEGIN_SCAN n`` and
``END_SCAN n``; each scan has ``KEY=VALUE`` header lines (energy, SSD, field
size, curve type, depth) and a ``BEGIN_DATA`` ... ``END_DATA`` block of
``position  value`` rows.  Profile positions are physical distances in mm at
the measurement depth (not projected to the isocentre); depth-dose positions
are depths in mm.  Values are detector readings in arbitrary units (the
``MEAS_UNIT`` label is not a calibration): only ratios are meaningful.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


class CurveType(str, enum.Enum):
    PDD = "PDD"
    INPLANE = "INPLANE_PROFILE"       # along the gun-target axis (IEC Y)
    CROSSPLANE = "CROSSPLANE_PROFILE"  # left-right (IEC X, leaf travel)


@dataclass
class Scan:
    """One measured curve.

    Attributes
    ----------
    curve : CurveType
    positions_mm : ndarray
        Depths (PDD) or physical off-axis positions at ``depth_mm`` (profiles).
    values : ndarray
        Readings (arbitrary units).
    ssd_mm : float
    field_x_mm, field_y_mm : float
        Crossplane (X) and inplane (Y) field size at the isocentre plane.
    depth_mm : float
        Measurement depth of a profile (NaN for a PDD).
    energy_mv : float
    source : str
        ``file#scan`` label used in reports.
    header : dict
        All raw header keys.
    """

    curve: CurveType
    positions_mm: np.ndarray
    values: np.ndarray
    ssd_mm: float
    field_x_mm: float
    field_y_mm: float
    depth_mm: float
    energy_mv: float
    source: str
    header: dict = field(default_factory=dict)

    @property
    def is_profile(self) -> bool:
        return self.curve is not CurveType.PDD

    @property
    def label(self) -> str:
        size = f"{self.field_x_mm / 10:g}x{self.field_y_mm / 10:g}"
        if self.is_profile:
            kind = "inplane" if self.curve is CurveType.INPLANE else "crossplane"
            return f"{size} {kind} {self.depth_mm:g} mm"
        return f"{size} PDD"


def _num(header: dict, key: str, source: str, default: float | None = None) -> float:
    if key not in header:
        if default is not None:
            return default
        raise InputError(f"{source}: missing header key {key}")
    try:
        return float(header[key].split(";")[0])
    except ValueError:
        raise InputError(f"{source}: header {key}={header[key]!r} is not a number") from None


def read_mcc(path: str | Path) -> list[Scan]:
    """Read every scan of a PTW ``.mcc`` file.

    Raises
    ------
    InputError
        If the file cannot be read, holds no scan, or a scan lacks its curve
        type, SSD or field size, or has fewer than 3 data rows.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read mcc file ({exc.strerror})") from None
    scans: list[Scan] = []
    header: dict | None = None
    rows: list[tuple[float, float]] | None = None
    number = 0
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("BEGIN_SCAN_DATA") or line.startswith("END_SCAN_DATA"):
            continue
        if line.startswith("BEGIN_SCAN"):
            header, rows, number = {}, None, len(scans) + 1
        elif line == "BEGIN_DATA":
            if header is None:
                raise InputError(f"{path}:{lineno}: BEGIN_DATA outside a scan")
            rows = []
        elif line == "END_DATA":
            rows_done = rows
            rows = None
            header["__rows__"] = rows_done
        elif line.startswith("END_SCAN"):
            if header is None:
                raise InputError(f"{path}:{lineno}: END_SCAN without BEGIN_SCAN")
            scans.append(_make_scan(header, f"{path.name}#{number}"))
            header = None
        elif rows is not None:
            parts = line.split()
            try:
                rows.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                raise InputError(f"{path}:{lineno}: expected 'position value', got {line!r}") from None
        elif header is not None and "=" in line:
            key, value = line.split("=", 1)
            header[key.strip()] = value.strip()
    if not scans:
        raise InputError(f"{path}: no BEGIN_SCAN ... END_SCAN block found (is it a PTW .mcc file?)")
    return scans


def _make_scan(header: dict, source: str) -> Scan:
    rows = header.pop("__rows__", None)
    if not rows or len(rows) < 3:
        raise InputError(f"{source}: scan has fewer than 3 data rows")
    try:
        curve = CurveType(header.get("SCAN_CURVETYPE", ""))
    except ValueError:
        raise InputError(f"{source}: unsupported SCAN_CURVETYPE {header.get('SCAN_CURVETYPE')!r}; "
                         f"expected PDD, INPLANE_PROFILE or CROSSPLANE_PROFILE") from None
    data = np.asarray(rows, dtype=float)
    order = np.argsort(data[:, 0], kind="stable")
    data = data[order]
    depth = _num(header, "SCAN_DEPTH", source) if curve is not CurveType.PDD else float("nan")
    return Scan(curve=curve, positions_mm=data[:, 0], values=data[:, 1],
                ssd_mm=_num(header, "SSD", source),
                field_x_mm=_num(header, "FIELD_CROSSPLANE", source),
                field_y_mm=_num(header, "FIELD_INPLANE", source),
                depth_mm=depth, energy_mv=_num(header, "ENERGY", source, default=float("nan")),
                source=source, header=dict(header))

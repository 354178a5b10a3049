"""Measured dose planes: PTW ``.mcc`` from a 2D array, a CSV grid, an RTDOSE of a measurement.

PTW .mcc of an array
--------------------
An array export holds one scan per detector row (``BEGIN_SCAN`` ...
``END_SCAN``), in the same text grammar as the water-tank scans that
:func:`sbrtplan.dose_engine.read_mcc` reads (which needs SSD and field size and
returns 1D curves, so it cannot read arrays).  A ``CROSSPLANE_PROFILE`` row
lies at ``SCAN_OFFAXIS_INPLANE`` and its data rows are ``crossplane value``; an
``INPLANE_PROFILE`` column lies at ``SCAN_OFFAXIS_CROSSPLANE`` with data rows
``inplane value``.  Values are read in ``MEAS_UNIT`` (Gy, cGy or mGy; absent
means Gy).  The detectors of all rows are put on one rectilinear lattice (the
union of their coordinates); lattice nodes without a detector (the
checkerboard of an OCTAVIUS 1500, 5 mm lattice) are masked out.

Orientation: the array lies in the coronal plane with its centre on the
phantom's reference point; crossplane (IEC X) is patient x (head-first supine,
couch 0).  ``INPLANE_AXIS_DIR=GUN_TARGET`` (PTW's default) counts inplane
positions positive away from the gantry, i.e. toward the feet (-z);
``TARGET_GUN`` toward the head (+z).

CSV and RTDOSE
--------------
The CSV grid is the format of :func:`sbrtplan.qa.plane.read_plane_csv`
(coordinates already in the registration frame).  An RTDOSE of a measurement
(film, EPID converted to dose, a 3D array reconstruction) is in the phantom's
patient coordinates: the plane through ``reference_point + offset`` is taken
and expressed relative to the reference point.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from .plane import DosePlane, PlaneOrientation, plane_from_volume, read_plane_csv

_UNITS = {"gy": 1.0, "cgy": 0.01, "mgy": 0.001}


class MeasurementFormat(str, enum.Enum):
    MCC = "mcc"
    CSV = "csv"
    RTDOSE = "rtdose"


def detect_format(path) -> MeasurementFormat:
    """The format of a measurement file, from its content (suffix as a hint)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"measured plane: no such file: {p}")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the measured plane ({exc.strerror})") from None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return MeasurementFormat.RTDOSE
    text = head.decode("latin-1", errors="replace")
    if "BEGIN_SCAN" in text:
        return MeasurementFormat.MCC
    if p.suffix.lower() == ".dcm":
        return MeasurementFormat.RTDOSE
    if p.suffix.lower() in (".csv", ".txt") and ("," in text) and ("v\\u" in text or text.lstrip().startswith("#")):
        return MeasurementFormat.CSV
    raise InputError(f"{p}: unknown measurement format; expected a PTW .mcc array export, a CSV dose grid "
                     "(see docs/qa.md) or a DICOM RTDOSE")


def _header_float(h: dict, key: str, where: str, default: float | None = None) -> float:
    if key not in h:
        if default is None:
            raise InputError(f"{where}: missing {key}")
        return default
    try:
        v = float(h[key].split(";")[0])
    except ValueError:
        raise InputError(f"{where}: {key}={h[key]!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{where}: {key} is not finite")
    return v


def read_array_mcc(path) -> DosePlane:
    """A 2D array measurement from a PTW ``.mcc`` export (see the module docstring)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the mcc file ({exc.strerror})") from None
    us, vs, ds = [], [], []
    header: dict | None = None
    data: list | None = None
    n_scans = 0
    for lineno, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or s.startswith("BEGIN_SCAN_DATA") or s.startswith("END_SCAN_DATA"):
            continue
        if s.startswith("BEGIN_SCAN"):
            header, data = {}, None
        elif s == "BEGIN_DATA":
            if header is None:
                raise InputError(f"{path}:{lineno}: BEGIN_DATA outside a scan")
            data = []
        elif s == "END_DATA":
            header["__rows__"], data = data, None
        elif s.startswith("END_SCAN"):
            if header is None or "__rows__" not in header:
                raise InputError(f"{path}:{lineno}: scan without a data block")
            where = f"{path} scan {n_scans + 1}"
            curve = header.get("SCAN_CURVETYPE", "").strip().upper()
            unit = header.get("MEAS_UNIT", "Gy").strip().lower()
            if unit not in _UNITS:
                raise InputError(f"{where}: MEAS_UNIT {header.get('MEAS_UNIT')!r}; expected Gy, cGy or mGy "
                                 "(an absolute dose measurement)")
            sign = -1.0 if header.get("INPLANE_AXIS_DIR", "GUN_TARGET").strip().upper() == "GUN_TARGET" else 1.0
            rows = np.asarray(header["__rows__"], dtype=float).reshape(-1, 2)
            if rows.shape[0] == 0:
                raise InputError(f"{where}: no data rows")
            if curve == "CROSSPLANE_PROFILE":
                u = rows[:, 0]
                v = np.full(u.size, sign * _header_float(header, "SCAN_OFFAXIS_INPLANE", where, 0.0))
            elif curve == "INPLANE_PROFILE":
                v = sign * rows[:, 0]
                u = np.full(v.size, _header_float(header, "SCAN_OFFAXIS_CROSSPLANE", where, 0.0))
            else:
                raise InputError(f"{where}: SCAN_CURVETYPE {curve or 'missing'}; a 2D array export has "
                                 "CROSSPLANE_PROFILE or INPLANE_PROFILE rows")
            us.append(u)
            vs.append(v)
            ds.append(rows[:, 1] * _UNITS[unit])
            n_scans += 1
            header = None
        elif data is not None:
            parts = s.replace(",", " ").split()
            try:
                data.append((float(parts[0]), float(parts[1])))
            except (IndexError, ValueError):
                raise InputError(f"{path}:{lineno}: expected 'position value', got {s!r}") from None
        elif header is not None and "=" in s:
            k, v = s.split("=", 1)
            header[k.strip()] = v.strip()
    if n_scans == 0:
        raise InputError(f"{path}: no scan found in the mcc file")
    u = np.concatenate(us)
    v = np.concatenate(vs)
    d = np.concatenate(ds)
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v)) and np.all(np.isfinite(d))):
        raise InputError(f"{path}: non-finite positions or values")
    ku, kv = np.round(u, 3), np.round(v, 3)
    uu, iu = np.unique(ku, return_inverse=True)
    vv, iv = np.unique(kv, return_inverse=True)
    if uu.size < 2 or vv.size < 2:
        raise InputError(f"{path}: the detectors span {uu.size} column(s) x {vv.size} row(s); a 2D plane "
                         "needs at least 2 of each")
    dose = np.full((vv.size, uu.size), np.nan)
    dose[iv, iu] = d
    return DosePlane(dose, uu, vv, PlaneOrientation.CORONAL, 0.0, source=str(path),
                     metadata={"format": "mcc", "n_detectors": int(d.size), "n_scans": n_scans})


def read_rtdose_plane(path, reference_point_mm, orientation: PlaneOrientation = PlaneOrientation.CORONAL,
                      offset_mm: float = 0.0) -> DosePlane:
    """The plane of a measured RTDOSE through ``reference_point + offset`` (registration frame)."""
    from ..io import read_rtdose

    dose = read_rtdose(path)
    g = dose.grid
    au, av, an = PlaneOrientation(orientation).axes
    if g.shape[2 - au] < 2 or g.shape[2 - av] < 2:
        raise InputError(f"{path}: the RTDOSE has fewer than 2 points along the plane's axes")
    pos = np.asarray(reference_point_mm, float).copy()
    pos[an] += offset_mm
    if g.shape[2 - an] == 1:  # a single-plane RTDOSE: use it where it is, say so when it is not on the plane
        if abs(float(g.origin_mm[an]) - pos[an]) > 0.5 * g.spacing_mm[an] + 1.0:
            raise InputError(f"{path}: the measured plane lies at {'xyz'[an]} = {g.origin_mm[an]:g} mm, not on "
                             f"the detector plane at {pos[an]:g} mm")
        pos[an] = float(g.origin_mm[an])
    plane = plane_from_volume(dose.dose_gy, g, pos, orientation, 0.0, source=str(path))
    ref = np.asarray(reference_point_mm, float)
    return DosePlane(plane.dose_gy, plane.u_mm + pos[au] - ref[au], plane.v_mm + pos[av] - ref[av], orientation,
                     offset_mm, source=str(path), metadata={"format": "rtdose"})


def read_measured_plane(path, *, fmt: MeasurementFormat | str | None = None, reference_point_mm=(0.0, 0.0, 0.0),
                        orientation: PlaneOrientation | str = PlaneOrientation.CORONAL,
                        offset_mm: float = 0.0) -> DosePlane:
    """Read a measured plane in any supported format (``fmt`` None: detected from the content)."""
    if fmt is None or (isinstance(fmt, str) and not isinstance(fmt, MeasurementFormat) and fmt == "auto"):
        f = detect_format(path)
    elif isinstance(fmt, MeasurementFormat):
        f = fmt
        if not Path(path).is_file():
            raise InputError(f"measured plane: no such file: {path}")
    else:
        try:
            f = MeasurementFormat(str(fmt).lower())
        except ValueError:
            raise InputError(f"--measured-format: unknown format {fmt!r}; expected mcc, csv, rtdose or auto") from None
        if not Path(path).is_file():
            raise InputError(f"measured plane: no such file: {path}")
    if f is MeasurementFormat.MCC:
        return read_array_mcc(path)
    if f is MeasurementFormat.CSV:
        return read_plane_csv(path)
    return read_rtdose_plane(path, reference_point_mm, PlaneOrientation.parse(orientation), offset_mm)

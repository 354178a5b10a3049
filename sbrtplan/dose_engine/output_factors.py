"""Measured field output factors: the values a machine's small-field commissioning is fitted to,
and their reader (CSV or YAML, every value range-checked; ``sbrtplan commission --output-factors``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import InputError

__all__ = ["MeasuredOutputFactor", "read_output_factors"]


@dataclass(frozen=True)
class MeasuredOutputFactor:
    """A measured field output factor of a square field, relative to a reference field.

    Attributes
    ----------
    field_mm : float
        Side of the square field at the isocentre plane.
    value : float
        Dose per MU of the field divided by that of ``reference_field_mm``,
        same depth and set-up (detector-corrected for small fields).
    depth_mm, ssd_mm : float
        Measurement depth and source-surface distance (SSD 900 mm at 100 mm
        depth is the SAD set-up).
    reference_field_mm : float
        Side of the reference field (normally 100 mm).
    source : str
        Where the value comes from (file and row, or a citation).
    """

    field_mm: float
    value: float
    depth_mm: float = 100.0
    ssd_mm: float = 900.0
    reference_field_mm: float = 100.0
    source: str = ""

    @property
    def label(self) -> str:
        return (f"{self.field_mm / 10:g}x{self.field_mm / 10:g} / {self.reference_field_mm / 10:g}x"
                f"{self.reference_field_mm / 10:g} at {self.depth_mm:g} mm, SSD {self.ssd_mm:g}")


_OF_COLUMNS = ("field_mm", "output_factor", "depth_mm", "ssd_mm", "reference_field_mm")


def read_output_factors(path: str | Path) -> list[MeasuredOutputFactor]:
    """Read measured output factors from a CSV or YAML file.

    CSV: a header row naming the columns ``field_mm`` and ``output_factor``
    (required) and ``depth_mm``, ``ssd_mm``, ``reference_field_mm``
    (optional; defaults 100, 900, 100); ``#`` starts a comment line.
    YAML: a mapping with optional ``depth_mm``, ``ssd_mm``,
    ``reference_field_mm`` and ``source`` defaults and a list
    ``output_factors`` of mappings with the CSV's column names.

    Raises
    ------
    InputError
        Naming the file, the row and what was expected.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read output factors ({exc.strerror})") from None
    defaults: dict = {"depth_mm": 100.0, "ssd_mm": 900.0, "reference_field_mm": 100.0}
    source = path.name
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("output_factors"), list):
            raise InputError(f"{path}: expected a mapping with a list 'output_factors' of "
                             "{field_mm, output_factor} entries")
        for k in ("depth_mm", "ssd_mm", "reference_field_mm"):
            if k in doc:
                defaults[k] = doc[k]
        source = str(doc.get("source", source))
        rows = [(i + 1, r) for i, r in enumerate(doc["output_factors"])]
    elif path.suffix.lower() == ".csv":
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        reader = csv.DictReader(lines)
        if reader.fieldnames is None or not {"field_mm", "output_factor"} <= {f.strip() for f in reader.fieldnames}:
            raise InputError(f"{path}: the header must name the columns field_mm and output_factor "
                             f"(optional: depth_mm, ssd_mm, reference_field_mm), got {reader.fieldnames}")
        rows = [(i + 2, {k.strip(): v for k, v in r.items() if k is not None}) for i, r in enumerate(reader)]
    else:
        raise InputError(f"{path}: output factors must be a .csv or .yaml file")
    out = []
    for row, r in rows:
        if not isinstance(r, dict):
            raise InputError(f"{path}: entry {row} must be a mapping with field_mm and output_factor")
        vals = {}
        for k in _OF_COLUMNS:
            raw = r.get(k, defaults.get(k))
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if k in defaults:
                    raw = defaults[k]
                else:
                    raise InputError(f"{path}: row {row} has no {k}")
            try:
                vals[k] = float(raw)
            except (TypeError, ValueError):
                raise InputError(f"{path}: row {row}: {k} must be a number, got {raw!r}") from None
            if not vals[k] > 0 or not np.isfinite(vals[k]):
                raise InputError(f"{path}: row {row}: {k} must be positive, got {raw!r}")
        if vals["output_factor"] > 1.5:
            raise InputError(f"{path}: row {row}: output_factor {vals['output_factor']:g} is not a ratio "
                             "to the reference field (expected about 0.3-1.2)")
        if not 5.0 <= vals["field_mm"] <= 400.0:
            raise InputError(f"{path}: row {row}: field_mm {vals['field_mm']:g} outside 5-400 mm "
                             "(the side of the square field at the isocentre, in mm)")
        out.append(MeasuredOutputFactor(vals["field_mm"], vals["output_factor"], vals["depth_mm"], vals["ssd_mm"],
                                        vals["reference_field_mm"], f"{source} row {row}"))
    if not out:
        raise InputError(f"{path}: no output factors")
    return out

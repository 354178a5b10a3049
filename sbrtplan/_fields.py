"""Numbers read from the package's YAML data files, checked at the boundary (one reader for all).

The beam-data, seed-source, seed-protocol and QA-criteria files each hold numbers with a physical
range.  :func:`number_field` reads one: present, a number, finite, inside its range; otherwise a
one-line error naming the file (``where``), the key, the value and the range expected.
"""

from __future__ import annotations

import math

from .errors import InputError

__all__ = ["number_field"]


def number_field(obj: dict, key: str, where: str, lo: float = -math.inf, hi: float = math.inf, *,
                 open_interval: bool = False, error: type[Exception] = InputError) -> float:
    """``obj[key]`` as a finite float inside ``[lo, hi]`` (``(lo, hi)`` with ``open_interval``).

    Parameters
    ----------
    obj : dict
        The mapping read from the file.
    key : str
        The field.
    where : str
        The file or section, first in the message (e.g. ``"TBI beam data generic_6mv_tbi.yaml tmr"``).
    lo, hi : float
        The allowed range.
    open_interval : bool
        Exclude the bounds (a dose rate or an activity must be strictly positive).
    error : exception class
        Raised on any failure (``InputError``; ``ProtocolError`` for protocol files).
    """
    if not isinstance(obj, dict) or key not in obj:
        raise error(f"{where}: missing '{key}'")
    raw = obj[key]
    try:
        if isinstance(raw, bool):
            raise TypeError
        v = float(raw)
    except (TypeError, ValueError):
        raise error(f"{where}: '{key}' must be a number, got {raw!r}") from None
    inside = (lo < v < hi) if open_interval else (lo <= v <= hi)
    if not (math.isfinite(v) and inside):
        lb, rb = ("(", ")") if open_interval else ("[", "]")
        raise error(f"{where}: '{key}' must be in {lb}{lo:g}, {hi:g}{rb}, got {v:g}")
    return v

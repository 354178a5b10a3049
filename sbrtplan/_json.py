"""The package's one JSON file writer (``metrics.json`` of every command, and other JSON outputs).

Every JSON output goes through :func:`write_json`: values made JSON-safe by :func:`json_safe`
(numpy scalars and arrays to Python numbers and lists, enums to their value, paths to text,
NaN and infinities to ``null``, so the file is strict JSON that every reader accepts), two-space
indentation, a final newline, written atomically (:func:`sbrtplan._log.atomic_output`).  It sits
beside ``_log`` outside the layers, so every subpackage may use it.
"""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path, PurePath

import numpy as np

from ._log import atomic_output


def json_safe(obj):
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON.

    NaN and infinities become ``None`` (JSON has no such numbers); numpy scalars and arrays become
    Python numbers and lists; enums their value; paths text; tuples and sets lists; dictionary
    keys text.  Any other object is written as its ``str``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value)
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k.value if isinstance(k, enum.Enum) else k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, PurePath):
        return str(obj)
    return str(obj)


def write_json(path, data, *, indent: int | None = 2) -> Path:
    """Write ``data`` (made safe by :func:`json_safe`) as JSON to ``path`` atomically; returns the path."""
    path = Path(path)
    text = json.dumps(json_safe(data), indent=indent, allow_nan=False)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    return path

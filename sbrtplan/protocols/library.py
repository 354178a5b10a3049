"""Finding and loading the protocol templates shipped in ``templates/``.

Files in ``templates/``:

* ``<name>.yaml`` with ``kind: protocol``: a protocol (``bone_spine``...);
* ``lib_<name>.yaml`` with ``kind: library``: roles and limit tables shared by protocols
  (``include: [lib_...]``);
* ``table_<name>.yaml`` with ``kind: table``: data tables (RTOG conformality, Michigan
  re-irradiation).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import ProtocolError
from .model import Protocol
from .schema import build_protocol, merge_library
from .tables import read_yaml, templates_dir


def list_protocols() -> list[str]:
    """Names of the protocol templates shipped with the package, sorted."""
    out = []
    for p in sorted(templates_dir().glob("*.yaml")):
        if p.name.startswith(("lib_", "table_")):
            continue
        out.append(p.stem)
    return out


@lru_cache(maxsize=32)
def _load_cached(path_str: str) -> Protocol:
    path = Path(path_str)
    data = read_yaml(path)
    where = f"protocol template '{path.name}'"
    for inc in data.get("include") or []:
        lib_path = templates_dir() / f"{inc}.yaml"
        if not lib_path.exists() and path.parent != templates_dir():
            lib_path = path.parent / f"{inc}.yaml"
        if not lib_path.exists():
            raise ProtocolError(f"{where}: include '{inc}' not found (looked for {inc}.yaml)")
        data = merge_library(data, read_yaml(lib_path), str(inc), where)
    data.pop("include", None)
    return build_protocol(data, where, path=str(path))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Load a protocol by template name (``"bone_spine"``) or from a YAML file path.

    Raises
    ------
    ProtocolError
        Unknown name (the message lists the available ones) or an invalid template.
    """
    s = str(name_or_path)
    p = Path(s)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return _load_cached(str(p.resolve()))
    path = templates_dir() / f"{s}.yaml"
    if not path.exists() or s.startswith(("lib_", "table_")):
        raise ProtocolError(f"unknown protocol '{s}'; available: {', '.join(list_protocols())}")
    return _load_cached(str(path))

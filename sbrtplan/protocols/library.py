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
from importlib import resources
from pathlib import Path

import yaml

from ..errors import ProtocolError
from .model import Protocol
from .schema import build_protocol, merge_library


def _templates_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("templates")))


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ProtocolError(f"protocol file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ProtocolError(f"protocol file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"protocol file {path}: expected a mapping at the top level")
    return data


def list_protocols() -> list[str]:
    """Names of the protocol templates shipped with the package, sorted."""
    out = []
    for p in sorted(_templates_dir().glob("*.yaml")):
        if p.name.startswith(("lib_", "table_")):
            continue
        out.append(p.stem)
    return out


@lru_cache(maxsize=32)
def _load_cached(path_str: str) -> Protocol:
    path = Path(path_str)
    data = _read_yaml(path)
    where = f"protocol template '{path.name}'"
    for inc in data.get("include") or []:
        lib_path = _templates_dir() / f"{inc}.yaml"
        if not lib_path.exists() and path.parent != _templates_dir():
            lib_path = path.parent / f"{inc}.yaml"
        if not lib_path.exists():
            raise ProtocolError(f"{where}: include '{inc}' not found (looked for {inc}.yaml)")
        data = merge_library(data, _read_yaml(lib_path), str(inc), where)
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
    path = _templates_dir() / f"{s}.yaml"
    if not path.exists() or s.startswith(("lib_", "table_")):
        raise ProtocolError(f"unknown protocol '{s}'; available: {', '.join(list_protocols())}")
    return _load_cached(str(path))


@lru_cache(maxsize=8)
def load_table(name: str) -> dict:
    """A data table (``kind: table``) shipped in ``templates/table_<name>.yaml``."""
    path = _templates_dir() / f"table_{name}.yaml"
    data = _read_yaml(path)
    if data.get("kind") != "table":
        raise ProtocolError(f"{path.name}: expected kind 'table'")
    return data

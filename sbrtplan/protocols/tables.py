"""The YAML files shipped with the protocols (templates and data tables), read with one-line errors.

A leaf module: the protocol model, the RTOG table and the radiobiology tables read their data
through it without importing each other.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from ..errors import ProtocolError

__all__ = ["templates_dir", "read_yaml", "load_table"]


def templates_dir() -> Path:
    """The folder of the packaged protocol templates and tables."""
    return Path(str(resources.files("sbrtplan.protocols").joinpath("templates")))


def read_yaml(path: Path) -> dict:
    """The mapping in YAML file ``path`` (ProtocolError naming the file otherwise)."""
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


@lru_cache(maxsize=8)
def load_table(name: str) -> dict:
    """A data table (``kind: table``) shipped in ``templates/table_<name>.yaml``."""
    path = templates_dir() / f"table_{name}.yaml"
    data = read_yaml(path)
    if data.get("kind") != "table":
        raise ProtocolError(f"{path.name}: expected kind 'table'")
    return data

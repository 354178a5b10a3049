"""No import circles between the package's modules, function-level (lazy) imports included.

import-linter's contracts (``test_layers.py``) order the subpackages; inside a subpackage two modules
that import each other (even from inside a function) are one concept split in two, or a missing
lower module.  Imports under ``typing.TYPE_CHECKING`` are annotations, not run, and are left out.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


def _circles(package: str) -> list[str]:
    """Each set of modules of ``package`` that import one another in a circle, with its imports."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (pip install '.[test]')")
    graph = grimp.build_graph(package, cache_dir=None, exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    rows, cols = [], []
    for m in modules:
        for n in graph.find_modules_directly_imported_by(m):
            if n in index and n != m:
                rows.append(index[m])
                cols.append(index[n])
    adjacency = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(modules), len(modules)))
    _, label = connected_components(adjacency, directed=True, connection="strong")
    circles = []
    for lab in np.unique(label):
        members = [modules[i] for i in np.flatnonzero(label == lab)]
        if len(members) > 1:
            edges = [f"{a} -> {b} (line {d['line_number']})" for a in members
                     for b in graph.find_modules_directly_imported_by(a) if b in members
                     for d in graph.get_import_details(importer=a, imported=b)]
            circles.append("; ".join(edges))
    return circles


def test_no_module_imports_itself_through_others():
    circles = _circles("sbrtplan")
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_a_planted_circle_is_found(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other inside functions are reported."""
    pkg = tmp_path / "circlepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b, c\n    return b, c\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f\n    return f\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    (pkg / "d.py").write_text("from . import c\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    circles = _circles("circlepkg")
    assert len(circles) == 1
    assert "circlepkg.a -> circlepkg.b" in circles[0] and "circlepkg.b -> circlepkg.a" in circles[0]
    assert "circlepkg.c" not in circles[0]  # c -> a only for type checking: no circle at run time

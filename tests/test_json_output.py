"""The one JSON writer (``sbrtplan._json``): every metrics.json is strict JSON, written atomically."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import numpy as np
import pytest

from sbrtplan._json import json_safe, write_json


class _Kind(enum.Enum):
    ARC = "arc"


def _strict(text: str):
    def refuse(token):
        raise AssertionError(f"{token} is not JSON (RFC 8259 has no NaN or Infinity)")
    return json.loads(text, parse_constant=refuse)


def test_values_a_plan_produces_become_strict_json(tmp_path):
    data = {"V100_pct": np.float32(95.25), "n": np.int64(7), "ok": np.bool_(True), "undefined": float("nan"),
            "inf": np.float64(np.inf), "dose_gy": np.array([1.5, np.nan]), "kind": _Kind.ARC,
            "file": Path("out") / "RTPLAN.dcm", "pair": (1, 2), 3: "key"}
    path = write_json(tmp_path / "metrics.json", data)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    back = _strict(text)
    assert back == {"V100_pct": 95.25, "n": 7, "ok": True, "undefined": None, "inf": None, "dose_gy": [1.5, None],
                    "kind": "arc", "file": str(Path("out") / "RTPLAN.dcm"), "pair": [1, 2], "3": "key"}
    assert json_safe(data)["dose_gy"] == [1.5, None]


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot describe")

    with pytest.raises(RuntimeError):
        write_json(path, {"a": Boom()})
    assert _strict(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("writer", ["plan", "evaluation", "qa", "tbi"])
def test_every_metrics_writer_is_the_one_writer(writer, tmp_path):
    """The plan, evaluation, QA and TBI metrics.json writers all write NaN as null (strict JSON)."""
    data = {"value": float("nan"), "x": np.float32(1.0)}
    path = tmp_path / "metrics.json"
    if writer == "plan":
        from sbrtplan.workflow.outputs import write_metrics_json
        write_metrics_json(path, data)
    elif writer == "evaluation":
        from sbrtplan.evaluation import report as ev
        assert ev.write_json is write_json
        ev.write_json(path, data)
    elif writer == "qa":
        from sbrtplan.qa import outputs as qa
        assert qa.write_json is write_json
        qa.write_json(path, data)
    else:
        from sbrtplan.tbi import outputs as tbi
        assert tbi.write_json is write_json
        tbi.write_json(path, data)
    assert _strict(path.read_text()) == {"value": None, "x": 1.0}

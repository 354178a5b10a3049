"""The one reader of numbers in the package's data files (beam data, seed sources and protocols, QA
criteria): present, a number, finite, inside its physical range, or a one-line error naming the file."""

from __future__ import annotations

import math

import pytest

from sbrtplan._fields import number_field
from sbrtplan.errors import InputError, ProtocolError


def test_a_number_inside_its_range_is_read():
    assert number_field({"sad_cm": 100}, "sad_cm", "beam data x.yaml", 50.0, 150.0) == 100.0
    assert number_field({"v": "2.5"}, "v", "f", 0.0, 5.0) == 2.5          # YAML strings of numbers
    assert number_field({"v": 50.0}, "v", "f", 50.0, 150.0) == 50.0       # closed range: bounds allowed


@pytest.mark.parametrize("obj, kwargs, fragment", [
    ({}, {}, "missing 'v'"),
    ({"v": "abc"}, {}, "'v' must be a number, got 'abc'"),
    ({"v": None}, {}, "must be a number"),
    ({"v": True}, {}, "must be a number"),                 # YAML 'yes' is not a dose
    ({"v": float("nan")}, {}, "must be in [0, 10], got nan"),
    ({"v": math.inf}, {"hi": math.inf}, "got inf"),
    ({"v": 11.0}, {}, "must be in [0, 10], got 11"),
    ({"v": 0.0}, {"open_interval": True}, "must be in (0, 10), got 0"),
])
def test_bad_values_are_one_line_errors_naming_the_file(obj, kwargs, fragment):
    lo_hi = {"lo": 0.0, "hi": 10.0}
    lo_hi.update({k: v for k, v in kwargs.items() if k in ("lo", "hi")})
    rest = {k: v for k, v in kwargs.items() if k not in ("lo", "hi")}
    with pytest.raises(InputError) as exc:
        number_field(obj, "v", "source file 'x.yaml'", lo_hi["lo"], lo_hi["hi"], **rest)
    msg = str(exc.value)
    assert msg.startswith("source file 'x.yaml': ") and fragment in msg and "\n" not in msg


def test_the_error_class_follows_the_file_kind():
    with pytest.raises(ProtocolError, match="seed protocol 'p.yaml': 'prescription_gy' must be in"):
        number_field({"prescription_gy": 1.0}, "prescription_gy", "seed protocol 'p.yaml'", 10.0, 400.0,
                      error=ProtocolError)


def test_shipped_data_files_still_load():
    from sbrtplan.brachy.protocol import load_seed_protocol
    from sbrtplan.brachy.source import load_source
    from sbrtplan.qa.criteria import load_criteria
    from sbrtplan.tbi.beamdata import load_beam_data

    assert load_criteria().point_tolerance_pct == pytest.approx(3.0)   # the standards' point-dose limit
    assert load_beam_data().energy_mv == pytest.approx(6.0)
    assert load_source("6711").half_life_days == pytest.approx(59.4, abs=0.1)   # I-125 (TG-43U1)
    assert load_seed_protocol("prostate_i125").prescription_gy == pytest.approx(145.0)

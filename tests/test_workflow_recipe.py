"""The planning recipe (``workflow.recipe``): loading, checking, hashing, and how a plan records it.

Also the options a ``plan`` call resolves (a ``technique`` left out keeps ``options.technique``).
The one plan here is the spine phantom at a 5 mm grid with 5 template IMRT beams and a recipe that
cuts the pricing rounds (measured: 6 s with warm numba caches, 106 s with 10 segments per beam while
three other plans ran on the 2 cores; 4 segments per beam here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sbrtplan.errors import InputError
from sbrtplan.workflow import PlanOptions, PlanTechnique, default_recipe, load_recipe
from sbrtplan.workflow.pipeline import resolve_options
from sbrtplan.workflow.recipe import DEFAULT_RECIPE_PATH, recipe_fields


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------------------- shipped file

def test_shipped_yaml_sets_every_field_with_a_one_line_meaning():
    raw = yaml.safe_load(DEFAULT_RECIPE_PATH.read_text(encoding="utf-8"))
    spec = recipe_fields()
    assert set(raw) == {"name", "version", *spec}
    for section, fields in spec.items():
        assert set(raw[section]) == set(fields), section          # every field, nothing else
        for key, meta in fields.items():
            assert meta["meaning"].strip(), f"{section}.{key} has no meaning"
    # every value line carries its meaning as a comment
    lines = DEFAULT_RECIPE_PATH.read_text(encoding="utf-8").splitlines()
    for section, fields in spec.items():
        for key in fields:
            line = next(ln for ln in lines if ln.strip().startswith(f"{key}:"))
            assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, line


def test_shipped_values_respect_the_protocol_limits_they_aim_under():
    """Physical sense of the shipped values, from the standards, not from the code's constants.

    The protocols' hot-spot limit outside the GTV/ITV is D0.035cc < 110 % Rx: the optimiser must aim
    under it (the final normalisation and the delivered dose add a few per cent).  Hard organ limits
    are met on the optimiser's dose at most at the limit (margin <= 1).  The fall-off beyond 2 cm must
    stay below the fall-off inside 2 cm (D2cm is a maximum there).
    """
    r = default_recipe()
    assert 0.9 < r.penalties.hotspot_aim < 1.0                       # x the protocol's 110 % Rx
    assert r.penalties.hard_limit_margin <= 1.0
    assert r.penalties.d2cm_ref_factor < 1.0
    assert r.penalties.band_low_ref < r.penalties.target_under_ref
    assert 0.99 <= r.penalties.normalisation_cap <= 1.0               # stops under a limit, never past it
    assert r.penalties.hard_ref_floor < r.penalties.hard_ref <= 1.0
    assert r.stages.hard_relax_cost > r.stages.target_relax_cost   # organ limits relaxed last


# ----------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("text, key", [
    ("name: x\nversion: 1\nbogus: 3\n", "bogus"),
    ("name: x\nversion: 1\npenalties:\n  w_target_unde: 3\n", "penalties.w_target_unde"),
    ("name: x\nversion: 1\nimrt:\n  fluence_rounds: 2.5\n", "imrt.fluence_rounds"),
    ("name: x\nversion: 1\npenalties:\n  hotspot_aim: .nan\n", "penalties.hotspot_aim"),
    ("name: x\nversion: 1\npenalties:\n  w_hard: .inf\n", "penalties.w_hard"),
    ("name: x\nversion: 1\npenalties:\n  w_hard: -1\n", "penalties.w_hard"),
    ("name: x\nversion: 1\nvmat:\n  dao_time_limit_s: fast\n", "vmat.dao_time_limit_s"),
    ("name: x\nversion: 1\nvmat:\n  dao_refine_passes: true\n", "vmat.dao_refine_passes"),
    ("name: x\nversion: 1\npenalties:\n  hard_limit_margin: 1.2\n", "penalties.hard_limit_margin"),
    ("name: x\nversion: 1\nstages: [1, 2]\n", "stages"),
    ("version: 1\n", "name"),
    ("name: x\nversion: 0\n", "version"),
    ("name: x\nversion: 1.5\n", "version"),
    ("- a\n- b\n", "mapping"),
    ("name: x\nversion: [1\n", "YAML"),
])
def test_bad_recipe_files_are_refused_in_one_line_naming_file_and_key(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        load_recipe(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg and key in msg


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="folder"):
        load_recipe(tmp_path)


def test_partial_file_keeps_the_shipped_values_for_the_rest(tmp_path):
    r = load_recipe(_write(tmp_path, "name: hot\nversion: 2\npenalties:\n  hotspot_aim: 0.97\n"))
    d = default_recipe()
    assert r.penalties.hotspot_aim == 0.97 and r.name == "hot" and r.version == 2
    assert r.vmat == d.vmat and r.imrt == d.imrt and r.stages == d.stages
    assert isinstance(r.imrt.fluence_rounds, int)


def test_recipe_is_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        default_recipe().penalties.w_hard = 1.0


# ----------------------------------------------------------------------------------------- hash

def test_hash_covers_values_not_comments_or_key_order(tmp_path):
    d = default_recipe()
    # the same values without comments, sections and keys in reverse order
    raw = yaml.safe_load(DEFAULT_RECIPE_PATH.read_text(encoding="utf-8"))
    rev = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(list(raw.items()))}
    same = load_recipe(_write(tmp_path, yaml.safe_dump(rev, sort_keys=False)))
    assert same.sha256 == d.sha256 == load_recipe(DEFAULT_RECIPE_PATH).sha256
    # a value written as an integer where the field is a float is the same value
    assert load_recipe(_write(tmp_path, f"name: default\nversion: {d.version}\npenalties:\n  w_hard: 10\n",
                              "i.yaml")).sha256 == d.sha256
    # one changed value, the name or the version each change the hash
    changed = load_recipe(_write(tmp_path, f"name: default\nversion: {d.version}\npenalties:\n  w_hard: 11\n",
                                 "c.yaml"))
    renamed = load_recipe(_write(tmp_path, f"name: other\nversion: {d.version}\n", "n.yaml"))
    bumped = load_recipe(_write(tmp_path, f"name: default\nversion: {d.version + 1}\n", "v.yaml"))
    assert len({d.sha256, changed.sha256, renamed.sha256, bumped.sha256}) == 4
    assert len(d.sha256) == 64 and int(d.sha256, 16) >= 0


# ----------------------------------------------------------------------------------------- options

def test_options_technique_is_not_overridden_by_the_argument_default():
    # the bug: plan(case, options=PlanOptions(technique="imrt")) planned VMAT
    assert resolve_options(PlanOptions(technique=PlanTechnique.IMRT)).technique is PlanTechnique.IMRT
    assert resolve_options(PlanOptions(technique="imrt")).technique is PlanTechnique.IMRT
    assert resolve_options(None).technique is PlanTechnique.VMAT               # the documented default
    assert resolve_options(PlanOptions(technique="imrt"), "vmat").technique is PlanTechnique.VMAT
    o = resolve_options(PlanOptions(technique="imrt", grid_mm=3.0), None, 6, seed=4)
    assert (o.technique, o.n_beams, o.grid_mm, o.seed) == (PlanTechnique.IMRT, 6, 3.0, 4)
    assert o.recipe == default_recipe()


def test_options_refuse_unknown_names_bad_seed_and_bad_recipe():
    with pytest.raises(InputError, match="gird_mm"):
        resolve_options(None, gird_mm=3.0)
    with pytest.raises(InputError, match="seed"):
        resolve_options(None, seed=-1)
    with pytest.raises(InputError, match="recipe"):
        resolve_options(None, recipe={"name": "x"})
    with pytest.raises(InputError, match="technique"):
        resolve_options(None, "tomo")


# ----------------------------------------------------------------------------------------- plan / CLI

def test_cli_refuses_a_bad_recipe_before_planning(tmp_path, capsys):
    from sbrtplan.cli import main

    bad = _write(tmp_path, "name: x\nversion: 1\nvmat:\n  dao_max_iteration: 3\n")
    rc = main(["plan", "--case", "phantom:spine", "--scheme", "27/3", "--out", str(tmp_path / "out"),
               "--recipe", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert any("vmat.dao_max_iteration" in ln and str(bad) in ln for ln in err)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_plan_records_the_recipe_it_was_made_with(tmp_path):
    """A recipe file with a changed value: its hash (not the default's) is what metrics.json records."""
    from sbrtplan.phantoms import make_phantom
    from sbrtplan.workflow import plan

    path = _write(tmp_path, "name: quick\nversion: 7\nimrt:\n  generation_iterations_factor: 1\n"
                            "  fluence_rounds: 2\n")
    rec = load_recipe(path)
    case = make_phantom("spine", spacing_mm=4.0)
    p = plan(case, "bone_spine", "27/3", "imrt", 5, grid_mm=5.0, select_beams=False, allow_missing=True,
             max_segments=4, recipe=rec)
    entry = json.loads(json.dumps(p.metrics["plan"]["recipe"]))
    assert entry == {"name": "quick", "version": 7, "sha256": rec.sha256, "source": "r.yaml"}
    assert entry["sha256"] != default_recipe().sha256
    # the recipe reached the aperture generation: at most 1 x max_segments (4) pricing rounds (the
    # shipped recipe allows 3 x 4)
    import re

    rounds = [int(m.group(1)) for n in p.log for m in [re.search(r"aperture generation, (\d+) pricing rounds", n)] if m]
    assert rounds and 1 <= rounds[0] <= 4
    # the normalisation is recorded in the protocol's priority order: the coverage goal that sets the
    # scale, and a binding higher-priority limit (if any) named with its excess in the notes as well
    norm = p.metrics["normalisation"]
    assert norm["set_by"].startswith("PTV V") and 0 < norm["scale"] and norm["coverage_scale"] > 0
    if norm["binding"] is not None:
        assert norm["scale"] < norm["coverage_scale"] and norm["binding"]["excess_pct"] > 0
        assert any(n.startswith(f"normalisation limited by {norm['binding']['goal']}") for n in p.metrics["notes"])

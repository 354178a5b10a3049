"""Command line: every command parses, and user errors give one clear line with exit status 2."""

import pytest

from sbrtplan.cli import COMMANDS, build_parser, main
from sbrtplan.errors import StructureError
from sbrtplan.phantoms import make_phantom


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: sbrtplan" in capsys.readouterr().out


def test_top_level_help_lists_the_workflow():
    text = build_parser().format_help()
    for cmd in ("demo", "plan", "evaluate", "recompute", "compare-fractions", "benchmark", "batch", "dij",
                "mucheck"):
        assert cmd in text


def test_unknown_protocol_is_one_line_error(capsys):
    rc = main(["plan", "--case", "phantom:spine", "--protocol", "no_such_protocol", "--scheme", "27/3",
               "--out", "unused"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no_such_protocol" in err and len(err.strip().splitlines()) == 1


def test_unknown_beam_model_is_one_line_error(capsys):
    rc = main(["plan", "--case", "phantom:spine", "--protocol", "bone_spine", "--scheme", "27/3",
               "--machine", "no_such_linac", "--out", "unused"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no_such_linac" in err and "generic-6MV-sf" in err and len(err.strip().splitlines()) == 1


def test_scheme_not_allowed_names_the_allowed_ones(capsys):
    rc = main(["plan", "--case", "phantom:spine", "--protocol", "bone_spine", "--scheme", "20/2", "--out", "unused"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "27/3" in err  # the message lists the schemes the protocol allows


def test_missing_organs_are_named_before_any_optimisation():
    from sbrtplan.workflow import plan

    case = make_phantom("spine", spacing_mm=4.0)
    with pytest.raises(StructureError) as exc:
        plan(case, "bone_spine", "27/3", "imrt", 7, grid_mm=4.0)
    msg = str(exc.value)
    # the spine phantom has no brainstem, cauda or skin: the goals that cannot be planned are listed,
    # and the way out is named
    assert "brainstem" in msg.lower() and "allow" in msg.lower()

"""`genbench COMMAND ...` (trainkit/commands.py): the entry points behind one name."""

import importlib
import re
import sys
import types

import pytest

import helpers
from trainkit import commands, resources


def test_the_commands_are_setup_pys_console_scripts():
    """Every console script but `genbench` itself is a command, named without `genbench-`, for
    the same module (and `resources` for python -m trainkit.resources)."""
    scripts = dict(re.findall(r'"([a-z-]+)=([a-z_.]+):main"', (helpers.ROOT / "setup.py").read_text()))
    assert scripts.pop("genbench") == "trainkit.commands"
    expected = {name.removeprefix("genbench-"): module for name, module in scripts.items()}
    assert commands.COMMANDS == {**expected, "resources": "trainkit.resources"}


def test_the_listing_names_every_command_with_its_modules_first_line(capsys):
    assert commands.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, module in commands.COMMANDS.items():
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert commands.summary(module) and commands.summary(module) in line
    fid = importlib.import_module("evaluations.fid")  # read from the source: the docstring the module has
    assert commands.summary("evaluations.fid") == fid.__doc__.strip().splitlines()[0].strip()
    assert commands.main([]) == 2 and "usage: genbench COMMAND" in capsys.readouterr().out


def test_an_unknown_command_is_one_line_and_exit_2(capsys):
    assert commands.main(["fidd", "a.npz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'fidd'" in err[0] and "fd-digits" in err[0]


def test_a_command_gets_its_arguments_and_its_name(capsys, monkeypatch):
    """The module's main() runs with the arguments after the command, under `genbench NAME`."""
    monkeypatch.setattr("sys.argv", ["genbench"])
    assert commands.main(["resources", "flags/gans/dcgan_digits.sh"]) == 0
    assert capsys.readouterr().out.strip() == resources.find("flags/gans/dcgan_digits.sh")
    # as under the installed `genbench` script, whose __main__ has no module spec (not pytest's)
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    with pytest.raises(SystemExit) as exit_:
        commands.main(["fid", "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: genbench fid ")

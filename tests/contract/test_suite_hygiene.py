"""The suite's own rules: a hanging subprocess fails its test with its output before pytest's
per-test timeout would kill the test without it, and CI leaves nothing behind on its machine."""

import configparser
import re

import pytest

import helpers


def _pytest_ini():
    ini = configparser.ConfigParser()
    ini.read(helpers.ROOT / "pytest.ini")
    return ini["pytest"]


def test_subprocess_timeouts_are_below_pytests_per_test_timeout():
    per_test = int(_pytest_ini()["timeout"])
    assert helpers.DEFAULT_TIMEOUT <= helpers.MAX_TIMEOUT < per_test
    with pytest.raises(ValueError, match="above helpers.MAX_TIMEOUT"):
        helpers.py("trainkit.selfcheck", "--help", timeout=per_test)
    # and no test asks for more by hand
    for path in sorted(helpers.ROOT.glob("tests/**/*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for value in re.findall(r"\btimeout=(\d+)", line):
                assert int(value) <= helpers.MAX_TIMEOUT, f"{path.name}:{n}: timeout={value}"


def test_tiers_are_declared_and_tmp_folders_of_passing_tests_are_removed():
    ini = _pytest_ini()
    markers = ini["markers"]
    assert "slow:" in markers and "faults:" in markers
    assert ini["tmp_path_retention_policy"] == "failed"


def test_ci_removes_everything_it_made_on_exit():
    ci = (helpers.ROOT / ".ci" / "run").read_text()
    assert re.search(r"""trap 'rm -rf "\$work"' EXIT""", ci)
    # the venv, the temporary folders (pytest's, MPI's) and the quickstart's output are all in it
    assert 'venv="$work/venv"' in ci and 'export TMPDIR="$work/tmp"' in ci and 'out="$work/quickstart"' in ci

"""setup.py's torch and torchvision floors are the lowest versions README.md says the suite passed on.

The floor is a tested fact, not a guess: raising or lowering it in one file without the other fails here.
"""

import re

from helpers import ROOT

# README: "Tested with torch 2.3.1 / torchvision 0.18.1 (CPU) to torch 2.14.1 / torchvision 0.29.1."
TESTED = re.compile(r"Tested with torch (?P<torch>\d+(?:\.\d+)+) / torchvision (?P<torchvision>\d+(?:\.\d+)+) "
                    r"\(CPU\) to torch (?P<torch_hi>\d+(?:\.\d+)+) / torchvision (?P<torchvision_hi>\d+(?:\.\d+)+)")


def _floors(setup_text: str) -> dict:
    found = dict(re.findall(r"""["'](torch|torchvision)>=(\d+(?:\.\d+)*)["']""", setup_text))
    assert set(found) == {"torch", "torchvision"}, f"setup.py: no torch/torchvision floor in install_requires: {found}"
    return found


def _tested(readme_text: str) -> dict:
    lines = [m for m in TESTED.finditer(readme_text)]
    assert len(lines) == 1, "README.md: expected one 'Tested with torch X / torchvision Y (CPU) to ...' line"
    return lines[0].groupdict()


def _key(version: str) -> tuple:
    return tuple(int(p) for p in version.split("."))


def test_setup_floor_is_the_lowest_tested_version_in_readme():
    floors = _floors((ROOT / "setup.py").read_text())
    tested = _tested((ROOT / "README.md").read_text())
    assert floors == {"torch": tested["torch"], "torchvision": tested["torchvision"]}
    assert _key(tested["torch"]) <= _key(tested["torch_hi"])
    assert _key(tested["torchvision"]) <= _key(tested["torchvision_hi"])


def test_the_parsers_read_what_they_compare():
    assert _floors('install_requires=["torch>=2.3.1", "torchvision>=0.18.1", "numpy>=1.24"]') == {
        "torch": "2.3.1", "torchvision": "0.18.1"}
    line = "Tested with torch 2.3.1 / torchvision 0.18.1 (CPU) to torch 2.14.1 / torchvision 0.29.1."
    assert _tested(f"intro\n{line}\nmore") == {"torch": "2.3.1", "torchvision": "0.18.1",
                                                "torch_hi": "2.14.1", "torchvision_hi": "0.29.1"}
    assert _key("2.14.1") > _key("2.3.1")  # numeric, not string, order

"""Every path into tests/ that the documentation or the code names exists: moving a test file
(tests/unit, contract, e2e, faults) must carry README.md, CONTRIBUTING.md, docs/, the sources'
docstrings and the tests' own cross-references along."""

import re
import subprocess

import helpers

# tests/<folders>/<file>.<ext>; a bare folder ("tests/faults/") is checked as a folder
TEST_PATH = re.compile(r"(?<![\w./-])tests/(?:[A-Za-z0-9_]+/)*[A-Za-z0-9_]+(?:\.(?:py|txt|pt)\b|/)")


def _named_paths():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=helpers.ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    named = {}
    for name in files:
        path = helpers.ROOT / name
        if path.suffix not in (".py", ".md", ".sh", ".txt", ".ini", ".toml", "") or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for m in TEST_PATH.finditer(text):
            named.setdefault(m.group(0), name)
    return named


def test_every_named_test_path_exists():
    named = _named_paths()
    assert len(named) > 10, named  # the scan found the suite's cross-references at all
    missing = sorted(f"{where}: {p}" for p, where in named.items() if not (helpers.ROOT / p).exists())
    assert not missing, "paths into tests/ that do not exist:\n" + "\n".join(missing)

"""What the documentation tells a user to run exists: every flag file named in README.md, docs/
and launch/ is in flags/, and launch/run.sh --help is an answer, not an error."""

import itertools
import re
import subprocess

import pytest

import helpers

FLAG_PATH = re.compile(r"flags/[A-Za-z0-9_./{},-]+?\.sh")


def _expand(path):
    """`flags/gans/{dcgan,cdcgan}_x.sh` -> both paths (shell brace expansion, one level)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _documents():
    root = helpers.ROOT
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "launch").iterdir())]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.name)
def test_every_flag_file_a_document_names_exists(doc):
    named = {p for m in FLAG_PATH.findall(doc.read_text()) for p in _expand(m)}
    missing = sorted(p for p in named if not (helpers.ROOT / p).is_file())
    assert not missing, f"{doc.name} names flag files that do not exist: {missing}"


def test_run_sh_help_prints_usage_and_exits_0():
    proc = subprocess.run(["bash", helpers.ROOT / "launch" / "run.sh", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "LAUNCHER NPROC [FLAG_FILE.sh ...] MODULE" in proc.stdout and "torchrun" in proc.stdout
    assert proc.stderr == ""

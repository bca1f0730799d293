"""End-to-end tests: real launchers (mpiexec, torchrun, Slurm, several hosts), several
processes, the main job. Every test here carries the `e2e` and `slow` markers, so the developer
tier (`-m "not slow"`) leaves this folder out; a fast check of a piece these runs use belongs in
unit/ or contract/."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    # hooks see the whole session's items: mark only this folder's
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)

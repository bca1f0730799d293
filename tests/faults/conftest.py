"""The fault suite: kills, signals, dead ranks, bad input. Every test here carries the `faults`
marker, so `pytest -m faults` runs the suite alone and `-m "not faults"` leaves it out; CI runs
it with everything else."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)

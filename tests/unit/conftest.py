"""Unit tests: one module's behaviour, in process (the maths, networks, samplers, losses, data,
logger, loop, metrics). Every test here carries the `unit` marker (`pytest -m unit`)."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    # hooks see the whole session's items: mark only this folder's
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.unit)

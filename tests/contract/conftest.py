"""Contract tests: what the pieces promise each other and their users at a boundary: every
family's Task through the loop, the command lines (help, one-line refusals, run directories),
openai's and DDGAN's drop-in surfaces, the install and the documentation. Every test here
carries the `contract` marker (`pytest -m contract`); a test that starts a launcher is also
marked slow, by hand."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    # hooks see the whole session's items: mark only this folder's
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.contract)

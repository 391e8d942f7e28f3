"""Shared pytest configuration; fixture plugins live in tests/fixtures/."""

import sys
from pathlib import Path

# `tests` is not an installed package and plain `pytest` does not put the repo root on sys.path
# (only `python -m pytest` does); make `tests.fixtures.*` importable either way.
if (_root := str(Path(__file__).resolve().parents[1])) not in sys.path:
    sys.path.insert(0, _root)

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.databases", "tests.fixtures.cdc"]

"""The shared firmware cases (shared_cases.py) on CPython; test_fw_on_micropython.py runs
the very same functions on real MicroPython."""

from pathlib import Path

import pytest

import shared_cases

shared_cases.DATA = str(Path(__file__).resolve().parents[1] / "vectors")


@pytest.mark.parametrize("name", shared_cases.all_cases())
def test_shared_case(name):
    getattr(shared_cases, name)()

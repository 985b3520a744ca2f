"""How the suite runs, not what it tests: the objects collection made are out of the garbage collector's reach
(conftest.pytest_collection), and hypothesis's pytest plugin is not loaded (pyproject.toml addopts)."""

from __future__ import annotations

import gc

import pytest


def test_what_collection_imported_is_frozen_and_the_collector_is_on() -> None:
    """The library and the test modules, imported while collecting, are frozen (full collections scanned their
    millions of objects again and again); the tests' own objects are collected as usual."""
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_hypothesis_plugin_is_not_loaded(pytestconfig: pytest.Config) -> None:
    """Its terminal summary imported (and assert-rewrote) all of hypothesis at the end of every run."""
    assert pytestconfig.pluginmanager.get_plugin("hypothesispytest") is None
    assert pytestconfig.pluginmanager.is_blocked("hypothesispytest")

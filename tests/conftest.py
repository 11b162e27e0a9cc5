"""Shared fixtures. VM fixtures live in tests/vm/conftest.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.catalog import DEFAULT_CATALOG, Catalog

pytest_plugins = ("pytester",)  # tests/test_pytest_plugin.py runs test files through the testbed's plugin


@pytest.fixture
def catalog_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Catalog]:
    """A writable copy of the device catalog, made the default for the test."""
    root = tmp_path / "devices"
    shutil.copytree(DEFAULT_CATALOG, root)
    monkeypatch.setenv("LLAMAS_CATALOG", str(root))
    yield Catalog(root)

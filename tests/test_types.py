"""The package is typed: mypy (with pydantic's plugin, configured in pyproject.toml) finds no error."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_type_errors(tmp_path):
    api = pytest.importorskip("mypy.api", reason="mypy is in the test extra")
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path),
                                str(ROOT / "src" / "hardneg")])
    assert status == 0, out + err

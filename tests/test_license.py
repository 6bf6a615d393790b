"""The licence the package metadata names is in the repository, with its copyright line."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_license_file_is_the_mit_licence_that_pyproject_names() -> None:
    with open(REPO / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["license"] == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the storelab authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text

"""Data the commands need besides code and models: the demo clips and the shipped models' recipes. They live at
the top of the source checkout (assets/demo, recipes/NAME); the wheel carries them inside the package
(pyproject.toml: force-include)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def resource(*parts: str) -> Path:
    """The installed copy of ``parts`` (e.g. "assets", "demo") in the package, else the source checkout's."""
    installed = PACKAGE.joinpath(*parts)
    return installed if installed.exists() else PACKAGE.parents[1].joinpath(*parts)


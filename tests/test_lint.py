"""CI lints: `make test` (what .ci/run calls, the README's test command) runs ruff before pytest."""

from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def test_make_test_runs_ruff_before_pytest():
    text = MAKEFILE.read_text(encoding="utf-8")
    recipe = text.split("\ntest: ", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert [line.strip() for line in recipe] == ["$(VENV)/bin/ruff check src tests", "$(PY) -m pytest -q"]

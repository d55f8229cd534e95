"""What an installation carries and needs: the wheel's contents and dependencies, the core commands without the
extras (blocked in a subprocess), the message naming a missing extra, --version, and the commands that use
shipped data run from any directory."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import audiovae
from audiovae import demo, registry
from audiovae.cli import app
from audiovae.errors import EXTRAS, AudioVAEError
from tests.test_cli_info import assert_one_line_error, run

ROOT = Path(__file__).parents[1]
CLIP = demo.ASSETS / "speech16k_fillets-cs.flac"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRA_PACKAGES = ("lightning", "tensorboard", "webdataset", "mido", "pedalboard", "scikit-learn", "fastapi",
                  "uvicorn", "pesq", "pystoi", "visqol-python", "pytest", "playwright", "schemathesis")


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()


def without_extras(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """``audiovae ARGS`` in a process where every package of an extra fails to import, as when not installed."""
    blocked = sorted(set(EXTRAS) - {"pydantic"})  # typer needs pydantic too
    code = f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n" \
           "sys.argv = ['audiovae', *sys.argv[1:]]\nfrom audiovae.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_wheel_carries_the_shipped_data_and_requires_no_extra(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("audiovae-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for clip in demo.ASSETS.iterdir():
        assert f"audiovae/assets/demo/{clip.name}" in names
    for recipe in ("speech16k", "music24k"):
        for yaml in (ROOT / "recipes" / recipe).glob("*.yaml"):
            assert f"audiovae/recipes/{recipe}/{yaml.name}" in names
    for f in registry.PRETRAINED_DIR.rglob("*.*"):
        assert f"audiovae/pretrained/{f.relative_to(registry.PRETRAINED_DIR).as_posix()}" in names
    assert {"audiovae/app/static/swagger/swagger-ui-bundle.js", "audiovae/app/static/swagger/LICENSE"} <= names
    assert not [n for n in names if "experiments" in n or "__pycache__" in n or n.endswith("opus_subset.py")]
    core = [_name(r.split(":", 1)[1].strip()) for r in meta.splitlines()
            if r.startswith("Requires-Dist:") and "extra ==" not in r]
    assert "torch" in core and not set(core) & set(EXTRA_PACKAGES)
    assert f"Version: {audiovae.__version__}" in meta


def test_every_package_of_an_extra_maps_to_it():
    """A missing package of an extra is named with its extra: EXTRAS covers what pyproject's extras install."""
    extras = PYPROJECT["optional-dependencies"]
    modules = importlib.metadata.packages_distributions()
    for extra in ("train", "app", "bench"):
        for dist in map(_name, extras[extra]):
            mods = [m for m, d in modules.items() if dist in (x.lower() for x in d)]
            assert any(dist in map(_name, extras.get(EXTRAS.get(m), ())) for m in mods), (extra, dist, mods)
    assert set(EXTRAS.values()) <= set(extras)


def test_core_commands_run_without_the_extras(tmp_path):
    r = without_extras("models", cwd=tmp_path)
    assert r.returncode == 0 and "speech16k" in r.stdout and "GPL-2" in r.stdout, r.stderr
    r = without_extras("classify", "predict", "speech16k-language", CLIP, cwd=tmp_path)
    assert r.returncode == 0 and ",cs," in r.stdout, r.stderr
    r = without_extras("compress", CLIP, "x.avae", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "x.avae").stat().st_size > 0, r.stderr


@pytest.mark.parametrize("args, extra", [(["serve"], "app"),
                                         (["train", "--config", ROOT / "recipes/speech16k/train.yaml"], "train")])
def test_a_missing_extra_is_named_in_one_line(tmp_path, args, extra):
    assert_one_line_error(without_extras(*args, cwd=tmp_path), f"'{extra}' extra",
                          f"pip install 'audiovae[{extra}]'")


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"audiovae {audiovae.__version__}"
    assert importlib.metadata.version("audiovae") == audiovae.__version__


def test_demo_without_its_clips_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ASSETS", tmp_path)
    with pytest.raises(AudioVAEError, match="no demo clips"):
        demo.run_demo(tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_report_and_export_work_on_shipped_models_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["report", "--bench", "missing"])
    assert isinstance(r.exception, AudioVAEError) and not (tmp_path / "out").exists()
    r = runner.invoke(app, ["report"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Listen: codec examples" in page and "speech16k_fillets-cs.flac at 6 kbps" in page
    r = runner.invoke(app, ["export", "speech16k", "copy"])
    assert r.exit_code == 0, r.output
    copy = registry.load(tmp_path / "copy")
    assert copy.card["sha256"] == registry.load("speech16k").card["sha256"]
    assert registry.load_entropy_state(copy) and registry.load_prior(copy) and registry.load_embedder(copy)
    r = runner.invoke(app, ["export", "nothing", "copy2"])
    assert isinstance(r.exception, AudioVAEError) and "shipped model" in str(r.exception)


def test_shipped_recipes_are_found_outside_the_checkout(tmp_path, monkeypatch):
    from audiovae.config import load_yaml
    from audiovae.data.corpus import find_recipe
    from audiovae.train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    assert find_recipe("speech16k") == ROOT / "recipes/speech16k/corpus.yaml"
    assert load_yaml(TrainConfig, "recipes/speech16k/train.yaml").name == "speech16k"

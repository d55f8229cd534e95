"""Corpus builds: a recipe (corpus.yaml) -> Debian packages -> trimmed 16-bit FLACs -> manifest + card.

Layout under ``ROOT/NAME``: ``audio/<source>/<path inside package>.flac`` (one file per source file,
mono, at the corpus rate), ``cache/<source>.jsonl`` (one record per source file: decoded, too short or
unreadable, with its labels), ``manifest.jsonl`` (clips of at most ``max_clip_seconds``, as offsets into
the FLACs), ``card.json`` and ``CARD.md``. Builds resume where they stopped; a repeated build decodes
nothing, except files that were unreadable before ffmpeg was installed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from audiovae import audio
from audiovae.data import sources, synth
from audiovae.data.card import write_card
from audiovae.data.manifest import UNSEEN, Entry, split_for, write_manifest
from audiovae.errors import AudioVAEError
from audiovae.files import write_text
from audiovae.resources import resource

LISTERS = sources.LISTERS | synth.LISTERS

CACHE_VERSION = 1  # bump when decoding or trimming changes: cached records are then rebuilt
RECIPES = resource("recipes")  # the shipped models' recipes


class RecipeError(AudioVAEError):
    """A corpus recipe that cannot be used."""


class PackageError(AudioVAEError):
    """Debian packages that are missing and cannot be installed."""


@dataclass
class SourceConfig:
    package: str  # Debian package: installed, listed with dpkg -L, license read from its copyright file
    lister: str  # function in LISTERS (sources.py, synth.py)
    name: str = ""  # manifest `source` and audio/<name>/ folder; defaults to the package
    also_install: list[str] = field(default_factory=list)  # further packages the lister reads
    license: str = ""  # recorded license; "" = the main License of the package's copyright file
    enabled: bool = True
    note: str = ""  # shown in the card (why a source is disabled, what its labels mean)
    options: dict = field(default_factory=dict)  # keyword arguments of the lister
    # the unseen-source split: true puts every file of the source there, a regex the files whose key matches
    holdout: bool | str = False


@dataclass
class Recipe:
    name: str
    sample_rate: int
    sources: list[SourceConfig]
    description: str = ""
    max_clip_seconds: float = 10.0  # longer files become consecutive clips of at most this length
    min_seconds: float = 0.5  # shorter files (after trimming) are skipped
    silence_db: float = -50.0  # trim leading/trailing frames this far below the loudest frame


def _strict(cls, data, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise RecipeError(f"{where}: unknown key '{key}'")
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and f.name not in data:
            raise RecipeError(f"{where}: missing key '{f.name}'")
    return cls(**data)


def _check_options(src: SourceConfig, where: str) -> None:
    lister = LISTERS.get(src.lister)
    if lister is None:
        raise RecipeError(f"{where}: unknown lister '{src.lister}' (one of {', '.join(LISTERS)})")
    params = dict(list(inspect.signature(lister).parameters.items())[1:])
    for key in src.options:
        if key not in params:
            raise RecipeError(f"{where}: unknown option '{key}' for lister {src.lister}")
    for key, p in params.items():
        if p.default is inspect.Parameter.empty and key not in src.options:
            raise RecipeError(f"{where}: lister {src.lister} needs option '{key}'")


def parse_recipe(data, where: str) -> Recipe:
    """A Recipe from parsed YAML; unknown or missing keys are errors naming the key."""
    recipe = _strict(Recipe, data, where)
    if not isinstance(recipe.sample_rate, int) or recipe.sample_rate <= 0:
        raise RecipeError(f"{where}: sample_rate must be a positive integer, got {recipe.sample_rate!r}")
    if not isinstance(recipe.sources, list) or not recipe.sources:
        raise RecipeError(f"{where}: 'sources' must be a non-empty list")
    recipe.sources = [_strict(SourceConfig, s, f"{where}: sources[{i}]")
                      for i, s in enumerate(recipe.sources)]
    seen = set()
    for i, src in enumerate(recipe.sources):
        src.name = src.name or src.package
        at = f"{where}: sources[{i}] ({src.name})"
        if not src.name:
            raise RecipeError(f"{at}: needs a 'package' or a 'name'")
        if src.name in seen:
            raise RecipeError(f"{at}: duplicate source name '{src.name}'")
        seen.add(src.name)
        _check_options(src, at)
        if not isinstance(src.holdout, bool | str):
            raise RecipeError(f"{at}: holdout must be true, false or a regex, got {src.holdout!r}")
        if isinstance(src.holdout, str):
            try:
                re.compile(src.holdout)
            except re.error as e:
                raise RecipeError(f"{at}: holdout is not a regex ({e})") from None
    return recipe


def load_recipe(path: str | os.PathLike) -> Recipe:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"{p}: cannot read recipe ({str(e).splitlines()[0]})") from None
    return parse_recipe(data, str(p))


def find_recipe(name: str) -> Path:
    """A corpus.yaml path, or recipes/NAME/corpus.yaml here or among the shipped recipes."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else \
        [Path("recipes") / name / "corpus.yaml", RECIPES / name / "corpus.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise RecipeError(f"{name}: no recipe found (looked for {', '.join(map(str, candidates))})")


def folder_recipe(folder: Path, name: str, sample_rate: int, label_from: str) -> Recipe:
    """A one-source recipe for a user's folder of audio files."""
    src = SourceConfig(package="", lister="folder", name=name, license="unknown",
                       options={"path": str(folder), "label_from": label_from})
    return parse_recipe({"name": name, "sample_rate": sample_rate, "sources": [asdict(src)],
                         "description": f"audio files under {folder}"}, f"--from-folder {folder}")


def ensure_packages(packages: list[str], console: Console) -> dict[str, str]:
    """Install missing packages when root (none when all are present); else fail with the apt command."""
    have = sources.installed_versions(packages)
    missing = [p for p in packages if p not in have]
    if not missing:
        return have
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise PackageError(f"missing Debian packages {', '.join(missing)}; "
                           f"install them as root: {' '.join(cmd)}")
    console.print(f"installing {' '.join(missing)}")
    r = subprocess.run(cmd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    have = sources.installed_versions(packages)
    if r.returncode != 0 or any(p not in have for p in missing):
        raise PackageError(f"{' '.join(cmd)} failed (exit {r.returncode}); run apt-get update and retry")
    return have


def trim_bounds(x: np.ndarray, sr: int, db: float) -> tuple[int, int]:
    """First and last sample of the part louder than ``db`` below the loudest 10 ms frame (20 ms margin)."""
    hop = max(1, sr // 100)
    n = x.shape[-1]
    frames = np.pad(x.reshape(-1), (0, -n % hop)).reshape(-1, hop)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    ref = energy.max(initial=0.0)
    if ref <= 1e-12:  # digital silence (below -120 dBFS)
        return 0, 0
    loud = np.nonzero(energy >= ref * 10 ** (db / 10))[0]
    pad = 2 * hop
    return max(0, int(loud[0]) * hop - pad), min(n, (int(loud[-1]) + 1) * hop + pad)


def segments(frames: int, sr: int, max_seconds: float) -> list[tuple[int, int]]:
    """Split ``frames`` into the fewest equal consecutive (start, end) spans of at most ``max_seconds``."""
    n = max(1, math.ceil(frames / (max_seconds * sr) - 1e-9))
    bounds = [round(k * frames / n) for k in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _decode(item: sources.Item) -> tuple[np.ndarray, int]:
    if not item.member:
        return audio.load(item.file, mono=True)
    name = f"{item.file}:{item.member}"
    with tempfile.NamedTemporaryFile(suffix=Path(item.member).suffix) as tmp:
        try:
            with zipfile.ZipFile(item.file) as z:
                tmp.write(z.read(item.member))
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise audio.AudioError(f"{name}: cannot extract ({e})") from None
        tmp.flush()
        try:
            return audio.load(tmp.name, mono=True)
        except audio.AudioError as e:
            raise audio.AudioError(str(e).replace(tmp.name, name)) from None


def process(job: tuple[sources.Item, str, Path, int, float, float]) -> dict:
    """Decode one source file, resample, trim, write its FLAC; the record for the cache (never raises
    for a bad file: status is 'ok', 'too_short' or 'unreadable')."""
    item, flac, out, sr, silence_db, min_seconds = job
    name = item.member or item.file
    rec = {"key": item.key, "rel": item.rel, "flac": flac, "labels": item.labels, "license": item.license,
           "format": Path(name).suffix.lower().lstrip("."), "status": "ok", "frames": 0}
    try:
        x, sr0 = _decode(item)
        rec["orig_sample_rate"] = sr0
        y = audio.resample(x, sr0, sr)
        a, b = trim_bounds(y, sr, silence_db)
        y = y[:, a:b]
        rec["frames"], rec["trim_start"] = int(y.shape[1]), a / sr
        if y.shape[1] < min_seconds * sr:
            rec["status"] = "too_short"
            return rec
        peak = float(np.abs(y).max())
        if peak > 1.0:  # float decodes (trackers, Opus) may overshoot: scale rather than clip
            y = y / peak
        dest = out / flac
        dest.parent.mkdir(parents=True, exist_ok=True)
        audio.save(dest, y, sr)
    except audio.AudioError as e:
        rec.update(status="unreadable", error=str(e)[:300], ffmpeg=shutil.which("ffmpeg") is not None)
    return rec


def _fingerprint(src: SourceConfig, recipe: Recipe) -> str:
    """Changes with anything that changes the decoded audio (then everything is made again)."""
    d = {"lister": src.lister, "package": src.package, "options": src.options, "sr": recipe.sample_rate,
         "min": recipe.min_seconds, "db": recipe.silence_db, "version": CACHE_VERSION}
    if generator := sources.generator_version(src.lister):
        d["generator"] = generator
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _listers_version() -> str:
    """Changes with the listers' code: sources are then listed again (labels refreshed, nothing decoded)."""
    return hashlib.sha1((inspect.getsource(sources) + inspect.getsource(synth)).encode()).hexdigest()[:16]


def _read_jsonl(path: Path) -> dict[str, dict]:
    records = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                records[rec["key"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run: that file is decoded again
    return records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _redo(out: Path, records) -> set[str]:
    """Keys of the records to decode again: a lost FLAC, or a file that was unreadable before ffmpeg was
    installed."""
    ffmpeg = shutil.which("ffmpeg") is not None
    return {r["key"] for r in records if r["status"] == "ok" and not (out / r["flac"]).exists()
            or r["status"] == "unreadable" and ffmpeg and not r.get("ffmpeg")}


def _run(args: list[tuple], jobs: int, console: Console, name: str):
    """Yield process(a) for each job, in ``jobs`` processes, with a progress bar."""
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(name, total=len(args))
        if jobs == 1:
            for a in args:
                yield process(a)
                bar.advance(task)
            return
        # spawn, not fork: a forked worker inherits locks held by the progress bar's thread (a build hung once)
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for rec in pool.imap_unordered(process, args, chunksize=4):
                yield rec
                bar.advance(task)


def build_source(src: SourceConfig, recipe: Recipe, out: Path, jobs: int, console: Console,
                 system_root: Path) -> list[dict]:
    """Records of every file of one source, decoding only what the cache does not hold yet."""
    cache, state_path = out / "cache" / f"{src.name}.jsonl", out / "cache" / f"{src.name}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(src, recipe)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    work = (out / "generated" / src.name).resolve()
    if state.get("fingerprint") != fp:  # new source settings: decode (and generate) everything again
        cache.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        state = {"fingerprint": fp, "complete": False}
    records = _read_jsonl(cache)
    listers = _listers_version()
    redo = _redo(out, records.values())
    if state["complete"] and state.get("listers") == listers and not redo:
        return sorted(records.values(), key=lambda r: r["key"])
    state.update(complete=False, listers=listers)
    write_text(state_path, json.dumps(state))
    files = tuple(sources.dpkg_list(src.package)) if src.package else ()
    pkg = sources.Package(src.package, src.name, system_root, work, files)
    items = {i.key: i for i in LISTERS[src.lister](pkg, **src.options)}
    records = {k: {**r, "labels": items[k].labels, "license": items[k].license}
               for k, r in records.items() if k in items}
    todo = [i for k, i in sorted(items.items()) if k not in records or k in redo]
    if todo:
        args = [(i, f"audio/{src.name}/{i.rel}.flac", out, recipe.sample_rate, recipe.silence_db,
                 recipe.min_seconds) for i in todo]
        with cache.open("a", encoding="utf-8") as f:
            for rec in _run(args, jobs, console, src.name):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()  # an interrupted build keeps what it decoded
                records[rec["key"]] = rec
    result = [records[k] for k in sorted(items)]
    _write_jsonl(cache, result)  # labels refreshed, files no longer listed dropped
    state["complete"] = True
    write_text(state_path, json.dumps(state))
    return result


def entries_for(rec: dict, src: SourceConfig, license: str, recipe: Recipe) -> list[Entry]:
    """Manifest entries (clips) of one decoded file, all in the split of its source file."""
    if rec["status"] != "ok":
        return []
    held = src.holdout is True or (isinstance(src.holdout, str) and re.search(src.holdout, rec["key"]))
    sr, split = recipe.sample_rate, UNSEEN if held else split_for(rec["key"])
    return [Entry(id=f"{rec['key']}#{k}", path=rec["flac"], offset=a / sr, duration=(b - a) / sr,
                  sample_rate=sr, split=split, source=src.name, license=rec["license"] or license,
                  labels=rec["labels"])
            for k, (a, b) in enumerate(segments(rec["frames"], sr, recipe.max_clip_seconds))]


def build(recipe: Recipe, root: str | os.PathLike = "corpora", jobs: int = 2, console: Console | None = None,
          system_root: Path = Path("/")) -> dict:
    """Build (or bring up to date) ROOT/NAME; returns the card (also written as card.json and CARD.md)."""
    console = console or Console(stderr=True)
    out = Path(root) / recipe.name
    active = [s for s in recipe.sources if s.enabled]
    packages = sorted({p for s in active for p in (s.package, *s.also_install) if p})
    versions = ensure_packages(packages, console)
    built, entries = [], []
    for src in active:
        copyright_license = sources.main_license(sources.copyright_text(system_root, src.package))
        license = src.license or copyright_license
        records = build_source(src, recipe, out, jobs, console, system_root)
        for rec in records:
            entries += entries_for(rec, src, license, recipe)
        built.append({"config": src, "version": versions.get(src.package, ""), "license": license,
                      "copyright_license": copyright_license, "records": records})
    write_manifest(out / "manifest.jsonl", entries)
    return write_card(out, recipe, built, entries)

"""Corpus builds on a fake Debian package tree (no apt, no network): labels, splits, trimming,
segmenting, skipped files, resumable re-runs, the --from-folder path and the package checks."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console
from typer.testing import CliRunner

from audiovae.cli import app
from audiovae.data import corpus, sources, synth
from audiovae.data.corpus import (
    PackageError,
    RecipeError,
    build,
    load_recipe,
    parse_recipe,
    segments,
    trim_bounds,
)
from audiovae.data.manifest import read_manifest, split_for

SR = 22050
LUA = '''dialogId("let-m-oko", "font_small", "This is not a glass eye.")
dialogStr("To neni sklenene oko.")

dialogId("let-x-hlas", "font_white", "Hello \\"fish\\".")
dialogStr("Ahoj \\"ryby\\".")
'''
COPYRIGHT = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\n" \
            "Copyright: someone\nLicense: GPL-2+\n"


def burst(seconds: float, pad: float = 0.3, sr: int = SR, seed: int = 0) -> np.ndarray:
    """``pad`` s of silence, ``seconds`` of a noisy tone, ``pad`` s of silence (mono, float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    z = np.zeros(int(pad * sr))
    return np.concatenate([z, tone, z]).astype(np.float32)


def put(root: Path, path: str, x: np.ndarray | bytes | str, fmt: str | None = None) -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(x, np.ndarray):
        sf.write(p, x, SR, format=fmt) if fmt else sf.write(p, x, SR)
    elif isinstance(x, bytes):
        p.write_bytes(x)
    else:
        p.write_text(x, encoding="utf-8")


FILLETS = "/usr/share/games/fillets-ng/"
TUX = "/usr/share/tuxpaint/stamps/"
AST = "/usr/share/asterisk/sounds/en_US_f_Allison/"
MUSIC = "/usr/share/games/fakemusic/"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A fake system root with four packages; dpkg -L and dpkg-query answer from it."""
    root = tmp_path / "sys"
    packages = {
        "fillets-ng-data-cs": {
            f"{FILLETS}sound/airplane/cs/let-m-oko.ogg": burst(1.0),
            f"{FILLETS}sound/airplane/cs/let-x-hlas.ogg": burst(0.8, seed=1),
            f"{FILLETS}sound/airplane/cs/let-v-ticho.ogg": np.zeros(SR, dtype=np.float32),  # silent
            f"{FILLETS}sound/airplane/cs/let-v-kratke.ogg": burst(0.2, seed=2),  # too short after trimming
            f"{FILLETS}sound/airplane/cs/let-v-rozbite.ogg": b"OggS but not Ogg" * 10,  # unreadable
        },
        "tuxpaint-stamps-default": {
            f"{TUX}animals/frog_desc_fr.ogg": burst(1.2, seed=3),
            f"{TUX}animals/frog.ogg": burst(1.0, seed=4),  # a croak: a sound effect, left out
            f"{TUX}animals/frog.txt": "A frog.\nfr.utf8=Une grenouille.\n",
            f"{TUX}math/0_fr.ogg": burst(0.7, seed=5),
            f"{TUX}math/0.ogg": burst(0.7, seed=6),  # English spoken name (localized names exist)
            f"{TUX}math/0.txt": "Zero.\nfr.utf8=Zéro.\n",
        },
        "asterisk-core-sounds-en-wav": {
            f"{AST}digits/1.wav": burst(0.8, seed=7),
            f"{AST}letters/ascii37.wav": burst(0.8, seed=8),
            f"{AST}silence/1.wav": np.zeros(SR, dtype=np.float32),
            f"{AST}beep.wav": burst(0.8, seed=9),
        },
        "fake-music": {f"{MUSIC}track.wav": burst(25.0, pad=0.0, seed=10)},
    }
    listing = {}
    for pkg, files in packages.items():
        for path, x in files.items():
            put(root, path, x, fmt="OGG" if path.endswith(".ogg") and isinstance(x, np.ndarray) else None)
        put(root, f"/usr/share/doc/{pkg}/copyright", COPYRIGHT)
        listing[pkg] = ["/.", "/usr/share", *files, f"/usr/share/doc/{pkg}/copyright"]
    put(root, f"{FILLETS}script/airplane/dialogs_cs.lua", LUA)
    (root / TUX.lstrip("/") / "animals/frog_link_desc_fr.ogg").symlink_to("frog_desc_fr.ogg")
    listing["tuxpaint-stamps-default"].append(f"{TUX}animals/frog_link_desc_fr.ogg")
    monkeypatch.setattr(sources, "dpkg_list", lambda pkg: listing[pkg])
    monkeypatch.setattr(sources, "installed_versions", lambda pkgs: {p: "1.0" for p in pkgs if p in listing})
    return root


def recipe(**over):
    data = {"name": "tiny", "sample_rate": 16000, "max_clip_seconds": 10.0, "sources": [
        {"package": "fillets-ng-data-cs", "lister": "fillets", "license": "GPL-2+"},
        {"package": "tuxpaint-stamps-default", "lister": "tuxpaint"},
        {"package": "asterisk-core-sounds-en-wav", "lister": "asterisk", "license": "CC-BY-SA-3.0"},
        {"package": "fake-music", "lister": "files", "options": {"under": MUSIC, "kind": "music"}},
    ]}
    return parse_recipe({**data, **over}, "test")


def run(tree, tmp_path, jobs=1):
    card = build(recipe(), tmp_path / "corpora", jobs=jobs, system_root=tree)
    entries, bad = read_manifest(tmp_path / "corpora" / "tiny" / "manifest.jsonl")
    assert bad == 0
    return card, {e.id: e for e in entries}


def test_labels_from_paths(tree, tmp_path):
    _, es = run(tree, tmp_path)
    oko = es[f"fillets-ng-data-cs{FILLETS}sound/airplane/cs/let-m-oko.ogg#0"]
    assert oko.labels["speaker"] == "fillets-cs:m" and oko.labels["text"] == "To neni sklenene oko."
    assert (oko.labels["language"], oko.labels["kind"], oko.labels["synthetic"]) == ("cs", "speech", False)
    hlas = es[f"fillets-ng-data-cs{FILLETS}sound/airplane/cs/let-x-hlas.ogg#0"]
    assert hlas.labels["speaker"] == "fillets-cs:airplane/x" and hlas.labels["text"] == 'Ahoj "ryby".'
    frog = es[f"tuxpaint-stamps-default{TUX}animals/frog_desc_fr.ogg#0"]
    assert frog.labels["language"] == "fr" and frog.labels["text"] == "Une grenouille."
    assert frog.license == "GPL-2+"  # the copyright file's main license (the recipe gives none)
    ids = "\n".join(es)
    assert "animals/frog.ogg" not in ids and "frog_link" not in ids  # sound effect; symlink
    assert es[f"tuxpaint-stamps-default{TUX}math/0.ogg#0"].labels["language"] == "en"
    assert es[f"tuxpaint-stamps-default{TUX}math/0_fr.ogg#0"].labels["role"] == "name"
    one = es[f"asterisk-core-sounds-en-wav{AST}digits/1.wav#0"]
    assert one.labels["text"] == "1" and one.labels["speaker"] == "asterisk:Allison"
    assert es[f"asterisk-core-sounds-en-wav{AST}letters/ascii37.wav#0"].labels["text"] == "%"
    assert "silence/" not in ids and "beep" not in ids
    assert all(e.sample_rate == 16000 and e.channels == 1 for e in es.values())


def test_splits_are_deterministic_per_source_file(tree, tmp_path):
    assert [split_for(f"pkg/file{i}.ogg") for i in (0, 1, 14)] == ["train", "valid", "test"]
    assert split_for("pkg/file14.ogg") == split_for("pkg/file14.ogg")
    _, es = run(tree, tmp_path)
    for e in es.values():
        assert e.split == split_for(e.id.rsplit("#", 1)[0])


def test_silence_trimmed_and_long_files_segmented(tree, tmp_path):
    _, es = run(tree, tmp_path)
    oko = es[f"fillets-ng-data-cs{FILLETS}sound/airplane/cs/let-m-oko.ogg#0"]
    assert 1.0 <= oko.duration <= 1.06  # 0.3 s of silence on each side trimmed (20 ms margins kept)
    clips = sorted((e for e in es.values() if e.source == "fake-music"), key=lambda e: e.offset)
    assert [e.id.rsplit("#", 1)[1] for e in clips] == ["0", "1", "2"]
    assert len({e.path for e in clips}) == 1 and len({e.split for e in clips}) == 1
    assert [round(e.offset, 4) for e in clips] == [0.0, round(25 / 3, 4), round(50 / 3, 4)]
    assert all(e.duration <= 10.0 for e in clips)
    assert sum(e.duration for e in clips) == pytest.approx(25.0, abs=1e-3)
    flac = tmp_path / "corpora" / "tiny" / clips[0].path
    info = sf.info(flac)
    assert flac.name == "track.wav.flac" and info.samplerate == 16000 and info.subtype == "PCM_16"
    assert info.frames == pytest.approx(25 * 16000, abs=2)


def test_unreadable_and_short_files_are_skipped_and_counted(tree, tmp_path):
    card, es = run(tree, tmp_path)
    fillets = next(s for s in card["sources"] if s["name"] == "fillets-ng-data-cs")
    assert (fillets["files"], fillets["used"], fillets["too_short"], fillets["unreadable"]) == (5, 2, 2, 1)
    assert "let-v-rozbite.ogg" in fillets["unreadable_examples"][0]
    assert card["skipped_files"] == {"too_short": 2, "unreadable": 1}
    assert fillets["original_sample_rates"] == {str(SR): 2} and fillets["formats"] == {"ogg": 5}
    out = tmp_path / "corpora" / "tiny"
    assert "fillets-ng-data-cs" in (out / "CARD.md").read_text()
    assert json.loads((out / "card.json").read_text())["clips"] == len(es)


def test_second_run_is_a_noop_and_a_lost_flac_is_redone(tree, tmp_path, monkeypatch):
    _, first = run(tree, tmp_path, jobs=2)
    manifest = tmp_path / "corpora" / "tiny" / "manifest.jsonl"
    text = manifest.read_text()

    def fail(*a, **k):
        raise AssertionError("nothing should be listed or decoded")

    listing, process = sources.dpkg_list, corpus.process
    monkeypatch.setattr(sources, "dpkg_list", fail)
    monkeypatch.setattr(corpus, "process", fail)
    _, second = run(tree, tmp_path)
    assert manifest.read_text() == text and second == first

    monkeypatch.setattr(sources, "dpkg_list", listing)
    monkeypatch.setattr(corpus, "_listers_version", lambda: "changed")  # new lister code: list, don't decode
    _, third = run(tree, tmp_path)
    assert third == first

    lost = next(e for e in first.values() if e.source == "fake-music")
    (tmp_path / "corpora" / "tiny" / lost.path).unlink()
    decoded = []
    monkeypatch.setattr(corpus, "process", lambda job: decoded.append(job[0].key) or process(job))
    build(recipe(), tmp_path / "corpora", jobs=1, system_root=tree)
    assert decoded == [lost.id.rsplit("#", 1)[0]]
    assert manifest.read_text() == text


def test_unreadable_files_are_retried_once_ffmpeg_is_installed(tree, tmp_path, monkeypatch):
    real_which = corpus.shutil.which
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None if name == "ffmpeg" else real_which(name))
    run(tree, tmp_path)
    decoded = []
    process = corpus.process
    monkeypatch.setattr(corpus, "process", lambda job: decoded.append(job[0].key) or process(job))
    run(tree, tmp_path)
    assert decoded == []  # still no ffmpeg: nothing to retry
    monkeypatch.setattr(corpus.shutil, "which", lambda name: "/usr/bin/ffmpeg" if name == "ffmpeg" else None)
    run(tree, tmp_path)
    assert decoded == [f"fillets-ng-data-cs{FILLETS}sound/airplane/cs/let-v-rozbite.ogg"]
    decoded.clear()
    run(tree, tmp_path)
    assert decoded == []  # unreadable with ffmpeg too: not retried again


def test_manifest_round_trip(tree, tmp_path):
    from audiovae.data.manifest import write_manifest

    _, es = run(tree, tmp_path)
    write_manifest(tmp_path / "copy.jsonl", es.values())
    again, bad = read_manifest(tmp_path / "copy.jsonl")
    assert bad == 0 and {e.id: e for e in again} == es


def test_zip_archive_members(tmp_path, monkeypatch):
    root, pk3 = tmp_path / "sys", "/usr/share/games/ufoai/base/0snd.pk3"
    put(root, "/tmp/shot.ogg", burst(1.0), fmt="OGG")
    (root / pk3.lstrip("/")).parent.mkdir(parents=True)
    with zipfile.ZipFile(root / pk3.lstrip("/"), "w") as z:
        z.write(root / "tmp/shot.ogg", "sound/weapons/shot.ogg")
        z.writestr("sound/weapons/broken.ogg", b"not audio" * 20)
        z.writestr("maps/readme.txt", "text")
    monkeypatch.setattr(sources, "dpkg_list", lambda pkg: [pk3])
    monkeypatch.setattr(sources, "installed_versions", lambda pkgs: {p: "1" for p in pkgs})
    card = build(recipe(sources=[{"package": "ufoai-sound", "lister": "ufoai", "options": {"kind": "sfx"}}]),
                 tmp_path / "corpora", system_root=root)
    [e], _ = read_manifest(tmp_path / "corpora" / "tiny" / "manifest.jsonl")
    assert e.id == f"ufoai-sound{pk3}/sound/weapons/shot.ogg#0" and e.labels["group"] == "sound/weapons"
    assert e.path == f"audio/ufoai-sound{pk3}/sound/weapons/shot.ogg.flac" and e.labels["kind"] == "sfx"
    assert card["sources"][0]["unreadable_examples"][0].startswith(f"{root}{pk3}:sound/weapons/broken.ogg: ")


def test_from_folder(tmp_path):
    folder = tmp_path / "mine"
    for rel, seed in [("dogs/a.wav", 1), ("dogs/b.flac", 2), ("cats/c.wav", 3), ("d.wav", 4)]:
        put(folder, rel, burst(0.8, seed=seed))
    put(folder, "notes.txt", "not audio")
    r = CliRunner().invoke(app, ["-q", "data", "build", "--from-folder", str(folder), "--label-from", "parent-dir",
                                 "--name", "pets", "--sample-rate", "8000", "--root", str(tmp_path / "c")])
    assert r.exit_code == 0 and r.stderr == "" and "pets: 4 clips" in r.stdout, r.output  # -q: no bars
    entries, _ = read_manifest(tmp_path / "c" / "pets" / "manifest.jsonl")
    labels = {e.id.rsplit("#", 1)[0]: e.labels["label"] for e in entries}
    assert labels == {"dogs/a.wav": "dogs", "dogs/b.flac": "dogs", "cats/c.wav": "cats", "d.wav": "mine"}
    assert all(e.split == split_for(e.id.rsplit("#", 1)[0]) and e.sample_rate == 8000 for e in entries)
    assert (tmp_path / "c" / "pets" / "audio" / "pets" / "dogs" / "a.wav.flac").is_file()


def test_missing_packages_non_root_prints_the_apt_command(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "installed_versions", lambda pkgs: {})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PackageError) as e:
        build(recipe(), tmp_path / "corpora", system_root=tree)
    assert "apt-get install -y --no-install-recommends asterisk-core-sounds-en-wav fake-music " \
           "fillets-ng-data-cs tuxpaint-stamps-default" in str(e.value)


def test_packages_installed_only_when_missing(tree, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(subprocess, "run",
                        lambda cmd, **k: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    assert corpus.ensure_packages(["fake-music", "fillets-ng-data-cs"], Console()) == {
        "fake-music": "1.0", "fillets-ng-data-cs": "1.0"}
    assert calls == []  # all present: nothing installed
    have = iter([{}, {"fake-music": "1"}])
    monkeypatch.setattr(sources, "installed_versions", lambda pkgs: next(have))
    corpus.ensure_packages(["fake-music"], Console())
    assert calls == [["apt-get", "install", "-y", "--no-install-recommends", "fake-music"]]


def test_cli_reports_missing_packages(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "installed_versions", lambda pkgs: {})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nsample_rate: 16000\nsources:\n  - {package: fake-music, lister: files, "
                    "options: {under: /usr/share/games/fakemusic/, kind: music}}\n")
    r = CliRunner().invoke(app, ["data", "build", str(path), "--root", str(tmp_path / "c")])
    assert r.exit_code != 0
    assert "apt-get install -y --no-install-recommends fake-music" in str(r.exception)


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'sample_rte'"):
        parse_recipe({"name": "x", "sample_rte": 1, "sources": []}, "r.yaml")
    with pytest.raises(RecipeError, match=r"sources\[0\]: unknown key 'licence'"):
        recipe(sources=[{"package": "p", "lister": "files", "licence": "MIT"}])
    with pytest.raises(RecipeError, match="unknown option 'undr'"):
        recipe(sources=[{"package": "p", "lister": "files", "options": {"undr": "/", "kind": "sfx"}}])
    with pytest.raises(RecipeError, match="needs option 'kind'"):
        recipe(sources=[{"package": "p", "lister": "files", "options": {"under": "/"}}])
    with pytest.raises(RecipeError, match="unknown lister 'nope'"):
        recipe(sources=[{"package": "p", "lister": "nope"}])


@pytest.mark.parametrize("name", ["speech16k", "music24k"])
def test_shipped_recipes_parse(name):
    r = load_recipe(corpus.find_recipe(name))
    assert r.name == name and r.sample_rate == {"speech16k": 16000, "music24k": 24000}[name]
    assert all(s.license for s in r.sources)


def test_licenses_from_copyright_files():
    dep5 = COPYRIGHT + "\nFiles: base/music/a.ogg base/music/b*.ogg\nCopyright: x\nLicense: CC-BY-3.0\n"
    assert sources.main_license(dep5) == "GPL-2+"
    assert sources.file_license(dep5, "base/music/b1.ogg") == "CC-BY-3.0"
    assert sources.file_license(dep5, "base/music/c.ogg") == "GPL-2+"
    free = "This package is free software; you can redistribute it under the terms of the GNU General\n" \
           "Public License as published by the FSF; either version 2 of the License, or (at your option)\n" \
           "any later version."
    assert sources.main_license(free) == "GPL-2+"


def test_trim_and_segments():
    x = burst(1.0, pad=0.5, sr=16000)[None]
    a, b = trim_bounds(x, 16000, -50.0)
    assert 0.46 * 16000 <= a <= 0.5 * 16000 and 1.5 * 16000 <= b <= 1.54 * 16000
    assert trim_bounds(np.zeros((1, 16000), np.float32), 16000, -50.0) == (0, 0)
    assert segments(16000 * 25, 16000, 10.0) == [(0, 133333), (133333, 266667), (266667, 400000)]
    assert segments(16000 * 10, 16000, 10.0) == [(0, 160000)]


def test_midi_source_with_a_fake_renderer(tmp_path, monkeypatch):
    from audiovae.data import midi

    def fake_render(out_dir, soundfont, soundfont_name, seconds_per_program, seed, synth="fluidsynth"):
        out_dir.mkdir(parents=True, exist_ok=True)
        sf.write(out_dir / "p000-piano-00.wav", burst(1.0), SR)
        return [{"path": str(out_dir / "p000-piano-00.wav"), "program": 0,
                 "instrument": "Acoustic Grand Piano", "family": "Piano", "soundfont": soundfont_name}]

    monkeypatch.setattr(midi, "render_instruments", fake_render)
    monkeypatch.setattr(sources, "dpkg_list", lambda pkg: ["/usr/share/sounds/sf2/Fake.sf2"])
    monkeypatch.setattr(sources, "installed_versions", lambda pkgs: {p: "1" for p in pkgs})
    put(tmp_path / "sys", "/usr/share/sounds/sf2/Fake.sf2", b"sf2")
    r = recipe(sources=[{"name": "gm", "package": "fake-sf", "lister": "midi", "license": "MIT",
                         "options": {"soundfont": "Fake.sf2", "seconds_per_program": 1}}])
    build(r, tmp_path / "corpora", system_root=tmp_path / "sys")
    [e], _ = read_manifest(tmp_path / "corpora" / "tiny" / "manifest.jsonl")
    assert e.id == "gm/p000-piano-00.wav#0" and e.labels["synthetic"] is True
    assert (e.labels["instrument"], e.labels["family"], e.labels["kind"]) == ("Acoustic Grand Piano", "piano",
                                                                              "music")


def test_new_generator_version_regenerates(monkeypatch):
    from audiovae.data import midi

    r = recipe(sources=[{"name": "gm", "package": "fake-sf", "lister": "midi",
                         "options": {"soundfont": "Fake.sf2", "seconds_per_program": 1}},
                        {"package": "fake-music", "lister": "files", "options": {"under": MUSIC, "kind": "music"}}])
    before = [corpus._fingerprint(s, r) for s in r.sources]
    monkeypatch.setattr(midi, "VERSION", midi.VERSION + 1)
    after = [corpus._fingerprint(s, r) for s in r.sources]
    assert before[0] != after[0] and before[1] == after[1]


@pytest.mark.slow
@pytest.mark.packages
@pytest.mark.skipif(not Path("/usr/share/games/fillets-ng/sound").is_dir(), reason="no fillets-ng-data-cs")
def test_real_fillets_subset(tmp_path, monkeypatch):
    real = sources.dpkg_list("fillets-ng-data-cs")
    subset = [p for p in real if "/sound/airplane/" in p or not p.endswith(".ogg")]
    monkeypatch.setattr(sources, "dpkg_list", lambda pkg: subset)
    r = recipe(sources=[{"package": "fillets-ng-data-cs", "lister": "fillets"}])
    card = build(r, tmp_path / "corpora", jobs=2)
    entries, _ = read_manifest(tmp_path / "corpora" / "tiny" / "manifest.jsonl")
    assert len(entries) >= 5 and card["sources"][0]["unreadable"] == 0
    assert {e.labels["speaker"] for e in entries} <= {"fillets-cs:m", "fillets-cs:v"}
    assert all(e.labels["language"] == "cs" and 0.5 <= e.duration <= 10.0 for e in entries)


def test_holdout_puts_whole_sources_and_speakers_in_the_unseen_split(tree, tmp_path):
    srcs = recipe().sources
    data = {"name": "tiny", "sample_rate": 16000, "sources": [
        {"package": "fillets-ng-data-cs", "lister": "fillets", "holdout": True},
        {"package": "tuxpaint-stamps-default", "lister": "tuxpaint", "holdout": "/math/"},
        {"package": "asterisk-core-sounds-en-wav", "lister": "asterisk"},
        {"package": "fake-music", "lister": "files", "options": {"under": MUSIC, "kind": "music"}},
    ]}
    assert len(srcs) == len(data["sources"])
    card = build(parse_recipe(data, "test"), tmp_path / "corpora", jobs=1, system_root=tree)
    entries, _ = read_manifest(tmp_path / "corpora" / "tiny" / "manifest.jsonl")
    split_of = {}
    for e in entries:  # every source file (and so every clip cut from it) is in exactly one split
        split_of.setdefault(e.id.rsplit("#", 1)[0], set()).add(e.split)
    assert all(len(s) == 1 for s in split_of.values())
    held = {e.id for e in entries if e.split == "unseen"}
    assert held and all(e.split == "unseen" for e in entries if e.source == "fillets-ng-data-cs")
    tux = [e for e in entries if e.source == "tuxpaint-stamps-default"]
    assert {e.split == "unseen" for e in tux} == {True, False}
    assert all((e.split == "unseen") == ("/math/" in e.id) for e in tux)
    assert not any(e.split == "unseen" for e in entries if e.source in ("asterisk-core-sounds-en-wav", "fake-music"))
    assert card["splits"]["unseen"]["clips"] == len(held)
    assert "(unseen: " in (tmp_path / "corpora" / "tiny" / "CARD.md").read_text()
    with pytest.raises(RecipeError, match="holdout is not a regex"):
        parse_recipe({**data, "sources": [{**data["sources"][0], "holdout": "("}]}, "test")
    with pytest.raises(RecipeError, match="holdout must be"):
        parse_recipe({**data, "sources": [{**data["sources"][0], "holdout": 3}]}, "test")


def test_archive_lister_labels_from_named_groups(tmp_path):
    root, wz = tmp_path / "sys", "/usr/share/games/game/base.zip"
    (root / wz.lstrip("/")).parent.mkdir(parents=True)
    with zipfile.ZipFile(root / wz.lstrip("/"), "w") as z:
        for m in ("audio/voice/greek/civ/civ_female_attack_1.ogg", "audio/voice/latin/civ/civ_male_yes_1.ogg",
                  "audio/voice/global/civ_dog_bark.ogg", "audio/music/theme.ogg", "audio/voice/readme.txt"):
            z.writestr(m, b"x")
    pkg = sources.Package("game-data", "game", root, tmp_path / "work", (wz, "/usr/share/doc/game-data/copyright"))
    items = sources.archive(pkg, "/usr/share/games/*/*.zip", kind="speech", labels={"corpus": "x"},
                            include=r"^audio/voice/(?P<language>greek|latin)/civ/civ_(?P<speaker>female|male)_",
                            names={"greek": "grc", "latin": "la"})
    assert [(i.member, i.labels["language"], i.labels["speaker"]) for i in items] == [
        ("audio/voice/greek/civ/civ_female_attack_1.ogg", "grc", "game:grc:female"),
        ("audio/voice/latin/civ/civ_male_yes_1.ogg", "la", "game:la:male")]
    assert items[0].key == f"game{wz}/audio/voice/greek/civ/civ_female_attack_1.ogg"
    assert items[0].labels["kind"] == "speech" and items[0].labels["corpus"] == "x"


def _mo(path: Path, messages: dict[str, str]) -> None:
    """A little-endian gettext catalogue holding ``messages`` (msgid -> msgstr) after the header entry."""
    entries = sorted(({"": "Content-Type: text/plain; charset=UTF-8\n"} | messages).items())
    n, start, table, data = len(entries), 28 + 16 * len(entries), [], b""
    for blob in [k.encode() for k, _ in entries] + [v.encode() for _, v in entries]:
        table.append(struct.pack("<2I", len(blob), start + len(data)))
        data += blob + b"\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0) + b"".join(table) + data)


def test_gettext_texts_keep_translated_sentences_in_the_languages_script(tmp_path):
    _mo(tmp_path / "ru/LC_MESSAGES/app.mo", {"Open the file now": "Открыть этот файл сейчас",
                                              "Save %s": "Сохранить %s", "A GdkPixbuf to show": "A GdkPixbuf to show",
                                              "Use the XYZ protocol here": "Использовать протокол XYZ здесь",
                                              "Quit": "Выход"})
    _mo(tmp_path / "ru/LC_MESSAGES/warzone2100.mo", {"Enemy base sighted now": "Замечена вражеская база рядом"})
    _mo(tmp_path / "en@shaw/LC_MESSAGES/app.mo", {"Open the file now": "𐑴𐑐𐑩𐑯 𐑞 𐑓𐑲𐑤 𐑯𐑬"})
    assert synth.gettext_texts("ru", tmp_path) == ["Открыть этот файл сейчас"]  # no placeholder, copy, Latin
    assert synth.gettext_texts("en", tmp_path) == []  # a script variant is not the language
    assert load_recipe(corpus.find_recipe("speech16k-synth")).sources[0].lister == "espeak_voices"


_FAKE_FESTIVAL = '''#!{python}
import pathlib, re, sys, wave
script = pathlib.Path(sys.argv[-1]).read_bytes()
(pathlib.Path({log!r}) / pathlib.Path.cwd().name).write_bytes(script)
for text, name in re.findall(rb'Text "([^"]*)"\\)\\) "([0-9a-f]+\\.wav\\.part)"', script):
    if b"unreadable" in text:  # festival fails on this sentence
        continue
    with wave.open(name.decode(), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(bytes(3200))
'''


def test_festival_voices_read_what_each_voices_encoding_spells_and_keep_their_wavs(tmp_path, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(), log.mkdir()
    (bin_dir / "festival").write_text(_FAKE_FESTIVAL.format(python=sys.executable, log=str(log)))
    (bin_dir / "festival").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    texts = {"cs": ["Příliš žluťoučký kůň úpěl", "Говорить по-русски тут"],
             "en": ['Say "hi" to me now', "Press the ‘XYZ’ key now", "An unreadable sentence here"]}
    monkeypatch.setattr(synth, "gettext_texts", texts.get)
    pkg = sources.Package("festival", "festival", tmp_path, tmp_path / "work")
    voices = {"cs": ["czech_dita"], "en": ["kal_diphone", "ked_diphone"]}
    items = synth.festival_voices(pkg, voices, per_language=5)
    # Cyrillic is not ISO-8859-2, curly quotes are not Latin-1, festival failed on the last one: all left out
    assert sorted(i.labels["text"] for i in items) == ["Příliš žluťoučký kůň úpěl", "Say  hi  to me now"]
    assert all(i.labels["synthetic"] and i.labels["speaker"].startswith("festival:") for i in items)
    assert all(Path(i.file).is_file() and not Path(i.file).with_suffix(".wav.part").exists() for i in items)
    assert "Příliš".encode("iso-8859-2") in (log / "cs").read_bytes()
    assert not list((tmp_path / "work").rglob("*.scm"))
    (bin_dir / "festival").write_text("#!/bin/sh\nexit 1\n")  # kept WAVs: festival is not run again
    assert synth.festival_voices(pkg, voices, per_language=5) == items
    with pytest.raises(sources.SourceError, match="festival voice kal_diphone"):
        synth.festival_voices(pkg, {"en": ["kal_diphone"]}, per_language=5, seed=1)  # a festival that fails
    with pytest.raises(sources.SourceError, match="names like"):
        synth.festival_voices(pkg, {"en": ['x")(system "rm']})

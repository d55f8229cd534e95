"""The generated MIDI instrument corpus: labels, determinism, ranges, errors, and one real render."""

import json
import shutil
from pathlib import Path

import pytest

from audiovae.data import midi
from audiovae.errors import AudioVAEError

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
FREEPATS = Path("/etc/timidity/freepats.cfg")


def _notes(m):
    return [msg for msg in m.tracks[0] if msg.type == "note_on"]


def test_labels_cover_all_programs():
    assert len(midi.GM_NAMES) == 128 and len(set(midi.GM_NAMES)) == 128
    assert len(midi.FAMILIES) == 16
    assert midi.instrument_of(0) == "Acoustic Grand Piano" and midi.instrument_of(127) == "Gunshot"
    assert midi.family_of(0) == "Piano" and midi.family_of(40) == "Strings"
    assert midi.family_of(127) == "Sound Effects"
    assert {midi.family_of(p) for p in range(128)} == set(midi.FAMILIES)
    assert all(sum(midi.family_of(p) == f for p in range(128)) == 8 for f in midi.FAMILIES)
    assert midi.family_of(midi.DRUMS) == "Drums"


def test_generation_is_deterministic():
    for program in (0, 33, 73, midi.DRUMS):
        a = midi.midi_bytes(midi.generate_clip(program, seed=3, index=1, seconds=5.0))
        assert a == midi.midi_bytes(midi.generate_clip(program, seed=3, index=1, seconds=5.0))
        assert a != midi.midi_bytes(midi.generate_clip(program, seed=4, index=1, seconds=5.0))
        assert a != midi.midi_bytes(midi.generate_clip(program, seed=3, index=2, seconds=5.0))


@pytest.mark.parametrize("program", midi.PROGRAMS)
def test_every_program_writes_notes_in_range(program):
    lo, hi = midi.pitch_range(program)
    channel = 9 if program == midi.DRUMS else 0
    for index in range(3):
        m = midi.generate_clip(program, seed=0, index=index, seconds=5.0)
        notes = _notes(m)
        assert len(notes) >= 3
        assert all(lo <= n.note <= hi and 1 <= n.velocity <= 127 and n.channel == channel for n in notes)
        assert 2.0 < m.length < 9.0
        progs = [msg.program for msg in m.tracks[0] if msg.type == "program_change"]
        assert progs == [max(program, 0)]


def test_missing_soundfont(tmp_path, monkeypatch):
    monkeypatch.setattr(midi.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    with pytest.raises(AudioVAEError, match="soundfont not found"):
        midi.render_instruments(tmp_path / "out", tmp_path / "nope.sf2", "x", 5, 0)


def test_not_a_soundfont(tmp_path, monkeypatch):
    monkeypatch.setattr(midi.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"garbage, not RIFF")
    with pytest.raises(AudioVAEError, match="not a SoundFont 2 file"):
        midi.render_instruments(tmp_path / "out", bad, "x", 5, 0)


def test_missing_fluidsynth(tmp_path, monkeypatch):
    monkeypatch.setattr(midi.shutil, "which", lambda name: None)
    sf2 = tmp_path / "a.sf2"
    sf2.write_bytes(b"x")
    with pytest.raises(AudioVAEError, match="apt-get install fluidsynth"):
        midi.render_instruments(tmp_path / "out", sf2, "x", 5, 0)


def test_timidity_programs(tmp_path):
    cfg = tmp_path / "pats.cfg"
    cfg.write_text("dir /somewhere\n# a comment\ndrumset 0\n 35\tDrum/035_Kick.pat amp=100\n\nbank 0\n"
                   " 0\tTone/000_Piano.pat\n 40 Tone/040_Violin.pat # strings\n 200 Tone/bad.pat\n"
                   "bank 1\n 3 Tone/003.pat\n")
    assert midi.timidity_programs(cfg) == [0, 40, midi.DRUMS]
    cfg.write_text("bank 0\n 73 Tone/073_Flute.pat\n")
    assert midi.timidity_programs(cfg) == [73]
    cfg.write_text("dir /x\nbank 1\n 3 a.pat\n")
    with pytest.raises(AudioVAEError, match="no program in bank 0"):
        midi.timidity_programs(cfg)
    cfg.write_bytes(b"#" * (midi.MAX_CONFIG_BYTES + 1))
    with pytest.raises(AudioVAEError, match="timidity config of more than"):
        midi.timidity_programs(cfg)


def test_missing_timidity_or_config(tmp_path, monkeypatch):
    monkeypatch.setattr(midi.shutil, "which", lambda name: None)
    with pytest.raises(AudioVAEError, match="apt-get install timidity"):
        midi.render_instruments(tmp_path / "out", FREEPATS, "x", 5, 0, synth="timidity")
    monkeypatch.setattr(midi.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(AudioVAEError, match="timidity config not found"):
        midi.render_instruments(tmp_path / "out", tmp_path / "nope.cfg", "x", 5, 0, synth="timidity")
    with pytest.raises(AudioVAEError, match="not one of fluidsynth, timidity"):
        midi.render_instruments(tmp_path / "out", FREEPATS, "x", 5, 0, synth="sox")


@pytest.mark.packages
@pytest.mark.skipif(shutil.which("timidity") is None or not FREEPATS.exists(), reason="needs timidity and freepats")
def test_render_with_timidity(tmp_path):
    import soundfile as sf

    programs = midi.timidity_programs(FREEPATS)
    assert 0 in programs and 3 not in programs and programs[-1] == midi.DRUMS  # FreePats has no honky-tonk piano
    clips = midi.render_instruments(tmp_path / "fp", FREEPATS, "freepats", 1.5, seed=0, programs=[40, midi.DRUMS],
                                    synth="timidity")
    assert [(c["program"], c["family"], c["soundfont"]) for c in clips] == [(40, "Strings", "freepats"),
                                                                             (-1, "Drums", "freepats")]
    for c in clips:
        x, sr = sf.read(c["path"])
        assert sr == midi.SAMPLE_RATE and 0.5 < abs(x).max() <= 0.9
    assert json.loads((tmp_path / "fp" / "index.json").read_text())["params"]["synth"] == "timidity"


@pytest.mark.packages
@pytest.mark.skipif(shutil.which("fluidsynth") is None or not TIMGM.exists(),
                    reason="needs fluidsynth and timgm6mb-soundfont")
def test_render_two_tiny_clips(tmp_path):
    import soundfile as sf

    out = tmp_path / "tim"
    clips = midi.render_instruments(out, TIMGM, "timgm6mb", 1.5, seed=0, programs=[0, midi.DRUMS])
    assert [(c["program"], c["family"], c["instrument"]) for c in clips] == [
        (0, "Piano", "Acoustic Grand Piano"), (-1, "Drums", "Drum Kit")]
    for c in clips:
        assert c["soundfont"] == "timgm6mb"
        i = sf.info(c["path"])
        assert i.samplerate == 44100 and i.channels == 2 and 0.5 < i.duration < 1.5 * 1.2 + midi.TAIL_S + 0.1
        x, _ = sf.read(c["path"])
        assert 0.5 < abs(x).max() <= 0.9
    mtimes = [Path(c["path"]).stat().st_mtime_ns for c in clips]
    assert midi.render_instruments(out, TIMGM, "timgm6mb", 1.5, seed=0, programs=[0, midi.DRUMS]) == clips
    assert [Path(c["path"]).stat().st_mtime_ns for c in clips] == mtimes  # nothing re-rendered
    assert json.loads((out / "index.json").read_text())["params"]["seed"] == 0
    assert not list(out.glob(".*"))  # no temp files left
    with pytest.raises(AudioVAEError, match="other settings"):
        midi.render_instruments(out, TIMGM, "timgm6mb", 1.5, seed=1, programs=[0])

"""A generated, labeled instrument corpus: MIDI we write ourselves, rendered by fluidsynth (a SoundFont 2) or
timidity (a timidity config, e.g. FreePats' GUS patches).

For each of the 128 General MIDI programs (and the GM drum kit on channel 10, ``program=-1``) a
seeded RNG writes short clips (scales, arpeggios, chords, melodies, drum grooves; random key, mode,
tempo, dynamics) in the instrument's pitch range. The synthesizer renders them *dry* (reverb and chorus
off); each render is trimmed to at most ``TAIL_S`` of release after the last note, peak-normalised
to -1 dBFS and written atomically as 16-bit stereo WAV at 44.1 kHz. ``index.json`` in the output
folder makes a repeated call return at once; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from audiovae.audio import save
from audiovae.errors import AudioVAEError
from audiovae.files import replaced, write_text

SAMPLE_RATE = 44100
GAIN = 1.0  # float render, peak-normalised afterwards, so the gain only has to avoid silence
TAIL_S = 1.5  # longest release kept after the last note-off
TPB = 480  # MIDI ticks per beat
VERSION = 3  # bump when generation changes: an out_dir rendered by another version is refused
DRUMS = -1
SYNTHS = ("fluidsynth", "timidity")
MAX_CONFIG_BYTES = 1 << 20

_GM = """\
Piano: Acoustic Grand Piano; Bright Acoustic Piano; Electric Grand Piano; Honky-tonk Piano; Electric Piano 1; Electric Piano 2; Harpsichord; Clavinet
Chromatic Percussion: Celesta; Glockenspiel; Music Box; Vibraphone; Marimba; Xylophone; Tubular Bells; Dulcimer
Organ: Drawbar Organ; Percussive Organ; Rock Organ; Church Organ; Reed Organ; Accordion; Harmonica; Tango Accordion
Guitar: Acoustic Guitar (nylon); Acoustic Guitar (steel); Electric Guitar (jazz); Electric Guitar (clean); Electric Guitar (muted); Overdriven Guitar; Distortion Guitar; Guitar Harmonics
Bass: Acoustic Bass; Electric Bass (finger); Electric Bass (pick); Fretless Bass; Slap Bass 1; Slap Bass 2; Synth Bass 1; Synth Bass 2
Strings: Violin; Viola; Cello; Contrabass; Tremolo Strings; Pizzicato Strings; Orchestral Harp; Timpani
Ensemble: String Ensemble 1; String Ensemble 2; Synth Strings 1; Synth Strings 2; Choir Aahs; Voice Oohs; Synth Voice; Orchestra Hit
Brass: Trumpet; Trombone; Tuba; Muted Trumpet; French Horn; Brass Section; Synth Brass 1; Synth Brass 2
Reed: Soprano Sax; Alto Sax; Tenor Sax; Baritone Sax; Oboe; English Horn; Bassoon; Clarinet
Pipe: Piccolo; Flute; Recorder; Pan Flute; Blown Bottle; Shakuhachi; Whistle; Ocarina
Synth Lead: Lead 1 (square); Lead 2 (sawtooth); Lead 3 (calliope); Lead 4 (chiff); Lead 5 (charang); Lead 6 (voice); Lead 7 (fifths); Lead 8 (bass + lead)
Synth Pad: Pad 1 (new age); Pad 2 (warm); Pad 3 (polysynth); Pad 4 (choir); Pad 5 (bowed); Pad 6 (metallic); Pad 7 (halo); Pad 8 (sweep)
Synth Effects: FX 1 (rain); FX 2 (soundtrack); FX 3 (crystal); FX 4 (atmosphere); FX 5 (brightness); FX 6 (goblins); FX 7 (echoes); FX 8 (sci-fi)
Ethnic: Sitar; Banjo; Shamisen; Koto; Kalimba; Bagpipe; Fiddle; Shanai
Percussive: Tinkle Bell; Agogo; Steel Drums; Woodblock; Taiko Drum; Melodic Tom; Synth Drum; Reverse Cymbal
Sound Effects: Guitar Fret Noise; Breath Noise; Seashore; Bird Tweet; Telephone Ring; Helicopter; Applause; Gunshot
"""  # noqa: E501
FAMILIES = [line.split(": ")[0] for line in _GM.splitlines()]
GM_NAMES = [name for line in _GM.splitlines() for name in line.split(": ")[1].split("; ")]
PROGRAMS = list(range(128)) + [DRUMS]

_FAMILY_RANGE = {"Piano": (36, 96), "Chromatic Percussion": (60, 96), "Organ": (36, 96), "Guitar": (40, 84),
                 "Bass": (28, 55), "Strings": (36, 84), "Ensemble": (36, 84), "Brass": (40, 77),
                 "Reed": (50, 81), "Pipe": (60, 96), "Synth Lead": (48, 84), "Synth Pad": (36, 84),
                 "Synth Effects": (36, 84), "Ethnic": (48, 84), "Percussive": (48, 72),
                 "Sound Effects": (48, 72)}
_RANGE = {6: (41, 89), 8: (60, 108), 9: (79, 108), 12: (45, 96), 13: (65, 108), 14: (60, 77), 22: (60, 84),
          40: (55, 96), 41: (48, 84), 42: (36, 72), 43: (28, 55), 46: (24, 96), 47: (40, 55), 52: (48, 79),
          53: (48, 79), 54: (48, 79), 56: (55, 82), 57: (40, 72), 58: (28, 58), 59: (55, 82), 60: (41, 77),
          64: (56, 87), 65: (49, 81), 66: (44, 76), 67: (36, 69), 68: (58, 91), 69: (52, 81), 70: (34, 72),
          71: (50, 91), 72: (74, 108), 78: (60, 79), 87: (36, 72), 108: (60, 84), 109: (55, 77), 110: (55, 89),
          112: (72, 96), 116: (36, 55), 117: (41, 60)}
_SCALES = [(0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 3, 5, 7, 9, 10), (0, 2, 4, 7, 9),
           (0, 3, 5, 6, 7, 10), (0, 2, 4, 5, 7, 9, 10)]  # major, minor, dorian, pentatonic, blues, mixolydian
_MONO = {"Bass", "Brass", "Reed", "Pipe", "Synth Lead"}  # no chords for these
_SUSTAINED = {"Synth Pad", "Synth Effects"}  # also long held chords, slower (one-shot effects would go silent)
_TOMS, _LATIN = (41, 43, 45, 47, 48, 50), (54, 56, 60, 61, 62, 63, 64, 69, 70, 75, 76, 77)


def family_of(program: int) -> str:
    return "Drums" if program == DRUMS else FAMILIES[program // 8]


def instrument_of(program: int) -> str:
    return "Drum Kit" if program == DRUMS else GM_NAMES[program]


def pitch_range(program: int) -> tuple[int, int]:
    """Lowest and highest MIDI note the generator writes for ``program`` (GM percussion map for drums)."""
    return (35, 81) if program == DRUMS else _RANGE.get(program, _FAMILY_RANGE[family_of(program)])


# Generators write (start_beat, length_beats, pitch) over the in-range notes of one random scale.
def _scale(rng, ps, beats):
    d = float(rng.choice([0.25, 0.5, 0.5, 1.0]))
    span = int(rng.integers(min(8, len(ps)), min(16, len(ps)) + 1))
    a, i, step, t, notes = int(rng.integers(len(ps) - span + 1)), 0, 1, 0.0, []
    if rng.random() < 0.5:
        i, step = span - 1, -1
    while t < beats:
        notes.append((t, 0.9 * d, ps[a + i]))
        step = -step if not 0 <= i + step < span else step
        i, t = i + step, t + d
    return notes


def _progression(rng, n):
    start = int(rng.integers(0, max(1, n // 2 - 4)))
    return [min(start + off, n - 5) for off in [0, *rng.choice([1, 2, 3, 4, 5], 3)]]


def _arpeggio(rng, ps, beats):
    d, per_chord = float(rng.choice([0.25, 1 / 3, 0.5])), float(rng.choice([2, 4]))
    prog = _progression(rng, len(ps))
    shape, t, k, notes = int(rng.integers(3)), 0.0, 0, []
    while t < beats:
        base = prog[int(t // per_chord) % len(prog)]
        tones = [ps[base + j] for j in (0, 2, 4, 7, 9, 11) if base + j < len(ps)]
        tones = tones if shape == 0 else tones[::-1] if shape == 1 else tones + tones[-2:0:-1]
        notes.append((t, d * 1.5, tones[k % len(tones)]))
        t, k = t + d, k + 1
    return notes


def _chords(rng, ps, beats, held=False):
    dur = float(rng.choice([4, 8] if held else [1, 2, 2, 4]))
    strum, prog, t, notes = float(rng.choice([0.0, 0.0, 0.03, 0.06])), _progression(rng, len(ps)), 0.0, []
    while t < beats:
        base = prog[int(t // dur) % len(prog)]
        chord = [ps[base + j] for j in (-7, 0, 2, 4) if 0 <= base + j < len(ps)]  # triad, bass an octave down
        for j, p in enumerate(sorted(set(chord))):
            notes.append((t + j * strum, 0.95 * min(dur, beats - t) - j * strum, p))
        t += dur
    return notes


def _melody(rng, ps, beats):
    i, t, legato, notes = len(ps) // 2 + int(rng.integers(-3, 4)), 0.0, rng.uniform(0.5, 1.0), []
    while t < beats:
        d = float(rng.choice([0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 1.5, 2.0]))
        if rng.random() > 0.1:  # else a rest
            i = int(np.clip(i + rng.choice([-4, -2, -1, -1, 0, 1, 1, 2, 3]), 0, len(ps) - 1))
            notes.append((t, legato * d, ps[i]))
        t += d
    return notes


def _drums(rng, beats):
    sub = int(rng.choice([2, 4]))
    bar, latin, hat = 4 * sub, rng.random() < 0.3, 51 if rng.random() < 0.3 else 42
    kick = [bool(k) for k in rng.random(bar) < 0.2]
    kick[0], kick[2 * sub] = True, rng.random() < 0.8
    notes = []
    for s in range(int(beats * sub)):
        t, b, n = s / sub, s % bar, s // bar
        if n % 4 == 3 and b >= 3 * sub:  # a tom fill on the last beat of every fourth bar
            notes.append((t, 0.2, int(rng.choice(_TOMS))))
            continue
        hits = [36] * kick[b] + [38] * (b % (2 * sub) == sub or rng.random() < 0.05)
        hits += [49] * (b == 0 and n % 4 == 0 and rng.random() < 0.5)
        hits += [int(rng.choice(_LATIN))] * (latin and rng.random() < 0.5)
        hits += [46 if b % sub and rng.random() < 0.1 else hat] * (b % max(1, sub // 2) == 0)
        notes += [(t, 0.2, p) for p in hits]
    return notes


def generate_clip(program: int, seed: int, index: int, seconds: float) -> mido.MidiFile:
    """Clip ``index`` of ``program``: about ``seconds`` of notes, fully determined by the arguments."""
    rng = np.random.default_rng([seed, program + 1, index])
    fam = family_of(program)
    bpm = float(rng.uniform(50, 90) if fam in _SUSTAINED else rng.uniform(70, 160))
    beats = max(0.5, seconds * rng.uniform(0.8, 1.2)) * bpm / 60
    if program == DRUMS:
        notes = _drums(rng, beats)
    else:
        lo, hi = pitch_range(program)
        root, steps = int(rng.integers(12)), _SCALES[int(rng.integers(len(_SCALES)))]
        ps = [p for p in range(lo, hi + 1) if (p - root) % 12 in steps]
        kinds = ["scale", "arpeggio", "melody", "melody"] + ["chords"] * (fam not in _MONO)
        kinds += ["held"] * 3 * (fam in _SUSTAINED)
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind in ("chords", "held"):
            notes = _chords(rng, ps, beats, held=kind == "held")
        else:
            notes = {"scale": _scale, "arpeggio": _arpeggio, "melody": _melody}[kind](rng, ps, beats)
    level, slope = rng.uniform(45, 110), rng.uniform(-25, 25)  # dynamics: a level and a crescendo/decrescendo
    events = []
    for t, d, p in notes:
        v = level + slope * t / beats + 10 * (t % 1 == 0) + rng.normal(0, 6)
        on = round(t * TPB)
        events += [(on, 1, p, int(np.clip(v, 1, 127))), (max(on + 1, round((t + d) * TPB)), 0, p, 0)]
    channel = 9 if program == DRUMS else 0
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
                            mido.Message("program_change", channel=channel, program=max(program, 0))])
    now = 0
    for tick, on, p, v in sorted(events):  # at equal ticks, note-offs first
        track.append(mido.Message("note_on" if on else "note_off", channel=channel, note=p, velocity=v,
                                  time=tick - now))
        now = tick
    midi = mido.MidiFile(type=0, ticks_per_beat=TPB)
    midi.tracks.append(track)
    return midi


def midi_bytes(midi: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _check_tools(bank: Path, synth: str = "fluidsynth") -> str:
    """The synthesizer's executable, after checking that ``bank`` (its soundfont or config) is one it reads."""
    if synth not in SYNTHS:
        raise AudioVAEError(f"synthesizer '{synth}' is not one of {', '.join(SYNTHS)}")
    exe = shutil.which(synth)
    if exe is None:
        raise AudioVAEError(f"{synth} not found: install it (apt-get install {synth})")
    if not bank.is_file():
        what, pkg = ("soundfont", "fluid-soundfont-gm or timgm6mb-soundfont") if synth == "fluidsynth" else \
            ("timidity config", "freepats")
        raise AudioVAEError(f"{bank}: {what} not found (apt-get install {pkg})")
    if synth == "fluidsynth":
        with open(bank, "rb") as f:
            head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"sfbk":  # fluidsynth would fall back to its default font
            raise AudioVAEError(f"{bank}: not a SoundFont 2 file")
    return exe


def timidity_programs(config: Path) -> list[int]:
    """GM programs with a patch in bank 0 of a timidity config, and ``DRUMS`` when drumset 0 maps any note:
    timidity plays a missing program with another instrument, so only these are rendered."""
    if config.stat().st_size > MAX_CONFIG_BYTES:
        raise AudioVAEError(f"{config}: a timidity config of more than {MAX_CONFIG_BYTES} bytes")
    programs, section = set(), None
    for line in config.read_text(errors="replace").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] in ("bank", "drumset"):
            section = (words[0], words[1])
        elif len(words) >= 2 and words[0].isdigit() and 0 <= int(words[0]) < 128:
            if section == ("bank", "0"):
                programs.add(int(words[0]))
            elif section == ("drumset", "0"):
                programs.add(DRUMS)
    if not programs:
        raise AudioVAEError(f"{config}: no program in bank 0 or drumset 0")
    return sorted(p for p in programs if p >= 0) + ([DRUMS] if DRUMS in programs else [])


def _command(exe: str, bank: Path, midi: Path, wav: str) -> list[str]:
    if Path(exe).name == "timidity":
        return [exe, "-c", str(bank), "-Ow", "-s", str(SAMPLE_RATE), "-EFreverb=0", "-EFchorus=0", "-o", wav,
                str(midi)]
    return [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(GAIN), "-r", str(SAMPLE_RATE), "-O", "float", "-T",
            "wav", "-F", wav, str(bank), str(midi)]


def _render(exe: str, bank: Path, midi: Path, wav: Path, end_s: float) -> bool:
    """Render one MIDI file to ``wav``; False (and no file) when the synthesizer gave silence."""
    fd, tmp = tempfile.mkstemp(prefix=f".{wav.stem}.", suffix=".f32.wav", dir=wav.parent)
    os.close(fd)
    try:
        r = subprocess.run(_command(exe, bank, midi, tmp), capture_output=True, text=True)
        errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
        if r.returncode != 0 or errors or os.path.getsize(tmp) == 0:  # a clean render prints no error
            msg = (errors or r.stderr.strip().splitlines() or ["no output"])[0]
            raise AudioVAEError(f"{midi}: {Path(exe).name} failed ({msg})")
        x, sr = sf.read(tmp, dtype="float32", always_2d=True)
    finally:
        Path(tmp).unlink(missing_ok=True)
    env = np.abs(x).max(axis=1)
    peak = float(env.max(initial=0.0))
    if peak < 1e-5:
        return False
    last = int(np.nonzero(env > peak * 1e-3)[0][-1])  # -60 dB below the peak
    end = min(len(env), last + int(0.05 * sr), int((end_s + TAIL_S) * sr))
    y = x[:end].T * (10 ** (-1 / 20) / peak)
    fade = min(end, int(0.02 * sr))
    y[:, end - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    save(wav, y, sr)
    return True


def render_instruments(out_dir: Path, soundfont: Path, soundfont_name: str, seconds_per_program: float,
                       seed: int, programs: list[int] | None = None, workers: int = 2,
                       synth: str = "fluidsynth") -> list[dict]:
    """Render about ``seconds_per_program`` of clips per GM program (and drums) into ``out_dir`` with ``synth``
    ("fluidsynth": ``soundfont`` is a SoundFont 2; "timidity": a timidity config, whose programs are the default).

    Returns one dict per WAV: path, program (-1 for drums), instrument, family, soundfont.
    Files already rendered are kept; ``out_dir`` rendered with other settings is refused.
    """
    out_dir, soundfont = Path(out_dir).resolve(), Path(soundfont)
    exe = _check_tools(soundfont, synth)
    params = {"version": VERSION, "soundfont": soundfont_name, "seed": seed,
              "seconds_per_program": seconds_per_program}
    if synth != "fluidsynth":  # fluidsynth folders rendered before the option keep their index
        params["synth"] = synth
    if programs is None:
        programs = timidity_programs(soundfont) if synth == "timidity" else PROGRAMS
    index_path, old = out_dir / "index.json", {}
    if index_path.exists():
        old = json.loads(index_path.read_text())
        if old.get("params") != params:
            raise AudioVAEError(f"{out_dir}: holds renders with other settings ({old.get('params')}); "
                                "use another folder or delete it")
    silent = set(old.get("silent", []))
    (out_dir / "midi").mkdir(parents=True, exist_ok=True)
    _write_index(index_path, params, old.get("clips", []), silent)  # claim the folder before rendering
    n = max(1, round(seconds_per_program / 6.0))  # clips of about 6 s with their release tails
    clips, todo = [], []
    for program in programs:
        name = f"p{program:03d}-{_slug(instrument_of(program))}" if program >= 0 else "drums"
        for k in range(n):
            rel = f"{name}-{k:02d}.wav"
            clip = {"path": rel, "program": program, "instrument": instrument_of(program),
                    "family": family_of(program), "soundfont": soundfont_name}
            clips.append(clip)
            if rel not in silent and not (out_dir / rel).exists():
                todo.append((clip, program, k))
    if todo:
        _render_all(exe, soundfont, out_dir, todo, seed, seconds_per_program / n - 0.5, workers, silent)
    clips = [c for c in clips if c["path"] not in silent]
    _write_index(index_path, params, clips, silent)
    return [{**c, "path": str(out_dir / c["path"])} for c in clips]


def _write_index(path: Path, params: dict, clips: list[dict], silent: set[str]) -> None:
    write_text(path, json.dumps({"params": params, "clips": clips, "silent": sorted(silent)}, indent=1))


def _render_all(exe, soundfont, out_dir, todo, seed, seconds, workers, silent) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    def one(clip, program, k):
        midi = generate_clip(program, seed, k, seconds)
        mid = out_dir / "midi" / Path(clip["path"]).with_suffix(".mid").name
        with replaced(mid) as tmp:
            tmp.write_bytes(midi_bytes(midi))
        return clip["path"], _render(exe, soundfont, mid, out_dir / clip["path"], midi.length)

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task(f"{Path(exe).name} {soundfont.name}", total=len(todo))
        try:
            for fut in as_completed([pool.submit(one, *job) for job in todo]):
                rel, ok = fut.result()
                if not ok:
                    silent.add(rel)
                bar.advance(task)
        except BaseException:  # a failed render or Ctrl-C: drop the queued jobs, keep what is written
            pool.shutdown(cancel_futures=True)
            raise

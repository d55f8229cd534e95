"""The unseen full-band speech folders of the extension's bench, rebuilt from the installed game data packages.

runs/eval/speech44k: 32 voices of 2 s or more at 44.1 kHz, FreedroidRPG robot voice samples (freedroidrpg-data,
data/sound/effects/bot_sounds/voice_samples/N.ogg, N ascending) and 0 A.D. Napatan (Meroitic) unit voices (0ad-data,
public.zip members audio/voice/napatan/**.ogg, by name) interleaved, 16 of each, copied byte for byte.
runs/eval/speech48k: the same clips resampled to 48 kHz with soxr "VHQ", 24-bit FLAC (no 48 kHz recordings exist
in our unseen sources; the issue's speech floor is measured from 48 kHz inputs).

    .venv/bin/python experiments/bandwidth-extension/speech_folders.py [--out runs/eval] [--count 16]

``bench codec --folder runs/eval/speech48k --clips 16`` reads the first 16 (8 of each). Writes only under --out,
which must hold no git-tracked file.
"""

import argparse
import io
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

FREEDROID = [Path("/usr/share/freedroidrpg/data/sound/effects/bot_sounds/voice_samples"),
             Path("/usr/share/games/freedroidrpg/data/sound/effects/bot_sounds/voice_samples")]
ZERO_AD = Path("/usr/share/games/0ad/mods/public/public.zip")
NAPATAN = "audio/voice/napatan/"
MIN_SECONDS, RATE, TARGET = 2.0, 44100, 48000


def long_enough(data: bytes) -> bool:
    info = sf.info(io.BytesIO(data))
    return info.samplerate == RATE and info.frames / info.samplerate >= MIN_SECONDS


def sources(count: int) -> list[tuple[str, bytes]]:
    """(name, Ogg bytes) of ``count`` FreedroidRPG and ``count`` Napatan voices, interleaved."""
    folder = next((p for p in FREEDROID if p.is_dir()), None)
    if folder is None or not ZERO_AD.is_file():
        raise SystemExit("needs the freedroidrpg-data and 0ad-data packages installed")
    robots = []
    for path in sorted(folder.glob("*.ogg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 1 << 30):
        if len(robots) < count and long_enough(data := path.read_bytes()):
            robots.append((f"freedroidrpg-{path.stem}", data))
    voices = []
    with zipfile.ZipFile(ZERO_AD) as z:
        for member in sorted(n for n in z.namelist() if n.startswith(NAPATAN) and n.endswith(".ogg")):
            if len(voices) < count and long_enough(data := z.read(member)):
                voices.append(("0ad-napatan-" + member[len(NAPATAN) : -4].replace("/", "-"), data))
    if len(robots) < count or len(voices) < count:
        raise SystemExit(f"only {len(robots)} FreedroidRPG and {len(voices)} Napatan voices of {MIN_SECONDS:g} s")
    return [clip for pair in zip(robots, voices, strict=True) for clip in pair]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/eval"))
    p.add_argument("--count", type=int, default=16, help="voices of each source")
    args = p.parse_args()
    tracked = subprocess.run(["git", "ls-files", "--", str(args.out)], capture_output=True, text=True).stdout
    if tracked.strip():
        raise SystemExit(f"{args.out} holds git-tracked files: choose another --out")
    for sub in ("speech44k", "speech48k"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, data) in enumerate(sources(args.count)):
        (args.out / "speech44k" / f"{i:02d}-{name}.ogg").write_bytes(data)
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        y = soxr.resample(x, sr, TARGET, quality="VHQ")
        sf.write(args.out / "speech48k" / f"{i:02d}-{name}.flac", np.clip(y, -1, 1), TARGET, subtype="PCM_24")
    print(f"{2 * args.count} clips in {args.out / 'speech44k'} and {args.out / 'speech48k'}")


if __name__ == "__main__":
    main()

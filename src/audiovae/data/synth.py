"""Synthetic speech sources (DATA.md: marked synthetic, never the only source of a class): espeak-ng's formant
voices and Festival's voices built from recordings, reading translated user-interface messages of the installed
packages (``gettext_texts``), a text domain that no speech source of the corpora shares."""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import struct
import subprocess
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

from audiovae.data.sources import Item, Package, SourceError, lang_code, tuxpaint_texts
from audiovae.files import replaced


def _executable(name: str, install: str) -> str:
    """The path of the synthesizer ``name``, or a SourceError saying what to install."""
    exe = shutil.which(name)
    if exe is None:
        raise SourceError(f"{name} not found: apt-get install {install}")
    return exe


def _wav(pkg: Package, lang: str, *settings) -> Path:
    """Where a synthesized sentence is kept: named by a hash of its voice settings and text."""
    return pkg.work / lang / f"{hashlib.sha1(' '.join(map(str, settings)).encode()).hexdigest()[:12]}.wav"


def _item(pkg: Package, wav: Path, lang: str, text: str, speaker: str) -> Item:
    return pkg.generated(wav, {"kind": "speech", "language": lang, "text": text, "speaker": speaker})


def _espeak_wav(exe: str, wav: Path, args: list[str], text: str) -> None:
    """espeak-ng reading ``text`` with ``args`` into ``wav``, unless it is there already."""
    if not wav.exists():
        wav.parent.mkdir(parents=True, exist_ok=True)
        with replaced(wav) as tmp:
            r = subprocess.run([exe, *args, "-w", str(tmp), text], capture_output=True, text=True)
            if r.returncode != 0:
                raise SourceError(f"espeak-ng {' '.join(args)}: {r.stderr.strip()[:200]}")


def espeak(pkg: Package, languages: list[str], per_language: int = 20,
           variants: tuple[str, ...] = ("m1", "f2", "m3", "f4")) -> list[Item]:
    """Synthetic speech: espeak-ng reads tuxpaint-stamps-default stamp descriptions in each language,
    cycling over voice variants (speaker = variant). WAVs (named by a hash of voice and text) are kept."""
    exe = _executable("espeak-ng", "espeak-ng")
    tux = pkg.sibling("tuxpaint-stamps-default")
    stamps = [tuxpaint_texts(tux.path(p)) for p in tux.select("/usr/share/tuxpaint/stamps/", (".txt",))]
    items = []
    for lang in languages:
        texts = sorted({t[lang] for t in stamps if t.get(lang)})
        step = max(1, len(texts) // per_language)
        for i, text in enumerate(texts[::step][:per_language]):
            variant = variants[i % len(variants)]
            wav = _wav(pkg, lang, variant, text)
            _espeak_wav(exe, wav, ["-v", f"{lang}+{variant}"], text)
            items.append(_item(pkg, wav, lang, text, f"espeak-ng:{variant}"))
    return items


def _mo_strings(path: Path) -> list[str]:
    """The translations (msgstr, plural forms split) of a gettext .mo catalogue that differ from their
    original; [] for a file that is not one."""
    data = path.read_bytes()
    order = next((o for o in "<>" if len(data) >= 20 and struct.unpack(o + "I", data[:4])[0] == 0x950412DE), None)
    if order is None:
        return []
    n, originals, table = struct.unpack(order + "3I", data[8:20])
    out = []
    for i in range(1, n):  # entry 0 is the catalogue's header
        got = [struct.unpack(order + "2I", data[t + 8 * i : t + 8 * i + 8]) for t in (originals, table)]
        msgid, msgstr = (data[o : o + k].decode("utf-8", "replace").split("\0") for k, o in got)
        out += [t for t in msgstr if t not in msgid]
    return out


def _script(ch: str) -> str:
    return unicodedata.name(ch, "?").split()[0]


_SENTENCE = re.compile(r"^[^\W\d_][^%{}<>&_\\/|=@#$\[\]\d\t\n()\"*~^]{8,120}$")


# gettext domains left out of the synthetic texts: packages whose audio is in a corpus (their lines could be
# spoken there) and ISO code lists (names, not sentences)
CORPUS_DOMAINS = ("klettres", "warzone2100", "freedroidrpg", "tuxpaint", "fillets", "0ad", "redeclipse", "openarena",
                  "iso_")


def gettext_texts(lang: str, locale: Path = Path("/usr/share/locale")) -> list[str]:
    """Sentences of 3 to 16 words (no placeholders, markup or digits) among the translated user-interface
    messages of installed packages in ``lang`` (``LANG`` and ``LANG_*`` folders, not ``LANG@MODIFIER``; not
    ``CORPUS_DOMAINS``), written only in the language's own scripts (those of at least 10 % of its letters),
    sorted and deduplicated."""
    texts = set()
    for d in sorted(locale.glob("*/LC_MESSAGES")):
        if lang_code(d.parent.name) == lang and "@" not in d.parent.name:  # not en@shaw, sr@latin, en@quot
            for mo in sorted(d.glob("*.mo")):
                if not mo.stem.startswith(CORPUS_DOMAINS):
                    texts |= {t.strip().rstrip(":").strip() for t in _mo_strings(mo) if _SENTENCE.match(t.strip())}
    texts = {t for t in texts if 3 <= len(t.split()) <= 16}
    scripts = Counter(_script(c) for t in texts for c in t if c.isalpha())
    mine = {k for k, v in scripts.items() if v >= 0.1 * sum(scripts.values())}
    return sorted(t for t in texts if all(_script(c) in mine for c in t if c.isalpha()))


ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "klatt4", "croak")


def espeak_voices(pkg: Package, languages: list[str], per_language: int = 150, seed: int = 0,
                  voices: dict[str, str] | None = None) -> list[Item]:
    """Synthetic speech of many voices: espeak-ng reads translated user-interface messages of the installed
    packages (``gettext_texts``: a text domain no speech source shares; Tux Paint stamp descriptions for a
    language without any) with a voice variant, speed (120-220 words/min) and pitch (20-80) drawn per
    sentence from ``seed``; ``voices`` maps a language to espeak-ng's name for it (zh: cmn). Which sentences
    exist depends on the packages installed; the WAVs (named by a hash of voice and text) are kept."""
    exe = _executable("espeak-ng", "espeak-ng")
    voices = {"zh": "cmn", "nn": "nb"} | (voices or {})
    tux = None
    items = []
    for lang in languages:
        texts = gettext_texts(lang)
        if not texts:
            tux = tux or pkg.sibling("tuxpaint-stamps-default")
            texts = sorted({t[lang] for p in tux.select("/usr/share/tuxpaint/stamps/", (".txt",))
                            if (t := tuxpaint_texts(tux.path(p))).get(lang)})
        rng = random.Random(f"{seed} {lang}")
        for text in rng.sample(texts, min(per_language, len(texts))):
            variant, speed, pitch = rng.choice(ESPEAK_VARIANTS), rng.randint(120, 220), rng.randint(20, 80)
            voice = f"{voices.get(lang, lang)}+{variant}"
            wav = _wav(pkg, lang, voice, speed, pitch, text)
            _espeak_wav(exe, wav, ["-v", voice, "-s", str(speed), "-p", str(pitch)], text)
            items.append(_item(pkg, wav, lang, text, f"espeak-ng:{variant}"))
    return items


# what each language's Festival voices read (their lexicons' encodings); the others read Latin-1
FESTIVAL_ENCODINGS = {"cs": "iso-8859-2", "ru": "utf-8"}


def _failed(wav: Path) -> Path:
    return wav.with_name(f"{wav.name}.failed")


def _festival_wavs(exe: str, voice: str, encoding: str, jobs: list[tuple[Path, float, str]]) -> None:
    """One festival process for ``voice`` writes each job's (wav, duration stretch, text) WAV; the jobs' WAVs
    share a folder, where the script runs (the script names files, not paths)."""
    folder = jobs[0][0].parent
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"(voice_{voice})"]
    for wav, stretch, text in jobs:  # a sentence the voice fails to read (unwind-protect) leaves no WAV
        lines += [f"(Parameter.set 'Duration_Stretch {stretch})",
                  f'(unwind-protect (utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav.name}.part" \'riff))']
    script = folder / f"{voice}.scm"
    script.write_bytes("\n".join(lines).encode(encoding))
    r = subprocess.run([exe, "-b", script.name], cwd=folder, capture_output=True, text=True, errors="replace")
    if r.returncode != 0:  # a voice that is not installed, say
        raise SourceError(f"festival voice {voice}: {r.stderr.strip()[-200:]}")
    for wav, _, _ in jobs:
        part = wav.with_name(f"{wav.name}.part")
        if part.is_file():
            part.replace(wav)
        else:
            _failed(wav).touch()  # not tried again
    script.unlink()


def festival_voices(pkg: Package, voices: dict[str, list[str]], per_language: int = 150,
                    seed: int = 0) -> list[Item]:
    """Synthetic speech from Festival's diphone, cluster-unit and HTS voices (festvox-* packages; built from
    recordings of real speakers, unlike espeak-ng's formant synthesis) reading ``gettext_texts`` of their
    language (those its voices' encoding can spell; any a voice fails to read are left out); a voice (``voices``
    maps a language to Festival voice names, without ``voice_``) and a speaking rate (duration stretch 0.8-1.25)
    drawn per sentence from ``seed``. The WAVs (named by a hash of voice, stretch and text) are kept, and so is
    the mark of a sentence that failed."""
    exe = _executable("festival", "festival and the festvox-* voices")
    items, todo = [], defaultdict(list)
    for lang, names in voices.items():
        if not names or not all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names):
            raise SourceError(f"festival voices for {lang}: give names like kal_diphone (got {names})")
        encoding = FESTIVAL_ENCODINGS.get(lang, "latin-1")
        texts = []
        for t in gettext_texts(lang):
            try:
                t.encode(encoding)
            except UnicodeEncodeError:
                continue
            texts.append(re.sub(r"[^\w\s.,;:!?'-]", " ", t))  # no quotes, brackets or symbols
        rng = random.Random(f"{seed} {lang}")
        for text in rng.sample(texts, min(per_language, len(texts))):
            voice, stretch = rng.choice(names), round(rng.uniform(0.8, 1.25), 2)
            wav = _wav(pkg, lang, voice, stretch, text)
            if not wav.exists() and not _failed(wav).exists():
                todo[voice, encoding].append((wav, stretch, text))
            items.append(_item(pkg, wav, lang, text, f"festival:{voice}"))
    for (voice, encoding), jobs in todo.items():
        _festival_wavs(exe, voice, encoding, jobs)
    return [i for i in items if Path(i.file).is_file()]


LISTERS = {f.__name__: f for f in (espeak, espeak_voices, festival_voices)}

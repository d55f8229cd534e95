"""Where corpus audio comes from: one small lister per Debian package (or family) and two generators.

A lister gets a :class:`Package` (the paths ``dpkg -L`` lists, the filesystem root they live under,
a scratch folder for generated audio) plus the recipe's ``options`` for the source, and returns
:class:`Item` s: a file to decode, its split key ``<source>/<path inside package>`` and labels derived
from its path (language, speaker, text, instrument, family, kind = speech | music | sfx, synthetic).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

from audiovae.audio import AUDIO_EXTENSIONS, find_audio_files
from audiovae.errors import AudioVAEError

PACKAGE_EXTENSIONS = (*AUDIO_EXTENSIONS, ".it", ".pat")
LABEL_FROM = ("parent-dir", "none")


class SourceError(AudioVAEError):
    """A package or source that cannot be listed."""


@dataclass(frozen=True)
class Item:
    key: str  # split and cache key: "<source>/<path inside package>" (folder sources: the relative path)
    rel: str  # the FLAC is written to audio/<source>/<rel>.flac
    file: str  # file to decode, or the zip archive holding ``member``
    labels: dict
    member: str = ""
    license: str = ""  # per-file license where the copyright file gives one; "" = the source's


@dataclass(frozen=True)
class Package:
    name: str  # Debian package ("" for a plain folder)
    source: str  # the recipe's source name: key prefix and output folder
    root: Path  # filesystem root that dpkg's paths live under ("/" on a real system)
    work: Path  # scratch folder for generated audio
    files: tuple[str, ...] = ()  # paths as `dpkg -L` lists them

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def select(self, under: str, exts: tuple[str, ...] | list[str] = PACKAGE_EXTENSIONS) -> list[str]:
        """Regular files (no symlinks: they duplicate a recording) under ``under`` with these suffixes."""
        exts = tuple(e.lower() for e in exts)
        return sorted(p for p in self.files if p.startswith(under) and p.lower().endswith(exts)
                      and not self.path(p).is_symlink() and self.path(p).is_file())

    def item(self, p: str, labels: dict, member: str = "", license: str = "") -> Item:
        rel = p.lstrip("/") + (f"/{member}" if member else "")
        return Item(f"{self.source}/{rel}", rel, str(self.path(p)),
                    {"package": self.name, "synthetic": False, **labels}, member, license)

    def generated(self, file: Path, labels: dict) -> Item:
        rel = file.relative_to(self.work).as_posix()
        labels = {"package": self.name, "synthetic": True, **labels}
        return Item(f"{self.source}/{rel}", rel, str(file), labels)

    def sibling(self, name: str) -> Package:
        return Package(name, self.source, self.root, self.work, tuple(dpkg_list(name)))

    def copyright(self) -> str:
        return copyright_text(self.root, self.name)


def copyright_text(root: Path, package: str) -> str:
    """The package's /usr/share/doc/PACKAGE/copyright ("" when there is none)."""
    p = root / f"usr/share/doc/{package}/copyright"
    return p.read_text(encoding="utf-8", errors="replace") if p.is_file() else ""


def dpkg_list(package: str) -> list[str]:
    """The paths ``dpkg -L`` lists for an installed package."""
    r = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if r.returncode != 0:
        raise SourceError(f"{package}: dpkg -L failed ({r.stderr.strip()[:200]})")
    return [line for line in r.stdout.splitlines() if line.startswith("/")]


def installed_versions(packages: list[str]) -> dict[str, str]:
    """Version of each package that is installed (missing or unknown packages are left out)."""
    if not packages:
        return {}
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n", *packages],
                       capture_output=True, text=True)
    rows = (line.split("\t") for line in r.stdout.splitlines())
    return {row[0]: row[2] for row in rows if len(row) == 3 and row[1].startswith("ii")}


# --- licenses -------------------------------------------------------------------------------------------

_LICENSE = re.compile(r"^License:[ \t]*(\S[^\n]*)$", re.M)


def _paragraphs(text: str) -> list[tuple[list[str], str]]:
    """(Files patterns, License short name) of each DEP-5 paragraph that has both."""
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t]+\S.*)*)", para, re.M)
        lic = _LICENSE.search(para)
        if files and lic:
            out.append((files.group(1).split(), lic.group(1).strip()))
    return out


def main_license(copyright_text: str) -> str:
    """The main ``License:`` short name of a Debian copyright file (``Files: *``, else the first one).

    Free-form (non DEP-5) files are recognised by their GPL / LGPL / MIT grant text.
    """
    for files, lic in _paragraphs(copyright_text):
        if files == ["*"]:
            return lic
    if m := _LICENSE.search(copyright_text):
        return m.group(1).strip()
    text = " ".join(copyright_text.split())
    if m := re.search(r"(Lesser |Library )?General Public License.{0,120}?version (\d)", text, re.I):
        later = "later version" in text[m.end():m.end() + 80]
        return f"{'L' if m.group(1) else ''}GPL-{m.group(2)}{'+' if later else ''}"
    if re.search(r"\bMIT licen[sc]e", text, re.I):
        return "MIT"
    return "unknown"


def file_license(copyright_text: str, upstream_path: str) -> str:
    """License of one upstream path from the last DEP-5 paragraph whose Files patterns match it."""
    found = ""
    for files, lic in _paragraphs(copyright_text):
        if any(fnmatch.fnmatchcase(upstream_path, f) for f in files):
            found = lic
    return found


# --- speech ---------------------------------------------------------------------------------------------

def lang_code(code: str) -> str:
    """Primary language subtag: 'pt_BR' -> 'pt', 'zh_tw' -> 'zh'."""
    return re.split(r"[_@.-]", code)[0].lower()


def tuxpaint_texts(path: Path) -> dict[str, str]:
    """A stamp's .txt: English on the first line, then 'LOCALE.utf8=text' lines; keys lower-cased."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    texts = {"en": lines[0].strip()} if lines and "=" not in lines[0] else {}
    for line in lines:
        if m := re.match(r"^([A-Za-z_@]+)\.utf8=(.*)$", line.strip()):
            texts[m.group(1).lower()] = m.group(2).strip()
    return texts


_TUX = re.compile(r"^(?P<stamp>.+?)(?P<desc>_desc)?(?:_(?P<lang>[a-z]{2,3}(?:_[a-z]{2})?))?$", re.I)


def tuxpaint(pkg: Package) -> list[Item]:
    """Spoken stamp descriptions (stamp_desc[_LANG].ogg) and spoken names (stamp_LANG.ogg; stamp.ogg
    too when localized names exist, else it is a sound effect and left out). Text from stamp.txt."""
    files = pkg.select("/usr/share/tuxpaint/stamps/", (".ogg", ".wav"))
    parsed = []
    for p in files:
        d, stem = p.rsplit("/", 1)
        stem = stem.rsplit(".", 1)[0]
        m = _TUX.match(stem)
        stamp, desc, lang = m.group("stamp"), bool(m.group("desc")), m.group("lang")
        texts = tuxpaint_texts(pkg.path(f"{d}/{stamp}.txt"))
        if lang and lang.lower() not in texts:  # not a locale after all: part of the stamp's name
            stamp, lang = f"{stamp}_{lang}", None
            texts = tuxpaint_texts(pkg.path(f"{d}/{stamp}.txt"))
        parsed.append((p, d, stamp, desc, lang, texts))
    named = {(d, s) for _, d, s, desc, lang, _ in parsed if lang and not desc}
    items = []
    for p, d, stamp, desc, lang, texts in parsed:
        if not (desc or lang or (d, stamp) in named):
            continue
        code = (lang or "en").lower()
        labels = {"kind": "speech", "language": lang_code(code), "stamp": stamp,
                  "role": "description" if desc else "name"}
        if desc and texts.get(code):
            labels["text"] = texts[code]
        items.append(pkg.item(p, labels))
    return items


_STR = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(rf'dialogId\("([^"]+)",\s*"(\w+)",\s*{_STR}\)\s*dialogStr\({_STR}\)')
_FISH = {"font_small": "m", "font_big": "v"}


def fillets(pkg: Package) -> list[Item]:
    """Fish Fillets dialogue: sound/LEVEL/LANG/ID.ogg. Text and voice (font) from the level's
    script/LEVEL/dialogs_LANG.lua (package fillets-ng-data); speaker 'm' (small fish) or 'v' (big fish)
    across levels, other characters per level from the code in the ID (k1-pap-kruci: 'pap')."""
    base = "/usr/share/games/fillets-ng/"
    dialogs: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    items = []
    for p in pkg.select(base + "sound/", (".ogg",)):
        level, lang, name = p[len(base + "sound/"):].split("/")[-3:]
        if (level, lang) not in dialogs:
            lua = pkg.path(f"{base}script/{level}/dialogs_{lang}.lua")
            text = lua.read_text(encoding="utf-8", errors="replace") if lua.is_file() else ""
            found = _DIALOG.findall(text)
            dialogs[level, lang] = {i: (font, s.replace('\\"', '"')) for i, font, _, s in found}
        ident = name.rsplit(".", 1)[0]
        font, text = dialogs[level, lang].get(ident, ("", ""))
        parts = ident.split("-")
        code = _FISH.get(font) or (parts[1] if len(parts) >= 3 else "")
        if not code and len(parts) == 2:  # "v-looser", "ted6-m"; else the first part ("b1-voda4": god b1)
            code = next((c for c in parts if c in ("m", "v")), parts[0])
        labels = {"kind": "speech", "language": lang, "level": level}
        if code:
            who = code if code in ("m", "v") else f"{level}/{code}"
            labels["speaker"] = f"fillets-{lang}:{who}"
        if text:
            labels["text"] = text
        items.append(pkg.item(p, labels))
    return items


def klettres(pkg: Package) -> list[Item]:
    """Letters (alpha/) and syllables (syllab/) per language folder; text from LANG/sounds.xml."""
    base = "/usr/share/klettres/"
    names: dict[str, dict[str, str]] = {}
    items = []
    for p in pkg.select(base, (".ogg",)):
        lang, unit, _ = p[len(base):].split("/")
        if lang not in names:
            xml = pkg.path(f"{base}{lang}/sounds.xml")
            root = ET.parse(xml).getroot() if xml.is_file() else ET.Element("none")
            names[lang] = {s.get("file", ""): s.get("name", "") for s in root.iter("sound")}
        labels = {"kind": "speech", "language": lang_code(lang),
                  "unit": "letter" if unit == "alpha" else "syllable"}
        if text := names[lang].get(p[len(base):]):
            labels["text"] = text
        items.append(pkg.item(p, labels))
    return items


_NOT_SPEECH = re.compile(r"(^|/)silence/|(^|/)(beep|beeperr|ascending-2tone|descending-2tone)\.wav$")


def asterisk(pkg: Package) -> list[Item]:
    """Telephone prompts (8 kHz) in sounds/LANG_REGION_GENDER_NAME/; text from the prompt's file name
    (no transcripts are packaged); silence files and beeps left out."""
    base = "/usr/share/asterisk/sounds/"
    items = []
    for p in pkg.select(base, (".wav",)):
        rel = p[len(base):]
        if _NOT_SPEECH.search(rel):
            continue
        voice, *sub, name = rel.split("/")
        lang, _, gender, speaker = voice.split("_", 3)
        labels = {"kind": "speech", "language": lang_code(lang), "speaker": f"asterisk:{speaker}",
                  "gender": gender}
        stem = name[:-4]
        if m := re.fullmatch(r"ascii(\d+)", stem):  # letters/ascii37.wav: "%"
            labels["text"] = chr(int(m.group(1)))
        elif sub != ["phonetic"]:  # phonetic/a_p.wav is a spelling word, not "a p"
            labels["text"] = re.sub(r"[-_]+", " ", stem).strip()
        items.append(pkg.item(p, labels))
    return items


# --- music and sounds -----------------------------------------------------------------------------------

def files(pkg: Package, under: str, kind: str, exts: tuple[str, ...] = PACKAGE_EXTENSIONS,
          exclude: str = "", upstream: str = "", labels: dict | None = None) -> list[Item]:
    """Every audio file under one folder (soundtracks, sound effects, voice lines); ``exclude`` is a regex
    on the path; ``labels`` are added to every item (e.g. a language). With ``upstream`` (the folder's path
    in the copyright file), licenses are looked up per file."""
    text = pkg.copyright() if upstream else ""
    return [pkg.item(p, {**(labels or {}), "kind": kind, "name": p.rsplit("/", 1)[1].rsplit(".", 1)[0]},
                     license=file_license(text, upstream + p[len(under):]) if upstream else "")
            for p in pkg.select(under, exts) if not (exclude and re.search(exclude, p))]


def archive(pkg: Package, path: str, include: str, kind: str, labels: dict | None = None,
            names: dict | None = None) -> list[Item]:
    """Audio members of the zip archives (game data: .zip, .pk3, .wz) whose path in the package matches the
    glob ``path``, kept where the regex ``include`` matches the member's path. Its named groups become labels
    (their values renamed by ``names``, e.g. a folder name to a language code); a ``speaker`` is prefixed with
    the source (and the language) so that it names one voice across sources."""
    pattern, items = re.compile(include), []
    for p in sorted(f for f in pkg.files if fnmatch.fnmatch(f, path) and pkg.path(f).is_file()):
        with zipfile.ZipFile(pkg.path(p)) as z:
            members = sorted(m for m in z.namelist() if m.lower().endswith(AUDIO_EXTENSIONS))
        for m in members:
            if not (found := pattern.search(m)):
                continue
            got = {k: (names or {}).get(v, v) for k, v in found.groupdict().items() if v}
            if "speaker" in got:
                got["speaker"] = ":".join([pkg.source, *([got["language"]] if "language" in got else []),
                                           got["speaker"]])
            name = m.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            items.append(pkg.item(p, {**(labels or {}), **got, "kind": kind, "name": name}, member=m))
    return items


def ufoai(pkg: Package, kind: str) -> list[Item]:
    """UFO: Alien Invasion keeps its audio in zip archives (base/*.pk3); one item per Ogg member.
    Licenses per file from the copyright file (upstream paths base/MEMBER)."""
    text, items = pkg.copyright(), []
    for p in pkg.select("/usr/share/games/ufoai/base/", (".pk3",)):
        with zipfile.ZipFile(pkg.path(p)) as z:
            members = sorted(m for m in z.namelist() if m.lower().endswith((".ogg", ".wav")))
        for m in members:
            folder, name = m.rsplit("/", 1)
            labels = {"kind": kind, "name": name.rsplit(".", 1)[0], "group": folder}
            items.append(pkg.item(p, labels, member=m, license=file_license(text, f"base/{m}")))
    return items


_DRUMS = [("hihat", r"hi.?hat|\bhh|hat\b|hat[ _-]"), ("kick", r"kick|bass.?drum|\bbd"),
          ("snare", r"snare|\bsn|\bsd\b"), ("tom", r"tom"), ("crash", r"crash"), ("cowbell", r"cowbell"),
          ("ride", r"ride|bell"), ("cymbal", r"cymbal|splash|china|\bcb"), ("clap", r"clap"),
          ("rim", r"rim|stick"), ("loop", r"beats|break|loop"),
          ("percussion", r"conga|bongo|shak|tamb|perc|clave|block|triang|guiro|djembe|cabasa|maraca|whistle|"
                         r"agogo|cajon|glass|dununba|kenkeni|sangban|drum \d")]


def drum_piece(name: str) -> str:
    """Canonical drum piece (kick, snare, hihat, tom, ...) from a sample or instrument name."""
    low = name.lower().replace("_", " ")
    return next((piece for piece, pat in _DRUMS if re.search(pat, low)), "other")


def hydrogen(pkg: Package) -> list[Item]:
    """Hydrogen drum kits: kit = folder; instrument = drum piece from the kit's drumkit.xml instrument
    name (else the file name). Licenses per kit from the copyright file."""
    base, text, items = "/usr/share/hydrogen/data/drumkits/", pkg.copyright(), []
    names: dict[str, dict[str, str]] = {}
    for p in pkg.select(base, (".wav", ".flac", ".aiff")):
        kit, name = p[len(base):].split("/", 1)
        if kit not in names:
            xml = pkg.path(f"{base}{kit}/drumkit.xml")
            names[kit] = {}
            if xml.is_file():
                for inst in ET.parse(xml).getroot().iter():
                    if inst.tag.rsplit("}", 1)[-1] == "instrument":
                        iname = next((c.text for c in inst if c.tag.endswith("name")), "") or ""
                        for f in inst.iter():
                            if f.tag.endswith("filename") and f.text:
                                names[kit][f.text] = iname
        sample = names[kit].get(name, "")
        labels = {"kind": "music", "family": "drums", "kit": kit,
                  "instrument": drum_piece(sample) if sample else drum_piece(name), "name": sample or name}
        lic = file_license(text, f"drumkits/{kit}.h2drumkit") or \
            file_license(text, f"drumkits/{kit.split()[0]}.h2drumkit")  # "circAfrique v4"
        items.append(pkg.item(p, labels, license=lic))
    return items


_SONIC_FAMILY = {"ambi": "ambient", "bd": "drums", "sn": "drums", "drum": "drums", "elec": "electronic",
                 "guit": "guitar", "perc": "percussion", "loop": "loop", "tabla": "tabla", "bass": "bass"}


def sonic_pi(pkg: Package) -> list[Item]:
    """Sonic Pi samples (samples/PREFIX_NAME.flac): family from the prefix, instrument = name."""
    text, items = pkg.copyright(), []
    for p in pkg.select("/usr/share/sonic-pi/samples/", (".flac", ".wav")):
        stem = p.rsplit("/", 1)[1].rsplit(".", 1)[0]
        prefix = stem.split("_", 1)[0]
        labels = {"kind": "music", "family": _SONIC_FAMILY.get(prefix, prefix), "instrument": stem}
        items.append(pkg.item(p, labels, license=file_license(text, f"etc/samples/{p.rsplit('/', 1)[1]}")))
    return items


def lmms(pkg: Package) -> list[Item]:
    """LMMS samples: family = category folder (drums, basses, ...), instrument = file name."""
    base = "/usr/share/lmms/samples/"
    return [pkg.item(p, {"kind": "music", "family": p[len(base):].split("/")[0],
                         "instrument": p.rsplit("/", 1)[1].rsplit(".", 1)[0]})
            for p in pkg.select(base, (".wav", ".flac", ".ogg"))]


def midi(pkg: Package, soundfont: str, seconds_per_program: float, seed: int = 0,
         synth: str = "fluidsynth") -> list[Item]:
    """Instrument clips rendered by ``synth`` (fluidsynth or timidity) from generated MIDI (audiovae.data.midi)
    with the soundfont or timidity config named ``soundfont`` found in the package; one clip set per GM program."""
    from audiovae.data.midi import render_instruments

    found = [p for p in pkg.files if p.endswith("/" + soundfont) and pkg.path(p).is_file()]
    if not found:
        raise SourceError(f"{pkg.name}: no file {soundfont} in dpkg -L {pkg.name}")
    clips = render_instruments(pkg.work, pkg.path(found[0]), pkg.source, seconds_per_program, seed, synth=synth)
    return [pkg.generated(Path(c["path"]), {"kind": "music", "instrument": c["instrument"],
                                            "family": c["family"].lower(), "program": c["program"],
                                            "soundfont": c["soundfont"]}) for c in clips]


def generator_version(lister: str) -> str:
    """Version of the code that generates a source's audio ("" for recordings)."""
    if lister == "midi":
        from audiovae.data.midi import VERSION

        return f"midi-{VERSION}"
    return ""


def folder(pkg: Package, path: str, label_from: str = "parent-dir") -> list[Item]:
    """A user's folder: every audio file; labels['label'] = parent folder name; key = relative path."""
    root = Path(path)
    if label_from not in LABEL_FROM:
        raise SourceError(f"--label-from {label_from}: use one of {', '.join(LABEL_FROM)}")
    if not root.is_dir():
        raise SourceError(f"{root}: no such folder")
    items = []
    for f in find_audio_files(root):
        rel = f.relative_to(root).as_posix()
        labels = {"synthetic": False}
        if label_from == "parent-dir":
            labels["label"] = f.parent.name if f.parent != root else root.resolve().name
        items.append(Item(rel, rel, str(f), labels))
    return items


LISTERS = {f.__name__: f for f in (tuxpaint, fillets, klettres, asterisk, files, archive, ufoai, hydrogen, sonic_pi,
                                   lmms, midi, folder)}


"""``audiovae report``: the benchmark results in a folder (CSV, Markdown, PNG, audio; whatever exists) and
codec examples on the shipped clips, in one self-contained HTML page (images and audio inlined)."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

from audiovae import audio
from audiovae.errors import AudioVAEError
from audiovae.files import write_text

SECTIONS = [("Codec", ("codec_", "_rate_quality")), ("Reconstruction quality", ("quality_", "curve_")),
            ("Classification", ("classify_",)), ("Generation", ("generate_",)), ("Speed", ("speed",))]
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg",
               ".mp3": "audio/mpeg"}
MAX_ROWS = 40
Progress = Callable[[int, int], None]
STYLE = """body{font:15px/1.4 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d1d1f}
.wide{overflow-x:auto}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.2em .5em}
td{text-align:right}td:first-child{text-align:left}img{max-width:100%}h3{margin-top:1.6em}
.clip{display:flex;flex-wrap:wrap;gap:1em;align-items:center}figure{margin:0}figcaption{font-size:.85em;color:#555}"""


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _cell(text: str) -> str:
    """Decimal numbers to 3 significant digits (as the README's tables); anything else as it is."""
    try:
        return f"{float(text):.3g}" if "." in text else text
    except ValueError:
        return text


def _table(rows: list[list[str]], note: str = "") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>{note}"


def csv_table(path: Path) -> str:
    """A CSV as an HTML table; long ones (per-clip results) shortened to MAX_ROWS rows, folded."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) <= MAX_ROWS + 1:
        return _table(rows)
    note = f"<p>first {MAX_ROWS} of {len(rows) - 1} rows; all in {html.escape(path.name)}</p>"
    return f"<details><summary>{html.escape(path.name)} ({len(rows) - 1} rows)</summary>" \
           f"{_table(rows[: MAX_ROWS + 1], note)}</details>"


def markdown_tables(path: Path) -> str:
    """The pipe tables and paragraphs of a Markdown file (enough for the bench commands' output)."""
    out, table = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        if table:
            out.append(_table(table))
            table = []
        if line.strip() and not line.startswith("#"):
            out.append(f"<p>{html.escape(line)}</p>")
    return "".join(out)


def render_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".png":
        return f'<figure><img src="{_data_url(path.read_bytes(), "image/png")}" alt="{html.escape(path.stem)}">' \
               f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    if suffix in AUDIO_TYPES:
        return f'<figure><figcaption>{html.escape(path.name)}</figcaption><audio controls ' \
               f'src="{_data_url(path.read_bytes(), AUDIO_TYPES[suffix])}"></audio></figure>'
    if suffix == ".csv":
        return csv_table(path)
    return markdown_tables(path)


def bench_sections(folder: Path) -> dict[str, list[str]]:
    """HTML per section from the folder's files; a Markdown file is shown only when no CSV of that name exists."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in {".png", ".csv", ".md",
                                                                                       *AUDIO_TYPES})
    stems = {p.stem for p in files if p.suffix == ".csv"}
    sections: dict[str, list[str]] = {title: [] for title, _ in SECTIONS} | {"Other": []}
    for p in files:
        if p.suffix == ".md" and p.stem in stems:
            continue
        title = next((t for t, keys in SECTIONS if any(k in p.stem for k in keys)), "Other")
        sections[title].append(f"<h3>{html.escape(p.name)}</h3>{render_file(p)}")
    return {t: parts for t, parts in sections.items() if parts}


def _flac(wav: bytes) -> bytes:
    """A WAV file re-encoded as FLAC: half the size in the page, lossless."""
    x, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return audio.wav_bytes(x.T, sr, "FLAC")


def _player(title: str, wav: bytes) -> str:
    return f'<figure><figcaption>{html.escape(title)}</figcaption><audio controls ' \
           f'src="{_data_url(_flac(wav), "audio/flac")}"></audio></figure>'


def codec_examples(clips: list[Path], kbps: tuple[float, ...], progress: Progress | None = None) -> str:
    """Each clip (named MODEL_name) through the codec of its shipped model at each bitrate, with Opus;
    ``progress(done, total)`` after each."""
    from audiovae.app.api import compare_codec
    from audiovae.registry import list_models

    parts = []
    clips = [c for c in clips if c.stem.split("_", 1)[0] in list_models()]
    for k, clip in enumerate(clips):
        name = clip.stem.split("_", 1)[0]
        x, sr = audio.load(clip)
        for i, rate in enumerate(kbps):
            r = compare_codec(x, sr, name, rate)
            if progress is not None:
                progress(k * len(kbps) + i + 1, len(clips) * len(kbps))
            rows = [["", "kbps", "PESQ", "STOI", "SI-SDR", "mel distance"],
                    _score_row(f"{name} (quality {r['quality']})", r["kbps"], r["metrics"])]
            players = [_player("original", r["original_wav"])] if i == 0 else []
            players.append(_player(f"{name} at {r['kbps']:.2f} kbps", r["decoded_wav"]))
            if r["opus"]:
                rows.append(_score_row("Opus", r["opus"]["kbps"], r["opus"]["metrics"]))
                players.append(_player(f"Opus at {r['opus']['kbps']:.2f} kbps", r["opus"]["wav"]))
            images = "".join(f'<img src="{_data_url(png, "image/png")}" alt="{k}">'
                             for k, png in r["spectrograms"].items())
            parts.append(f"<h3>{html.escape(clip.name)} at {rate:g} kbps</h3><div class='clip'>{''.join(players)}"
                         f"</div>{_table(rows)}{images}")
    return "".join(parts)


def _score_row(name: str, kbps: float, m: dict) -> list[str]:
    return [name, f"{kbps:.2f}", *("-" if m[k] is None else f"{m[k]:.3g}" for k in ("pesq", "stoi", "si_sdr",
                                                                                   "mel_distance"))]


def write_report(bench: Path | None, out: Path, clips: list[Path] = (), kbps: tuple[float, ...] = (3.0, 6.0),
                 progress: Progress | None = None) -> Path:
    """Render ``bench`` (when given) and codec examples on ``clips`` to the HTML file ``out`` (its folder is
    created once the page is ready); ``progress``: see ``codec_examples``."""
    if bench is not None and not bench.is_dir():
        raise AudioVAEError(f"{bench}: no such folder of benchmark results")
    sections = bench_sections(bench) if bench is not None else {}
    if clips:
        sections["Listen: codec examples"] = [codec_examples(clips, kbps, progress)]
    if not sections:
        raise AudioVAEError(f"nothing to report: no benchmark results (CSV, Markdown, PNG or audio files)"
                            f"{f' in {bench}' if bench else ''} and no examples")
    toc = "".join(f'<li><a href="#s{i}">{html.escape(t)}</a></li>' for i, t in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{html.escape(t)}</h2>{"".join(parts)}'
                   for i, (t, parts) in enumerate(sections.items()))
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>audiovae benchmarks</title>'
            f"<style>{STYLE}</style></head><body><h1>audiovae benchmarks</h1>"
            f"<p>From {html.escape(str(bench or 'the shipped models'))}.</p><ul>{toc}</ul>{body}</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return out

"""The corpus card: what a built corpus holds (hours and clips per source, split, language, speaker,
instrument, family), where it came from (packages, versions, licenses, original formats and rates) and
what was skipped. Written as card.json (complete) and CARD.md (for people; top entries only)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from audiovae.data.manifest import SPLITS, UNSEEN, Entry
from audiovae.files import write_text

LOSSY = {"ogg", "oga", "opus", "mp3", "m4a"}
LABEL_TABLES = ("kind", "language", "speaker", "family", "instrument", "kit")
TOP = 25


def _tally(entries: Iterable[Entry], key) -> dict[str, dict]:
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in entries:
        value = key(e)
        if value is not None and value != "":
            acc[str(value)][0] += 1
            acc[str(value)][1] += e.duration
    rows = sorted(acc.items(), key=lambda kv: -kv[1][1])
    return {k: {"clips": n, "hours": round(s / 3600, 4)} for k, (n, s) in rows}


def _source_row(b: dict, entries: list[Entry]) -> dict:
    recs, src = b["records"], b["config"]
    status = Counter(r["status"] for r in recs)
    ok = [r for r in recs if r["status"] == "ok"]
    mine = [e for e in entries if e.source == src.name]
    return {
        "name": src.name, "package": src.package, "also_install": src.also_install, "version": b["version"],
        "lister": src.lister, "options": src.options, "note": src.note, "holdout": src.holdout,
        "unseen_clips": sum(e.split == UNSEEN for e in mine),
        "license": b["license"], "copyright_license": b["copyright_license"],
        "file_licenses": dict(Counter(r["license"] for r in ok if r["license"])),
        "files": len(recs), "used": status["ok"], "too_short": status["too_short"],
        "unreadable": status["unreadable"],
        "unreadable_examples": [r.get("error", "") for r in recs if r["status"] == "unreadable"][:5],
        "clips": len(mine), "hours": round(sum(e.duration for e in mine) / 3600, 4),
        "formats": dict(Counter(r["format"] for r in recs)),
        "original_sample_rates": {str(k): v for k, v in sorted(Counter(
            r.get("orig_sample_rate") for r in ok).items())},
        "synthetic": any(r["labels"].get("synthetic") for r in ok),
    }


def summarize(out: Path, recipe, built: list[dict], entries: list[Entry]) -> dict:
    rows = [_source_row(b, entries) for b in built]
    lossy = [r["name"] for r in rows if set(r["formats"]) & LOSSY]
    low = [r["name"] for r in rows if any(int(k) < recipe.sample_rate for k in r["original_sample_rates"])]
    splits = _tally(entries, lambda e: e.split)
    return {
        "name": recipe.name, "description": recipe.description, "manifest": str(out / "manifest.jsonl"),
        "sample_rate": recipe.sample_rate, "channels": 1, "format": "FLAC 16-bit",
        "max_clip_seconds": recipe.max_clip_seconds, "min_seconds": recipe.min_seconds,
        "silence_db": recipe.silence_db,
        "clips": len(entries), "hours": round(sum(e.duration for e in entries) / 3600, 4),
        "files": sum(r["used"] for r in rows),
        "skipped_files": {"too_short": sum(r["too_short"] for r in rows),
                          "unreadable": sum(r["unreadable"] for r in rows)},
        "sources": rows,
        "disabled_sources": [{"name": s.name, "package": s.package, "note": s.note}
                             for s in recipe.sources if not s.enabled],
        "splits": {s: splits.get(s, {"clips": 0, "hours": 0.0}) for s in SPLITS},
        "licenses": _tally(entries, lambda e: e.license),
        "labels": {k: _tally(entries, lambda e, k=k: e.labels.get(k)) for k in LABEL_TABLES},
        "lossy_sources": lossy, "sources_below_corpus_rate": low,
    }


def _table(title: str, rows: dict[str, dict], top: int | None = None) -> list[str]:
    if not rows:
        return []
    items = list(rows.items())
    shown = items[:top] if top else items
    lines = [f"### {title}" + (f" (top {top} of {len(items)})" if top and len(items) > top else ""), "",
             "| value | clips | hours |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['clips']} | {v['hours']:.2f} |" for k, v in shown]
    return [*lines, ""]


def to_markdown(card: dict) -> str:
    c, skipped = card, card["skipped_files"]
    md = [f"# Corpus card: {c['name']}", "", c["description"], "",
          f"{c['hours']:.2f} hours in {c['clips']} clips from {c['files']} files; mono {c['format']} at "
          f"{c['sample_rate']} Hz. Clips are at most {c['max_clip_seconds']} s (offsets into one FLAC per "
          f"source file); leading/trailing silence ({c['silence_db']} dB below the loudest 10 ms frame) is "
          f"trimmed; files shorter than {c['min_seconds']} s after trimming "
          f"({skipped['too_short']}) and unreadable files ({skipped['unreadable']}) are skipped."
          " Splits are by a hash of the source file, so clips of one recording share a split.", "",
          "**Audio quality.** Many sources are lossy originals (Ogg Vorbis / Opus: "
          f"{', '.join(c['lossy_sources']) or 'none'}) and some were recorded at rates below the corpus rate "
          "(upsampled, with no content above their Nyquist: "
          f"{', '.join(c['sources_below_corpus_rate']) or 'none'}). Original rates per source are listed "
          "below; never judge a model's quality against these originals above their real bandwidth.", "",
          "## Sources", "",
          "| source | package (version) | license | files | used | too short | unreadable | clips | hours | "
          "formats | original rates (Hz: files) |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in c["sources"]:
        lic = r["license"] + (f" (copyright main: {r['copyright_license']})"
                              if r["copyright_license"] != r["license"] else "")
        if r["file_licenses"]:
            lic += "; per file: " + ", ".join(f"{k} {v}" for k, v in r["file_licenses"].items())
        rates = ", ".join(f"{k}: {v}" for k, v in r["original_sample_rates"].items())
        fmts = ", ".join(f"{k} {v}" for k, v in r["formats"].items())
        name = r["name"] + (" (synthetic)" if r["synthetic"] else "") + \
            (f" (unseen: {r['unseen_clips']} clips)" if r.get("unseen_clips") else "")
        md.append(f"| {name} | {r['package']} {r['version']} | {lic} | {r['files']} | {r['used']} | "
                  f"{r['too_short']} | {r['unreadable']} | {r['clips']} | {r['hours']:.2f} | {fmts} | "
                  f"{rates} |")
    md.append("")
    notes = [f"- **{r['name']}**: {r['note']}" for r in c["sources"] if r["note"]]
    notes += [f"- **{r['name']}** unreadable, e.g. `{r['unreadable_examples'][0]}`"
              for r in c["sources"] if r["unreadable_examples"]]
    notes += [f"- **{d['name']}** ({d['package']}) is disabled: {d['note']}" for d in c["disabled_sources"]]
    if notes:
        md += ["### Notes", "", *notes, ""]
    md += ["## Splits", "", "| split | clips | hours |", "|---|---:|---:|"]
    md += [f"| {s} | {v['clips']} | {v['hours']:.2f} |" for s, v in c["splits"].items()]
    md += ["", "## Licenses", ""]
    md += [f"- {k}: {v['clips']} clips, {v['hours']:.2f} h" for k, v in c["licenses"].items()]
    md += ["", "Never commit the audio; the recipe rebuilds it from the packages.", "", "## Labels", ""]
    for k in LABEL_TABLES:
        md += _table(k, c["labels"][k], top=TOP)
    return "\n".join(md) + "\n"


def write_card(out: Path, recipe, built: list[dict], entries: list[Entry]) -> dict:
    """Write card.json and CARD.md into ``out``; return the card."""
    card = summarize(out, recipe, built, entries)
    write_text(out / "card.json", json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    write_text(out / "CARD.md", to_markdown(card))
    return card

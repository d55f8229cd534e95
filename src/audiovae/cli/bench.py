"""``bench speed / memory / quality / codec / curve / classify / generate / language``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from audiovae.cli.common import bench_app, console, err_console
from audiovae.cli.progress import bars
from audiovae.errors import AudioVAEError


@contextlib.contextmanager
def _bar(description: str) -> Iterator[Callable[..., None] | None]:
    """A bench's ``progress(done, total)`` callback, drawing a bar on stderr (None where bars are off, as with -q)."""
    with bars() as b, b.task(description) as progress:
        yield progress


def _named(progress: Callable[..., None] | None) -> Callable[[str, int, int], None] | None:
    """``progress`` for library calls that report ``(what, done, total)``: ``what`` names the bar."""
    return None if progress is None else (lambda what, done, total: progress(done, total, what))


def _suffix(split: str) -> str:
    """A file stem's suffix for a split: none for the test split (the files' historic names), else ``_SPLIT``."""
    return "" if split == "test" else f"_{split}"


@bench_app.command("speed")
def bench_speed(
    model: list[str] = typer.Option(["speech16k"], "--model", help="Model name(s) or folder(s)."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """On one thread: model encode/decode x-realtime, end-to-end codec x-realtime, training throughput."""
    from audiovae import bench
    from audiovae.codec.stream import Codec

    rows = []
    for name in model:
        codec = Codec(name)
        row = bench.speed(codec.model) | bench.codec_speed(codec) | bench.training_throughput(codec.model)
        rows.append(row)
        console.print(row)
    csv_path, md = bench.write_table(rows, out, "speed", "Speed on one CPU thread")
    console.print(f"wrote {csv_path} and {md}")


@bench_app.command("memory")
def bench_memory(
    model: list[str] = typer.Option(["speech16k"], "--model", help="Model name(s) or folder(s)."),
    minutes: list[float] = typer.Option([1.0, 10.0, 60.0], "--minutes", help="File lengths to measure."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """Peak RSS of `compress` and `decompress` (fresh processes, one thread) against the file's length."""
    import tempfile

    from audiovae import bench

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in model:
            for row in bench.memory(name, minutes, Path(tmp)):
                rows.append(row)
                console.print(row)
    csv_path, md = bench.write_table(rows, out, "memory", "Peak memory of compress / decompress by file length")
    console.print(f"wrote {csv_path} and {md}")


@bench_app.command("quality")
def bench_quality(
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    manifest: Path = typer.Option(..., help="Corpus manifest (e.g. corpora/speech16k/manifest.jsonl)."),
    split: str = typer.Option("test", help="Split to evaluate (test; unseen: sources no model trained on)."),
    clips: int = typer.Option(200, help="At most this many clips, spread over the split."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """Posterior-mean reconstruction quality (PESQ, STOI, SI-SDR, mel distance) on a corpus split."""

    from audiovae import bench
    from audiovae.registry import load

    m = load(model)
    with _bar(f"{m.name} on {split}") as progress:
        rows = bench.quality(m, manifest, split, clips, progress=progress)
    bench.write_table(rows, out, f"quality_{m.name}_{split}_clips", f"{m.name} per clip ({split} split)")
    summary = bench.summarize(rows)
    _, md = bench.write_table(summary, out, f"quality_{m.name}_{split}", f"{m.name} reconstruction, {split} split")
    console.print(md.read_text())


@bench_app.command("codec")
def bench_codec(
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with its entropy model)."),
    manifest: Path | None = typer.Option(None, help="Corpus manifest (e.g. corpora/speech16k/manifest.jsonl)."),
    split: str = typer.Option("test", help="Split to evaluate (test; unseen: sources no model trained on)."),
    clips: int = typer.Option(16, help="At most this many clips (2 s or longer), spread over the split."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
    kbps: list[float] | None = typer.Option(None, "--kbps", help="Our codec's target rates (default: "
                                            "1.5 3 3.2 4.5 6 9 12; with --folder: 12)."),
    classics: bool = typer.Option(True, "--classics/--no-classics", help="Also run Opus, Codec2 and MP3."),
    folder: Path | None = typer.Option(None, "--folder", help="Instead of a manifest: full-band files (e.g. 44.1 "
                                       "or 48 kHz music) at their own rate, one clip from the middle of each; ours "
                                       "with and without the bandwidth extension against Opus 12/16/24 and MP3."),
    seconds: float = typer.Option(10.0, help="With --folder: the clip length."),
) -> None:
    """Our codec at several bitrates against Opus, Codec2 and MP3 on the same clips."""

    from audiovae import bench
    from audiovae.codec import baselines
    from audiovae.codec.stream import Codec

    missing = baselines.missing_tools()
    if missing:
        err_console.print(f"skipping codecs whose tools are missing; install: apt-get install {' '.join(missing)}")
    codec = Codec(model)
    if folder is not None:
        _bench_fullband(codec, folder, clips, seconds, kbps or [12.0], classics, out)
        return
    if manifest is None:
        raise AudioVAEError("bench codec needs --manifest (a corpus) or --folder (full-band files)")
    with _bar(f"{codec.model.name} vs classic codecs") as progress:
        rows = bench.codec_benchmark(codec, manifest, split, clips, progress=progress,
                                     conditions=bench.codec_conditions(codec.model, kbps or bench.OURS_KBPS,
                                                                       classics))
    name = codec.model.name
    bench.write_table(rows, out, f"codec_{name}_{split}_clips", f"{name} codec per clip ({split} split)")
    summary = bench.summarize_codec(rows)
    _, md = bench.write_table(summary, out, f"codec_{name}_{split}", f"{name} vs classic codecs, {split} split")
    targets = bench.codec_targets(summary, codec.model.sample_rate, rows)
    with md.open("a") as f:
        f.write("\nTargets:\n" + "".join(f"- {x}\n" for x in targets))
    plot = bench.plot_rate_quality(summary, out, f"{name} codec, {split} split",
                                   f"{name}_rate_quality" + _suffix(split))
    console.print(md.read_text())
    console.print(f"plot: {plot}")


def _bench_fullband(codec, folder: Path, clips: int, seconds: float, kbps: list[float], classics: bool,
                    out: Path) -> None:

    from audiovae import bench

    name = codec.model.name
    out.mkdir(parents=True, exist_ok=True)
    figure = out / f"codec_{name}_fullband_spectrograms.png"
    with _bar(f"{name} on full-band files vs classic codecs") as progress:
        rows = bench.fullband_benchmark(codec, folder, clips, seconds, kbps, classics, figure=figure,
                                        progress=progress)
    bench.write_table(rows, out, f"codec_{name}_fullband_clips", f"{name} codec per full-band clip ({folder})")
    _, md = bench.write_table(bench.summarize_codec(rows), out, f"codec_{name}_fullband",
                              f"{name} vs classic codecs on {len(rows) and len({r['clip'] for r in rows})} "
                              f"full-band clips ({folder}; mono; band metrics from {codec.model.sample_rate // 2} Hz "
                              "to each original's real bandwidth, at most 20 kHz; band_error_db over the "
                              f"(25 ms, 1 kHz) cells within {bench.BAND_FLOOR_DB:g} dB of the original's loudest)")
    console.print(md.read_text())
    console.print(f"spectrograms: {figure}")


@bench_app.command("curve")
def bench_curve(
    run_dir: Path = typer.Argument(..., help="A training run folder (runs/NAME)."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """Plot validation PESQ and mel distance against training minutes."""
    from audiovae import bench

    console.print(f"wrote {bench.training_curve(run_dir, out)}")


@bench_app.command("classify")
def bench_classify(
    corpora: Path = typer.Option(Path("corpora"), help="Folder holding speech16k/ and music24k/ manifests."),
    task: list[str] = typer.Option(None, "--task", help="Task(s) to run (default: all seven, listed above)."),
    model: list[str] = typer.Option(None, "--model", help="NAME=MODEL: use MODEL (a name or folder) where a task "
                                    "names NAME (e.g. speech16k=runs/speech16k/export)."),
    pooling: str = typer.Option("auto", help="VAE pooling for the test table, or auto (best on valid among the "
                                "hand-made ones and, where every task's model has an embedding head, learned)."),
    max_train: int = typer.Option(100, "--max-train", min=20, help="Train clips per class embedded (k=all)."),
    max_eval: int = typer.Option(50, "--max-eval", min=1, help="Valid / test clips per class embedded."),
    draws: int = typer.Option(20, min=1, help="Random draws of the labelled examples per k (both feature sets "
                             "see the same draws)."),
    semi_supervised: bool = typer.Option(True, "--semi-supervised/--supervised-only",
                                         help="Also self-training and label spreading over the unlabelled rest, "
                                         "and probes on the clips that `classify suggest` picks."),
    finetune: int = typer.Option(2000, "--finetune", min=0, metavar="STEPS", help="Also a probe on the learned head "
                                 "fine-tuned with all labels for this many steps (vae+finetune; 0: not)."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """Few-label classification on the corpora's test splits (k = 1, 5, 20, all labels per class): VAE
    embeddings vs an MFCC(+deltas) baseline, probes chosen by cross-validation; the pooling chosen on valid;
    with all labels also a probe on the learned head fine-tuned with them (--finetune).

    Tasks: language, speaker, instrument-family, source-type, language-cross-source, and on sources no model
    trained on: speaker-unseen (probes fitted on part of the unseen voices), source-type-unseen. Writes
    OUT/classify.{md,csv,png}, OUT/classify_pooling_valid.{md,csv} and OUT/classify_tasks.{md,csv}."""
    import time

    from audiovae.bench import classify as bt
    from audiovae.classify import DEFAULT_POOLING, LEARNED

    tasks = bt.tasks_named(task)
    overrides = dict(m.split("=", 1) for m in model or [] if "=" in m)
    if len(overrides) != len(model or []):
        raise AudioVAEError("--model takes NAME=MODEL, e.g. speech16k=runs/speech16k/export")
    start = time.time()
    with _bar("embedding") as progress:
        result = bt.run(tasks, corpora, out, overrides, pooling, max_train, max_eval, draws, semi_supervised, finetune,
                        _named(progress))
    console.print(result["md"].read_text())
    chosen = result["chosen"]
    if pooling == "auto" and chosen != LEARNED:
        console.print(f"note: valid chose pooling '{chosen}', `audiovae embed` defaults to '{LEARNED}' for a model "
                      f"with an embedding head, else '{DEFAULT_POOLING}'", soft_wrap=True)
    console.print(f"long table: {result['csv']}; plot: {result['plot']}; {time.time() - start:.0f} s", soft_wrap=True)


@bench_app.command("generate")
def bench_generate(
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    manifest: Path = typer.Option(..., help="Corpus manifest (e.g. corpora/speech16k/manifest.jsonl)."),
    clips: int = typer.Option(100, help="Test clips (and as many generated, N(0, I) and train clips)."),
    split: str = typer.Option("test", help="The manifest split of the real clips the Fréchet distance compares "
                              "with (unseen: sources no model trained on; files get an _unseen suffix)."),
    per_label: int = typer.Option(10, "--per-label", help="Generated clips per label for the accuracy."),
    probe_split: str = typer.Option("train", "--probe-split", help="The split whose real clips the accuracy's probes "
                                    "are fitted on (unseen: sources no model trained on; files get a _probe-unseen "
                                    "suffix, after --split's)."),
    guidance: float | None = typer.Option(None, "--guidance", help="Classifier-free guidance (default: the prior's)."),
    classifier_guidance: float | None = typer.Option(
        None, "--classifier-guidance", help="Weight of the prior's label guide (default: the prior's)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
    html: Path | None = typer.Option(None, "--html", help="Write a self-contained listening page here."),
    transfer_to: str | None = typer.Option(None, "--transfer-to", help="Add a timbre transfer to this model "
                                           "to the page."),
    arithmetic: str | None = typer.Option(None, "--arithmetic", help="Also score latent arithmetic (A - B + C) "
                                          "with a probe of this manifest label, e.g. speaker."),
) -> None:
    """Fréchet distances (learned prior vs N(0, I) vs real train) and conditional accuracy of generated clips;
    with --arithmetic, how often A - B + C is recognized as C's label."""
    import torch

    from audiovae import bench
    from audiovae.bench import generate as bg
    from audiovae.generate import Generator
    from audiovae.plots import save_recognition

    torch.set_num_threads(1)
    gen = Generator(model)
    target = Generator(transfer_to) if html is not None and transfer_to else None  # fail before the work
    with _bar("generating") as progress:
        report = _named(progress)
        result = bg.evaluate(gen, manifest, clips, per_label, guidance, temperature, progress=report,
                             classifier_guidance=classifier_guidance, split=split, probe_split=probe_split)
        moved = [] if arithmetic is None else bg.arithmetic(gen, manifest, arithmetic, progress=report)
    name = gen.model.name
    _, md = bench.write_table(result["fd"], out, f"generate_{name}_fd" + _suffix(split),
                              f"{name}: Fréchet distance to {len(result['tests'])} {split} clips (lower is better)")
    console.print(md.read_text())
    _, md = bench.write_table([result["speed"]], out, f"generate_{name}_speed", f"{name}: sampling on one CPU thread")
    console.print(md.read_text())
    if result["accuracy"]:
        stem = f"generate_{name}_accuracy" + _suffix(split) + \
            ("" if probe_split == "train" else f"_probe-{probe_split}")  # a run per split keeps its own files
        _, md = bench.write_table(result["accuracy"], out, stem,
                                  f"{name}: '{gen.label_key}' recognized on generated and real test clips "
                                  f"(probes fitted on real {probe_split} clips: on '{result['probe']}' embeddings, "
                                  "and on MFCC statistics for the _mfcc columns)")
        console.print(md.read_text())
        png = save_recognition(out / f"{stem}.png", result["accuracy"],
                               f"{name}: '{gen.label_key}' recognized")
        console.print(f"plot: {png}")
    if moved:
        _, md = bench.write_table(moved, out, f"generate_{name}_arithmetic",
                                  f"{name}: latent arithmetic A - B + C, recognized as C's '{arithmetic}'")
        console.print(md.read_text())
    if html is not None:
        tables = [("Fréchet distance to test clips", result["fd"]), ("Conditional accuracy", result["accuracy"]),
                  ("Speed", [result["speed"]])] + [("Latent arithmetic", moved)] * bool(moved)
        page = bg.listening_page(html, f"audiovae {name}: generated audio", tables,
                                 bg.report_sections(gen, result, target))
        console.print(f"listening page: {page}")


@bench_app.command("language")
def bench_language(
    data: Path = typer.Option(Path("corpora/speech16k/manifest.jsonl"), "--data", help="A speech corpus manifest "
                              "with language labels."),
    synthetic: Path = typer.Option(Path("corpora/speech16k-synth/manifest.jsonl"), "--synthetic",
                                   help="The synthetic corpus (`audiovae data build speech16k-synth`), for the "
                                   "variants that train on it."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    variant: list[str] = typer.Option(None, "--variant", help="Probe recipes to evaluate (repeat; default: all)."),
    cache: Path = typer.Option(Path("runs/langprobe"), "--cache", help="Folder for the cached latents and each "
                               "fold's predictions (reused)."),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Output folder."),
    save: Path | None = typer.Option(None, "--save", help="Also fit the first --variant on the whole train split "
                                     "and save it here as a classifier folder."),
) -> None:
    """Spoken language across recording chains: leave-one-source-out over the corpus's families of sources, and
    the unseen split, for each probe recipe. Writes OUT/language_loso.{md,csv,png} and
    OUT/language_loso_cells.{md,csv}."""
    import time

    from audiovae.bench import language as bl
    from audiovae.registry import load

    names = variant or list(bl.VARIANTS)
    unknown = [n for n in names if n not in bl.VARIANTS]
    if unknown:
        raise AudioVAEError(f"unknown --variant '{unknown[0]}' (use {', '.join(bl.VARIANTS)})")
    chosen = [bl.VARIANTS[n] for n in names]
    start = time.time()
    m = load(model)
    with _bar("encoding") as progress:
        corpus = bl.load_corpus(m, data, cache, synthetic if any(v.synthetic for v in chosen) else None,
                                augmented=any(v.augmented for v in chosen), progress=_named(progress))
    folds = bl.loso_folds(corpus.clips) + [bl.unseen_fold(corpus.clips)[0]]
    results = {v.name: bl.run_variant(m, v, corpus, folds, cache, log=console.print) for v in chosen}
    report = bl.write_report(corpus.clips, results, out)
    console.print(report["md"].read_text())
    if save is not None:
        bl.fit_shipped(m, chosen[0], corpus, save, str(data), model)
        console.print(f"saved the {chosen[0].name} probe to {save}")
    console.print(f"table: {report['csv']} (cells: language_loso_cells.csv); confusion ({report['best']}): "
                  f"{report['png']}; {time.time() - start:.0f} s", soft_wrap=True)

"""The ``audiovae`` command. Each command is a thin wrapper over the library."""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console

from audiovae.errors import AudioVAEError, missing_extra

app = typer.Typer(
    help="Variational autoencoders for audio: compress, classify, generate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Build, inspect and shard training corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
codec_app = typer.Typer(help="Entropy models for the codec.", no_args_is_help=True)
app.add_typer(codec_app, name="codec")
bench_app = typer.Typer(help="Benchmarks: CSV + Markdown tables and plots.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
classify_app = typer.Typer(help="Fit, apply and evaluate classifiers on embeddings.", no_args_is_help=True)
app.add_typer(classify_app, name="classify")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from audiovae import __version__

        console.print(f"audiovae {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Options of the audiovae command itself."""


@app.command()
def info(
    file: Path = typer.Argument(..., help="Audio file (WAV, FLAC, Ogg, Opus, MP3, ...)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a spectrogram PNG to this path."),
) -> None:
    """Duration, sample rate, channels, peak and loudness of an audio file."""
    from rich.markup import escape

    from audiovae import audio

    if plot is not None and not plot.parent.is_dir():  # before the work, not after it
        raise AudioVAEError(f"{plot}: folder {plot.parent} does not exist")
    if plot is not None:
        _refuse_existing(plot, True, file)
    meta = audio.info(file)
    x, sr = audio.load(file)
    peak = float(abs(x).max())
    lufs = audio.loudness_lufs(x, sr)
    console.print(f"[bold]{escape(str(file))}[/bold]", soft_wrap=True)
    console.print(f"  format      {meta.format} / {meta.subtype}", highlight=False)
    console.print(f"  duration    {x.shape[1] / sr:.3f} s ({x.shape[1]} frames)")
    console.print(f"  sample rate {sr} Hz")
    console.print(f"  channels    {x.shape[0]}")
    console.print(f"  peak        {20 * math.log10(max(peak, 1e-12)):.1f} dBFS")
    if math.isfinite(lufs):
        console.print(f"  loudness    {lufs:.1f} LUFS")
    else:
        console.print("  loudness    n/a (silent, or shorter than 0.4 s)")
    if plot is not None:
        from audiovae.plots import save_spectrogram

        save_spectrogram(plot, x, sr, title=file.name)
        console.print(f"  spectrogram {escape(str(plot))}")


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the demo's outputs."),
) -> None:
    """Run what the shipped models can do on the shipped clips."""
    from audiovae.demo import run_demo

    run_demo(out, console)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default is this machine only. Any other "
                                               "address needs a token (--token, else one is generated)."),
    port: int = typer.Option(8000, help="TCP port."),
    data: Path | None = typer.Option(None, help="Folder or manifest whose (test) clips the latent map shows."),
    label: str | None = typer.Option(None, help="Manifest label for the map's colors (default: language; "
                                                "folders: parent-dir)."),
    max_upload_mb: float = typer.Option(20.0, help="Largest request body."),
    max_seconds: float = typer.Option(60.0, help="Longest uploaded clip (decoding stops there: 413)."),
    timeout: float = typer.Option(120.0, help="Seconds of processing a request may take once its turn "
                                              "comes (504; its subprocesses are killed)."),
    queue: int = typer.Option(8, min=0, max=32, help="Requests that may wait while one is processed (503 beyond)."),
    read_timeout: float = typer.Option(30.0, help="Seconds a client may take to send a request's headers, "
                                                  "and again its body (408)."),
    allow_host: list[str] = typer.Option([], help="A Host name clients use besides loopback ones "
                                                  "(repeatable), e.g. this machine's name or address."),
    token: str | None = typer.Option(None, envvar="AUDIOVAE_TOKEN", help="Token that requests must carry "
                                     "(Authorization: Bearer, or the cookie that opening /?token=TOKEN sets)."),
) -> None:
    """The local web app: codec A/B listening, classification, generation, latent map; API at /docs."""
    from audiovae.app.server import LOOPBACK, access, host_name
    from audiovae.app.server import serve as run

    if data is not None and not data.exists():
        raise AudioVAEError(f"{data}: no such folder or manifest")
    hosts, token = access(host, allow_host, token)
    if host_name(host) not in LOOPBACK and hosts == list(LOOPBACK):
        err_console.print(f"warning: binding {host}, but only loopback Host names are served: add --allow-host NAME")
    if token is not None:
        name = next((h for h in reversed(hosts) if h not in LOOPBACK), host_name(host) if host_name(host) in LOOPBACK
                    else "127.0.0.1")
        err_console.print(f"token required; open http://{name}:{port}/?token={token}", soft_wrap=True)
    run(host, port, data=data, label=label, max_upload_mb=max_upload_mb, max_seconds=max_seconds, timeout_s=timeout,
        queue=queue, read_timeout_s=read_timeout, hosts=hosts, token=token)


@app.command()
def report(
    bench: Path | None = typer.Option(None, help="Folder of benchmark results (CSV, Markdown, PNG, audio); "
                                            "default: docs/bench when it exists here (a source checkout)."),
    out: Path = typer.Option(Path("out/report.html"), help="The HTML page to write."),
    examples: bool = typer.Option(True, help="Add codec examples on the shipped demo clips (listen + spectrograms)."),
) -> None:
    """Render benchmark results and audio examples into one self-contained HTML page."""
    from audiovae.demo import ASSETS
    from audiovae.report import write_report

    if bench is None and Path("docs/bench").is_dir():
        bench = Path("docs/bench")
    path = write_report(bench, out, sorted(ASSETS.glob("*.flac")) if examples else [])
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", help="Training YAML, e.g. recipes/speech16k/train.yaml."),
    run_dir: Path | None = typer.Option(None, help="Run folder (default runs/NAME)."),
    data: list[Path] | None = typer.Option(None, "--data", help="Manifest(s) replacing the config's."),
    init: str | None = typer.Option(None, help="Start from a pretrained model (name or folder) or a .ckpt."),
    resume: bool = typer.Option(False, help="Continue the run in --run-dir from its last checkpoint."),
    max_minutes: float | None = typer.Option(None, help="Wall-clock budget; stops cleanly with a checkpoint."),
    max_steps: int | None = typer.Option(None, help="Override the config's max_steps."),
    accelerator: str = typer.Option("cpu", help="cpu, gpu or auto."),
    devices: str = typer.Option("1", help="Devices per node (a number or 'auto')."),
    num_nodes: int = typer.Option(1, help="Nodes for multi-node DDP."),
    strategy: str = typer.Option("auto", help="auto or ddp (Lightning strategies)."),
    threads: int | None = typer.Option(None, help="torch threads per process."),
) -> None:
    """Train a VAE (stage 1 spectral + KL, then the adversarial stage), resumably."""
    from dataclasses import replace

    from audiovae.train.config import load_train_config
    from audiovae.train.run import train as run_training

    cfg = load_train_config(config)
    if data:
        cfg = replace(cfg, data=replace(cfg.data, manifests=[str(d) for d in data]))
    if max_steps is not None:
        cfg = replace(cfg, max_steps=max_steps)
    last = run_training(
        cfg, run_dir or Path("runs") / cfg.name, resume=resume, init=init, max_minutes=max_minutes,
        accelerator=accelerator, devices=int(devices) if devices.isdigit() else devices,
        num_nodes=num_nodes, strategy=strategy, threads=threads,
    )
    console.print(f"last checkpoint: {last}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A training checkpoint (.ckpt), or a shipped model's name to copy "
                                                "its files (speech16k, music24k)."),
    out_dir: Path = typer.Argument(..., help="Folder for NAME.safetensors + NAME.json."),
    name: str | None = typer.Option(None, help="Model name (default: the config's name; checkpoints only)."),
    attachments_from: str | None = typer.Option(
        None, "--attachments-from", help="Copy this model's entropy model, prior and embedding head (name or "
        "folder; its encoder must be the checkpoint's, as after a decoder-only fine-tuning)."),
) -> None:
    """Export a checkpoint as fp16 safetensors + a JSON card with its sha256 and encoder_sha256, or copy a shipped
    model (card, weights, entropy model, prior, embedding head) to a folder."""
    from audiovae.registry import copy_attachments, copy_model, list_models, load
    from audiovae.registry import export as export_model

    if str(checkpoint) in list_models() and not checkpoint.exists():
        if name or attachments_from:
            raise AudioVAEError("--name and --attachments-from apply to checkpoints, not to a shipped model")
        for path in copy_model(str(checkpoint), out_dir):
            console.print(f"wrote {path}", soft_wrap=True)
        return
    if not checkpoint.is_file():
        raise AudioVAEError(f"{checkpoint}: neither a training checkpoint (.ckpt) nor a shipped model "
                            f"({', '.join(list_models())})")
    card = export_model(checkpoint, out_dir, name=name)
    console.print(f"wrote {card} and {card.with_suffix('.safetensors')}")
    if attachments_from:
        for path in copy_attachments(load(attachments_from), load(card)):
            console.print(f"wrote {path}", soft_wrap=True)


@app.command()
def models() -> None:
    """List the shipped pretrained models."""
    from audiovae.registry import list_models, load

    for name in list_models():
        m = load(name)
        console.print(f"{name:12s} {m.sample_rate} Hz, {m.latent_dim} x {m.sample_rate / m.hop_length:g} Hz "
                      f"latents, {m.card.get('steps', '?')} steps")
        license = m.card.get("license", {})
        console.print(f"{'':12s} weights {license.get('summary', 'of unstated license')}; see 'license' in "
                      f"{m.card_path.name}", highlight=False)


@app.command()
def reconstruct(
    input: Path = typer.Argument(..., help="Audio file to encode and decode."),
    output: Path = typer.Argument(..., help="WAV or FLAC to write."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Encode to the posterior mean and decode (rate and channels of the input are kept), block by block."""
    from audiovae import audio
    from audiovae.inference import block_frames, reconstruct_blocks
    from audiovae.registry import load

    _refuse_existing(output, force, input)
    meta = _audio_info(input)
    blocks = audio.blocks(input, block_frames(meta.sample_rate))
    audio.save_blocks(output, reconstruct_blocks(load(model), blocks, meta.sample_rate, meta.channels, meta.frames),
                      meta.sample_rate, meta.channels)
    console.print(f"wrote {output}")


def _audio_info(path: Path):
    from audiovae import audio

    meta = audio.info(path)
    if meta.frames == 0:
        raise audio.AudioError(f"{path}: no audio samples (0 frames)")
    return meta


@data_app.command("shard")
def data_shard(
    manifest: Path = typer.Argument(..., help="Manifest (JSONL) to shard."),
    outdir: Path = typer.Argument(..., help="Folder for the tar shards and index.json."),
    split: str = typer.Option("train", "--split", help="Split to write: train, valid or test."),
    shard_mb: float = typer.Option(256, "--shard-mb", help="Target size of one shard in MB."),
    sample_rate: int | None = typer.Option(None, "--sample-rate", help="Resample to this rate."),
) -> None:
    """Write a split as WebDataset tar shards (FLAC + JSON per clip) for streaming training."""
    from rich.progress import Progress

    from audiovae.train.data import write_shards

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(f"sharding {split}", total=None)
        shards = write_shards(manifest, outdir, split, shard_size_mb=shard_mb, sample_rate=sample_rate,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"wrote {len(shards)} {split} shards and index.json to {outdir}")


@data_app.command("build")
def data_build(
    name: str | None = typer.Argument(None, help="Recipe: recipes/NAME/corpus.yaml (speech16k, music24k) "
                                                 "or a corpus.yaml path."),
    root: Path = typer.Option(Path("corpora"), "--root", help="The corpus is written to ROOT/NAME."),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Decoding processes."),
    from_folder: Path | None = typer.Option(None, "--from-folder", help="Build from your own folder of "
                                            "audio files instead of a recipe."),
    label_from: str = typer.Option("parent-dir", "--label-from", help="With --from-folder: parent-dir "
                                   "(labels['label'] = the file's folder name) or none."),
    corpus_name: str | None = typer.Option(None, "--name", help="With --from-folder: corpus name "
                                           "(default: the folder's name)."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="With --from-folder: corpus sample rate."),
) -> None:
    """Build a corpus: decoded, trimmed FLACs, manifest.jsonl, card.json and CARD.md under ROOT/NAME."""
    from audiovae.data.corpus import build, find_recipe, folder_recipe, load_recipe

    if from_folder is not None:
        name = corpus_name or from_folder.resolve().name
        recipe = folder_recipe(from_folder, name, sample_rate, label_from)
    elif name is not None:
        recipe = load_recipe(find_recipe(name))
    else:
        raise typer.BadParameter("give a recipe NAME or --from-folder DIR")
    card = build(recipe, root, jobs=jobs, console=err_console)
    for src in card["sources"]:
        console.print(f"  {src['name']:32} {src['clips']:7d} clips {src['hours']:8.2f} h "
                      f"({src['too_short']} too short, {src['unreadable']} unreadable)")
    splits = ", ".join(f"{k} {v['clips']} clips / {v['hours']:.2f} h" for k, v in card["splits"].items())
    console.print(f"{card['name']}: {card['clips']} clips, {card['hours']:.2f} h ({splits}) "
                  f"in {root / card['name']}")


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
    split: str = typer.Option("test", help="Split to evaluate (report test only)."),
    clips: int = typer.Option(200, help="At most this many clips, spread over the split."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """Posterior-mean reconstruction quality (PESQ, STOI, SI-SDR, mel distance) on a corpus split."""
    from rich.progress import Progress

    from audiovae import bench
    from audiovae.registry import load

    m = load(model)
    with Progress(console=console) as bar:
        task = bar.add_task(f"{m.name} on {split}", total=None)
        rows = bench.quality(m, manifest, split, clips, progress=lambda i, n: bar.update(task, completed=i, total=n))
    bench.write_table(rows, out, f"quality_{m.name}_{split}_clips", f"{m.name} per clip ({split} split)")
    summary = bench.summarize(rows)
    _, md = bench.write_table(summary, out, f"quality_{m.name}_{split}", f"{m.name} reconstruction, {split} split")
    console.print(md.read_text())


@bench_app.command("codec")
def bench_codec(
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with its entropy model)."),
    manifest: Path = typer.Option(..., help="Corpus manifest (e.g. corpora/speech16k/manifest.jsonl)."),
    split: str = typer.Option("test", help="Split to evaluate (report test only)."),
    clips: int = typer.Option(16, help="At most this many clips (2 s or longer), spread over the split."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
    kbps: list[float] | None = typer.Option(None, "--kbps", help="Our codec's target rates (default: "
                                            "1.5 3 3.2 4.5 6 9 12)."),
    classics: bool = typer.Option(True, "--classics/--no-classics", help="Also run Opus, Codec2 and MP3."),
) -> None:
    """Our codec at several bitrates against Opus, Codec2 and MP3 on the same clips."""
    from rich.progress import Progress

    from audiovae import bench
    from audiovae.codec import baselines
    from audiovae.codec.stream import Codec

    missing = baselines.missing_tools()
    if missing:
        err_console.print(f"skipping codecs whose tools are missing; install: apt-get install {' '.join(missing)}")
    codec = Codec(model)
    with Progress(console=console) as bar:
        task = bar.add_task(f"{codec.model.name} vs classic codecs", total=None)
        rows = bench.codec_benchmark(codec, manifest, split, clips,
                                     progress=lambda i, n: bar.update(task, completed=i, total=n),
                                     conditions=bench.codec_conditions(codec.model, kbps or bench.OURS_KBPS,
                                                                       classics))
    name = codec.model.name
    bench.write_table(rows, out, f"codec_{name}_{split}_clips", f"{name} codec per clip ({split} split)")
    summary = bench.summarize_codec(rows)
    _, md = bench.write_table(summary, out, f"codec_{name}_{split}", f"{name} vs classic codecs, {split} split")
    with md.open("a") as f:
        f.write("\nTargets:\n" + "".join(f"- {x}\n" for x in bench.codec_targets(summary, codec.model.sample_rate)))
    plot = bench.plot_rate_quality(summary, out, f"{name} codec, {split} split")
    console.print(md.read_text())
    console.print(f"plot: {plot}")


@bench_app.command("curve")
def bench_curve(
    run_dir: Path = typer.Argument(..., help="A training run folder (runs/NAME)."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
) -> None:
    """Plot validation PESQ and mel distance against training minutes."""
    from audiovae import bench

    console.print(f"wrote {bench.training_curve(run_dir, out)}")


def _embed_with_progress(items, kind: str, model, what: str, skip_errors: bool = True, pooling: str | None = None,
                         embedder=None):
    from rich.progress import Progress

    from audiovae.classify import DEFAULT_POOLING, embed_items

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(what, total=len(items))
        out = embed_items(items, kind, model, lambda i, n: bar.update(task, completed=i), skip_errors=skip_errors,
                          pooling=pooling or DEFAULT_POOLING, embedder=embedder)
    for msg in out[2]:
        err_console.print(f"skipped: {msg}", highlight=False, markup=False, soft_wrap=True)
    return out


def _audio_items(paths: list[Path]) -> list:
    from audiovae import audio
    from audiovae.classify import Item

    items = [Item(f) for p in paths for f in audio.find_audio_files(p)]
    if not items:
        raise AudioVAEError(f"no audio files in {', '.join(map(str, paths))}")
    return items


@app.command()
def embed(
    files: list[Path] = typer.Argument(..., help="Audio files and/or folders (walked recursively)."),
    out: Path = typer.Option(..., "--out", help="The .npz to write (arrays: paths, embeddings)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    pooling: str = typer.Option(None, "--pooling", help="Statistics over time of the posterior: mean-std, "
                                "mean-std-sigma, quantiles, mean-std-max or all (default: the one chosen on valid), "
                                "or learned (the model's embedding head, `audiovae train-embedder`)."),
) -> None:
    """Embed audio files: statistics over time of the VAE posterior (or its learned head), one row per file."""
    import numpy as np

    from audiovae import classify as cl
    from audiovae.files import replaced
    from audiovae.registry import load

    pooling = pooling or cl.DEFAULT_POOLING
    cl.check_pooling(pooling)
    if not out.parent.is_dir():
        raise AudioVAEError(f"{out}: folder {out.parent} does not exist")
    items = _audio_items(files)
    _refuse_existing(out, True, *(it.path for it in items))
    m = load(model)
    x, kept, failed = _embed_with_progress(items, "vae", m, f"embedding with {m.name}", pooling=pooling)
    if not kept:
        raise AudioVAEError(f"none of the {len(items)} files could be embedded")
    with replaced(out) as tmp, tmp.open("wb") as f:
        np.savez(f, paths=np.array([str(items[i].path) for i in kept]), embeddings=x)
    console.print(f"wrote {len(kept)} embeddings ({x.shape[1]} dims, {pooling} pooling) to {out}; {len(failed)} "
                  "file(s) skipped", soft_wrap=True)


def _classifier_model(clf, folder: Path, model: str | None):
    """The model a classifier's features need (None for MFCC), checked against the classifier."""
    from audiovae.registry import load

    if clf.meta["features"] != "vae":
        return None
    m = load(model or clf.meta["model"])
    clf.check_model(m, folder)  # same embedding dimension and encoder (the decoder may differ)
    return m


@classify_app.command("fit")
def classify_fit(
    data: Path = typer.Option(..., "--data", help="A manifest (its train split is used) or a folder of class folders."),
    label: str = typer.Option(..., "--label", help="Manifest label key, or parent-dir for a folder."),
    out: Path = typer.Option(..., "--out", help="Folder for classifier.json + classifier.npz."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (for --features vae)."),
    features: str = typer.Option("vae", "--features", help="vae (posterior embeddings) or mfcc (baseline)."),
    pooling: str = typer.Option(None, "--pooling", help="VAE pooling (default: the one `embed` uses)."),
    estimator: list[str] = typer.Option(None, "--estimator", help="Candidates for cross-validation: logreg, svm, "
                                        "knn (repeat; default: all three). A kNN stores its training set."),
    max_per_class: int = typer.Option(None, "--max-per-class", min=2, help="Use at most this many clips per class."),
    finetune: int = typer.Option(0, "--finetune", min=0, metavar="STEPS", help="First fine-tune the model's learned "
                                 "head with the labels for this many steps (the probe then uses its embeddings; "
                                 "stored in OUT/head.safetensors). Pays off with many labels per class."),
    accelerator: str = typer.Option("cpu", "--accelerator", help="Lightning accelerator for --finetune."),
) -> None:
    """Fit a probe (scaler + logistic regression / linear SVM / kNN, chosen by 5-fold cross-validation)."""
    import numpy as np

    from audiovae import classify as cl
    from audiovae.config import to_dict
    from audiovae.registry import load
    from audiovae.train.head import FinetuneConfig, finetuned_embeddings

    if features not in cl.FEATURE_KINDS:
        raise AudioVAEError(f"unknown --features '{features}' (use {' or '.join(cl.FEATURE_KINDS)})")
    if finetune and (features != "vae" or pooling not in (None, cl.LEARNED)):
        raise AudioVAEError("--finetune fine-tunes the learned head: use it with --features vae and --pooling learned")
    pooling = cl.LEARNED if finetune else pooling or cl.DEFAULT_POOLING
    cl.check_pooling(pooling)
    estimators = tuple(estimator or cl.ESTIMATORS)
    cl.check_estimators(estimators)
    items = cl.labelled_items(data, label, "train")
    if max_per_class is not None:
        items = cl.balanced_subset(items, max_per_class)
    m = load(model) if features == "vae" else None
    tune = FinetuneConfig(steps=finetune)
    if finetune:
        cl.check_pooling(pooling, m)
        means, kept, failed = _embed_with_progress(items, cl.MEANS, m, f"posteriors of {len(items)} clips")
        y = np.array([items[i].label for i in kept])
        cl.check_classes(y)
        head, x = finetuned_embeddings(m, means, y, tune, progress=True, accelerator=accelerator)
    else:
        x, kept, failed = _embed_with_progress(items, features, m, f"{features} features of {len(items)} clips",
                                               pooling=pooling)
        head = None
    meta = {"features": features, "label": label, "data": str(data), "train_clips": len(kept)}
    if m is not None:
        meta |= {"model": str(Path(model).resolve()) if Path(model).is_dir() else model, "model_name": m.name,
                 "model_sha256": m.card.get("sha256"), "encoder_sha256": m.card.get("encoder_sha256")} | \
                cl.pooling_meta(m, pooling) | ({"finetune": to_dict(tune)} if finetune else {})
    clf, cv = cl.fit(x, np.array([items[i].label for i in kept]), meta, estimators=estimators)
    clf.head = head
    clf.save(out)
    console.print(f"{len(clf.classes)} classes, {len(kept)} clips ({len(failed)} skipped): {cv['estimator']} "
                  f"{cv['params']}, cross-validated macro-F1 {cv['cv_macro_f1']:.3f}"
                  + (" (optimistic: the head was fine-tuned on these clips)" if finetune else "")
                  + f"; saved to {out}", soft_wrap=True)


def _write_csv(out: Path | None, rows: list[dict]) -> None:
    """``rows`` as CSV (a header of their keys) into ``out`` at once, or on stdout when ``out`` is None."""
    import csv

    from audiovae.files import write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        write_text(out, buf.getvalue())


@classify_app.command("predict")
def classify_predict(
    folder: Path = typer.Argument(..., help="A classifier folder written by `classify fit`, or a shipped "
                                            "classifier's name (speech16k-language)."),
    files: list[Path] = typer.Argument(..., help="Audio files and/or folders."),
    out: Path | None = typer.Option(None, "--out", help="Write .csv or .json here (default: CSV on stdout)."),
    model: str | None = typer.Option(None, "--model", help="Model name or folder (default: the classifier's)."),
) -> None:
    """Label and probability per file."""
    import json

    from audiovae import classify as cl
    from audiovae.files import write_text

    clf = cl.Classifier.load(folder)
    m = _classifier_model(clf, folder, model)
    items = _audio_items(files)
    if out is not None:
        _refuse_existing(out, True, *(it.path for it in items))
    x, _, _ = _embed_with_progress(items, clf.meta["features"], m, "classifying", skip_errors=False,
                                   pooling=clf.pooling, embedder=clf.head)
    proba = clf.predict_proba(x)
    rows = [{"path": str(it.path), "label": clf.classes[p.argmax()], "probability": round(float(p.max()), 4)}
            for it, p in zip(items, proba, strict=True)]
    if out is not None and out.suffix == ".json":
        write_text(out, json.dumps(rows, indent=2) + "\n")
    else:
        _write_csv(out, rows)
    if out is not None:
        console.print(f"wrote {len(rows)} predictions to {out}", soft_wrap=True)


@classify_app.command("eval")
def classify_eval(
    folder: Path = typer.Argument(..., help="A classifier folder written by `classify fit`."),
    data: Path = typer.Option(..., "--data", help="A manifest or a folder of class folders."),
    split: str = typer.Option("test", "--split", help="Manifest split to evaluate."),
    model: str | None = typer.Option(None, "--model", help="Model name or folder (default: the classifier's)."),
    plot: Path | None = typer.Option(None, "--plot", help="Confusion matrix PNG "
                                     "(default: FOLDER/confusion_SPLIT.png)."),
) -> None:
    """Accuracy, macro-F1 and a confusion matrix on labelled data."""
    from audiovae import classify as cl

    clf = cl.Classifier.load(folder)
    m = _classifier_model(clf, folder, model)
    items = cl.labelled_items(data, clf.meta["label"], split)
    x, kept, failed = _embed_with_progress(items, clf.meta["features"], m, f"evaluating on {split}",
                                           pooling=clf.pooling, embedder=clf.head)
    if not kept:
        raise AudioVAEError(f"{data}: none of the {len(items)} {split} clips could be read")
    result = cl.evaluate([items[i].label for i in kept], clf.predict(x))
    png = cl.plot_confusion(result, plot or folder / f"confusion_{split}.png", f"{folder.name} on {split}")
    console.print(f"{split}: {len(kept)} clips ({len(failed)} skipped), accuracy {result['accuracy']:.3f}, "
                  f"macro-F1 {result['macro_f1']:.3f}; confusion matrix: {png}", soft_wrap=True)


@classify_app.command("suggest")
def classify_suggest(
    files: list[Path] = typer.Argument(..., help="Unlabelled audio files and/or folders, or one .npz written by "
                                       "`audiovae embed`."),
    n: int = typer.Option(..., "--n", min=1, help="How many clips to suggest."),
    out: Path | None = typer.Option(None, "--out", help="Write the CSV here (default: stdout)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (for audio files)."),
    pooling: str = typer.Option(None, "--pooling", help="VAE pooling (default: learned where the model has a head, "
                                "else the one `embed` uses)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the clustering."),
) -> None:
    """The clips to label first: one typical clip per cluster of the embeddings (TypiClust), largest first."""
    import zipfile

    import numpy as np

    from audiovae import classify as cl
    from audiovae.registry import load

    if out is not None:
        _refuse_existing(out, True, *files)
    if len(files) == 1 and files[0].suffix == ".npz":
        try:
            with open(files[0], "rb") as fh, np.load(fh, allow_pickle=False) as f:  # fh: closed on a bad zip too
                paths, x = f["paths"].astype(str), f["embeddings"].astype(np.float32)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:  # TypeError: a .npy
            raise AudioVAEError(f"{files[0]}: not an `audiovae embed` file ({e})") from None
        if x.ndim != 2 or paths.shape != (len(x),):
            raise AudioVAEError(f"{files[0]}: embeddings {x.shape} do not match paths {paths.shape}")
    else:
        m = load(model)
        pooling = pooling or cl.best_pooling(m)
        cl.check_pooling(pooling, m)
        items = _audio_items(files)
        x, kept, _ = _embed_with_progress(items, "vae", m, f"embedding with {m.name}", pooling=pooling)
        paths = [str(items[i].path) for i in kept]
    picks, sizes = cl.suggest(x, n, seed)
    _write_csv(out, [{"rank": r, "path": paths[i], "cluster_size": int(s)}
                     for r, (i, s) in enumerate(zip(picks, sizes, strict=True), 1)])
    if out is not None:
        console.print(f"wrote {len(picks)} suggestions out of {len(paths)} clips to {out}", soft_wrap=True)


@bench_app.command("classify")
def bench_classify(
    corpora: Path = typer.Option(Path("corpora"), help="Folder holding speech16k/ and music24k/ manifests."),
    task: list[str] = typer.Option(None, "--task", help="Task(s) to run (default: all five, listed above)."),
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

    Tasks: language, speaker, instrument-family, source-type, language-cross-source. Writes
    OUT/classify.{md,csv,png}, OUT/classify_pooling_valid.{md,csv} and OUT/classify_tasks.{md,csv}."""
    import time

    from rich.progress import Progress

    from audiovae import bench
    from audiovae import classify as cl
    from audiovae.bench import classify as bt
    from audiovae.registry import load
    from audiovae.train.head import FinetuneConfig

    known = {t.name: t for t in bt.TASKS}
    bad = [t for t in task or [] if t not in known]
    if bad:
        raise AudioVAEError(f"unknown task '{bad[0]}' (use {', '.join(known)})")
    overrides = dict(m.split("=", 1) for m in model or [] if "=" in m)
    if len(overrides) != len(model or []):
        raise AudioVAEError("--model takes NAME=MODEL, e.g. speech16k=runs/speech16k/export")
    if pooling != "auto":
        cl.check_pooling(pooling)
    tasks = [known[t] for t in task] if task else list(bt.TASKS)
    for t in tasks:
        for part in t.train + t.eval_parts:
            bt.task_manifest(part, corpora)
    start, feats, summaries, valid = time.time(), {}, [], []
    models = {name: load(overrides.get(name, name)) for name in dict.fromkeys(t.model for t in tasks)}
    if pooling != "auto":
        for m in models.values():
            cl.check_pooling(pooling, m)
    with Progress(console=err_console, transient=True) as bar:
        progress = bar.add_task("embedding", total=None)
        for t in tasks:
            feats[t.name], summary = bt.task_features(
                t, corpora, models[t.model], cl.model_poolings(models[t.model]), max_train=max_train,
                max_eval=max_eval, means=bool(finetune) and cl.LEARNED in cl.model_poolings(models[t.model]),
                progress=lambda s, i, n: bar.update(progress, description=s, completed=i, total=n))
            summaries.append(summary)
            bar.update(progress, description=f"{t.name}: poolings on valid", completed=0, total=None)
            valid += bt.pooling_rows(t.name, feats[t.name], draws)
        chosen = bt.choose_pooling(valid) if pooling == "auto" else pooling
        compared = bt.compared_pooling(valid, chosen)
        rows = []
        for t in tasks:
            bar.update(progress, description=f"{t.name}: test", completed=0, total=None)
            rows += bt.test_rows(t.name, feats[t.name], chosen, draws=draws,
                                 methods=(*cl.SEMI_METHODS, cl.SUGGESTED) if semi_supervised else (),
                                 compared=compared)
            if cl.MEANS in feats[t.name]["train"][0]:
                bar.update(progress, description=f"{t.name}: fine-tuning the head", completed=0, total=None)
                rows += bt.finetune_rows(t.name, feats[t.name], models[t.model], FinetuneConfig(steps=finetune))
    bench.write_table(summaries, out, "classify_tasks", "Classification tasks (clips embedded per split)")
    bench.write_table(valid, out, "classify_pooling_valid", "Poolings on the valid split (accuracy, macro-F1)")
    csv_path, _ = bench.write_table(rows, out, "classify_long", "Few-label classification, test split")
    title = (f"Test accuracy / macro-F1 at k labels per class (k=all: <= {max_train} per class); VAE pooling "
             f"'{chosen}'" + (f" (and '{compared}': vae:{compared})" if compared else "") + f"; {draws} draws")
    _, md = bench.write_table(bt.wide_table(rows), out, "classify", title)
    fails = bt.floors(rows)
    with md.open("a") as f:
        f.write("\nFloors not met:\n" + "".join(f"- {x}\n" for x in fails) if fails else "\nAll floors met.\n")
    plot = bt.plot_few_label(rows, out / "classify.png", all_at=max_train)
    console.print(md.read_text())
    if pooling == "auto" and chosen != cl.DEFAULT_POOLING:
        console.print(f"note: valid chose pooling '{chosen}', `audiovae embed` defaults to '{cl.DEFAULT_POOLING}'")
    console.print(f"long table: {csv_path}; plot: {plot}; {time.time() - start:.0f} s", soft_wrap=True)


def _refuse_existing(path: Path, force: bool, *inputs: Path) -> None:
    """Refuse an existing output without ``force``, and an output that is one of ``inputs`` (same file, also
    through a link) even with it."""
    if str(path) == "-" or not path.exists():
        return
    for i in inputs:
        if str(i) != "-" and i.exists() and os.path.samefile(i, path):
            raise AudioVAEError(f"{path}: is the input {i} (not overwriting an input, even with --force)")
    if not force:
        raise AudioVAEError(f"{path}: already exists (use --force to overwrite)")


@app.command()
def compress(
    input: Path = typer.Argument(..., help="Audio file (any rate, channels, WAV/FLAC/Ogg/MP3), or - for stdin."),
    output: Path = typer.Argument(..., help="The .avae file to write, or - for stdout."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    kbps: float | None = typer.Option(None, "--kbps", help="Target average bitrate (picks the quality)."),
    quality: int | None = typer.Option(None, "--quality", help="Quality level 1 (smallest) .. 16 (best)."),
    refine: bool | None = typer.Option(None, "--refine/--no-refine", help="Add the envelope refinement layer "
                                       "(default: with --kbps from quality 4 on, without with --quality)."),
    extend: bool = typer.Option(True, "--extend/--no-extend", help="Rebuild the band above the model's from a "
                                "coded envelope (bandwidth extension; on where the input's rate has that band)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Compress audio with the neural codec, block by block (memory does not grow with the length)."""
    import tempfile

    from audiovae import audio
    from audiovae.codec.stream import Codec, check_kbps
    from audiovae.inference import block_frames

    _refuse_existing(output, force, input)
    if kbps is not None and quality is not None:
        raise AudioVAEError("give --kbps or --quality, not both")
    if kbps is not None:
        check_kbps(kbps)
    with tempfile.TemporaryDirectory() as tmp:
        src = input
        if str(input) == "-":  # the length goes into the header: keep stdin in a file
            src = Path(tmp) / "stdin"
            with src.open("wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f)
        meta = _audio_info(src)
        codec = Codec(model)
        blocks = audio.blocks(src, block_frames(meta.sample_rate))
        with _output(output) as f:
            q = codec.write_blocks(f, blocks, meta.sample_rate, meta.channels, meta.frames, kbps=kbps, quality=quality,
                                   refine=refine, extend=None if extend else False)
            size = f.tell()
    rate = size * 8 / meta.duration / 1000
    err_console.print(f"{input} -> {output}: {size} bytes, {rate:.2f} kbps, quality {q}", soft_wrap=True)
    if kbps is not None and abs(rate - kbps) > 0.1 * kbps:
        err_console.print(f"warning: {output}: {rate:.2f} kbps misses the --kbps {kbps:g} target by more than 10 % "
                          "(the model's nearest quality level)", highlight=False, markup=False, soft_wrap=True)


@app.command()
def decompress(
    input: Path = typer.Argument(..., help="An .avae file, or - for stdin."),
    output: Path = typer.Argument(..., help="WAV or FLAC to write, or - for WAV on stdout."),
    model: str | None = typer.Option(None, "--model", help="Model folder (default: the model named in the file)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Decompress an .avae file (original rate and channels restored), block by block."""
    import tempfile

    from audiovae import audio
    from audiovae.codec.format import Reader
    from audiovae.codec.stream import Codec

    _refuse_existing(output, force, input)
    name = "<stdin>" if str(input) == "-" else str(input)
    if str(input) != "-" and not input.is_file():
        raise AudioVAEError(f"{input}: no such file")
    with (sys.stdin.buffer if str(input) == "-" else input.open("rb")) as f:
        reader = Reader(f, name=name)
        codec = Codec.for_header(reader.header, model, name)
        h = reader.header
        sr = h.original_sample_rate
        if str(output) == "-":  # decoded into a temporary WAV first: no partial output on errors
            with tempfile.TemporaryDirectory() as tmp:
                wav = audio.save_blocks(Path(tmp) / "out.wav", codec.stream_decode(reader), sr, h.channels)
                with wav.open("rb") as w:
                    _to_stdout(w)
        else:
            audio.save_blocks(output, codec.stream_decode(reader), sr, h.channels)
    err_console.print(f"{input} -> {output}: {sr} Hz, {h.channels} channel(s)")


@codec_app.command("fit")
def codec_fit(
    model: Path = typer.Argument(..., help="An exported model folder (NAME.json + NAME.safetensors)."),
    manifest: Path = typer.Option(..., help="Corpus manifest; its train split is used."),
    clips: int = typer.Option(400, help="Number of train clips to fit on."),
) -> None:
    """Fit the context entropy model on a model's train-split latents and store it with the model."""
    from audiovae import audio
    from audiovae.codec.stream import fit_for_model
    from audiovae.data.manifest import read_manifest, spread
    from audiovae.registry import load

    m = load(model)
    entries, _ = read_manifest(manifest, split="train")
    chosen = spread(entries, clips)
    waves = [audio.load(e.audio_path(manifest.parent), sample_rate=m.sample_rate, mono=True, offset=e.offset,
                        duration=e.duration)[0][0] for e in chosen]
    fit_for_model(m, waves, m.sample_rate)
    console.print(f"fitted the entropy model of {model} on {len(waves)} train clips")


@app.command("train-prior")
def train_prior(
    config: Path | None = typer.Option(None, "--config", help="Prior YAML, e.g. recipes/speech16k/prior.yaml."),
    model: str | None = typer.Option(None, "--model", help="VAE name or folder (overrides the config)."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Corpus manifest (overrides the config)."),
    label: str | None = typer.Option(None, "--label", help="Manifest label key to condition on (overrides)."),
    init: str | None = typer.Option(None, "--init", help="Start from the prior stored with this model (overrides)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", "--out", help="Run folder (default runs/NAME)."),
    resume: bool = typer.Option(False, help="Continue the run in --run-dir from its last checkpoint."),
    max_minutes: float | None = typer.Option(None, help="Wall-clock budget; stops cleanly with a checkpoint."),
    max_steps: int | None = typer.Option(None, help="Override the config's max_steps."),
    threads: int | None = typer.Option(None, help="torch threads."),
    accelerator: str = typer.Option("cpu", help="cpu, gpu or auto."),
    export: bool = typer.Option(False, "--export", help="Afterwards store the prior with the model "
                                "(NAME.prior.safetensors + its card)."),
) -> None:
    """Train a latent prior on a corpus's cached latents (encoded once into RUN/latents), resumably."""
    from audiovae.train import prior

    cfg = prior.load_prior_config(config) if config else prior.PriorTrainConfig()
    _train_on_latents(cfg, {"model": model, "manifest": manifest, "label": label, "init": init,
                            "max_steps": max_steps}, run_dir,
                      prior.train_prior, prior.export_prior if export else None, resume=resume,
                      max_minutes=max_minutes, accelerator=accelerator, threads=threads)


def _train_on_latents(cfg, overrides: dict, run_dir: Path | None, train, export, **run) -> None:
    """Train ``cfg`` with the options given (``overrides`` not None) into ``run_dir`` (default runs/NAME), then
    store the result with its VAE when ``export`` is given."""
    from dataclasses import replace

    cfg = replace(cfg, **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items() if v is not None})
    last = train(cfg, run_dir or Path("runs") / cfg.name, **run)
    console.print(f"last checkpoint: {last}")
    if export is not None:
        console.print(f"wrote {export(last, cfg.model)}")


@app.command("export-prior")
def export_prior_cmd(
    checkpoint: Path = typer.Argument(..., help="A prior training checkpoint (.ckpt)."),
    model: str = typer.Option(..., "--model", help="The VAE it was trained for: name or folder."),
    guidance: float | None = typer.Option(None, "--guidance", help="Default classifier-free guidance of sampling "
                                          "(default: the config's `guidance`)."),
    classifier_guidance: float | None = typer.Option(
        None, "--classifier-guidance", help="Default weight of the prior's label guide in sampling (default: the "
        "config's `classifier_guidance`)."),
) -> None:
    """Store a trained prior with its VAE (NAME.prior.safetensors, recorded in NAME.json with its sha256 and the
    VAE's sha256 and encoder_sha256); any model with the encoder it was trained on will do."""
    from audiovae.train.prior import export_prior

    console.print(f"wrote {export_prior(checkpoint, model, guidance, classifier_guidance)}")


@app.command("train-embedder")
def train_embedder(
    config: Path | None = typer.Option(None, "--config", help="Embedder YAML, e.g. recipes/speech16k/embedder.yaml."),
    model: str | None = typer.Option(None, "--model", help="VAE name or folder (overrides the config)."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Corpus manifest (overrides the config)."),
    latents: Path | None = typer.Option(None, "--latents", help="Folder of train / valid latent caches of the "
                                        "same weights and manifest to reuse, read only (e.g. a prior run's)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", "--out", help="Run folder (default runs/NAME)."),
    resume: bool = typer.Option(False, help="Continue the run in --run-dir from its last checkpoint."),
    max_minutes: float | None = typer.Option(None, help="Wall-clock budget; stops cleanly with a checkpoint."),
    max_steps: int | None = typer.Option(None, help="Override the config's max_steps."),
    threads: int | None = typer.Option(None, help="torch threads."),
    accelerator: str = typer.Option("cpu", help="cpu, gpu or auto."),
    export: bool = typer.Option(False, "--export", help="Afterwards store the head with the model "
                                "(NAME.embed.safetensors + its card): the `learned` pooling."),
) -> None:
    """Train an embedding head on a corpus's cached latents without labels (SimCLR over crops), resumably."""
    from audiovae.train import embedder

    cfg = embedder.load_embed_config(config) if config else embedder.EmbedTrainConfig()
    _train_on_latents(cfg, {"model": model, "manifest": manifest, "latents": latents, "max_steps": max_steps},
                      run_dir, embedder.train_embedder, embedder.export_embedder if export else None, resume=resume,
                      max_minutes=max_minutes, accelerator=accelerator, threads=threads)


@app.command("export-embedder")
def export_embedder_cmd(
    checkpoint: Path = typer.Argument(..., help="An embedder training checkpoint (.ckpt)."),
    model: str = typer.Option(..., "--model", help="The VAE it was trained for: name or folder."),
) -> None:
    """Store a trained embedding head with its VAE (NAME.embed.safetensors, recorded with its sha256 in NAME.json)."""
    from audiovae.train.embedder import export_embedder

    console.print(f"wrote {export_embedder(checkpoint, model)}")


def _outputs(out: Path, count: int, stem: str) -> list[Path]:
    """``count`` output paths: OUT itself (an audio file name) or numbered files in OUT (a folder)."""
    if out.suffix.lower() in (".wav", ".flac"):
        return [out] if count == 1 else [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(count)]
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"{stem}-{k}.wav" for k in range(count)]


def _write_all(paths: list[Path], clips, sample_rate: int, force: bool, *inputs: Path) -> None:
    from audiovae import audio

    for p in paths:
        _refuse_existing(p, force, *inputs)
    for p, x in zip(paths, clips, strict=True):
        audio.save(p, x, sample_rate)
        console.print(f"wrote {p}", soft_wrap=True)


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="A .wav/.flac file, or a folder for numbered files."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    label: str | None = typer.Option(None, "--label", help="Condition on this label (see the error for the list)."),
    seconds: float = typer.Option(4.0, "--seconds", help="Length of each clip."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    guidance: float | None = typer.Option(None, "--guidance", help="Classifier-free guidance scale "
                                          "(1: plain conditional; default: the prior's, 3 unless set at export)."),
    classifier_guidance: float | None = typer.Option(
        None, "--classifier-guidance", help="Weight of the prior's label guide (0: off; default: the prior's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the first clip (clip k uses seed + k)."),
    n: int = typer.Option(1, "-n", min=1, help="Number of clips."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
) -> None:
    """Sample new audio from the model's latent prior (deterministic for a seed)."""
    from audiovae.generate import Generator

    gen = Generator(model)
    gen.frames(seconds), gen.label_index(label)  # bad arguments fail before any output is written
    paths = _outputs(out, n, f"{gen.model.name}-{label or 'any'}-seed{seed}")
    clips = (gen.sample(seconds, label, temperature, guidance, seed + k, classifier_guidance) for k in range(n))
    _write_all(paths, clips, gen.sample_rate, force)


@app.command("continue")
def continue_(
    prompt: Path = typer.Argument(..., help="Audio to continue (any rate; mixed to mono)."),
    out: Path = typer.Option(..., "--out", help="WAV or FLAC: the prompt's reconstruction and its continuation."),
    seconds: float = typer.Option(4.0, "--seconds", help="Seconds to add."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    label: str | None = typer.Option(None, "--label", help="Condition the continuation on this label."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Continue a clip with the latent prior."""
    from audiovae import audio
    from audiovae.generate import Generator

    _refuse_existing(out, force, prompt)
    gen = Generator(model)
    x, sr = audio.load(prompt)
    _write_all([out], [gen.continue_audio(x, sr, seconds, label, temperature, seed=seed)], gen.sample_rate, True)


@app.command()
def interpolate(
    a: Path = typer.Argument(..., help="Start clip."),
    b: Path = typer.Argument(..., help="End clip."),
    out: Path = typer.Option(..., "--out", help="Folder for step-0.wav .. step-(N-1).wav."),
    steps: int = typer.Option(8, "--steps", min=2, help="Number of clips from A to B (ends included)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
) -> None:
    """Morph A into B: spherical interpolation of their latent sequences (cut to the shorter)."""
    from audiovae import audio
    from audiovae.generate import Generator

    gen = Generator(model)
    (xa, sra), (xb, srb) = audio.load(a), audio.load(b)
    _write_all(_outputs(out, steps, "step"), gen.interpolate(xa, sra, xb, srb, steps), gen.sample_rate, force, a, b)


@app.command()
def arithmetic(
    clip: Path = typer.Argument(..., help="Clip whose content is kept."),
    minus: Path = typer.Option(..., "--minus", help="Clip whose average character is taken out."),
    plus: Path = typer.Option(..., "--plus", help="Clip whose average character is put in."),
    out: Path = typer.Option(..., "--out", help="WAV or FLAC to write (at the model's rate)."),
    scale: float = typer.Option(1.0, "--scale", help="How far to move (0: the clip's reconstruction)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Latent arithmetic: CLIP - MINUS + PLUS on time-averaged latents (e.g. swap the voice or recording)."""
    from audiovae import audio
    from audiovae.generate import Generator

    _refuse_existing(out, force, clip, minus, plus)
    gen = Generator(model)
    x = gen.arithmetic(*audio.load(clip), audio.load(minus), audio.load(plus), scale)
    _write_all([out], [x], gen.sample_rate, True)


@app.command()
def transfer(
    content: Path = typer.Argument(..., help="Audio whose content is kept."),
    out: Path = typer.Option(..., "--out", help="WAV or FLAC to write (at the target model's rate)."),
    model: str = typer.Option("music24k", "--model", help="Target model: its decoder renders the result."),
    source: str = typer.Option("speech16k", "--source", help="Model that encodes the content."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Timbre transfer: encode with --source, map latent statistics, decode with --model (channels kept)."""
    from audiovae import audio
    from audiovae.generate import Generator
    from audiovae.generate import transfer as run

    _refuse_existing(out, force, content)
    target = Generator(model)
    x, sr = audio.load(content)
    _write_all([out], [run(x, sr, source, target)], target.sample_rate, True)


@bench_app.command("generate")
def bench_generate(
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    manifest: Path = typer.Option(..., help="Corpus manifest (e.g. corpora/speech16k/manifest.jsonl)."),
    clips: int = typer.Option(100, help="Test clips (and as many generated, N(0, I) and train clips)."),
    per_label: int = typer.Option(10, "--per-label", help="Generated clips per label for the accuracy."),
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
    from rich.progress import Progress

    from audiovae import bench
    from audiovae.bench import generate as bg
    from audiovae.generate import Generator
    from audiovae.plots import save_recognition

    torch.set_num_threads(1)
    gen = Generator(model)
    target = Generator(transfer_to) if html is not None and transfer_to else None  # fail before the work
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("generating", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = bg.evaluate(gen, manifest, clips, per_label, guidance, temperature, progress=report,
                             classifier_guidance=classifier_guidance)
        moved = [] if arithmetic is None else bg.arithmetic(gen, manifest, arithmetic, progress=report)
    name = gen.model.name
    _, md = bench.write_table(result["fd"], out, f"generate_{name}_fd",
                              f"{name}: Fréchet distance to {clips} test clips (lower is better)")
    console.print(md.read_text())
    _, md = bench.write_table([result["speed"]], out, f"generate_{name}_speed", f"{name}: sampling on one CPU thread")
    console.print(md.read_text())
    if result["accuracy"]:
        _, md = bench.write_table(result["accuracy"], out, f"generate_{name}_accuracy",
                                  f"{name}: '{gen.label_key}' recognized on generated and real test clips "
                                  f"(probes fitted on real train clips: on '{result['probe']}' embeddings, "
                                  "and on MFCC statistics for the _mfcc columns)")
        console.print(md.read_text())
        png = save_recognition(out / f"generate_{name}_accuracy.png", result["accuracy"],
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


@contextlib.contextmanager
def _output(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` (renamed into place, or copied to stdout for -) only when the
    block succeeds; on any error nothing is left behind."""
    import tempfile

    from audiovae.files import replaced

    stdout = str(path) == "-"
    if not stdout and not path.parent.is_dir():
        raise AudioVAEError(f"{path}: folder {path.parent} does not exist")
    try:
        if stdout:
            with tempfile.TemporaryFile() as f:  # nameless: nothing to leave behind
                yield f
                f.seek(0)
                _to_stdout(f)
        else:
            with replaced(path) as tmp, tmp.open("w+b") as f:
                yield f
    except OSError as e:
        raise AudioVAEError(f"{path}: cannot write ({e.strerror or e})") from None


def _to_stdout(f: BinaryIO | None = None) -> None:
    """Copy ``f`` to stdout and flush it: a closed pipe or a full disk is a one-line error."""
    try:
        if f is not None:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.flush()
    except OSError as e:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left in the buffer: nowhere
        raise AudioVAEError(f"<stdout>: cannot write ({e.strerror or e})") from None


def _terminated(signum: int, frame) -> None:
    """SIGTERM unwinds like Ctrl-C (``finally`` blocks remove temp files); a second one cannot cut that short."""
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        try:
            app()
        finally:
            _to_stdout()  # a full or closed stdout fails here, not in a traceback at exit
    except AudioVAEError as e:
        err_console.print(f"audiovae: error: {e}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except ModuleNotFoundError as e:
        if missing_extra(e) is None:
            raise
        err_console.print(f"audiovae: error: {missing_extra(e)}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except OSError as e:  # one not met where its path is known (there: AudioVAEError)
        err_console.print(f"audiovae: error: {e.filename}: {e.strerror}" if e.filename and e.strerror else
                          f"audiovae: error: {e}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("audiovae: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""``train``, ``train-prior``, ``export-prior``, ``train-embedder`` and ``export-embedder``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from audiovae.cli.common import app, output, say

# Options declared once: train-prior and train-embedder share all of these, train the first four.
Resume = Annotated[bool, typer.Option(help="Continue the run in --run-dir from its last checkpoint.")]
MaxMinutes = Annotated[float | None, typer.Option(help="Wall-clock budget; stops cleanly with a checkpoint.")]
MaxSteps = Annotated[int | None, typer.Option(help="Override the config's max_steps.")]
Accelerator = Annotated[str, typer.Option(help="cpu, gpu or auto.")]
LatentModel = Annotated[str | None, typer.Option("--model", help="VAE name or folder (overrides the config).")]
Manifest = Annotated[Path | None, typer.Option("--manifest", help="Corpus manifest (overrides the config).")]
RunDir = Annotated[Path | None, typer.Option("--run-dir", "--out", help="Run folder (default runs/NAME).")]
Threads = Annotated[int | None, typer.Option(help="torch threads.")]


@app.command()
def train(
    config: Path = typer.Option(..., "--config", help="Training YAML, e.g. recipes/speech16k/train.yaml."),
    run_dir: Path | None = typer.Option(None, help="Run folder (default runs/NAME)."),
    data: list[Path] | None = typer.Option(None, "--data", help="Manifest(s) replacing the config's."),
    init: str | None = typer.Option(None, help="Start from a pretrained model (name or folder) or a .ckpt."),
    steps_from: str | None = typer.Option(None, help="With --init: start the per-channel quantization steps "
                                          "(rd) from this model's (name or folder) instead of --init's."),
    resume: Resume = False,
    max_minutes: MaxMinutes = None,
    max_steps: MaxSteps = None,
    accelerator: Accelerator = "cpu",
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
        cfg, run_dir or Path("runs") / cfg.name, resume=resume, init=init, steps_from=steps_from,
        max_minutes=max_minutes, accelerator=accelerator, devices=int(devices) if devices.isdigit() else devices,
        num_nodes=num_nodes, strategy=strategy, threads=threads, progress=output.level >= 0,
    )
    say(f"last checkpoint: {last}")


@app.command("train-prior")
def train_prior(
    config: Path | None = typer.Option(None, "--config", help="Prior YAML, e.g. recipes/speech16k/prior.yaml."),
    model: LatentModel = None,
    manifest: Manifest = None,
    label: str | None = typer.Option(None, "--label", help="Manifest label key to condition on (overrides)."),
    init: str | None = typer.Option(None, "--init", help="Start from the prior stored with this model (overrides)."),
    run_dir: RunDir = None,
    resume: Resume = False,
    max_minutes: MaxMinutes = None,
    max_steps: MaxSteps = None,
    threads: Threads = None,
    accelerator: Accelerator = "cpu",
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
    last = train(cfg, run_dir or Path("runs") / cfg.name, progress=output.level >= 0, **run)
    say(f"last checkpoint: {last}")
    if export is not None:
        say(f"wrote {export(last, cfg.model)}")


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

    say(f"wrote {export_prior(checkpoint, model, guidance, classifier_guidance)}")


@app.command("train-embedder")
def train_embedder(
    config: Path | None = typer.Option(None, "--config", help="Embedder YAML, e.g. recipes/speech16k/embedder.yaml."),
    model: LatentModel = None,
    manifest: Manifest = None,
    latents: Path | None = typer.Option(None, "--latents", help="Folder of train / valid latent caches of the "
                                        "same weights and manifest to reuse, read only (e.g. a prior run's)."),
    run_dir: RunDir = None,
    resume: Resume = False,
    max_minutes: MaxMinutes = None,
    max_steps: MaxSteps = None,
    threads: Threads = None,
    accelerator: Accelerator = "cpu",
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

    say(f"wrote {export_embedder(checkpoint, model)}")

"""``models`` and ``export``."""

from __future__ import annotations

from pathlib import Path

import typer

from audiovae.cli.common import app, console, say
from audiovae.errors import AudioVAEError


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
            say(f"wrote {path}")
        return
    if not checkpoint.is_file():
        raise AudioVAEError(f"{checkpoint}: neither a training checkpoint (.ckpt) nor a shipped model "
                            f"({', '.join(list_models())})")
    card = export_model(checkpoint, out_dir, name=name)
    say(f"wrote {card} and {card.with_suffix('.safetensors')}")
    if attachments_from:
        for path in copy_attachments(load(attachments_from), load(card)):
            say(f"wrote {path}")


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

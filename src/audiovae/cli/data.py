"""``data build`` and ``data shard``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from audiovae.cli.common import console, data_app, err_console, output, say
from audiovae.cli.progress import bars


@data_app.command("shard")
def data_shard(
    manifest: Path = typer.Argument(..., help="Manifest (JSONL) to shard."),
    outdir: Path = typer.Argument(..., help="Folder for the tar shards and index.json."),
    split: str = typer.Option("train", "--split", help="Split to write: train, valid or test."),
    shard_mb: float = typer.Option(256, "--shard-mb", help="Target size of one shard in MB."),
    sample_rate: int | None = typer.Option(None, "--sample-rate", help="Resample to this rate."),
) -> None:
    """Write a split as WebDataset tar shards (FLAC + JSON per clip) for streaming training."""
    from audiovae.train.data import write_shards

    with bars() as b, b.task(f"sharding {split}") as progress:
        shards = write_shards(manifest, outdir, split, shard_size_mb=shard_mb, sample_rate=sample_rate,
                              progress=progress)
    say(f"wrote {len(shards)} {split} shards and index.json to {outdir}")


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
    card = build(recipe, root, jobs=jobs, console=Console(quiet=True) if output.level < 0 else err_console)
    for src in card["sources"]:
        console.print(f"  {src['name']:32} {src['clips']:7d} clips {src['hours']:8.2f} h "
                      f"({src['too_short']} too short, {src['unreadable']} unreadable)")
    splits = ", ".join(f"{k} {v['clips']} clips / {v['hours']:.2f} h" for k, v in card["splits"].items())
    console.print(f"{card['name']}: {card['clips']} clips, {card['hours']:.2f} h ({splits}) "
                  f"in {root / card['name']}")

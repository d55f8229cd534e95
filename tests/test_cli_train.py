"""The training commands' options: train-prior and train-embedder declare their shared options once (cli/train.py)
and keep them as they were."""

import typer

from audiovae.cli import app

SHARED = ("model", "manifest", "run_dir", "resume", "max_minutes", "max_steps", "threads", "accelerator")


def options(command: str) -> dict:
    params = typer.main.get_command(app).commands[command].params
    return {p.name: (tuple(p.opts), tuple(p.secondary_opts), p.help, p.default) for p in params}


def test_train_prior_and_train_embedder_share_their_options():
    prior, embedder = options("train-prior"), options("train-embedder")
    assert {k: prior[k] for k in SHARED} == {k: embedder[k] for k in SHARED}
    assert prior["run_dir"][0] == ("--run-dir", "--out") and prior["resume"][1] == ("--no-resume",)
    assert prior["accelerator"][3] == "cpu" and prior["max_steps"][3] is None
    assert {k: options("train")[k] for k in ("resume", "max_minutes", "max_steps", "accelerator")} == \
        {k: prior[k] for k in ("resume", "max_minutes", "max_steps", "accelerator")}

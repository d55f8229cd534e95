"""``serve`` (the web app), ``demo`` and ``report``."""

from __future__ import annotations

from pathlib import Path

import typer

from audiovae.cli.common import app, console, err_console, say, warn
from audiovae.cli.progress import bars
from audiovae.errors import AudioVAEError


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the demo's outputs."),
) -> None:
    """Run what the shipped models can do on the shipped clips."""
    from audiovae.demo import run_demo

    with bars(lines=console) as b, b.task("demo") as progress:
        run_demo(out, console, progress)
    say(f"audio, .avae files and spectrograms in {out}/")
    say("try: audiovae compress in.wav out.avae --kbps 6 && audiovae decompress out.avae out.wav")
    say("the web app: audiovae serve (then open http://127.0.0.1:8000); a report: audiovae report")


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
        warn(f"binding {host}, but only loopback Host names are served: add --allow-host NAME")
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
    with bars() as b, b.task("report") as progress:
        path = write_report(bench, out, sorted(ASSETS.glob("*.flac")) if examples else [], progress=progress)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")

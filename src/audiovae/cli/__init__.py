"""The ``audiovae`` command: one thin module per command group (parse, call the library, print)."""

from __future__ import annotations

import signal
import sys

# isort: off
# the command groups, in the order `audiovae --help` lists them
from audiovae.cli import codec, classify, generate, web, models, train, data, bench  # noqa: F401
# isort: on
from audiovae.cli.common import app, err_console, report_error, to_stdout
from audiovae.errors import AudioVAEError, missing_extra

__all__ = ["app", "main"]


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
            to_stdout()  # a full or closed stdout fails here, not in a traceback at exit
    except (AudioVAEError, OSError) as e:  # an OSError: one not met where its path is known (there: AudioVAEError)
        report_error(e)
        sys.exit(1)
    except ModuleNotFoundError as e:
        if missing_extra(e) is None:
            raise
        err_console.print(f"audiovae: error: {missing_extra(e)}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("audiovae: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""``python -m audiovae``: the same CLI as the ``audiovae`` command."""

from audiovae.cli import main

main()

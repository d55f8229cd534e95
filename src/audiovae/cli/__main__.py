"""``python -m audiovae.cli``."""

from audiovae.cli import main

main()

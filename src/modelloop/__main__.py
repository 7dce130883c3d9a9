"""``python -m modelloop`` runs the CLI."""

from modelloop.cli import main

main()

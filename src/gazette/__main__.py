"""``python -m gazette`` runs the CLI."""

from gazette.cli import main

main()

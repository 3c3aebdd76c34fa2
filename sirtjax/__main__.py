"""``python -m sirtjax`` runs the command line."""

from sirtjax.cli import run

run()

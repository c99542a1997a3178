"""``python -m hardneg``: the CLI."""

from .cli import main

main()

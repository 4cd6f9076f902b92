"""``python -m app.cli``: the same as the ``jobstack`` command."""

from app.cli import main

main()

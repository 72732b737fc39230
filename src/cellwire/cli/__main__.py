"""``python -m cellwire.cli``: the same command as the ``cellwire`` script."""

from cellwire.cli import main

main()

"""``python -m backend.cli``: the ``brainmia`` command."""

from . import main

main()

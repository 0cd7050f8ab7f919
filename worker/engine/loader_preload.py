"""Imported once in the data loaders' fork server: runs the parent's main script there.

A fork-server child re-runs the parent's main script (``python script.py``, or a console script
such as ``brainmia``) with everything it imports unless the fork server already holds it: about
1 s for the command line, paid by every loader worker of every extraction (a federation's rounds
start one loader each). Preloading ``__main__`` is meant to prevent that, but Python before
3.13.8 never does it (CPython gh-126631: the path it looks for is under another key), so
the loaders' context (:mod:`worker.engine.dataset`) passes the path in :data:`MAIN_ENV` and this module,
first in the preload list, imports it the way the fork server would. Where the fork server has
already done so, or the main is a module (``python -m``, which children never re-run), it does
nothing.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import process, spawn

MAIN_ENV = "BRAINMIA_LOADER_MAIN_SCRIPT"
"""The parent's main script, as :func:`multiprocessing.spawn.get_preparation_data` names it."""


def preload_main() -> None:
    """Import the script named in :data:`MAIN_ENV` as ``__mp_main__`` (the children then skip it)."""
    path = os.environ.get(MAIN_ENV)
    if not path or getattr(sys.modules.get("__main__"), "__file__", None) == path or not os.path.isfile(path):
        return
    process.current_process()._inheriting = True  # type: ignore[attr-defined] # as the fork server does
    try:
        spawn.import_main_path(path)
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]


preload_main()

"""Reading a small JSON or TOML settings file (a policy, a recipe) whose fields may sit under one table."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError


def read_table_file(path: str | Path, table: str, what: str) -> Any:
    """The fields of a ``.json`` or ``.toml`` file, unwrapped from a lone ``[table]``.

    Args:
        path: the file.
        table: the table name the fields may sit under (``policy``, ``recipe``).
        what: what the file is, for messages (``policy``, ``recipe``).

    Raises:
        InputError: unreadable file, wrong suffix, syntax error (the file named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the {what} file ({getattr(exc, 'strerror', None) or exc})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise InputError(f"{path}: a {what} file must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    if isinstance(data, Mapping) and set(data) == {table}:
        data = data[table]
    return data

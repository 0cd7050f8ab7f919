"""Messages between the supervisor and the model host: a JSON header and raw arrays, no pickle.

The host runs untrusted code, so nothing it sends is ever unpickled: a message is an 8-byte
length, a JSON header (``{"op": ..., "arrays": [{"name", "dtype", "shape"}], ...}``) and the
arrays' bytes in order. Only plain numeric dtypes are accepted, and sizes are bounded before
anything is allocated.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, BinaryIO

import numpy as np

DTYPES = {"float32", "float64", "int64", "int32", "uint8", "bool"}
MAX_HEADER_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 16 << 30


class ProtocolError(RuntimeError):
    """A malformed or oversized message (from a hostile or crashed host)."""


def write_message(out: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    """Send ``header`` and ``arrays`` on ``out``."""
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    for name, array in arrays.items():
        if array.dtype.name not in DTYPES:
            raise ProtocolError(f"array '{name}' has dtype {array.dtype.name}, not one of {sorted(DTYPES)}")
    meta = [{"name": k, "dtype": v.dtype.name, "shape": list(v.shape)} for k, v in arrays.items()]
    head = json.dumps({**header, "arrays": meta}).encode()
    out.write(struct.pack("<Q", len(head)) + head)
    for array in arrays.values():
        out.write(memoryview(array).cast("B"))
    out.flush()


def _read_exact(src: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = src.read(left)
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(src: BinaryIO, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Receive one message from ``src``.

    Raises:
        EOFError: the channel closed.
        ProtocolError: malformed, unknown dtype, or larger than ``max_bytes``.
    """
    (size,) = struct.unpack("<Q", _read_exact(src, 8))
    if size > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {size} bytes")
    try:
        header = json.loads(_read_exact(src, size))
        meta = header.pop("arrays")
        specs = [(str(m["name"]), str(m["dtype"]), tuple(int(d) for d in m["shape"])) for m in meta]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed message header: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed message header")
    total = 0
    for _, dtype, shape in specs:
        if dtype not in DTYPES or any(d < 0 for d in shape):
            raise ProtocolError(f"array of dtype {dtype!r} and shape {shape}")
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes (more than {max_bytes})")
    arrays = {}
    for name, dtype, shape in specs:
        count = int(np.prod(shape, dtype=np.int64))
        data = _read_exact(src, count * np.dtype(dtype).itemsize)
        arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return header, arrays


def channel(fd: int, mode: str) -> BinaryIO:
    """A buffered binary file on a pipe's file descriptor (``rb`` or ``wb``)."""
    return os.fdopen(fd, mode, buffering=1 << 20)

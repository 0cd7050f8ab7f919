"""The model host: the confined child process that loads and runs an untrusted model.

Started by :class:`~worker.engine.sandbox.client.ModelHost` as
``python -m worker.engine.sandbox.host IN_FD OUT_FD CONFIG_JSON``. It imports and warms up
everything it needs, confines itself (:func:`~worker.engine.sandbox.confine.confine`), says
``ready``, then answers requests (:mod:`.protocol`) one at a time:

* ``load`` (the file's bytes, its name and resolved metadata): the model is loaded from memory,
  its operators checked, and, with ``check``, run once on a blank volume; the answer gives its
  format, digest and layer names;
* ``features`` (a batch of conformed volumes, their ages and the gradient method): the per-scan
  feature values, and the gradient method in use;
* ``close``.

An error answer holds a category and a reason written by BrainMIA's own checks, never the
model's own output (which goes to stderr, the server log).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _warm_up(device: str, white_box: bool = True) -> None:
    """Run the extraction path once on a small built-in model before the confinement: what torch
    sets up on first use (thread pools, CPU detection, CUDA, torch.func's probe of a temporary
    folder, which the host cannot write once confined) is then in place."""
    import tempfile

    import torch

    from ..features.batch import BatchComputer
    from ..features.methods import available_methods
    from ..models.architectures import BrainAge3D

    tempfile.gettempdir()  # cached: later callers get the name without probing the folder
    model = BrainAge3D(channels=(2, 2)).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    computer = BatchComputer(model, device)
    # not a blank volume: on a constant one instance norm divides by ~sqrt(eps) and ReLU and max
    # pooling sit on ties, where exact methods may take different (equally valid) subgradients and
    # the method check would log that they disagree
    x = torch.randn((2, 1, 16, 16, 16), generator=torch.Generator().manual_seed(0))
    methods = available_methods(computer.fmodel) if white_box else [None]
    for method in methods:  # each once (timing them all, as ``auto`` does, costs more and sets up nothing else)
        computer.compute(x, torch.full((2,), 50.0), white_box, list(computer.aliases.values()), method)


def _user_name() -> None:
    """Put the user name in the environment while ``/etc/passwd`` can still be read: libraries
    imported later, in confinement, ask for it (MONAI's ``import monai`` calls ``getpass.getuser()``)."""
    import getpass

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "model-host"
    os.environ.setdefault("LOGNAME", name)


def _answer_error(exc: BaseException) -> dict[str, Any]:
    from ..errors import InputError, ModelError

    if isinstance(exc, ModelError):
        return {"ok": False, "kind": "model", "reason": exc.reason}
    if isinstance(exc, InputError):
        return {"ok": False, "kind": "input", "reason": str(exc)[:500]}
    if isinstance(exc, MemoryError) or "bad_alloc" in str(exc) or "DefaultCPUAllocator" in str(exc):
        return {"ok": False, "kind": "memory", "reason": "the model ran out of memory"}
    # anything else comes from running the model: its text is the model's, so only the type goes back
    print(f"model host: {type(exc).__name__}: {str(exc)[:4000]}", file=sys.stderr, flush=True)
    return {"ok": False, "kind": "model", "reason": f"the model raised {type(exc).__name__} while it ran "
            "(its own message is not shown)"}


def serve(inp: Any, out: Any, device: str) -> None:
    """Answer requests until ``close`` or the end of the channel."""
    import numpy as np
    import torch

    from ..features.extract import exact_float32
    from ..models.loading import load_model
    from ..models.metadata import ModelMetadata
    from .protocol import read_message, write_message

    computer = None
    while True:
        try:
            header, arrays = read_message(inp)
        except EOFError:
            return
        op = header.get("op")
        try:
            if op == "close":
                write_message(out, {"ok": True})
                return
            if op == "load":
                computer = None
                metadata = ModelMetadata.model_validate(header["metadata"])
                loaded = load_model(Path(str(header["name"])), data=arrays["file"].tobytes(), metadata=metadata,
                                    device=device, check=bool(header.get("check", True)))
                del arrays
                computer = loaded.computer(device)
                write_message(out, {"ok": True, "format": loaded.format, "sha256": loaded.sha256,
                                    "aliases": computer.aliases, "paths": computer.paths,
                                    "weights_note": loaded.weights_note})
            elif op == "features":
                if computer is None:
                    raise RuntimeError("no model loaded")
                with exact_float32():
                    values = computer.compute(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["ages"]),
                                              bool(header["white_box"]), [str(v) for v in header["layers"]],
                                              header.get("method"))
                write_message(out, {"ok": True, "method": computer.gradient_method},
                              {k: np.asarray(v, dtype=np.float32) for k, v in values.items()})
            else:
                write_message(out, {"ok": False, "kind": "protocol", "reason": f"unknown request {op!r}"})
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            if not isinstance(exc, (MemoryError,)):
                traceback.print_exc(limit=3, file=sys.stderr)
            write_message(out, _answer_error(exc))


def main(argv: list[str]) -> int:
    """Child side: warm up, confine, serve."""
    from .confine import Confinement, SandboxUnavailable, confine
    from .protocol import channel, write_message

    inp, out = channel(int(argv[0]), "rb"), channel(int(argv[1]), "wb")
    config = json.loads(argv[2])
    sys.stdout = sys.stderr  # TorchScript's print() and stray output go to the log, not the channel
    os.dup2(2, 1)
    import torch

    torch.set_num_threads(max(1, int(config.get("threads") or 1)))
    device = str(config.get("device") or "cpu")
    if device.startswith("cuda"):
        torch.cuda.init()
    white_box = bool(config.get("white_box", True))
    _warm_up(device, white_box)
    _user_name()
    confinement = Confinement(cpu_s=config.get("cpu_s"), memory_bytes=int(config["memory_bytes"]),
                              cuda=device.startswith("cuda"), private=tuple(config.get("private") or ()))
    try:
        confine(confinement)
    except SandboxUnavailable as exc:
        write_message(out, {"ok": False, "kind": "sandbox", "reason": str(exc)})
        return 3
    write_message(out, {"ok": True, "op": "ready"})
    serve(inp, out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

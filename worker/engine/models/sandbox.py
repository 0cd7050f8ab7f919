"""Checking an untrusted model file in a separate, resource-limited process.

A TorchScript or exported program is code: running it once (to check that it returns one
finite age per scan) may loop, allocate without bound or crash the interpreter. The API checks
uploads here, in a child process with a CPU-time limit, an address-space limit and a wall-clock
timeout, so that a hostile file costs at most that and never takes the server down::

    checked = check_model_file(path)          # raises ModelError with the reason
    checked.format, checked.metadata

Run as ``python -m worker.engine.models.sandbox MODEL_FILE...``: one JSON line per file, up to
the first that fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ModelError
from .metadata import ModelMetadata

DEFAULT_TIMEOUT_S = 120.0
_NONCE_VAR = "BRAINMIA_SANDBOX_NONCE"
DEFAULT_MEMORY_BYTES = 6 << 30


@dataclass(frozen=True)
class CheckedModel:
    """A model file that loaded safely and ran once in the sandbox.

    Attributes:
        path: the file.
        format: one of :data:`worker.engine.models.loading.FORMATS`.
        metadata: its resolved metadata (sidecar, declared architecture).
    """

    path: Path
    format: str
    metadata: ModelMetadata


def _limit(cpu_s: int, memory_bytes: int) -> None:  # runs in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()  # its own process group: a timeout kills everything it started


def check_model_file(
    path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> CheckedModel:
    """Load ``path`` (with its sidecar) in a child process and run it once on the CPU.

    Args:
        path: the model file.
        timeout_s: wall-clock limit; the CPU-time limit is the same number of seconds.
        memory_bytes: address-space limit of the child.

    Raises:
        ModelError: the file is refused, cannot be loaded, does not behave as a brain-age
            model, or exceeds a limit (the reason says which).
        InputError: its metadata is invalid.
    """
    return check_model_files([path], timeout_s=timeout_s, memory_bytes=memory_bytes)[0]


def check_model_files(
    paths: list[Path], *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> list[CheckedModel]:
    """:func:`check_model_file` for several files (e.g. a federation's rounds) in one child.

    The limits apply per file (the child's CPU time and the wall clock grow with the count);
    the first file that fails raises, naming it.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    # each answer line starts with a secret: a model that prints (TorchScript can) cannot forge one
    nonce = secrets.token_hex(16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           _NONCE_VAR: nonce}
    total_s = timeout_s * len(paths)
    command = [sys.executable, "-m", __name__, *(str(p) for p in paths)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=total_s, env=env,
            preexec_fn=lambda: _limit(int(total_s), memory_bytes),  # noqa: PLW1509 - no threads started here
        )
    except subprocess.TimeoutExpired:
        raise ModelError(paths[0].name if len(paths) == 1 else f"{len(paths)} models",
                         f"running the model once took longer than {timeout_s:g} s") from None
    answers = [json.loads(line[len(nonce):]) for line in done.stdout.splitlines() if line.startswith(nonce)]
    checked = []
    for path, answer in zip(paths, answers):
        if not answer.get("ok"):
            if answer.get("kind") == "model":
                raise ModelError(path.name, str(answer.get("reason")))
            raise InputError(str(answer.get("message")))
        checked.append(CheckedModel(path=path, format=str(answer["format"]),
                                    metadata=ModelMetadata.model_validate(answer["metadata"])))
    if len(checked) < len(paths) or done.returncode != 0:
        failed = paths[len(checked)] if len(checked) < len(paths) else paths[-1]
        stderr = done.stderr or ""
        if done.returncode < 0:
            reason = f"the model check was stopped by signal {-done.returncode} (CPU-time limit or a crash)"
        elif "MemoryError" in stderr or "bad_alloc" in stderr:
            reason = f"running the model once needs more than {memory_bytes >> 20} MB of memory"
        else:
            last = stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            reason = f"the model check failed: {last[0][:300]}"
        raise ModelError(failed.name, reason)
    return checked


def _main(argv: list[str]) -> int:
    """Child side: load and run the model once; one JSON line on stdout, after the nonce."""
    import torch

    from .loading import load_model

    nonce = os.environ.pop(_NONCE_VAR, "")

    def answer(obj: dict) -> None:
        print(nonce + json.dumps(obj), flush=True)

    torch.set_num_threads(1)
    for arg in argv:
        try:
            loaded = load_model(Path(arg), device="cpu", check=True)
        except ModelError as exc:
            answer({"ok": False, "kind": "model", "reason": exc.reason})
            return 0
        except InputError as exc:
            answer({"ok": False, "kind": "input", "message": str(exc)})
            return 0
        except MemoryError:
            answer({"ok": False, "kind": "model", "reason": "running the model once ran out of memory"})
            return 0
        answer({"ok": True, "format": loaded.format, "metadata": json.loads(loaded.metadata.model_dump_json())})
        del loaded
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

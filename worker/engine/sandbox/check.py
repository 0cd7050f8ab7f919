"""The upload check of an untrusted model file: loaded and run once in a confined host.

::

    checked = check_model_file(path)          # raises ModelError with the reason
    checked.format, checked.metadata

The host (:mod:`.host`) cannot read or write any file, open a socket or start a process; its
wall clock and memory are limited, and the answer comes over a private pipe, so a model that
prints cannot forge a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..models.metadata import ModelMetadata
from .client import HostLimits, ModelHost

DEFAULT_TIMEOUT_S = 120.0
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


def check_model_file(
    path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES,
    private: tuple[str, ...] = (),
) -> CheckedModel:
    """Load ``path`` (with its sidecar) in a confined host and run it once on the CPU.

    Args:
        path: the model file.
        timeout_s: wall-clock limit (and CPU-time limit) of loading and running it.
        memory_bytes: address-space limit of the host.
        private: folders that must stay out of the host's reach (the data folder).

    Raises:
        ModelError: the file is refused, cannot be loaded, does not behave as a brain-age
            model, or exceeds a limit (the reason says which).
        InputError: its metadata is invalid.
    """
    return check_model_files([path], timeout_s=timeout_s, memory_bytes=memory_bytes, private=private)[0]


def check_model_files(
    paths: list[Path], *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES,
    private: tuple[str, ...] = (),
) -> list[CheckedModel]:
    """:func:`check_model_file` for several files (e.g. a federation's rounds) in one host.

    The wall-clock limit applies per file, the CPU-time limit to all of them together; the
    first file that fails raises, naming it.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    limits = HostLimits(call_timeout_s=timeout_s, memory_bytes=memory_bytes,
                        cpu_s=int(timeout_s * len(paths)) + 30, private=private,
                        white_box=False)
    checked = []
    with ModelHost(limits, device="cpu") as host:
        for path in paths:
            model = host.load(path, check=True)
            checked.append(CheckedModel(path=path, format=model.format, metadata=model.metadata))
    return checked

"""Safe loading of brain-age models from untrusted files.

Supported formats (detected from the file content, not its name):

* ``torchscript`` - a TorchScript archive (``torch.jit.save``);
* ``export`` - a ``torch.export`` program (``.pt2``, ``torch.export.save``);
* ``safetensors`` - weights of a built-in architecture;
* ``state_dict`` - a PyTorch state dict of a built-in architecture, read with
  ``torch.load(weights_only=True)`` (inside a checkpoint dict such as Lightning's, and with the
  prefixes of Opacus, DDP or Lightning stripped when that makes it fit: :mod:`.checkpoints`);
* ``npz`` - a NumPy ``.npz`` of parameter arrays of a built-in architecture (a Flower round:
  ``arr_0``, ``arr_1``... in state-dict order, or arrays named by the state-dict keys), read with
  ``np.load(allow_pickle=False)``.

No file is ever unpickled with unrestricted code execution: a pickle that names arbitrary
Python objects (a whole pickled ``nn.Module``, or a malicious payload) is refused by the
restricted unpickler and reported as a :class:`~worker.engine.errors.ModelError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cache import file_sha256
from ..errors import InputError, ModelError
from . import architectures as _architectures  # noqa: F401  (registers the built-ins)
from . import monai_nets as _monai_nets  # noqa: F401  (registers the MONAI built-ins; MONAI loads lazily)
from .checkpoints import (
    fit_state_dict,
    is_lightning_checkpoint,
    lightning_hint,
    prefix_hint,
    state_from_arrays,
    unwrap_checkpoint,
)
from .heads import OutputHead
from .metadata import ModelMetadata, resolve_metadata
from .registry import ARCHITECTURES, build_architecture

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "export", "safetensors", "state_dict", "npz")


@dataclass
class LoadedModel:
    """A model ready for feature extraction.

    Attributes:
        module: the model in eval mode (an ``nn.Module``, a TorchScript module or the
            module of an exported program).
        metadata: its declared input grid, voxel size, normalisation and architecture.
        format: one of :data:`FORMATS`.
        path: the file it was loaded from.
        sha256: hex digest of the file.
        weights_note: what was done to the weights' names to fit the architecture (e.g. an
            Opacus prefix stripped), or None.
    """

    module: nn.Module
    metadata: ModelMetadata
    format: str
    path: Path
    sha256: str
    weights_note: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The model part of a report's provenance."""
        return {
            "path": self.path.name,  # no server path in a report
            "sha256": self.sha256,
            "format": self.format,
            "architecture": self.metadata.arch,
            "metadata": json.loads(self.metadata.model_dump_json()),
            **({"weights_note": self.weights_note} if self.weights_note else {}),
        }

    def computer(self, device: str) -> Any:
        """The feature computer of this model on ``device`` (in this process)."""
        from ..features.batch import BatchComputer

        return BatchComputer(self.module, device, placed=self.format == "export", head=OutputHead(self.metadata))


def _source(path: Path, data: bytes | None) -> Any:
    return io.BytesIO(data) if data is not None else path


def detect_format(path: Path, data: bytes | None = None) -> str:
    """Tell the model format from the file content (``data``: the file's bytes, already read).

    Raises:
        ModelError: not a recognised model file.
    """
    if zipfile.is_zipfile(_source(path, data)):
        try:
            names = zipfile.ZipFile(_source(path, data)).namelist()
        except zipfile.BadZipFile as exc:
            raise ModelError(path, f"corrupt archive: {exc}") from None
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "export"
        if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "state_dict"
        if names and all(n.endswith(".npy") and "/" not in n for n in names):
            return "npz"
        raise ModelError(path, "zip archive that is neither TorchScript, a torch.export program nor a state dict")
    if data is None:
        with open(path, "rb") as fh:
            data = fh.read(9)
    head = data[:8]
    if len(head) == 8:
        (header_len,) = struct.unpack("<Q", head)
        if 1 < header_len < 100_000_000 and data[8:9] == b"{":
            return "safetensors"
    first = data[:2]
    if first[:1] == b"\x80":  # a (legacy) pickle stream: only the restricted unpickler reads it
        return "state_dict"
    raise ModelError(
        path,
        "unrecognised model file: expected a TorchScript archive, a torch.export program (.pt2), "
        "safetensors weights, a PyTorch state dict or an .npz of parameter arrays",
    )


def _refused(path: Path, exc: Exception, lightning: bool = False) -> ModelError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    named = f" (it names the Python object '{found.group(1)}')" if found else ""
    return ModelError(
        path,
        f"refused: the file needs unrestricted unpickling, which could run arbitrary code{named}; "
        "it was not loaded. Save the model as TorchScript (torch.jit.save), a torch.export program, "
        "safetensors, or a plain state dict instead." + lightning_hint(lightning),
    )


def _load_state_dict(path: Path, fmt: str, data: bytes | None = None) -> dict[str, torch.Tensor]:
    if fmt == "npz":
        raise ModelError(path, "an .npz of parameter arrays is read with its architecture (_from_weights)")
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load, load_file

        try:
            return load(data) if data is not None else load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(path, f"cannot read safetensors weights: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(_source(path, data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc, is_lightning_checkpoint(_source(path, data))) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        if "weights_only" in str(exc) or "Unsupported" in str(exc):
            raise _refused(path, exc, is_lightning_checkpoint(_source(path, data))) from None
        raise ModelError(path, f"cannot read state dict: {exc}") from None
    obj = unwrap_checkpoint(obj)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(path, "a weights file must hold a state dict (parameter name -> tensor)")
    return obj


def _from_weights(path: Path, fmt: str, metadata: ModelMetadata, data: bytes | None = None) -> tuple[nn.Module, str | None]:
    if not metadata.arch:
        raise ModelError(
            path,
            f"a {fmt} file holds weights only: give the architecture with --arch "
            f"({', '.join(sorted(ARCHITECTURES))}) or in the sidecar's 'arch' field",
        )
    if fmt != "npz":
        state = _load_state_dict(path, fmt, data)
    try:
        module = build_architecture(metadata.arch, **metadata.arch_kwargs)
    except InputError as exc:
        raise ModelError(path, str(exc)) from None
    reference = module.state_dict()
    if fmt == "npz":
        state, note = state_from_arrays(_source(path, data), reference, path, metadata.arch,
                                        [name for name, _ in module.named_parameters()])
    else:
        state, note = fit_state_dict(state, reference)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).replace("\n", " ")[:600]
        hint = "" if note else prefix_hint(state)
        raise ModelError(path, f"weights do not fit architecture '{metadata.arch}' {metadata.arch_kwargs}{hint}: "
                         f"{detail}") from None
    return module, note


def _load_module(path: Path, fmt: str, metadata: ModelMetadata, device: str,
                 data: bytes | None = None) -> tuple[nn.Module, str | None]:
    """The module of a model file and the note on its weights' names (weights formats only)."""
    from ..sandbox.opcheck import check_operators, exported_operators, torchscript_operators

    if fmt == "torchscript":
        try:
            module = torch.jit.load(_source(path, data), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - TorchScript raises many types
            raise ModelError(path, f"cannot load TorchScript archive ({_first_line(exc)})") from None
        check_operators(path, torchscript_operators(module))
        return module, None
    if fmt == "export":
        try:
            program = torch.export.load(_source(path, data))
            check_operators(path, exported_operators(program.graph_module))
            if device != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, device)
            return program.module(), None
        except pickle.UnpicklingError as exc:
            raise _refused(path, exc) from None
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelError(path, f"cannot load torch.export program ({_first_line(exc)})") from None
    return _from_weights(path, fmt, metadata, data)


def _first_line(exc: Exception, limit: int = 200) -> str:
    """``Type: first line`` of a loader's error, printable characters only, cut at ``limit``."""
    text = (str(exc).strip().splitlines() or [""])[0]
    text = "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_output(module: nn.Module, metadata: ModelMetadata, path: Path, device: str = "cpu") -> None:
    """Check that the model maps one conformed volume to one finite age (or its declared age bins).

    Raises:
        ModelError: wrong input grid, wrong output shape, or non-finite output.
    """
    x = torch.zeros((1, 1, *metadata.input_shape), device=device)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
        # its message is the model's own output (which may echo anything): logged, never returned
        logger.warning("model %s failed on a blank input: %s", path.name, str(exc)[:2000])
        raise ModelError(
            path, f"the model fails on a 1x1x{'x'.join(map(str, metadata.input_shape))} input: it raised "
            f"{type(exc).__name__} (the model's own message is not shown; check the input grid and "
            "run the model on a blank volume of that shape yourself)"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(path, f"the model must return a tensor of ages, got {type(out).__name__}")
    OutputHead(metadata).check(out, path)


def load_model(
    path: Path,
    overrides: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    check: bool = True,
    data: bytes | None = None,
    metadata: ModelMetadata | None = None,
) -> LoadedModel:
    """Load a model file safely, with its metadata.

    Args:
        path: the model file.
        overrides: metadata fields given explicitly; they win over the sidecar.
        device: where to put the model.
        check: run the model once to check it returns one finite age per scan.
        data: the file's bytes, read beforehand (then ``path`` only names the model and nothing
            is opened: the sandboxed host loads models this way).
        metadata: the resolved metadata (default: the sidecar of ``path`` and ``overrides``).

    Raises:
        ModelError: missing, unrecognised, refused or misbehaving model (exit code 2).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise ModelError(path, "model file not found")
    if metadata is None:
        metadata = resolve_metadata(path, overrides)
    fmt = detect_format(path, data)
    module, note = _load_module(path, fmt, metadata, device, data)
    if fmt != "export":  # an exported program is already specialised for inference and placed
        module = module.to(device)
        module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    if check:
        check_output(module, metadata, path, device)
    sha256 = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    return LoadedModel(module=module, metadata=metadata, format=fmt, path=path, sha256=sha256, weights_note=note)

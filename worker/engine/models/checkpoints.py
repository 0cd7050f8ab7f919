"""The state dicts users' training code writes: wrapper prefixes and checkpoint wrappers.

Training wrappers prefix every parameter name: Opacus's ``GradSampleModule`` with ``_module.``,
``DistributedDataParallel`` (and ``DataParallel``) with ``module.``, a Lightning module with the
name of its attribute holding the network (commonly ``model.``), ``torch.compile`` with
``_orig_mod.``. :func:`fit_state_dict` strips such prefixes, one after the other, only when the
keys so stripped are exactly the architecture's: a network whose own first module is called
``model`` (or ``module``) keeps its keys. What was stripped is said in a note for the provenance.

A checkpoint often wraps the state dict with other entries (``epoch``, ``optimizer_states``...):
:func:`unwrap_checkpoint` finds the state dict in it.

Flower sends a round's model as a list of NumPy arrays in the state-dict order
(``[v.cpu().numpy() for v in net.state_dict().values()]``); saved with ``np.savez(path, *arrays)``
they are ``arr_0``, ``arr_1``... :func:`state_from_arrays` reads such an ``.npz`` (or one whose
arrays are named by the state-dict keys) with ``allow_pickle=False`` and names them.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ..errors import ModelError

PREFIXES: tuple[tuple[str, str], ...] = (
    ("_module.", "Opacus"),
    ("module.", "DistributedDataParallel"),
    ("model.", "Lightning"),
    ("_orig_mod.", "torch.compile"),
    ("net.", "Lightning"),
)
"""Wrapper prefixes recognised, with the wrapper that writes them."""

STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "weights")
"""Keys under which a checkpoint commonly holds its state dict (Lightning: ``state_dict``)."""

MAX_STRIPS = 4


def unwrap_checkpoint(obj: Any) -> Any:
    """The state dict inside a checkpoint dict (``{"state_dict": {...}, "epoch": 3, ...}``), or ``obj``.

    A dict whose values are all tensors is a state dict already and is returned as it is.
    """
    if not isinstance(obj, Mapping) or all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in STATE_DICT_WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    for key in STATE_DICT_WRAPPERS:
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    return obj


def _strip(keys: Iterable[str], prefix: str) -> list[str] | None:
    keys = list(keys)
    if not keys or not all(k.startswith(prefix) for k in keys):
        return None
    return [k[len(prefix):] for k in keys]


def fit_state_dict(state: Mapping[str, torch.Tensor], expected: Iterable[str]) -> tuple[dict[str, torch.Tensor], str | None]:
    """``state`` with wrapper prefixes stripped when, and only when, the stripped keys are ``expected``.

    Args:
        state: the state dict read from the file.
        expected: the architecture's state-dict keys.

    Returns:
        the state dict to load (``state`` itself when nothing fits better) and a note saying
        what was stripped (None when nothing was).
    """
    want = set(expected)
    keys = list(state)
    if set(keys) == want:
        return dict(state), None
    # breadth-first over prefix sequences: e.g. Lightning around Opacus is 'model._module.'
    frontier: list[tuple[list[str], list[tuple[str, str]]]] = [(keys, [])]
    for _ in range(MAX_STRIPS):
        nxt = []
        for current, done in frontier:
            for prefix, who in PREFIXES:
                stripped = _strip(current, prefix)
                if stripped is None:
                    continue
                steps = [*done, (prefix, who)]
                if set(stripped) == want:
                    fitted = {new: state[old] for new, old in zip(stripped, keys)}
                    return fitted, _note(steps)
                nxt.append((stripped, steps))
        frontier = nxt
        if not frontier:
            break
    return dict(state), None


def _note(steps: list[tuple[str, str]]) -> str:
    prefix = "".join(p for p, _ in steps)
    who = " around ".join(dict.fromkeys(w for _, w in steps))
    return f"stripped the '{prefix}' prefix ({who}) from every parameter name"


LIGHTNING_MARK = b"pytorch-lightning_version"
"""The key every Lightning checkpoint holds (it appears as bytes in the pickle, unread)."""


def is_lightning_checkpoint(source: Path | IO[bytes]) -> bool:
    """Whether a ``torch.save`` zip holds a Lightning checkpoint: its pickle names
    ``pytorch-lightning_version`` (a byte search in the pickle stream; nothing is unpickled)."""
    try:
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if info.filename.endswith("data.pkl") and info.file_size < (64 << 20):
                    return LIGHTNING_MARK in zf.read(info)
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    return False


def lightning_hint(lightning: bool) -> str:
    """Advice for a refused checkpoint that is a full Lightning checkpoint."""
    if not lightning:
        return ""
    return (" It is a full Lightning checkpoint, and some of its other entries (hyper_parameters, callbacks, "
            "loops...) hold Python objects (a Path, a Namespace, NumPy values...): torch.load(weights_only=True) "
            "refuses the file as a whole. Save its weights alone on your own machine, e.g. "
            "torch.save(torch.load('last.ckpt', weights_only=False)['state_dict'], 'weights.pt'), and give that "
            "(the 'model.' prefix is stripped).")


def prefix_hint(keys: Iterable[str]) -> str:
    """Which wrapper prefix the keys carry, for an error when they do not fit even stripped."""
    keys = list(keys)
    for prefix, who in PREFIXES:
        if _strip(keys, prefix) is not None:
            return f" (its names start with '{prefix}', as {who} writes them; stripped, they still do not fit)"
    return ""


_ORDERED = re.compile(r"^arr_(\d+)$")


def _read_npz(source: Path | IO[bytes], path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(source, allow_pickle=False) as npz:
            names = list(npz.files)
            arrays = {}
            for name in names:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:  # an object array needs pickle: refused
                    raise ModelError(path, f"array '{name}' cannot be read without unpickling ({exc}); "
                                     "save plain numeric arrays") from None
    except ModelError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(path, f"cannot read the .npz of parameter arrays: {exc}") from None
    if not arrays:
        raise ModelError(path, "the .npz holds no arrays")
    return arrays


def state_from_arrays(
    source: Path | IO[bytes], reference: Mapping[str, torch.Tensor], path: Path, arch: str | None = None,
    parameters: Iterable[str] = (),
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict of an ``.npz`` of parameter arrays, named by the architecture's ``reference``.

    Arrays named ``arr_0`` ... ``arr_<n-1>`` (``np.savez(path, *arrays)``, Flower's ndarrays) are
    the state dict's values in order; otherwise the array names are the state-dict keys (with the
    prefixes :func:`fit_state_dict` strips).

    Args:
        source: the file, or its bytes as a stream.
        reference: the architecture's own state dict (names, order and shapes).
        path: the file's name for errors.
        arch: the architecture's name for errors.
        parameters: the names of its parameters (the rest of ``reference`` are buffers), for errors.

    Returns:
        the state dict and a note on what was done to the names (None for named arrays that fit).

    Raises:
        ModelError: unreadable file, a count mismatch, an array whose shape does not fit its
            parameter (naming both), or a non-numeric array.
    """
    arrays = _read_npz(source, path)
    names = list(reference)
    what = f"architecture '{arch}'" if arch else "the architecture"
    ordered = {int(m.group(1)): k for k in arrays if (m := _ORDERED.match(k))}
    by_order = len(ordered) == len(arrays) and sorted(ordered) == list(range(len(arrays)))
    if by_order:
        if len(arrays) != len(names):
            n_params = len(set(parameters) & set(names))
            only = (f"; {len(arrays)} is its number of parameters without its {len(names) - n_params} buffers: "
                    "send the whole state dict, [v.cpu().numpy() for v in net.state_dict().values()]"
                    if n_params and len(arrays) == n_params else "")
            raise ModelError(path, f"the .npz holds {len(arrays)} parameter arrays but {what} has {len(names)} "
                             f"state-dict entries (parameters and buffers, in state-dict order){only}")
        values = [arrays[ordered[i]] for i in range(len(arrays))]
        pairs = list(zip(names, values))
        note = f"named {len(values)} ordered arrays (arr_0 ...) by the state-dict order of {what}"
    else:
        fitted, note = fit_state_dict(arrays, names)  # type: ignore[arg-type]
        missing = [n for n in names if n not in fitted]
        extra = [n for n in fitted if n not in reference]
        if missing or extra:
            raise ModelError(path, f"the arrays' names do not fit {what}: missing {missing[:5]}, "
                             f"unexpected {extra[:5]} (name them by the state-dict keys, or save them in "
                             "state-dict order with np.savez(path, *arrays))")
        pairs = [(n, fitted[n]) for n in names]
    state: dict[str, torch.Tensor] = {}
    for i, (name, value) in enumerate(pairs):
        ref = reference[name]
        label = f"array {i} (arr_{i})" if by_order else f"array '{name}'"
        if value.dtype.kind not in "biuf":
            raise ModelError(path, f"{label} for parameter '{name}' has dtype {value.dtype}, not a number")
        if tuple(value.shape) != tuple(ref.shape):
            raise ModelError(path, f"{label} has shape {tuple(value.shape)}, but parameter '{name}' of {what} "
                             f"has shape {tuple(ref.shape)}")
        state[name] = torch.from_numpy(np.ascontiguousarray(value)).to(ref.dtype)
    return state, note

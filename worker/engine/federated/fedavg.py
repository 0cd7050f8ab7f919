"""Federated averaging (FedAvg, McMahan et al. 2017) of brain-age models, and saving its rounds.

Each round, every learner starts from the current community model, trains it on its own
scans for ``local_epochs`` epochs (:func:`~worker.engine.training.train_brain_age`, a fresh
Adam optimiser each round) and sends its weights back; the new community model is the
average of the learners' weights, each weighted by its number of scans. Every learner (a
potential attacker) holds the community model of every round.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..models import ModelMetadata, build_architecture, write_sidecar
from ..training import TrainingOptions, train_brain_age

__all__ = [
    "ROUND_FORMATS",
    "RoundInfo",
    "StateDict",
    "average_states",
    "list_rounds",
    "round_path",
    "save_rounds",
    "train_fedavg",
]

StateDict = dict[str, torch.Tensor]

ROUND_FORMATS = ("torchscript", "safetensors")
"""File formats of saved rounds: ``round_001.pt`` (TorchScript) or ``round_001.safetensors``."""

_SUFFIX = {"torchscript": ".pt", "safetensors": ".safetensors"}
_ROUND_NAME = re.compile(r"^round_(\d+)\.(pt|pt2|safetensors|pth|npz)$")
_SEED_STRIDE = 1000  # local seed of learner i in round r: options.seed + 1000 r + i


@dataclass
class RoundInfo:
    """What :func:`train_fedavg` reports after each round.

    Attributes:
        round: the round just finished (1-based).
        rounds: total rounds.
        state: the new community weights.
        local_states: each learner's weights after its local training (before averaging).
        n_scans: scans per learner (the averaging weights).
        local_mae: each learner's training MAE in its last local epoch (years).
        lr: the learning rate of this round's local training.
    """

    round: int
    rounds: int
    state: StateDict
    local_states: dict[str, StateDict]
    n_scans: dict[str, int]
    local_mae: dict[str, float]
    lr: float


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> StateDict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def average_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> StateDict:
    """Weighted average of state dicts (FedAvg): ``sum_i w_i state_i / sum_i w_i``.

    Floating-point tensors are averaged in float64 and cast back; other tensors (integer
    counters) are taken from the first state.

    Raises:
        InputError: no states, mismatched keys, or non-positive total weight.
    """
    if not states:
        raise InputError("nothing to average: no learner states")
    if len(states) != len(weights):
        raise InputError(f"{len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if not total > 0:
        raise InputError("the averaging weights must sum to a positive number")
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys:
            raise InputError("learner states do not have the same parameters")
    out: StateDict = {}
    for key in keys:
        first = states[0][key]
        if not torch.is_floating_point(first):
            out[key] = first.detach().clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for s, w in zip(states, weights):
            acc += (float(w) / total) * s[key].detach().to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out


def _round_lr(options: TrainingOptions, r: int, rounds: int) -> float:
    """The round's learning rate: constant, or cosine-annealed over the rounds."""
    if not options.cosine:
        return options.lr
    return 0.5 * options.lr * (1.0 + math.cos(math.pi * r / rounds))


def train_fedavg(
    model_factory: Callable[[], nn.Module],
    volumes_by_learner: Mapping[str, torch.Tensor],
    ages_by_learner: Mapping[str, torch.Tensor],
    rounds: int,
    local_epochs: int = 1,
    options: TrainingOptions | None = None,
    on_round: Callable[[RoundInfo], None] | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> list[StateDict]:
    """Train a brain-age model with FedAvg.

    The initial community model is ``model_factory()`` built after
    ``torch.manual_seed(options.seed)``. In round ``r`` (0-based) learner ``i`` (in mapping
    order) trains with seed ``options.seed + 1000 r + i``, for ``local_epochs`` epochs, at a
    constant learning rate: ``options.lr``, or with ``options.cosine`` the rate annealed over
    the rounds (``lr (1 + cos(pi r / rounds)) / 2``). ``options.epochs`` is ignored.

    Args:
        model_factory: builds a fresh model (same architecture every call).
        volumes_by_learner: learner name -> its training volumes ``(N, 1, X, Y, Z)``.
        ages_by_learner: learner name -> its ages ``(N,)``.
        rounds: communication rounds.
        local_epochs: local epochs per round.
        options: local training options (batch size, lr, weight decay, seed, device).
        on_round: called with a :class:`RoundInfo` after each round.
        should_stop: polled between learners; True stops training and returns the rounds done.

    Returns:
        the community weights after each round (CPU tensors), round 1 first.

    Raises:
        InputError: no learners, a learner without scans, or mismatched inputs.
    """
    options = options or TrainingOptions()
    names = list(volumes_by_learner)
    if not names:
        raise InputError("a federation needs at least one learner")
    if set(names) != set(ages_by_learner):
        raise InputError("volumes and ages must name the same learners")
    if rounds < 1 or local_epochs < 1:
        raise InputError(f"rounds and local_epochs must be at least 1, got {rounds} and {local_epochs}")
    n_scans = {}
    for name in names:
        n = int(volumes_by_learner[name].shape[0])
        if n < 1 or n != int(ages_by_learner[name].shape[0]):
            raise InputError(f"learner '{name}' needs as many ages as volumes, and at least one scan")
        n_scans[name] = n

    torch.manual_seed(options.seed)
    model = model_factory()
    community = _cpu_copy(model.state_dict())
    history: list[StateDict] = []
    for r in range(rounds):
        lr = _round_lr(options, r, rounds)
        local_states: dict[str, StateDict] = {}
        local_mae: dict[str, float] = {}
        for i, name in enumerate(names):
            if should_stop is not None and should_stop():
                return history
            model.load_state_dict(community)
            local = replace(options, epochs=local_epochs, lr=lr, cosine=False, seed=options.seed + _SEED_STRIDE * r + i)
            maes: list[float] = []
            train_brain_age(model, volumes_by_learner[name], ages_by_learner[name], local,
                            on_epoch=lambda _e, mae: maes.append(mae))
            local_states[name] = _cpu_copy(model.state_dict())
            local_mae[name] = maes[-1]
        community = average_states([local_states[n] for n in names], [n_scans[n] for n in names])
        history.append(community)
        if on_round is not None:
            on_round(RoundInfo(r + 1, rounds, community, local_states, dict(n_scans), local_mae, lr))
    return history


def round_path(out_dir: Path, r: int, fmt: str = "torchscript") -> Path:
    """The file of round ``r`` (1-based): ``round_001.pt`` or ``round_001.safetensors``."""
    if fmt not in _SUFFIX:
        raise InputError(f"unknown round format '{fmt}' (expected {' or '.join(ROUND_FORMATS)})")
    return Path(out_dir) / f"round_{r:03d}{_SUFFIX[fmt]}"


def save_rounds(
    states: Sequence[Mapping[str, torch.Tensor]],
    out_dir: Path,
    metadata: ModelMetadata,
    *,
    fmt: str = "torchscript",
    model_factory: Callable[[], nn.Module] | None = None,
) -> list[Path]:
    """Save every round's community model with its sidecar, in round order.

    Args:
        states: the community weights of each round (round 1 first).
        out_dir: destination folder (created).
        metadata: the models' input grid, normalisation and built-in architecture.
        fmt: ``torchscript`` (``round_001.pt``) or ``safetensors`` (weights of the built-in
            ``metadata.arch``, ``round_001.safetensors``).
        model_factory: builds the module for TorchScript (default: ``metadata.arch`` with
            ``metadata.arch_kwargs``).

    Returns:
        the model paths, round 1 first.
    """
    if fmt not in ROUND_FORMATS:
        raise InputError(f"unknown round format '{fmt}' (expected {' or '.join(ROUND_FORMATS)})")
    if model_factory is None and not metadata.arch:
        raise InputError("saving rounds needs a model_factory or the metadata's built-in 'arch'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    module = None
    for r, state in enumerate(states, start=1):
        path = round_path(out_dir, r, fmt)
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
        else:
            if module is None:  # script once; each round only swaps the weights
                eager = model_factory() if model_factory is not None else build_architecture(
                    metadata.arch or "", **metadata.arch_kwargs)
                module = torch.jit.script(eager.cpu().eval())
            module.load_state_dict(state)
            torch.jit.save(module, str(path))
        write_sidecar(path, metadata)
        paths.append(path)
    return paths


def list_rounds(folder: Path) -> list[Path]:
    """The round models of a folder (``round_<n>.pt|.pt2|.safetensors|.pth|.npz``), by round number.

    Raises:
        InputError: no round models, or two files for the same round.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of round models")
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _ROUND_NAME.match(path.name)
        if not m:
            continue
        r = int(m.group(1))
        if r in found:
            raise InputError(f"{folder}: two models for round {r} ({found[r].name}, {path.name})")
        found[r] = path
    if not found:
        raise InputError(f"{folder}: no round models (expected files named round_001.pt, round_002.pt, ...)")
    return [found[r] for r in sorted(found)]

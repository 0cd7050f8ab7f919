"""Exact per-sample gradient methods, and the choice of the fastest one per model, grid and device.

Three exact methods compute the same per-sample Jacobian ``d objective_i / d parameter`` of the
model's output head (the prediction for a squared-error loss, the loss itself for SFCN's soft-label
KL; :mod:`worker.engine.models.heads`):

- ``vmap``: one vectorised ``torch.func`` pass over the batch (fastest on GPUs, 4-5x over a loop);
- ``loop``: one functional forward and backward per scan (batch of one), which on a CPU runs at
  the speed of a plain batched training step or faster for large models, where ``vmap`` loses;
- ``hooks``: one batched forward and backward, per-sample weight gradients formed from each
  layer's input and output gradient (:mod:`.hooks`; eager Conv/Linear models only).

``vmap`` and ``loop`` call the model on one scan at a time (see :mod:`.per_sample`), so they are
exact for every model format; ``hooks`` is exact when samples do not interact, which is checked,
not assumed: while measuring, every method's result is compared with the loop's, and a method that
differs is not used for that model. (The check bites: with this project's torch 2.13 CPU build,
a batched conv3d backward on the paper's 3D-CNN at 2 mm, 91 x 109 x 91, gives per-sample first-conv
gradients off by 0.6% of their largest entry against float64, where batch-of-one is within 1e-5;
``vmap`` and ``hooks`` both run batched kernels there, so the loop is used.) Which is fastest depends on the model, the grid and the device
and no rule holds across them (the paper's 3D-CNN at 2 mm on a CPU favours the loop over ``vmap`` by
1.6x; a small 4 mm model on the same CPU favours ``vmap`` by 1.5x), so, like cuDNN's benchmark
mode, :class:`MethodChooser` times each method on the first batches of a run (each timed batch's
result is used, so the cost is one extra pass of each slower method, up to two rounds) and keeps
the fastest for that (model structure, grid, batch size, device), in this process.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import torch
from torch.func import grad_and_value

from ..errors import InputError
from .hooks import hooks_jacobian, hooks_supported
from .per_sample import FunctionalModel, require_ages

Jacobian = tuple[dict[str, torch.Tensor], torch.Tensor]
JacobianFn = Callable[[FunctionalModel, torch.Tensor, torch.Tensor | None], Jacobian]

logger = logging.getLogger(__name__)

AUTO = "auto"
CLEAR_MARGIN = 1.25
"""One timed round decides when one method is at least this many times faster than the other."""
MAX_ROUNDS = 2
"""Rounds (each method timed once per round, order alternating) before the faster minimum wins."""


def vmap_jacobian(fmodel: FunctionalModel, x: torch.Tensor, ages: torch.Tensor | None = None) -> Jacobian:
    """Per-sample Jacobian of the head's objective in one vectorised ``vmap(grad)`` pass.

    ``ages`` are needed when the objective is the loss (``soft_label_kl``), not for ``mse``.
    """
    return fmodel.objective_jacobian(x, ages)


def loop_jacobian(fmodel: FunctionalModel, x: torch.Tensor, ages: torch.Tensor | None = None) -> Jacobian:
    """Per-sample Jacobian by one functional forward + backward per scan.

    Returns the same ``(jac, pred)`` as :func:`vmap_jacobian`: ``jac[name]`` of shape
    ``(B, *param.shape)``, ``pred`` of shape ``(B,)``.
    """
    loss = fmodel.head.objective_is_loss
    if loss:
        targets = fmodel.head.targets(require_ages(fmodel, x, ages))
        one = grad_and_value(fmodel.objective_one, has_aux=True)
    else:
        one = grad_and_value(fmodel.predict_one)
    jac: dict[str, torch.Tensor] = {}
    preds = []
    for i in range(x.shape[0]):
        if loss:
            grads, (_, pred) = one(fmodel.params, x[i], targets[i])
        else:
            grads, pred = one(fmodel.params, x[i])
        for name, g in grads.items():
            if name not in jac:
                jac[name] = torch.empty((x.shape[0], *g.shape), dtype=g.dtype, device=g.device)
            jac[name][i].copy_(g)
        preds.append(pred)
    return jac, torch.stack(preds)


JACOBIAN_METHODS: dict[str, JacobianFn] = {"vmap": vmap_jacobian, "loop": loop_jacobian, "hooks": hooks_jacobian}
REFERENCE = "loop"
"""The method every other is checked against while measuring (the batch-of-one loop)."""


def available_methods(fmodel: FunctionalModel) -> list[str]:
    """The methods that can run on this model (``hooks`` only on eligible eager models)."""
    return [name for name in JACOBIAN_METHODS if name != "hooks" or hooks_supported(fmodel)]


def _agree(a: Jacobian, b: Jacobian) -> bool:
    """Whether two Jacobians agree to float32 rounding (relative to the largest entry)."""
    scale = max(float(g.abs().max()) for g in b[0].values()) if b[0] else 1.0
    if not torch.allclose(a[1], b[1], rtol=1e-4, atol=1e-4):
        return False
    return all(a[0][n].shape == g.shape and torch.allclose(a[0][n], g, rtol=1e-3, atol=1e-4 * scale)
               for n, g in b[0].items())

_CHOSEN: dict[tuple[str, ...], str] = {}


def clear_method_cache() -> None:
    """Forget every measured choice (the next run measures again)."""
    _CHOSEN.clear()


def chosen_methods() -> dict[tuple[str, ...], str]:
    """The choices measured in this process: (structure, grid, batch, device) -> method."""
    return dict(_CHOSEN)


def structure_key(fmodel: FunctionalModel) -> str:
    """A digest of the model's class and parameter names, shapes and dtypes (not values)."""
    text = type(fmodel.module).__qualname__ + "|" + "|".join(
        f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in fmodel.params.items())
    if fmodel.head.objective_is_loss:  # another objective is another computation to time
        text += f"|{fmodel.head.loss.name}:{fmodel.head.size}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class MethodChooser:
    """Per-sample Jacobians of batches by the fastest exact method for this model and device.

    Args:
        fmodel: the functional model.
        device: where batches are computed (``cpu``, ``cuda``...).
        method: ``auto`` (measure, or reuse this process's measurement) or a name in
            :data:`JACOBIAN_METHODS`.

    Raises:
        InputError: an unknown method name.
    """

    def __init__(self, fmodel: FunctionalModel, device: str, method: str = AUTO):
        if method != AUTO and method not in JACOBIAN_METHODS:
            raise InputError(f"unknown gradient method '{method}': use auto, {', '.join(JACOBIAN_METHODS)}")
        if method == "hooks" and not hooks_supported(fmodel):
            raise InputError("gradient method 'hooks' needs an eager model of Conv and Linear layers")
        self.fmodel = fmodel
        self.device = device
        self.fixed = None if method == AUTO else method
        self._key: tuple[str, ...] | None = None
        self._times: dict[str, list[float]] = {}
        self._warm = False

    @property
    def method(self) -> str | None:
        """The method in use (None while still measuring)."""
        if self.fixed is not None:
            return self.fixed
        return _CHOSEN.get(self._key) if self._key is not None else None

    def jacobian(self, x: torch.Tensor, ages: torch.Tensor | None = None) -> Jacobian:
        """``(jac, pred)`` of one batch (see :func:`vmap_jacobian`; ``ages`` for a loss objective)."""
        if self._key is None:  # the first batch fixes the key: its size is the run's batch size
            self._key = (structure_key(self.fmodel), "x".join(map(str, x.shape[1:])), str(x.shape[0]), self.device)
        method = self.method
        if method is not None:
            return JACOBIAN_METHODS[method](self.fmodel, x, ages)
        return self._measure(x, ages)

    def _candidates(self) -> list[str]:
        if not self._times and not self._warm:
            self._times = {name: [] for name in available_methods(self.fmodel)}
        return list(self._times)

    def _timed(self, name: str, x: torch.Tensor, ages: torch.Tensor | None) -> Jacobian:
        _sync(self.device)
        start = time.perf_counter()
        result = JACOBIAN_METHODS[name](self.fmodel, x, ages)
        _sync(self.device)
        self._times[name].append((time.perf_counter() - start) / x.shape[0])
        return result

    def _measure(self, x: torch.Tensor, ages: torch.Tensor | None) -> Jacobian:
        """Time every method on this batch (order alternating by round); decide when clear."""
        names = self._candidates()
        if not self._warm:  # first calls pay one-off costs (allocator, kernels, thread pools)
            for name in names:
                JACOBIAN_METHODS[name](self.fmodel, x[:1], None if ages is None else ages[:1])
            self._warm = True
        rounds = len(self._times[names[0]])
        if rounds % 2:
            names.reverse()
        results = {name: self._timed(name, x, ages) for name in names}
        reference = results.get(REFERENCE)
        for name, value in results.items():  # a method is used only where it matches the loop
            if reference is not None and name != REFERENCE and not _agree(value, reference):
                logger.warning("per-sample gradients by %s differ from the batch-of-one loop on this model: "
                               "not used", name)
                del self._times[name]
        result = reference if reference is not None else results[names[-1]]
        best = {name: min(t) for name, t in self._times.items()}
        ranked = sorted(best, key=best.__getitem__)
        if (len(ranked) == 1 or best[ranked[1]] >= CLEAR_MARGIN * best[ranked[0]]
                or rounds + 1 >= MAX_ROUNDS):
            assert self._key is not None
            _CHOSEN[self._key] = ranked[0]
            logger.info("per-sample gradients by %s (s/scan: %s) for grid %s, batch %s on %s", ranked[0],
                        ", ".join(f"{n} {t:.4f}" for n, t in best.items()), *self._key[1:])
        return result

"""The model side of feature extraction: one batch of conformed volumes in, per-scan values out.

:class:`BatchComputer` runs the model in this process. An untrusted model runs it in the
sandboxed host process instead (:mod:`worker.engine.sandbox`), which answers the same calls, so
:func:`~worker.engine.features.extract.extract_features` does not know where the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..models.heads import OutputHead
from ..models.metadata import ModelMetadata
from . import extractors as _extractors  # noqa: F401  (registers the built-ins)
from .methods import AUTO, MethodChooser
from .per_sample import FunctionalModel, layer_aliases, param_modules
from .registry import FEATURE_EXTRACTORS, BatchContext


class Computer(Protocol):
    """What feature extraction needs of a model, wherever it runs.

    Attributes:
        aliases: ``first_conv`` / ``last_conv`` / ``output`` -> module path.
        paths: the module paths of the model's parametrised modules, in order.
    """

    aliases: dict[str, str]
    paths: list[str]

    @property
    def gradient_method(self) -> str | None:
        """The per-sample gradient method of the latest white-box batches (None before one, or
        while ``auto`` is still timing the methods)."""
        ...

    def compute(self, x: torch.Tensor, ages: torch.Tensor, white_box: bool, layers: Sequence[str],
                method: str | None = None) -> dict[str, np.ndarray]:
        """Named per-scan values (1-D columns, 2-D vectors) of one batch, as float32 arrays;
        ``method``: the gradient method (:mod:`.methods`; ``auto``: the fastest, measured; None:
        the computer's own)."""
        ...


class BatchComputer:
    """Computes the features of batches with a model held in this process.

    Args:
        module: the model (eval mode, parameters not requiring grad).
        device: where the batches are computed.
        placed: the module is already on ``device`` (an exported program is placed when loaded).
        method: how per-sample gradients are computed: ``auto`` (the fastest exact method,
            measured once per model structure, grid and device; :mod:`.methods`), ``vmap``, ``loop``
            or ``hooks``; a batch may ask for another (:meth:`compute`).
        head: the model's output head (default: one age per scan, squared-error loss).
    """

    def __init__(self, module: nn.Module, device: str, placed: bool = False, method: str = AUTO,
                 head: OutputHead | None = None):
        self.device = device
        self.head = head if head is not None else OutputHead(ModelMetadata())
        self.module = module if placed else module.to(device)
        self.fmodel = FunctionalModel(self.module, self.head)
        self.modules = param_modules(self.module)
        self.aliases = layer_aliases(self.modules)
        self.paths = [m.path for m in self.modules]
        self.chooser = MethodChooser(self.fmodel, device, method)

    @property
    def gradient_method(self) -> str | None:
        """See :class:`Computer`."""
        return self.chooser.method

    def compute(self, x: torch.Tensor, ages: torch.Tensor, white_box: bool, layers: Sequence[str],
                method: str | None = None) -> dict[str, np.ndarray]:
        """Features of one batch (see :class:`Computer`)."""
        if method is not None and method != (self.chooser.fixed or AUTO):
            self.chooser = MethodChooser(self.fmodel, self.device, method)
        x = x.to(self.device, non_blocking=True)
        ages = ages.to(self.device)
        if white_box:
            jac, pred = self.chooser.jacobian(x, ages if self.head.objective_is_loss else None)
        else:
            jac, pred = None, self.fmodel.predict(x)
        ctx = BatchContext(pred=pred, ages=ages, jac=jac, modules=self.modules, aliases=self.aliases,
                           layers=list(layers), head=self.head)
        out: dict[str, np.ndarray] = {}
        for extractor in FEATURE_EXTRACTORS.values():
            if white_box or not extractor.white_box:
                for name, value in extractor.fn(ctx).items():
                    out[name] = value.detach().to("cpu", torch.float32).numpy()
        return out

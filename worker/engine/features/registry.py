"""Registry of per-scan feature extractors (Opacus-style decorators).

An extractor turns one batch of model outputs (a :class:`BatchContext`) into named per-scan
values: 1-D columns of the feature table, or 2-D arrays (one vector per scan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.heads import OutputHead
from .per_sample import ParamModule

ExtractorFn = Callable[["BatchContext"], dict[str, torch.Tensor]]


@dataclass
class BatchContext:
    """What extractors see of one batch.

    Attributes:
        pred: predictions ``(B,)`` (the head's: the expected age of a bins model).
        ages: true ages ``(B,)``.
        jac: per-sample d objective / d parameter, ``(B, *shape)`` per parameter name (the
            objective is the head's: the prediction for ``mse``, the loss for ``soft_label_kl``);
            None for black-box extraction.
        modules: the parametrised modules of the model.
        aliases: ``first_conv`` / ``last_conv`` / ``output`` -> module path.
        layers: module paths whose full per-sample loss gradient is wanted.
        head: the model's output head (None: one age per scan, squared-error loss).
    """

    pred: torch.Tensor
    ages: torch.Tensor
    jac: dict[str, torch.Tensor] | None
    modules: list[ParamModule]
    aliases: dict[str, str]
    layers: list[str]
    head: OutputHead | None = None

    @property
    def loss_scale(self) -> torch.Tensor:
        """d loss / d objective per scan: ``2 (pred - age)`` for ``mse``, 1 when ``jac`` is the loss's."""
        if self.head is None:
            return 2.0 * (self.pred - self.ages)
        return self.head.loss_scale(self.pred, self.ages)

    @property
    def objective_is_prediction(self) -> bool:
        """Whether ``jac`` holds gradients of the prediction (``mse``) rather than of the loss."""
        return self.head is None or not self.head.objective_is_loss


@dataclass(frozen=True)
class FeatureExtractor:
    """A registered extractor.

    Attributes:
        name: registry name.
        white_box: whether it needs per-sample gradients.
        fn: the extraction function.
    """

    name: str
    white_box: bool
    fn: ExtractorFn


FEATURE_EXTRACTORS: dict[str, FeatureExtractor] = {}


def register_feature_extractor(name: str, *, white_box: bool) -> Callable[[ExtractorFn], ExtractorFn]:
    """Register a feature extractor under ``name``.

    Args:
        name: the extractor name.
        white_box: whether it needs the per-sample gradients.
    """

    def decorator(fn: ExtractorFn) -> ExtractorFn:
        FEATURE_EXTRACTORS[name] = FeatureExtractor(name=name, white_box=white_box, fn=fn)
        return fn

    return decorator

"""Registry of per-scan feature extractors (Opacus-style decorators).

An extractor turns one batch of model outputs (a :class:`BatchContext`) into named per-scan
values: 1-D columns of the feature table, or 2-D arrays (one vector per scan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .per_sample import ParamModule

ExtractorFn = Callable[["BatchContext"], dict[str, torch.Tensor]]


@dataclass
class BatchContext:
    """What extractors see of one batch.

    Attributes:
        pred: predictions ``(B,)``.
        ages: true ages ``(B,)``.
        jac: per-sample d prediction / d parameter, ``(B, *shape)`` per parameter name;
            None for black-box extraction.
        modules: the parametrised modules of the model.
        aliases: ``first_conv`` / ``last_conv`` / ``output`` -> module path.
        layers: module paths whose full per-sample loss gradient is wanted.
    """

    pred: torch.Tensor
    ages: torch.Tensor
    jac: dict[str, torch.Tensor] | None
    modules: list[ParamModule]
    aliases: dict[str, str]
    layers: list[str]

    @property
    def loss_scale(self) -> torch.Tensor:
        """d loss / d prediction for the squared-error loss, ``2 (pred - age)``."""
        return 2.0 * (self.pred - self.ages)


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

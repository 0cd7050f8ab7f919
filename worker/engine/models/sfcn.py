"""SFCN, the Simple Fully Convolutional Network of Peng et al. (Medical Image Analysis 2021).

"Accurate brain age prediction with lightweight deep neural networks": six blocks with 32, 64,
128, 256, 256 and 64 channels; blocks 1-5 are Conv3d 3x3x3 (padding 1), BatchNorm3d, MaxPool3d 2
and ReLU, block 6 a 1x1x1 Conv3d, BatchNorm3d and ReLU; the classifier averages the remaining
grid (5 x 6 x 5 for the 160 x 192 x 160 input at 1 mm), applies Dropout(0.5) and a 1x1x1 Conv3d
to 40 one-year age bins (42-82 years), and the model returns their log-probabilities. It is
trained with the KL divergence to Gaussian soft labels (sigma 1 year).

Module names follow the authors' code (``feature_extractor.conv_<i>.<0 conv, 1 batch norm>``,
``classifier.conv_<n>``), so a state dict of the published model loads once DataParallel's
``module.`` prefix is stripped. Unlike the authors' code, :class:`SFCN` returns the tensor
``(B, bins)`` (not a one-element list of ``(B, bins, 1, 1, 1)``) and pools adaptively, so that
any input grid works (the published pool of 5 x 6 x 5 is the same at 160 x 192 x 160).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .metadata import ModelMetadata
from .registry import register_architecture

SFCN_CHANNELS = (32, 64, 128, 256, 256, 64)
SFCN_BINS = 40
SFCN_BIN_START = 42.0
SFCN_INPUT_SHAPE = (160, 192, 160)


def _block(c_in: int, c_out: int, last: bool) -> nn.Sequential:
    """Conv 3x3x3 (pad 1) -> BatchNorm -> MaxPool 2 -> ReLU, or for the last block Conv 1x1x1 -> BatchNorm -> ReLU."""
    if last:
        return nn.Sequential(nn.Conv3d(c_in, c_out, kernel_size=1, padding=0), nn.BatchNorm3d(c_out), nn.ReLU())
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm3d(c_out),
                         nn.MaxPool3d(2, stride=2), nn.ReLU())


class SFCN(nn.Module):
    """SFCN: ``(B, 1, X, Y, Z)`` volumes to log-probabilities ``(B, bins)`` over age bins.

    Args:
        channels: channels of the blocks (paper: 32, 64, 128, 256, 256, 64); every block but the
            last halves the grid.
        bins: number of age bins of the output (paper: 40).
        dropout: dropout probability before the output layer (paper: 0.5; 0 leaves it out).

    Raises:
        ValueError: fewer than two blocks, a non-positive channel or bin count, or a dropout
            probability outside [0, 1).
    """

    def __init__(self, channels: Sequence[int] = SFCN_CHANNELS, bins: int = SFCN_BINS, dropout: float = 0.5):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or any(c < 1 for c in channels):
            raise ValueError(f"SFCN needs at least two blocks of positive channels, got {channels}")
        if int(bins) < 2:
            raise ValueError(f"SFCN needs at least two age bins, got {bins}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = 1
        for i, c in enumerate(channels):
            blocks[f"conv_{i}"] = _block(c_in, c, last=i == len(channels) - 1)
            c_in = c
        self.feature_extractor = nn.Sequential(blocks)
        head: OrderedDict[str, nn.Module] = OrderedDict(average_pool=nn.AdaptiveAvgPool3d(1))
        if dropout > 0:
            head["dropout"] = nn.Dropout(float(dropout))
        head[f"conv_{len(channels)}"] = nn.Conv3d(c_in, int(bins), kernel_size=1, padding=0)
        self.classifier = nn.Sequential(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.feature_extractor(x))
        return torch.log_softmax(out.flatten(1), dim=1)


@register_architecture("sfcn")
def sfcn(**kwargs: Any) -> nn.Module:
    """Built-in ``sfcn`` (keyword arguments of :class:`SFCN`: ``channels``, ``bins``, ``dropout``)."""
    try:
        return SFCN(**kwargs)
    except ValueError as exc:
        raise TypeError(str(exc)) from None  # the registry reports it as bad options


def sfcn_metadata(**overrides: Any) -> ModelMetadata:
    """The metadata (sidecar) of the published SFCN: 160 x 192 x 160 at 1 mm, intensities divided by
    the mean (``mean_mni182``, see :mod:`worker.engine.normalize`), 40 one-year bins from 42 years as
    log-probabilities, soft-label KL loss with sigma 1. ``overrides`` replace fields (e.g. a small
    ``input_shape`` and ``arch_kwargs`` for tests).
    """
    fields: dict[str, Any] = {
        "input_shape": SFCN_INPUT_SHAPE,
        "voxel_size": 1.0,
        "normalize": "mean_mni182",
        "arch": "sfcn",
        "output": {"kind": "bins", "start": SFCN_BIN_START, "width": 1.0, "count": SFCN_BINS, "scores": "log_probs"},
        "loss": {"name": "soft_label_kl", "sigma": 1.0},
    }
    fields.update(overrides)
    return ModelMetadata.model_validate(fields)

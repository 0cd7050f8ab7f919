"""The brain-age models attacked by Gupta et al. (MIDL 2021), as built-in architectures.

Both take a batch of conformed volumes ``(B, 1, X, Y, Z)`` and return one age per scan ``(B,)``.
Width (channels) and input grid are parameters, so tests and the demo can use small versions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .registry import register_architecture

PAPER_CHANNELS = (32, 64, 128, 256, 256)


def _scaled(channels: Sequence[int], width: float) -> list[int]:
    return [max(1, int(round(c * width))) for c in channels]


class _Block(nn.Sequential):
    """Conv (3, pad 1) -> InstanceNorm -> MaxPool 2 -> ReLU, in 2D or 3D."""

    def __init__(self, c_in: int, c_out: int, dims: int):
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
        pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        super().__init__(
            OrderedDict(
                conv=conv(c_in, c_out, kernel_size=3, padding=1),
                norm=norm(c_out),
                pool=pool(2),
                relu=nn.ReLU(),
            )
        )


def _init_output(layer: nn.Module, mean_age: float, age_scale: float) -> None:
    with torch.no_grad():
        layer.weight.mul_(float(age_scale))
        layer.bias.fill_(float(mean_age))


def _encoder(channels: Sequence[int], dims: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 1
    for i, c in enumerate(channels, start=1):
        layers[f"block{i}"] = _Block(c_in, c, dims)
        c_in = c
    return nn.Sequential(layers)


class BrainAge3D(nn.Module):
    """The paper's 3D-CNN: five conv blocks, a 1x1x1 "conv 6", average pool, 1x1x1 output conv.

    Args:
        channels: channels of the five blocks (paper: 32, 64, 128, 256, 256).
        width: multiplier applied to ``channels`` and to the 64 channels of conv 6.
        mean_age: initial bias of the output layer.
        age_scale: multiplier of the output layer's initial weights (e.g. the age standard
            deviation in years), so that training starts with predictions spread like ages.
    """

    def __init__(
        self,
        channels: Sequence[int] = PAPER_CHANNELS,
        width: float = 1.0,
        mean_age: float = 62.0,
        age_scale: float = 1.0,
    ):
        super().__init__()
        chans = _scaled(channels, width)
        hidden = max(1, int(round(64 * width)))
        self.blocks = _encoder(chans, dims=3)
        self.conv6 = nn.Conv3d(chans[-1], hidden, kernel_size=1)
        self.norm6 = nn.InstanceNorm3d(hidden)
        self.relu6 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.output = nn.Conv3d(hidden, 1, kernel_size=1)
        _init_output(self.output, mean_age, age_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu6(self.norm6(self.conv6(self.blocks(x))))
        return self.output(self.pool(h)).flatten(1)[:, 0]


class BrainAgeSliceMean(nn.Module):
    """The paper's 2D-slice-mean model: a shared 2D encoder over sagittal slices, averaged.

    Args:
        channels: channels of the five 2D blocks (paper: 32, 64, 128, 256, 256).
        width: multiplier applied to every hidden width.
        mean_age: initial bias of the output layer.
        age_scale: multiplier of the output layer's initial weights.
    """

    def __init__(
        self,
        channels: Sequence[int] = PAPER_CHANNELS,
        width: float = 1.0,
        mean_age: float = 62.0,
        age_scale: float = 1.0,
    ):
        super().__init__()
        chans = _scaled(channels, width)
        h64, h32 = max(1, int(round(64 * width))), max(1, int(round(32 * width)))
        self.encoder = _encoder(chans, dims=2)
        self.conv6 = nn.Conv2d(chans[-1], h64, kernel_size=1)
        self.relu6 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv7 = nn.Conv2d(h64, h32, kernel_size=1)
        self.fc = nn.Linear(h32, h64)
        self.relu_fc = nn.ReLU()
        self.output = nn.Linear(h64, 1)
        _init_output(self.output, mean_age, age_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n_slices, height, width = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * n_slices, 1, height, width)
        h = self.conv7(self.pool(self.relu6(self.conv6(self.encoder(slices)))))
        h = h.reshape(b, n_slices, -1).mean(dim=1)
        return self.output(self.relu_fc(self.fc(h)))[:, 0]


@register_architecture("brain_age_3d")
def brain_age_3d(**kwargs: object) -> nn.Module:
    """Build :class:`BrainAge3D`."""
    return BrainAge3D(**kwargs)  # type: ignore[arg-type]


@register_architecture("brain_age_slice_mean")
def brain_age_slice_mean(**kwargs: object) -> nn.Module:
    """Build :class:`BrainAgeSliceMean`."""
    return BrainAgeSliceMean(**kwargs)  # type: ignore[arg-type]


from . import sfcn as _sfcn  # noqa: E402,F401  (registers the built-in 'sfcn')

"""MONAI's 3D DenseNet121 and ResNet regressors as built-in architectures.

``monai_densenet121`` and ``monai_resnet`` are subclasses of :class:`monai.networks.nets.DenseNet121`
and :class:`monai.networks.nets.ResNet` with one input channel and one output by default, whose
``forward`` returns ``(B,)`` instead of ``(B, 1)``. Being subclasses, their state-dict keys are
MONAI's own (``features.conv0.weight``, ``class_layers.out.bias``, ``conv1.weight``, ``fc.bias``...),
so the state dict of a network a user trained with MONAI loads as it is. Keyword arguments
(``arch_kwargs`` in the sidecar) pass through to MONAI, e.g. a small ``init_features`` /
``growth_rate`` / ``block_config`` or ``block_inplanes`` for tests.

MONAI is imported only when one of these is built, so that the command line and the API start fast.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from .registry import register_architecture

RESNET_DEPTHS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    200: ("bottleneck", [3, 24, 36, 3]),
}
"""MONAI's ``resnet<depth>`` block type and blocks per stage (``monai.networks.nets.resnet``)."""


@functools.cache
def _classes() -> tuple[type[nn.Module], type[nn.Module]]:
    """The two subclasses, made once on first use (MONAI is imported here)."""
    import torch
    from monai.networks.nets import DenseNet121, ResNet

    class MonaiDenseNet121(DenseNet121):
        """MONAI's DenseNet121 returning ``(B,)`` when it has one output (``(B, K)`` otherwise)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.class_layers(self.features(x))
            if out.shape[1] == 1:
                return out.reshape(out.shape[0])
            return out

    class MonaiResNet(ResNet):
        """MONAI's ResNet returning ``(B,)`` when it has one output (``(B, K)`` otherwise)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # MONAI's ResNet.forward, written out (TorchScript cannot script a call to super())
            x = self.act(self.bn1(self.conv1(x)))
            if not self.no_max_pool:
                x = self.maxpool(x)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            out = self.avgpool(x)
            out = out.view(out.size(0), -1)
            if self.fc is not None:
                out = self.fc(out)
            if out.shape[1] == 1:
                return out.reshape(out.shape[0])
            return out

    MonaiDenseNet121.__module__ = MonaiResNet.__module__ = __name__
    return MonaiDenseNet121, MonaiResNet


def _no_download(kwargs: dict[str, Any]) -> None:
    if kwargs.pop("pretrained", False):
        raise TypeError("pretrained=True is not supported (it downloads weights): upload the weights instead")
    kwargs.pop("progress", None)


@register_architecture("monai_densenet121")
def monai_densenet121(**kwargs: Any) -> nn.Module:
    """MONAI's 3D DenseNet121, one input channel, one output (age) by default.

    Args:
        **kwargs: passed to :class:`monai.networks.nets.DenseNet121` (``spatial_dims`` 3,
            ``in_channels`` 1 and ``out_channels`` 1 unless given; ``init_features``,
            ``growth_rate``, ``block_config``, ``bn_size``, ``norm``, ``dropout_prob``...).
    """
    _no_download(kwargs)
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, **kwargs}
    if "block_config" in kwargs:
        kwargs["block_config"] = tuple(int(b) for b in kwargs["block_config"])
    dense, _ = _classes()
    return dense(**kwargs)


@register_architecture("monai_resnet")
def monai_resnet(depth: int = 18, **kwargs: Any) -> nn.Module:
    """MONAI's 3D ResNet (``resnet10`` ... ``resnet200``), one input channel, one output by default.

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200: MONAI's block type and blocks per stage
            (``block`` and ``layers``, when given, win).
        **kwargs: passed to :class:`monai.networks.nets.ResNet` (``spatial_dims`` 3,
            ``n_input_channels`` 1 and ``num_classes`` 1 unless given; ``block_inplanes``
            (default MONAI's 64-128-256-512), ``widen_factor``, ``conv1_t_size``,
            ``conv1_t_stride``, ``no_max_pool``, ``shortcut_type``, ``bias_downsample``...).
    """
    _no_download(kwargs)
    if int(depth) not in RESNET_DEPTHS:
        raise TypeError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
    block, layers = RESNET_DEPTHS[int(depth)]
    from monai.networks.nets.resnet import get_inplanes

    kwargs = {"block": block, "layers": layers, "block_inplanes": get_inplanes(), "spatial_dims": 3,
              "n_input_channels": 1, "num_classes": 1, **kwargs}
    kwargs["layers"] = [int(n) for n in kwargs["layers"]]
    kwargs["block_inplanes"] = [int(n) for n in kwargs["block_inplanes"]]
    _, resnet = _classes()
    return resnet(**kwargs)

"""Registry of built-in brain-age architectures (Opacus-style decorators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import InputError

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under ``name``.

    Args:
        name: the architecture name used in sidecars and on the command line.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = factory
        return factory

    return decorator


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a registered architecture.

    Raises:
        InputError: unknown name or bad keyword arguments.
    """
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise InputError(f"unknown architecture '{name}' (known: {known})") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"bad options for architecture '{name}': {exc}") from None

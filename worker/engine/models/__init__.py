"""Brain-age models: built-in architectures, metadata and safe loading."""

from .architectures import BrainAge3D, BrainAgeSliceMean
from .loading import FORMATS, LoadedModel, detect_format, file_sha256, load_model
from .metadata import ModelMetadata, parse_shape, resolve_metadata, sidecar_path, write_sidecar
from .registry import ARCHITECTURES, build_architecture, register_architecture

__all__ = [
    "ARCHITECTURES",
    "FORMATS",
    "BrainAge3D",
    "BrainAgeSliceMean",
    "LoadedModel",
    "ModelMetadata",
    "build_architecture",
    "detect_format",
    "file_sha256",
    "load_model",
    "parse_shape",
    "register_architecture",
    "resolve_metadata",
    "sidecar_path",
    "write_sidecar",
]

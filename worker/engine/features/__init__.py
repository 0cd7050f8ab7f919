"""Per-scan features of a model: black-box outputs and exact per-sample gradient features."""

from .extract import (
    DEFAULT_LAYERS,
    ExtractionCancelled,
    ExtractionOptions,
    extract_features,
    features_from_predictions,
    pick_device,
)
from .per_sample import FunctionalModel, ParamModule, layer_aliases, param_modules, per_sample_loss_grads
from .registry import FEATURE_EXTRACTORS, BatchContext, register_feature_extractor
from .table import FeatureTable

__all__ = [
    "DEFAULT_LAYERS",
    "FEATURE_EXTRACTORS",
    "BatchContext",
    "ExtractionCancelled",
    "ExtractionOptions",
    "FeatureTable",
    "FunctionalModel",
    "ParamModule",
    "extract_features",
    "features_from_predictions",
    "layer_aliases",
    "param_modules",
    "per_sample_loss_grads",
    "pick_device",
    "register_feature_extractor",
]

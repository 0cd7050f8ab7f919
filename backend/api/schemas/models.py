"""Model response bodies, the upload form's description, and the view of a model row."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...db.models import MODEL_KINDS, ModelRecord, as_utc

_EXAMPLE_METADATA = {
    "input_shape": [91, 109, 91],
    "voxel_size": [2.0, 2.0, 2.0],
    "normalize": "zscore",
    "arch": "brain_age_3d",
    "arch_kwargs": {"width": 1.0},
}
_EXAMPLE = {
    "id": "3f9c2a0e5b7d4c1e8a6f0b2d4e6c8a1f",
    "name": "brain_age_3d_ukb.safetensors",
    "sha256": "9b74c9897bac770ffc029102a200c5de0a1f5e8a1c0d7f5b3e2a4c6d8e0f1a2b",
    "format": "safetensors",
    "size_bytes": 11812352,
    "metadata": _EXAMPLE_METADATA,
    "kind": "model",
    "n_rounds": None,
    "created_at": "2025-01-31T09:12:44.120000Z",
}


class ModelOut(BaseModel):
    """An uploaded model."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    name: str = Field(description="Display name (the `name` field, else the uploaded file name)")
    sha256: str = Field(description="SHA-256 of the uploaded file")
    format: str = Field(description="`torchscript`, `export`, `safetensors` or `state_dict`")
    size_bytes: int
    metadata: dict[str, Any] = Field(description="Input grid, voxel size, normalisation and architecture")
    kind: str = Field("model", description="`model` (one model file) or `federated_rounds` (a federation's "
                      "community model of every round)")
    n_rounds: int | None = Field(None, description="Rounds of a `federated_rounds` model (None for one model)")
    created_at: datetime


class ModelPage(BaseModel):
    """One page of models, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE], "total": 1, "limit": 50, "offset": 0}]}
    )

    items: list[ModelOut]
    total: int = Field(description="Models of the organisation in all")
    limit: int
    offset: int


MODEL_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "TorchScript archive, torch.export program (.pt2), or weights of a built-in "
                            "architecture: safetensors, a state dict, or an .npz of parameter arrays",
                        },
                        "metadata": {
                            "type": "string",
                            "description": "JSON object as in the sidecar: input_shape, voxel_size, normalize, "
                            "arch, arch_kwargs (omitted fields take their defaults)",
                            "example": json.dumps(_EXAMPLE_METADATA),
                        },
                        "name": {"type": "string", "description": "Display name (default: the file name)"},
                        "kind": {
                            "type": "string",
                            "enum": list(MODEL_KINDS),
                            "description": "`federated_rounds`: `file` is an archive (.zip, .tar.gz) of a "
                            "federation's round models round_001.pt, round_002.pt, ... (any supported "
                            "format, optional sidecars round_001.pt.json; default `model`)",
                        },
                    },
                }
            }
        },
    }
}
"""The upload's multipart form, for the OpenAPI document (the route streams it itself)."""


def model_out(row: ModelRecord) -> ModelOut:
    """The API view of a model row."""
    return ModelOut(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        format=row.format,
        size_bytes=row.size_bytes,
        metadata=row.model_metadata or {},
        kind=row.kind or "model",
        n_rounds=len(row.rounds) if row.rounds else None,
        created_at=as_utc(row.created_at),
    )

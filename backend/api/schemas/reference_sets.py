"""Reference-set response bodies, the upload form's description, and the view of a row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...db.models import ReferenceSet, as_utc

_EXAMPLE = {
    "id": "5b1c0e2f9a7d4c3e8b6a0f1d2e3c4b5a",
    "name": "ukb-references-k16",
    "scan_set_id": "8d0f6b1c2e3a4f5b9c7d1e2f3a4b5c6d",
    "n_models": 16,
    "model_files": ["ref_00.safetensors", "ref_01.safetensors"],
    "formats": ["safetensors", "safetensors"],
    "metadata": {"input_shape": [91, 109, 91], "voxel_size": [2.0, 2.0, 2.0], "normalize": "zscore",
                 "arch": "brain_age_3d"},
    "keep_sha256": "0c4f5e7a1b2d3c4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a",
    "keep_hash": "77aa1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
    "archive_sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
    "size_bytes": 188743680,
    "created_at": "2025-02-03T14:02:11.000000Z",
}


class ReferenceSetOut(BaseModel):
    """User-supplied reference models of one scan set, with their keep.csv."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    name: str = Field(description="Display name (the `name` field, else the archive's name)")
    scan_set_id: str = Field(description="The scan set whose scans keep.csv names; assessments on it may use the set")
    n_models: int
    model_files: list[str] = Field(description="The model files; keep.csv's columns are their stems")
    formats: list[str] = Field(description="Each model file's format (`torchscript`, `export`, `safetensors`, "
                                           "`state_dict`)")
    metadata: dict[str, Any] = Field(description="The input every model takes (grid, voxel size, normalisation) "
                                                 "and the first model's architecture")
    keep_sha256: str = Field(description="SHA-256 of keep.csv")
    keep_hash: str = Field(description="Hash of the keep matrix, as in an assessment report's provenance")
    archive_sha256: str = Field(description="SHA-256 of the uploaded archive")
    size_bytes: int = Field(description="Bytes of the stored models, sidecars and keep.csv")
    created_at: datetime


class ReferenceSetPage(BaseModel):
    """One page of reference sets, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE], "total": 1, "limit": 50, "offset": 0}]}
    )

    items: list[ReferenceSetOut]
    total: int = Field(description="Reference sets of the organisation (of the scan set, when filtered) in all")
    limit: int
    offset: int


REFERENCE_SET_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive", "scan_set_id"],
                    "properties": {
                        "archive": {
                            "type": "string",
                            "format": "binary",
                            "description": ".zip, .tar, .tar.gz/.tgz (also .tar.bz2, .tar.xz) holding keep.csv and "
                            "the reference model files (at the top or in a single top folder): any supported model "
                            "format, each with an optional sidecar `<file>.json`. keep.csv has a `scan_id` column "
                            "and one 0/1 column per model file stem (1 = that model trained on that scan); a model "
                            "with no column is OUT for every scan",
                        },
                        "scan_set_id": {"type": "string", "description": "The scan set whose scan ids keep.csv "
                                        "names (one of the organisation's)"},
                        "name": {"type": "string", "description": "Display name (default: the archive's name)"},
                        "metadata": {"type": "string", "description": "JSON object as in a model sidecar (input_shape, "
                                     "voxel_size, normalize, arch, arch_kwargs), applied to every model on top of "
                                     "its sidecar"},
                    },
                }
            }
        },
    }
}
"""The upload's multipart form, for the OpenAPI document (the route streams it itself)."""


def reference_set_out(row: ReferenceSet) -> ReferenceSetOut:
    """The API view of a reference-set row."""
    return ReferenceSetOut(
        id=row.id,
        name=row.name,
        scan_set_id=row.scan_set_id,
        n_models=len(row.model_files or []),
        model_files=list(row.model_files or []),
        formats=list(row.formats or []),
        metadata=row.model_metadata or {},
        keep_sha256=row.keep_sha256,
        keep_hash=row.keep_hash,
        archive_sha256=row.archive_sha256,
        size_bytes=row.size_bytes,
        created_at=as_utc(row.created_at),
    )

"""Scan-set request and response bodies, the archive upload's description, and the view of a row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...db.models import ScanSet, as_utc
from ...fields import Text

_EXAMPLE = {
    "id": "8d0f6b1c2e3a4f5b9c7d1e2f3a4b5c6d",
    "name": "ukb-holdout-2024",
    "source": "archive",
    "n_scans": 1388,
    "n_members": 694,
    "n_nonmembers": 694,
    "attribute_names": ["sex", "site"],
    "manifest_sha256": "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce",
    "size_bytes": 3145728000,
    "created_at": "2025-01-31T09:20:03.511000Z",
}


class ScanSetOut(BaseModel):
    """A validated scan set."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    name: str
    source: str = Field(description="`archive` (uploaded), `server` (a manifest under an allowed root) or `bids` (a "
                        "BIDS dataset under an allowed root, its derived manifest stored by BrainMIA)")
    n_scans: int
    n_members: int
    n_nonmembers: int
    attribute_names: list[str] = Field(description="Extra manifest columns kept as slicing attributes")
    manifest_sha256: str
    size_bytes: int = Field(description="Bytes of the extracted archive, or of the listed scans and manifest")
    created_at: datetime


class ScanSetPage(BaseModel):
    """One page of scan sets, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE], "total": 1, "limit": 50, "offset": 0}]}
    )

    items: list[ScanSetOut]
    total: int
    limit: int
    offset: int


class ScanSetFromPath(BaseModel):
    """Register a manifest, or a BIDS dataset with its member list, already on the server.

    Give ``manifest_path``, or ``bids_path`` with the members (``members_path`` or ``members``);
    non-members are every other matching scan unless ``non_members_path`` or ``non_members`` is
    given. Every server path must lie under one of the organisation's folders.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"manifest_path": "/data/cohorts/ukb-holdout/manifest.csv", "name": "ukb-holdout"},
                {"bids_path": "/data/cohorts/ds-brains", "members_path": "/data/cohorts/ds-brains-train.txt",
                 "bids_filter": "space=MNI152NLin2009cAsym,desc=preproc", "name": "ds-brains"},
            ]
        },
    )

    manifest_path: str | None = Field(
        default=None,
        description="Absolute path of a manifest under one of the organisation's folders (BRAINMIA_ORG_MANIFEST_ROOTS)",
    )
    bids_path: str | None = Field(
        default=None,
        description="In place of manifest_path: absolute path of a BIDS dataset folder (participants.tsv, sub-*/, "
        "derivatives/<pipeline>/) under one of the organisation's folders",
    )
    members_path: str | None = Field(
        default=None,
        description="With bids_path: absolute path of a text file of member subject IDs (sub-01 or 01) or "
        "subject+session IDs (sub-01_ses-1, or two columns), under the organisation's folders",
    )
    members: list[Text] | None = Field(
        default=None, max_length=100_000, description="With bids_path, in place of members_path: the member IDs"
    )
    non_members_path: str | None = Field(
        default=None, description="With bids_path: a file of the non-member IDs (default: every other matching scan)"
    )
    non_members: list[Text] | None = Field(
        default=None, max_length=100_000, description="With bids_path, in place of non_members_path: the non-member IDs"
    )
    bids_filter: Text | dict[str, Text | list[Text]] | None = Field(
        default=None,
        description="With bids_path: BIDS entities of the scans, as 'space=MNI152NLin2009cAsym,desc=preproc' or an "
        "object (defaults suffix=T1w, datatype=anat, extension .nii/.nii.gz; scope raw, derivatives or a pipeline; "
        "'none' = the entity is absent)",
    )
    name: Text | None = Field(default=None, max_length=500)


SCAN_SET_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive"],
                    "properties": {
                        "archive": {
                            "type": "string",
                            "format": "binary",
                            "description": ".zip, .tar, .tar.gz/.tgz (also .tar.bz2, .tar.xz) holding manifest.csv "
                            "(at the top or in a single top folder) and the NIfTI files it lists",
                        },
                        "name": {"type": "string", "description": "Display name (default: the archive's name)"},
                    },
                }
            },
        },
    }
}
"""The request body of an archive upload, for the OpenAPI document (the route streams it itself).

One content type per operation: a server manifest is ``POST /scan-sets/from-path`` (JSON)."""


def scan_set_out(row: ScanSet) -> ScanSetOut:
    """The API view of a scan-set row."""
    return ScanSetOut(
        id=row.id,
        name=row.name,
        source=row.source,
        n_scans=row.n_scans,
        n_members=row.n_members,
        n_nonmembers=row.n_nonmembers,
        attribute_names=list(row.attribute_names or []),
        manifest_sha256=row.manifest_sha256,
        size_bytes=row.size_bytes,
        created_at=as_utc(row.created_at),
    )

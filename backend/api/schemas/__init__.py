"""The API's request and response bodies (their OpenAPI names are a contract) and the views of
database rows as bodies. Routes import them from here."""

from __future__ import annotations

from worker.engine.report_model import Report

from ...services.options import AssessmentOptionsIn, FederatedOptionsIn, PolicyOptions
from .admin import AuditEventOut, AuditPage, TokenCreate, TokenCreated, audit_event_out
from .assessments import (
    AssessmentCreate,
    AssessmentDetail,
    AssessmentPage,
    AssessmentSummary,
    FigureListing,
    JobStateName,
    assessment_detail,
    assessment_summary,
    assessment_url,
    result_links,
)
from .auth import Me, SignIn
from .dry_run import AssessmentDryRun
from .health import Health, Readiness
from .models import MODEL_UPLOAD_BODY, ModelOut, ModelPage, model_out
from .reference_sets import REFERENCE_SET_UPLOAD_BODY, ReferenceSetOut, ReferenceSetPage, reference_set_out
from .scan_sets import SCAN_SET_UPLOAD_BODY, ScanSetFromPath, ScanSetOut, ScanSetPage, scan_set_out

__all__ = [
    "MODEL_UPLOAD_BODY", "REFERENCE_SET_UPLOAD_BODY", "SCAN_SET_UPLOAD_BODY",
    "AssessmentCreate", "AssessmentDetail", "AssessmentDryRun", "AssessmentOptionsIn", "AssessmentPage", "AssessmentSummary",
    "AuditEventOut", "AuditPage", "FederatedOptionsIn", "FigureListing", "Health", "JobStateName", "Me",
    "ModelOut", "ModelPage", "PolicyOptions", "Readiness", "ReferenceSetOut", "ReferenceSetPage",
    "Report", "ScanSetFromPath", "ScanSetOut", "ScanSetPage", "SignIn", "TokenCreate", "TokenCreated",
    "assessment_detail", "assessment_summary", "assessment_url", "audit_event_out", "model_out",
    "reference_set_out", "result_links", "scan_set_out",
]
